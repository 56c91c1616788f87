// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Plain configuration structs with defaults. Parsed from YAML by loader.cpp, checked by
/// validate(); immutable after load and shared by pointer (std::shared_ptr<const gateway_config>).
/// See docs/configuration.md for every key.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::config {

struct endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

struct tls_server {
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !cert_file.empty(); }
};

struct server_limits {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_header_count = 100;
  std::size_t max_url_bytes = 8 * 1024;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
};

struct server_timeouts {
  std::uint32_t header_read_ms = 10'000;
  std::uint32_t body_read_ms = 30'000;
  std::uint32_t idle_ms = 60'000;
  std::uint32_t drain_ms = 30'000;
};

struct server_config {
  unsigned workers = 0;  ///< 0: number of cores
  endpoint listen{"127.0.0.1", 8080};
  endpoint admin_listen{"127.0.0.1", 9090};
  tls_server tls;
  server_limits limits;
  server_timeouts timeouts;
  std::string access_log = "stdout";  ///< "stdout", "off" or a file path
};

struct upstream_timeouts {
  std::uint32_t connect_ms = 5'000;
  std::uint32_t first_byte_ms = 60'000;
  std::uint32_t idle_ms = 60'000;
};

struct upstream_tls {
  bool verify = true;
  std::string ca_file;
};

struct mock_fault {
  enum class kind { none, error, reset, stall };
  kind what = kind::none;
  unsigned status = 500;
  unsigned after_tokens = 1;
};

/// One `providers[]` entry. Fields of other types stay at their defaults.
struct provider_config {
  std::string name;
  std::string type;  ///< "openai_compatible" or "mock"
  int line = 0;      ///< YAML line, for later error messages

  // openai_compatible
  std::string base_url;
  std::string api_key;  ///< resolved secret; never logged
  std::vector<std::pair<std::string, std::string>> headers;
  upstream_timeouts timeouts;
  upstream_tls tls;
  std::string proxy = "env";  ///< "env", "none" or http://host:port
  unsigned max_idle_connections = 64;

  // mock
  std::uint32_t ttft_ms = 0;
  double tokens_per_second = 0;
  unsigned completion_tokens = 16;
  unsigned embedding_dimensions = 8;
  mock_fault fault;
};

struct target_config {
  std::string provider;
  std::string upstream_model;
  int line = 0;  ///< YAML line of the `provider:` key, for error messages
};

/// One `models[]` entry: a public model name and the providers that serve it, in order.
struct model_config {
  std::string name;
  target_config primary;
  std::vector<target_config> fallbacks;
  int line = 0;
};

struct gateway_config {
  server_config server;
  std::vector<provider_config> providers;
  std::vector<model_config> models;
  std::string source_path;  ///< file it was loaded from (for reload)

  const provider_config* find_provider(std::string_view name) const {
    for (auto& p : providers)
      if (p.name == name) return &p;
    return nullptr;
  }
};

}  // namespace tollgate::config
