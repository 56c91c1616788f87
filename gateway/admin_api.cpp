// SPDX-License-Identifier: Apache-2.0
// The admin API (admin listener only): create, show and revoke keys; read budget usage.
// Authenticated with admin tokens whose SHA-256 digests are in config (auth.admin_tokens).
#include <boost/url/pct_string_view.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse_query.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <iterator>
#include <limits>
#include <map>
#include <optional>

#include "gateway/audit/audit_log.hpp"
#include "gateway/core/text.hpp"
#include "gateway/core/time.hpp"
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
  if (!k.old_digest.empty() && k.old_digest_expires_unix > 0) o["previous_secret_valid_until_unix"] = k.old_digest_expires_unix;
  return o;
}

/// Reads a non-negative integer field of at most `max`; false with a message when present but wrong.
bool read_uint(const json::object& o, std::string_view name, std::uint64_t& out, std::string& err,
               std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) {
  auto* v = o.if_contains(name);
  if (!v) return true;
  std::uint64_t got = 0;
  if (v->is_uint64()) got = v->get_uint64();
  else if (v->is_int64() && v->get_int64() >= 0) got = std::uint64_t(v->get_int64());
  else {
    err = std::string(name) + " must be a non-negative integer";
    return false;
  }
  if (got > max) {
    err = std::string(name) + " must be at most " + std::to_string(max);
    return false;
  }
  out = got;
  return true;
}

/// The rate limits' fields, with the largest value each accepts (the config file's too).
constexpr std::pair<const char*, std::uint64_t> limit_fields[] = {{"rpm", config::limits_config::max_rpm},
                                                                    {"tpm", config::limits_config::max_tpm},
                                                                    {"concurrency", config::limits_config::max_concurrency}};

/// The limit fields present in `o`, each read and checked against its bound into the slot of the
/// same place in limit_fields; false with a message at the first wrong one (slots then partly set).
template <class Slot>
bool read_limit_fields(const json::object& o, Slot* const (&slots)[std::size(limit_fields)], std::string& err) {
  for (std::size_t i = 0; i < std::size(limit_fields); ++i) {
    const auto [name, max] = limit_fields[i];
    if (!o.if_contains(name)) continue;
    std::uint64_t v = 0;
    if (!read_uint(o, name, v, err, max)) return false;
    *slots[i] = v;
  }
  return true;
}

/// "models": a list of names or globs.
std::string parse_models(const json::object& o, std::vector<std::string>& out) {
  if (auto* m = o.if_contains("models")) {
    if (!m->is_array()) return "models must be a list of model names or globs";
    for (auto& e : m->get_array()) {
      if (!e.is_string()) return "models must be a list of model names or globs";
      out.emplace_back(e.get_string());
    }
  }
  return {};
}

/// budget.usd as nano-USD, or an error.
std::string parse_usd(const json::value& usd, std::int64_t& nano) {
  if (!usd.is_number() || usd.to_number<double>() < 0 || usd.to_number<double>() > 9e6)
    return "budget.usd must be a number from 0 to 9000000";
  nano = static_cast<std::int64_t>(usd.to_number<double>() * 1e9 + 0.5);
  return {};
}

/// "period" and "soft" of a budget object (absent ones untouched); any field but usd, period and
/// soft is refused (a misspelt "perod" left the period monthly without a word).
std::string parse_period_soft(const json::object& bo, std::optional<config::budget_period>& period, std::optional<double>& soft) {
  for (auto& [name, _] : bo)
    if (name != "usd" && name != "period" && name != "soft") return "budget." + std::string(name) + ": unknown field";
  if (auto* p = bo.if_contains("period")) {
    period = p->is_string() ? config::parse_period(p->get_string()) : std::nullopt;
    if (!period) return "budget.period must be daily, monthly or total";
  }
  if (auto* sf = bo.if_contains("soft")) {
    if (!sf->is_number() || sf->to_number<double>() < 0 || sf->to_number<double>() > 1)
      return "budget.soft must be a fraction between 0 and 1";
    soft = sf->to_number<double>();
  }
  return {};
}

/// "limits" {rpm, tpm, concurrency} and "budget" {usd, period, soft} of a new key or team.
std::string parse_limits_budget(const json::object& o, config::limits_config& limits, config::budget_config& budget) {
  std::string err;
  if (auto* l = o.if_contains("limits")) {
    if (!l->is_object()) return "limits must be an object with rpm, tpm, concurrency";
    const auto& lo = l->get_object();
    for (auto& [name, _] : lo)
      if (name != "rpm" && name != "tpm" && name != "concurrency") return "limits." + std::string(name) + ": unknown field";
    if (!read_limit_fields(lo, {&limits.rpm, &limits.tpm, &limits.concurrency}, err)) return "limits." + err;
  }
  if (auto* b = o.if_contains("budget"); b && !b->is_null()) {
    if (!b->is_object()) return "budget must be an object with usd, period, soft";
    const auto& bo = b->get_object();
    auto* usd = bo.if_contains("usd");
    if (!usd) return "budget.usd must be a number from 0 to 9000000 (it is required)";
    if (err = parse_usd(*usd, budget.limit_nano); !err.empty()) return err;
    std::optional<config::budget_period> period;
    std::optional<double> soft;
    if (err = parse_period_soft(bo, period, soft); !err.empty()) return err;
    if (period) budget.period = *period;
    if (soft) budget.soft = *soft;
  }
  return {};
}

/// Fills a key prototype from the POST body; returns an error message or "".
std::string parse_key_request(const json::object& o, policy::key_record& k) {
  for (auto& [name, _] : o)
    if (name != "team" && name != "name" && name != "models" && name != "expires_unix" && name != "limits" &&
        name != "budget")
      return std::string(name) + ": unknown field (limits go in \"limits\": {rpm, tpm, concurrency})";
  auto* team = o.if_contains("team");
  if (!team || !team->is_string() || team->get_string().empty()) return "team (string) is required";
  k.team = std::string(team->get_string());
  if (auto* n = o.if_contains("name")) {
    if (!n->is_string()) return "name must be a string";
    k.name = std::string(n->get_string());
    // Listed in tables on admins' terminals: no escape sequences, no line breaks.
    if (k.name.size() > 128) return "name must be at most 128 bytes";
    for (unsigned char c : k.name)
      if (c < 0x20 || c == 0x7f) return "name must not contain control characters";
  }
  if (auto err = parse_models(o, k.models); !err.empty()) return err;
  std::string err;
  std::uint64_t expires = 0;
  if (!read_uint(o, "expires_unix", expires, err)) return err;
  // Seconds: a value in milliseconds (today's is ~1.8e12) would be a key that never expires.
  if (expires > 253'402'300'799) return "expires_unix must be unix seconds (at most 253402300799, the end of year 9999)";
  // A key that is expired at birth would show its secret for nothing (0: never expires).
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (expires != 0 && std::int64_t(expires) <= now_s) return "expires_unix is in the past (0, or leave it out, for a key that never expires)";
  k.expires_unix = std::int64_t(expires);
  return parse_limits_budget(o, k.limits, k.budget);
}

/// A team name: what config accepts, and safe in a URL path. Not "-" (usage records anonymous
/// calls under it), and not "tg_..." (a key's shape: masked in every path that holds it).
bool valid_team_name(std::string_view n) {
  if (n.empty() || n.size() > 64 || n == "-" || n.starts_with("tg_")) return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return true;
}

/// PUT /admin/v1/quotas body: rpm, tpm, concurrency at the top; budget {usd, period, soft} or null.
std::string parse_quota_patch(const json::object& o, policy::engine::quota_patch& p) {
  for (auto& [name, _] : o)
    if (name != "team" && name != "key_id" && name != "rpm" && name != "tpm" && name != "concurrency" && name != "budget")
      return std::string(name) + ": unknown field";
  std::string err;
  if (!read_limit_fields(o, {&p.rpm, &p.tpm, &p.concurrency}, err)) return err;
  if (auto* b = o.if_contains("budget")) {
    if (b->is_null()) {
      p.remove_budget = true;
    } else if (!b->is_object()) {
      return "budget must be an object with usd, period, soft (or null to remove it)";
    } else {
      const auto& bo = b->get_object();
      if (auto* usd = bo.if_contains("usd")) {
        std::int64_t nano = 0;
        if (err = parse_usd(*usd, nano); !err.empty()) return err;
        p.budget_nano = nano;
      }
      if (err = parse_period_soft(bo, p.period, p.soft); !err.empty()) return err;
    }
  }
  if (!p.rpm && !p.tpm && !p.concurrency && !p.budget_nano && !p.period && !p.soft && !p.remove_budget)
    return "nothing to change: give rpm, tpm, concurrency or budget";
  return {};
}

json::object limits_json(const config::limits_config& l) {
  return {{"rpm", l.rpm}, {"tpm", l.tpm}, {"concurrency", l.concurrency}};
}

json::value budget_json(const config::budget_config& b) {
  if (!b.set()) return nullptr;
  return json::object{{"usd", double(b.limit_nano) / 1e9}, {"limit_nano", b.limit_nano},
                      {"period", config::period_name(b.period)}, {"soft", b.soft}};
}

// Built outside the coroutine: GCC 12 miscompiles string literals in brace-initialisers there.
json::object list_json(json::array data) { return {{"object", "list"}, {"data", std::move(data)}}; }
/// A page of a listing, as OpenAI's lists: `first_id`, `last_id` (the cursor for `?after=`), `has_more`.
json::object page_json(json::array data, std::string first, std::string last, bool has_more) {
  json::object o = list_json(std::move(data));
  o["first_id"] = first.empty() ? json::value(nullptr) : json::value(first);
  o["last_id"] = last.empty() ? json::value(nullptr) : json::value(last);
  o["has_more"] = has_more;
  return o;
}
json::object usage_json(std::int64_t from, std::int64_t to, json::array data, json::object total) {
  return {{"object", "usage"}, {"from", from}, {"to", to}, {"data", std::move(data)}, {"total", std::move(total)}};
}

json::object team_json(const policy::engine::team_view& v) {
  const auto& t = *v.team;
  json::array models;
  for (auto& m : t.models) models.push_back(json::string(m));
  return {{"name", t.name},     {"models", models},          {"limits", limits_json(t.limits)},
          {"budget", budget_json(t.budget)}, {"source", v.source}, {"created_unix", v.created_unix}};
}

std::string query_param(std::string_view query, std::string_view name) {
  auto params = boost::urls::parse_query(query);
  if (!params) return {};
  for (auto p : *params)
    if (p.key == name) return p.value.decode();
  return {};
}

/// A blank key id where one was given: a script's unset variable, which would otherwise act on
/// the whole team (`"key_id": ""` set the team's quota).
bool blank(std::string_view s) { return s.find_first_not_of(" \t") == std::string_view::npos; }

/// Whether `name` is in the query, even with an empty value (`?key=`).
bool has_query_param(std::string_view query, std::string_view name) {
  auto params = boost::urls::parse_query(query);
  if (!params) return false;
  for (auto p : *params)
    if (p.key == name) return true;
  return false;
}

/// A listing's page: `?limit=` (1 to 1000, default 100) and `?after=` (the previous page's
/// last_id). Empty, or why the query is wrong, with the parameter's name in `param`.
constexpr std::size_t default_page = 100, max_page = 1000;
std::string page_query(std::string_view query, std::size_t& limit, std::string& after, std::string& param) {
  limit = default_page;
  after = query_param(query, "after");
  if (has_query_param(query, "limit")) {
    param = "limit";
    const std::string v = query_param(query, "limit");
    std::size_t n = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (v.empty() || ec != std::errc{} || end != v.data() + v.size() || n < 1 || n > max_page)
      return "limit must be a whole number from 1 to " + std::to_string(max_page);
    limit = n;
  }
  if (has_query_param(query, "after") && blank(after)) {
    param = "after";
    return "after is empty: give the last_id of the previous page, or leave it out for the first";
  }
  return {};
}


/// A key's id where a whole key `tg_<id>_<secret>` was given in its place (a leaked key pasted
/// into `tollgatectl key revoke`): the admin call acts on that id, and the secret reaches no log
/// line, audit record or answer. Anything else is returned as it is.
std::string key_id_only(std::string given) {
  if (auto k = policy::parse_key(given)) return std::string(k->id);
  return given;
}

/// The audit trail's name for an admin request ("key.create", ...); "unknown" for other paths.
std::string admin_action(const request_context& ctx) {
  const bool get = ctx.method == "GET", post = ctx.method == "POST", del = ctx.method == "DELETE";
  if (ctx.path == "/admin/v1/keys") return post ? "key.create" : get ? "key.list" : "unknown";
  if (ctx.path.starts_with("/admin/v1/keys/"))
    return ctx.path.ends_with("/rotate") ? (post ? "key.rotate" : "unknown") : del ? "key.revoke" : get ? "key.show" : "unknown";
  if (ctx.path == "/admin/v1/teams") return post ? "team.create" : get ? "team.list" : "unknown";
  if (ctx.path.starts_with("/admin/v1/teams/")) return del ? "team.delete" : get ? "team.show" : "unknown";
  if (ctx.path == "/admin/v1/quotas") return ctx.method == "PUT" ? "quota.set" : get ? "quota.show" : "unknown";
  if (ctx.path == "/admin/v1/budget") return get ? "budget.show" : "unknown";
  if (ctx.path == "/admin/v1/usage") return get ? "usage.show" : "unknown";
  return "unknown";
}

awaitable<void> send(response_sink& sink, unsigned status, const json::object& o) {
  co_await sink.send_full(status, "application/json", json::serialize(o));
}

}  // namespace

awaitable<void> handle_admin_api(worker& w, request_context& ctx, response_sink& sink) {
  const auto& cfg = *ctx.snap->cfg;
  // (The session did it already; callers of this function may not.)
  if (policy::mask_keys_in_path(ctx.path)) ctx.path_masked = true;
  ctx.action = admin_action(ctx);
  if (cfg.auth.admin_tokens.empty()) {
    co_await answer_error(ctx, sink, errc::admin_api_disabled,
                          "The admin API is disabled: no auth.admin_tokens in the configuration.");
    co_return;
  }
  const std::string admin = admin_name(ctx);
  ctx.admin = admin;
  if (admin.empty()) {
    co_await answer_error(ctx, sink, errc::invalid_api_key, "A valid admin token is required (Authorization: Bearer <token>).");
    co_return;
  }
  if (auto* au = w.audit(); au && !au->healthy() && !au->fail_open()) {
    // Fail closed as for calls: no key is created, revoked or requoted (and no new secret shown)
    // while the record of it could not be kept. Reads too: each is audited, and a strict trail
    // would cut its answer (/metrics and /healthz, outside the admin API, go on).
    static const header_list retry{{"Retry-After", "1"}};
    ctx.details = "audit_unavailable";
    co_await answer_error(ctx, sink, errc::audit_unavailable,
                          "The gateway cannot write its audit trail; the admin API is refused until it can. Retry "
                          "shortly.",
                          "", retry);
    co_return;
  }
  policy::engine& pol = w.policy();
  const std::string& a = ctx.action;
  std::optional<json::object> body;
  if (ctx.method == "POST" || ctx.method == "PUT") {
    boost::system::error_code ec;
    // Only a rotation has nothing it must say: an empty body is its defaults.
    const bool empty_ok = a == "key.rotate" && ctx.body.empty();
    auto v = json::parse(empty_ok ? std::string_view("{}") : std::string_view(ctx.body), ec);
    if (ec || !v.is_object()) {
      co_await answer_error(ctx, sink, errc::invalid_json, "The body must be a JSON object.");
      co_return;
    }
    body = std::move(v.get_object());
  }
  constexpr std::string_view keys_prefix = "/admin/v1/keys/", teams_prefix = "/admin/v1/teams/";
  // An engine error as an answer: unreachable store 503, unknown 404, exists or in config 409.
  auto fail_with = [&](const std::string& err) {
    errc e = errc::invalid_value;
    // (A team created whose earlier keys could not all be revoked: the store failed half-way.)
    if (err.starts_with("the policy store is unavailable") || err.find("' was created, but") != std::string::npos)
      e = errc::policy_store_unavailable;
    else if (err.starts_with("no ")) e = errc::not_found;
    else if (err.find("already exists") != std::string::npos || err.find("config file") != std::string::npos ||
             err.find("is revoked") != std::string::npos || err.find("changed while") != std::string::npos)
      e = errc::conflict;
    return e;
  };

  // A refused write is audited with what it asked for: the team a key was to be made for, the
  // team (and key) a quota was to be set on, the team to create. (Strings only, keys cut to ids.)
  auto target_of = [&](std::string_view field) {
    auto* v = body ? body->if_contains(field) : nullptr;
    return v && v->is_string() ? key_id_only(std::string(v->get_string())) : std::string();
  };
  if (a == "key.create") {
    ctx.action_target = target_of("team");
    policy::key_record proto;
    if (auto err = parse_key_request(*body, proto); !err.empty()) {
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
  } else if (a == "key.list") {
    policy::key_query q;
    q.team = query_param(ctx.query, "team");
    ctx.action_target = q.team;
    std::string param;
    std::string err = page_query(ctx.query, q.limit, q.after, param);
    if (err.empty() && blank(q.team) && has_query_param(ctx.query, "team")) {
      // (an unset $TEAM would list every team's keys)
      err = "team is empty: name a team, or leave the parameter out to list every team's keys";
      param = "team";
    }
    if (!err.empty()) {
      co_await answer_error(ctx, sink, errc::invalid_value, err, param);
      co_return;
    }
    auto page = co_await pol.list_keys(ctx.worker, cfg, q);
    if (!page) {
      co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      co_return;
    }
    json::array data;
    for (auto& k : page->keys) data.push_back(key_json(k));
    const bool empty = page->keys.empty();
    const json::object list = page_json(std::move(data), empty ? std::string() : page->keys.front().id,
                                        empty ? std::string() : page->keys.back().id, page->has_more);
    co_await send(sink, 200, list);
  } else if (a == "key.rotate") {
    // (`/admin/v1/keys/rotate` names no key: its id would be cut from "rotate" itself.)
    std::string id = ctx.path.substr(keys_prefix.size());
    id.resize(id.size() >= std::string_view("/rotate").size() ? id.size() - std::string_view("/rotate").size() : 0);
    if (id.empty()) {
      co_await answer_error(ctx, sink, errc::not_found, "No key id in the URL: POST /admin/v1/keys/<id>/rotate.");
      co_return;
    }
    ctx.action_target = id;
    std::string err;
    // Strict as every body: "overlap": 3600 read as no overlap would cut the old secret off now.
    for (auto& [field, _] : *body)
      if (field != "overlap_seconds") {
        const std::string name(field);
        co_await answer_error(ctx, sink, errc::invalid_value,
                              name + ": unknown field (a rotation takes only overlap_seconds)", name);
        co_return;
      }
    std::uint64_t overlap = 0;
    if (!read_uint(*body, "overlap_seconds", overlap, err) || overlap > 30 * 86400) {
      // Named, not a temporary of a conditional: GCC 12 destroyed that one twice in this coroutine.
      if (err.empty()) err = "overlap_seconds must be at most 2592000 (30 days)";
      co_await answer_error(ctx, sink, errc::invalid_value, err, "overlap_seconds");
      co_return;
    }
    auto r = co_await pol.rotate_key(ctx.worker, cfg, id, std::int64_t(overlap));
    if (!r) {
      co_await answer_error(ctx, sink, fail_with(r.error()), r.error());
      co_return;
    }
    json::object o = key_json(r->record);
    o["key"] = r->full;  // the new secret, shown once
    co_await send(sink, 200, o);
  } else if (a == "key.revoke" || a == "key.show") {
    const std::string id = ctx.path.substr(keys_prefix.size());
    ctx.action_target = id;
    if (a == "key.revoke") {
      auto r = co_await pol.revoke_key(ctx.worker, cfg, id);
      if (!r) {
        co_await answer_error(ctx, sink, fail_with(r.error()), r.error());
        co_return;
      }
      co_await send(sink, 200, key_json(*r));
    } else {
      auto r = co_await pol.find_key(ctx.worker, cfg, id);
      if (!r.reachable) co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      else if (!r.key) co_await answer_error(ctx, sink, errc::not_found, "No key with id '" + id + "'.");
      else co_await send(sink, 200, key_json(*r.key));
    }
  } else if (a == "team.create") {
    ctx.action_target = target_of("name");
    policy::team_record t;
    auto* name = body->if_contains("name");
    std::string err;
    if (!name || !name->is_string() || !valid_team_name(name->get_string()))
      err = "name is required: 1 to 64 letters, digits, '-', '_' or '.' (not \"-\" alone, and not starting with "
            "\"tg_\" as API keys do)";
    else t.name = std::string(name->get_string());
    for (auto& [field, _] : *body)
      if (err.empty() && field != "name" && field != "models" && field != "limits" && field != "budget")
        err = std::string(field) + ": unknown field";
    if (err.empty()) err = parse_models(*body, t.models);
    if (err.empty()) err = parse_limits_budget(*body, t.limits, t.budget);
    if (!err.empty()) {
      co_await answer_error(ctx, sink, errc::invalid_value, err);
      co_return;
    }
    ctx.action_target = t.name;
    auto r = co_await pol.create_team(ctx.worker, cfg, std::move(t));
    if (!r || !r->team) {
      const std::string e = r ? std::string("the policy store is unavailable") : r.error();
      co_await answer_error(ctx, sink, fail_with(e), e, "name");
      co_return;
    }
    co_await send(sink, 201, team_json(*r));
  } else if (a == "team.list") {
    std::size_t limit = 0;
    std::string after, param;
    if (std::string err = page_query(ctx.query, limit, after, param); !err.empty()) {
      co_await answer_error(ctx, sink, errc::invalid_value, err, param);
      co_return;
    }
    auto teams = co_await pol.list_teams(ctx.worker, cfg);
    if (!teams) {
      co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      co_return;
    }
    // Pages by name (teams are few: the store's are read whole, the page cut here).
    std::sort(teams->begin(), teams->end(), [](const auto& a, const auto& b) { return a.team->name < b.team->name; });
    json::array data;
    std::string first, last;
    bool more = false;
    for (auto& t : *teams) {
      if (t.team->name <= after) continue;
      if (data.size() == limit) {
        more = true;
        break;
      }
      if (first.empty()) first = t.team->name;
      last = t.team->name;
      data.push_back(team_json(t));
    }
    const json::object list = page_json(std::move(data), first, last, more);
    co_await send(sink, 200, list);
  } else if (a == "team.show" || a == "team.delete") {
    if (ctx.path_masked) {
      // Masked to an id, tg_ml_research would name the team "ml": refused, never acted on.
      co_await answer_error(ctx, sink, errc::not_found,
                            "No team is named like an API key: team names never start with \"tg_\".");
      co_return;
    }
    // Percent-decoded, as tollgatectl encodes it: a config team may be named "data science".
    auto decoded = boost::urls::make_pct_string_view(std::string_view(ctx.path).substr(teams_prefix.size()));
    if (!decoded) {
      co_await answer_error(ctx, sink, errc::bad_request, "The team name in the URL is not valid percent-encoding.");
      co_return;
    }
    const std::string name = decoded->decode();
    ctx.action_target = name;
    if (a == "team.delete") {
      auto r = co_await pol.delete_team(ctx.worker, cfg, name);
      if (!r) {
        co_await answer_error(ctx, sink, fail_with(r.error()), r.error());
        co_return;
      }
      json::object o = team_json(*r);
      o["deleted"] = true;
      co_await send(sink, 200, o);
    } else {
      auto v = co_await pol.resolve_team(ctx.worker, cfg, name);
      if (!v.reachable) co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      else if (!v.team) co_await answer_error(ctx, sink, errc::not_found, "No team '" + name + "'.");
      else co_await send(sink, 200, team_json(v));
    }
  } else if (a == "quota.set") {
    ctx.action_target = target_of("team");
    if (const std::string k = target_of("key_id"); !k.empty() && !ctx.action_target.empty()) ctx.action_target += "/" + k;
    auto* team = body->if_contains("team");
    auto* key = body->if_contains("key_id");
    policy::engine::quota_patch patch;
    std::string err;
    if (!team || !team->is_string() || team->get_string().empty()) err = "team (string) is required";
    else if (key && !key->is_null() && !key->is_string()) err = "key_id must be a string";
    else if (key && key->is_string() && blank(key->get_string()))
      err = "key_id must not be empty: leave it out (or null) to set the team's quota";
    if (err.empty()) err = parse_quota_patch(*body, patch);
    if (!err.empty()) {
      co_await answer_error(ctx, sink, errc::invalid_value, err);
      co_return;
    }
    const std::string t(team->get_string());
    const std::string k = key_id_only(key && key->is_string() ? std::string(key->get_string()) : std::string());
    ctx.action_target = k.empty() ? t : t + "/" + k;
    auto r = co_await pol.set_quota(ctx.worker, cfg, t, k, patch);
    if (!r) {
      co_await answer_error(ctx, sink, fail_with(r.error()), r.error());
      co_return;
    }
    json::object o{{"team", t}, {"limits", limits_json(r->first)}, {"budget", budget_json(r->second)}};
    if (!k.empty()) o["key_id"] = k;
    co_await send(sink, 200, o);
  } else if (a == "quota.show" || a == "budget.show") {
    // ?team=T for the team's quota and budget use, &key=ID for that key's.
    const std::string team = query_param(ctx.query, "team"), key = key_id_only(query_param(ctx.query, "key"));
    ctx.action_target = key.empty() ? team : team + "/" + key;
    if (key.empty() && has_query_param(ctx.query, "key")) {
      co_await answer_error(ctx, sink, errc::invalid_value, "key must not be empty: leave it out for the team's", "key");
      co_return;
    }
    auto view = co_await pol.resolve_team(ctx.worker, cfg, team);
    if (!view.team) {
      if (!view.reachable) co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      else co_await answer_error(ctx, sink, errc::not_found, "No team '" + team + "'.", "team");
      co_return;
    }
    const config::team_config& t = *view.team;
    policy::scope_spec s{"t", t.name, t.limits, t.budget};
    if (!key.empty()) {
      auto r = co_await pol.find_key(ctx.worker, cfg, key);
      if (!r.reachable) {  // not "no such key": a script reading 404 as "gone" must not be told so
        co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
        co_return;
      }
      if (!r.key || r.key->team != t.name) {
        co_await answer_error(ctx, sink, errc::not_found, "No key '" + key + "' in team '" + team + "'.", "key");
        co_return;
      }
      s = {"k:" + key, t.name, r.key->limits, r.key->budget};
    }
    auto b = co_await pol.budget(ctx.worker, s);
    if (!b.reachable) {
      co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      co_return;
    }
    json::object o{{"team", t.name}, {"spent_usd", double(b.spent) / 1e9}, {"reserved_usd", double(b.reserved) / 1e9},
                   {"spent_nano", b.spent}, {"reserved_nano", b.reserved}};
    if (!key.empty()) o["key_id"] = key;
    if (s.budget.set()) {
      o["limit_usd"] = double(s.budget.limit_nano) / 1e9;
      o["limit_nano"] = s.budget.limit_nano;
    }
    if (a == "quota.show") {
      o["limits"] = limits_json(s.limits);
      o["budget"] = budget_json(s.budget);
    }
    co_await send(sink, 200, o);
  } else if (a == "usage.show") {
    // ?from=&to= (unix seconds or RFC 3339; default: the last 24 hours), &team= &key= &model=.
    const std::string team = query_param(ctx.query, "team"), key = key_id_only(query_param(ctx.query, "key")),
                      model = query_param(ctx.query, "model"), from_s = query_param(ctx.query, "from"),
                      to_s = query_param(ctx.query, "to");
    ctx.action_target = team;
    if (blank(key) && has_query_param(ctx.query, "key")) {
      co_await answer_error(ctx, sink, errc::invalid_value, "key must not be empty: leave it out for every key's usage", "key");
      co_return;
    }
    const std::int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    std::chrono::system_clock::now().time_since_epoch()).count();
    const auto to_ms = to_s.empty() ? std::optional<std::int64_t>(now_ms) : parse_time_ms(to_s);
    const auto from_ms = from_s.empty() ? std::optional<std::int64_t>(to_ms.value_or(now_ms) - 86'400'000)
                                        : parse_time_ms(from_s);
    if (!from_ms || !to_ms || *to_ms <= *from_ms || *to_ms - *from_ms > 400ll * 86'400'000) {
      co_await answer_error(ctx, sink, errc::invalid_value,
                            "from and to must be unix seconds or RFC 3339 times, from before to, at most 400 days apart.",
                            from_ms ? "to" : "from");
      co_return;
    }
    // Hour resolution: the hours that overlap [from, to).
    const std::int64_t from_h = *from_ms / 3'600'000, to_h = (*to_ms + 3'599'999) / 3'600'000;
    auto rows = co_await pol.usage(ctx.worker, from_h, to_h);
    if (!rows) {
      co_await answer_error(ctx, sink, errc::policy_store_unavailable, "The policy store is unavailable.");
      co_return;
    }
    std::map<std::string, policy::usage_row> sums;  // by team, key and model over the range
    policy::usage_row total;
    for (auto& r : *rows) {
      if ((!team.empty() && r.team != team) || (!key.empty() && r.key_id != key) || (!model.empty() && r.model != model))
        continue;
      policy::usage_row k = r;
      k.hour = 0;
      sums[k.id()].add(k);
      total.requests += r.requests;
      total.prompt += r.prompt;
      total.completion += r.completion;
      total.cost_nano += r.cost_nano;
    }
    auto row_json = [](const policy::usage_row& r) {
      return json::object{{"team", r.team},
                          {"key_id", r.key_id.empty() ? json::value(nullptr) : json::value(r.key_id)},
                          {"model", r.model},
                          {"requests", r.requests},
                          {"prompt_tokens", r.prompt},
                          {"completion_tokens", r.completion},
                          {"cost_nano", r.cost_nano},
                          {"cost_usd", double(r.cost_nano) / 1e9}};
    };
    json::array data;
    for (auto& [id, r] : sums) data.push_back(row_json(r));
    json::object t = row_json(total);
    t.erase("team");
    t.erase("key_id");
    t.erase("model");
    const json::object report = usage_json(from_h * 3600, to_h * 3600, std::move(data), std::move(t));
    co_await send(sink, 200, report);
  } else {
    co_await answer_error(ctx, sink, errc::not_found, "Unknown admin URL: " + ctx.method + " " + ctx.path + ".");
  }
}

}  // namespace tollgate::gateway
