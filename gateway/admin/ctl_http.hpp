// SPDX-License-Identifier: Apache-2.0
#pragma once
/// tollgatectl's HTTP client for the admin API: one request per call, plain TCP, blocking for the
/// caller (it runs its own io_context), with connect and read timeouts. No exceptions for network
/// failures: they come back as a `transport_error`.
#include <boost/beast/http/verb.hpp>
#include <boost/system/result.hpp>

#include <chrono>
#include <string>
#include <string_view>

namespace tollgate::ctl {

/// Where the admin API lives, parsed from `--url`.
struct endpoint {
  std::string url;        ///< as given (for messages)
  std::string host;       ///< name or address to resolve (IPv6 without brackets)
  std::string port;       ///< "80" when the URL has none
  std::string authority;  ///< host[:port] as written, for the Host header
  std::string base_path;  ///< path prefix without a trailing '/', usually empty
};

/// Parses an admin base URL such as `http://127.0.0.1:9090` or `http://gw.internal/tollgate`.
/// Only `http` is accepted; the error is a one-line message fit for a usage error (https answers
/// "https admin URLs are not supported yet").
boost::system::result<endpoint, std::string> parse_admin_url(std::string_view url);

/// What `request` needs besides the request line.
struct options {
  endpoint where;
  std::string token;                         ///< sent as `Authorization: Bearer`; empty: no header
  std::chrono::milliseconds timeout{5000};   ///< bounds resolve, connect, and write + read separately
};

/// A complete HTTP answer, whatever its status.
struct response {
  unsigned status = 0;
  std::string body;
};

/// Why no HTTP answer arrived.
struct transport_error {
  enum class kind {
    unreachable,  ///< name resolution failed, connection refused, or the connect timed out
    timeout,      ///< connected, but the answer did not arrive within the timeout
    bad_answer,   ///< the peer closed early or did not speak HTTP/1.1
  };
  kind what = kind::bad_answer;
  std::string message;
  /// The whole request was sent before the failure: the gateway may have acted on it.
  bool sent = false;
};

/// Sends `method target` (target is appended to the endpoint's base path and must start with '/')
/// with `body` as JSON when non-empty, and reads the whole answer. Blocks until done.
boost::system::result<response, transport_error> request(const options& opt, boost::beast::http::verb method,
                                                         std::string_view target, std::string_view body = {});

/// `s` percent-encoded for use as one path segment or query value (RFC 3986 unreserved kept).
std::string encode_component(std::string_view s);

}  // namespace tollgate::ctl
