// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Where an upstream connection goes: straight to the peer, or through an HTTP CONNECT proxy.
#include <string>

#include "config/config.hpp"

namespace tollgate {

struct proxy_choice {
  std::string host, port;  ///< empty: connect directly
};

/// Applies a provider's `proxy:` setting (`env`, `none` or a URL) for one peer. With `env`,
/// HTTPS_PROXY (or https_proxy) is used for https peers unless NO_PROXY (or no_proxy) names the
/// host ("*", an exact host, or a domain suffix). http peers always connect directly. Reads the
/// environment, so call it at config load, not per request.
proxy_choice choose_proxy(const config::provider_config& settings, const std::string& scheme, const std::string& host);

}  // namespace tollgate
