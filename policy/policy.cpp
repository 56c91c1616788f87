// SPDX-License-Identifier: Apache-2.0
#include "policy/policy.hpp"

#include "gateway/core/tokens.hpp"

namespace tollgate::policy {

phase_result authenticate(request_context& ctx) {
  ctx.identity = caller_identity{};
  return flow::next;
}

phase_result admit(request_context&) { return flow::next; }

void settle(request_context& ctx) noexcept {
  if (ctx.usage.reported) return;
  if (ctx.endpoint != endpoint_kind::chat_completions && ctx.endpoint != endpoint_kind::embeddings) return;
  // Only answers the provider produced are billed: a refused connect or an error status is not.
  if (!ctx.upstream_answered || ctx.status / 100 != 2) return;
  ctx.usage.prompt = ctx.prompt_estimate;
  ctx.usage.completion = estimate_tokens_from_chars(ctx.relayed_completion_chars);
}

}  // namespace tollgate::policy
