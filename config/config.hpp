// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Plain configuration structs with defaults. Parsed from YAML by loader.cpp, checked by
/// validate(); immutable after load and shared by pointer (std::shared_ptr<const gateway_config>).
/// See docs/configuration.md for every key.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::config {

struct endpoint {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
};

struct tls_server {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;      ///< set: callers must present a certificate signed by this CA (mTLS)
  std::string client_crl_file;     ///< set (with client_ca_file): certificates revoked by these CRLs are refused
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
  std::uint32_t write_ms = 30'000;  ///< per MiB written to a caller; a caller that stops reading is cut
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
  /// `raise`: the mock throws (how the gateway handles a bug of its own, in tests).
  enum class kind { none, error, reset, stall, raise };
  kind what = kind::none;
  unsigned status = 500;
  unsigned after_tokens = 1;
};

/// One `providers[]` entry. Fields of other types stay at their defaults.
struct provider_config {
  std::string name;
  std::string type;  ///< "openai_compatible", "azure_openai", "bedrock", "vertex" or "mock"
  int line = 0;      ///< YAML line, for later error messages

  // openai_compatible
  std::string base_url;
  std::string api_key;  ///< resolved secret; never logged
  std::vector<std::pair<std::string, std::string>> headers;
  upstream_timeouts timeouts;
  upstream_tls tls;
  std::string proxy = "env";  ///< "env", "none" or http://host:port
  unsigned max_idle_connections = 64;

  // azure_openai (base_url is the resource endpoint, api_key goes in the `api-key` header)
  std::string api_version = "2024-10-21";  ///< a dated version, or "v1" for the /openai/v1/ API
  /// Microsoft Entra ID client credentials (instead of api_key): tenant_id set means Entra.
  std::string entra_tenant_id, entra_client_id, entra_client_secret;
  std::string entra_scope = "https://cognitiveservices.azure.com/.default";
  std::string entra_authority = "https://login.microsoftonline.com";

  // bedrock (base_url: endpoint override, default https://bedrock-runtime.<region>.amazonaws.com)
  std::string region;
  std::string aws_access_key_id, aws_secret_access_key, aws_session_token;  ///< resolved secrets
  std::string aws_profile, aws_shared_credentials_file;

  // vertex (base_url: endpoint override, default https://<location>-aiplatform.googleapis.com)
  std::string project;
  std::string location = "us-central1";
  std::string credentials_file;  ///< service-account key; else GOOGLE_APPLICATION_CREDENTIALS, else metadata

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
/// Which rules apply to prompts and to responses. Unset: every rule.
struct filter_selection {
  std::optional<std::vector<std::string>> prompts, responses;
};

struct model_config {
  std::string name;
  target_config primary;
  std::vector<target_config> fallbacks;
  /// Rules for calls to this model (route); with a team's own selection, both apply (union).
  std::optional<filter_selection> content_filters;
  int line = 0;
};

/// Requests, tokens and in-flight limits of one scope (team or key). 0: no limit of that kind.
struct limits_config {
  std::uint64_t rpm = 0;          ///< requests admitted in any sliding 60 s window
  std::uint64_t tpm = 0;          ///< tokens (reserved, then corrected to usage) in any sliding 60 s window
  std::uint64_t concurrency = 0;  ///< requests in flight
  bool any() const { return rpm || tpm || concurrency; }
  /// The largest values accepted, from the file and the admin API alike: the script packs each
  /// figure with its scope's index into a Lua double (exact below 2^53), and the headers print
  /// them as signed 64-bit numbers.
  static constexpr std::uint64_t max_rpm = 1'000'000'000, max_tpm = 1'000'000'000'000, max_concurrency = 1'000'000;
};

enum class budget_period { daily, monthly, total };

/// "daily", "monthly" or "total": the spelling in YAML, the admin API and the store's JSON.
constexpr std::string_view period_name(budget_period p) noexcept {
  return p == budget_period::daily ? "daily" : p == budget_period::total ? "total" : "monthly";
}
/// The period spelled `s`, or nullopt for anything else.
constexpr std::optional<budget_period> parse_period(std::string_view s) noexcept {
  if (s == "daily") return budget_period::daily;
  if (s == "monthly") return budget_period::monthly;
  if (s == "total") return budget_period::total;
  return std::nullopt;
}

/// A USD budget. Amounts are kept in nano-USD (1e-9 $) so that sums are exact integers.
struct budget_config {
  std::int64_t limit_nano = -1;  ///< -1: no budget
  budget_period period = budget_period::monthly;
  double soft = 0.8;             ///< fraction that raises the soft-threshold event once per period; 0: none
  bool set() const { return limit_nano >= 0; }
};

/// USD per million tokens. Integer nano-USD per token would lose the sub-nano part of cheap
/// models, so prices stay as doubles and the cost of one call is rounded up to a nano-USD once.
struct price_config {
  std::string pattern;  ///< model name or glob (`*`)
  double input = 0, cached_input = 0, output = 0;
  double cache_write = 0;  ///< prompt tokens written to a provider's cache (Bedrock); defaults to input
  int line = 0;
};

/// `content_filters.rules[].injection`: a prompt-injection rule (docs/content-filters.md).
struct injection_phrase_config {
  std::string text, regex;
  int score = 1;
};
struct injection_config {
  int threshold = 4;
  std::vector<injection_phrase_config> phrases;  ///< empty: the built-in phrase set
};

/// `content_filters.rules[]`: one rule (docs/content-filters.md).
struct filter_rule_config {
  std::string name;
  std::string detector;  ///< a built-in detector name, or empty
  std::string regex;     ///< a custom Hyperscan regex, or empty
  std::vector<std::string> words;  ///< a custom word list, or empty
  std::optional<injection_config> injection;  ///< a prompt-injection rule (prompts only)
  std::string action = "redact";   ///< block | redact | flag
  int line = 0;
};


/// `content_filters.moderation`: an OpenAI-moderation-compatible endpoint (POST
/// <base_url>/moderations) called on prompts and on windows of streamed answers.
struct moderation_config {
  std::string provider;  ///< an openai_compatible provider: its base_url, api_key, TLS and proxy
  std::string model = "omni-moderation-latest";
  std::uint32_t timeout_ms = 2000;  ///< the whole call
  bool fail_open = false;           ///< on_error: fail_closed (default) or fail_open
  bool prompts = true, responses = true;
  std::uint32_t window_bytes = 1024;  ///< streamed answers are held and checked this many bytes of text at a time
  std::string action = "block";       ///< block | flag
  int line = 0;
};

struct content_filters_config {
  std::vector<filter_rule_config> rules;
  std::optional<moderation_config> moderation;
  filter_selection apply;            ///< the default selection
  std::uint32_t max_match_bytes = 512;  ///< longest match a custom regex may have (bounds held-back text)
};

struct team_config {
  std::string name;
  std::vector<std::string> models;      ///< allowed model patterns; empty: all
  limits_config limits;
  budget_config budget;
  std::vector<std::string> identities;  ///< mTLS SAN values (URI or DNS) that authenticate as this team
  bool capture_text = false;  ///< audit records of this team's calls carry the prompt and response text
  std::optional<filter_selection> content_filters;  ///< overrides content_filters.prompts/responses
  int line = 0;
};

/// A key declared in config (keys created through the admin API live in the policy store).
struct key_config {
  std::string id, team, name;
  std::string digest;                   ///< "sha256:<hex>" or "hmac-sha256:<hex>"
  std::vector<std::string> models;      ///< allowed model patterns; empty: the team's
  std::int64_t expires_unix = 0;        ///< 0: never
  bool enabled = true;
  limits_config limits;
  budget_config budget;
  int line = 0;
};

struct redis_config {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string unix_path;
  std::string username, password;  ///< resolved secret; never logged
  unsigned db = 0;
  std::string key_prefix = "tollgate:";
  std::uint32_t timeout_ms = 50;
  std::uint32_t connect_timeout_ms = 200;
  /// A worker with nothing else to do while its callers await an admission's answer from Redis
  /// keeps polling its sockets for up to this long before it sleeps (0: it sleeps at once).
  /// docs/adr/0010.
  std::uint32_t busy_poll_us = 100;
  struct tls_config {
    bool enabled = false;
    bool verify = true;
    std::string ca_file, cert_file, key_file, server_name;
    bool operator==(const tls_config&) const = default;
  } tls;  ///< store.redis.tls: TLS to Redis (docs/policy.md)
  bool operator==(const redis_config&) const = default;
};

enum class on_store_failure { fail_closed, fail_open, local };

/// The most output tokens a call may ask for (`max_tokens`, `max_completion_tokens`) or a config
/// may reserve by default (`store.default_max_tokens`): far above any model's output limit, and
/// low enough that tokens × n and their cost stay finite in 64 bits.
inline constexpr std::uint64_t max_output_tokens = 100'000'000;

struct store_config {
  std::string type = "memory";  ///< "memory" or "redis"
  redis_config redis;
  unsigned replicas = 1;        ///< replicas sharing the store: local fallback limits are divided by it
  on_store_failure budgets = on_store_failure::fail_closed;     ///< fail_closed or fail_open
  on_store_failure rate_limits = on_store_failure::local;       ///< local, fail_closed or fail_open
  std::uint32_t lease_ms = 300'000;       ///< reservations of a dead gateway expire after this
  std::uint64_t default_max_tokens = 4096;  ///< output reserved when the caller gives no max_tokens
  /// Sends default_max_tokens upstream as the limit of a call that gave none and counts against
  /// a token limit or a budget, so that no call outgrows its reservation.
  bool send_default_max_tokens = true;
  /// Settlements the store could not take, kept here until it does (replayed at the next start);
  /// empty: none kept. Relative paths are resolved against the config file's directory.
  std::string settlement_journal;
};

struct admin_token_config {
  std::string name;
  std::string digest;  ///< "sha256:<hex>"
};

struct auth_config {
  bool required = true;          ///< false: callers without credentials run as the anonymous team
  std::string pepper;            ///< HMAC key for key digests (resolved secret)
  std::uint32_t key_cache_ms = 1000;
  bool demo_key = false;         ///< create team "demo" and a key at start, and print it (quickstart)
  std::vector<admin_token_config> admin_tokens;
};

/// `audit:` the tamper-evident record of every call (docs/audit.md).
struct audit_config {
  bool enabled = true;
  std::string dir = "audit";      ///< relative paths are resolved against the config file's directory
  std::string instance;           ///< segment file prefix; empty: "<hostname>-<caller port>"
  enum class durability { strict, batched } mode = durability::strict;
  std::uint32_t batch_ms = 200;   ///< batched: fsync at least this often
  std::uint64_t segment_max_bytes = 64ull << 20;
  std::uint32_t segment_max_age_s = 3600;
  std::uint32_t retention_days = 0;  ///< 0: keep every segment
  std::uint32_t checkpoint_s = 60;
  bool fail_open = false;         ///< false: new calls answer 503 audit_unavailable while writes fail
  std::uint64_t max_pending_bytes = 64ull << 20;  ///< records held in memory while writes fail
};

struct gateway_config {
  server_config server;
  audit_config audit;
  content_filters_config content_filters;
  std::vector<provider_config> providers;
  std::vector<model_config> models;
  std::vector<price_config> prices;
  std::vector<team_config> teams;
  std::vector<key_config> keys;
  auth_config auth;
  store_config store;
  std::string source_path;  ///< file it was loaded from (for reload)

  const provider_config* find_provider(std::string_view name) const {
    for (auto& p : providers)
      if (p.name == name) return &p;
    return nullptr;
  }
  const team_config* find_team(std::string_view name) const {
    for (auto& t : teams)
      if (t.name == name) return &t;
    return nullptr;
  }
  /// The price entry for a model: an exact name first, then the longest matching glob.
  const price_config* find_price(std::string_view model) const;
  /// The entry whose pattern is exactly `model` (no glob), or none.
  const price_config* find_exact_price(std::string_view model) const {
    for (auto& p : prices)
      if (p.pattern == model) return &p;
    return nullptr;
  }
};

/// `*` matches any run of characters; everything else matches itself.
bool glob_match(std::string_view pattern, std::string_view text) noexcept;

}  // namespace tollgate::config
