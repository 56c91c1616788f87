// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Serialises a response head in one contiguous string. Beast's serializer hands the kernel one
/// iovec per status word, field name, separator and value; one buffer is cheaper on every
/// response. Pure.
#include <optional>
#include <string>
#include <string_view>

#include "gateway/core/request_context.hpp"

namespace tollgate::gateway {

struct response_head {
  unsigned status = 200;
  std::string_view content_type;
  std::string_view request_id;
  const header_list* extra = nullptr;
  std::optional<std::size_t> content_length;  ///< unset: chunked (HTTP/1.1) or close-delimited
  bool keep_alive = true;
  bool chunked = false;
  /// x-ratelimit-{limit,remaining,reset}-{requests,tokens}, replacing any the upstream sent
  /// (those describe the gateway's provider account, not the caller). Null or !any(): none.
  const rate_figures* rate = nullptr;
};

/// A duration as OpenAI writes x-ratelimit-reset-* (Go's time.Duration): "250ms", "1.5s", "1m2s".
std::string format_reset(std::int64_t ms);

/// `HTTP/1.1 <status> <reason>\r\n` + fields + `\r\n`. Fields whose name or value holds CR, LF or
/// NUL are dropped (no response splitting through a passed-through upstream header).
std::string format_response_head(const response_head& h);

}  // namespace tollgate::gateway
