// SPDX-License-Identifier: Apache-2.0
#pragma once
/// `azure_openai`: Azure OpenAI deployments behind the unified API. The route's upstream_model is
/// the deployment name. Dated API (`api_version: 2024-10-21`):
/// `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`; v1 API
/// (`api_version: v1`): `{endpoint}/openai/v1/chat/completions` with the deployment as `model`.
/// The key goes in the `api-key` header; with `entra:` a Microsoft Entra ID token (client
/// credentials, kept fresh by a background oauth::token_source) goes in `Authorization: Bearer`. Azure's answers are OpenAI's chunk and body format plus
/// content-filter annotations (`prompt_filter_results`, per-choice `content_filter_results`, a
/// first stream chunk with empty `choices`), which pass through; its error bodies (`type` null,
/// `code` "429" as a string, the 400 `content_filter` body) are normalised to OpenAI's shape.
#include <memory>

#include "gateway/core/provider.hpp"
#include "providers/common/token_source.hpp"

namespace tollgate::providers {

class azure_openai_adapter final : public provider_adapter {
 public:
  /// Throws std::invalid_argument for an endpoint that is not an http(s) URL (config load only).
  explicit azure_openai_adapter(const config::provider_config& cfg);

  result<upstream_request> encode(request_context& ctx) const override;
  std::unique_ptr<stream_translator> make_stream_translator(request_context& ctx) const override;
  std::string decode_body(request_context& ctx, unsigned status, std::string body) const override;

  /// Whether Azure accepts `stream_options` at this API version: from 2024-09-01-preview (and the
  /// GA 2024-10-21) on, and in the v1 API. Older versions answer 400 "Unrecognized request
  /// argument supplied: stream_options", so the member is left out and such streams are billed
  /// from their counted output. Pure.
  static bool accepts_stream_options(std::string_view api_version);

  /// The request target (path and query) for a deployment and endpoint kind. Pure.
  static std::string target_for(std::string_view base_path, std::string_view api_version, std::string_view deployment,
                                endpoint_kind endpoint);

 private:
  upstream_peer peer_;
  std::shared_ptr<oauth::token_source> entra_;  ///< null with an api_key; shared across reloads
  bool stream_usage_;                           ///< accepts_stream_options(api_version)
};

}  // namespace tollgate::providers
