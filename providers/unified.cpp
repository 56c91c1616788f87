// SPDX-License-Identifier: Apache-2.0
#include "providers/unified.hpp"

#include "providers/common/translate.hpp"

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <memory>

#include "config/config.hpp"
#include "gateway/core/tokens.hpp"

namespace tollgate::providers {
namespace json = boost::json;
namespace {

failure bad(errc e, std::string msg, std::string param) {
  return make_failure(e, std::move(msg), std::move(param));
}


failure wrong_type(const std::string& param, std::string_view expected, const json::value& got) {
  return bad(errc::invalid_type,
             "Invalid type for '" + param + "': expected " + std::string(expected) + ", but got " +
                 std::string(json_kind_name(got)) + ".",
             param);
}

/// Optional field of a given kind (null counts as absent, as OpenAI's nullable fields do).
const json::value* opt(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || it->value().is_null()) return nullptr;
  return &it->value();
}

/// What an image part counts for in the prompt estimate, in characters (four a token): 1,445
/// tokens, OpenAI's count for the largest high-detail image (8 tiles of 170 plus 85), so that an
/// image never reserves less than it can cost.
constexpr std::uint64_t image_part_chars = 1'445 * 4;

/// The characters of a JSON value's keys and strings, and one for each other element and
/// separator: what tool definitions, schemas and tool calls put in a prompt, roughly (each key,
/// name and description is text the model reads). Depth is bounded by the body parser.
std::uint64_t json_chars(const json::value& v) {
  std::uint64_t n = 0;
  if (v.is_string()) return token_chars(v.get_string());
  if (v.is_array()) {
    for (auto& e : v.get_array()) n += json_chars(e) + 1;
    return n;
  }
  if (v.is_object()) {
    for (auto& kv : v.get_object()) n += token_chars(kv.key()) + json_chars(kv.value()) + 1;
    return n;
  }
  return 1;
}

/// A message's content in characters: its text, and each image part as image_part_chars.
std::uint64_t text_length(const json::value& content) {
  if (content.is_string()) return token_chars(content.get_string());
  std::uint64_t n = 0;
  if (content.is_array())
    for (auto& part : content.get_array())
      if (part.is_object()) {
        const auto& po = part.get_object();
        if (auto t = po.if_contains("text"); t && t->is_string()) n += token_chars(t->get_string());
        else if (po.contains("image_url")) n += image_part_chars;
      }
  return n;
}

/// An integer from 0 to `max` (0 when absent). The bounds keep what the policy reserves finite:
/// tokens and cost are sums and products of these, in 64 bits.
boost::system::result<std::uint64_t, failure> non_negative_int(const json::object& o, std::string_view key,
                                                               std::uint64_t max) {
  const json::value* v = opt(o, key);
  if (!v) return 0;
  std::uint64_t n = 0;
  if (v->is_int64() && v->get_int64() >= 0) n = std::uint64_t(v->get_int64());
  else if (v->is_uint64()) n = v->get_uint64();
  else if (v->is_int64()) return bad(errc::invalid_value, "'" + std::string(key) + "' must be at least 0.", std::string(key));
  else return wrong_type(std::string(key), "integer", *v);
  if (n > max)
    return bad(errc::invalid_value, "'" + std::string(key) + "' must be at most " + std::to_string(max) + ".", std::string(key));
  return n;
}

constexpr std::uint64_t max_choices = 128;                           // OpenAI's own bound on n
constexpr std::uint64_t max_embedding_dimensions = 65'536;

phase_result decode_chat(request_context& ctx, const json::object& o) {
  const json::value* msgs = opt(o, "messages");
  if (!msgs) return bad(errc::missing_parameter, "Missing required parameter: 'messages'.", "messages");
  if (!msgs->is_array()) return wrong_type("messages", "array", *msgs);
  const auto& arr = msgs->get_array();
  if (arr.empty()) return bad(errc::invalid_value, "'messages' must contain at least one message.", "messages");
  std::uint64_t chars = 0;
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!arr[i].is_object()) return wrong_type(p, "object", arr[i]);
    const auto& m = arr[i].get_object();
    const json::value* role = opt(m, "role");
    if (!role) return bad(errc::missing_parameter, "Missing required parameter: '" + p + ".role'.", p + ".role");
    if (!role->is_string()) return wrong_type(p + ".role", "string", *role);
    if (const json::value* c = opt(m, "content")) {
      if (!c->is_string() && !c->is_array()) return wrong_type(p + ".content", "string or array", *c);
      chars += text_length(*c);
    }
    // An assistant turn's tool calls (names and arguments) are prompt text too.
    if (const json::value* tc = opt(m, "tool_calls")) chars += json_chars(*tc);
    chars += 16;  // role and framing tokens, roughly four per message
  }
  if (const json::value* s = opt(o, "stream")) {
    if (!s->is_bool()) return wrong_type("stream", "boolean", *s);
    ctx.stream = s->get_bool();
  }
  if (const json::value* so = opt(o, "stream_options")) {
    if (!so->is_object()) return wrong_type("stream_options", "object", *so);
    if (const json::value* iu = opt(so->get_object(), "include_usage")) {
      if (!iu->is_bool()) return wrong_type("stream_options.include_usage", "boolean", *iu);
      ctx.caller_wants_usage = iu->get_bool();
    }
  }
  auto mt = non_negative_int(o, "max_completion_tokens", config::max_output_tokens);
  if (!mt) return mt.error();
  auto mt_old = non_negative_int(o, "max_tokens", config::max_output_tokens);
  if (!mt_old) return mt_old.error();
  ctx.max_output_tokens = *mt ? *mt : *mt_old;
  auto n = non_negative_int(o, "n", max_choices);
  if (!n) return n.error();
  ctx.choices = *n ? unsigned(*n) : 1u;  // n answers: n times the output to reserve
  if (const json::value* t = opt(o, "temperature"); t && !t->is_number()) return wrong_type("temperature", "number", *t);
  if (const json::value* t = opt(o, "top_p"); t && !t->is_number()) return wrong_type("top_p", "number", *t);
  const json::value* tools = opt(o, "tools");
  if (tools && !tools->is_array()) return wrong_type("tools", "array", *tools);
  // Tool and function definitions and a response schema reach the model as prompt text: an
  // agent's tools are often most of its prompt, and a reservation without them could be short.
  for (const json::value* d : {tools, opt(o, "functions"), opt(o, "response_format")})
    if (d) chars += json_chars(*d);
  ctx.prompt_estimate = estimate_tokens_from_chars(chars);
  return flow::next;
}

phase_result decode_embeddings(request_context& ctx, const json::object& o) {
  const json::value* in = opt(o, "input");
  if (!in) return bad(errc::missing_parameter, "Missing required parameter: 'input'.", "input");
  std::uint64_t chars = 0;
  if (in->is_string()) {
    chars = token_chars(in->get_string());
  } else if (in->is_array()) {
    if (in->get_array().empty()) return bad(errc::invalid_value, "'input' must not be empty.", "input");
    for (auto& item : in->get_array()) {
      if (item.is_string()) chars += token_chars(item.get_string());
      else if (item.is_int64() || item.is_uint64()) chars += 4;  // a token id
      else if (item.is_array()) chars += 4 * item.get_array().size();
      else return wrong_type("input", "string or array of strings or tokens", item);
    }
  } else {
    return wrong_type("input", "string or array", *in);
  }
  if (const json::value* d = opt(o, "dimensions"); d && !(d->is_int64() && d->get_int64() > 0) && !d->is_uint64())
    return bad(errc::invalid_value, "'dimensions' must be a positive integer.", "dimensions");
  // Real models have at most a few thousand; the built-in mock would otherwise build a vector of
  // any size asked for.
  if (auto d = non_negative_int(o, "dimensions", max_embedding_dimensions); !d) return d.error();
  ctx.prompt_estimate = estimate_tokens_from_chars(chars);
  return flow::next;
}

}  // namespace

phase_result decode_request(request_context& ctx) {
  boost::system::error_code ec;
  // The decoded body lives in one arena per request: a few blocks instead of an allocation per
  // node and string, and nothing to free node by node. Shared (counted), so a value copied out of
  // the body keeps its memory alive after the request is gone.
  json::storage_ptr arena = json::make_shared_resource<json::monotonic_resource>(
      std::clamp<std::size_t>(ctx.body.size() * 2, 1024, 64 * 1024));
  json::value v = json::parse(ctx.body, ec, arena);
  if (ec) return bad(errc::invalid_json, "We could not parse the JSON body of your request: " + ec.message() + ".", "");
  if (!v.is_object()) return bad(errc::invalid_json, "The request body must be a JSON object.", "");
  // Assignment would copy the object into request_json's own (default) memory; a new object
  // moved from the parsed one takes the arena with it.
  std::destroy_at(&ctx.request_json);
  std::construct_at(&ctx.request_json, std::move(v.get_object()));
  const json::object& o = ctx.request_json;
  const json::value* model = opt(o, "model");
  if (!model) return bad(errc::missing_parameter, "Missing required parameter: 'model'.", "model");
  if (!model->is_string()) return wrong_type("model", "string", *model);
  ctx.model = std::string(model->get_string());
  if (ctx.model.empty()) return bad(errc::invalid_value, "'model' must not be empty.", "model");
  return ctx.endpoint == endpoint_kind::embeddings ? decode_embeddings(ctx, o) : decode_chat(ctx, o);
}

}  // namespace tollgate::providers
