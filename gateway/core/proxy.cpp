// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/proxy.hpp"

#include "gateway/core/text.hpp"

#include <boost/url/parse.hpp>

#include <cstdlib>
#include <string_view>

namespace tollgate {
namespace {

bool host_in_no_proxy(const std::string& host) {
  const char* np = std::getenv("NO_PROXY");
  if (!np) np = std::getenv("no_proxy");
  if (!np) return false;
  return !text::for_each_item(np, [&](std::string_view item) {
    if (item == "*") return false;  // stop: matched
    if (!item.empty() && item.front() == '.') item.remove_prefix(1);
    const bool match = !item.empty() && (host == item || (host.size() > item.size() && host.ends_with(item) &&
                                                           host[host.size() - item.size() - 1] == '.'));
    return !match;
  });
}

}  // namespace

proxy_choice choose_proxy(const config::provider_config& s, const std::string& scheme, const std::string& host) {
  if (scheme != "https" || s.proxy == "none") return {};
  std::string url;
  if (s.proxy == "env") {
    if (host_in_no_proxy(host)) return {};
    const char* v = std::getenv("HTTPS_PROXY");
    if (!v) v = std::getenv("https_proxy");
    if (!v || !*v) return {};
    url = v;
  } else {
    url = s.proxy;
  }
  if (url.find("://") == std::string::npos) url = "http://" + url;
  auto u = boost::urls::parse_uri(url);
  if (!u || u->host().empty()) return {};
  return {std::string(u->host_name().empty() ? u->encoded_host_address() : u->host_name()),
          u->has_port() ? std::string(u->port()) : "80"};
}

}  // namespace tollgate
