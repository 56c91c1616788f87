// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Checks the raw bytes of a request head before Beast parses it. Beast's parser alone accepts
/// some framings that other hops read differently (request smuggling, RFC 9112 §6.3 and §11.2):
/// obs-fold, bare LF, Transfer-Encoding whose last coding is not chunked, Content-Length next to
/// Transfer-Encoding, differing Content-Length values. Pure function, no I/O.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "gateway/core/error.hpp"

namespace tollgate {

struct head_limits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_header_count = 100;
  std::size_t max_url_bytes = 8 * 1024;
};

struct head_verdict {
  errc code = errc::ok;          ///< ok, bad_request, uri_too_long or header_fields_too_large
  std::string_view reason;       ///< short static text for the error message
  std::optional<std::uint64_t> content_length;  ///< the request's, when it has one (checked heads)
  explicit operator bool() const { return code == errc::ok; }
};

/// Finds the end of the head in `buf`: returns the size including the final CRLFCRLF, 0 when
/// not complete yet. A bare-LF blank line ("\n\n") also ends the head (so that it can be refused
/// rather than waited on).
std::size_t find_head_end(std::string_view buf) noexcept;

/// `head` is the request line and fields including the terminating empty line.
head_verdict check_head(std::string_view head, const head_limits& limits) noexcept;

/// True when a (checked) HTTP/1.1 head carries `Expect: 100-continue` (curl sends it for bodies
/// over 1 KiB and waits a second for the interim answer before sending the body). An HTTP/1.0
/// request's expectation is ignored: no 1xx may go to an HTTP/1.0 client (RFC 9110 §15.2).
bool expects_continue(std::string_view head) noexcept;

}  // namespace tollgate
