// SPDX-License-Identifier: Apache-2.0
#include "policy/store.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdio>

namespace tollgate::policy {
namespace json = boost::json;

namespace {
std::int64_t system_wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
std::int64_t (*wall_source)() = system_wall_ms;
}  // namespace

std::int64_t wall_ms() { return wall_source(); }

void use_wall_clock_for_tests(std::int64_t (*clock)()) { wall_source = clock ? clock : system_wall_ms; }

std::int64_t store::clock_ms(unsigned) const { return wall_ms(); }

std::string settled_period(const std::string& admitted, std::int64_t now_ms) {
  if (admitted.empty()) return admitted;
  if (admitted[0] == 'd') return period_id(config::budget_period::daily, now_ms);
  if (admitted[0] == 'm') return period_id(config::budget_period::monthly, now_ms);
  return admitted;
}

bool period_ended(const std::string& stored, std::int64_t now_ms) { return stored != settled_period(stored, now_ms); }

std::string period_id(config::budget_period p, std::int64_t now_ms) {
  if (p == config::budget_period::total) return "all";
  const std::int64_t days = now_ms / 86'400'000;
  if (p == config::budget_period::daily) return "d" + std::to_string(days);
  // Civil date from days since 1970-01-01 (H. Hinnant), the same arithmetic as admit.lua.
  const std::int64_t z = days + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const std::int64_t doe = z - era * 146097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  std::int64_t y = yoe + era * 400;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;
  const std::int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2) ++y;
  if (y < 0 || y > 9999) {  // (not in this era; the general form)
    char buf[48];
    std::snprintf(buf, sizeof buf, "m%04lld%02lld", static_cast<long long>(y), static_cast<long long>(m));
    return buf;
  }
  // By hand: this runs on every admission with a monthly budget (snprintf cost ~1,200 instructions).
  const char out[7] = {'m', char('0' + y / 1000), char('0' + y / 100 % 10), char('0' + y / 10 % 10), char('0' + y % 10),
                       char('0' + m / 10), char('0' + m % 10)};
  return std::string(out, 7);
}

std::vector<std::string> periods_of(const admission& a, std::int64_t now_ms) {
  std::vector<std::string> out;
  out.reserve(a.scopes.size());
  for (const auto& s : a.scopes) out.push_back(s.budget.set() ? period_id(s.budget.period, now_ms) : std::string());
  return out;
}

awaitable<write_result> store::replace_key(unsigned worker, key_record k, std::string stored) {
  const key_lookup now = co_await get_key(worker, k.id);
  if (!now.reachable) co_return write_result::unreachable;
  if (now.stored != stored) co_return write_result::changed;
  const bool written = co_await put_key(worker, std::move(k));  // (not in a conditional: GCC 12)
  co_return written ? write_result::written : write_result::unreachable;
}

awaitable<write_result> store::replace_team(unsigned worker, team_record t, std::string stored) {
  const team_lookup now = co_await get_team(worker, t.name);
  if (!now.reachable) co_return write_result::unreachable;
  if (now.stored != stored) co_return write_result::changed;
  const bool written = co_await put_team(worker, std::move(t));
  co_return written ? write_result::written : write_result::unreachable;
}

void store::queue_settlement(unsigned worker, settlement s, executor_t ex) {
  std::vector<settlement> batch;
  batch.push_back(std::move(s));
  net::co_spawn(ex, settle_alone(worker, std::move(batch)), net::detached);
}

awaitable<void> store::settle_alone(unsigned worker, std::vector<settlement> batch) {
  std::vector<settle_result> res = co_await settle_batch(worker, batch);
  res.resize(batch.size());  // a short answer: the rest were not reached
  report_settled(worker, batch, res, true);
}

namespace {

json::object limits_json(const config::limits_config& l) {
  return {{"rpm", l.rpm}, {"tpm", l.tpm}, {"concurrency", l.concurrency}};
}

json::value budget_json(const config::budget_config& b) {
  if (!b.set()) return nullptr;
  return json::object{{"limit_nano", b.limit_nano}, {"period", config::period_name(b.period)}, {"soft", b.soft}};
}

std::uint64_t u64(const json::object& o, std::string_view k) {
  auto* v = o.if_contains(k);
  if (!v) return 0;
  if (v->is_uint64()) return v->get_uint64();
  if (v->is_int64() && v->get_int64() >= 0) return std::uint64_t(v->get_int64());
  return 0;
}

std::int64_t i64(const json::object& o, std::string_view k, std::int64_t dflt = 0) {
  auto* v = o.if_contains(k);
  if (!v) return dflt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return std::int64_t(v->get_uint64());
  return dflt;
}

std::string str(const json::object& o, std::string_view k) {
  auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

/// "limits" and "budget" of a stored key or team.
void read_quota(const json::object& o, config::limits_config& limits, config::budget_config& budget) {
  if (auto* l = o.if_contains("limits"); l && l->is_object()) {
    limits.rpm = u64(l->get_object(), "rpm");
    limits.tpm = u64(l->get_object(), "tpm");
    limits.concurrency = u64(l->get_object(), "concurrency");
  }
  if (auto* b = o.if_contains("budget"); b && b->is_object()) {
    const auto& bo = b->get_object();
    budget.limit_nano = i64(bo, "limit_nano", -1);
    budget.period = config::parse_period(str(bo, "period")).value_or(config::budget_period::monthly);
    if (auto* sf = bo.if_contains("soft"); sf && sf->is_number()) budget.soft = sf->to_number<double>();
  }
}

}  // namespace

std::string settlement_to_json(const settlement& s) {
  json::array scopes;
  for (const auto& sc : s.adm.scopes)
    scopes.push_back(json::object{{"id", sc.id}, {"team", sc.team}, {"limits", limits_json(sc.limits)},
                                  {"budget", budget_json(sc.budget)}});
  json::array periods;
  for (const auto& p : s.periods) periods.push_back(json::string(p));
  json::object o{{"lease", s.adm.lease},
                 {"lease_ms", s.adm.lease_ms},
                 {"reserved_tokens", s.adm.tokens},
                 {"reserved_nano", s.adm.cost_nano},
                 {"scopes", std::move(scopes)},
                 {"periods", std::move(periods)},
                 {"admitted_at_ms", s.admitted_at_ms},
                 {"tokens", s.tokens},
                 {"cost_nano", s.cost_nano}};
  if (s.charge_only) o["charge_only"] = true;
  return json::serialize(o);
}

std::optional<settlement> settlement_from_json(const json::object& o) {
  settlement s;
  s.adm.lease = str(o, "lease");
  s.adm.lease_ms = std::uint32_t(u64(o, "lease_ms"));
  s.adm.tokens = u64(o, "reserved_tokens");
  s.adm.cost_nano = i64(o, "reserved_nano");
  s.admitted_at_ms = i64(o, "admitted_at_ms");
  s.tokens = u64(o, "tokens");
  s.cost_nano = i64(o, "cost_nano");
  if (const auto* c = o.if_contains("charge_only")) {
    if (!c->is_bool()) return std::nullopt;
    s.charge_only = c->get_bool();
  }
  const auto* scopes = o.if_contains("scopes");
  const auto* periods = o.if_contains("periods");
  if (s.adm.lease.empty() || !scopes || !scopes->is_array() || scopes->get_array().empty() || !periods ||
      !periods->is_array())
    return std::nullopt;
  for (const auto& v : scopes->get_array()) {
    if (!v.is_object()) return std::nullopt;
    scope_spec sc;
    sc.id = str(v.get_object(), "id");
    sc.team = str(v.get_object(), "team");
    if (sc.id.empty() || sc.team.empty()) return std::nullopt;
    read_quota(v.get_object(), sc.limits, sc.budget);
    s.adm.scopes.push_back(std::move(sc));
  }
  for (const auto& v : periods->get_array()) {
    if (!v.is_string()) return std::nullopt;
    s.periods.emplace_back(v.get_string());
  }
  return s;
}

std::string key_to_json(const key_record& k) {
  json::array models;
  for (auto& m : k.models) models.push_back(json::string(m));
  json::object o{{"id", k.id},           {"team", k.team},
                 {"name", k.name},       {"digest", k.digest},
                 {"models", models},     {"expires_unix", k.expires_unix},
                 {"created_unix", k.created_unix}, {"enabled", k.enabled},
                 {"limits", limits_json(k.limits)}, {"budget", budget_json(k.budget)}};
  if (!k.old_digest.empty()) {
    o["old_digest"] = k.old_digest;
    o["old_digest_expires_unix"] = k.old_digest_expires_unix;
  }
  return json::serialize(o);
}

std::optional<key_record> key_from_json(std::string_view s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  key_record k;
  k.id = str(o, "id");
  k.team = str(o, "team");
  k.name = str(o, "name");
  k.digest = str(o, "digest");
  if (k.id.empty() || k.team.empty() || k.digest.empty()) return std::nullopt;
  if (auto* m = o.if_contains("models"); m && m->is_array())
    for (auto& e : m->get_array())
      if (e.is_string()) k.models.emplace_back(e.get_string());
  k.expires_unix = i64(o, "expires_unix");
  k.created_unix = i64(o, "created_unix");
  k.old_digest = str(o, "old_digest");
  k.old_digest_expires_unix = i64(o, "old_digest_expires_unix");
  if (auto* e = o.if_contains("enabled"); e && e->is_bool()) k.enabled = e->get_bool();
  read_quota(o, k.limits, k.budget);
  return k;
}

key_record key_of(const config::key_config& k) {
  key_record r;
  r.id = k.id;
  r.team = k.team;
  r.name = k.name;
  r.digest = k.digest;
  r.models = k.models;
  r.expires_unix = k.expires_unix;
  r.enabled = k.enabled;
  r.limits = k.limits;
  r.budget = k.budget;
  return r;
}

std::string team_to_json(const team_record& t) {
  json::array models;
  for (auto& m : t.models) models.push_back(json::string(m));
  json::object o{{"name", t.name}, {"models", models}, {"created_unix", t.created_unix},
                 {"limits", limits_json(t.limits)}, {"budget", budget_json(t.budget)}};
  if (t.overrides_config) o["overrides_config"] = true;
  return json::serialize(o);
}

std::optional<team_record> team_from_json(std::string_view s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto& o = v.get_object();
  team_record t;
  t.name = str(o, "name");
  if (t.name.empty()) return std::nullopt;
  if (auto* m = o.if_contains("models"); m && m->is_array())
    for (auto& e : m->get_array())
      if (e.is_string()) t.models.emplace_back(e.get_string());
  t.created_unix = i64(o, "created_unix");
  if (auto* f = o.if_contains("overrides_config"); f && f->is_bool()) t.overrides_config = f->get_bool();
  read_quota(o, t.limits, t.budget);
  return t;
}

}  // namespace tollgate::policy
