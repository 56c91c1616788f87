// SPDX-License-Identifier: Apache-2.0
#pragma once
/// `mock`: a built-in deterministic model. Same request, same answer; usage is exact for what it
/// generates (one word = one token). Configurable time to first token, pacing, and faults
/// (error status, reset mid-stream, stall) for fault tests and load tests. No network.
#include "gateway/core/provider.hpp"

namespace tollgate::providers {

class mock_adapter final : public provider_adapter {
 public:
  using provider_adapter::provider_adapter;
  bool is_local() const override { return true; }
  awaitable<void> serve(request_context& ctx, response_sink& sink) const override;

  /// The words the mock answers for a prompt (pure; exposed for tests).
  static std::vector<std::string_view> words_for(std::string_view prompt, std::size_t count);
  /// The embedding vector for one input (pure; unit-length, deterministic).
  static std::vector<float> embedding_for(std::string_view input, unsigned dimensions);
};

}  // namespace tollgate::providers
