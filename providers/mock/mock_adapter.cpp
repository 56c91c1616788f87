// SPDX-License-Identifier: Apache-2.0
#include "providers/mock/mock_adapter.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cmath>

#include "gateway/core/sse.hpp"
#include "gateway/core/tokens.hpp"
#include "providers/unified.hpp"

namespace tollgate::providers {
namespace json = boost::json;
namespace {

constexpr std::string_view vocabulary[] = {
    "The",   "gateway", "answers", "every",  "request", "with",    "a",     "deterministic", "mock",  "reply",
    "so",    "that",    "tests",   "and",    "load",    "runs",    "see",   "the",           "same",  "tokens",
    "each",  "time",    "they",    "call",   "it",      "through", "one",   "API",           "for",   "all",
    "teams", "models",  "and",     "limits", "alike",   "today",   "while", "budgets",       "stay",  "exact"};

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::string last_user_text(const json::object& req) {
  auto msgs = req.if_contains("messages");
  if (!msgs || !msgs->is_array()) return {};
  const auto& arr = msgs->get_array();
  for (auto it = arr.rbegin(); it != arr.rend(); ++it) {
    if (!it->is_object()) continue;
    const auto& m = it->get_object();
    auto role = m.if_contains("role");
    if (!role || !role->is_string() || role->get_string() != "user") continue;
    auto c = m.if_contains("content");
    if (c && c->is_string()) return std::string(c->get_string());
    if (c && c->is_array()) {
      std::string s;
      for (auto& part : c->get_array())
        if (part.is_object())
          if (auto t = part.get_object().if_contains("text"); t && t->is_string()) s.append(t->get_string());
      return s;
    }
  }
  return {};
}

json::object usage_json(const usage_counts& u) {
  json::object o;
  o["prompt_tokens"] = u.prompt;
  o["completion_tokens"] = u.completion;
  o["total_tokens"] = u.prompt + u.completion;
  json::object d;
  d["cached_tokens"] = 0;
  o["prompt_tokens_details"] = std::move(d);
  return o;
}

std::string completion_id(const request_context& ctx) { return "chatcmpl-mock-" + ctx.id_hex; }

std::int64_t unix_now() {
  using namespace std::chrono;
  return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

/// Waits `d`, or until the caller leaves (ctx.cancel_upstream). False when cut short.
awaitable<bool> wait_for(request_context& ctx, std::chrono::steady_clock::duration d) {
  steady_timer_t timer(co_await net::this_coro::executor);
  timer.expires_after(d);
  ctx.cancel_upstream = [&timer] { timer.cancel(); };
  auto [ec] = co_await timer.async_wait();
  ctx.cancel_upstream = nullptr;
  co_return !ec && !ctx.client_gone;
}

awaitable<void> serve_error(const config::mock_fault& f, request_context& ctx, response_sink& sink) {
  ctx.status = f.status;
  ctx.details = "mock_fault_error";
  header_list extra;
  std::string type = f.status == 429 ? "rate_limit_error" : f.status >= 500 ? "server_error" : "invalid_request_error";
  std::string code = f.status == 429 ? "rate_limit_exceeded" : "mock_fault";
  if (f.status == 429) extra.emplace_back("retry-after", "1");
  ctx.error_code = code;
  co_await sink.send_full(f.status, "application/json",
                          openai_error_body("mock provider fault: status " + std::to_string(f.status), type, "", code), extra);
}

awaitable<void> serve_embeddings(const config::provider_config& cfg, request_context& ctx, response_sink& sink) {
  json::array data;
  std::vector<std::string> inputs;
  const json::value& in = ctx.request_json.at("input");
  if (in.is_string()) inputs.emplace_back(in.get_string());
  else
    for (auto& item : in.get_array()) inputs.push_back(item.is_string() ? std::string(item.get_string()) : json::serialize(item));
  unsigned dims = cfg.embedding_dimensions;
  if (auto d = ctx.request_json.if_contains("dimensions"); d && d->is_int64()) dims = unsigned(d->get_int64());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    json::array vec;
    for (float f : mock_adapter::embedding_for(inputs[i], dims)) vec.push_back(double(f));
    json::object e;
    e["object"] = "embedding";
    e["index"] = i;
    e["embedding"] = std::move(vec);
    data.push_back(std::move(e));
  }
  ctx.usage = {ctx.prompt_estimate, 0, 0, 0, true};
  json::object res;
  res["object"] = "list";
  res["data"] = std::move(data);
  res["model"] = ctx.target->upstream_model;
  json::object u;
  u["prompt_tokens"] = ctx.usage.prompt;
  u["total_tokens"] = ctx.usage.prompt;
  res["usage"] = std::move(u);
  ctx.status = 200;
  if (co_await wait_for(ctx, std::chrono::milliseconds(cfg.ttft_ms)) || cfg.ttft_ms == 0)
    co_await sink.send_full(200, "application/json", json::serialize(res));
}

}  // namespace

std::vector<std::string_view> mock_adapter::words_for(std::string_view prompt, std::size_t count) {
  std::vector<std::string_view> out;
  out.reserve(count);
  std::uint64_t h = fnv1a(prompt);
  constexpr std::size_t n = std::size(vocabulary);
  for (std::size_t i = 0; i < count; ++i) {
    out.push_back(vocabulary[(h + i * 7) % n]);
    h ^= h >> 13;
  }
  return out;
}

std::vector<float> mock_adapter::embedding_for(std::string_view input, unsigned dimensions) {
  std::vector<float> v(dimensions);
  std::uint64_t h = fnv1a(input);
  double norm = 0;
  for (unsigned i = 0; i < dimensions; ++i) {
    h = h * 6364136223846793005ULL + 1442695040888963407ULL;  // LCG step
    v[i] = float(double(h >> 11) / double(1ULL << 53) * 2.0 - 1.0);
    norm += double(v[i]) * v[i];
  }
  norm = std::sqrt(norm);
  if (norm > 0)
    for (auto& x : v) x = float(x / norm);
  return v;
}

awaitable<void> mock_adapter::serve(request_context& ctx, response_sink& sink) const {
  const auto& f = cfg_.fault;
  if (f.what == config::mock_fault::kind::error) co_return co_await serve_error(f, ctx, sink);
  if (ctx.endpoint == endpoint_kind::embeddings) co_return co_await serve_embeddings(cfg_, ctx, sink);

  // The caller's max_tokens, else the configured length within the gateway's own cap (as a
  // model stops at the max_tokens the gateway sent for it).
  const std::uint64_t limit = ctx.max_output_tokens ? ctx.max_output_tokens : ctx.output_cap;
  const std::size_t count = ctx.max_output_tokens ? std::min<std::uint64_t>(ctx.max_output_tokens, 100'000)
                            : ctx.output_cap  ? std::min<std::uint64_t>(cfg_.completion_tokens, ctx.output_cap)
                                              : cfg_.completion_tokens;
  const auto words = words_for(last_user_text(ctx.request_json), count);
  ctx.usage = {ctx.prompt_estimate, 0, 0, 0, true};
  const std::string id = completion_id(ctx);
  const std::int64_t created = unix_now();
  const std::string& model = ctx.target->upstream_model;
  const auto ttft = std::chrono::milliseconds(cfg_.ttft_ms);
  const auto gap = cfg_.tokens_per_second > 0
                       ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(1.0 / cfg_.tokens_per_second))
                       : std::chrono::steady_clock::duration::zero();

  const auto raise = [] { throw std::runtime_error("mock provider fault: throw"); };
  if (!ctx.stream) {
    if (f.what == config::mock_fault::kind::raise) raise();
    std::string text;
    for (std::size_t i = 0; i < words.size(); ++i) text.append(i ? " " : "").append(words[i]);
    ctx.usage.completion = words.size();
    if (ttft.count() && !co_await wait_for(ctx, ttft + gap * words.size())) co_return;
    json::object msg{{"role", "assistant"}, {"content", text}, {"refusal", nullptr}};
    json::object choice{{"index", 0}, {"message", std::move(msg)}, {"logprobs", nullptr},
                        {"finish_reason", limit && count == limit ? "length" : "stop"}};
    json::object res{{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", model},
                     {"choices", json::array{std::move(choice)}}, {"usage", usage_json(ctx.usage)},
                     {"system_fingerprint", "fp_tollgate_mock"}};
    ctx.status = 200;
    co_await sink.send_full(200, "application/json", json::serialize(res));
    co_return;
  }

  // Stream: role chunk, one chunk a token, finish chunk, usage chunk if asked, [DONE].
  auto chunk = [&](json::object delta, json::value finish) {
    json::object c{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                   {"system_fingerprint", "fp_tollgate_mock"}};
    c["choices"] = json::array{json::object{{"index", 0}, {"delta", std::move(delta)}, {"logprobs", nullptr}, {"finish_reason", finish}}};
    if (ctx.caller_wants_usage) c["usage"] = nullptr;
    return sse::format_data(json::serialize(c));
  };
  if (ttft.count() && !co_await wait_for(ctx, ttft)) co_return;
  ctx.status = 200;
  static const header_list stream_headers{{"Cache-Control", "no-cache"}};
  if (!co_await sink.start_stream(200, "text/event-stream", stream_headers)) co_return;
  std::string first = chunk(json::object{{"role", "assistant"}, {"content", ""}, {"refusal", nullptr}}, nullptr);
  if (!co_await sink.send_chunk(first)) co_return;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (gap.count() && i && !co_await wait_for(ctx, gap)) co_return;
    if (f.what == config::mock_fault::kind::raise && i == f.after_tokens) raise();
    if (f.what != config::mock_fault::kind::none && i == f.after_tokens) {
      ctx.details = f.what == config::mock_fault::kind::reset ? "mock_fault_reset" : "mock_fault_stall";
      if (f.what == config::mock_fault::kind::reset) {
        sink.abort();
        co_return;
      }
      co_await wait_for(ctx, std::chrono::hours(24 * 365));  // stall until the caller leaves or drain ends it
      co_return;
    }
    std::string piece = i ? " " + std::string(words[i]) : std::string(words[i]);
    std::string data = chunk(json::object{{"content", piece}}, nullptr);
    // The word is generated before it is sent: billed even when the caller leaves during the send
    // (or a filter blocks it), as a provider bills the tokens it produced.
    ctx.usage.completion = i + 1;
    ctx.relayed_completion_chars += token_chars(piece);  // counted as the remote providers' relays are
    if (!co_await sink.send_chunk(data)) co_return;
    if (ctx.capture_text) ctx.captured_response += piece;  // (what the caller was sent)
  }
  std::string tail = chunk(json::object{}, limit && count == limit ? "length" : "stop");
  if (ctx.caller_wants_usage) {
    json::object u{{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
                   {"system_fingerprint", "fp_tollgate_mock"}, {"choices", json::array{}}, {"usage", usage_json(ctx.usage)}};
    tail += sse::format_data(json::serialize(u));
  }
  tail += "data: [DONE]\n\n";
  if (!co_await sink.send_chunk(tail)) co_return;
  co_await sink.end_stream();
}

}  // namespace tollgate::providers
