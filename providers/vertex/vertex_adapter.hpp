// SPDX-License-Identifier: Apache-2.0
#pragma once
/// `vertex`: Gemini on Google Vertex AI behind the unified API. Chat through `:generateContent`
/// and `:streamGenerateContent?alt=sse` (regional or global host), embeddings through `:predict`;
/// requests and answers translated by providers/vertex/gemini. Auth: an OAuth token from a
/// service-account key (JWT assertion exchanged at the key's token_uri) or from the metadata
/// server, kept fresh by a background token_source; a request that arrives before the first
/// token answers 502 with the reason.
#include <memory>

#include "gateway/core/provider.hpp"
#include "providers/common/token_source.hpp"

namespace tollgate::providers {

/// The translator make_stream_translator returns: streamGenerateContent?alt=sse reads in, the
/// caller's OpenAI SSE out (usage recorded in `ctx`). Needs no adapter, hence no credentials.
std::unique_ptr<stream_translator> make_vertex_stream_translator(request_context& ctx);

class vertex_adapter final : public provider_adapter {
 public:
  /// Throws std::invalid_argument (config load) for a bad endpoint or unusable credentials.
  explicit vertex_adapter(const config::provider_config& cfg);

  result<upstream_request> encode(request_context& ctx) const override;
  std::unique_ptr<stream_translator> make_stream_translator(request_context& ctx) const override;
  std::string decode_body(request_context& ctx, unsigned status, std::string body) const override;

 private:
  upstream_peer peer_;
  bool google_host_;  ///< no endpoint configured: peer_ is Google's host for the location
  std::shared_ptr<oauth::token_source> token_;  ///< shared across reloads (token_source::shared)
};

}  // namespace tollgate::providers
