// SPDX-License-Identifier: Apache-2.0
#include "providers/azure/azure_openai_adapter.hpp"

#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "gateway/core/error.hpp"
#include "providers/openai/openai_compatible_adapter.hpp"

namespace tollgate::providers {

azure_openai_adapter::azure_openai_adapter(const config::provider_config& cfg)
    : provider_adapter(cfg), peer_(make_upstream_peer(cfg)), stream_usage_(accepts_stream_options(cfg.api_version)) {
  if (!cfg.entra_tenant_id.empty())
    entra_ = oauth::token_source::for_entra(cfg.entra_authority, cfg.entra_tenant_id, cfg.entra_client_id,
                                            cfg.entra_client_secret, cfg.entra_scope);
}

bool azure_openai_adapter::accepts_stream_options(std::string_view api_version) {
  // Dated versions compare as strings: "2024-09-01-preview" >= "2024-09-01" > "2024-08-01-preview".
  return api_version == "v1" || api_version >= std::string_view("2024-09-01");
}

std::string azure_openai_adapter::target_for(std::string_view base_path, std::string_view api_version,
                                             std::string_view deployment, endpoint_kind endpoint) {
  const std::string_view op = endpoint == endpoint_kind::embeddings ? "/embeddings" : "/chat/completions";
  std::string t(base_path);
  if (api_version == "v1") return t.append("/openai/v1").append(op);
  // A deployment name is letters, digits, '-', '_' and '.', but never trust it into a path.
  t.append("/openai/deployments/").append(boost::urls::encode(deployment, boost::urls::unreserved_chars));
  return t.append(op).append("?api-version=").append(boost::urls::encode(api_version, boost::urls::unreserved_chars));
}

result<upstream_request> azure_openai_adapter::encode(request_context& ctx) const {
  std::optional<std::string> bearer;
  if (entra_) {
    bearer = entra_->authorization();
    if (!bearer) {
      ctx.reject_status = 502;
      ctx.reject_message = "The gateway has no Entra ID token for Azure OpenAI yet (" + entra_->last_error() + "). Retry shortly.";
      return make_error_code(errc::upstream_error);
    }
  }
  upstream_request r = request_to(peer_, cfg_);
  const std::string& deployment = ctx.target->upstream_model;
  r.target = target_for(peer_.base_path, cfg_.api_version, deployment, ctx.endpoint);
  // max_completion_tokens from the same API versions as stream_options (o-series deployments
  // refuse max_tokens); the older ones know only max_tokens.
  apply_output_cap(ctx, stream_usage_ ? "max_completion_tokens" : "max_tokens");
  r.body = encode_openai_body(ctx, deployment, stream_usage_);
  r.headers.reserve(4 + cfg_.headers.size());
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Accept", ctx.stream ? "text/event-stream" : "application/json");
  if (bearer) r.headers.emplace_back("Authorization", std::move(*bearer));
  else r.headers.emplace_back("api-key", cfg_.api_key);
  for (auto& h : cfg_.headers) r.headers.push_back(h);
  return r;
}

std::unique_ptr<stream_translator> azure_openai_adapter::make_stream_translator(request_context& ctx) const {
  return make_openai_stream_translator(ctx);
}

std::string azure_openai_adapter::decode_body(request_context& ctx, unsigned status, std::string body) const {
  return decode_openai_body(ctx, status, std::move(body));
}

}  // namespace tollgate::providers
