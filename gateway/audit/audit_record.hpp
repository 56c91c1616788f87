// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The audit records the gateway writes (docs/audit.md lists every field). Pure functions of the
/// request context: testable without a writer. A record never holds a secret, a digest of one, or
/// prompt or response text.
#include <cstdint>
#include <string>

#include "gateway/core/request_context.hpp"

namespace tollgate::audit {

/// `{"type":"call",...}` for a request on the caller listener: who (team, key id or mTLS
/// identity), from where, which model and provider, the outcome, usage, cost and timings.
/// `cost_nano` is the call's cost in nano-USD; `end` is when its last byte is about to go out.
/// `text`, when given (teams[].capture_text), adds `prompt` (the request's messages or input, as
/// JSON) and `response` (the answer's text).
struct captured_text {
  std::string prompt_json;
  std::string response;
};
std::string call_record(const request_context& ctx, std::int64_t cost_nano, request_context::clock::time_point end,
                        const captured_text* text = nullptr);

/// `{"type":"admin",...}` for a request on the admin API: the admin token's name, the action, its
/// target and the outcome.
std::string admin_record(const request_context& ctx, request_context::clock::time_point end);

}  // namespace tollgate::audit
