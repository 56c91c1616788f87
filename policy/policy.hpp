// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The policy phases of the pipeline. Each is called exactly once per request, in this order:
///  - authenticate(): after the request is read; sets ctx.identity. May refuse (401/403).
///  - admit(): after routing; reserves rate-limit and budget capacity. May refuse (429) or answer.
///  - settle(): after the response (success or failure); commits actual usage, releases
///    reservations. Never fails the request; counts and logs its own errors.
/// Today only the usage accounting of settle() does work: keys, limits and budgets arrive with
/// the callers/limits issue and plug in here without touching the pipeline.
#include "gateway/core/error.hpp"
#include "gateway/core/request_context.hpp"

namespace tollgate::policy {

/// Anonymous callers are admitted while no key store is configured.
phase_result authenticate(request_context& ctx);

/// Admits everything while no limits are configured.
phase_result admit(request_context& ctx);

/// Fills usage for calls whose provider reported none: prompt from the estimate, completion
/// counted from what was relayed to the caller (streams that ended early are still billed).
void settle(request_context& ctx) noexcept;

}  // namespace tollgate::policy
