// SPDX-License-Identifier: Apache-2.0
// The fixed request pipeline. Keep docs/life-of-a-request.md in step with this file.
#include "gateway/pipeline.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/url/pct_string_view.hpp>

#include "gateway/audit/audit_log.hpp"
#include "gateway/audit/audit_record.hpp"
#include "gateway/content_filters.hpp"
#include "gateway/core/text.hpp"
#include "gateway/metrics.hpp"
#include "policy/policy.hpp"
#include "providers/common/relayed_text.hpp"
#include "providers/unified.hpp"

namespace tollgate::gateway {
namespace http = beast::http;
namespace json = boost::json;
namespace {

constexpr std::size_t max_upstream_body = 64 * 1024 * 1024;

std::string_view endpoint_label(endpoint_kind e) {
  switch (e) {
    case endpoint_kind::chat_completions: return "chat_completions";
    case endpoint_kind::embeddings: return "embeddings";
    case endpoint_kind::models: return "models";
    case endpoint_kind::other: return "other";
  }
  return "other";
}

using text::iequals;

/// Keeps ctx.details/error_code for an upstream failure and counts it.
void count_upstream_error(request_context& ctx, std::string_view kind) {
  gateway_metrics::get().upstream_errors.counter({ctx.target->provider->name(), std::string(kind)}).inc();
}

struct stream_gauge {
  stream_gauge() { gateway_metrics::get().open_streams.gauge({}).add(1); }
  ~stream_gauge() { gateway_metrics::get().open_streams.gauge({}).add(-1); }
};

/// Records a moderation call (metric; audit `filters` when flagged). True when the call must
/// stop: flagged with action block, or failed with on_error fail_closed.
bool moderation_stops(request_context& ctx, const content_filters& f, const moderation_result& r,
                      std::string_view direction) {
  using outcome = moderation_result::outcome;
  const char* what = r.what == outcome::passed ? "passed" : r.what == outcome::flagged ? "flagged" : "failed";
  gateway_metrics::get().moderation_calls.counter({direction, what}).inc();
  if (r.what == outcome::flagged) {
    record_filter_actions(ctx, f, {"moderation"}, direction);
    return f.moderation()->cfg.action == "block";
  }
  if (r.what == outcome::failed) {
    if (ctx.details.empty()) ctx.details = "moderation_failed";
    return !f.moderation()->cfg.fail_open;
  }
  return false;
}

std::string flagged_message(std::string_view what, const moderation_result& r) {
  return "The " + std::string(what) + " was flagged by the moderation endpoint" +
         (r.categories.empty() ? std::string() : " (categories: " + joined_rules(r.categories) + ")") + ".";
}

/// Moderation of a streamed answer in windows of its text (moderation.window_bytes): the SSE is
/// held until the window its text completes has been checked (or the answer ended), then sent;
/// a stop replaces everything held with the end of the stream, so no unchecked text reaches the
/// caller. Windows overlap by a quarter, so text that a window boundary splits is seen whole.
class stream_moderation {
 public:
  stream_moderation(worker& w, request_context& ctx, const content_filters& f, stream_rewriter& rw)
      : w_(w), ctx_(ctx), f_(f), rw_(rw) {
    rw_.track_text();
  }
  /// `out`: the SSE about to be sent (emptied while held); `ending`: the upstream stream ended
  /// or broke.
  awaitable<void> before_send(std::string& out, bool ending) {
    if (done_) co_return;
    window_ += rw_.take_text();
    held_ += out;
    out.clear();
    const auto& m = *f_.moderation();
    // A local rule's block ends the answer too: its last text is checked before it goes out.
    // (Every answer's end: with `n`, the first to finish would send each later chunk of the
    // others to the endpoint alone.)
    if (window_.size() < m.cfg.window_bytes && !ending && !rw_.all_finished() && !rw_.blocked()) co_return;
    if (!window_.empty()) {
      std::vector<std::string> one;
      one.push_back(overlap_ + window_);
      const std::size_t keep = std::min<std::size_t>(window_.size(), m.cfg.window_bytes / 4);
      overlap_ = window_.substr(window_.size() - keep);
      window_.clear();
      const moderation_result r = co_await moderate(w_.pool(), m, std::move(one), ctx_);
      if (moderation_stops(ctx_, f_, r, "response")) {
        held_.clear();  // (with the end a local block may have added: this end replaces it)
        done_ = true;
        if (r.what == moderation_result::outcome::flagged)
          out = rw_.end_by_moderation("content_filtered", flagged_message("response", r));
        else
          out = rw_.end_by_moderation("moderation_unavailable", "The moderation endpoint could not check the response.");
        co_return;
      }
    }
    out = std::exchange(held_, {});
  }

 private:
  worker& w_;
  request_context& ctx_;
  const content_filters& f_;
  stream_rewriter& rw_;
  std::string window_;   ///< text not checked yet
  std::string overlap_;  ///< the end of the previous window
  std::string held_;     ///< SSE not sent yet (it carries the unchecked text)
  bool done_ = false;    ///< moderation ended the stream
};

/// A 2xx whole answer that reported no usage, or usage without an output count (some
/// OpenAI-compatible servers omit it, or send `"completion_tokens": null`; some Bedrock and Vertex
/// answers may): its generated text is counted as a stream's relayed text is, before any filter,
/// so that it is billed for its output (fill_usage), not as the prompt alone. Parsed only then:
/// answers with full usage cost nothing more.
void count_unreported_answer(request_context& ctx, std::string_view decoded) {
  if ((ctx.usage.reported && ctx.usage.completion > 0) || ctx.endpoint != endpoint_kind::chat_completions) return;
  boost::system::error_code ec;
  const json::value v = json::parse(decoded, ec);
  if (!ec && v.is_object()) ctx.relayed_completion_chars += providers::choice_chars(v.get_object(), "message", nullptr);
}

/// Whether whole answers go to a moderation endpoint (callers skip moderate_answer's frame if not).
bool answers_moderated(const request_context& ctx) {
  const auto* f = ctx.snap->filters.get();
  return f && f->moderation() && f->moderation()->cfg.responses;
}

/// Whole answers: moderates `body` (a 2xx chat.completion) in place. A flagged answer is withheld
/// (finish_reason content_filter); a failure that fails closed is returned as the call's failure.
awaitable<std::optional<failure>> moderate_answer(worker& w, request_context& ctx, std::string& body) {
  const auto* f = ctx.snap->filters.get();
  if (!f || !f->moderation() || !f->moderation()->cfg.responses) co_return std::nullopt;
  auto texts = answer_texts(body);
  if (texts.empty()) co_return std::nullopt;
  const moderation_result r = co_await moderate(w.pool(), *f->moderation(), std::move(texts), ctx);
  if (!moderation_stops(ctx, *f, r, "response")) co_return std::nullopt;
  if (r.what == moderation_result::outcome::failed)
    co_return make_failure(errc::moderation_unavailable, "The moderation endpoint could not check the response.", "",
                           error_source::upstream);
  body = withhold_answer(std::move(body));
  ctx.details = "content_filtered";
  ctx.error_code = "content_filtered";
  co_return std::nullopt;
}

/// Phase 10 for a streamed success: upstream bytes → translator → caller, chunk by chunk.
awaitable<phase_result> relay_stream(worker& w, request_context& ctx, response_sink& sink, upstream_exchange& ex) {
  auto translator = ctx.target->provider->make_stream_translator(ctx);
  // Response content filters act on the translated chunks' decoded text, as they flow.
  std::optional<stream_rewriter> rewriter;
  std::optional<stream_moderation> moderation;
  if (const auto* f = ctx.snap->filters.get())
    if (const auto* set = f->responses_for(ctx.identity.team, ctx.route->name)) {
      auto* s = w.filter_scratch(*set);
      if (s == nullptr) {  // not relayed unfiltered; billed at its reservation (its usage unread)
        ctx.answer_unread = true;
        co_return make_failure(errc::internal, "Content filter scratch space could not be allocated.", "",
                               error_source::internal);
      }
      rewriter.emplace(ctx, *f, *set, *s);
      if (f->moderation() && f->moderation()->cfg.responses) moderation.emplace(w, ctx, *f, *rewriter);
    }
  // Text capture keeps what the caller was sent (the filtered text, not the upstream's): set before
  // the stream's end seals the audit record, and on any other way out (a caller that leaves).
  // The rules that fired go on the record too, however the stream ended (a caller that left, an
  // upstream that failed: what was redacted before was redacted all the same).
  struct capture_filtered {
    request_context& ctx;
    std::optional<stream_rewriter>& rewriter;
    void keep() const {
      if (!rewriter) return;
      if (ctx.capture_text) ctx.captured_response = rewriter->emitted_text();
      rewriter->record_rules();
    }
    ~capture_filtered() { keep(); }
  } capture{ctx, rewriter};
  if (!translator) co_return make_failure(errc::internal, "provider has no stream translator", "", error_source::internal);
  header_list extra = passthrough_headers(ex.headers());
  extra.emplace_back("Cache-Control", "no-cache");
  stream_gauge gauge;
  // The caller left: what the translator held back is counted for the bill (abandon()).
  const auto gone = [&] {
    translator->abandon();
    return caller_gone();
  };
  if (!co_await sink.start_stream(ex.status(), "text/event-stream", extra))
    co_return gone();
  std::string in, out;
  bool broke_off = false;  // (counted once: a reset's failed() is not a second error)
  for (;;) {
    auto ec = co_await ex.read_some(in);
    if (ctx.client_gone) {
      // Bytes read as the caller left (its watcher ran first) were generated all the same: the
      // translator counts their text and keeps their usage for the bill, though nothing is sent.
      // Not captured for the audit trail, which keeps what the caller was sent.
      if (!ec && !in.empty()) {
        const std::size_t captured = ctx.captured_response.size();
        translator->feed(in, out);
        if (ctx.captured_response.size() > captured) ctx.captured_response.resize(captured);
      }
      co_return gone();
    }
    if (ec) {
      const bool timeout = ec == errc::upstream_timeout;
      broke_off = true;
      count_upstream_error(ctx, timeout ? "stream_timeout" : "stream_reset");
      translator->finish(false, timeout ? "timeout" : "connection closed before the end of the stream", out);
    } else if (in.empty()) {
      translator->finish(true, {}, out);
    } else {
      translator->feed(in, out);
    }
    if (rewriter && !out.empty()) out = rewriter->process(out);
    // An in-band failure (an error event, a corrupt frame) ends the stream too: what is held
    // goes out with the error event, not left behind by the break below.
    // And so does the upstream's end marker: the caller's stream ends with it, not when the
    // upstream's body does (a proxy that holds the last chunk back would hold the caller too).
    const bool ending = ec || in.empty() || translator->failed() || translator->done();
    if (moderation) co_await moderation->before_send(out, ending);
    if (!out.empty()) {
      if (!co_await sink.send_chunk(out))
        co_return gone();
      out.clear();
    }
    if (rewriter && rewriter->blocked()) break;
    if (ending) break;
  }
  capture.keep();
  if (rewriter && rewriter->blocked()) {
    // The rest of the answer is not wanted: end the caller's stream, drop the upstream connection.
    translator->abandon();
    co_await sink.end_stream();
    co_return flow::responded;
  }
  if (translator->failed() && !broke_off) count_upstream_error(ctx, "stream_error");
  co_await sink.end_stream();
  // After the end marker the body's own end usually follows at once: read up to it (nothing of it
  // is sent), so that the connection goes back to the pool. A few reads at most: an upstream that
  // goes on sending after its end is not read to its end.
  for (int reads = 0; reads < 4 && !translator->failed() && !ex.done() && !ctx.client_gone; ++reads) {
    const auto drained = co_await ex.read_some(in);
    if (drained || in.empty()) break;
  }
  if (!translator->failed() && ex.done()) ex.release();
  co_return flow::responded;
}

/// The answers of a local provider (the built-in mock) pass the response filters as any
/// upstream's do: whole answers through filter_answer, streams through a stream_rewriter.
class filtering_sink final : public response_sink {
 public:
  filtering_sink(worker& w, response_sink& inner, request_context& ctx, const content_filters& f,
                 const cf::filter_set& set, cf::scratch& s)
      : w_(w), inner_(inner), ctx_(ctx), f_(f), set_(set), scratch_(s) {}
  ~filtering_sink() override { keep(); }

  awaitable<bool> send_full(unsigned status, std::string_view content_type, std::string body,
                            const header_list& extra) override {
    // (Text capture reads the body sent, so it keeps the filtered answer.)
    if (status / 100 == 2 && ctx_.endpoint == endpoint_kind::chat_completions) {
      auto filtered = filter_answer(ctx_, f_, set_, scratch_, std::move(body));
      std::optional<failure> stop;
      errc why = errc::moderation_unavailable;
      if (!filtered) {  // (the built-in mock answers a chat.completion: never expected)
        why = errc::internal;
        stop = make_failure(why, "The answer could not be read to filter it.", "", error_source::internal);
      } else {
        body = std::move(*filtered);
        if (answers_moderated(ctx_)) stop = co_await moderate_answer(w_, ctx_, body);
      }
      if (stop) {  // the answer cannot be filtered, or the moderation endpoint failed (fail closed)
        const auto m = map_error(why);
        ctx_.error_code = std::string(m.code);
        std::string err = openai_error_body(stop->message, m.type, {}, m.code);
        const header_list none;
        co_return co_await inner_.send_full(m.status, content_type, std::move(err), none);
      }
    }
    co_return co_await inner_.send_full(status, content_type, std::move(body), extra);
  }
  awaitable<bool> start_stream(unsigned status, std::string_view content_type, const header_list& extra) override {
    rewriter_.emplace(ctx_, f_, set_, scratch_);
    if (f_.moderation() && f_.moderation()->cfg.responses) moderation_.emplace(w_, ctx_, f_, *rewriter_);
    co_return co_await inner_.start_stream(status, content_type, extra);
  }
  awaitable<bool> send_chunk(std::string_view data) override {
    if (!rewriter_ || rewriter_->blocked()) co_return false;
    std::string out = rewriter_->process(data);
    if (moderation_) co_await moderation_->before_send(out, false);
    if (!out.empty() && !co_await inner_.send_chunk(out)) co_return false;
    if (rewriter_->blocked()) {  // the answer ended here; the provider stops at the false
      keep();
      co_await inner_.end_stream();
      co_return false;
    }
    co_return true;
  }
  awaitable<bool> end_stream() override {
    keep();  // (before the end seals the audit record)
    co_return co_await inner_.end_stream();
  }
  void abort() override { inner_.abort(); }

 private:
  /// What relay_stream's capture keeps: the text sent, and the rules that fired.
  void keep() {
    if (!rewriter_) return;
    if (ctx_.capture_text) ctx_.captured_response = rewriter_->emitted_text();
    rewriter_->record_rules();
  }
  worker& w_;
  response_sink& inner_;
  request_context& ctx_;
  const content_filters& f_;
  const cf::filter_set& set_;
  cf::scratch& scratch_;
  std::optional<stream_rewriter> rewriter_;
  std::optional<stream_moderation> moderation_;
};

/// Phases 6–10 for one route: targets in order; a failure before any byte reached the caller
/// (connect error, timeout, 429, 5xx) moves on to the next target.
awaitable<phase_result> proxy(worker& w, request_context& ctx, response_sink& sink) {
  const auto& targets = ctx.route->targets;
  std::optional<failure> last, refusal;
  // What an attempt says of itself (upstream_timeout, upstream_status_503) is not said of the
  // next: a fallback that answers is logged as it ended, with what came before the proxy.
  const std::string details_before = ctx.details, error_code_before = ctx.error_code;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    if (i > 0) {
      ctx.details = details_before;
      ctx.error_code = error_code_before;
    }
    // Not started for a caller gone meanwhile (during its admission, or an earlier attempt).
    if (ctx.client_gone) co_return caller_gone();
    ctx.target = &targets[i];
    ++ctx.attempts;
    // Nothing of an earlier attempt decides this one's billing: a built-in fallback after a
    // remote 503 is billed its own answer, not the 503's nothing.
    ctx.upstream_answered = false;
    ctx.upstream_status = 0;
    ctx.answer_paid = false;
    ctx.upstream_retry_after_s = 0;
    ctx.refused_in_band = false;
    const bool more = i + 1 < targets.size();
    const provider_adapter& p = *ctx.target->provider;
    if (p.is_local()) {
      ctx.upstream_answered = true;
      const cf::filter_set* set = nullptr;
      cf::scratch* scratch = nullptr;
      if (const auto* f = ctx.snap->filters.get())
        if ((set = f->responses_for(ctx.identity.team, ctx.route->name)) != nullptr) scratch = w.filter_scratch(*set);
      if (scratch != nullptr) {
        filtering_sink filtered(w, sink, ctx, *ctx.snap->filters, *set, *scratch);
        co_await p.serve(ctx, filtered);
      } else {
        co_await p.serve(ctx, sink);
      }
      co_return flow::responded;
    }
    auto req = p.encode(ctx);
    if (!req && !ctx.reject_message.empty()) {
      if (ctx.reject_status == 502) {  // this provider cannot be used now (no credentials yet)
        last = make_failure(errc::upstream_error, ctx.reject_message, "", error_source::upstream);
        ctx.reject_message.clear();
        ctx.reject_status = 0;
        if (more) continue;
        co_return *last;
      }
      // The request asks for what this provider cannot do: another target may (an image to a
      // route of Bedrock, then OpenAI). When none serves it, the caller hears of an upstream
      // failure first (it may pass), else of the first refusal.
      if (!refusal) refusal = make_failure(errc::invalid_value, ctx.reject_message, ctx.reject_param, error_source::downstream);
      ctx.reject_message.clear();
      ctx.reject_param.clear();
      ctx.reject_status = 0;
      if (more) continue;
      co_return last ? *last : *refusal;
    }
    if (!req) co_return make_failure(errc::internal, "could not build the upstream request", "", error_source::internal);
    upstream_exchange ex(w.pool(), ctx);
    if (auto f = co_await ex.start(*req)) {
      if (ctx.client_gone) co_return *f;
      count_upstream_error(ctx, f->code == errc::upstream_timeout ? "timeout" : "connect");
      ctx.details = f->code == errc::upstream_timeout ? "upstream_timeout" : "upstream_connect_failed";
      last = std::move(f);
      if (more) continue;
      co_return *last;
    }
    const unsigned status = ex.status();
    ctx.upstream_answered = status / 100 == 2 && status != 204 && status != 205;
    ctx.upstream_status = status;
    if ((status == 429 || status >= 500) && more) {
      count_upstream_error(ctx, "status_" + std::to_string(status));
      continue;  // nothing went to the caller yet: try the fallback
    }
    if (status / 100 == 3 || status == 204 || status == 205) {
      // No answer to a completion: a redirect (its Location is the provider's business, not the
      // caller's) or a status without a body. Relayed, a 204 or 304 went out with the body made
      // for it, which a client does not read: its connection's next answer began inside it.
      count_upstream_error(ctx, "status_" + std::to_string(status));
      ctx.details = "upstream_status_" + std::to_string(status);
      last = make_failure(errc::upstream_error,
                          "The upstream answered with status " + std::to_string(status) + ", which is no answer to this request.",
                          "", error_source::upstream);
      if (more) continue;
      co_return *last;
    }
    if (const std::string_view enc = ex.header(http::field::content_encoding); !enc.empty() && !iequals(enc, "identity")) {
      // Asked for identity, answered compressed (a proxy that ignores Accept-Encoding): nothing
      // in it can be read (usage, errors, text to filter), and relayed as it is, the caller was
      // told gzip for bytes the gateway rewrote. A 2xx is billed at its reservation, and no
      // other target runs the call again: the provider produced it, and charges for it.
      count_upstream_error(ctx, "content_encoding");
      ctx.details = "upstream_content_encoding";
      const bool answered = status / 100 == 2;
      if (answered) ctx.answer_unread = true;
      last = make_failure(errc::upstream_error,
                          "The upstream answered with Content-Encoding '" + std::string(enc.substr(0, 40)) +
                              "' though the gateway asked for identity; its answer cannot be read.",
                          "", error_source::upstream);
      if (more && !answered) continue;
      co_return *last;
    }
    const std::string_view ct = ex.header(http::field::content_type);
    // SSE from OpenAI-style servers, a binary AWS event stream from Bedrock: the adapter's
    // translator turns either into the caller's SSE.
    if (status / 100 == 2 && ctx.stream &&
        (ct.find("text/event-stream") != std::string_view::npos ||
         ct.find("application/vnd.amazon.eventstream") != std::string_view::npos))
      co_return co_await relay_stream(w, ctx, sink, ex);

    std::string body;
    // A 2xx head comes with an answer already generated, which the provider charges for: its body
    // is read to the end even if the caller leaves meanwhile (within the upstream's timeouts), so
    // that its usage is billed exactly.
    const bool answered = status / 100 == 2;
    ctx.answer_paid = answered;
    if (auto ec = co_await ex.read_all(body, max_upstream_body)) {
      // Its usage went with the body: billed at the reservation, the most it can have cost. And no
      // other target is tried after it: the call would be paid twice.
      if (answered) ctx.answer_unread = true;
      if (ctx.client_gone) co_return caller_gone();
      count_upstream_error(ctx, ec == errc::upstream_timeout ? "timeout" : "body");
      auto f = make_failure(ec == errc::upstream_timeout ? errc::upstream_timeout : errc::upstream_error,
                            "The upstream response could not be read.", "", error_source::upstream);
      if (more && !answered) {
        last = std::move(f);
        continue;
      }
      co_return f;
    }
    if (answered && ctx.endpoint == endpoint_kind::embeddings)
      for (const auto& f : ex.headers())
        if (iequals(f.name_string(), "x-amzn-bedrock-input-token-count")) ctx.upstream_input_tokens = f.value();
    if (ctx.client_gone) {
      // Read for the bill alone: its usage counted, nothing sent (or captured: the audit trail
      // keeps what the caller was sent).
      if (answered) {
        count_unreported_answer(ctx, p.decode_body(ctx, status, std::move(body)));
        ctx.captured_response.clear();
      }
      ex.release();
      co_return caller_gone();
    }
    if (status / 100 != 2) {
      count_upstream_error(ctx, "status_" + std::to_string(status));
      ctx.details = "upstream_status";
    }
    if (status / 100 != 2)
      for (auto& f : ex.headers()) ctx.upstream_error_headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    std::string out = p.decode_body(ctx, status, std::move(body));
    if (status / 100 == 2) count_unreported_answer(ctx, out);
    if (status / 100 == 2 && ctx.endpoint == endpoint_kind::chat_completions && ctx.snap->filters)
      if (const auto* set = ctx.snap->filters->responses_for(ctx.identity.team, ctx.route->name)) {
        // An answer the filters cannot read (a stream sent as text/plain, a body that is no
        // chat.completion) or cannot scan is not sent unfiltered: it was generated, so it is
        // billed (counted above), and the caller gets a 502.
        auto* s = w.filter_scratch(*set);
        auto filtered = s ? filter_answer(ctx, *ctx.snap->filters, *set, *s, std::move(out)) : std::nullopt;
        if (!filtered) {
          ex.release();
          ctx.details = "unfilterable_answer";
          co_return make_failure(s ? errc::upstream_error : errc::internal,
                                 s ? "The upstream answer is no chat completion the content filters can read."
                                   : "Content filter scratch space could not be allocated.",
                                 "", s ? error_source::upstream : error_source::internal);
        }
        out = std::move(*filtered);
      }
    if (status / 100 == 2 && ctx.endpoint == endpoint_kind::chat_completions && answers_moderated(ctx)) {
      const std::optional<failure> stop = co_await moderate_answer(w, ctx, out);
      if (stop) {
        ex.release();
        co_return *stop;
      }
    }
    if (status / 100 != 2) {
      // Keep the upstream's error code for the log.
      boost::system::error_code jec;
      auto v = json::parse(out, jec);
      if (!jec && v.is_object())
        if (auto e = v.get_object().if_contains("error"); e && e->is_object())
          if (auto c = e->get_object().if_contains("code"); c && c->is_string()) ctx.error_code = std::string(c->get_string());
      if (ctx.error_code.empty()) ctx.error_code = "upstream_error";
    }
    header_list extra = passthrough_headers(ex.headers());
    // The head's storage goes back to the pool with the connection: keep the content type.
    // An error body is always ours, OpenAI-shaped JSON (an upstream proxy's text/html page is
    // wrapped): only a 2xx answer passed on keeps the upstream's type.
    std::string ct_kept;
    std::string_view content_type = "application/json";
    if (status / 100 == 2 && !ctx.answer_status && !ct.empty() && ct != content_type) content_type = ct_kept.assign(ct);
    ex.release();
    const unsigned answer = ctx.answer_status ? ctx.answer_status : status;
    // A provider's 429 passed on without a wait (Bedrock's ThrottlingException and Vertex's
    // RESOURCE_EXHAUSTED carry no Retry-After): the provider's own hint, else 1 s.
    if (answer == 429 &&
        std::none_of(extra.begin(), extra.end(), [](const auto& h) { return iequals(h.first, "retry-after"); }))
      extra.emplace_back("Retry-After", std::to_string(std::max<std::uint32_t>(1, ctx.upstream_retry_after_s)));
    co_await sink.send_full(answer, content_type, std::move(out), extra);
    co_return flow::responded;
  }
  if (last) co_return *last;
  if (refusal) co_return *refusal;
  co_return make_failure(errc::internal, "model has no targets", "", error_source::internal);
}

/// Phases 2–10 in table order.
awaitable<phase_result> run_phases(worker& w, request_context& ctx, response_sink& sink) {
  // Most calls are answered without the store (a key checked moments ago): no coroutine then.
  std::optional<phase_result> auth = w.policy().try_authenticate(ctx);
  if (!auth) auth = co_await w.policy().authenticate_with_store(ctx);
  if (!*auth || **auth == flow::responded) co_return std::move(*auth);
  if (auto r = providers::decode_request(ctx); !r) co_return r;
  ctx.route = ctx.snap->find_model(ctx.model);
  if (!ctx.route)
    co_return make_failure(errc::model_not_found,
                           "The model '" + ctx.model + "' does not exist or you do not have access to it.", "model");
  // The grant before the content filters: a prompt for a model the caller may not use is neither
  // scanned nor sent to a moderation endpoint (a paid call, outside the gateway).
  if (auto r = policy::engine::check_model_grant(ctx); !r) co_return r;
  if (const auto* f = ctx.snap->filters.get())
    if (const auto* set = f->prompts_for(ctx.identity.team, ctx.route->name)) {
      auto* s = w.filter_scratch(*set);
      if (!s) co_return make_failure(errc::internal, "content filter scratch space could not be allocated", "", error_source::internal);
      const auto blocked_by = filter_prompt(ctx, *f, *set, *s);
      if (!blocked_by.empty()) {
        ctx.details = "content_filtered";
        co_return make_failure(errc::content_filtered,
                               "The prompt was blocked by content filter rules: " + joined_rules(blocked_by) + ".",
                               "messages");
      }
    }
  // The moderation endpoint, after the local rules (a prompt they block costs no call).
  const content_filters* filters = ctx.snap->filters.get();
  if (filters && filters->moderation() && filters->moderation()->cfg.prompts) {
    auto texts = prompt_texts(ctx);
    if (!texts.empty()) {
      const moderation_result r = co_await moderate(w.pool(), *filters->moderation(), std::move(texts), ctx);
      if (moderation_stops(ctx, *filters, r, "prompt")) {
        if (r.what != moderation_result::outcome::flagged)
          co_return make_failure(errc::moderation_unavailable, "The moderation endpoint could not check the prompt.", "",
                                 error_source::upstream);
        ctx.details = "content_filtered";
        co_return make_failure(errc::content_filtered, flagged_message("prompt", r), "messages");
      }
    }
  }
  // A caller gone meanwhile (it left during the moderation call, or the drain's end cut it:
  // worker::close_all) is not admitted: nothing would read the answer.
  if (ctx.client_gone) co_return caller_gone();
  if (auto r = co_await w.policy().admit(ctx); !r || *r == flow::responded) co_return r;
  if (w.draining()) ctx.close_after = true;
  co_return co_await proxy(w, ctx, sink);
}

/// The only place failures become responses.
awaitable<void> fail(request_context& ctx, response_sink& sink, const failure& f) {
  if (f.code == errc::client_disconnected || ctx.client_gone) {
    ctx.client_gone = true;
    if (!ctx.response_started) ctx.status = 499;
    ctx.details = ctx.write_timed_out ? "caller_write_timeout" : "client_disconnected";
    co_return;
  }
  if (ctx.response_started) {
    // Mid-response: the status is gone; end the connection so the caller sees a broken answer.
    if (ctx.details.empty()) ctx.details = std::string(map_error(static_cast<errc>(f.code.value())).code);
    sink.abort();
    co_return;
  }
  errc e = f.code.category() == tollgate_category() ? static_cast<errc>(f.code.value()) : errc::internal;
  if (ctx.details.empty()) ctx.details = std::string(map_error(e).code);
  co_await answer_error(ctx, sink, e, f.message, f.param, f.headers);
}

/// Whether this request gets an audit record: every request on the caller listener but health
/// checks, and every admin API request (not /metrics or health checks).
bool audited(const request_context& ctx) {
  // On the admin listener: the admin API, and requests refused before their target was read.
  if (ctx.admin_listener) return ctx.path.empty() || ctx.path.starts_with("/admin/");
  return ctx.path != "/healthz" && ctx.path != "/readyz";
}

/// teams[].capture_text: the prompt as it left the gateway and the answer's text as the caller got
/// it; both are already content-filtered (prompts are redacted in place, answers on their way out).
audit::captured_text capture_of(const request_context& ctx, std::string_view body) {
  audit::captured_text t;
  for (std::string_view k : {"messages", "input", "prompt"})
    if (auto* v = ctx.request_json.if_contains(k)) {
      t.prompt_json = json::serialize(*v);
      break;
    }
  if (ctx.stream || body.empty()) {
    t.response = ctx.captured_response;
    return t;
  }
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) return t;
  if (auto* ch = v.get_object().if_contains("choices"); ch && ch->is_array())
    for (auto& c : ch->get_array())
      if (c.is_object())
        if (auto* m = c.get_object().if_contains("message"); m && m->is_object())
          if (auto* content = m->get_object().if_contains("content"); content && content->is_string())
            t.response.append(content->get_string());
  return t;
}

std::string audit_record_for(request_context& ctx, request_context::clock::time_point end, std::string_view body = {}) {
  if (ctx.admin_listener) return audit::admin_record(ctx, end);
  policy::fill_usage(ctx);
  std::int64_t cost = 0;
  if (policy::billable(ctx)) {
    if (const config::price_config* price = policy::served_price(*ctx.snap->cfg, ctx))
      cost = policy::cost_nano(*price, ctx.usage);
  }
  if (ctx.capture_text) {
    const auto text = capture_of(ctx, body);
    return audit::call_record(ctx, cost, end, &text);
  }
  return audit::call_record(ctx, cost, end);
}

/// A request that ended without a last byte (caller gone, reset): its record, without waiting.
void audit_unsealed(worker& w, request_context& ctx) {
  if (!w.audit() || ctx.audit_done || !audited(ctx)) return;
  ctx.audit_done = true;
  w.audit()->append(audit_record_for(ctx, request_context::clock::now()));
}

awaitable<void> run_api(worker& w, request_context& ctx, response_sink& sink) {
  if (auto* a = w.audit(); a && !a->healthy() && !a->fail_open()) {
    // Fail closed: no call runs while its record could not be kept.
    static const header_list retry{{"Retry-After", "1"}};
    ctx.details = "audit_unavailable";
    co_await answer_error(ctx, sink, errc::audit_unavailable,
                          "The gateway cannot write its audit trail; calls are refused until it can. Retry shortly.",
                          "", retry);
    log_request(w, ctx);
    co_return;
  }
  std::exception_ptr thrown;
  try {
    phase_result r = co_await run_phases(w, ctx, sink);
    if (!r) co_await fail(ctx, sink, r.error());
  } catch (...) {
    thrown = std::current_exception();  // (no co_await in a handler)
  }
  if (thrown) {
    // A bug (the session logs it, and closes the connection). The call still ends as every call
    // does: answered (500, or its stream cut), settled (left alone, the worker would renew its
    // lease and hold its slot and budget until a restart), logged and audited. A call billed
    // without a record is what the audit trail exists to rule out.
    ctx.close_after = true;
    ctx.details = "internal_error";
    try {
      if (ctx.response_started) sink.abort();
      else if (!ctx.client_gone)
        co_await answer_error(ctx, sink, errc::internal, "The gateway failed on this request; it has been logged.");
    } catch (...) {
      sink.abort();  // (the answer itself failed: the caller sees the connection close)
    }
    w.policy().settle(ctx, w.executor());
    log_request(w, ctx);
    std::rethrow_exception(thrown);
  }
  if (ctx.client_gone && ctx.details.empty()) ctx.details = ctx.write_timed_out ? "caller_write_timeout" : "client_disconnected";
  w.policy().settle(ctx, w.executor());
  log_request(w, ctx);
}

// Takes the body as a view: GCC 12 miscompiles string literals converted to a std::string
// coroutine parameter ("array used as initializer").
awaitable<void> answer_json(request_context&, response_sink& sink, unsigned status, std::string_view body) {
  co_await sink.send_full(status, "application/json", std::string(body));
}

json::object model_json(const model_route& m) {
  return {{"id", m.name}, {"object", "model"}, {"created", 0}, {"owned_by", m.targets.front().provider->name()}};
}

std::string models_body(const request_context& ctx) {
  json::array data;
  for (const model_route* m : ctx.snap->model_order)
    if (policy::engine::may_list(ctx, m->name)) data.push_back(model_json(*m));
  return json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}});
}

/// `GET /v1/models/{model}`: the model as /v1/models lists it, or 404 `model_not_found` alike for
/// a model that does not exist and one this caller may not use (its existence is not disclosed).
/// The id is percent-decoded, as SDKs encode it (`a%2Fb` for `a/b`); an unencoded `/` is kept.
awaitable<void> answer_model(request_context& ctx, response_sink& sink, std::string_view encoded) {
  if (ctx.path_masked) {
    // (A key-shaped id was masked to another id: never looked up, and never echoed.)
    co_await answer_error(ctx, sink, errc::model_not_found,
                          "The model in the URL does not exist or you do not have access to it.", "model");
    co_return;
  }
  auto decoded = boost::urls::make_pct_string_view(encoded);
  if (!decoded) {
    co_await answer_error(ctx, sink, errc::bad_request, "The model id in the URL is not valid percent-encoding.", "model");
    co_return;
  }
  const std::string id = decoded->decode();
  const model_route* m = ctx.snap->find_model(id);
  if (!m || !policy::engine::may_list(ctx, m->name)) {
    // (Decoded bytes may be no UTF-8 at all, %FF: the error body replaces them, as any echo.)
    co_await answer_error(ctx, sink, errc::model_not_found,
                          "The model '" + id + "' does not exist or you do not have access to it.", "model");
    co_return;
  }
  ctx.route = m;
  const std::string body = json::serialize(model_json(*m));
  co_await answer_json(ctx, sink, 200, body);
}

}  // namespace

bool audit_pending(worker& w, const request_context& ctx) { return w.audit() && !ctx.audit_done && audited(ctx); }

awaitable<bool> seal_audit(worker& w, request_context& ctx, unsigned status, std::string_view body) {
  if (!audit_pending(w, ctx)) co_return true;
  audit::audit_log* a = w.audit();
  ctx.audit_done = true;
  ctx.status = status;
  std::string rec = audit_record_for(ctx, request_context::clock::now(), body);
  // Batched durability does not wait; nor do the 503s of a failing audit trail (they would wait
  // on the very disk that fails).
  if (!a->strict() || ctx.error_code == "audit_unavailable") {
    a->append(std::move(rec));
    co_return true;
  }
  const bool ok = co_await a->async_append(std::move(rec), net::use_awaitable_t<base_executor_t>{});
  if (ok || a->fail_open()) co_return true;
  ctx.details = "audit_unavailable";
  co_return false;
}

namespace {
/// passthrough_headers() over any list of fields with name(), name_string() and value().
template <class Fields>
header_list passthrough_headers_of(const Fields& upstream) {
  // Known fields compare by Beast's field enum (no string work); the rest by name.
  auto dropped = [](const auto& f) {
    switch (f.name()) {
      case http::field::connection:
      case http::field::keep_alive:
      case http::field::proxy_connection:
      case http::field::transfer_encoding:
      case http::field::te:
      case http::field::trailer:
      case http::field::upgrade:
      case http::field::proxy_authenticate:
      case http::field::proxy_authorization:
      case http::field::content_length:
      case http::field::content_type:
      case http::field::date:
      case http::field::server:
      case http::field::set_cookie:
      case http::field::strict_transport_security:
      // The provider's to its client, the gateway: a challenge for the gateway's credentials (a
      // 401 is the caller's 502), a redirect, the gateway's account.
      case http::field::www_authenticate:
      case http::field::location:
      // The gateway reads and rewrites every body it relays: never the upstream's encoding.
      case http::field::content_encoding:
        return true;
      case http::field::unknown: {
        auto n = f.name_string();
        return iequals(n, "alt-svc") || iequals(n, "cf-ray") || iequals(n, "cf-cache-status") || iequals(n, "x-request-id") ||
               iequals(n, "openai-organization") || iequals(n, "openai-project");
      }
      default:
        return false;
    }
  };
  std::vector<std::string_view> named_by_connection;
  for (const auto& f : upstream)
    if (f.name() == http::field::connection)
      text::for_each_item(f.value(), [&](std::string_view tok) {
        if (!tok.empty()) named_by_connection.push_back(tok);
        return true;
      });
  header_list out;
  std::size_t kept = 0;  // counted first: one allocation, not one per doubling (none if nothing passes)
  for (const auto& f : upstream) kept += f.name() == http::field::unknown || !dropped(f);  // an upper bound
  out.reserve(kept);
  for (auto& f : upstream) {
    if (dropped(f)) {
      if (f.name() == http::field::unknown && iequals(f.name_string(), "x-request-id"))
        out.emplace_back("x-upstream-request-id", std::string(f.value()));
      continue;
    }
    bool named = false;
    for (auto n : named_by_connection) named = named || iequals(f.name_string(), n);
    if (!named) out.emplace_back(std::string(f.name_string()), std::string(f.value()));
  }
  return out;
}
}  // namespace

header_list passthrough_headers(const http::fields& upstream) { return passthrough_headers_of(upstream); }
header_list passthrough_headers(std::span<const upstream_field> upstream) { return passthrough_headers_of(upstream); }

awaitable<void> answer_error(request_context& ctx, response_sink& sink, errc code, std::string_view message,
                             std::string_view param, const header_list& extra) {
  auto m = map_error(code);
  ctx.error_code = std::string(m.code);
  co_await sink.send_full(m.status, "application/json", openai_error_body(message, m.type, param, m.code), extra);
}

void log_request(worker& w, request_context& ctx) {
  auto& m = gateway_metrics::get();
  const void* const provider_id = ctx.target ? static_cast<const void*>(ctx.target->provider) : nullptr;
  auto& cache = w.request_cells_for(ctx.snap);
  const worker::request_cells_key key{ctx.route, provider_id, int(ctx.endpoint), ctx.status};
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (cache.size() > 4096) cache.clear();  // bound memory (statuses times routes)
    it = cache.emplace(key, worker::request_cells{}).first;
  }
  // Each cell is found the first time this combination needs it (a series appears in /metrics
  // only once it counts something, as before).
  worker::request_cells& c = it->second;
  const auto model = [&] { return ctx.route ? std::string_view(ctx.route->name) : std::string_view(); };
  const auto provider = [&] { return ctx.target ? std::string_view(ctx.target->provider->name()) : std::string_view(); };
  if (!c.requests) {
    const std::string status = std::to_string(ctx.status);
    c.requests = &m.requests.counter({endpoint_label(ctx.endpoint), model(), provider(), status});
    c.duration = &m.request_duration.histogram({endpoint_label(ctx.endpoint), model(), provider()});
  }
  c.requests->inc();
  const auto took = request_context::clock::now() - ctx.start;
  m.request_duration.observe(*c.duration, std::chrono::duration<double>(took).count());
  if ((ctx.endpoint == endpoint_kind::chat_completions || ctx.endpoint == endpoint_kind::embeddings) &&
      (!ctx.target || !ctx.target->provider->is_local())) {
    if (!c.overhead) c.overhead = &m.overhead.histogram({endpoint_label(ctx.endpoint), provider()});
    m.overhead.observe(*c.overhead, std::chrono::duration<double>(took - ctx.upstream_wait).count());
  }
  if (ctx.stream && ctx.first_byte != request_context::clock::time_point{}) {
    if (!c.ttft) c.ttft = &m.ttft.histogram({model(), provider()});
    m.ttft.observe(*c.ttft, std::chrono::duration<double>(ctx.first_byte - ctx.start).count());
  }
  if (ctx.usage.prompt) {
    if (!c.prompt_tokens) c.prompt_tokens = &m.tokens.counter({model(), provider(), "prompt"});
    c.prompt_tokens->inc(double(ctx.usage.prompt));
  }
  if (ctx.usage.completion) {
    if (!c.completion_tokens) c.completion_tokens = &m.tokens.counter({model(), provider(), "completion"});
    c.completion_tokens->inc(double(ctx.usage.completion));
  }
  audit_unsealed(w, ctx);
  w.log().append(w.log_buffer(), ctx);
}

awaitable<void> handle_caller_request(worker& w, request_context& ctx, response_sink& sink) {
  const bool post = ctx.method == "POST", get = ctx.method == "GET";
  if (ctx.path == "/v1/chat/completions" || ctx.path == "/v1/embeddings") {
    ctx.endpoint = ctx.path == "/v1/embeddings" ? endpoint_kind::embeddings : endpoint_kind::chat_completions;
    if (!post) {
      static const header_list allow{{"Allow", "POST"}};
      co_await answer_error(ctx, sink, errc::method_not_allowed, "Use POST for " + ctx.path + ".", "", allow);
    } else if (w.draining()) {
      ctx.close_after = true;
      static const header_list retry{{"Retry-After", "1"}};
      co_await answer_error(ctx, sink, errc::shutting_down, "The gateway is shutting down; retry on another instance.", "",
                            retry);
    } else {
      co_await run_api(w, ctx, sink);
      co_return;
    }
  } else if (ctx.path == "/v1/models") {
    ctx.endpoint = endpoint_kind::models;
    static const header_list allow{{"Allow", "GET"}};
    if (!get) co_await answer_error(ctx, sink, errc::method_not_allowed, "Use GET for /v1/models.", "", allow);
    else if (auto r = co_await w.policy().authenticate(ctx); !r) {
      co_await fail(ctx, sink, r.error());
    } else {
      std::string body = models_body(ctx);
      co_await answer_json(ctx, sink, 200, body);
    }
  } else if (ctx.path.starts_with("/v1/models/")) {
    ctx.endpoint = endpoint_kind::models;
    static const header_list allow{{"Allow", "GET"}};
    if (!get) co_await answer_error(ctx, sink, errc::method_not_allowed, "Use GET for /v1/models/{model}.", "", allow);
    else if (auto r = co_await w.policy().authenticate(ctx); !r) co_await fail(ctx, sink, r.error());
    else co_await answer_model(ctx, sink, std::string_view(ctx.path).substr(std::string_view("/v1/models/").size()));
  } else if (ctx.path == "/healthz") {
    co_await answer_json(ctx, sink, 200, R"({"status":"ok"})");
  } else if (ctx.path == "/readyz") {
    if (w.draining()) co_await answer_json(ctx, sink, 503, R"({"status":"draining"})");
    else co_await answer_json(ctx, sink, 200, R"({"status":"ready"})");
  } else {
    co_await answer_error(ctx, sink, errc::not_found, "Unknown request URL: " + ctx.method + " " + ctx.path + ".");
  }
  log_request(w, ctx);
}

awaitable<void> handle_admin_request(worker& w, request_context& ctx, response_sink& sink) {
  if (ctx.path == "/metrics" && ctx.method == "GET") {
    co_await sink.send_full(200, "text/plain; version=0.0.4; charset=utf-8", gateway_metrics::get().registry.expose());
  } else if (ctx.path == "/healthz") {
    co_await answer_json(ctx, sink, 200, R"({"status":"ok"})");
  } else if (ctx.path == "/readyz") {
    if (w.draining()) co_await answer_json(ctx, sink, 503, R"({"status":"draining"})");
    else co_await answer_json(ctx, sink, 200, R"({"status":"ready"})");
  } else if (ctx.path.starts_with("/admin/")) {
    co_await handle_admin_api(w, ctx, sink);
    audit_unsealed(w, ctx);
  } else {
    co_await answer_error(ctx, sink, errc::not_found, "Unknown admin URL: " + ctx.method + " " + ctx.path + ".");
  }
}

}  // namespace tollgate::gateway
