// SPDX-License-Identifier: Apache-2.0
#pragma once
/// `openai_compatible`: OpenAI itself and local servers (vLLM, llama.cpp, Ollama, TGI). The body
/// passes through with `model` rewritten; streams always ask for usage
/// (`stream_options.include_usage`) and hide it again when the caller did not ask for it.
#include "gateway/core/provider.hpp"

namespace tollgate::providers {

class openai_compatible_adapter final : public provider_adapter {
 public:
  /// Throws std::invalid_argument for a base_url that is not an http(s) URL (config load only).
  explicit openai_compatible_adapter(const config::provider_config& cfg);

  result<upstream_request> encode(request_context& ctx) const override;
  std::unique_ptr<stream_translator> make_stream_translator(request_context& ctx) const override;
  std::string decode_body(request_context& ctx, unsigned status, std::string body) const override;

 private:
  upstream_peer peer_;
};

/// The OpenAI stream translator (SSE in, SSE out; usage read and hidden as the caller asked),
/// shared by every adapter whose upstream speaks OpenAI's chunk format (Azure OpenAI too).
std::unique_ptr<stream_translator> make_openai_stream_translator(request_context& ctx);

/// A whole OpenAI-shaped answer: usage read from a success, error bodies normalised.
std::string decode_openai_body(request_context& ctx, unsigned status, std::string body);

/// Sets `model` and, for streams, `stream_options.include_usage` (always asked for, so streams are
/// billed exactly; hidden again from a caller who did not ask), then serialises the body. With
/// `ask_usage` false (an upstream that refuses the member) a stream's `stream_options` is removed
/// instead, and the stream is billed from its counted output.
std::string encode_openai_body(request_context& ctx, std::string_view model, bool ask_usage = true);

/// Rewrites an error body from any OpenAI-compatible server into OpenAI's shape
/// `{"error":{"message","type","param","code"}}` (code always a string or null). Pure.
std::string normalize_error_body(unsigned status, std::string_view body);

/// Finds the top-level `"usage": {...}` of a complete response body and reads it, parsing only
/// that object. False when there is none.
bool scan_usage(std::string_view body, usage_counts& out);

/// Reads OpenAI `usage` into counts (a count the object lacks keeps its value in `out`); false
/// when `v` is not a usage object.
bool read_usage(const boost::json::value& v, usage_counts& out);

}  // namespace tollgate::providers
