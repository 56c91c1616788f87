// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/converse.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <algorithm>
#include <iterator>
#include <cstring>
#include <utility>

#include "providers/common/data_url.hpp"

namespace tollgate::providers::bedrock {
namespace json = boost::json;
namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers

translate_error refuse(translate_errc code, std::string message, std::string param = {}) {
  return {code, std::move(message), std::move(param)};
}

translate_error bad_upstream(std::string message) {
  return refuse(translate_errc::invalid_upstream, std::move(message));
}


translate_error wrong_type(const std::string& param, std::string_view expected, const json::value& got) {
  return refuse(translate_errc::invalid_type,
                "Invalid type for '" + param + "': expected " + std::string(expected) + ", but got " +
                    std::string(json_kind_name(got)) + ".",
                param);
}

translate_error missing(const std::string& param) {
  return refuse(translate_errc::missing_parameter, "Missing required parameter: '" + param + "'.", param);
}

translate_error unsupported(const std::string& param, std::string_view what) {
  return refuse(translate_errc::unsupported, std::string(what) + " not supported for Amazon Bedrock models.", param);
}

/// A field, with null counted as absent (OpenAI's nullable fields).
const json::value* opt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

std::string_view opt_string(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view{};
}

const json::object* opt_object(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_object() ? &v->get_object() : nullptr;
}

std::string indexed(std::string_view base, std::size_t i) {
  return std::string(base) + "[" + std::to_string(i) + "]";
}

/// A non-negative integer (an integral double too, as some JSON writers emit `10.0`).
std::optional<std::uint64_t> as_count(const json::value& v) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
  if (v.is_double()) {
    const double d = v.get_double();
    if (d >= 0 && d <= 9.0e15 && d == static_cast<double>(static_cast<std::uint64_t>(d)))
      return static_cast<std::uint64_t>(d);
  }
  return std::nullopt;
}

/// Converse refuses text blocks that are empty or only whitespace ("... is blank").
bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

json::object text_block(std::string_view text) { return json::object{{"text", text}}; }

json::object empty_object_schema() {
  return json::object{{"type", "object"}, {"properties", json::object{}}};
}

// ---------------------------------------------------------------------------------------------
// Request

/// A Converse image block from an OpenAI image_url part's `data:` URL (png, jpeg, gif or webp,
/// the formats Converse takes; the base64 text goes as it came: the REST API's `bytes` are base64).
translate_result<json::object> image_block(const json::object& part, const std::string& p) {
  const json::value* img = opt(part, "image_url");
  const json::value* url = img && img->is_object() ? opt(img->get_object(), "url") : nullptr;
  if (!url) return missing(p + ".image_url.url");
  if (!url->is_string()) return wrong_type(p + ".image_url.url", "string", *url);
  const auto d = parse_data_url(url->get_string());
  if (!d)
    return refuse(translate_errc::unsupported,
                  "Amazon Bedrock models take images sent inline, as base64 data: URLs, not image URLs.",
                  p + ".image_url.url");
  std::string_view format;
  if (d->mime_type == "image/png") format = "png";
  else if (d->mime_type == "image/jpeg" || d->mime_type == "image/jpg") format = "jpeg";
  else if (d->mime_type == "image/gif") format = "gif";
  else if (d->mime_type == "image/webp") format = "webp";
  else
    return refuse(translate_errc::unsupported,
                  "Amazon Bedrock models take png, jpeg, gif or webp images, not '" + d->mime_type + "'.",
                  p + ".image_url.url");
  return json::object{{"image", json::object{{"format", format}, {"source", json::object{{"bytes", d->data}}}}}};
}

/// Collects the text parts of a message's `content` (a string or an array of parts). Refusal parts
/// (assistant history) carry no content for the model and are skipped. With `blocks` (a user
/// message), the text goes there as Converse blocks (blank ones dropped) in order with the
/// message's images; without, an image is refused.
translate_result<void> collect_text(const json::value& content, const std::string& param,
                                    std::vector<std::string_view>& out, json::array* blocks = nullptr) {
  auto take = [&](std::string_view text) {
    if (!blocks) out.emplace_back(text);
    else if (!is_blank(text)) blocks->push_back(text_block(text));
  };
  if (content.is_string()) {
    take(content.get_string());
    return {};
  }
  if (!content.is_array()) return wrong_type(param, "string or array", content);
  const json::array& parts = content.get_array();
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string p = indexed(param, i);
    if (!parts[i].is_object()) return wrong_type(p, "object", parts[i]);
    const json::object& part = parts[i].get_object();
    const json::value* type = opt(part, "type");
    if (!type) return missing(p + ".type");
    if (!type->is_string()) return wrong_type(p + ".type", "string", *type);
    const std::string_view t = type->get_string();
    if (t == "text") {
      const json::value* text = opt(part, "text");
      if (!text) return missing(p + ".text");
      if (!text->is_string()) return wrong_type(p + ".text", "string", *text);
      take(text->get_string());
    } else if (t == "refusal") {
      continue;
    } else if (t == "image_url") {
      if (!blocks) return unsupported(p, "Image inputs (outside user messages) are");
      auto block = image_block(part, p);
      if (!block) return block.error();
      blocks->push_back(std::move(*block));
    } else if (t == "input_audio") {
      return unsupported(p, "Audio inputs are");
    } else if (t == "file") {
      return unsupported(p, "File inputs are");
    } else {
      return refuse(translate_errc::invalid_value, "Invalid value for '" + p + ".type': '" + std::string(t) + "'.",
                    p + ".type");
    }
  }
  return {};
}

/// Converse messages, merging consecutive messages of one role (Converse requires alternation).
class conversation {
 public:
  /// `index`: the message of the request it comes from (the first turn's is kept).
  void add(std::string_view role, json::array blocks, std::size_t index) {
    if (blocks.empty()) return;
    if (messages_.empty()) first_index_ = index;
    if (!messages_.empty() && last_role_ == role) {
      json::array& content = messages_.back().get_object()["content"].get_array();
      for (json::value& b : blocks) content.push_back(std::move(b));
      return;
    }
    json::object m;
    m["role"] = role;
    m["content"] = std::move(blocks);
    messages_.push_back(std::move(m));
    last_role_ = role;
  }
  bool empty() const { return messages_.empty(); }
  /// The first turn's role ("user" or "assistant"), and the request message it came from.
  std::string_view first_role() const {
    return messages_.empty() ? std::string_view() : std::string_view(messages_.front().get_object().at("role").get_string());
  }
  std::size_t first_index() const { return first_index_; }
  json::array take() { return std::move(messages_); }

 private:
  json::array messages_;
  std::string last_role_;
  std::size_t first_index_ = 0;
};

/// What the message walk learned beyond the messages themselves.
struct history {
  json::array system;
  bool has_tool_blocks = false;
  std::vector<std::string> tool_names;  ///< names in toolUse blocks, first use order, unique
};

translate_result<json::object> tool_use_block(const json::value& call, const std::string& p, history& h) {
  if (!call.is_object()) return wrong_type(p, "object", call);
  const json::object& c = call.get_object();
  const json::value* id = opt(c, "id");
  if (!id) return missing(p + ".id");
  if (!id->is_string()) return wrong_type(p + ".id", "string", *id);
  if (const json::value* type = opt(c, "type")) {
    if (!type->is_string()) return wrong_type(p + ".type", "string", *type);
    if (type->get_string() != "function") return unsupported(p + ".type", "Tool calls other than functions are");
  }
  const json::value* fn = opt(c, "function");
  if (!fn) return missing(p + ".function");
  if (!fn->is_object()) return wrong_type(p + ".function", "object", *fn);
  const json::value* name = opt(fn->get_object(), "name");
  if (!name) return missing(p + ".function.name");
  if (!name->is_string()) return wrong_type(p + ".function.name", "string", *name);
  const std::string ap = p + ".function.arguments";
  json::value input = json::object{};
  if (const json::value* args = opt(fn->get_object(), "arguments")) {
    if (!args->is_string()) return wrong_type(ap, "string", *args);
    // Some clients send "" for a call without arguments; Converse wants an object either way.
    if (!is_blank(args->get_string())) {
      boost::system::error_code ec;
      input = json::parse(args->get_string(), ec);
      if (ec)
        return refuse(translate_errc::invalid_value,
                      "Invalid value for '" + ap + "': the arguments are not valid JSON (" + ec.message() + ").", ap);
      if (!input.is_object())
        return refuse(translate_errc::invalid_value,
                      "Invalid value for '" + ap + "': the arguments must be a JSON object, not " +
                          std::string(json_kind_name(input)) + ".",
                      ap);
    }
  }
  h.has_tool_blocks = true;
  const std::string_view n = name->get_string();
  if (std::find(h.tool_names.begin(), h.tool_names.end(), n) == h.tool_names.end()) h.tool_names.emplace_back(n);
  json::object use;
  use["toolUseId"] = id->get_string();
  use["name"] = n;
  use["input"] = std::move(input);
  return json::object{{"toolUse", std::move(use)}};
}

translate_result<json::array> translate_messages(const json::object& req, history& h) {
  const json::value* msgs = opt(req, "messages");
  if (!msgs) return missing("messages");
  if (!msgs->is_array()) return wrong_type("messages", "array", *msgs);
  const json::array& arr = msgs->get_array();
  if (arr.empty())
    return refuse(translate_errc::invalid_value, "'messages' must contain at least one message.", "messages");

  conversation conv;
  std::vector<std::string_view> texts;
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string p = indexed("messages", i);
    if (!arr[i].is_object()) return wrong_type(p, "object", arr[i]);
    const json::object& m = arr[i].get_object();
    const json::value* role_v = opt(m, "role");
    if (!role_v) return missing(p + ".role");
    if (!role_v->is_string()) return wrong_type(p + ".role", "string", *role_v);
    const std::string_view role = role_v->get_string();
    const json::value* content = opt(m, "content");
    texts.clear();

    if (role == "system" || role == "developer" || role == "user") {
      if (!content) return missing(p + ".content");
      json::array blocks;
      if (auto r = collect_text(*content, p + ".content", texts, role == "user" ? &blocks : nullptr); !r) return r.error();
      for (std::string_view t : texts)
        if (!is_blank(t)) blocks.push_back(text_block(t));
      if (role == "user") {
        conv.add("user", std::move(blocks), i);
      } else {
        for (json::value& b : blocks) h.system.push_back(std::move(b));
      }
    } else if (role == "assistant") {
      if (opt(m, "audio")) return unsupported(p + ".audio", "Audio outputs are");
      if (opt(m, "function_call")) return unsupported(p + ".function_call", "Deprecated function calls are");
      json::array blocks;
      if (content) {
        if (auto r = collect_text(*content, p + ".content", texts); !r) return r.error();
        for (std::string_view t : texts)
          if (!is_blank(t)) blocks.push_back(text_block(t));
      }
      if (const json::value* calls = opt(m, "tool_calls")) {
        if (!calls->is_array()) return wrong_type(p + ".tool_calls", "array", *calls);
        const json::array& ca = calls->get_array();
        for (std::size_t j = 0; j < ca.size(); ++j) {
          auto block = tool_use_block(ca[j], indexed(p + ".tool_calls", j), h);
          if (!block) return block.error();
          blocks.push_back(std::move(*block));
        }
      }
      conv.add("assistant", std::move(blocks), i);
    } else if (role == "tool") {
      const json::value* id = opt(m, "tool_call_id");
      if (!id) return missing(p + ".tool_call_id");
      if (!id->is_string()) return wrong_type(p + ".tool_call_id", "string", *id);
      if (!content) return missing(p + ".content");
      if (auto r = collect_text(*content, p + ".content", texts); !r) return r.error();
      std::string joined;
      for (std::string_view t : texts) joined += t;
      // A blank text block is refused even inside a tool result, and an agent would replay the
      // same history forever; an explicit marker keeps the conversation usable.
      if (is_blank(joined)) joined = "(empty)";
      json::object result;
      result["toolUseId"] = id->get_string();
      json::array rc;
      rc.push_back(text_block(joined));
      result["content"] = std::move(rc);
      json::array blocks;
      blocks.push_back(json::object{{"toolResult", std::move(result)}});
      h.has_tool_blocks = true;
      conv.add("user", std::move(blocks), i);
    } else if (role == "function") {
      return unsupported(p + ".role", "Deprecated 'function' messages are");
    } else {
      return refuse(translate_errc::invalid_value, "Invalid value for '" + p + ".role': '" + std::string(role) + "'.",
                    p + ".role");
    }
  }
  if (conv.empty())
    return refuse(translate_errc::invalid_value,
                  "'messages' must contain at least one user or assistant message with non-empty content.",
                  "messages");
  // Converse takes a conversation that begins with the user only (Bedrock answers a
  // ValidationException otherwise): said here, naming the message, before anything is sent.
  if (conv.first_role() == "assistant") {
    const std::string p = indexed("messages", conv.first_index());
    return refuse(translate_errc::invalid_value,
                  "Amazon Bedrock models take a conversation that begins with a user message; '" + p +
                      "', the first after the system messages, is an assistant message.",
                  p + ".role");
  }
  return conv.take();
}

translate_result<void> check_unsupported(const json::object& req) {
  if (const json::value* n = opt(req, "n")) {
    auto count = as_count(*n);
    if (!count) return wrong_type("n", "integer", *n);
    if (*count > 1) return unsupported("n", "More than one choice ('n' > 1) is");
  }
  if (opt(req, "audio")) return unsupported("audio", "Audio outputs are");
  if (const json::value* mod = opt(req, "modalities"); mod && mod->is_array())
    for (const json::value& x : mod->get_array())
      if (x.is_string() && x.get_string() == "audio") return unsupported("modalities", "Audio outputs are");
  if (const json::value* lp = opt(req, "logprobs"); lp && lp->is_bool() && lp->get_bool())
    return unsupported("logprobs", "Log probabilities are");
  if (const json::value* rf = opt(req, "response_format")) {
    if (!rf->is_object()) return wrong_type("response_format", "object", *rf);
    std::string_view type = opt_string(rf->get_object(), "type");
    if (type != "text") return unsupported("response_format", "Structured output formats (json_object, json_schema) are");
  }
  if (opt(req, "functions")) return unsupported("functions", "Deprecated 'functions' are");
  if (opt(req, "function_call")) return unsupported("function_call", "Deprecated 'function_call' is");
  return {};
}

translate_result<json::object> inference_config(const json::object& req) {
  json::object cfg;
  for (std::string_view key : {"max_completion_tokens", "max_tokens"}) {
    const json::value* v = opt(req, key);
    if (!v) continue;
    auto n = as_count(*v);
    if (!n) return wrong_type(std::string(key), "integer", *v);
    if (*n < 1) return refuse(translate_errc::invalid_value, "'" + std::string(key) + "' must be at least 1.", std::string(key));
    if (!cfg.contains("maxTokens")) cfg["maxTokens"] = *n;
  }
  if (const json::value* t = opt(req, "temperature")) {
    if (!t->is_number()) return wrong_type("temperature", "number", *t);
    cfg["temperature"] = *t;
  }
  if (const json::value* t = opt(req, "top_p")) {
    if (!t->is_number()) return wrong_type("top_p", "number", *t);
    cfg["topP"] = *t;
  }
  if (const json::value* s = opt(req, "stop")) {
    json::array seqs;
    if (s->is_string()) {
      if (!s->get_string().empty()) seqs.push_back(s->get_string());
    } else if (s->is_array()) {
      const json::array& a = s->get_array();
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (!a[i].is_string()) return wrong_type(indexed("stop", i), "string", a[i]);
        if (!a[i].get_string().empty()) seqs.push_back(a[i]);
      }
    } else {
      return wrong_type("stop", "string or array", *s);
    }
    if (!seqs.empty()) cfg["stopSequences"] = std::move(seqs);
  }
  return cfg;
}

struct tool_list {
  json::array specs;
  std::vector<std::string> names;
};

translate_result<tool_list> translate_tools(const json::object& req) {
  tool_list out;
  const json::value* tools = opt(req, "tools");
  if (!tools) return out;
  if (!tools->is_array()) return wrong_type("tools", "array", *tools);
  const json::array& arr = tools->get_array();
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string p = indexed("tools", i);
    if (!arr[i].is_object()) return wrong_type(p, "object", arr[i]);
    const json::object& t = arr[i].get_object();
    const json::value* type = opt(t, "type");
    if (!type) return missing(p + ".type");
    if (!type->is_string()) return wrong_type(p + ".type", "string", *type);
    if (type->get_string() != "function") return unsupported(p + ".type", "Tools other than functions are");
    const json::value* fn = opt(t, "function");
    if (!fn) return missing(p + ".function");
    if (!fn->is_object()) return wrong_type(p + ".function", "object", *fn);
    const json::object& f = fn->get_object();
    const json::value* name = opt(f, "name");
    if (!name) return missing(p + ".function.name");
    if (!name->is_string()) return wrong_type(p + ".function.name", "string", *name);
    json::object spec;
    spec["name"] = name->get_string();
    if (const json::value* d = opt(f, "description")) {
      if (!d->is_string()) return wrong_type(p + ".function.description", "string", *d);
      if (!d->get_string().empty()) spec["description"] = *d;
    }
    json::value schema = empty_object_schema();
    if (const json::value* params = opt(f, "parameters")) {
      if (!params->is_object()) return wrong_type(p + ".function.parameters", "object", *params);
      schema = *params;
    }
    spec["inputSchema"] = json::object{{"json", std::move(schema)}};
    out.specs.push_back(json::object{{"toolSpec", std::move(spec)}});
    out.names.emplace_back(name->get_string());
  }
  return out;
}

/// `toolConfig`, or an empty object for none.
translate_result<json::object> tool_config(const json::object& req, const history& h) {
  auto tools = translate_tools(req);
  if (!tools) return tools.error();
  bool none = false;
  json::object choice;  // empty: let Converse default (auto)
  if (const json::value* c = opt(req, "tool_choice")) {
    if (c->is_string()) {
      const std::string_view s = c->get_string();
      if (s == "auto") choice["auto"] = json::object{};
      else if (s == "required") choice["any"] = json::object{};
      else if (s == "none") none = true;
      else return refuse(translate_errc::invalid_value, "Invalid value for 'tool_choice': '" + std::string(s) + "'.", "tool_choice");
    } else if (c->is_object()) {
      const json::object& o = c->get_object();
      const std::string_view type = opt_string(o, "type");
      if (type != "function") return unsupported("tool_choice.type", "This 'tool_choice' type is");
      const json::object* fn = opt_object(o, "function");
      if (!fn) return missing("tool_choice.function");
      const json::value* name = opt(*fn, "name");
      if (!name) return missing("tool_choice.function.name");
      if (!name->is_string()) return wrong_type("tool_choice.function.name", "string", *name);
      const std::string_view n = name->get_string();
      if (std::find(tools->names.begin(), tools->names.end(), n) == tools->names.end())
        return refuse(translate_errc::invalid_value,
                      "Invalid value for 'tool_choice': no function named '" + std::string(n) + "' in 'tools'.",
                      "tool_choice");
      choice["tool"] = json::object{{"name", n}};
    } else {
      return wrong_type("tool_choice", "string or object", *c);
    }
  }
  json::object cfg;
  if (!tools->specs.empty()) {
    // Converse refuses toolUse / toolResult blocks without a toolConfig, so "none" keeps the
    // tools when the history holds tool calls; there is no Converse choice that forbids calls.
    if (none && !h.has_tool_blocks) return cfg;
    cfg["tools"] = std::move(tools->specs);
    if (!none && !choice.empty()) cfg["toolChoice"] = std::move(choice);
    return cfg;
  }
  if (!choice.empty() && !choice.contains("auto"))
    return refuse(translate_errc::invalid_value, "'tool_choice' is only allowed when 'tools' are specified.",
                  "tool_choice");
  if (h.has_tool_blocks && !h.tool_names.empty()) {
    // Tool history without tools (OpenAI accepts it): declare the functions the history names,
    // with an open schema, so Converse accepts the blocks.
    json::array specs;
    for (const std::string& n : h.tool_names) {
      json::object spec;
      spec["name"] = n;
      spec["inputSchema"] = json::object{{"json", empty_object_schema()}};
      specs.push_back(json::object{{"toolSpec", std::move(spec)}});
    }
    cfg["tools"] = std::move(specs);
  }
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Errors

struct error_row {
  std::string_view name;
  unsigned status;
  std::string_view type;
  std::string_view code;
  bool retryable;
};

// Statuses from the Bedrock model (service-2.json) except where the caller is better served by
// another: ServiceQuotaExceeded (400 there) is a quota, so 429; ModelNotReady (429 there) is not
// the caller's rate, so 503; ModelTimeout (408 there) is the upstream's time, not the caller's, so
// 504; the model-error 424 is unknown to OpenAI clients, so 500.
constexpr error_row error_table[] = {
    {"ThrottlingException", 429, "rate_limit_error", "rate_limit_exceeded", true},
    {"ServiceQuotaExceededException", 429, "rate_limit_error", "quota_exceeded", false},
    {"ModelNotReadyException", 503, "server_error", "model_not_ready", true},
    {"ValidationException", 400, "invalid_request_error", "invalid_request", false},
    {"ConflictException", 400, "invalid_request_error", "conflict", false},
    // The gateway's credentials or IAM role lack a permission (or the model's access is not
    // enabled in the account): the gateway's fault, not the caller's.
    {"AccessDeniedException", 502, "server_error", "upstream_access_denied", false},
    {"ResourceNotFoundException", 404, "not_found_error", "model_not_found", false},
    {"ModelTimeoutException", 504, "server_error", "upstream_timeout", true},
    {"ModelErrorException", 500, "server_error", "model_error", false},
    {"ModelStreamErrorException", 500, "server_error", "model_error", false},
    {"InternalServerException", 500, "server_error", "internal_server_error", true},
    {"ServiceUnavailableException", 503, "server_error", "service_unavailable", true},
    {"UnrecognizedClientException", 502, "server_error", "upstream_authentication_failed", false},
    {"InvalidSignatureException", 502, "server_error", "upstream_authentication_failed", false},
    {"IncompleteSignatureException", 502, "server_error", "upstream_authentication_failed", false},
    {"MissingAuthenticationTokenException", 502, "server_error", "upstream_authentication_failed", false},
    {"ExpiredTokenException", 502, "server_error", "upstream_authentication_failed", false},
};

upstream_error malformed_stream(std::string message) {
  return upstream_error{502, "server_error", "invalid_upstream_response", std::move(message), false, {}};
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// ---------------------------------------------------------------------------------------------
// Embeddings

constexpr std::size_t cohere_max_texts = 96;  // Bedrock's Cohere Embed limit per call

std::optional<embedding_family> family_by_prefix(std::string_view id) {
  if (id.starts_with("amazon.titan-embed-text-v2")) return embedding_family::titan_text_v2;
  if (id.starts_with("cohere.embed-")) return embedding_family::cohere_embed;
  return std::nullopt;
}

void append_base64(std::string& out, const unsigned char* p, std::size_t n) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v = (std::uint32_t(p[i]) << 16) | (std::uint32_t(p[i + 1]) << 8) | p[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (n - i == 1) {
    const std::uint32_t v = std::uint32_t(p[i]) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += "==";
  } else if (n - i == 2) {
    const std::uint32_t v = (std::uint32_t(p[i]) << 16) | (std::uint32_t(p[i + 1]) << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += '=';
  }
}

/// One embedding vector for the OpenAI list: the numbers as Bedrock sent them, or (base64) OpenAI's
/// packing: little-endian float32, base64.
translate_result<json::value> openai_vector(const json::value& v, bool base64) {
  if (!v.is_array()) return bad_upstream("Bedrock returned an embedding that is not an array.");
  const json::array& a = v.get_array();
  for (const json::value& x : a)
    if (!x.is_number()) return bad_upstream("Bedrock returned an embedding with a non-numeric value.");
  if (!base64) return json::value(a);
  std::string bytes;
  bytes.reserve(a.size() * 4);
  for (const json::value& x : a) {
    const double d = x.is_double() ? x.get_double() : x.is_int64() ? double(x.get_int64()) : double(x.get_uint64());
    const float f = static_cast<float>(d);
    std::uint32_t u = 0;
    std::memcpy(&u, &f, sizeof u);
    for (int k = 0; k < 4; ++k) bytes.push_back(static_cast<char>((u >> (8 * k)) & 0xff));
  }
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  append_base64(out, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return json::value(std::move(out));
}

}  // namespace

// =============================================================================================


translate_result<json::object> to_converse_request(const json::object& req) {
  if (auto r = check_unsupported(req); !r) return r.error();
  history h;
  auto messages = translate_messages(req, h);
  if (!messages) return messages.error();
  auto inference = inference_config(req);
  if (!inference) return inference.error();
  auto tools = tool_config(req, h);
  if (!tools) return tools.error();

  json::object body;
  body["messages"] = std::move(*messages);
  if (!h.system.empty()) body["system"] = std::move(h.system);
  if (!inference->empty()) body["inferenceConfig"] = std::move(*inference);
  if (!tools->empty()) body["toolConfig"] = std::move(*tools);
  return body;
}

std::optional<converse_usage> parse_usage(const json::value& usage) {
  if (!usage.is_object()) return std::nullopt;
  const json::object& u = usage.get_object();
  const json::value* in = u.if_contains("inputTokens");
  const json::value* out = u.if_contains("outputTokens");
  if (!in || !out) return std::nullopt;
  auto in_n = as_count(*in);
  auto out_n = as_count(*out);
  if (!in_n || !out_n) return std::nullopt;
  converse_usage r;
  r.input_tokens = *in_n;
  r.output_tokens = *out_n;
  // The *TokenCount spellings appear beside the documented ones in recorded responses.
  auto count = [&](std::string_view key, std::string_view alias, bool* present) -> std::uint64_t {
    for (std::string_view k : {key, alias})
      if (const json::value* v = u.if_contains(k))
        if (auto n = as_count(*v)) {
          if (present) *present = true;
          return *n;
        }
    return 0;
  };
  r.cache_read_tokens = count("cacheReadInputTokens", "cacheReadInputTokenCount", &r.has_cache_read);
  r.cache_write_tokens = count("cacheWriteInputTokens", "cacheWriteInputTokenCount", nullptr);
  return r;
}

json::object to_openai_usage(const converse_usage& usage) {
  json::object u;
  u["prompt_tokens"] = usage.prompt_tokens();
  u["completion_tokens"] = usage.completion_tokens();
  u["total_tokens"] = usage.total_tokens();
  if (usage.has_cache_read) u["prompt_tokens_details"] = json::object{{"cached_tokens", usage.cache_read_tokens}};
  return u;
}

std::string_view map_stop_reason(std::string_view r) noexcept {
  if (r == "max_tokens" || r == "model_context_window_exceeded") return "length";
  if (r == "tool_use") return "tool_calls";
  if (r == "content_filtered" || r == "guardrail_intervened") return "content_filter";
  return "stop";  // end_turn, stop_sequence, and the malformed_* reasons OpenAI has no word for
}

translate_result<chat_completion> to_chat_completion(const json::value& response, const completion_meta& meta) {
  if (!response.is_object()) return bad_upstream("The Bedrock Converse response is not a JSON object.");
  const json::object& o = response.get_object();
  const json::object* output = opt_object(o, "output");
  const json::object* message = output ? opt_object(*output, "message") : nullptr;
  const json::value* content = message ? message->if_contains("content") : nullptr;
  if (!content || !content->is_array())
    return bad_upstream("The Bedrock Converse response has no 'output.message.content' array.");

  std::string text, reasoning;
  json::array tool_calls;
  for (const json::value& b : content->get_array()) {
    if (!b.is_object()) continue;
    const json::object& block = b.get_object();
    if (const json::value* t = block.if_contains("text"); t && t->is_string()) {
      text += t->get_string();
    } else if (const json::object* use = opt_object(block, "toolUse")) {
      const json::value* input = use->if_contains("input");
      json::object fn;
      fn["name"] = opt_string(*use, "name");
      fn["arguments"] = input && !input->is_null() ? json::serialize(*input) : std::string("{}");
      json::object call;
      call["id"] = opt_string(*use, "toolUseId");
      call["type"] = "function";
      call["function"] = std::move(fn);
      tool_calls.push_back(std::move(call));
    } else if (const json::object* rc = opt_object(block, "reasoningContent")) {
      if (const json::object* rt = opt_object(*rc, "reasoningText")) reasoning += opt_string(*rt, "text");
    }
  }

  chat_completion out;
  out.finish_reason = std::string(map_stop_reason(opt_string(o, "stopReason")));
  if (const json::value* u = o.if_contains("usage")) out.usage = parse_usage(*u);

  json::object msg;
  msg["role"] = "assistant";
  if (text.empty() && !tool_calls.empty()) msg["content"] = nullptr;
  else msg["content"] = text;
  msg["refusal"] = nullptr;
  if (!reasoning.empty()) msg["reasoning_content"] = reasoning;
  if (!tool_calls.empty()) msg["tool_calls"] = std::move(tool_calls);

  json::object choice;
  choice["index"] = 0;
  choice["message"] = std::move(msg);
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = out.finish_reason;
  json::array choices;
  choices.push_back(std::move(choice));

  json::object& body = out.body;
  body["id"] = meta.id;
  body["object"] = "chat.completion";
  body["created"] = meta.created;
  body["model"] = meta.model;
  body["choices"] = std::move(choices);
  if (out.usage) body["usage"] = to_openai_usage(*out.usage);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors

std::string normalize_error_type(std::string_view raw) {
  std::string_view s = raw.substr(0, raw.find(':'));
  if (auto hash = s.rfind('#'); hash != std::string_view::npos) s.remove_prefix(hash + 1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  std::string out(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

upstream_error map_bedrock_error(std::string_view error_type, std::string_view message, unsigned http_status) {
  upstream_error e;
  e.bedrock_type = normalize_error_type(error_type);
  const auto row = std::find_if(std::begin(error_table), std::end(error_table),
                                [&](const error_row& r) { return r.name == e.bedrock_type; });
  if (row != std::end(error_table)) {
    e.status = row->status;
    e.type = row->type;
    e.code = row->code;
    e.retryable = row->retryable;
  } else if (http_status == 429) {
    e = {429, "rate_limit_error", "rate_limit_exceeded", {}, true, std::move(e.bedrock_type)};
  } else if (http_status >= 500 && http_status <= 599) {
    e = {http_status, "server_error", "upstream_error", {}, true, std::move(e.bedrock_type)};
  } else if (http_status >= 400 && http_status <= 499) {
    e = {http_status, "invalid_request_error", "upstream_error", {}, false, std::move(e.bedrock_type)};
  } else {
    e = {502, "server_error", "upstream_error", {}, false, std::move(e.bedrock_type)};
  }
  if (e.code == "upstream_authentication_failed" || e.code == "upstream_access_denied") {
    // Bedrock's own text names the account and role ("User: arn:aws:iam::…:role/… is not
    // authorized"), and AWS signature errors can quote the canonical request with its session
    // token: none of it goes to a caller.
    e.message = "Amazon Bedrock refused the gateway's AWS credentials (" + e.bedrock_type +
                "): check the gateway's credentials and their IAM permissions for this model.";
  } else if (!message.empty()) {
    e.message = message;
  } else {
    e.message = "Amazon Bedrock returned " + (e.bedrock_type.empty() ? std::string("an error") : e.bedrock_type);
    if (http_status) e.message += " (HTTP " + std::to_string(http_status) + ")";
    e.message += ".";
  }
  return e;
}

upstream_error map_bedrock_http_error(unsigned http_status, std::string_view error_type_header, std::string_view body) {
  std::string_view type = error_type_header;
  std::string message;
  boost::system::error_code ec;
  const json::value v = json::parse(body, ec);
  if (!ec && v.is_object()) {
    const json::object& o = v.get_object();
    message = opt_string(o, "message");
    if (message.empty()) message = opt_string(o, "Message");
    if (type.empty()) type = opt_string(o, "__type");
    if (type.empty()) type = opt_string(o, "code");
    return map_bedrock_error(type, message, http_status);
  }
  return map_bedrock_error(type, {}, http_status);
}

json::object to_openai_error(const upstream_error& e) {
  json::object o;
  o["message"] = e.message;
  o["type"] = e.type;
  o["param"] = nullptr;
  o["code"] = e.code;
  return o;
}

json::object to_openai_error_body(const upstream_error& e) { return json::object{{"error", to_openai_error(e)}}; }

// ---------------------------------------------------------------------------------------------
// Streaming

converse_stream_translator::converse_stream_translator(completion_meta meta) : meta_(std::move(meta)) {}

json::object converse_stream_translator::make_chunk(json::object delta, std::string_view finish_reason) {
  if (!role_sent_) {
    json::object d;
    d["role"] = "assistant";
    for (auto& kv : delta) d.emplace(kv.key(), std::move(kv.value()));
    delta = std::move(d);
    role_sent_ = true;
  }
  json::object choice;
  choice["index"] = 0;
  choice["delta"] = std::move(delta);
  choice["logprobs"] = nullptr;
  if (finish_reason.empty()) choice["finish_reason"] = nullptr;
  else choice["finish_reason"] = finish_reason;
  json::array choices;
  choices.push_back(std::move(choice));
  json::object chunk;
  chunk["id"] = meta_.id;
  chunk["object"] = "chat.completion.chunk";
  chunk["created"] = meta_.created;
  chunk["model"] = meta_.model;
  chunk["choices"] = std::move(choices);
  return chunk;
}

stream_step converse_stream_translator::fail(upstream_error e) {
  failed_ = true;
  stream_step step;
  step.error = std::move(e);
  return step;
}

stream_step converse_stream_translator::on_event_text(std::string_view event_type, std::string_view payload_json) {
  if (failed_) return {};
  boost::system::error_code ec;
  json::value v = json::parse(payload_json, ec);
  if (ec) {
    // An exception's payload is still an exception, even when it is not JSON.
    if (ends_with(event_type, "Exception") || ends_with(event_type, "exception"))
      return fail(map_bedrock_error(event_type, {}));
    return fail(malformed_stream("Amazon Bedrock sent a '" + std::string(event_type) +
                                 "' event whose payload is not JSON (" + ec.message() + ")."));
  }
  return on_event(event_type, v);
}

stream_step converse_stream_translator::on_event(std::string_view event_type, const json::value& payload) {
  stream_step step;
  if (failed_) return step;

  if (ends_with(event_type, "Exception") || ends_with(event_type, "exception")) {
    std::string message;
    if (payload.is_object()) {
      const json::object& p = payload.get_object();
      message = opt_string(p, "message");
      // modelStreamErrorException: {message, originalStatusCode, originalMessage}
      if (std::string_view original = opt_string(p, "originalMessage"); !original.empty())
        message += message.empty() ? std::string(original) : ": " + std::string(original);
    }
    return fail(map_bedrock_error(event_type, message));
  }
  if (!payload.is_object())
    return fail(malformed_stream("Amazon Bedrock sent a '" + std::string(event_type) + "' event that is not a JSON object."));
  const json::object& p = payload.get_object();
  std::int64_t block = 0;
  if (const json::value* b = p.if_contains("contentBlockIndex"))
    if (auto n = as_count(*b)) block = static_cast<std::int64_t>(*n);

  if (event_type == "messageStart") {
    if (!role_sent_) step.chunks.push_back(make_chunk(json::object{{"content", ""}}));
  } else if (event_type == "contentBlockStart") {
    const json::object* start = opt_object(p, "start");
    const json::object* use = start ? opt_object(*start, "toolUse") : nullptr;
    if (use) {
      const std::size_t index = next_tool_index_++;
      tools_[block] = tool_block{index, false};
      json::object fn;
      fn["name"] = opt_string(*use, "name");
      fn["arguments"] = "";
      json::object call;
      call["index"] = index;
      call["id"] = opt_string(*use, "toolUseId");
      call["type"] = "function";
      call["function"] = std::move(fn);
      json::array calls;
      calls.push_back(std::move(call));
      step.chunks.push_back(make_chunk(json::object{{"tool_calls", std::move(calls)}}));
    }
  } else if (event_type == "contentBlockDelta") {
    const json::object* delta = opt_object(p, "delta");
    if (!delta) return step;
    if (const json::value* t = delta->if_contains("text"); t && t->is_string()) {
      if (!t->get_string().empty()) step.chunks.push_back(make_chunk(json::object{{"content", t->get_string()}}));
    } else if (const json::object* use = opt_object(*delta, "toolUse")) {
      auto it = tools_.find(block);
      if (it == tools_.end())
        return fail(malformed_stream("Amazon Bedrock sent tool input for content block " + std::to_string(block) +
                                     ", which did not start as a tool call."));
      const std::string_view input = opt_string(*use, "input");
      if (!input.empty()) {
        it->second.has_input = true;
        json::object call;
        call["index"] = it->second.index;
        call["function"] = json::object{{"arguments", input}};
        json::array calls;
        calls.push_back(std::move(call));
        step.chunks.push_back(make_chunk(json::object{{"tool_calls", std::move(calls)}}));
      }
    } else if (const json::object* rc = opt_object(*delta, "reasoningContent")) {
      if (std::string_view t = opt_string(*rc, "text"); !t.empty())
        step.chunks.push_back(make_chunk(json::object{{"reasoning_content", t}}));
    }
  } else if (event_type == "contentBlockStop") {
    // A call without arguments streams an empty input; the non-stream answer says `{}`, and
    // clients parse `arguments` as JSON, so close the call with "{}".
    if (auto it = tools_.find(block); it != tools_.end() && !it->second.has_input) {
      it->second.has_input = true;
      json::object call;
      call["index"] = it->second.index;
      call["function"] = json::object{{"arguments", "{}"}};
      json::array calls;
      calls.push_back(std::move(call));
      step.chunks.push_back(make_chunk(json::object{{"tool_calls", std::move(calls)}}));
    }
  } else if (event_type == "messageStop") {
    if (finished_) return step;  // one finish chunk per stream
    finish_reason_ = std::string(map_stop_reason(opt_string(p, "stopReason")));
    finished_ = true;
    step.chunks.push_back(make_chunk(json::object{}, finish_reason_));
  } else if (event_type == "metadata") {
    if (const json::value* u = p.if_contains("usage")) {
      usage_ = parse_usage(*u);
      step.usage = usage_;
    }
  }
  return step;
}

json::object make_usage_chunk(const completion_meta& meta, const converse_usage& usage) {
  json::object chunk;
  chunk["id"] = meta.id;
  chunk["object"] = "chat.completion.chunk";
  chunk["created"] = meta.created;
  chunk["model"] = meta.model;
  chunk["choices"] = json::array{};
  chunk["usage"] = to_openai_usage(usage);
  return chunk;
}

// ---------------------------------------------------------------------------------------------
// Embeddings

std::optional<embedding_family> find_embedding_family(std::string_view model_id) {
  if (auto f = family_by_prefix(model_id)) return f;
  // Cross-region inference profiles put a geography first: `us.cohere.embed-v4:0`.
  const auto dot = model_id.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  const std::string_view geo = model_id.substr(0, dot);
  if (!std::all_of(geo.begin(), geo.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '-'; }))
    return std::nullopt;
  return family_by_prefix(model_id.substr(dot + 1));
}

translate_result<embedding_calls> to_embedding_calls(const json::object& req, std::string_view model_id) {
  const auto family = find_embedding_family(model_id);
  if (!family)
    return refuse(translate_errc::unsupported,
                  "Model '" + std::string(model_id) +
                      "' is not a supported Amazon Bedrock embedding model (amazon.titan-embed-text-v2*, cohere.embed-*).",
                  "model");

  std::vector<std::string_view> inputs;
  const json::value* in = opt(req, "input");
  if (!in) return missing("input");
  if (in->is_string()) {
    if (in->get_string().empty()) return refuse(translate_errc::invalid_value, "'input' must not be empty.", "input");
    inputs.emplace_back(in->get_string());
  } else if (in->is_array()) {
    const json::array& a = in->get_array();
    if (a.empty()) return refuse(translate_errc::invalid_value, "'input' must not be empty.", "input");
    for (std::size_t i = 0; i < a.size(); ++i) {
      const std::string p = indexed("input", i);
      if (a[i].is_number() || a[i].is_array()) return unsupported("input", "Token arrays as 'input' are");
      if (!a[i].is_string()) return wrong_type(p, "string", a[i]);
      if (a[i].get_string().empty()) return refuse(translate_errc::invalid_value, "'" + p + "' must not be empty.", p);
      inputs.emplace_back(a[i].get_string());
    }
  } else {
    return wrong_type("input", "string or array", *in);
  }

  embedding_calls calls;
  calls.family = *family;
  calls.input_count = inputs.size();
  if (const json::value* f = opt(req, "encoding_format")) {
    if (!f->is_string()) return wrong_type("encoding_format", "string", *f);
    if (f->get_string() == "base64") calls.base64 = true;
    else if (f->get_string() != "float")
      return refuse(translate_errc::invalid_value,
                    "Invalid value for 'encoding_format': '" + std::string(f->get_string()) + "'.", "encoding_format");
  }
  std::optional<std::uint64_t> dims;
  if (const json::value* d = opt(req, "dimensions")) {
    dims = as_count(*d);
    if (!dims) return wrong_type("dimensions", "integer", *d);
    auto allowed = [&](std::initializer_list<std::uint64_t> set, std::string_view list) -> translate_result<void> {
      if (std::find(set.begin(), set.end(), *dims) != set.end()) return {};
      return refuse(translate_errc::invalid_value,
                    "Invalid value for 'dimensions': this model supports " + std::string(list) + ".", "dimensions");
    };
    if (*family == embedding_family::titan_text_v2) {
      if (auto r = allowed({256, 512, 1024}, "256, 512 or 1024"); !r) return r.error();
    } else if (model_id.find("embed-v4") != std::string_view::npos) {
      if (auto r = allowed({256, 512, 1024, 1536}, "256, 512, 1024 or 1536"); !r) return r.error();
    } else {
      return unsupported("dimensions", "'dimensions' for this Cohere Embed model is");
    }
  }

  if (*family == embedding_family::titan_text_v2) {
    for (std::string_view text : inputs) {
      json::object body;
      body["inputText"] = text;
      if (dims) body["dimensions"] = *dims;
      body["normalize"] = true;
      calls.bodies.push_back(std::move(body));
    }
  } else {
    for (std::size_t start = 0; start < inputs.size(); start += cohere_max_texts) {
      json::array texts;
      for (std::size_t i = start; i < std::min(inputs.size(), start + cohere_max_texts); ++i) texts.push_back(json::string(inputs[i]));
      json::object body;
      body["texts"] = std::move(texts);
      body["input_type"] = "search_document";
      if (dims) body["output_dimension"] = *dims;
      calls.bodies.push_back(std::move(body));
    }
  }
  return calls;
}

translate_result<embeddings_response> to_openai_embeddings(const embedding_calls& calls,
                                                           std::span<const invoke_response> responses,
                                                           std::string_view model) {
  if (responses.size() != calls.bodies.size())
    return bad_upstream("Expected " + std::to_string(calls.bodies.size()) + " InvokeModel responses, got " +
                        std::to_string(responses.size()) + ".");
  embeddings_response out;
  out.tokens_reported = true;
  json::array data;
  auto add = [&](const json::value& vec) -> translate_result<void> {
    auto v = openai_vector(vec, calls.base64);
    if (!v) return v.error();
    json::object item;
    item["object"] = "embedding";
    item["index"] = data.size();
    item["embedding"] = std::move(*v);
    data.push_back(std::move(item));
    return {};
  };
  for (const invoke_response& r : responses) {
    if (!r.body.is_object()) return bad_upstream("The Bedrock InvokeModel response is not a JSON object.");
    const json::object& b = r.body.get_object();
    std::optional<std::uint64_t> tokens = r.input_token_count;
    if (calls.family == embedding_family::titan_text_v2) {
      const json::value* e = b.if_contains("embedding");
      if (!e) return bad_upstream("The Titan embeddings response has no 'embedding'.");
      if (auto a = add(*e); !a) return a.error();
      if (const json::value* n = b.if_contains("inputTextTokenCount"))
        if (auto c = as_count(*n)) tokens = c;
    } else {
      const json::value* e = b.if_contains("embeddings");
      // `embeddings` is an array of vectors, or by type (`{"float":[...]}`) when embedding_types
      // was asked for or the model answers that way (embed-v4).
      if (e && e->is_object()) e = e->get_object().if_contains("float");
      if (!e || !e->is_array()) return bad_upstream("The Cohere embeddings response has no float 'embeddings'.");
      for (const json::value& vec : e->get_array())
        if (auto a = add(vec); !a) return a.error();
    }
    if (tokens) out.prompt_tokens += *tokens;
    else out.tokens_reported = false;
  }
  if (data.size() != calls.input_count)
    return bad_upstream("Amazon Bedrock returned " + std::to_string(data.size()) + " embeddings for " +
                        std::to_string(calls.input_count) + " inputs.");
  json::object& body = out.body;
  body["object"] = "list";
  body["data"] = std::move(data);
  body["model"] = model;
  body["usage"] = json::object{{"prompt_tokens", out.prompt_tokens}, {"total_tokens", out.prompt_tokens}};
  return out;
}

}  // namespace tollgate::providers::bedrock
