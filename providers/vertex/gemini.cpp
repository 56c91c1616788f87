// SPDX-License-Identifier: Apache-2.0
#include "providers/vertex/gemini.hpp"

#include <boost/json/array.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <utility>

#include "providers/common/data_url.hpp"

namespace tollgate::providers::vertex {

namespace json = boost::json;

namespace {

// ---------------------------------------------------------------------------------------------
// Small helpers

translate_error make_error(translate_errc code, std::string param, std::string message) {
  return translate_error{code, std::move(message), std::move(param)};
}

std::string at_index(std::string_view base, std::size_t i) {
  std::string s(base);
  s += '[';
  s += std::to_string(i);
  s += ']';
  return s;
}

std::string at_member(std::string_view base, std::string_view key) {
  std::string s(base);
  if (!s.empty()) s += '.';
  s += key;
  return s;
}

/// The member `key`, or nullptr when absent or JSON null (OpenAI treats null as "not given").
const json::value* given(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && !v->is_null() ? v : nullptr;
}

std::string_view string_or_empty(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_string()) return {};
  return v->get_string();
}

const json::object* object_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

const json::array* array_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? v->if_array() : nullptr;
}

bool is_true(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_bool() && v->get_bool();
}

std::optional<double> as_number(const json::value& v) {
  if (v.is_double()) return v.get_double();
  if (v.is_int64()) return static_cast<double>(v.get_int64());
  if (v.is_uint64()) return static_cast<double>(v.get_uint64());
  return std::nullopt;
}

std::optional<std::int64_t> as_integer(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    const double d = v.get_double();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15) return std::nullopt;
    return static_cast<std::int64_t>(d);
  }
  return std::nullopt;
}

/// A token count: a non-negative integer (Google sends int32 counts as JSON numbers).
std::optional<std::uint64_t> as_count(const json::value& v) {
  const auto i = as_integer(v);
  if (!i || *i < 0) return std::nullopt;
  return static_cast<std::uint64_t>(*i);
}

/// A number as JSON: integral values as integers (so `3` is not serialized as `3E0`).
json::value number_value(double d) {
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9.0e15) return static_cast<std::int64_t>(d);
  return d;
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string ascii_upper(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return out;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

constexpr char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(const std::vector<unsigned char>& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const std::uint32_t n = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) | in[i + 2];
    out += base64_alphabet[(n >> 18) & 63];
    out += base64_alphabet[(n >> 12) & 63];
    out += base64_alphabet[(n >> 6) & 63];
    out += base64_alphabet[n & 63];
  }
  if (i + 1 == in.size()) {
    const std::uint32_t n = std::uint32_t{in[i]} << 16;
    out += base64_alphabet[(n >> 18) & 63];
    out += base64_alphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const std::uint32_t n = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
    out += base64_alphabet[(n >> 18) & 63];
    out += base64_alphabet[(n >> 12) & 63];
    out += base64_alphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// URL pieces

bool url_safe_segment(std::string_view s) {
  if (s.empty() || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == '@' || c == ':';
  });
}

/// A location goes into the host name: lower-case letters, digits and '-' only.
bool host_safe_location(std::string_view s) {
  if (s.empty() || s.front() == '-' || s.back() == '-') return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; });
}

std::string_view method_suffix(vertex_method m) {
  switch (m) {
    case vertex_method::generate_content: return ":generateContent";
    case vertex_method::stream_generate_content: return ":streamGenerateContent?alt=sse";
    case vertex_method::predict: return ":predict";
  }
  return ":generateContent";
}

// ---------------------------------------------------------------------------------------------
// JSON Schema → Vertex Schema

std::optional<std::string_view> vertex_type_name(std::string_view t) {
  if (t == "string") return "STRING";
  if (t == "number") return "NUMBER";
  if (t == "integer") return "INTEGER";
  if (t == "boolean") return "BOOLEAN";
  if (t == "array") return "ARRAY";
  if (t == "object") return "OBJECT";
  return std::nullopt;
}

bool is_null_schema(const json::value& v) {
  const json::object* o = v.if_object();
  return o && string_or_empty(*o, "type") == "null";
}

bool convert_schema(const json::value& in, json::object& out, int depth) {
  if (depth > 64) return false;
  const json::object* o = in.if_object();
  if (!o) return false;
  const json::array* any_of = nullptr;
  for (const auto& [key, v] : *o) {
    if (key == "type") {
      if (v.is_string()) {
        const auto t = vertex_type_name(v.get_string());
        if (!t) return false;  // "null" alone, or not a type
        out["type"] = *t;
      } else if (const json::array* types = v.if_array()) {
        std::optional<std::string_view> only;
        bool nullable = false;
        for (const json::value& t : *types) {
          if (!t.is_string()) return false;
          if (t.get_string() == "null") {
            nullable = true;
            continue;
          }
          if (only) return false;  // several non-null types
          only = vertex_type_name(t.get_string());
          if (!only) return false;
        }
        if (!only) return false;
        out["type"] = *only;
        if (nullable) out["nullable"] = true;
      } else {
        return false;
      }
    } else if (key == "format" || key == "title" || key == "description" || key == "pattern") {
      if (!v.is_string()) return false;
      out[key] = v;
    } else if (key == "nullable") {
      if (!v.is_bool()) return false;
      if (v.get_bool()) out["nullable"] = true;
    } else if (key == "enum") {
      const json::array* values = v.if_array();
      if (!values) return false;
      json::array e;
      for (const json::value& x : *values) {
        if (x.is_null()) {
          out["nullable"] = true;
        } else if (x.is_string()) {
          e.push_back(x);
        } else {
          return false;  // Vertex enums are strings
        }
      }
      out["enum"] = std::move(e);
    } else if (key == "const") {
      if (!v.is_string()) return false;
      out["enum"] = json::array{v};
    } else if (key == "properties") {
      const json::object* props = v.if_object();
      if (!props) return false;
      json::object converted;
      json::array order;
      for (const auto& [name, sub] : *props) {
        json::object c;
        if (!convert_schema(sub, c, depth + 1)) return false;
        converted[name] = std::move(c);
        order.push_back(json::string(name));
      }
      out["properties"] = std::move(converted);
      if (order.size() > 1) out["propertyOrdering"] = std::move(order);
    } else if (key == "required") {
      const json::array* names = v.if_array();
      if (!names || !std::all_of(names->begin(), names->end(), [](const json::value& n) { return n.is_string(); }))
        return false;
      out["required"] = v;
    } else if (key == "items") {
      json::object c;
      if (!convert_schema(v, c, depth + 1)) return false;  // tuple items (arrays) are refused here
      out["items"] = std::move(c);
    } else if (key == "minItems" || key == "maxItems" || key == "minProperties" || key == "maxProperties" ||
               key == "minLength" || key == "maxLength") {
      const auto n = as_integer(v);
      if (!n || *n < 0) return false;
      out[key] = *n;
    } else if (key == "minimum" || key == "maximum") {
      if (!as_number(v)) return false;
      out[key] = v;
    } else if (key == "default" || key == "example") {
      out[key] = v;
    } else if (key == "anyOf") {
      any_of = v.if_array();
      if (!any_of || any_of->empty()) return false;
    } else if (key == "$schema" || key == "$id" || key == "$comment" || key == "additionalProperties" ||
               key == "examples" || key == "deprecated" || key == "readOnly" || key == "writeOnly" ||
               key == "uniqueItems" || key == "strict") {
      continue;  // annotations (or constraints Gemini cannot state) that do not change the shape
    } else {
      return false;  // $ref, $defs, oneOf, allOf, not, if/then/else, patternProperties, ...
    }
  }
  if (any_of) {
    bool nullable = false;
    json::array branches;
    for (const json::value& b : *any_of) {
      if (is_null_schema(b)) {
        nullable = true;
        continue;
      }
      json::object c;
      if (!convert_schema(b, c, depth + 1)) return false;
      branches.push_back(std::move(c));
    }
    if (branches.empty()) return false;
    if (branches.size() == 1) {
      // `anyOf:[X, {type:null}]` is X made nullable; the outer keywords (description...) win.
      for (auto& [k, bv] : branches.front().as_object())
        if (!out.contains(k)) out[k] = std::move(bv);
    } else {
      out["anyOf"] = std::move(branches);
    }
    if (nullable) out["nullable"] = true;
  }
  return true;
}

/// `{type:"object"}` with no properties: Gemini wants no `parameters` at all then.
bool is_empty_object_schema(const json::object& schema) {
  if (string_or_empty(schema, "type") != "object") return false;
  const json::object* props = object_member(schema, "properties");
  if (schema.contains("properties") && !props) return false;
  if (props && !props->empty()) return false;
  for (const auto& [k, v] : schema) {
    (void)v;
    if (k != "type" && k != "properties" && k != "additionalProperties" && k != "$schema" && k != "description" &&
        k != "title" && k != "required" && k != "strict")
      return false;
  }
  const json::value* extra = schema.if_contains("additionalProperties");
  return !extra || extra->is_null() || (extra->is_bool() && !extra->get_bool());
}

// ---------------------------------------------------------------------------------------------
// Chat request

using maybe_error = std::optional<translate_error>;

class request_builder {
 public:
  explicit request_builder(const json::object& req) : req_(req) {}

  translate_result<json::object> build() {
    if (auto e = refuse_unsupported()) return *e;
    if (auto e = translate_tools()) return *e;  // before messages: tool_choice checks use the names
    if (auto e = translate_messages()) return *e;
    json::object generation;
    if (auto e = translate_generation_config(generation)) return *e;

    json::object body;
    json::array contents;
    for (turn& t : turns_) {
      json::object c;
      c["role"] = t.role;
      c["parts"] = std::move(t.parts);
      contents.push_back(std::move(c));
    }
    body["contents"] = std::move(contents);
    if (!system_parts_.empty()) body["systemInstruction"] = json::object{{"parts", std::move(system_parts_)}};
    if (!generation.empty()) body["generationConfig"] = std::move(generation);
    if (!declarations_.empty()) {
      body["tools"] = json::array{json::object{{"functionDeclarations", std::move(declarations_)}}};
      if (!tool_config_.empty()) body["toolConfig"] = std::move(tool_config_);
    }
    return body;
  }

 private:
  struct turn {
    std::string role;
    json::array parts;
  };

  maybe_error refuse_unsupported() const {
    if (given(req_, "audio")) return make_error(translate_errc::unsupported, "audio", "audio output is not supported by Vertex AI Gemini");
    if (const json::value* m = given(req_, "modalities")) {
      const json::array* a = m->if_array();
      if (!a) return make_error(translate_errc::invalid_type, "modalities", "modalities must be an array");
      for (const json::value& x : *a)
        if (x.is_string() && x.get_string() == "audio")
          return make_error(translate_errc::unsupported, "modalities", "audio output is not supported by Vertex AI Gemini");
    }
    if (given(req_, "functions"))
      return make_error(translate_errc::unsupported, "functions", "functions is deprecated and not supported here; use tools");
    if (given(req_, "function_call"))
      return make_error(translate_errc::unsupported, "function_call",
                        "function_call is deprecated and not supported here; use tool_choice");
    if (given(req_, "web_search_options"))
      return make_error(translate_errc::unsupported, "web_search_options", "web search is not supported by this provider");
    if (const json::value* lp = given(req_, "logprobs")) {
      if (!lp->is_bool()) return make_error(translate_errc::invalid_type, "logprobs", "logprobs must be a boolean");
      if (lp->get_bool())
        return make_error(translate_errc::unsupported, "logprobs", "logprobs are not supported by this provider");
    }
    if (const json::value* n = given(req_, "n")) {
      const auto v = as_integer(*n);
      if (!v) return make_error(translate_errc::invalid_type, "n", "n must be an integer");
      if (*v < 1) return make_error(translate_errc::invalid_value, "n", "n must be at least 1");
      if (*v > 1)
        return make_error(translate_errc::unsupported, "n", "n > 1 is not supported by this provider: ask for one choice");
    }
    return std::nullopt;
  }

  // --- messages -----------------------------------------------------------------------------

  void append(std::string_view role, json::array parts) {
    if (parts.empty()) return;
    if (!turns_.empty() && turns_.back().role == role) {
      for (json::value& p : parts) turns_.back().parts.push_back(std::move(p));
      return;
    }
    turns_.push_back(turn{std::string(role), std::move(parts)});
  }

  /// Text of content that may hold text only: a string, or `{type:"text"}` parts (and
  /// `{type:"refusal"}` parts for the assistant).
  translate_result<std::vector<std::string>> text_pieces(const json::value* content, const std::string& param,
                                                         bool allow_refusal) const {
    std::vector<std::string> out;
    if (!content || content->is_null()) return out;
    if (content->is_string()) {
      out.emplace_back(content->get_string());
      return out;
    }
    const json::array* parts = content->if_array();
    if (!parts) return make_error(translate_errc::invalid_type, param, "content must be a string or an array of parts");
    for (std::size_t j = 0; j < parts->size(); ++j) {
      const std::string pp = at_index(param, j);
      const json::object* part = (*parts)[j].if_object();
      if (!part) return make_error(translate_errc::invalid_type, pp, "content parts must be objects");
      const std::string_view type = string_or_empty(*part, "type");
      std::string_view field;
      if (type == "text") {
        field = "text";
      } else if (type == "refusal" && allow_refusal) {
        field = "refusal";
      } else if (type.empty()) {
        return make_error(translate_errc::missing_parameter, at_member(pp, "type"), "content part needs a type");
      } else {
        return make_error(translate_errc::unsupported, at_member(pp, "type"),
                          "content part type '" + std::string(type) + "' is not supported in this message");
      }
      const json::value* text = part->if_contains(field);
      if (!text || !text->is_string())
        return make_error(translate_errc::invalid_type, at_member(pp, field), std::string(field) + " must be a string");
      out.emplace_back(text->get_string());
    }
    return out;
  }

  translate_result<json::array> user_parts(const json::value* content, const std::string& param) const {
    json::array out;
    if (!content) return make_error(translate_errc::missing_parameter, param, "user messages need content");
    if (content->is_string()) {
      if (!content->get_string().empty()) out.push_back(json::object{{"text", content->get_string()}});
      return out;
    }
    const json::array* parts = content->if_array();
    if (!parts) return make_error(translate_errc::invalid_type, param, "content must be a string or an array of parts");
    for (std::size_t j = 0; j < parts->size(); ++j) {
      const std::string pp = at_index(param, j);
      const json::object* part = (*parts)[j].if_object();
      if (!part) return make_error(translate_errc::invalid_type, pp, "content parts must be objects");
      const std::string_view type = string_or_empty(*part, "type");
      if (type == "text") {
        const json::value* text = part->if_contains("text");
        if (!text || !text->is_string())
          return make_error(translate_errc::invalid_type, at_member(pp, "text"), "text must be a string");
        if (!text->get_string().empty()) out.push_back(json::object{{"text", text->get_string()}});
      } else if (type == "image_url") {
        std::string_view url;
        if (const json::object* img = object_member(*part, "image_url")) url = string_or_empty(*img, "url");
        const std::string up = at_member(at_member(pp, "image_url"), "url");
        if (url.empty()) return make_error(translate_errc::missing_parameter, up, "image_url.url must be a non-empty string");
        const auto d = parse_data_url(url);
        if (!d)
          return make_error(translate_errc::unsupported, up,
                            "image URLs are not supported by Vertex AI Gemini; send the image as a base64 data: URL");
        out.push_back(json::object{{"inlineData", json::object{{"mimeType", d->mime_type}, {"data", d->data}}}});
      } else if (type == "file") {
        const json::object* file = object_member(*part, "file");
        const std::string fp = at_member(pp, "file");
        if (!file) return make_error(translate_errc::missing_parameter, fp, "file part needs a file object");
        const auto d = parse_data_url(string_or_empty(*file, "file_data"));
        if (!d)
          return make_error(translate_errc::unsupported, at_member(fp, "file_data"),
                            "only files sent inline as base64 data: URLs are supported by Vertex AI Gemini");
        out.push_back(json::object{{"inlineData", json::object{{"mimeType", d->mime_type}, {"data", d->data}}}});
      } else if (type == "input_audio") {
        return make_error(translate_errc::unsupported, pp, "audio input is not supported by this provider");
      } else if (type.empty()) {
        return make_error(translate_errc::missing_parameter, at_member(pp, "type"), "content part needs a type");
      } else {
        return make_error(translate_errc::unsupported, at_member(pp, "type"),
                          "content part type '" + std::string(type) + "' is not supported");
      }
    }
    return out;
  }

  maybe_error assistant_message(const json::object& m, const std::string& param) {
    json::array parts;
    auto texts = text_pieces(m.if_contains("content"), at_member(param, "content"), true);
    if (!texts) return texts.error();
    for (std::string& t : *texts)
      if (!t.empty()) parts.push_back(json::object{{"text", std::move(t)}});

    if (const json::value* tc = given(m, "tool_calls")) {
      const std::string tp = at_member(param, "tool_calls");
      const json::array* calls = tc->if_array();
      if (!calls) return make_error(translate_errc::invalid_type, tp, "tool_calls must be an array");
      bool signed_call = false;
      std::size_t first_call = parts.size();
      for (std::size_t j = 0; j < calls->size(); ++j) {
        const std::string cp = at_index(tp, j);
        const json::object* call = (*calls)[j].if_object();
        if (!call) return make_error(translate_errc::invalid_type, cp, "tool calls must be objects");
        const std::string_view type = string_or_empty(*call, "type");
        if (!type.empty() && type != "function")
          return make_error(translate_errc::unsupported, at_member(cp, "type"), "only function tool calls are supported");
        const std::string_view id = string_or_empty(*call, "id");
        if (id.empty()) return make_error(translate_errc::missing_parameter, at_member(cp, "id"), "tool calls need an id");
        const json::object* fn = object_member(*call, "function");
        const std::string fp = at_member(cp, "function");
        if (!fn) return make_error(translate_errc::missing_parameter, fp, "tool calls need a function object");
        const std::string_view name = string_or_empty(*fn, "name");
        if (name.empty())
          return make_error(translate_errc::missing_parameter, at_member(fp, "name"), "tool calls need a function name");
        json::value args = json::object();
        const std::string ap = at_member(fp, "arguments");
        if (const json::value* a = given(*fn, "arguments")) {
          if (!a->is_string()) return make_error(translate_errc::invalid_type, ap, "arguments must be a JSON string");
          const std::string_view text = a->get_string();
          if (text.find_first_not_of(" \t\r\n") != std::string_view::npos) {
            boost::system::error_code ec;
            args = json::parse(text, ec);
            if (ec || !args.is_object())
              return make_error(translate_errc::invalid_value, ap, "arguments must be a JSON object");
          }
        }
        json::object part{{"functionCall", json::object{{"name", name}, {"args", std::move(args)}}}};
        if (const json::object* extra = object_member(*call, "extra_content")) {
          if (const json::object* g = object_member(*extra, "google")) {
            const std::string_view sig = string_or_empty(*g, "thought_signature");
            if (!sig.empty()) {
              part["thoughtSignature"] = sig;
              signed_call = true;
            }
          }
        }
        parts.push_back(std::move(part));
        call_names_[std::string(id)] = std::string(name);
      }
      if (!calls->empty() && !signed_call)
        parts[first_call].as_object()["thoughtSignature"] = dummy_thought_signature;
    }
    append("model", std::move(parts));
    return std::nullopt;
  }

  maybe_error tool_message(const json::object& m, const std::string& param) {
    const std::string_view id = string_or_empty(m, "tool_call_id");
    const std::string ip = at_member(param, "tool_call_id");
    if (id.empty()) return make_error(translate_errc::missing_parameter, ip, "tool messages need a tool_call_id");
    const auto found = call_names_.find(id);
    if (found == call_names_.end())
      return make_error(translate_errc::invalid_value, ip,
                        "tool_call_id '" + std::string(id) + "' does not match a tool call of an earlier assistant message");
    auto texts = text_pieces(m.if_contains("content"), at_member(param, "content"), false);
    if (!texts) return texts.error();
    std::string text;
    for (const std::string& t : *texts) text += t;
    json::value content;
    boost::system::error_code ec;
    if (text.find_first_not_of(" \t\r\n") != std::string::npos) content = json::parse(text, ec);
    if (ec || content.is_null()) content = json::string(text);
    json::object part{{"functionResponse",
                       json::object{{"name", found->second}, {"response", json::object{{"content", std::move(content)}}}}}};
    append("user", json::array{std::move(part)});
    return std::nullopt;
  }

  maybe_error translate_messages() {
    const json::value* mv = given(req_, "messages");
    if (!mv) return make_error(translate_errc::missing_parameter, "messages", "messages is required");
    const json::array* messages = mv->if_array();
    if (!messages) return make_error(translate_errc::invalid_type, "messages", "messages must be an array");
    if (messages->empty()) return make_error(translate_errc::invalid_value, "messages", "messages must not be empty");
    for (std::size_t i = 0; i < messages->size(); ++i) {
      const std::string param = at_index("messages", i);
      const json::object* m = (*messages)[i].if_object();
      if (!m) return make_error(translate_errc::invalid_type, param, "messages must be objects");
      const json::value* rv = m->if_contains("role");
      if (!rv) return make_error(translate_errc::missing_parameter, at_member(param, "role"), "messages need a role");
      if (!rv->is_string()) return make_error(translate_errc::invalid_type, at_member(param, "role"), "role must be a string");
      const std::string_view role = rv->get_string();
      if (role == "system" || role == "developer") {
        auto texts = text_pieces(m->if_contains("content"), at_member(param, "content"), false);
        if (!texts) return texts.error();
        for (std::string& t : *texts)
          if (!t.empty()) system_parts_.push_back(json::object{{"text", std::move(t)}});
      } else if (role == "user") {
        auto parts = user_parts(given(*m, "content"), at_member(param, "content"));
        if (!parts) return parts.error();
        if (parts->empty())
          return make_error(translate_errc::invalid_value, at_member(param, "content"), "user message content must not be empty");
        append("user", std::move(*parts));
      } else if (role == "assistant") {
        if (auto e = assistant_message(*m, param)) return e;
      } else if (role == "tool") {
        if (auto e = tool_message(*m, param)) return e;
      } else if (role == "function") {
        return make_error(translate_errc::unsupported, at_member(param, "role"),
                          "function messages are deprecated and not supported here; use tool messages");
      } else {
        return make_error(translate_errc::invalid_value, at_member(param, "role"),
                          "unknown role '" + std::string(role) + "'");
      }
    }
    if (turns_.empty())
      return make_error(translate_errc::invalid_value, "messages",
                        "messages must hold at least one user or assistant message with content");
    return std::nullopt;
  }

  // --- generationConfig ---------------------------------------------------------------------

  maybe_error copy_number(std::string_view from, std::string_view to, json::object& gen, bool skip_zero = false) const {
    const json::value* v = given(req_, from);
    if (!v) return std::nullopt;
    const auto d = as_number(*v);
    if (!d) return make_error(translate_errc::invalid_type, std::string(from), std::string(from) + " must be a number");
    if (skip_zero && *d == 0) return std::nullopt;
    gen[to] = *v;
    return std::nullopt;
  }

  maybe_error translate_generation_config(json::object& gen) const {
    for (std::string_view key : {"max_completion_tokens", "max_tokens"}) {
      const json::value* v = given(req_, key);
      if (!v) continue;
      const auto n = as_integer(*v);
      if (!n) return make_error(translate_errc::invalid_type, std::string(key), std::string(key) + " must be an integer");
      if (*n < 1) return make_error(translate_errc::invalid_value, std::string(key), std::string(key) + " must be at least 1");
      gen["maxOutputTokens"] = *n;
      break;  // max_completion_tokens wins over the deprecated max_tokens
    }
    if (auto e = copy_number("temperature", "temperature", gen)) return e;
    if (auto e = copy_number("top_p", "topP", gen)) return e;
    if (auto e = copy_number("presence_penalty", "presencePenalty", gen, true)) return e;
    if (auto e = copy_number("frequency_penalty", "frequencyPenalty", gen, true)) return e;
    if (const json::value* seed = given(req_, "seed")) {
      const auto n = as_integer(*seed);
      if (!n) return make_error(translate_errc::invalid_type, "seed", "seed must be an integer");
      gen["seed"] = *n;
    }
    if (const json::value* stop = given(req_, "stop")) {
      json::array seqs;
      if (stop->is_string()) {
        if (!stop->get_string().empty()) seqs.push_back(*stop);
      } else if (const json::array* a = stop->if_array()) {
        for (std::size_t j = 0; j < a->size(); ++j) {
          if (!(*a)[j].is_string())
            return make_error(translate_errc::invalid_type, at_index("stop", j), "stop sequences must be strings");
          if (!(*a)[j].get_string().empty()) seqs.push_back((*a)[j]);
        }
      } else {
        return make_error(translate_errc::invalid_type, "stop", "stop must be a string or an array of strings");
      }
      if (!seqs.empty()) gen["stopSequences"] = std::move(seqs);
    }
    if (const json::value* rf = given(req_, "response_format")) {
      const json::object* o = rf->if_object();
      if (!o) return make_error(translate_errc::invalid_type, "response_format", "response_format must be an object");
      const std::string_view type = string_or_empty(*o, "type");
      if (type == "json_object") {
        gen["responseMimeType"] = "application/json";
      } else if (type == "json_schema") {
        const json::object* js = object_member(*o, "json_schema");
        if (!js)
          return make_error(translate_errc::missing_parameter, "response_format.json_schema",
                            "response_format json_schema needs a json_schema object");
        gen["responseMimeType"] = "application/json";
        if (const json::value* schema = given(*js, "schema")) {
          if (!schema->is_object())
            return make_error(translate_errc::invalid_type, "response_format.json_schema.schema", "schema must be an object");
          if (auto converted = to_vertex_schema(*schema))
            gen["responseSchema"] = std::move(*converted);
          else
            gen["responseJsonSchema"] = *schema;
        }
      } else if (type != "text") {
        return make_error(translate_errc::invalid_value, "response_format.type",
                          "response_format.type must be text, json_object or json_schema");
      }
    }
    return std::nullopt;
  }

  // --- tools --------------------------------------------------------------------------------

  maybe_error translate_tools() {
    std::vector<std::string> names;
    if (const json::value* tv = given(req_, "tools")) {
      const json::array* tools = tv->if_array();
      if (!tools) return make_error(translate_errc::invalid_type, "tools", "tools must be an array");
      for (std::size_t j = 0; j < tools->size(); ++j) {
        const std::string tp = at_index("tools", j);
        const json::object* tool = (*tools)[j].if_object();
        if (!tool) return make_error(translate_errc::invalid_type, tp, "tools must be objects");
        if (string_or_empty(*tool, "type") != "function")
          return make_error(translate_errc::unsupported, at_member(tp, "type"), "only function tools are supported");
        const json::object* fn = object_member(*tool, "function");
        const std::string fp = at_member(tp, "function");
        if (!fn) return make_error(translate_errc::missing_parameter, fp, "function tools need a function object");
        const std::string_view name = string_or_empty(*fn, "name");
        if (name.empty())
          return make_error(translate_errc::missing_parameter, at_member(fp, "name"), "function tools need a name");
        json::object decl{{"name", name}};
        if (const json::value* d = given(*fn, "description")) {
          if (!d->is_string())
            return make_error(translate_errc::invalid_type, at_member(fp, "description"), "description must be a string");
          decl["description"] = *d;
        }
        if (const json::value* p = given(*fn, "parameters")) {
          const json::object* schema = p->if_object();
          if (!schema)
            return make_error(translate_errc::invalid_type, at_member(fp, "parameters"), "parameters must be an object");
          if (!schema->empty() && !is_empty_object_schema(*schema)) {
            if (auto converted = to_vertex_schema(*p))
              decl["parameters"] = std::move(*converted);
            else
              decl["parametersJsonSchema"] = *p;
          }
        }
        names.emplace_back(name);
        declarations_.push_back(std::move(decl));
      }
    }
    return translate_tool_choice(names);
  }

  static bool declared(const std::vector<std::string>& names, std::string_view name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  }

  maybe_error translate_tool_choice(const std::vector<std::string>& names) {
    const json::value* tc = given(req_, "tool_choice");
    if (!tc) return std::nullopt;
    json::object fcc;
    if (tc->is_string()) {
      const std::string_view mode = tc->get_string();
      if (mode == "auto") {
        fcc["mode"] = "AUTO";
      } else if (mode == "none") {
        fcc["mode"] = "NONE";
      } else if (mode == "required") {
        if (names.empty())
          return make_error(translate_errc::invalid_value, "tool_choice", "tool_choice 'required' needs tools");
        fcc["mode"] = "ANY";
      } else {
        return make_error(translate_errc::invalid_value, "tool_choice", "tool_choice must be none, auto or required");
      }
    } else if (const json::object* o = tc->if_object()) {
      const std::string_view type = string_or_empty(*o, "type");
      if (type == "function") {
        const json::object* fn = object_member(*o, "function");
        const std::string_view name = fn ? string_or_empty(*fn, "name") : std::string_view{};
        if (name.empty())
          return make_error(translate_errc::missing_parameter, "tool_choice.function.name", "tool_choice needs a function name");
        if (!declared(names, name))
          return make_error(translate_errc::invalid_value, "tool_choice.function.name",
                            "tool_choice names '" + std::string(name) + "', which is not in tools");
        fcc["mode"] = "ANY";
        fcc["allowedFunctionNames"] = json::array{json::string(name)};
      } else if (type == "allowed_tools") {
        const json::object* at = object_member(*o, "allowed_tools");
        if (!at)
          return make_error(translate_errc::missing_parameter, "tool_choice.allowed_tools", "allowed_tools is required");
        const std::string_view mode = string_or_empty(*at, "mode");
        if (mode != "auto" && mode != "required")
          return make_error(translate_errc::invalid_value, "tool_choice.allowed_tools.mode", "mode must be auto or required");
        const json::array* list = array_member(*at, "tools");
        if (!list || list->empty())
          return make_error(translate_errc::missing_parameter, "tool_choice.allowed_tools.tools",
                            "allowed_tools.tools must be a non-empty array");
        json::array allowed;
        for (std::size_t j = 0; j < list->size(); ++j) {
          const std::string p = at_index("tool_choice.allowed_tools.tools", j);
          const json::object* t = (*list)[j].if_object();
          const json::object* fn = t ? object_member(*t, "function") : nullptr;
          const std::string_view name = fn ? string_or_empty(*fn, "name") : std::string_view{};
          if (!t || string_or_empty(*t, "type") != "function" || name.empty())
            return make_error(translate_errc::unsupported, p, "allowed_tools entries must be function tools with a name");
          if (!declared(names, name))
            return make_error(translate_errc::invalid_value, at_member(at_member(p, "function"), "name"),
                              "'" + std::string(name) + "' is not in tools");
          allowed.push_back(json::string(name));
        }
        if (mode == "required") {
          fcc["mode"] = "ANY";
          fcc["allowedFunctionNames"] = std::move(allowed);
        } else {
          // Gemini takes allowedFunctionNames only with ANY: in AUTO mode, declare only those tools.
          json::array kept;
          for (json::value& d : declarations_) {
            const std::string_view n = string_or_empty(d.as_object(), "name");
            if (std::find_if(allowed.begin(), allowed.end(), [&](const json::value& a) { return a.as_string() == n; }) !=
                allowed.end())
              kept.push_back(std::move(d));
          }
          declarations_ = std::move(kept);
          fcc["mode"] = "AUTO";
        }
      } else {
        return make_error(translate_errc::unsupported, "tool_choice.type",
                          "tool_choice type must be function or allowed_tools");
      }
    } else {
      return make_error(translate_errc::invalid_type, "tool_choice", "tool_choice must be a string or an object");
    }
    tool_config_["functionCallingConfig"] = std::move(fcc);
    return std::nullopt;
  }

  const json::object& req_;
  std::vector<turn> turns_;
  json::array system_parts_;
  json::array declarations_;
  json::object tool_config_;
  std::map<std::string, std::string, std::less<>> call_names_;  ///< tool call id → function name
};

// ---------------------------------------------------------------------------------------------
// Responses

const json::object* first_candidate(const json::object& response) {
  const json::array* candidates = array_member(response, "candidates");
  if (!candidates || candidates->empty()) return nullptr;
  return (*candidates)[0].if_object();
}

const json::array* candidate_parts(const json::object& candidate) {
  const json::object* content = object_member(candidate, "content");
  return content ? array_member(*content, "parts") : nullptr;
}

json::object tool_call_object(std::string id, std::string_view name, const json::value& args,
                              std::string_view thought_signature) {
  json::object call{{"id", std::move(id)},
                    {"type", "function"},
                    {"function", json::object{{"name", name}, {"arguments", json::serialize(args)}}}};
  if (!thought_signature.empty())
    call["extra_content"] = json::object{{"google", json::object{{"thought_signature", thought_signature}}}};
  return call;
}

const json::value& args_or_empty(const json::object& function_call) {
  static const json::value empty = json::object();
  const json::value* args = function_call.if_contains("args");
  return args && args->is_object() ? *args : empty;
}

upstream_error invalid_upstream(std::string message) {
  upstream_error e;
  e.status = 502;
  e.type = "server_error";
  e.code = std::string(to_string(translate_errc::invalid_upstream));
  e.message = std::move(message);
  return e;
}

// ---------------------------------------------------------------------------------------------
// Streamed function-call arguments

struct path_segment {
  bool is_index = false;
  std::string key;
  std::size_t index = 0;
};

/// The RFC 9535 paths Vertex uses for partial arguments: `$`, then `.name`, `[n]`, `['name']` or
/// `["name"]` segments.
std::optional<std::vector<path_segment>> parse_json_path(std::string_view p) {
  if (p.empty() || p.front() != '$') return std::nullopt;
  std::vector<path_segment> out;
  std::size_t i = 1;
  while (i < p.size()) {
    if (p[i] == '.') {
      const std::size_t start = ++i;
      while (i < p.size() && p[i] != '.' && p[i] != '[') ++i;
      if (i == start) return std::nullopt;
      out.push_back(path_segment{false, std::string(p.substr(start, i - start)), 0});
    } else if (p[i] == '[') {
      ++i;
      if (i < p.size() && (p[i] == '\'' || p[i] == '"')) {
        const char quote = p[i++];
        std::string key;
        while (i < p.size() && p[i] != quote) {
          if (p[i] == '\\' && i + 1 < p.size()) ++i;
          key += p[i++];
        }
        if (i + 1 >= p.size() || p[i + 1] != ']') return std::nullopt;
        i += 2;
        out.push_back(path_segment{false, std::move(key), 0});
      } else {
        std::size_t n = 0;
        const std::size_t start = i;
        while (i < p.size() && p[i] >= '0' && p[i] <= '9') {
          n = n * 10 + static_cast<std::size_t>(p[i] - '0');
          if (n > 100000) return std::nullopt;  // no argument array is that long; refuse to allocate it
          ++i;
        }
        if (i == start || i >= p.size() || p[i] != ']') return std::nullopt;
        ++i;
        out.push_back(path_segment{true, {}, n});
      }
    } else {
      return std::nullopt;
    }
  }
  return out;
}

/// Applies one `PartialArg` to the arguments being assembled; false when its path is unusable or
/// would create more than `room` values in all.
bool apply_partial_arg(json::value& root, const json::object& arg, std::size_t& room) {
  const auto path = parse_json_path(string_or_empty(arg, "jsonPath"));
  if (!path || path->empty()) return false;
  json::value* cur = &root;
  for (const path_segment& seg : *path) {
    if (seg.is_index) {
      if (cur->is_null()) *cur = json::array();
      json::array* a = cur->if_array();
      if (!a) return false;
      if (seg.index >= a->size()) {
        if (seg.index + 1 - a->size() > room) return false;
        room -= seg.index + 1 - a->size();
        a->resize(seg.index + 1);
      }
      cur = &(*a)[seg.index];
    } else {
      if (cur->is_null()) *cur = json::object();
      json::object* o = cur->if_object();
      if (!o) return false;
      if (!o->contains(seg.key)) {
        if (room == 0) return false;
        --room;
      }
      cur = &(*o)[seg.key];
    }
  }
  if (const json::value* s = arg.if_contains("stringValue"); s && s->is_string()) {
    if (cur->is_string())
      cur->get_string().append(s->get_string());
    else
      *cur = s->get_string();
  } else if (const json::value* n = arg.if_contains("numberValue"); n && as_number(*n)) {
    *cur = number_value(*as_number(*n));
  } else if (const json::value* b = arg.if_contains("boolValue"); b && b->is_bool()) {
    *cur = b->get_bool();
  } else if (arg.contains("nullValue")) {
    *cur = nullptr;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Errors

struct status_row {
  std::string_view name;
  unsigned status;
  std::string_view type;
  bool retryable;
};

constexpr status_row status_table[] = {
    {"INVALID_ARGUMENT", 400, "invalid_request_error", false},
    {"FAILED_PRECONDITION", 400, "invalid_request_error", false},
    {"OUT_OF_RANGE", 400, "invalid_request_error", false},
    {"UNAUTHENTICATED", 401, "authentication_error", false},
    {"PERMISSION_DENIED", 403, "permission_error", false},
    {"NOT_FOUND", 404, "not_found_error", false},
    {"ALREADY_EXISTS", 409, "invalid_request_error", false},
    {"ABORTED", 409, "server_error", true},
    {"RESOURCE_EXHAUSTED", 429, "rate_limit_error", true},
    {"CANCELLED", 500, "server_error", true},
    {"UNKNOWN", 500, "server_error", true},
    {"INTERNAL", 500, "server_error", true},
    {"DATA_LOSS", 500, "server_error", false},
    {"UNIMPLEMENTED", 501, "server_error", false},
    {"UNAVAILABLE", 503, "server_error", true},
    {"DEADLINE_EXCEEDED", 504, "server_error", true},
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Refusals


// ---------------------------------------------------------------------------------------------
// URLs

std::string vertex_url::url() const { return "https://" + host + path; }

std::string vertex_host(std::string_view location) {
  if (location.empty() || location == "global") return "aiplatform.googleapis.com";
  if (location == "us" || location == "eu") return "aiplatform." + std::string(location) + ".rep.googleapis.com";
  return std::string(location) + "-aiplatform.googleapis.com";
}

translate_result<std::string> model_resource_name(std::string_view model) {
  if (model.empty()) return make_error(translate_errc::invalid_value, "model", "the model name is empty");
  std::string name;
  if (starts_with(model, "publishers/") || starts_with(model, "projects/") || starts_with(model, "models/")) {
    name = model;
  } else if (const std::size_t slash = model.find('/'); slash != std::string_view::npos) {
    name = "publishers/" + std::string(model.substr(0, slash)) + "/models/" + std::string(model.substr(slash + 1));
  } else {
    name = "publishers/google/models/" + std::string(model);
  }
  std::string_view rest = name;
  while (true) {
    const std::size_t slash = rest.find('/');
    if (!url_safe_segment(rest.substr(0, slash)))
      return make_error(translate_errc::invalid_value, "model", "the model name '" + std::string(model) + "' is not valid");
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  return name;
}

translate_result<vertex_url> make_vertex_url(const vertex_target& target, vertex_method method) {
  if (target.api_version.empty() ||
      !std::all_of(target.api_version.begin(), target.api_version.end(),
                   [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }))
    return make_error(translate_errc::invalid_value, "api_version", "the API version must be like v1 or v1beta1");
  auto name = model_resource_name(target.model);
  if (!name) return name.error();

  std::string location = target.location;
  std::string resource;
  if (starts_with(*name, "projects/")) {
    // A full resource name carries its own project and location.
    constexpr std::string_view marker = "/locations/";
    const std::size_t at = name->find(marker);
    if (at == std::string::npos)
      return make_error(translate_errc::invalid_value, "model", "a full model name needs projects/*/locations/*");
    const std::size_t begin = at + marker.size();
    location = name->substr(begin, name->find('/', begin) - begin);  // the resource's region picks the host
    resource = *name;
  } else {
    if (!url_safe_segment(target.project))
      return make_error(translate_errc::invalid_value, "project", "the project id is empty or not valid");
    resource = "projects/" + target.project + "/locations/" + target.location + "/" + *name;
  }
  if (!host_safe_location(location))
    return make_error(translate_errc::invalid_value, "location", "the location is empty or not valid");

  vertex_url url;
  url.host = vertex_host(location);
  url.path = "/" + target.api_version + "/" + resource;
  url.path += method_suffix(method);
  return url;
}

// ---------------------------------------------------------------------------------------------
// Chat request

std::optional<json::object> to_vertex_schema(const json::value& json_schema) {
  json::object out;
  if (!convert_schema(json_schema, out, 0)) return std::nullopt;
  return out;
}

translate_result<json::object> to_generate_content_request(const json::object& chat_request) {
  return request_builder(chat_request).build();
}

// ---------------------------------------------------------------------------------------------
// Usage, finish reasons, chat response

std::optional<gemini_usage> parse_usage(const json::value& usage_metadata) {
  const json::object* o = usage_metadata.if_object();
  if (!o) return std::nullopt;
  gemini_usage u;
  bool any = false;
  const auto read = [&](std::string_view key, std::uint64_t& into) {
    if (const json::value* v = o->if_contains(key)) {
      if (const auto n = as_count(*v)) {
        into = *n;
        any = true;
      }
    }
  };
  read("promptTokenCount", u.prompt_tokens);
  read("candidatesTokenCount", u.candidates_tokens);
  read("thoughtsTokenCount", u.thoughts_tokens);
  read("toolUsePromptTokenCount", u.tool_use_prompt_tokens);
  read("cachedContentTokenCount", u.cached_tokens);
  if (const json::value* v = o->if_contains("totalTokenCount")) {
    if (const auto n = as_count(*v)) {
      u.total = *n;
      any = true;
    }
  }
  if (!any) return std::nullopt;
  return u;
}

json::object to_openai_usage(const gemini_usage& usage) {
  json::object u{{"prompt_tokens", usage.openai_prompt_tokens()},
                 {"completion_tokens", usage.openai_completion_tokens()},
                 {"total_tokens", usage.total_tokens()}};
  if (usage.cached_tokens > 0) u["prompt_tokens_details"] = json::object{{"cached_tokens", usage.cached_tokens}};
  if (usage.thoughts_tokens > 0)
    u["completion_tokens_details"] = json::object{{"reasoning_tokens", usage.thoughts_tokens}};
  return u;
}

std::string_view map_finish_reason(std::string_view finish_reason) noexcept {
  if (finish_reason == "STOP") return "stop";
  if (finish_reason == "MAX_TOKENS") return "length";
  if (finish_reason == "SAFETY" || finish_reason == "RECITATION" || finish_reason == "BLOCKLIST" ||
      finish_reason == "PROHIBITED_CONTENT" || finish_reason == "SPII" || finish_reason == "IMAGE_SAFETY")
    return "content_filter";
  return "stop";
}

std::string tool_call_id(std::string_view completion_id, std::size_t index) {
  std::string id = "call_";
  if (!completion_id.empty()) {
    id += completion_id;
    id += '_';
  }
  id += std::to_string(index);
  return id;
}

translate_result<chat_completion> to_chat_completion(const json::value& response, const completion_meta& meta) {
  const json::object* obj = response.if_object();
  if (!obj) return make_error(translate_errc::invalid_upstream, {}, "the Vertex AI response is not a JSON object");
  chat_completion out;
  out.response_id = string_or_empty(*obj, "responseId");
  out.model_version = string_or_empty(*obj, "modelVersion");
  if (const json::value* um = obj->if_contains("usageMetadata")) out.usage = parse_usage(*um);

  json::object message{{"role", "assistant"}};
  const json::object* cand = first_candidate(*obj);
  if (!cand) {
    const json::object* feedback = object_member(*obj, "promptFeedback");
    if (!feedback || string_or_empty(*feedback, "blockReason").empty())
      return make_error(translate_errc::invalid_upstream, {}, "the Vertex AI response has no candidates");
    message["content"] = "";
    out.finish_reason = "content_filter";
  } else {
    std::string text;
    std::string reasoning;
    json::array tool_calls;
    if (const json::array* parts = candidate_parts(*cand)) {
      for (const json::value& pv : *parts) {
        const json::object* part = pv.if_object();
        if (!part) continue;
        if (const json::object* fc = object_member(*part, "functionCall")) {
          const std::string_view name = string_or_empty(*fc, "name");
          if (name.empty()) continue;
          tool_calls.push_back(tool_call_object(tool_call_id(meta.id, tool_calls.size()), name, args_or_empty(*fc),
                                                string_or_empty(*part, "thoughtSignature")));
        } else if (const json::value* t = part->if_contains("text"); t && t->is_string()) {
          (is_true(*part, "thought") ? reasoning : text) += t->get_string();
        }
      }
    }
    out.finish_reason = map_finish_reason(string_or_empty(*cand, "finishReason"));
    if (!tool_calls.empty() && out.finish_reason == "stop") out.finish_reason = "tool_calls";
    if (text.empty() && !tool_calls.empty())
      message["content"] = nullptr;
    else
      message["content"] = std::move(text);
    if (!reasoning.empty()) message["reasoning_content"] = std::move(reasoning);
    if (!tool_calls.empty()) message["tool_calls"] = std::move(tool_calls);
  }

  json::object choice{{"index", 0}, {"message", std::move(message)}, {"logprobs", nullptr},
                      {"finish_reason", out.finish_reason}};
  out.body = json::object{{"id", meta.id},
                          {"object", "chat.completion"},
                          {"created", meta.created},
                          {"model", meta.model},
                          {"choices", json::array{std::move(choice)}}};
  if (out.usage) out.body["usage"] = to_openai_usage(*out.usage);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors

std::optional<std::uint64_t> upstream_error::retry_after_seconds() const {
  if (!retry_delay) return std::nullopt;
  const auto ms = static_cast<std::uint64_t>(retry_delay->count());
  return (ms + 999) / 1000;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view d) {
  if (d.size() < 2 || d.back() != 's') return std::nullopt;
  d.remove_suffix(1);
  const std::size_t dot = d.find('.');
  const std::string_view whole = d.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : d.substr(dot + 1);
  const auto digits = [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (whole.empty() || whole.size() > 12 || !digits(whole)) return std::nullopt;
  if (dot != std::string_view::npos && (frac.empty() || frac.size() > 9 || !digits(frac))) return std::nullopt;
  std::uint64_t seconds = 0;
  for (char c : whole) seconds = seconds * 10 + static_cast<std::uint64_t>(c - '0');
  std::uint64_t nanos = 0;
  for (std::size_t i = 0; i < 9; ++i) nanos = nanos * 10 + (i < frac.size() ? static_cast<std::uint64_t>(frac[i] - '0') : 0);
  const std::uint64_t ms = seconds * 1000 + (nanos + 999999) / 1000000;
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

upstream_error map_google_status(std::string_view google_status, std::string_view message, unsigned http_status) {
  upstream_error e;
  const std::string status = ascii_upper(google_status);
  e.google_status = status;
  e.message = message;
  for (const status_row& row : status_table) {
    if (row.name != status) continue;
    e.status = row.status;
    e.type = row.type;
    e.code = ascii_lower(status);
    e.retryable = row.retryable;
    if (e.message.empty()) e.message = "Vertex AI error " + status;
    return e;
  }
  e.code = "upstream_error";
  if (http_status == 429) {
    e.status = 429;
    e.type = "rate_limit_error";
    e.retryable = true;
  } else if (http_status >= 500 && http_status <= 599) {
    e.status = http_status;
    e.type = "server_error";
    e.retryable = true;
  } else if (http_status >= 400 && http_status <= 499) {
    e.status = http_status;
    e.type = "invalid_request_error";
  } else {
    e.status = 502;
    e.type = "server_error";
  }
  if (e.message.empty())
    e.message = http_status ? "Vertex AI returned HTTP " + std::to_string(http_status) : "Vertex AI returned an error";
  return e;
}

upstream_error map_google_error(unsigned http_status, const json::value& body) {
  const json::value* v = &body;
  if (const json::array* a = body.if_array(); a && !a->empty()) v = &a->front();
  const json::object* obj = v->if_object();
  const json::object* err = obj ? object_member(*obj, "error") : nullptr;
  if (!err) return map_google_status({}, {}, http_status);
  if (http_status == 0) {
    if (const json::value* c = err->if_contains("code")) {
      const auto n = as_integer(*c);
      if (n && *n >= 100 && *n <= 599) http_status = static_cast<unsigned>(*n);
    }
  }
  upstream_error e = map_google_status(string_or_empty(*err, "status"), string_or_empty(*err, "message"), http_status);
  if (const json::array* details = array_member(*err, "details")) {
    for (const json::value& dv : *details) {
      const json::object* d = dv.if_object();
      if (!d) continue;
      const std::string_view type = string_or_empty(*d, "@type");
      constexpr std::string_view retry_info = "google.rpc.RetryInfo";
      if (type.size() < retry_info.size() || type.substr(type.size() - retry_info.size()) != retry_info) continue;
      if (const auto delay = parse_duration(string_or_empty(*d, "retryDelay"))) e.retry_delay = delay;
    }
  }
  return e;
}

upstream_error map_google_error(unsigned http_status, std::string_view body) {
  boost::system::error_code ec;
  const json::value doc = json::parse(body, ec);
  if (ec) return map_google_status({}, {}, http_status);
  return map_google_error(http_status, doc);
}

json::object to_openai_error(const upstream_error& e) {
  return json::object{{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", e.code}};
}

json::object to_openai_error_body(const upstream_error& e) { return json::object{{"error", to_openai_error(e)}}; }

// ---------------------------------------------------------------------------------------------
// Streaming

gemini_stream_translator::gemini_stream_translator(completion_meta meta) : meta_(std::move(meta)) {}

json::object gemini_stream_translator::make_chunk(json::object delta, std::string_view finish_reason) {
  if (!role_sent_) {
    json::object with_role{{"role", "assistant"}};
    for (auto& [k, v] : delta) with_role[k] = std::move(v);
    delta = std::move(with_role);
    role_sent_ = true;
  }
  json::object choice{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}};
  if (finish_reason.empty())
    choice["finish_reason"] = nullptr;
  else
    choice["finish_reason"] = finish_reason;
  return json::object{{"id", meta_.id},
                      {"object", "chat.completion.chunk"},
                      {"created", meta_.created},
                      {"model", meta_.model},
                      {"choices", json::array{std::move(choice)}}};
}

void gemini_stream_translator::emit_tool_call(stream_step& step, std::string_view name, const json::value& args,
                                              std::string_view thought_signature) {
  const std::size_t index = tool_calls_++;
  json::object call = tool_call_object(tool_call_id(meta_.id, index), name, args, thought_signature);
  json::object entry{{"index", static_cast<std::int64_t>(index)}};
  for (auto& [k, v] : call) entry[k] = std::move(v);
  step.chunks.push_back(make_chunk(json::object{{"tool_calls", json::array{std::move(entry)}}}));
}

bool gemini_stream_translator::flush_pending(stream_step& step) {
  if (!pending_) return false;
  pending_call call = std::move(*pending_);
  pending_.reset();
  if (call.name.empty()) return false;  // continuation parts without the part that named the call
  emit_tool_call(step, call.name, call.args, call.thought_signature);
  return true;
}

std::string gemini_stream_translator::pending_text() const {
  if (!pending_ || pending_->name.empty()) return {};
  return pending_->name + json::serialize(pending_->args);
}

void gemini_stream_translator::finish(stream_step& step, std::string_view reason) {
  flush_pending(step);
  finish_reason_ = reason;
  if (tool_calls_ > 0 && finish_reason_ == "stop") finish_reason_ = "tool_calls";
  step.chunks.push_back(make_chunk(json::object(), finish_reason_));
  finished_ = true;
}

stream_step gemini_stream_translator::fail(stream_step step, upstream_error e) {
  failed_ = true;
  // pending_ is kept (every later chunk is ignored): pending_text() still tells what was generated.
  step.error = std::move(e);
  return step;
}

stream_step gemini_stream_translator::on_chunk(std::string_view data) {
  boost::system::error_code ec;
  const json::value v = json::parse(data, ec);
  if (ec) {
    if (failed_) return {};
    return fail({}, invalid_upstream("a Vertex AI stream chunk is not valid JSON"));
  }
  return on_chunk(v);
}

stream_step gemini_stream_translator::on_chunk(const json::value& chunk) {
  stream_step step;
  if (failed_) return step;
  const json::object* obj = chunk.if_object();
  if (!obj) return fail(std::move(step), invalid_upstream("a Vertex AI stream chunk is not a JSON object"));
  if (const json::value* err = obj->if_contains("error"); err && !err->is_null())
    return fail(std::move(step), map_google_error(0, chunk));
  if (const json::value* um = obj->if_contains("usageMetadata")) {
    if (auto u = parse_usage(*um)) {
      usage_ = u;
      step.usage = u;
    }
  }
  if (finished_) return step;

  const json::object* cand = first_candidate(*obj);
  if (!cand) {
    const json::object* feedback = object_member(*obj, "promptFeedback");
    if (feedback && !string_or_empty(*feedback, "blockReason").empty()) finish(step, "content_filter");
    return step;
  }
  if (const json::array* parts = candidate_parts(*cand)) {
    for (const json::value& pv : *parts) {
      const json::object* part = pv.if_object();
      if (!part) continue;
      const std::string_view signature = string_or_empty(*part, "thoughtSignature");
      if (const json::object* fc = object_member(*part, "functionCall")) {
        const std::string_view name = string_or_empty(*fc, "name");
        const bool will_continue = is_true(*fc, "willContinue");
        if (pending_ && !name.empty()) flush_pending(step);  // a new call begins: the old one is over
        if (!pending_ && will_continue) pending_ = pending_call{std::string(name), {}, json::object()};
        if (pending_) {
          if (pending_->thought_signature.empty()) pending_->thought_signature = signature;
          if (const json::object* args = object_member(*fc, "args"))
            for (const auto& [k, v] : *args) pending_->args.as_object()[k] = v;
          if (const json::array* partial = array_member(*fc, "partialArgs")) {
            for (const json::value& a : *partial) {
              const json::object* ao = a.if_object();
              if (!ao || !apply_partial_arg(pending_->args, *ao, pending_->room))
                return fail(std::move(step), invalid_upstream("a Vertex AI stream chunk has an unusable partialArgs entry"));
            }
          }
          if (!will_continue) flush_pending(step);
          continue;
        }
        if (!name.empty()) emit_tool_call(step, name, args_or_empty(*fc), signature);
        continue;  // `functionCall:{}` with nothing pending: an empty terminator
      }
      const json::value* t = part->if_contains("text");
      if (!t || !t->is_string() || t->get_string().empty()) continue;
      const std::string_view key = is_true(*part, "thought") ? "reasoning_content" : "content";
      step.chunks.push_back(make_chunk(json::object{{key, t->get_string()}}));
    }
  }
  if (const std::string_view reason = string_or_empty(*cand, "finishReason"); !reason.empty())
    finish(step, map_finish_reason(reason));
  return step;
}

stream_step gemini_stream_translator::on_end() {
  if (failed_ || finished_) return {};
  return fail({}, invalid_upstream("the Vertex AI stream ended before a finishReason"));
}

json::object make_usage_chunk(const completion_meta& meta, const gemini_usage& usage) {
  return json::object{{"id", meta.id},
                      {"object", "chat.completion.chunk"},
                      {"created", meta.created},
                      {"model", meta.model},
                      {"choices", json::array()},
                      {"usage", to_openai_usage(usage)}};
}

// ---------------------------------------------------------------------------------------------
// Embeddings

translate_result<predict_calls> to_predict_requests(const json::object& embeddings_request,
                                                    std::size_t max_instances_per_call) {
  if (max_instances_per_call == 0) max_instances_per_call = 1;
  std::vector<std::string_view> inputs;
  const json::value* input = given(embeddings_request, "input");
  if (!input) return make_error(translate_errc::missing_parameter, "input", "input is required");
  if (input->is_string()) {
    if (input->get_string().empty()) return make_error(translate_errc::invalid_value, "input", "input must not be empty");
    inputs.push_back(input->get_string());
  } else if (const json::array* a = input->if_array()) {
    if (a->empty()) return make_error(translate_errc::invalid_value, "input", "input must not be empty");
    for (std::size_t j = 0; j < a->size(); ++j) {
      const json::value& x = (*a)[j];
      if (x.is_string()) {
        if (x.get_string().empty())
          return make_error(translate_errc::invalid_value, at_index("input", j), "inputs must not be empty");
        inputs.push_back(x.get_string());
      } else if (x.is_number() || x.is_array()) {
        return make_error(translate_errc::unsupported, "input", "token arrays are not supported by this provider; send text");
      } else {
        return make_error(translate_errc::invalid_type, at_index("input", j), "inputs must be strings");
      }
    }
  } else {
    return make_error(translate_errc::invalid_type, "input", "input must be a string or an array of strings");
  }

  predict_calls calls;
  calls.input_count = inputs.size();
  if (const json::value* f = given(embeddings_request, "encoding_format")) {
    if (!f->is_string()) return make_error(translate_errc::invalid_type, "encoding_format", "encoding_format must be a string");
    if (f->get_string() == "base64")
      calls.base64 = true;
    else if (f->get_string() != "float")
      return make_error(translate_errc::invalid_value, "encoding_format", "encoding_format must be float or base64");
  }
  std::optional<std::int64_t> dimensions;
  if (const json::value* d = given(embeddings_request, "dimensions")) {
    dimensions = as_integer(*d);
    if (!dimensions) return make_error(translate_errc::invalid_type, "dimensions", "dimensions must be an integer");
    if (*dimensions < 1) return make_error(translate_errc::invalid_value, "dimensions", "dimensions must be at least 1");
  }

  for (std::size_t start = 0; start < inputs.size(); start += max_instances_per_call) {
    json::array instances;
    const std::size_t end = std::min(inputs.size(), start + max_instances_per_call);
    for (std::size_t i = start; i < end; ++i) instances.push_back(json::object{{"content", inputs[i]}});
    json::object body{{"instances", std::move(instances)}};
    if (dimensions) body["parameters"] = json::object{{"outputDimensionality", *dimensions}};
    calls.bodies.push_back(std::move(body));
  }
  return calls;
}

translate_result<embeddings_response> to_openai_embeddings(const predict_calls& calls,
                                                           std::span<const json::value> responses,
                                                           std::string_view model) {
  if (responses.size() != calls.bodies.size())
    return make_error(translate_errc::invalid_upstream, {},
                      "expected " + std::to_string(calls.bodies.size()) + " predict responses, got " +
                          std::to_string(responses.size()));
  embeddings_response out;
  out.tokens_reported = true;
  json::array data;
  for (const json::value& r : responses) {
    const json::object* obj = r.if_object();
    const json::array* predictions = obj ? array_member(*obj, "predictions") : nullptr;
    if (!predictions) return make_error(translate_errc::invalid_upstream, {}, "a predict response has no predictions");
    for (const json::value& pv : *predictions) {
      const json::object* p = pv.if_object();
      const json::object* emb = p ? object_member(*p, "embeddings") : nullptr;
      const json::array* values = emb ? array_member(*emb, "values") : nullptr;
      if (!values) return make_error(translate_errc::invalid_upstream, {}, "a prediction has no embeddings.values");
      json::value embedding;
      if (calls.base64) {
        std::vector<unsigned char> bytes;
        bytes.reserve(values->size() * 4);
        for (const json::value& x : *values) {
          const auto d = as_number(x);
          if (!d) return make_error(translate_errc::invalid_upstream, {}, "an embedding value is not a number");
          const float f = static_cast<float>(*d);
          std::uint32_t bits = 0;
          std::memcpy(&bits, &f, sizeof bits);
          for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<unsigned char>((bits >> (8 * b)) & 0xff));
        }
        embedding = json::string(base64_encode(bytes));
      } else {
        json::array floats;
        floats.reserve(values->size());
        for (const json::value& x : *values) {
          const auto d = as_number(x);
          if (!d) return make_error(translate_errc::invalid_upstream, {}, "an embedding value is not a number");
          floats.push_back(*d);
        }
        embedding = std::move(floats);
      }
      std::optional<std::uint64_t> tokens;
      if (const json::object* stats = object_member(*emb, "statistics"))
        if (const json::value* tc = stats->if_contains("token_count")) tokens = as_count(*tc);
      if (tokens)
        out.prompt_tokens += *tokens;
      else
        out.tokens_reported = false;
      data.push_back(json::object{{"object", "embedding"}, {"index", static_cast<std::int64_t>(data.size())}, {"embedding", std::move(embedding)}});
    }
  }
  if (data.size() != calls.input_count)
    return make_error(translate_errc::invalid_upstream, {},
                      "expected " + std::to_string(calls.input_count) + " embeddings, got " + std::to_string(data.size()));
  out.body = json::object{{"object", "list"},
                          {"data", std::move(data)},
                          {"model", model},
                          {"usage", json::object{{"prompt_tokens", out.prompt_tokens}, {"total_tokens", out.prompt_tokens}}}};
  return out;
}

}  // namespace tollgate::providers::vertex
