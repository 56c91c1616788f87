// SPDX-License-Identifier: Apache-2.0
#pragma once
/// `bedrock`: Amazon Bedrock Runtime behind the unified API. Chat goes through Converse
/// (`POST /model/{modelId}/converse`) and ConverseStream (`/converse-stream`, a binary
/// `application/vnd.amazon.eventstream` answer decoded incrementally and re-emitted as OpenAI SSE
/// chunks); embeddings through InvokeModel (Titan Text Embeddings v2, Cohere Embed). Every
/// request is signed with SigV4 (signing name `bedrock`; the model id, percent-encoded once in
/// the path, is encoded again in the canonical request). Credentials are resolved at config load:
/// the provider's keys, else the environment, else the shared credentials file.
#include "gateway/core/provider.hpp"
#include "providers/bedrock/sigv4.hpp"

namespace tollgate::providers {

class bedrock_adapter final : public provider_adapter {
 public:
  /// Throws std::invalid_argument (config load) for a bad endpoint or when no credentials are found.
  explicit bedrock_adapter(const config::provider_config& cfg);

  result<upstream_request> encode(request_context& ctx) const override;
  std::unique_ptr<stream_translator> make_stream_translator(request_context& ctx) const override;
  std::string decode_body(request_context& ctx, unsigned status, std::string body) const override;

  /// `/model/<id percent-encoded>/<operation>`. Pure.
  static std::string path_for(std::string_view model_id, std::string_view operation);

 private:
  upstream_peer peer_;
  aws::credentials creds_;
  std::string host_header_;  ///< as the upstream client sends it (host, or host:port)
};

}  // namespace tollgate::providers
