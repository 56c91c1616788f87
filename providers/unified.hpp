// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The caller-facing (OpenAI-shaped) request: decoding, validation and token estimates. Pure.
#include <cstdint>
#include <string_view>

#include "gateway/core/error.hpp"
#include "gateway/core/request_context.hpp"
#include "gateway/core/tokens.hpp"

namespace tollgate::providers {

/// Parses ctx.body for ctx.endpoint into ctx.request_json and fills model, stream,
/// caller_wants_usage, prompt_estimate and max_output_tokens. A failure names the bad field in
/// `param` (400 invalid_json / invalid_type / missing_required_parameter / invalid_value).
phase_result decode_request(request_context& ctx);

}  // namespace tollgate::providers
