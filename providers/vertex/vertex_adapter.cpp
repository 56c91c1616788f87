// SPDX-License-Identifier: Apache-2.0
#include "providers/vertex/vertex_adapter.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <array>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "gateway/core/error.hpp"
#include "gateway/core/sse.hpp"
#include "providers/common/relayed_text.hpp"
#include "providers/vertex/gemini.hpp"

namespace tollgate::providers {
namespace json = boost::json;
using namespace std::chrono;

namespace {

vertex::completion_meta meta_of(const request_context& ctx) {
  return {"chatcmpl-" + ctx.id_hex, duration_cast<seconds>(system_clock::now().time_since_epoch()).count(), ctx.model};
}

void record_usage(request_context& ctx, const vertex::gemini_usage& u) {
  const auto o = vertex::to_openai_usage(u);
  auto num = [&](std::string_view k) { return o.contains(k) ? o.at(k).to_number<std::uint64_t>() : 0; };
  ctx.usage.prompt = num("prompt_tokens");
  ctx.usage.completion = num("completion_tokens");
  ctx.usage.cached = 0;
  if (auto* d = o.if_contains("prompt_tokens_details"); d && d->is_object())
    if (auto* c = d->get_object().if_contains("cached_tokens")) ctx.usage.cached = c->to_number<std::uint64_t>();
  ctx.usage.reported = true;
}


/// streamGenerateContent?alt=sse → OpenAI SSE chunks.
class vertex_stream final : public stream_translator {
 public:
  explicit vertex_stream(request_context& ctx) : ctx_(ctx), tr_(meta_of(ctx)) {}

  void feed(std::string_view bytes, std::string& out) override {
    if (done_ || failed_) return;
    events_.clear();
    // The events completed before an oversized one are relayed and billed; then the stream fails.
    const bool ok = parser_.feed(bytes, events_);
    for (auto& ev : events_) {
      if (failed_ || ev.data.empty()) continue;
      apply(tr_.on_chunk(std::string_view(ev.data)), out);
    }
    if (!ok && !failed_) fail_plain(out, "upstream stream event too large");
  }

  void finish(bool complete, std::string_view why, std::string& out) override {
    if (done_ || failed_) return;
    if (!complete) {
      fail_plain(out, "The upstream stream ended unexpectedly: " + std::string(why) + ".");
      return;
    }
    apply(tr_.on_end(), out);
    if (failed_) return;
    if (tr_.usage() && ctx_.caller_wants_usage)
      out += sse::format_data(json::serialize(vertex::make_usage_chunk(tr_.meta(), *tr_.usage())));
    out += "data: [DONE]\n\n";
    done_ = true;
  }

  bool failed() const override { return failed_; }
  void abandon() override { count_unsent_call(); }

 private:
  void apply(const vertex::stream_step& step, std::string& out) {
    failed_ = emit_translated_step(
        ctx_, step, out, [&](const vertex::gemini_usage& u) { record_usage(ctx_, u); },
        [](const vertex::upstream_error& e) { return vertex::to_openai_error_body(e); });
    if (failed_) count_unsent_call();  // an error chunk, a bad one, or an end before finishReason
  }
  /// A stream that ends before its finishReason (failed, cut, or abandoned) loses the call still
  /// being assembled: it was generated all the same, so it is counted as relayed for billing, once.
  void count_unsent_call() {
    if (std::exchange(unsent_counted_, true)) return;
    ctx_.relayed_completion_chars += token_chars(tr_.pending_text());
  }
  void fail_plain(std::string& out, const std::string& message) {
    count_unsent_call();
    failed_ = true;
    emit_stream_failure(ctx_, out, "upstream_error", message);
  }

  request_context& ctx_;
  vertex::gemini_stream_translator tr_;
  sse::parser parser_;
  std::vector<sse::event> events_;
  bool done_ = false;
  bool failed_ = false;
  bool unsent_counted_ = false;
};

google::credentials load_google_credentials(const config::provider_config& cfg) {
  auto getenv = [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    return v && *v ? std::optional<std::string>(v) : std::nullopt;
  };
  auto read_file = [](const std::string& path) -> boost::system::result<std::string> {
    std::ifstream in(path, std::ios::binary);
    if (!in) return boost::system::error_code(errno ? errno : ENOENT, boost::system::generic_category());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  auto c = google::resolve_credentials(cfg.credentials_file, getenv, read_file);
  if (!c) throw std::invalid_argument("Google credentials: " + c.error().message);
  return std::move(*c);
}

}  // namespace

namespace {
/// The provider's settings with Google's host for its location when no endpoint was configured.
config::provider_config with_google_host(config::provider_config c) {
  if (c.base_url.empty()) c.base_url = "https://" + vertex::vertex_host(c.location);
  return c;
}
}  // namespace

vertex_adapter::vertex_adapter(const config::provider_config& cfg)
    : provider_adapter(cfg),
      peer_(make_upstream_peer(with_google_host(cfg))),
      google_host_(cfg.base_url.empty()),
      token_(oauth::token_source::for_google(load_google_credentials(cfg))) {}

result<upstream_request> vertex_adapter::encode(request_context& ctx) const {
  const bool embed = ctx.endpoint == endpoint_kind::embeddings;
  const auto method = embed ? vertex::vertex_method::predict
                            : ctx.stream ? vertex::vertex_method::stream_generate_content
                                         : vertex::vertex_method::generate_content;
  auto url = vertex::make_vertex_url({cfg_.project, cfg_.location, ctx.target->upstream_model, "v1"}, method);
  upstream_request r = request_to(peer_, cfg_);
  if (!url) {
    ctx.reject_message = url.error().message;
    ctx.reject_param = url.error().param;
    return make_error_code(errc::invalid_value);
  }
  if (google_host_ && url->host != peer_.host) {
    // A full model name (projects/*/locations/<other>/...) lives in another location than this
    // provider's: sent to this host, Google would refuse it. An operator's fix, so a 502.
    ctx.reject_status = 502;
    ctx.reject_message = "The model '" + ctx.target->upstream_model + "' is served at " + url->host + ", but provider '" +
                         cfg_.name + "' calls " + peer_.host + ": give it a provider with that location.";
    return make_error_code(errc::upstream_error);
  }
  // (After the URL's checks: a request that could never be sent says so even without a token.)
  const auto auth = token_->authorization();
  if (!auth) {
    ctx.reject_status = 502;
    ctx.reject_message = "The gateway has no Vertex AI access token yet (" + token_->last_error() + "). Retry shortly.";
    return make_error_code(errc::upstream_error);
  }
  if (embed) {
    // gemini-embedding models take one instance per predict call (Google's model reference);
    // the text-embedding ones up to 250.
    const std::string_view model = ctx.target->upstream_model;
    const std::size_t per_call = model.find("gemini-embedding") != std::string_view::npos ? 1 : vertex::default_max_instances;
    auto calls = vertex::to_predict_requests(ctx.request_json, per_call);
    if (!calls || calls->bodies.size() != 1) {
      ctx.reject_message = calls ? "This Vertex AI embedding model takes at most " + std::to_string(per_call) +
                                       " input(s) per request: send the inputs in separate requests."
                                 : calls.error().message;
      ctx.reject_param = calls ? "input" : calls.error().param;
      return make_error_code(errc::invalid_value);
    }
    r.body = json::serialize(calls->bodies.front());
  } else {
    apply_output_cap(ctx, "max_tokens");  // (as generationConfig.maxOutputTokens)
    auto body = vertex::to_generate_content_request(ctx.request_json);
    if (!body) {
      ctx.reject_message = body.error().message;
      ctx.reject_param = body.error().param;
      return make_error_code(errc::invalid_value);
    }
    r.body = json::serialize(*body);
  }
  r.target = peer_.base_path + url->path;
  r.headers.reserve(3 + cfg_.headers.size());
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Accept", ctx.stream ? "text/event-stream" : "application/json");
  r.headers.emplace_back("Authorization", *auth);
  for (auto& h : cfg_.headers) r.headers.push_back(h);
  return r;
}

std::unique_ptr<stream_translator> make_vertex_stream_translator(request_context& ctx) {
  return std::make_unique<vertex_stream>(ctx);
}

std::unique_ptr<stream_translator> vertex_adapter::make_stream_translator(request_context& ctx) const {
  return make_vertex_stream_translator(ctx);
}

std::string vertex_adapter::decode_body(request_context& ctx, unsigned status, std::string body) const {
  if (status / 100 != 2) {
    auto e = vertex::map_google_error(status, body);
    // Google refusing the gateway's own token, or its service account's permissions, is the
    // gateway's failure, not the caller's; Google's text names the project and the account.
    if (e.status == 401 || e.status == 403) {
      const bool token = e.status == 401;
      if (token) token_->invalidate();  // fetch a new one now (PROTOCOLS §4.6), not at its expiry
      e.status = 502;
      e.type = "server_error";
      e.code = token ? "upstream_authentication_failed" : "upstream_access_denied";
      e.message = token ? "Vertex AI refused the gateway's access token; a new one is being fetched."
                        : "Vertex AI refused the gateway's service account (PERMISSION_DENIED): check its roles on "
                          "the project and that the Vertex AI API is enabled.";
      e.retryable = token;
    }
    ctx.answer_status = e.status;
    if (const auto s = e.retry_after_seconds()) ctx.upstream_retry_after_s = std::uint32_t(std::min<std::uint64_t>(*s, 86'400));
    return json::serialize(vertex::to_openai_error_body(e));
  }
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (!ec && ctx.endpoint == endpoint_kind::embeddings) {
    if (auto calls = vertex::to_predict_requests(ctx.request_json)) {
      std::array<json::value, 1> one{std::move(v)};
      if (auto e = vertex::to_openai_embeddings(*calls, one, ctx.model)) {
        ctx.usage.prompt = e->prompt_tokens;
        ctx.usage.reported = e->tokens_reported;
        return json::serialize(e->body);
      }
    }
  } else if (!ec) {
    if (auto c = vertex::to_chat_completion(v, meta_of(ctx))) {
      if (c->usage) record_usage(ctx, *c->usage);
      return json::serialize(c->body);
    }
    // An answer the gateway cannot translate was still generated and charged: its own usage, when
    // it has one, is billed rather than the prompt estimate alone.
    if (v.is_object())
      if (const auto* m = v.get_object().if_contains("usageMetadata"))
        if (auto u = vertex::parse_usage(*m)) record_usage(ctx, *u);
  }
  ctx.details = "upstream_invalid_response";
  ctx.answer_status = 502;
  return openai_error_body("Vertex AI answered a body the gateway could not read.", "server_error", "",
                           "invalid_upstream_response");
}

}  // namespace tollgate::providers
