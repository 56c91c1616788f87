// SPDX-License-Identifier: Apache-2.0
// YAML → plain structs. yaml-cpp throws; this file is the only place that catches YAML
// exceptions (control plane only). Every error names the YAML path and the line.
#include "config/loader.hpp"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cmath>
#include <charconv>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "config/secrets.hpp"

namespace tollgate::config {
namespace {

/// `digest` is "<kind>:" and 64 lowercase hex digits (as tollgatectl and sha256sum print them).
bool digest_of_kind(std::string_view digest, std::string_view kind) {
  if (!digest.starts_with(kind) || digest.size() != kind.size() + 1 + 64 || digest[kind.size()] != ':') return false;
  return digest.substr(kind.size() + 1).find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int line_of(const YAML::Node& n) { return n.Mark().line >= 0 ? n.Mark().line + 1 : 0; }

[[noreturn]] void fail(const std::string& path, const YAML::Node& n, const std::string& what) {
  std::string msg = path + ": " + what;
  if (int l = line_of(n); l > 0) msg += " (line " + std::to_string(l) + ")";
  throw config_error(msg);
}

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

/// Rejects a key given twice in one mapping, anywhere in the document. yaml-cpp keeps both and
/// lookups find the first, so a second `auth:` or `teams:` block, or a repeated `usd:`, would be
/// dropped without a word. Also bounds the nesting (an alias may refer to its own ancestor) and
/// the nodes walked (aliases of aliases expand exponentially: a few lines could make a reload
/// walk for ever).
void reject_duplicate_keys(const YAML::Node& n, const std::string& path, std::size_t& budget, int depth = 0) {
  if (depth > 64) fail(path.empty() ? "<root>" : path, n, "nested more than 64 levels deep");
  if (budget-- == 0) fail(path.empty() ? "<root>" : path, n, "more than 1,000,000 values (aliases expanding?)");
  if (n.IsMap()) {
    std::set<std::string> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : std::string("?");
      if (it->first.IsScalar() && !seen.insert(key).second)
        fail(join(path, key), it->first, "given twice in one mapping (YAML would keep only the first): merge them");
      reject_duplicate_keys(it->second, join(path, key), budget, depth + 1);
    }
  } else if (n.IsSequence()) {
    for (std::size_t i = 0; i < n.size(); ++i)
      reject_duplicate_keys(n[i], path + "[" + std::to_string(i) + "]", budget, depth + 1);
  }
}

/// Rejects keys that are not in `allowed`, naming the path and line.
void check_keys(const YAML::Node& map, const std::string& path, std::initializer_list<const char*> allowed) {
  if (!map.IsMap()) fail(path.empty() ? "<root>" : path, map, "expected a mapping");
  std::set<std::string> ok(allowed.begin(), allowed.end());
  for (auto it = map.begin(); it != map.end(); ++it) {
    auto key = it->first.as<std::string>();
    if (!ok.count(key)) fail(join(path, key), it->first, "unknown key");
  }
}

std::string get_string(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) fail(path, n, "expected a string");
  return n.as<std::string>();
}

template <class Int>
Int get_uint(const YAML::Node& n, const std::string& path, Int max = std::numeric_limits<Int>::max()) {
  if (!n.IsScalar()) fail(path, n, "expected a non-negative integer");
  const std::string s = n.Scalar();
  unsigned long long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || v > max)
    fail(path, n, "expected a non-negative integer up to " + std::to_string(max) + ", got '" + s + "'");
  return static_cast<Int>(v);
}

bool get_bool(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) fail(path, n, "expected true or false");
  const std::string& s = n.Scalar();
  if (s == "true") return true;
  if (s == "false") return false;
  fail(path, n, "expected true or false, got '" + s + "'");
}

double get_double(const YAML::Node& n, const std::string& path) {
  if (!n.IsScalar()) fail(path, n, "expected a number");
  try {
    std::size_t used = 0;
    double v = std::stod(n.Scalar(), &used);
    if (used != n.Scalar().size() || !std::isfinite(v) || v < 0) throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    fail(path, n, "expected a non-negative number, got '" + n.Scalar() + "'");
  }
}

std::string get_secret(const YAML::Node& n, const std::string& path) {
  std::string why;
  auto v = resolve_secret(get_string(n, path), why);
  if (!v) fail(path, n, why);
  return *v;
}

endpoint parse_endpoint(const YAML::Node& n, const std::string& path) {
  std::string s = get_string(n, path);
  // A host name or an IP address (IPv6 in brackets, with a zone): a URL is refused, and never
  // echoed, since it may carry a password ("redis://:pw@host:6379" once loaded as a host named
  // "redis://:pw@host", and its resolver errors put the password in the logs).
  for (const char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_' && c != ':' && c != '[' &&
        c != ']' && c != '%')
      fail(path, n, "expected host:port (a host name or IP address, and a port; not a URL)");
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) fail(path, n, "expected host:port, got '" + s + "'");
  endpoint e;
  e.host = s.substr(0, colon);
  if (e.host.size() > 2 && e.host.front() == '[' && e.host.back() == ']') e.host = e.host.substr(1, e.host.size() - 2);
  YAML::Node port_node(s.substr(colon + 1));
  e.port = get_uint<std::uint16_t>(port_node, path + " (port)");
  return e;
}

void parse_server(const YAML::Node& n, server_config& s) {
  const std::string p = "server";
  check_keys(n, p, {"workers", "listen", "admin_listen", "tls", "limits", "timeouts", "access_log"});
  if (auto v = n["workers"]) s.workers = get_uint<unsigned>(v, p + ".workers", 1024);
  if (auto v = n["listen"]) s.listen = parse_endpoint(v, p + ".listen");
  if (auto v = n["admin_listen"]) s.admin_listen = parse_endpoint(v, p + ".admin_listen");
  if (auto v = n["access_log"]) s.access_log = get_string(v, p + ".access_log");
  if (auto t = n["tls"]) {
    check_keys(t, p + ".tls", {"cert_file", "key_file", "client_ca_file", "client_crl_file"});
    if (auto v = t["cert_file"]) s.tls.cert_file = get_string(v, p + ".tls.cert_file");
    if (auto v = t["client_ca_file"]) s.tls.client_ca_file = get_string(v, p + ".tls.client_ca_file");
    if (auto v = t["key_file"]) s.tls.key_file = get_string(v, p + ".tls.key_file");
    if (auto v = t["client_crl_file"]) s.tls.client_crl_file = get_string(v, p + ".tls.client_crl_file");
  }
  if (auto l = n["limits"]) {
    const std::string lp = p + ".limits";
    check_keys(l, lp, {"max_header_bytes", "max_header_count", "max_url_bytes", "max_body_bytes"});
    if (auto v = l["max_header_bytes"]) s.limits.max_header_bytes = get_uint<std::size_t>(v, lp + ".max_header_bytes");
    if (auto v = l["max_header_count"]) s.limits.max_header_count = get_uint<std::size_t>(v, lp + ".max_header_count");
    if (auto v = l["max_url_bytes"]) s.limits.max_url_bytes = get_uint<std::size_t>(v, lp + ".max_url_bytes");
    if (auto v = l["max_body_bytes"]) s.limits.max_body_bytes = get_uint<std::size_t>(v, lp + ".max_body_bytes");
  }
  if (auto t = n["timeouts"]) {
    const std::string tp = p + ".timeouts";
    check_keys(t, tp, {"header_read_ms", "body_read_ms", "idle_ms", "drain_ms", "write_ms"});
    if (auto v = t["header_read_ms"]) s.timeouts.header_read_ms = get_uint<std::uint32_t>(v, tp + ".header_read_ms");
    if (auto v = t["body_read_ms"]) s.timeouts.body_read_ms = get_uint<std::uint32_t>(v, tp + ".body_read_ms");
    if (auto v = t["idle_ms"]) s.timeouts.idle_ms = get_uint<std::uint32_t>(v, tp + ".idle_ms");
    if (auto v = t["drain_ms"]) s.timeouts.drain_ms = get_uint<std::uint32_t>(v, tp + ".drain_ms");
    if (auto v = t["write_ms"]) s.timeouts.write_ms = get_uint<std::uint32_t>(v, tp + ".write_ms");
  }
}

provider_config parse_provider(const YAML::Node& n, const std::string& p) {
  provider_config c;
  c.line = line_of(n);
  if (!n.IsMap()) fail(p, n, "expected a mapping");
  if (!n["name"]) fail(p + ".name", n, "required");
  if (!n["type"]) fail(p + ".type", n, "required");
  c.name = get_string(n["name"], p + ".name");
  c.type = get_string(n["type"], p + ".type");
  if (c.type == "openai_compatible" || c.type == "azure_openai" || c.type == "bedrock" || c.type == "vertex") {
    const bool azure = c.type == "azure_openai", bedrock = c.type == "bedrock", vertex = c.type == "vertex";
    if (vertex)
      check_keys(n, p, {"name", "type", "project", "location", "endpoint", "credentials_file", "headers", "timeouts", "tls",
                        "proxy", "max_idle_connections"});
    else if (azure)
      check_keys(n, p, {"name", "type", "endpoint", "api_key", "entra", "api_version", "headers", "timeouts", "tls",
                        "proxy", "max_idle_connections"});
    else if (bedrock)
      check_keys(n, p, {"name", "type", "region", "endpoint", "access_key_id", "secret_access_key", "session_token",
                        "profile", "shared_credentials_file", "headers", "timeouts", "tls", "proxy", "max_idle_connections"});
    else
      check_keys(n, p, {"name", "type", "base_url", "api_key", "headers", "timeouts", "tls", "proxy",
                        "max_idle_connections"});
    if (bedrock) {
      if (!n["region"]) fail(p + ".region", n, "required for type bedrock (for example us-east-1)");
      c.region = get_string(n["region"], p + ".region");
      if (c.region.empty() || c.region.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
        fail(p + ".region", n["region"], "expected an AWS region such as us-east-1, got '" + c.region + "'");
      c.base_url = n["endpoint"] ? get_string(n["endpoint"], p + ".endpoint")
                                 : "https://bedrock-runtime." + c.region + ".amazonaws.com";
      if (auto v = n["access_key_id"]) c.aws_access_key_id = get_secret(v, p + ".access_key_id");
      if (auto v = n["secret_access_key"]) c.aws_secret_access_key = get_secret(v, p + ".secret_access_key");
      if (auto v = n["session_token"]) c.aws_session_token = get_secret(v, p + ".session_token");
      if (auto v = n["profile"]) c.aws_profile = get_string(v, p + ".profile");
      if (auto v = n["shared_credentials_file"]) c.aws_shared_credentials_file = get_string(v, p + ".shared_credentials_file");
    }
    if (vertex) {
      if (!n["project"]) fail(p + ".project", n, "required for type vertex (the Google Cloud project id)");
      c.project = get_string(n["project"], p + ".project");
      if (auto v = n["location"]) c.location = get_string(v, p + ".location");
      if (c.location.empty() || c.location.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
        fail(p + ".location", n["location"] ? n["location"] : n, "expected a location such as us-central1 or global");
      if (auto v = n["credentials_file"]) c.credentials_file = get_string(v, p + ".credentials_file");
      // Without an endpoint the adapter calls Google's host for the location (vertex_host():
      // regional, global, or the us/eu multi-regions' aiplatform.<loc>.rep.googleapis.com).
      if (auto v = n["endpoint"]) c.base_url = get_string(v, p + ".endpoint");
    }
    const char* url_key = azure ? "endpoint" : "base_url";
    if (!bedrock && !vertex && !n[url_key]) fail(p + "." + url_key, n, std::string("required for type ") + c.type);
    if (!bedrock && !vertex) c.base_url = get_string(n[url_key], p + "." + url_key);
    if (auto v = n["api_key"]) c.api_key = get_secret(v, p + ".api_key");
    if (auto e = n["entra"]; azure && e) {
      const std::string ep = p + ".entra";
      check_keys(e, ep, {"tenant_id", "client_id", "client_secret", "scope", "authority"});
      for (const char* k : {"tenant_id", "client_id", "client_secret"})
        if (!e[k]) fail(ep + "." + k, e, "required for Entra ID authentication");
      c.entra_tenant_id = get_string(e["tenant_id"], ep + ".tenant_id");
      c.entra_client_id = get_string(e["client_id"], ep + ".client_id");
      c.entra_client_secret = get_secret(e["client_secret"], ep + ".client_secret");
      if (auto v = e["scope"]) c.entra_scope = get_string(v, ep + ".scope");
      if (auto v = e["authority"]) c.entra_authority = get_string(v, ep + ".authority");
      if (n["api_key"]) fail(p + ".api_key", n, "give api_key or entra, not both");
    }
    if (azure && !n["api_key"] && !n["entra"])
      fail(p + ".api_key", n, "type azure_openai needs api_key (sent as the api-key header) or entra (Entra ID client credentials)");
    if (auto v = n["api_version"]) {
      c.api_version = get_string(v, p + ".api_version");
      const bool dated = c.api_version.size() >= 10 && std::isdigit(static_cast<unsigned char>(c.api_version[0]));
      if (c.api_version != "v1" && !dated)
        fail(p + ".api_version", v, "expected a dated version such as 2024-10-21 or v1, got '" + c.api_version + "'");
    }
    if (auto h = n["headers"]) {
      if (!h.IsMap()) fail(p + ".headers", h, "expected a mapping of header names to values");
      for (auto it = h.begin(); it != h.end(); ++it) {
        auto key = it->first.as<std::string>();
        c.headers.emplace_back(key, get_secret(it->second, p + ".headers." + key));
      }
    }
    if (auto t = n["timeouts"]) {
      const std::string tp = p + ".timeouts";
      check_keys(t, tp, {"connect_ms", "first_byte_ms", "idle_ms"});
      if (auto v = t["connect_ms"]) c.timeouts.connect_ms = get_uint<std::uint32_t>(v, tp + ".connect_ms");
      if (auto v = t["first_byte_ms"]) c.timeouts.first_byte_ms = get_uint<std::uint32_t>(v, tp + ".first_byte_ms");
      if (auto v = t["idle_ms"]) c.timeouts.idle_ms = get_uint<std::uint32_t>(v, tp + ".idle_ms");
    }
    if (auto t = n["tls"]) {
      check_keys(t, p + ".tls", {"verify", "ca_file"});
      if (auto v = t["verify"]) c.tls.verify = get_bool(v, p + ".tls.verify");
      if (auto v = t["ca_file"]) c.tls.ca_file = get_string(v, p + ".tls.ca_file");
    }
    if (auto v = n["proxy"]) c.proxy = get_string(v, p + ".proxy");
    if (auto v = n["max_idle_connections"]) c.max_idle_connections = get_uint<unsigned>(v, p + ".max_idle_connections");
  } else if (c.type == "mock") {
    check_keys(n, p, {"name", "type", "ttft_ms", "tokens_per_second", "completion_tokens", "embedding_dimensions",
                      "fault"});
    if (auto v = n["ttft_ms"]) c.ttft_ms = get_uint<std::uint32_t>(v, p + ".ttft_ms");
    if (auto v = n["tokens_per_second"]) c.tokens_per_second = get_double(v, p + ".tokens_per_second");
    if (auto v = n["completion_tokens"]) c.completion_tokens = get_uint<unsigned>(v, p + ".completion_tokens", 1'000'000);
    if (auto v = n["embedding_dimensions"])
      c.embedding_dimensions = get_uint<unsigned>(v, p + ".embedding_dimensions", 65'536);
    if (auto f = n["fault"]) {
      const std::string fp = p + ".fault";
      check_keys(f, fp, {"kind", "status", "after_tokens"});
      if (auto v = f["kind"]) {
        auto k = get_string(v, fp + ".kind");
        if (k == "none") c.fault.what = mock_fault::kind::none;
        else if (k == "error") c.fault.what = mock_fault::kind::error;
        else if (k == "reset") c.fault.what = mock_fault::kind::reset;
        else if (k == "stall") c.fault.what = mock_fault::kind::stall;
        else if (k == "throw") c.fault.what = mock_fault::kind::raise;
        else fail(fp + ".kind", v, "expected none, error, reset, stall or throw, got '" + k + "'");
      }
      if (auto v = f["status"]) c.fault.status = get_uint<unsigned>(v, fp + ".status", 599);
      if (auto v = f["after_tokens"]) c.fault.after_tokens = get_uint<unsigned>(v, fp + ".after_tokens");
    }
  } else {
    fail(p + ".type", n["type"], "unknown provider type '" + c.type + "' (expected openai_compatible, azure_openai, bedrock, vertex or mock)");
  }
  return c;
}

target_config parse_target(const YAML::Node& n, const std::string& p, const std::string& default_model) {
  check_keys(n, p, {"provider", "upstream_model"});
  target_config t;
  if (!n["provider"]) fail(p + ".provider", n, "required");
  t.provider = get_string(n["provider"], p + ".provider");
  t.line = line_of(n["provider"]);
  t.upstream_model = n["upstream_model"] ? get_string(n["upstream_model"], p + ".upstream_model") : default_model;
  return t;
}

std::vector<std::string> get_string_list(const YAML::Node& n, const std::string& path) {
  std::vector<std::string> out;
  if (n.IsScalar()) {
    out.push_back(n.Scalar());
    return out;
  }
  if (!n.IsSequence()) fail(path, n, "expected a list of strings");
  for (std::size_t i = 0; i < n.size(); ++i) out.push_back(get_string(n[i], path + "[" + std::to_string(i) + "]"));
  return out;
}

limits_config parse_limits(const YAML::Node& n, const std::string& p) {
  check_keys(n, p, {"rpm", "tpm", "concurrency"});
  limits_config l;
  if (auto v = n["rpm"]) l.rpm = get_uint<std::uint64_t>(v, p + ".rpm", limits_config::max_rpm);
  if (auto v = n["tpm"]) l.tpm = get_uint<std::uint64_t>(v, p + ".tpm", limits_config::max_tpm);
  if (auto v = n["concurrency"]) l.concurrency = get_uint<std::uint64_t>(v, p + ".concurrency", limits_config::max_concurrency);
  return l;
}

budget_config parse_budget(const YAML::Node& n, const std::string& p) {
  check_keys(n, p, {"usd", "period", "soft"});
  budget_config b;
  if (!n["usd"]) fail(p + ".usd", n, "required (the budget in US dollars)");
  const double usd = get_double(n["usd"], p + ".usd");
  // Amounts are exact integers of nano-USD; the Redis scripts compute in doubles (exact to 2^53).
  if (usd > 9e6) fail(p + ".usd", n["usd"], "must be at most 9000000 (amounts stay exact up to 2^53 nano-USD)");
  b.limit_nano = static_cast<std::int64_t>(usd * 1e9 + 0.5);
  if (auto v = n["period"]) {
    auto s = get_string(v, p + ".period");
    if (auto period = parse_period(s)) b.period = *period;
    else fail(p + ".period", v, "expected daily, monthly or total, got '" + s + "'");
  }
  if (auto v = n["soft"]) {
    b.soft = get_double(v, p + ".soft");
    if (b.soft > 1) fail(p + ".soft", v, "expected a fraction between 0 and 1 (for example 0.8)");
  }
  return b;
}

/// RFC 3339 UTC time (2027-01-31T00:00:00Z) or a date (2027-01-31, midnight UTC).
std::int64_t get_time(const YAML::Node& n, const std::string& path) {
  const std::string s = get_string(n, path);
  std::tm tm{};
  const char* end = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) {
    tm = {};
    end = ::strptime(s.c_str(), "%Y-%m-%d", &tm);
  }
  if (!end || *end) fail(path, n, "expected a UTC time like 2027-01-31T00:00:00Z or a date like 2027-01-31, got '" + s + "'");
  return static_cast<std::int64_t>(::timegm(&tm));
}

void parse_auth(const YAML::Node& n, auth_config& a) {
  const std::string p = "auth";
  check_keys(n, p, {"required", "pepper", "key_cache_ms", "demo_key", "admin_tokens"});
  if (auto v = n["required"]) a.required = get_bool(v, p + ".required");
  if (auto v = n["pepper"]) {
    a.pepper = get_secret(v, p + ".pepper");
    // (An unset variable or an empty file: keys would be digested without a pepper, silently,
    // and every key digested under the real one refused.)
    if (a.pepper.empty()) fail(p + ".pepper", v, "is empty (leave it out for no pepper)");
  }
  if (auto v = n["key_cache_ms"]) a.key_cache_ms = get_uint<std::uint32_t>(v, p + ".key_cache_ms", 60'000);
  if (auto v = n["demo_key"]) a.demo_key = get_bool(v, p + ".demo_key");
  if (auto ts = n["admin_tokens"]) {
    if (!ts.IsSequence()) fail(p + ".admin_tokens", ts, "expected a list");
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const std::string tp = p + ".admin_tokens[" + std::to_string(i) + "]";
      check_keys(ts[i], tp, {"name", "digest"});
      if (!ts[i]["name"] || !ts[i]["digest"]) fail(tp, ts[i], "name and digest are required");
      a.admin_tokens.push_back({get_string(ts[i]["name"], tp + ".name"), get_string(ts[i]["digest"], tp + ".digest")});
      const auto& t = a.admin_tokens.back();
      // A digest no token can match (upper-case hex, hmac-sha256, cut short) would lock the admin
      // out without a word; a name given twice or empty would blur who did what in the audit trail.
      if (t.name.empty()) fail(tp + ".name", ts[i]["name"], "must not be empty (it names the admin in the audit trail)");
      if (!digest_of_kind(t.digest, "sha256"))
        fail(tp + ".digest", ts[i]["digest"], "expected sha256:<64 lowercase hex> (of the token: printf %s TOKEN | sha256sum)");
      for (std::size_t j = 0; j + 1 < a.admin_tokens.size(); ++j) {
        if (a.admin_tokens[j].name == t.name) fail(tp + ".name", ts[i]["name"], "duplicate admin token name '" + t.name + "'");
        if (a.admin_tokens[j].digest == t.digest) fail(tp + ".digest", ts[i]["digest"], "the same token as admin_tokens[" + std::to_string(j) + "]");
      }
    }
  }
}

on_store_failure get_failure_mode(const YAML::Node& n, const std::string& path, bool local_ok) {
  auto s = get_string(n, path);
  if (s == "fail_closed") return on_store_failure::fail_closed;
  if (s == "fail_open") return on_store_failure::fail_open;
  if (s == "local" && local_ok) return on_store_failure::local;
  fail(path, n, std::string("expected fail_closed") + (local_ok ? ", fail_open or local" : " or fail_open") + ", got '" + s + "'");
}

void parse_store(const YAML::Node& n, store_config& s) {
  const std::string p = "store";
  check_keys(n, p, {"type", "redis", "replicas", "on_unavailable", "lease_ms", "default_max_tokens", "send_default_max_tokens",
                 "settlement_journal"});
  if (auto v = n["type"]) {
    s.type = get_string(v, p + ".type");
    if (s.type != "memory" && s.type != "redis") fail(p + ".type", v, "expected memory or redis, got '" + s.type + "'");
  }
  if (auto r = n["redis"]) {
    const std::string rp = p + ".redis";
    check_keys(r, rp, {"address", "username", "password", "db", "key_prefix", "timeout_ms", "connect_timeout_ms", "busy_poll_us",
                         "tls"});
    if (auto v = r["address"]) {
      auto a = get_string(v, rp + ".address");
      if (a.rfind("unix:", 0) == 0) s.redis.unix_path = a.substr(5);
      else {
        auto e = parse_endpoint(v, rp + ".address");
        s.redis.host = e.host;
        s.redis.port = e.port;
      }
    }
    if (auto v = r["username"]) s.redis.username = get_secret(v, rp + ".username");
    if (auto v = r["password"]) s.redis.password = get_secret(v, rp + ".password");
    if (auto v = r["db"]) s.redis.db = get_uint<unsigned>(v, rp + ".db", 15);
    if (auto v = r["key_prefix"]) s.redis.key_prefix = get_string(v, rp + ".key_prefix");
    if (auto v = r["timeout_ms"]) s.redis.timeout_ms = get_uint<std::uint32_t>(v, rp + ".timeout_ms", 60'000);
    if (auto v = r["connect_timeout_ms"])
      s.redis.connect_timeout_ms = get_uint<std::uint32_t>(v, rp + ".connect_timeout_ms", 60'000);
    if (s.redis.connect_timeout_ms == 0)  // (each step of a connection gets it: 0 never connects)
      fail(rp + ".connect_timeout_ms", r["connect_timeout_ms"], "must be at least 1");
    if (auto v = r["busy_poll_us"]) s.redis.busy_poll_us = get_uint<std::uint32_t>(v, rp + ".busy_poll_us", 1'000);
    if (auto t = r["tls"]) {
      const std::string tp = rp + ".tls";
      check_keys(t, tp, {"enabled", "verify", "ca_file", "cert_file", "key_file", "server_name"});
      auto& c = s.redis.tls;
      c.enabled = true;  // a tls section turns it on, unless it says enabled: false
      if (auto v = t["enabled"]) c.enabled = get_bool(v, tp + ".enabled");
      if (auto v = t["verify"]) c.verify = get_bool(v, tp + ".verify");
      if (auto v = t["ca_file"]) c.ca_file = get_string(v, tp + ".ca_file");
      if (auto v = t["cert_file"]) c.cert_file = get_string(v, tp + ".cert_file");
      if (auto v = t["key_file"]) c.key_file = get_string(v, tp + ".key_file");
      if (auto v = t["server_name"]) c.server_name = get_string(v, tp + ".server_name");
    }
  }
  if (auto v = n["replicas"]) s.replicas = get_uint<unsigned>(v, p + ".replicas", 10'000);
  if (auto u = n["on_unavailable"]) {
    const std::string up = p + ".on_unavailable";
    check_keys(u, up, {"budgets", "rate_limits"});
    if (auto v = u["budgets"]) s.budgets = get_failure_mode(v, up + ".budgets", false);
    if (auto v = u["rate_limits"]) s.rate_limits = get_failure_mode(v, up + ".rate_limits", true);
  }
  if (auto v = n["lease_ms"]) s.lease_ms = get_uint<std::uint32_t>(v, p + ".lease_ms", 86'400'000);
  if (auto v = n["default_max_tokens"]) s.default_max_tokens = get_uint<std::uint64_t>(v, p + ".default_max_tokens", max_output_tokens);
  if (auto v = n["send_default_max_tokens"]) s.send_default_max_tokens = get_bool(v, p + ".send_default_max_tokens");
  if (auto v = n["settlement_journal"]) s.settlement_journal = get_string(v, p + ".settlement_journal");
}

void parse_audit(const YAML::Node& n, audit_config& a) {
  const std::string p = "audit";
  check_keys(n, p, {"enabled", "dir", "instance", "durability", "batch_ms", "segment_max_bytes", "segment_max_age_s",
                    "retention_days", "checkpoint_s", "on_error", "max_pending_bytes"});
  if (auto v = n["enabled"]) a.enabled = get_bool(v, p + ".enabled");
  if (auto v = n["dir"]) a.dir = get_string(v, p + ".dir");
  if (auto v = n["instance"]) {
    a.instance = get_string(v, p + ".instance");
    if (a.instance.empty() || a.instance.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
      fail(p + ".instance", v, "expected letters, digits, '_' or '-', got '" + a.instance + "'");
  }
  if (auto v = n["durability"]) {
    auto d = get_string(v, p + ".durability");
    if (d == "strict") a.mode = audit_config::durability::strict;
    else if (d == "batched") a.mode = audit_config::durability::batched;
    else fail(p + ".durability", v, "expected strict or batched, got '" + d + "'");
  }
  if (auto v = n["batch_ms"]) a.batch_ms = get_uint<std::uint32_t>(v, p + ".batch_ms", 60'000);
  if (auto v = n["segment_max_bytes"]) a.segment_max_bytes = get_uint<std::uint64_t>(v, p + ".segment_max_bytes");
  if (auto v = n["segment_max_age_s"]) a.segment_max_age_s = get_uint<std::uint32_t>(v, p + ".segment_max_age_s");
  if (auto v = n["retention_days"]) a.retention_days = get_uint<std::uint32_t>(v, p + ".retention_days", 36'500);
  if (auto v = n["checkpoint_s"]) a.checkpoint_s = get_uint<std::uint32_t>(v, p + ".checkpoint_s", 86'400);
  if (auto v = n["on_error"]) {
    auto m = get_string(v, p + ".on_error");
    if (m == "fail_closed") a.fail_open = false;
    else if (m == "fail_open") a.fail_open = true;
    else fail(p + ".on_error", v, "expected fail_closed or fail_open, got '" + m + "'");
  }
  if (auto v = n["max_pending_bytes"]) a.max_pending_bytes = get_uint<std::uint64_t>(v, p + ".max_pending_bytes");
}

std::vector<std::string> get_string_list(const YAML::Node& n, const std::string& path);

filter_selection parse_filter_selection(const YAML::Node& n, const std::string& p) {
  check_keys(n, p, {"prompts", "responses"});
  filter_selection s;
  if (auto v = n["prompts"]) s.prompts = get_string_list(v, p + ".prompts");
  if (auto v = n["responses"]) s.responses = get_string_list(v, p + ".responses");
  return s;
}

void parse_content_filters(const YAML::Node& n, content_filters_config& c) {
  const std::string p = "content_filters";
  check_keys(n, p, {"rules", "prompts", "responses", "max_match_bytes", "moderation"});
  if (auto m = n["moderation"]) {
    const std::string mp = p + ".moderation";
    if (!m.IsMap()) fail(mp, m, "expected a mapping");
    check_keys(m, mp, {"provider", "model", "timeout_ms", "on_error", "prompts", "responses", "window_bytes", "action"});
    moderation_config mc;
    mc.line = line_of(m);
    if (!m["provider"]) fail(mp + ".provider", m, "required: the name of an openai_compatible provider");
    mc.provider = get_string(m["provider"], mp + ".provider");
    if (auto v = m["model"]) mc.model = get_string(v, mp + ".model");
    if (auto v = m["timeout_ms"]) mc.timeout_ms = get_uint<std::uint32_t>(v, mp + ".timeout_ms", 600'000);
    if (mc.timeout_ms == 0) fail(mp + ".timeout_ms", m["timeout_ms"], "must be at least 1");
    if (auto v = m["on_error"]) {
      const auto e = get_string(v, mp + ".on_error");
      if (e == "fail_closed") mc.fail_open = false;
      else if (e == "fail_open") mc.fail_open = true;
      else fail(mp + ".on_error", v, "expected fail_closed or fail_open, got '" + e + "'");
    }
    if (auto v = m["prompts"]) mc.prompts = get_bool(v, mp + ".prompts");
    if (auto v = m["responses"]) mc.responses = get_bool(v, mp + ".responses");
    if (auto v = m["window_bytes"]) mc.window_bytes = get_uint<std::uint32_t>(v, mp + ".window_bytes", 1u << 20);
    if (mc.window_bytes < 16) fail(mp + ".window_bytes", m["window_bytes"], "must be at least 16");
    if (auto v = m["action"]) {
      mc.action = get_string(v, mp + ".action");
      if (mc.action != "block" && mc.action != "flag") fail(mp + ".action", v, "expected block or flag, got '" + mc.action + "'");
    }
    c.moderation = std::move(mc);
  }
  if (auto r = n["rules"]) {
    if (!r.IsSequence()) fail(p + ".rules", r, "expected a list");
    for (std::size_t i = 0; i < r.size(); ++i) {
      const std::string rp = p + ".rules[" + std::to_string(i) + "]";
      const auto& e = r[i];
      check_keys(e, rp, {"name", "detector", "regex", "words", "injection", "action"});
      filter_rule_config fr;
      fr.line = line_of(e);
      if (!e["name"]) fail(rp + ".name", e, "required");
      fr.name = get_string(e["name"], rp + ".name");
      if (auto v = e["detector"]) fr.detector = get_string(v, rp + ".detector");
      if (auto v = e["regex"]) fr.regex = get_string(v, rp + ".regex");
      if (auto v = e["words"]) fr.words = get_string_list(v, rp + ".words");
      if (auto v = e["injection"]) {
        const std::string ip = rp + ".injection";
        if (!v.IsMap() && !v.IsNull()) fail(ip, v, "expected a mapping (threshold, phrases)");
        injection_config ic;
        if (v.IsMap()) {
          check_keys(v, ip, {"threshold", "phrases"});
          if (auto t = v["threshold"]) ic.threshold = static_cast<int>(get_uint<std::uint32_t>(t, ip + ".threshold", 1'000'000));
          if (ic.threshold < 1) fail(ip + ".threshold", v["threshold"], "must be at least 1");
          if (auto ps = v["phrases"]) {
            if (!ps.IsSequence() || ps.size() == 0) fail(ip + ".phrases", ps, "expected a non-empty list");
            for (std::size_t k = 0; k < ps.size(); ++k) {
              const std::string pp = ip + ".phrases[" + std::to_string(k) + "]";
              check_keys(ps[k], pp, {"text", "regex", "score"});
              injection_phrase_config ph;
              if (auto x = ps[k]["text"]) ph.text = get_string(x, pp + ".text");
              if (auto x = ps[k]["regex"]) ph.regex = get_string(x, pp + ".regex");
              if (ph.text.empty() == ph.regex.empty()) fail(pp, ps[k], "give exactly one of text or regex");
              if (auto x = ps[k]["score"]) ph.score = static_cast<int>(get_uint<std::uint32_t>(x, pp + ".score", 1'000'000));
              if (ph.score < 1) fail(pp + ".score", ps[k]["score"], "must be at least 1");
              ic.phrases.push_back(std::move(ph));
            }
          }
        }
        fr.injection = std::move(ic);
      }
      if (int(!fr.detector.empty()) + int(!fr.regex.empty()) + int(!fr.words.empty()) + int(fr.injection.has_value()) != 1)
        fail(rp, e, "give exactly one of detector, regex, words or injection");
      if (auto v = e["action"]) {
        fr.action = get_string(v, rp + ".action");
        if (fr.action != "block" && fr.action != "redact" && fr.action != "flag")
          fail(rp + ".action", v, "expected block, redact or flag, got '" + fr.action + "'");
        if (fr.injection && fr.action == "redact")
          fail(rp + ".action", v, "an injection rule can block or flag, not redact");
      } else if (fr.injection) {
        fr.action = "flag";  // redact (the default of other rules) means nothing for a score
      }
      c.rules.push_back(std::move(fr));
    }
  }
  if (auto v = n["prompts"]) c.apply.prompts = get_string_list(v, p + ".prompts");
  if (auto v = n["responses"]) c.apply.responses = get_string_list(v, p + ".responses");
  if (auto v = n["max_match_bytes"]) c.max_match_bytes = get_uint<std::uint32_t>(v, p + ".max_match_bytes", 65'536);
}

void parse_prices(const YAML::Node& n, std::vector<price_config>& out) {
  if (!n.IsMap()) fail("prices", n, "expected a mapping of model names (or globs) to prices");
  for (auto it = n.begin(); it != n.end(); ++it) {
    price_config pc;
    pc.pattern = it->first.as<std::string>();
    const std::string p = "prices." + pc.pattern;
    pc.line = line_of(it->first);
    check_keys(it->second, p, {"input", "cached_input", "cache_write", "output"});
    if (!it->second["input"] || !it->second["output"]) fail(p, it->second, "input and output (USD per million tokens) are required");
    pc.input = get_double(it->second["input"], p + ".input");
    pc.output = get_double(it->second["output"], p + ".output");
    pc.cached_input = it->second["cached_input"] ? get_double(it->second["cached_input"], p + ".cached_input") : pc.input;
    pc.cache_write = it->second["cache_write"] ? get_double(it->second["cache_write"], p + ".cache_write") : pc.input;
    out.push_back(std::move(pc));
  }
}

}  // namespace

std::optional<std::string> canonical_san(std::string_view value, bool is_uri) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::string out(value);
  if (is_uri) {
    const auto colon = value.find(':');
    if (colon == 0 || colon == std::string_view::npos || colon + 1 == value.size() || !alpha(value[0])) return std::nullopt;
    for (std::size_t i = 0; i < colon; ++i) {
      const char c = value[i];
      if (!alpha(c) && !digit(c) && c != '+' && c != '-' && c != '.') return std::nullopt;
      out[i] = lower(c);
    }
    for (char c : value)
      if (c <= ' ' || c >= 0x7f) return std::nullopt;
    return out;
  }
  if (value.empty()) return std::nullopt;
  for (auto& c : out) {
    if (!alpha(c) && !digit(c) && c != '-' && c != '.' && c != '_' && c != '*') return std::nullopt;
    c = lower(c);
  }
  return out;
}

namespace {

team_config parse_team(const YAML::Node& n, const std::string& p) {
  check_keys(n, p, {"name", "models", "limits", "budget", "identities", "capture_text", "content_filters"});
  team_config t;
  t.line = line_of(n);
  if (!n["name"]) fail(p + ".name", n, "required");
  t.name = get_string(n["name"], p + ".name");
  if (auto v = n["models"]) t.models = get_string_list(v, p + ".models");
  if (auto v = n["limits"]) t.limits = parse_limits(v, p + ".limits");
  if (auto v = n["budget"]) t.budget = parse_budget(v, p + ".budget");
  if (auto v = n["identities"]) {
    t.identities = get_string_list(v, p + ".identities");
    for (std::size_t i = 0; i < t.identities.size(); ++i) {
      auto& id = t.identities[i];
      auto canonical = canonical_san(id, id.find(':') != std::string::npos);
      if (!canonical)
        fail(p + ".identities[" + std::to_string(i) + "]", v[i],
             "must be a URI with a scheme (spiffe://trust-domain/path) or a DNS name (letters, digits, '-', '.', "
             "'_', '*'), without spaces");
      id = std::move(*canonical);
    }
  }
  if (auto v = n["capture_text"]) t.capture_text = get_bool(v, p + ".capture_text");
  if (auto v = n["content_filters"]) t.content_filters = parse_filter_selection(v, p + ".content_filters");
  return t;
}

key_config parse_key(const YAML::Node& n, const std::string& p) {
  check_keys(n, p, {"id", "team", "name", "digest", "models", "expires", "enabled", "limits", "budget"});
  key_config k;
  k.line = line_of(n);
  for (const char* req : {"id", "team", "digest"})
    if (!n[req]) fail(p + "." + req, n, "required");
  k.id = get_string(n["id"], p + ".id");
  k.team = get_string(n["team"], p + ".team");
  k.digest = get_string(n["digest"], p + ".digest");
  if (auto v = n["name"]) k.name = get_string(v, p + ".name");
  if (auto v = n["models"]) k.models = get_string_list(v, p + ".models");
  if (auto v = n["expires"]) k.expires_unix = get_time(v, p + ".expires");
  if (auto v = n["enabled"]) k.enabled = get_bool(v, p + ".enabled");
  if (auto v = n["limits"]) k.limits = parse_limits(v, p + ".limits");
  if (auto v = n["budget"]) k.budget = parse_budget(v, p + ".budget");
  return k;
}

gateway_config parse_root(const YAML::Node& root) {
  gateway_config cfg;
  if (!root || root.IsNull()) throw config_error("<root>: the file is empty");
  check_keys(root, "", {"server", "providers", "models", "prices", "teams", "keys", "auth", "store", "audit",
                        "content_filters"});
  if (auto c = root["content_filters"]) parse_content_filters(c, cfg.content_filters);
  if (auto s = root["server"]) parse_server(s, cfg.server);
  if (auto a = root["audit"]) parse_audit(a, cfg.audit);
  if (auto a = root["auth"]) parse_auth(a, cfg.auth);
  if (auto s = root["store"]) parse_store(s, cfg.store);
  if (auto pr = root["prices"]) parse_prices(pr, cfg.prices);
  if (auto ts = root["teams"]) {
    if (!ts.IsSequence()) fail("teams", ts, "expected a list");
    for (std::size_t i = 0; i < ts.size(); ++i) cfg.teams.push_back(parse_team(ts[i], "teams[" + std::to_string(i) + "]"));
  }
  if (auto ks = root["keys"]) {
    if (!ks.IsSequence()) fail("keys", ks, "expected a list");
    for (std::size_t i = 0; i < ks.size(); ++i) cfg.keys.push_back(parse_key(ks[i], "keys[" + std::to_string(i) + "]"));
  }
  if (auto ps = root["providers"]) {
    if (!ps.IsSequence()) fail("providers", ps, "expected a list");
    for (std::size_t i = 0; i < ps.size(); ++i)
      cfg.providers.push_back(parse_provider(ps[i], "providers[" + std::to_string(i) + "]"));
  }
  if (auto ms = root["models"]) {
    if (!ms.IsSequence()) fail("models", ms, "expected a list");
    for (std::size_t i = 0; i < ms.size(); ++i) {
      const std::string p = "models[" + std::to_string(i) + "]";
      const YAML::Node& m = ms[i];
      check_keys(m, p, {"name", "provider", "upstream_model", "fallbacks", "content_filters"});
      model_config mc;
      mc.line = line_of(m);
      if (!m["name"]) fail(p + ".name", m, "required");
      mc.name = get_string(m["name"], p + ".name");
      if (!m["provider"]) fail(p + ".provider", m, "required");
      mc.primary.provider = get_string(m["provider"], p + ".provider");
      mc.primary.line = line_of(m["provider"]);
      mc.primary.upstream_model = m["upstream_model"] ? get_string(m["upstream_model"], p + ".upstream_model") : mc.name;
      if (auto fb = m["fallbacks"]) {
        if (!fb.IsSequence()) fail(p + ".fallbacks", fb, "expected a list");
        for (std::size_t j = 0; j < fb.size(); ++j)
          mc.fallbacks.push_back(parse_target(fb[j], p + ".fallbacks[" + std::to_string(j) + "]", mc.name));
      }
      if (auto v = m["content_filters"]) mc.content_filters = parse_filter_selection(v, p + ".content_filters");
      cfg.models.push_back(std::move(mc));
    }
  }
  return cfg;
}

load_result finish(gateway_config cfg, const std::string& origin) {
  cfg.source_path = origin;
  if (auto err = validate(cfg); !err.empty()) return {nullptr, origin + ": " + err};
  return {std::make_shared<const gateway_config>(std::move(cfg)), {}};
}

}  // namespace

std::string validate(const gateway_config& cfg) {
  std::set<std::string> names;
  for (std::size_t i = 0; i < cfg.providers.size(); ++i) {
    const auto& p = cfg.providers[i];
    const std::string path = "providers[" + std::to_string(i) + "]";
    if (p.name.empty()) return path + ".name: must not be empty (line " + std::to_string(p.line) + ")";
    if (!names.insert(p.name).second)
      return path + ".name: duplicate provider name '" + p.name + "' (line " + std::to_string(p.line) + ")";
    if ((p.type == "openai_compatible" || p.type == "azure_openai" || p.type == "bedrock" || p.type == "vertex") &&
        p.base_url.rfind("http://", 0) != 0 && p.base_url.rfind("https://", 0) != 0)
      return path + (p.type == "openai_compatible" ? ".base_url" : ".endpoint") + ": must start with http:// or https:// (line " +
             std::to_string(p.line) + ")";
  }
  std::set<std::string> models;
  for (std::size_t i = 0; i < cfg.models.size(); ++i) {
    const auto& m = cfg.models[i];
    const std::string path = "models[" + std::to_string(i) + "]";
    const std::string at = " (line " + std::to_string(m.line) + ")";
    if (m.name.empty()) return path + ".name: must not be empty" + at;
    if (!models.insert(m.name).second) return path + ".name: duplicate model name '" + m.name + "'" + at;
    auto line = [](const target_config& t) { return " (line " + std::to_string(t.line) + ")"; };
    if (!cfg.find_provider(m.primary.provider))
      return path + ".provider: model '" + m.name + "' refers to unknown provider '" + m.primary.provider + "'" +
             line(m.primary);
    for (std::size_t j = 0; j < m.fallbacks.size(); ++j)
      if (!cfg.find_provider(m.fallbacks[j].provider))
        return path + ".fallbacks[" + std::to_string(j) + "].provider: model '" + m.name +
               "' refers to unknown provider '" + m.fallbacks[j].provider + "'" + line(m.fallbacks[j]);
    // Vertex serves partner models (anthropic/claude-..., meta/...) through rawPredict in their
    // publisher's own request format; the adapter speaks Gemini's generateContent only, which
    // such a model answers with 404 or 400 on every call.
    for (std::size_t j = 0; j <= m.fallbacks.size(); ++j) {
      const target_config& t = j == 0 ? m.primary : m.fallbacks[j - 1];
      const auto* prov = cfg.find_provider(t.provider);
      if (!prov || prov->type != "vertex") continue;
      const std::string_view model = t.upstream_model.empty() ? std::string_view(m.name) : std::string_view(t.upstream_model);
      std::string_view publisher = "google";
      if (const auto at = model.find("publishers/"); at != std::string_view::npos && (at == 0 || model[at - 1] == '/'))
        publisher = model.substr(at + 11, model.find('/', at + 11) - (at + 11));
      else if (!model.starts_with("projects/") && !model.starts_with("models/") && model.find('/') != std::string_view::npos)
        publisher = model.substr(0, model.find('/'));
      if (publisher != "google")
        return path + (j == 0 ? std::string(".upstream_model") : ".fallbacks[" + std::to_string(j - 1) + "].upstream_model") +
               ": '" + std::string(model) + "' is a '" + std::string(publisher) +
               "' model, which Vertex serves through rawPredict in that publisher's own request format; the vertex "
               "provider speaks Gemini's generateContent only (for Claude, use a bedrock provider)" + line(t);
    }
  }
  for (std::size_t i = 0; i < cfg.models.size(); ++i)
    if (!cfg.find_price(cfg.models[i].name))
      return "models[" + std::to_string(i) + "]: model '" + cfg.models[i].name +
             "' has no price; add it (or a glob that matches it) under prices: with input and output USD per million "
             "tokens (line " + std::to_string(cfg.models[i].line) + ")";
  std::set<std::string> teams;
  for (std::size_t i = 0; i < cfg.teams.size(); ++i) {
    const auto& t = cfg.teams[i];
    const std::string at = " (line " + std::to_string(t.line) + ")";
    if (t.name.empty()) return "teams[" + std::to_string(i) + "].name: must not be empty" + at;
    // "-" is the team usage records anonymous calls under; "tg_..." is an API key's shape, which
    // is masked in every URL that holds it (the admin API could not name such a team).
    if (t.name == "-") return "teams[" + std::to_string(i) + "].name: '-' is reserved for anonymous callers" + at;
    if (t.name.starts_with("tg_"))
      return "teams[" + std::to_string(i) + "].name: must not start with 'tg_', as API keys do" + at;
    if (!teams.insert(t.name).second) return "teams[" + std::to_string(i) + "].name: duplicate team '" + t.name + "'" + at;
  }
  // A certificate identity names one team: listed under two, the first in file order would win,
  // and reordering the file would move its callers silently. And identities need certificates.
  std::map<std::string, std::string> identity_team;
  for (std::size_t i = 0; i < cfg.teams.size(); ++i) {
    const auto& t = cfg.teams[i];
    const std::string at = " (line " + std::to_string(t.line) + ")";
    if (!t.identities.empty() && cfg.server.tls.client_ca_file.empty())
      return "teams[" + std::to_string(i) + "].identities: no caller presents a certificate without " +
             "server.tls.client_ca_file (mTLS); set it, or remove the identities" + at;
    for (const auto& id : t.identities) {
      if (id.empty()) return "teams[" + std::to_string(i) + "].identities: an identity must not be empty" + at;
      auto [it, fresh] = identity_team.emplace(id, t.name);
      if (!fresh)
        return "teams[" + std::to_string(i) + "].identities: '" + id + "' is already the identity of team '" +
               it->second + "'" + at;
    }
  }
  std::set<std::string> keys;
  for (std::size_t i = 0; i < cfg.keys.size(); ++i) {
    const auto& k = cfg.keys[i];
    const std::string path = "keys[" + std::to_string(i) + "]";
    const std::string at = " (line " + std::to_string(k.line) + ")";
    if (k.id.empty() || k.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != std::string::npos)
      return path + ".id: must be letters and digits only (it is the middle of tg_<id>_<secret>)" + at;
    if (k.id.size() > 64)  // (policy::parse_key's bound: a longer id could never authenticate)
      return path + ".id: at most 64 characters (it is the middle of tg_<id>_<secret>)" + at;
    if (!keys.insert(k.id).second) return path + ".id: duplicate key id '" + k.id + "'" + at;
    if (!cfg.find_team(k.team)) return path + ".team: unknown team '" + k.team + "'" + at;
    if (!digest_of_kind(k.digest, "sha256") && !digest_of_kind(k.digest, "hmac-sha256"))
      return path + ".digest: expected sha256:<64 lowercase hex> or hmac-sha256:<64 lowercase hex> (tollgatectl key digest prints it)" + at;
    if (k.digest.rfind("hmac-sha256:", 0) == 0 && cfg.auth.pepper.empty())
      return path + ".digest: an hmac-sha256 digest needs auth.pepper" + at;
  }
  if (const auto& m = cfg.content_filters.moderation) {
    const std::string at = " (line " + std::to_string(m->line) + ")";
    const provider_config* mp = nullptr;
    for (const auto& p : cfg.providers)
      if (p.name == m->provider) mp = &p;
    if (!mp) return "content_filters.moderation.provider: unknown provider '" + m->provider + "'" + at;
    if (mp->type != "openai_compatible")
      return "content_filters.moderation.provider: '" + m->provider + "' is a " + mp->type +
             " provider; moderation needs an openai_compatible one (POST <base_url>/moderations)" + at;
    for (const auto& r : cfg.content_filters.rules)
      if (r.name == "moderation") return "content_filters.rules: the name 'moderation' is the moderation endpoint's" + at;
  }
  if (cfg.store.replicas == 0) return "store.replicas: must be at least 1";
  if (cfg.server.timeouts.write_ms < 100) return "server.timeouts.write_ms: must be at least 100";
  if (cfg.audit.enabled && cfg.audit.dir.empty()) return "audit.dir: must not be empty (or set audit.enabled: false)";
  if (cfg.audit.segment_max_bytes < 4096) return "audit.segment_max_bytes: must be at least 4096";
  if (cfg.audit.mode == audit_config::durability::batched && cfg.audit.batch_ms == 0)
    return "audit.batch_ms: must be at least 1 in batched mode";
  if (cfg.store.lease_ms < 1000) return "store.lease_ms: must be at least 1000";
  if (cfg.store.type == "redis" && cfg.store.redis.timeout_ms < 5)
    return "store.redis.timeout_ms: must be at least 5 (an admission batch must reach Redis, run and be answered "
           "within it; 2 ms of it are kept for the answer)";
  if (const auto& t = cfg.store.redis.tls; cfg.store.type == "redis" && t.enabled) {
    if (!cfg.store.redis.unix_path.empty()) return "store.redis.tls: TLS needs a TCP address, not a unix socket";
    if (t.cert_file.empty() != t.key_file.empty()) return "store.redis.tls: cert_file and key_file must be set together";
    for (const auto& [name, file] : {std::pair<const char*, const std::string&>{"ca_file", t.ca_file},
                                     {"cert_file", t.cert_file}, {"key_file", t.key_file}})
      if (!file.empty() && !std::ifstream(file).good())
        return std::string("store.redis.tls.") + name + ": cannot read " + file;
  }
  const auto& l = cfg.server.limits;
  if (l.max_header_bytes < 256) return "server.limits.max_header_bytes: must be at least 256";
  if (l.max_url_bytes >= l.max_header_bytes) return "server.limits.max_url_bytes: must be below max_header_bytes";
  if (l.max_header_count == 0) return "server.limits.max_header_count: must be at least 1";
  if (cfg.server.tls.cert_file.empty() != cfg.server.tls.key_file.empty())
    return "server.tls: cert_file and key_file must be set together";
  // Without a certificate of its own the listener is plain HTTP and asks for none: the CA would
  // be ignored, and an open gateway meant to require certificates would take anyone.
  if (!cfg.server.tls.client_ca_file.empty() && cfg.server.tls.cert_file.empty())
    return "server.tls.client_ca_file: mTLS needs the listener's own cert_file and key_file (TLS); set them, or "
           "remove client_ca_file";
  if (!cfg.server.tls.client_crl_file.empty() && cfg.server.tls.client_ca_file.empty())
    return "server.tls.client_crl_file: revocation lists apply to client certificates; set client_ca_file too";
  return {};
}

const price_config* gateway_config::find_price(std::string_view model) const {
  const price_config* best = nullptr;
  for (auto& p : prices) {
    if (p.pattern == model) return &p;
    if (glob_match(p.pattern, model) && (!best || p.pattern.size() > best->pattern.size())) best = &p;
  }
  return best;
}

bool glob_match(std::string_view pat, std::string_view s) noexcept {
  // Iterative matcher with one backtrack point: linear for patterns with `*` only.
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < s.size()) {
    if (p < pat.size() && pat[p] != '*' && pat[p] == s[t]) {
      ++p;
      ++t;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

load_result load_string(const std::string& yaml, const std::string& origin) {
  try {
    const YAML::Node root = YAML::Load(yaml);
    std::size_t budget = 1'000'000;
    reject_duplicate_keys(root, "", budget);
    return finish(parse_root(root), origin);
  } catch (const config_error& e) {
    return {nullptr, origin + ": " + e.what()};
  } catch (const YAML::Exception& e) {
    return {nullptr, origin + ": invalid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")"};
  }
}

load_result load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {nullptr, path + ": cannot open file"};
  std::ostringstream ss;
  ss << in.rdbuf();
  auto r = load_string(ss.str(), path);
  // A relative audit directory or settlement journal lives beside the config file, wherever the
  // gateway was started.
  const auto relative = [](const std::string& p) { return !p.empty() && p.front() != '/'; };
  if (r && (relative(r.config->audit.dir) || relative(r.config->store.settlement_journal))) {
    auto cfg = std::make_shared<gateway_config>(*r.config);
    auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? std::string(".") : path.substr(0, slash == 0 ? 1 : slash);
    if (relative(cfg->audit.dir)) cfg->audit.dir = dir + "/" + cfg->audit.dir;
    if (relative(cfg->store.settlement_journal)) cfg->store.settlement_journal = dir + "/" + cfg->store.settlement_journal;
    r.config = std::move(cfg);
  }
  return r;
}

}  // namespace tollgate::config
