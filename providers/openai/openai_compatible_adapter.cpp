// SPDX-License-Identifier: Apache-2.0
#include "providers/openai/openai_compatible_adapter.hpp"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/monotonic_resource.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "gateway/core/sse.hpp"
#include "gateway/core/swar.hpp"
#include "providers/common/relayed_text.hpp"
#include "providers/unified.hpp"

namespace tollgate::providers {
namespace json = boost::json;
namespace {

/// A token count a server wrote as a number with a fraction or exponent (`12.0`, `1.2e3`: JSON
/// has one number type, and some servers serialise counts through floats): the nearest whole
/// count, not 0. Negative, NaN, infinite or absurd (over 2^53) values count 0.
std::uint64_t count_of_double(double d) {
  if (!std::isfinite(d) || d < 0 || d > 9007199254740992.0) return 0;
  return std::uint64_t(std::llround(d));
}

std::string_view default_type_for(unsigned status) {
  if (status == 401) return "authentication_error";
  if (status == 403) return "permission_error";
  if (status == 404) return "not_found_error";
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

json::value code_value(const json::value* c) {
  if (!c || c->is_null()) return nullptr;
  if (c->is_string()) return *c;
  if (c->is_int64()) return json::string(std::to_string(c->get_int64()));
  if (c->is_uint64()) return json::string(std::to_string(c->get_uint64()));
  return json::string(json::serialize(*c));
}

json::object error_object(std::string_view message, std::string_view type, const json::value* param,
                          const json::value* code) {
  json::object e;
  e["message"] = message;
  e["type"] = type;
  e["param"] = (param && param->is_string()) ? *param : json::value(nullptr);
  e["code"] = code_value(code);
  return e;
}

/// Error object (the inner one) from any known shape; nullopt if `v` is not an error.
std::optional<json::object> extract_error(unsigned status, const json::value& v) {
  if (!v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  if (auto e = o.if_contains("error")) {
    if (e->is_object()) {
      const auto& eo = e->get_object();
      auto msg = eo.if_contains("message");
      auto type = eo.if_contains("type");
      return error_object(msg && msg->is_string() ? std::string_view(msg->get_string()) : "upstream error",
                          type && type->is_string() ? std::string_view(type->get_string()) : default_type_for(status),
                          eo.if_contains("param"), eo.if_contains("code"));
    }
    if (e->is_string()) {  // TGI: {"error":"…","error_type":"validation"}
      auto et = o.if_contains("error_type");
      return error_object(e->get_string(), et && et->is_string() ? std::string_view(et->get_string()) : default_type_for(status),
                          nullptr, nullptr);
    }
  }
  if (auto obj = o.if_contains("object"); obj && obj->is_string() && obj->get_string() == "error") {
    // Older vLLM: top-level {"object":"error","message","type","param","code":400}
    auto msg = o.if_contains("message");
    auto type = o.if_contains("type");
    return error_object(msg && msg->is_string() ? std::string_view(msg->get_string()) : "upstream error",
                        type && type->is_string() ? std::string_view(type->get_string()) : default_type_for(status),
                        o.if_contains("param"), o.if_contains("code"));
  }
  return std::nullopt;
}

std::string wrap(json::object err) {
  json::object root;
  root["error"] = std::move(err);
  return json::serialize(root);
}

class openai_stream final : public stream_translator {
 public:
  explicit openai_stream(request_context& ctx) : ctx_(ctx) {}

  void feed(std::string_view bytes, std::string& out) override {
    if (done_ || failed_) return;  // anything after [DONE] or an error is ignored, as the SDK does
    events_.clear();
    // The events completed before an oversized one are relayed and billed; then the stream fails.
    const bool ok = parser_.feed(bytes, events_);
    for (auto& ev : events_) {
      on_event(ev, out);
      if (done_ || failed_) break;
    }
    if (!ok && !done_ && !failed_) emit_error(out, "upstream stream event too large", "upstream_error");
  }

  void finish(bool complete, std::string_view why, std::string& out) override {
    if (done_ || failed_) return;
    if (complete) {
      // Some servers end the body without [DONE]; the caller still gets a well-formed end.
      out += "data: [DONE]\n\n";
      done_ = true;
      return;
    }
    emit_error(out, "The upstream stream ended unexpectedly: " + std::string(why) + ".",
               why == "timeout" ? "upstream_timeout" : "upstream_error");
  }

  bool failed() const override { return failed_; }
  bool done() const override { return done_; }

 private:
  void emit_error(std::string& out, std::string message, std::string_view code) {
    failed_ = true;
    ctx_.details = std::string(code);
    ctx_.error_code = std::string(code);
    out += sse::format_event("error", openai_error_body(message, "server_error", "", code));
  }

  void on_event(sse::event& ev, std::string& out) {
    if (ev.data == "[DONE]") {
      done_ = true;
      out += "data: [DONE]\n\n";
      return;
    }
    boost::system::error_code ec;
    // Chunks are small and short-lived: parse into a stack buffer instead of the heap.
    unsigned char scratch[8192];
    json::monotonic_resource mr(scratch, sizeof scratch);
    json::value v = json::parse(ev.data, ec, &mr);
    if (ev.name == "error" || (!ec && v.is_object() && v.get_object().contains("error"))) {
      std::optional<json::object> err;
      if (!ec) err = extract_error(500, v);
      if (!err && !ec && v.is_object()) {
        // llama.cpp: `error: {"code":500,"message":"…","type":"server_error"}`, the error object itself.
        const auto& o = v.get_object();
        auto msg = o.if_contains("message");
        auto type = o.if_contains("type");
        if (msg && msg->is_string())
          err = error_object(msg->get_string(), type && type->is_string() ? std::string_view(type->get_string()) : "server_error",
                             o.if_contains("param"), o.if_contains("code"));
      }
      failed_ = true;
      ctx_.details = "upstream_stream_error";
      ctx_.refused_in_band = true;
      ctx_.error_code = "upstream_error";
      out += sse::format_event("error", wrap(err ? std::move(*err) : error_object(ev.data, "server_error", nullptr, nullptr)));
      return;
    }
    if (ec || !v.is_object()) {
      emit_error(out, "The upstream sent a stream event that is not JSON.", "upstream_error");
      return;
    }
    auto& chunk = v.get_object();
    count_relayed_text(ctx_, chunk);
    auto u = chunk.find("usage");
    const bool has_usage_key = u != chunk.end();
    if (has_usage_key && !u->value().is_null()) read_usage(u->value(), ctx_.usage);
    if (ctx_.caller_wants_usage || !has_usage_key) {
      out += sse::format_data(ev.data);  // the upstream's bytes, untouched
      return;
    }
    // The caller did not ask for usage: drop the usage-only chunk, strip `usage` elsewhere.
    if (u->value().is_null()) {
      // Most chunks carry `"usage":null`; cut it from the upstream's bytes rather than
      // re-serialising. Quotes inside JSON strings are escaped, so the match is the key itself.
      if (auto at = ev.data.find(",\"usage\":null"); at != std::string::npos) {
        ev.data.erase(at, 13);
        out += sse::format_data(ev.data);
        return;
      }
    }
    auto ch = chunk.find("choices");
    const bool no_choices = ch == chunk.end() || ch->value().is_null() ||
                            (ch->value().is_array() && ch->value().get_array().empty());
    if (no_choices && !u->value().is_null()) return;
    chunk.erase(u);
    out += sse::format_data(json::serialize(chunk));
  }

  request_context& ctx_;
  sse::parser parser_;
  std::vector<sse::event> events_;
  bool done_ = false;
  bool failed_ = false;
};

}  // namespace

bool read_usage(const json::value& v, usage_counts& out) {
  if (!v.is_object()) return false;
  const auto& o = v.get_object();
  auto num = [](const json::value* x) -> std::uint64_t {
    if (!x) return 0;
    if (x->is_uint64()) return x->get_uint64();
    if (x->is_int64() && x->get_int64() > 0) return std::uint64_t(x->get_int64());
    if (x->is_double()) return count_of_double(x->get_double());
    return 0;
  };
  // A count this object lacks keeps what an earlier one of the same stream said (a server that
  // sends usage in several chunks, some partial): never reset to 0 by an object that is silent on it.
  if (auto p = o.if_contains("prompt_tokens")) out.prompt = num(p);
  if (auto c = o.if_contains("completion_tokens")) out.completion = num(c);
  if (auto d = o.if_contains("prompt_tokens_details"); d && d->is_object())
    if (auto c = d->get_object().if_contains("cached_tokens")) out.cached = num(c);
  out.reported = true;
  return true;
}

std::string normalize_error_body(unsigned status, std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec) {
    if (auto e = extract_error(status, v)) return wrap(std::move(*e));
  }
  std::string text(body.substr(0, 1000));
  if (text.empty()) text = "upstream answered status " + std::to_string(status);
  return wrap(error_object(text, default_type_for(status), nullptr, nullptr));
}

openai_compatible_adapter::openai_compatible_adapter(const config::provider_config& cfg)
    : provider_adapter(cfg), peer_(make_upstream_peer(cfg)) {}

result<upstream_request> openai_compatible_adapter::encode(request_context& ctx) const {
  upstream_request r = request_to(peer_, cfg_);
  r.target = peer_.base_path + (ctx.endpoint == endpoint_kind::embeddings ? "/embeddings" : "/chat/completions");
  // OpenAI's reasoning models refuse the deprecated max_tokens; local servers (vLLM, llama.cpp,
  // Ollama, TGI) all take max_tokens, not all max_completion_tokens.
  apply_output_cap(ctx, peer_.host == "api.openai.com" ? "max_completion_tokens" : "max_tokens");
  r.body = encode_openai_body(ctx, ctx.target->upstream_model);
  r.headers.reserve(4 + cfg_.headers.size());
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Accept", ctx.stream ? "text/event-stream" : "application/json");
  if (!cfg_.api_key.empty()) r.headers.emplace_back("Authorization", "Bearer " + cfg_.api_key);
  for (auto& h : cfg_.headers) r.headers.push_back(h);
  return r;
}

std::string encode_openai_body(request_context& ctx, std::string_view model, bool ask_usage) {
  json::object& body = ctx.request_json;  // edited in place: no deep copy per request
  body["model"] = model;
  if (ctx.stream && !ask_usage) {
    body.erase("stream_options");
  } else if (ctx.stream) {
    auto& so = body["stream_options"];
    if (!so.is_object()) so = json::object();
    so.get_object()["include_usage"] = true;
  }
  return json::serialize(body);
}

std::unique_ptr<stream_translator> make_openai_stream_translator(request_context& ctx) {
  return std::make_unique<openai_stream>(ctx);
}

std::unique_ptr<stream_translator> openai_compatible_adapter::make_stream_translator(request_context& ctx) const {
  return make_openai_stream_translator(ctx);
}

namespace {

/// Reads an OpenAI usage object as it is parsed (Boost.JSON's SAX interface): no DOM is built.
/// A response's usage has two nested objects and a dozen numbers; building them as json::values
/// and reading three cost ~8,000 instructions per response, on every proxied call.
/// Same reading as read_usage: a count that is not a non-negative integer reads as 0.
struct usage_reader {
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  using error_code = boost::system::error_code;
  using string_view = json::string_view;

  enum class field : unsigned char { none, prompt, completion, details, cached };
  usage_counts counts;
  int depth = 0;            // 1: in the usage object; 2: in one of its values
  bool in_details = false;  // depth 2 is prompt_tokens_details
  field next = field::none; // what the value after the last key is
  char key[32];             // the key being read (keys of interest are shorter)
  std::size_t key_len = 0;  // key.size() + 1 once a key is too long to be of interest

  void set(std::uint64_t v) {
    if (next == field::prompt) counts.prompt = v;
    else if (next == field::completion) counts.completion = v;
    else if (next == field::cached) counts.cached = v;
    next = field::none;
  }
  bool on_document_begin(error_code&) { return true; }
  bool on_document_end(error_code&) { return true; }
  bool on_array_begin(error_code&) { ++depth; next = field::none; return true; }
  bool on_array_end(std::size_t, error_code&) { --depth; return true; }
  bool on_object_begin(error_code&) {
    if (++depth == 2) in_details = next == field::details;
    next = field::none;
    return true;
  }
  bool on_object_end(std::size_t, error_code&) {
    if (depth-- == 2) in_details = false;
    return true;
  }
  bool on_string_part(string_view, std::size_t, error_code&) { return true; }
  bool on_string(string_view, std::size_t, error_code&) { next = field::none; return true; }
  bool on_key_part(string_view s, std::size_t, error_code&) {
    append(s);
    return true;
  }
  bool on_key(string_view s, std::size_t, error_code&) {
    append(s);
    const std::string_view k(key, key_len <= sizeof key ? key_len : 0);
    next = field::none;
    if (depth == 1) {
      if (k == "prompt_tokens") next = field::prompt;
      else if (k == "completion_tokens") next = field::completion;
      else if (k == "prompt_tokens_details") next = field::details;
    } else if (depth == 2 && in_details && k == "cached_tokens") {
      next = field::cached;
    }
    key_len = 0;
    return true;
  }
  void append(string_view s) {
    if (key_len + s.size() > sizeof key) {
      key_len = sizeof key + 1;
      return;
    }
    std::memcpy(key + key_len, s.data(), s.size());
    key_len += s.size();
  }
  bool on_number_part(string_view, error_code&) { return true; }
  bool on_int64(std::int64_t i, string_view, error_code&) { set(i > 0 ? std::uint64_t(i) : 0); return true; }
  bool on_uint64(std::uint64_t u, string_view, error_code&) { set(u); return true; }
  bool on_double(double d, string_view, error_code&) { set(count_of_double(d)); return true; }
  bool on_bool(bool, error_code&) { set(0); return true; }
  bool on_null(error_code&) { set(0); return true; }
  bool on_comment_part(string_view, error_code&) { return true; }
  bool on_comment(string_view, error_code&) { return true; }
};

}  // namespace

bool scan_usage(std::string_view body, usage_counts& out) {
  // Quotes inside JSON strings are escaped, so `"usage"` followed by `:` can only be a key.
  // Only the usage object is parsed: a full parse of every response would cost more than the
  // rest of the proxying.
  auto ws = [&](std::size_t i) {
    while (i < body.size() && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t')) ++i;
    return i;
  };
  // swar::find, not string_view::find: find calls memchr once per '"' before the key (~40 times
  // in a short chat completion).
  static constexpr std::string_view needle = "\"usage\"";
  for (std::size_t pos = swar::find(body, needle); pos != std::string_view::npos;
       pos = swar::find(body, needle, pos + needle.size())) {
    std::size_t i = ws(pos + 7);
    if (i >= body.size() || body[i] != ':') continue;
    i = ws(i + 1);
    if (i >= body.size() || body[i] != '{') continue;
    json::basic_parser<usage_reader> p(json::parse_options{});
    boost::system::error_code ec;
    // `more`: the parse stops where the usage object ends, before the rest of the body.
    p.write_some(true, body.data() + i, body.size() - i, ec);
    if (ec || !p.done()) continue;
    const usage_counts& u = p.handler().counts;
    out.prompt = u.prompt;
    out.completion = u.completion;
    out.cached = u.cached;
    out.reported = true;
    return true;
  }
  return false;
}

std::string decode_openai_body(request_context& ctx, unsigned status, std::string body) {
  if (status >= 200 && status < 300) {
    scan_usage(body, ctx.usage);
    return body;
  }
  if (status == 401 || status == 403) {
    // The upstream refused the gateway's own key (callers never send one upstream): the caller's
    // key is fine, and OpenAI's text ("Incorrect API key provided: sk-…abcd") would show the
    // end of the gateway's.
    ctx.answer_status = 502;
    return openai_error_body("The upstream provider refused the gateway's credentials (HTTP " + std::to_string(status) +
                                 "): check the provider's api_key in the gateway's configuration.",
                             "server_error", "", "upstream_authentication_failed");
  }
  return normalize_error_body(status, body);
}

std::string openai_compatible_adapter::decode_body(request_context& ctx, unsigned status, std::string body) const {
  return decode_openai_body(ctx, status, std::move(body));
}

}  // namespace tollgate::providers
