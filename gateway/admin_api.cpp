// SPDX-License-Identifier: Apache-2.0
// The admin API (admin listener only): create, show and revoke keys; read budget usage.
// Authenticated with admin tokens whose SHA-256 digests are in config (auth.admin_tokens).
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse_query.hpp>

#include "gateway/core/text.hpp"
#include "gateway/pipeline.hpp"
#include "policy/keys.hpp"

namespace tollgate::gateway {
namespace json = boost::json;
namespace {

/// The admin token's name, or empty when missing or wrong. The same constant-time digest check
/// as API keys (admin digests are plain sha256:, never peppered).
std::string admin_name(const request_context& ctx) {
  if (ctx.credential.empty()) return {};
  std::string found;
  for (auto& t : ctx.snap->cfg->auth.admin_tokens)
    if (policy::verify_secret(ctx.credential, t.digest, {})) found = t.name;
  return found;
}

json::object key_json(const policy::key_record& k) {
  json::array models;
  for (auto& m : k.models) models.push_back(json::string(m));
  json::object o{{"id", k.id},          {"team", k.team},       {"name", k.name},
                 {"models", models},    {"enabled", k.enabled}, {"created_unix", k.created_unix},
                 {"expires_unix", k.expires_unix},
                 {"limits", {{"rpm", k.limits.rpm}, {"tpm", k.limits.tpm}, {"concurrency", k.limits.concurrency}}}};
  if (k.budget.set())
    o["budget"] = {{"usd", double(k.budget.limit_nano) / 1e9},
                   {"period", config::period_name(k.budget.period)},
                   {"soft", k.budget.soft}};
  return o;
}

/// Reads a non-negative integer field; false with a message when present but wrong.
bool read_uint(const json::object& o, std::string_view name, std::uint64_t& out, std::string& err) {
  auto* v = o.if_contains(name);
  if (!v) return true;
  if (v->is_uint64()) out = v->get_uint64();
  else if (v->is_int64() && v->get_int64() >= 0) out = std::uint64_t(v->get_int64());
  else {
    err = std::string(name) + " must be a non-negative integer";
    return false;
  }
  return true;
}

/// Fills a key prototype from the POST body; returns an error message or "".
std::string parse_key_request(const json::object& o, policy::key_record& k) {
  auto* team = o.if_contains("team");
  if (!team || !team->is_string() || team->get_string().empty()) return "team (string) is required";
  k.team = std::string(team->get_string());
  if (auto* n = o.if_contains("name")) {
    if (!n->is_string()) return "name must be a string";
    k.name = std::string(n->get_string());
  }
  if (auto* m = o.if_contains("models")) {
    if (!m->is_array()) return "models must be a list of model names or globs";
    for (auto& e : m->get_array()) {
      if (!e.is_string()) return "models must be a list of model names or globs";
      k.models.emplace_back(e.get_string());
    }
  }
  std::string err;
  std::uint64_t expires = 0;
  if (!read_uint(o, "expires_unix", expires, err)) return err;
  k.expires_unix = std::int64_t(expires);
  if (auto* l = o.if_contains("limits")) {
    if (!l->is_object()) return "limits must be an object with rpm, tpm, concurrency";
    const auto& lo = l->get_object();
    for (auto& [name, _] : lo)
      if (name != "rpm" && name != "tpm" && name != "concurrency") return "limits." + std::string(name) + ": unknown field";
    if (!read_uint(lo, "rpm", k.limits.rpm, err) || !read_uint(lo, "tpm", k.limits.tpm, err) ||
        !read_uint(lo, "concurrency", k.limits.concurrency, err))
      return "limits." + err;
  }
  if (auto* b = o.if_contains("budget")) {
    if (!b->is_object()) return "budget must be an object with usd, period, soft";
    const auto& bo = b->get_object();
    auto* usd = bo.if_contains("usd");
    if (!usd || !usd->is_number() || usd->to_number<double>() < 0 || usd->to_number<double>() > 9e6)
      return "budget.usd must be a number from 0 to 9000000";
    k.budget.limit_nano = static_cast<std::int64_t>(usd->to_number<double>() * 1e9 + 0.5);
    if (auto* p = bo.if_contains("period")) {
      const auto period = p->is_string() ? config::parse_period(p->get_string()) : std::nullopt;
      if (!period) return "budget.period must be daily, monthly or total";
      k.budget.period = *period;
    }
    if (auto* sf = bo.if_contains("soft")) {
      if (!sf->is_number() || sf->to_number<double>() < 0 || sf->to_number<double>() > 1)
        return "budget.soft must be a fraction between 0 and 1";
      k.budget.soft = sf->to_number<double>();
    }
  }
  return {};
}

std::string query_param(std::string_view query, std::string_view name) {
  auto params = boost::urls::parse_query(query);
  if (!params) return {};
  for (auto p : *params)
    if (p.key == name) return p.value.decode();
  return {};
}

/// The audit trail's name for an admin request ("key.create", ...); "unknown" for other paths.
std::string admin_action(const request_context& ctx) {
  if (ctx.path == "/admin/v1/keys" && ctx.method == "POST") return "key.create";
  if (ctx.path.starts_with("/admin/v1/keys/")) return ctx.method == "DELETE" ? "key.revoke" : "key.show";
  if (ctx.path == "/admin/v1/budget") return "budget.show";
  return "unknown";
}

awaitable<void> send(response_sink& sink, unsigned status, const json::object& o) {
  co_await sink.send_full(status, "application/json", json::serialize(o));
}

}  // namespace

awaitable<void> handle_admin_api(worker& w, request_context& ctx, response_sink& sink) {
  const auto& cfg = *ctx.snap->cfg;
  ctx.action = admin_action(ctx);
  if (cfg.auth.admin_tokens.empty()) {
    co_await answer_error(ctx, sink, errc::permission_denied,
                          "The admin API is disabled: no auth.admin_tokens in the configuration.");
    co_return;
  }
  const std::string admin = admin_name(ctx);
  ctx.admin = admin;
  if (admin.empty()) {
    co_await answer_error(ctx, sink, errc::invalid_api_key, "A valid admin token is required (Authorization: Bearer <token>).");
    co_return;
  }
  policy::engine& pol = w.policy();
  constexpr std::string_view keys_prefix = "/admin/v1/keys/";
  if (ctx.path == "/admin/v1/keys" && ctx.method == "POST") {
    boost::system::error_code ec;
    auto v = json::parse(ctx.body, ec);
    if (ec || !v.is_object()) {
      co_await answer_error(ctx, sink, errc::invalid_json, "The body must be a JSON object.");
      co_return;
    }
    policy::key_record proto;
    if (auto err = parse_key_request(v.get_object(), proto); !err.empty()) {
      co_await answer_error(ctx, sink, errc::invalid_value, err);
      co_return;
    }
    auto r = co_await pol.create_key(ctx.worker, cfg, proto);
    if (!r) {
      const bool unknown = r.error().starts_with("unknown team");
      co_await answer_error(ctx, sink, unknown ? errc::invalid_value : errc::policy_store_unavailable, r.error(),
                            unknown ? "team" : "");
      co_return;
    }
    ctx.action_target = r->record.id;
    json::object o = key_json(r->record);
    o["key"] = r->full;  // the only time the secret leaves the gateway
    co_await send(sink, 201, o);
  } else if (ctx.path.starts_with(keys_prefix) && (ctx.method == "GET" || ctx.method == "DELETE")) {
    const std::string id = ctx.path.substr(keys_prefix.size());
    ctx.action_target = id;
    if (ctx.method == "DELETE") {
      auto r = co_await pol.revoke_key(ctx.worker, cfg, id);
      if (!r) {
        const bool missing = r.error().starts_with("no key");
        co_await answer_error(ctx, sink, missing ? errc::not_found : errc::policy_store_unavailable, r.error());
        co_return;
      }
      co_await send(sink, 200, key_json(*r));
    } else {
      auto r = co_await pol.find_key(ctx.worker, cfg, id);
      if (!r.reachable) co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      else if (!r.key) co_await answer_error(ctx, sink, errc::not_found, "No key with id '" + id + "'.");
      else co_await send(sink, 200, key_json(*r.key));
    }
  } else if (ctx.path == "/admin/v1/budget" && ctx.method == "GET") {
    // ?team=T for the team's budget, &key=ID for that key's.
    const std::string team = query_param(ctx.query, "team"), key = query_param(ctx.query, "key");
    ctx.action_target = key.empty() ? team : team + "/" + key;
    const config::team_config* t = cfg.find_team(team);
    if (!t) {
      co_await answer_error(ctx, sink, errc::not_found, "No team '" + team + "'.", "team");
      co_return;
    }
    policy::scope_spec s{"t", t->name, t->limits, t->budget};
    if (!key.empty()) {
      auto r = co_await pol.find_key(ctx.worker, cfg, key);
      if (!r.key || r.key->team != t->name) {
        co_await answer_error(ctx, sink, errc::not_found, "No key '" + key + "' in team '" + team + "'.", "key");
        co_return;
      }
      s = {"k:" + key, t->name, r.key->limits, r.key->budget};
    }
    auto b = co_await pol.budget(ctx.worker, s);
    if (!b.reachable) {
      co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      co_return;
    }
    json::object o{{"team", t->name}, {"spent_usd", double(b.spent) / 1e9}, {"reserved_usd", double(b.reserved) / 1e9},
                   {"spent_nano", b.spent}, {"reserved_nano", b.reserved}};
    if (!key.empty()) o["key_id"] = key;
    if (s.budget.set()) o["limit_usd"] = double(s.budget.limit_nano) / 1e9;
    co_await send(sink, 200, o);
  } else {
    co_await answer_error(ctx, sink, errc::not_found, "Unknown admin URL: " + ctx.method + " " + ctx.path + ".");
  }
}

}  // namespace tollgate::gateway
