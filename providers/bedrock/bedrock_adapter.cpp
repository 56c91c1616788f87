// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/bedrock_adapter.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <strings.h>

#include <array>
#include <charconv>
#include <chrono>
#include <stdexcept>

#include "gateway/core/error.hpp"
#include "gateway/core/sse.hpp"
#include "providers/common/relayed_text.hpp"
#include "providers/bedrock/converse.hpp"
#include "providers/bedrock/event_stream.hpp"

namespace tollgate::providers {
namespace json = boost::json;
using namespace std::chrono;

namespace {

bedrock::completion_meta meta_of(const request_context& ctx) {
  return {"chatcmpl-" + ctx.id_hex, duration_cast<seconds>(system_clock::now().time_since_epoch()).count(), ctx.model};
}

void record_usage(request_context& ctx, const bedrock::converse_usage& u) {
  ctx.usage.prompt = u.prompt_tokens();
  ctx.usage.completion = u.completion_tokens();
  ctx.usage.cached = u.cache_read_tokens;
  ctx.usage.cache_write = u.cache_write_tokens;
  ctx.usage.reported = true;
}


/// ConverseStream (binary event stream) → OpenAI SSE chunks, incrementally.
class bedrock_stream final : public stream_translator {
 public:
  explicit bedrock_stream(request_context& ctx) : ctx_(ctx), tr_(meta_of(ctx)) {}

  void feed(std::string_view bytes, std::string& out) override {
    if (done_ || failed_) return;
    messages_.clear();
    const bool ok = dec_.feed(bytes, messages_);
    for (auto& m : messages_) {
      if (failed_) break;
      on_message(m, out);
    }
    if (!ok && !failed_) fail(out, "upstream_error", "The Bedrock event stream is corrupt: " + dec_.error_text() + ".");
  }

  void finish(bool complete, std::string_view why, std::string& out) override {
    if (done_ || failed_) return;
    if (!complete || !dec_.finish()) {
      fail(out, why == "timeout" ? "upstream_timeout" : "upstream_error",
           "The upstream stream ended unexpectedly: " + std::string(complete ? "inside an event" : why) + ".");
      return;
    }
    if (!tr_.finished()) {  // closed cleanly between events, but before the answer's end
      fail(out, "upstream_error", "The Bedrock stream ended before its messageStop event.");
      return;
    }
    if (tr_.usage() && ctx_.caller_wants_usage)
      out += sse::format_data(json::serialize(bedrock::make_usage_chunk(tr_.meta(), *tr_.usage())));
    out += "data: [DONE]\n\n";
    done_ = true;
  }

  bool failed() const override { return failed_; }

 private:
  void on_message(const aws::message& m, std::string& out) {
    bedrock::stream_step step;
    switch (m.kind()) {
      case aws::message_kind::event: step = tr_.on_event_text(m.event_type(), m.payload); break;
      case aws::message_kind::exception:
        // Named: its own mapping (throttlingException, validationException, ...). Unnamed, still
        // the stream's end with an error: read as an event of no type, it was ignored, and the
        // stream then failed as cut off before messageStop, hiding what Bedrock said.
        step = tr_.on_event_text(m.exception_type().empty() ? std::string_view("internalServerException") : m.exception_type(),
                                 m.payload);
        break;
      default: {
        // `error` messages (and unknown kinds, as the AWS SDKs treat them) end the stream.
        const std::string code(m.error_code().empty() ? "InternalServerException" : m.error_code());
        step.error = bedrock::map_bedrock_error(code, m.error_message());
      }
    }
    failed_ = emit_translated_step(
        ctx_, step, out, [&](const bedrock::converse_usage& u) { record_usage(ctx_, u); },
        [](const bedrock::upstream_error& e) { return bedrock::to_openai_error_body(e); });
  }

  void fail(std::string& out, std::string_view code, const std::string& message) {
    failed_ = true;
    emit_stream_failure(ctx_, out, code, message);
  }

  request_context& ctx_;
  aws::decoder dec_;
  bedrock::converse_stream_translator tr_;
  std::vector<aws::message> messages_;
  bool done_ = false;
  bool failed_ = false;
};

}  // namespace

bedrock_adapter::bedrock_adapter(const config::provider_config& cfg)
    : provider_adapter(cfg), peer_(make_upstream_peer(cfg)) {
  aws::credentials_config cc{cfg.aws_access_key_id, cfg.aws_secret_access_key, cfg.aws_session_token, cfg.aws_profile,
                             cfg.aws_shared_credentials_file};
  auto r = aws::resolve_credentials(cc, aws::system_credentials_inputs());
  if (!r) throw std::invalid_argument("AWS credentials: " + r.error().message);
  creds_ = r->creds;
  host_header_ = peer_.host;
  if (!((peer_.scheme == "https" && peer_.port == "443") || (peer_.scheme == "http" && peer_.port == "80")))
    host_header_ += ":" + peer_.port;
}

std::string bedrock_adapter::path_for(std::string_view model_id, std::string_view operation) {
  // The id as one path segment ('/' and ':' of ARNs and versions percent-encoded once).
  return "/model/" + aws::uri_encode(model_id, false) + "/" + std::string(operation);
}

result<upstream_request> bedrock_adapter::encode(request_context& ctx) const {
  const std::string& model_id = ctx.target->upstream_model;
  upstream_request r = request_to(peer_, cfg_);
  std::string_view operation;
  if (ctx.endpoint == endpoint_kind::embeddings) {
    auto calls = bedrock::to_embedding_calls(ctx.request_json, model_id);
    if (!calls || calls->bodies.size() != 1) {
      ctx.reject_message = calls ? "This Bedrock embedding model takes one input per request; send the inputs one by one."
                                 : calls.error().message;
      ctx.reject_param = calls ? "input" : calls.error().param;
      return make_error_code(errc::invalid_value);
    }
    r.body = json::serialize(calls->bodies.front());
    operation = "invoke";
  } else {
    apply_output_cap(ctx, "max_tokens");  // (as inferenceConfig.maxTokens)
    auto body = bedrock::to_converse_request(ctx.request_json);
    if (!body) {
      ctx.reject_message = body.error().message;
      ctx.reject_param = body.error().param;
      return make_error_code(errc::invalid_value);
    }
    r.body = json::serialize(*body);
    operation = ctx.stream ? "converse-stream" : "converse";
  }
  const std::string path = path_for(model_id, operation);
  r.target = peer_.base_path + path;
  const std::string_view accept = ctx.stream ? "application/vnd.amazon.eventstream" : "application/json";
  const std::array<aws::header_view, 3> to_sign{aws::header_view{"host", host_header_},
                                                aws::header_view{"content-type", "application/json"},
                                                aws::header_view{"accept", accept}};
  aws::http_request_view req{"POST", r.target, "", to_sign, r.body, std::nullopt};
  const aws::signing_scope scope{cfg_.region, aws::bedrock_signing_name, floor<seconds>(system_clock::now())};
  auto s = aws::sign_request(creds_, scope, req);
  if (!s) return make_error_code(errc::internal);
  r.headers.reserve(6 + cfg_.headers.size());
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Accept", std::string(accept));
  for (auto& h : s->headers_to_add) r.headers.emplace_back(h.name, h.value);
  r.headers.emplace_back("Authorization", s->authorization);
  for (auto& h : cfg_.headers) r.headers.push_back(h);
  return r;
}

std::unique_ptr<stream_translator> bedrock_adapter::make_stream_translator(request_context& ctx) const {
  return std::make_unique<bedrock_stream>(ctx);
}

std::string bedrock_adapter::decode_body(request_context& ctx, unsigned status, std::string body) const {
  if (status / 100 != 2) {
    std::string_view type;
    for (auto& [name, value] : ctx.upstream_error_headers)
      if (name.size() == 16 && strncasecmp(name.c_str(), "x-amzn-errortype", 16) == 0) type = value;
    const auto e = bedrock::map_bedrock_http_error(status, type, body);
    ctx.answer_status = e.status;
    return json::serialize(bedrock::to_openai_error_body(e));
  }
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ctx.endpoint == endpoint_kind::embeddings) {
    auto calls = bedrock::to_embedding_calls(ctx.request_json, ctx.target->upstream_model);
    if (!ec && calls) {
      // Cohere's input token count comes only in a header (the pipeline keeps it for embeddings).
      std::optional<std::uint64_t> counted;
      if (std::uint64_t n = 0; !ctx.upstream_input_tokens.empty() &&
                               std::from_chars(ctx.upstream_input_tokens.data(),
                                               ctx.upstream_input_tokens.data() + ctx.upstream_input_tokens.size(), n)
                                       .ec == std::errc{})
        counted = n;
      std::array<bedrock::invoke_response, 1> one{bedrock::invoke_response{std::move(v), counted}};
      if (auto e = bedrock::to_openai_embeddings(*calls, one, ctx.model)) {
        ctx.usage.prompt = e->prompt_tokens;
        ctx.usage.reported = e->tokens_reported;
        return json::serialize(e->body);
      }
    }
  } else if (!ec) {
    if (auto c = bedrock::to_chat_completion(v, meta_of(ctx))) {
      if (c->usage) record_usage(ctx, *c->usage);
      if (ctx.capture_text) ctx.captured_response.clear();  // the whole answer's text is read from the body
      return json::serialize(c->body);
    }
    // An answer the gateway cannot translate was still generated and charged: its own usage, when
    // it has one, is billed rather than the prompt estimate alone.
    if (v.is_object())
      if (const auto* u = v.get_object().if_contains("usage"))
        if (auto usage = bedrock::parse_usage(*u)) record_usage(ctx, *usage);
  }
  ctx.details = "upstream_invalid_response";
  ctx.answer_status = 502;
  return openai_error_body("Bedrock answered a body the gateway could not read.", "server_error", "",
                           "invalid_upstream_response");
}

}  // namespace tollgate::providers
