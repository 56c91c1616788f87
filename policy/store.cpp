// SPDX-License-Identifier: Apache-2.0
#include "policy/store.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cstdio>

namespace tollgate::policy {
namespace json = boost::json;

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
  char buf[48];
  std::snprintf(buf, sizeof buf, "m%04lld%02lld", static_cast<long long>(y), static_cast<long long>(m));
  return buf;
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

}  // namespace

std::string key_to_json(const key_record& k) {
  json::array models;
  for (auto& m : k.models) models.push_back(json::string(m));
  json::object o{{"id", k.id},           {"team", k.team},
                 {"name", k.name},       {"digest", k.digest},
                 {"models", models},     {"expires_unix", k.expires_unix},
                 {"created_unix", k.created_unix}, {"enabled", k.enabled},
                 {"limits", limits_json(k.limits)}, {"budget", budget_json(k.budget)}};
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
  if (auto* e = o.if_contains("enabled"); e && e->is_bool()) k.enabled = e->get_bool();
  if (auto* l = o.if_contains("limits"); l && l->is_object()) {
    k.limits.rpm = u64(l->get_object(), "rpm");
    k.limits.tpm = u64(l->get_object(), "tpm");
    k.limits.concurrency = u64(l->get_object(), "concurrency");
  }
  if (auto* b = o.if_contains("budget"); b && b->is_object()) {
    const auto& bo = b->get_object();
    k.budget.limit_nano = i64(bo, "limit_nano", -1);
    const std::string p = str(bo, "period");
    k.budget.period = config::parse_period(p).value_or(config::budget_period::monthly);
    if (auto* sf = bo.if_contains("soft"); sf && sf->is_number()) k.budget.soft = sf->to_number<double>();
  }
  return k;
}

}  // namespace tollgate::policy
