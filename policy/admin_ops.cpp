// SPDX-License-Identifier: Apache-2.0
// The policy engine's admin operations: teams, key listing and rotation, quotas, usage. The store
// holds every change; an invalidation on the store's channel drops every replica's cached copy.
#include <algorithm>
#include <chrono>
#include <ctime>

#include "gateway/core/provider.hpp"
#include "policy/keys.hpp"
#include "policy/policy.hpp"

namespace tollgate::policy {
using namespace std::chrono;

namespace {

template <class T>
boost::system::result<T, std::string> as_error(std::string message) {
  return {boost::system::in_place_error, std::move(message)};
}

const std::string unavailable = "the policy store is unavailable";

/// Admin changes are written over the record they read (store::replace_key): tries before giving
/// up when other changes keep landing in between.
constexpr int admin_write_tries = 5;
/// change_key's change for a revocation.
std::string revoked(key_record& k) {
  k.enabled = false;
  return {};
}

std::string changed_meanwhile(std::string_view what, const std::string& name) {
  return std::string(what) + " '" + name + "' changed while this change was made, every time it was tried: try again";
}

/// A config team with the admin API's override applied (its models stay the file's: the API
/// changes quotas only), or an API team (`base` null).
config::team_config merged(const config::team_config* base, const team_record& o) {
  config::team_config t = base ? *base : config::team_config{};
  t.name = o.name;
  if (!base) t.models = o.models;
  t.limits = o.limits;
  t.budget = o.budget;
  return t;
}

team_record record_of(const config::team_config& t) {
  team_record r;
  r.name = t.name;
  r.models = t.models;
  r.limits = t.limits;
  r.budget = t.budget;
  r.overrides_config = true;
  return r;
}

/// A record that does not apply: an override whose config team has left the file, or an API
/// team whose name the file has since declared (the file's team wins, with the file's quotas; the
/// record stays shadowed until the file drops the name). As if there were no record.
bool ignored(const config::team_config* base, const std::optional<team_record>& rec) {
  return rec && rec->overrides_config != (base != nullptr);
}

std::int64_t hour_now() { return duration_cast<hours>(system_clock::now().time_since_epoch()).count(); }

}  // namespace

awaitable<engine::team_view> engine::resolve_team(unsigned worker, const config::gateway_config& cfg, std::string name) {
  const config::team_config* base = cfg.find_team(name);
  const auto now = steady_clock::now();
  std::optional<team_record> rec;
  bool cached = false;
  team_view v;
  v.as_of = now;
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = team_cache_.find(name); it != team_cache_.end() && now - it->second.at < milliseconds(cfg.auth.key_cache_ms)) {
      rec = it->second.team;
      cached = true;
      v.as_of = it->second.at;
    }
  }
  if (!cached) {
    call_team_.inc();
    const auto generation = generation_.load(std::memory_order_relaxed);  // (as engine::lookup)
    auto found = co_await store_->get_team(worker, name);
    if (!found.reachable) {
      // Unreachable: the last answer stays good (nobody can change it through the store either).
      v.as_of = {};  // but it is not fresh
      std::lock_guard lock(cache_mu_);
      if (auto it = team_cache_.find(name); it != team_cache_.end()) rec = it->second.team;
      else if (!base) co_return v;  // an API team cannot be checked
    } else {
      rec = found.team;
      std::lock_guard lock(cache_mu_);
      if (team_cache_.size() > 100'000) team_cache_.clear();
      if (generation_.load(std::memory_order_relaxed) == generation) team_cache_[name] = {rec, now};
    }
  }
  v.reachable = true;
  if (ignored(base, rec)) rec.reset();
  if (rec) {
    v.team = merged(base, *rec);
    v.source = base ? "config+api" : "api";
    v.created_unix = rec->created_unix;
  } else if (base) {
    v.team = *base;
    v.source = "config";
  }
  co_return v;
}

awaitable<boost::system::result<engine::team_view, std::string>> engine::create_team(unsigned worker,
                                                                                    const config::gateway_config& cfg,
                                                                                    team_record t) {
  if (cfg.find_team(t.name)) co_return as_error<team_view>("team '" + t.name + "' already exists (in the config file)");
  auto found = co_await store_->get_team(worker, t.name);
  if (!found.reachable) co_return as_error<team_view>(unavailable);
  // (The override of a config team since removed from the file is no team: replaced.)
  if (found.team && !ignored(nullptr, found.team)) co_return as_error<team_view>("team '" + t.name + "' already exists");
  // Keys left by an earlier team of this name (a config team removed from the file keeps its
  // store keys) are not this team's. They are listed before the write and revoked only once it
  // has won: if a concurrent creation of the name wins instead, the write below fails, and the
  // keys it has issued meanwhile (they may be in this list) are left alone.
  auto earlier = co_await enabled_keys_of(worker, t.name);
  if (!earlier) co_return as_error<team_view>(unavailable);
  t.created_unix = std::time(nullptr);
  t.overrides_config = false;
  // Over what was read: of two creations at once, the second finds the first's record.
  const write_result w = co_await store_->replace_team(worker, t, std::move(found.stored));
  if (w == write_result::changed) co_return as_error<team_view>("team '" + t.name + "' already exists");
  if (w == write_result::unreachable) co_return as_error<team_view>(unavailable);
  forget("team:" + t.name);
  co_await store_->publish_invalidation(worker, "team:" + t.name);
  if (auto why = co_await revoke_keys(worker, *earlier); !why.empty())
    co_return as_error<team_view>("team '" + t.name + "' was created, but a key of an earlier team of that name could not be "
                                  "revoked (" + why + "): list the team's keys and revoke the older ones by id");
  co_return co_await resolve_team(worker, cfg, t.name);
}

awaitable<boost::system::result<engine::team_view, std::string>> engine::delete_team(unsigned worker,
                                                                                    const config::gateway_config& cfg,
                                                                                    std::string name) {
  if (cfg.find_team(name))
    co_return as_error<team_view>("team '" + name + "' is declared in the config file; remove it there");
  auto found = co_await store_->get_team(worker, name);
  if (!found.reachable) co_return as_error<team_view>(unavailable);
  if (!found.team) co_return as_error<team_view>("no team '" + name + "'");
  team_view gone{true, merged(nullptr, *found.team), "api", found.team->created_unix};
  // Its keys are revoked first: a key names its team only by name, so a team created later under
  // the same name would otherwise take over keys it never issued. A failure part-way leaves the
  // team and some of its keys revoked: the safe side; deleting again finishes it.
  auto keys = co_await enabled_keys_of(worker, name);
  if (!keys) co_return as_error<team_view>(unavailable);
  if (auto why = co_await revoke_keys(worker, *keys); !why.empty()) co_return as_error<team_view>(std::move(why));
  const write_result w = co_await store_->delete_team(worker, name, std::move(found.stored));
  if (w == write_result::unreachable) co_return as_error<team_view>(unavailable);
  if (w == write_result::changed)  // (its keys were revoked: deleting again finishes the job)
    co_return as_error<team_view>("team '" + name + "' changed while it was being deleted; read it and delete it again");
  // Its keys stop working on every replica: their team no longer resolves.
  forget("team:" + name);
  co_await store_->publish_invalidation(worker, "team:" + name);
  co_return gone;
}

awaitable<std::optional<std::vector<std::string>>> engine::enabled_keys_of(unsigned worker, std::string name) {
  std::vector<std::string> ids;
  key_query q{name, "", 1000};
  for (;;) {
    auto page = co_await store_->list_keys(worker, q);
    if (!page) co_return std::nullopt;
    for (const key_record& k : page->keys)
      if (k.team == name && k.enabled) ids.push_back(k.id);
    if (!page->has_more || page->keys.empty()) co_return ids;
    q.after = page->keys.back().id;
  }
}

awaitable<std::string> engine::revoke_keys(unsigned worker, std::vector<std::string> ids) {
  const std::function<std::string(key_record&)> revoke = revoked;
  for (const std::string& id : ids) {
    auto r = co_await change_key(worker, id, revoke);
    if (!r) co_return std::move(r.error());
  }
  co_return std::string{};
}

awaitable<std::optional<std::vector<engine::team_view>>> engine::list_teams(unsigned worker,
                                                                            const config::gateway_config& cfg) {
  auto stored = co_await store_->list_teams(worker);
  if (!stored) co_return std::nullopt;
  std::vector<team_view> out;
  for (auto& t : cfg.teams) {
    team_view v{true, t, "config", 0};
    for (auto& r : *stored)
      if (r.name == t.name && r.overrides_config) v = {true, merged(&t, r), "config+api", r.created_unix};
    out.push_back(std::move(v));
  }
  for (auto& r : *stored)
    if (!cfg.find_team(r.name) && !r.overrides_config) out.push_back({true, merged(nullptr, r), "api", r.created_unix});
  co_return out;
}

awaitable<std::optional<key_page>> engine::list_keys(unsigned worker, const config::gateway_config& cfg, key_query q) {
  auto stored = co_await store_->list_keys(worker, q);
  if (!stored) co_return std::nullopt;
  // The file's keys of this page merged in by id: the page's first `limit` of both. A stored key
  // pushed past the page by a config key comes first on the next (after = this page's last id).
  key_page out;
  out.keys = std::move(stored->keys);
  for (auto& k : cfg.keys)
    if ((q.team.empty() || k.team == q.team) && k.id > q.after) out.keys.push_back(key_of(k));
  std::sort(out.keys.begin(), out.keys.end(), [](const key_record& a, const key_record& b) { return a.id < b.id; });
  out.has_more = stored->has_more || out.keys.size() > q.limit;
  if (out.keys.size() > q.limit) out.keys.resize(q.limit);
  co_return out;
}

awaitable<key_lookup> engine::store_key(unsigned worker, const config::gateway_config& cfg, const std::string& id) {
  for (auto& k : cfg.keys)
    if (k.id == id) co_return key_lookup{true, std::nullopt, {}};
  co_return co_await store_->get_key(worker, id);
}

awaitable<boost::system::result<key_record, std::string>> engine::change_key(
    unsigned worker, const std::string& id, const std::function<std::string(key_record&)>& change,
    const change_check* check) {
  // Read, change, and write only if nobody wrote in between (else read again): a rotation or a
  // quota change made at the same moment as a revocation never writes the key back enabled.
  for (int tries = 0; tries < admin_write_tries; ++tries) {
    auto found = co_await store_->get_key(worker, id);
    if (!found.reachable) co_return as_error<key_record>(unavailable);
    if (!found.key) co_return as_error<key_record>("no key with id '" + id + "'");
    key_record k = *found.key;
    if (std::string refused = change(k); !refused.empty()) co_return as_error<key_record>(std::move(refused));
    const write_result w = co_await store_->replace_key(worker, k, std::move(found.stored));
    if (w == write_result::changed) continue;
    if (w == write_result::unreachable) {
      if (!check) co_return as_error<key_record>(unavailable);
      // Sent and unanswered: the store may have taken it. Read back, the change is made if it
      // is there; if not (nothing landed, or another change did), it is tried again.
      auto again = co_await store_->get_key(worker, id);
      if (!again.reachable) co_return as_error<key_record>(unavailable + ": " + check->if_unknown);
      if (!again.key || !check->landed(*again.key)) continue;
    }
    forget(id);
    co_await store_->publish_invalidation(worker, id);
    co_return k;
  }
  co_return as_error<key_record>(changed_meanwhile("key", id));
}

awaitable<boost::system::result<key_record, std::string>> engine::revoke_key(unsigned worker,
                                                                            const config::gateway_config& cfg,
                                                                            std::string id) {
  for (auto& k : cfg.keys)
    if (k.id == id) co_return as_error<key_record>("key '" + id + "' is declared in the config file; remove it there");
  forget(id);
  // (A named function, not a temporary argument: GCC 12 and coroutine arguments.)
  const std::function<std::string(key_record&)> revoke = revoked;
  const change_check check{[](const key_record& k) { return !k.enabled; },
                           "the store did not confirm the revocation of key '" + id +
                               "', which may not have been made: revoke it again"};
  co_return co_await change_key(worker, id, revoke, &check);
}

awaitable<boost::system::result<engine::created_key, std::string>> engine::rotate_key(unsigned worker,
                                                                                     const config::gateway_config& cfg,
                                                                                     std::string id, std::int64_t overlap_s) {
  for (auto& k : cfg.keys)
    if (k.id == id) co_return as_error<created_key>("key '" + id + "' is declared in the config file; rotate it there");
  // Never over a revocation made meanwhile (change_key): a revoked key is not rotated.
  std::string full, digest;
  const std::function<std::string(key_record&)> rotate = [&](key_record& k) {
    if (!k.enabled) return "key '" + id + "' is revoked";
    // Same id, new secret: the key keeps its team, limits, budget and usage.
    const auto fresh = generate_key();
    full = "tg_" + id + "_" + fresh.secret;
    k.old_digest = overlap_s > 0 ? k.digest : std::string();
    k.old_digest_expires_unix = overlap_s > 0 ? store_->clock_ms(worker) / 1000 + overlap_s : 0;
    k.digest = digest_secret(fresh.secret, cfg.auth.pepper);
    digest = k.digest;
    return std::string();
  };
  // A rotation whose write went unanswered and landed set a secret that only this answer can
  // show: it is read back, and the secret shown when it is there (until 2026-11-29 the admin got
  // a 503, and the key a secret nobody had).
  const change_check check{[&digest](const key_record& k) { return k.digest == digest; },
                           "the store did not confirm the rotation of key '" + id +
                               "'; if it was made, the key's new secret is one nobody was shown" +
                               (overlap_s > 0 ? std::string(" (the old one works until the overlap ends)")
                                              : std::string(" and the old one no longer works")) +
                               ": rotate the key again"};
  auto r = co_await change_key(worker, id, rotate, &check);
  if (!r) co_return as_error<created_key>(std::move(r.error()));
  created_key out;
  out.full = std::move(full);
  out.record = std::move(*r);
  co_return out;
}

awaitable<boost::system::result<std::pair<config::limits_config, config::budget_config>, std::string>> engine::set_quota(
    unsigned worker, const config::gateway_config& cfg, std::string team, std::string key_id, quota_patch p) {
  using out_t = std::pair<config::limits_config, config::budget_config>;
  auto apply = [&](config::limits_config& l, config::budget_config& b) {
    if (p.rpm) l.rpm = *p.rpm;
    if (p.tpm) l.tpm = *p.tpm;
    if (p.concurrency) l.concurrency = *p.concurrency;
    if (p.remove_budget) b = {};
    if (p.budget_nano) b.limit_nano = *p.budget_nano;
    if (p.period) b.period = *p.period;
    if (p.soft) b.soft = *p.soft;
  };
  if (!key_id.empty()) {
    for (auto& k : cfg.keys)
      if (k.id == key_id) co_return as_error<out_t>("key '" + key_id + "' is declared in the config file; change it there");
    const std::function<std::string(key_record&)> requota = [&](key_record& k) {
      if (!team.empty() && k.team != team) return "no key '" + key_id + "' in team '" + team + "'";
      // Period or threshold alone change an existing budget only (as for a team).
      if ((p.period || p.soft) && !p.budget_nano && !k.budget.set())
        return "key '" + key_id + "' has no budget: give its amount (budget.usd) too";
      apply(k.limits, k.budget);
      return std::string();
    };
    auto r = co_await change_key(worker, key_id, requota);
    if (!r) co_return as_error<out_t>(std::move(r.error()));
    co_return out_t{r->limits, r->budget};
  }
  if ((p.period || p.soft) && !p.budget_nano) {
    // Period or threshold alone change an existing budget only.
    auto cur = co_await resolve_team(worker, cfg, team);
    if (cur.team && !cur.team->budget.set())
      co_return as_error<out_t>("team '" + team + "' has no budget: give its amount (budget.usd) too");
  }
  const config::team_config* base = cfg.find_team(team);
  // Written only over the record read: a quota change never brings back a team deleted meanwhile.
  for (int tries = 0; tries < admin_write_tries; ++tries) {
    auto found = co_await store_->get_team(worker, team);
    if (!found.reachable) co_return as_error<out_t>(unavailable);
    const bool stands = found.team && !ignored(base, found.team);
    if (!base && !stands) co_return as_error<out_t>("no team '" + team + "'");
    // A config team's first change stores an override that starts from its config values (also
    // over an API team of that name that the file's team shadows).
    team_record t = stands ? *found.team : record_of(*base);
    apply(t.limits, t.budget);
    const write_result w = co_await store_->replace_team(worker, t, std::move(found.stored));
    if (w == write_result::changed) continue;
    if (w == write_result::unreachable) co_return as_error<out_t>(unavailable);
    forget("team:" + team);
    co_await store_->publish_invalidation(worker, "team:" + team);
    co_return out_t{t.limits, t.budget};
  }
  co_return as_error<out_t>(changed_meanwhile("team", team));
}

// ---- Usage: counted per worker at settle, written to the store every second.

void engine::count_usage(const request_context& ctx) {
  if (!ctx.reservation || usage_.empty()) return;  // refused before admission: not a use
  const std::size_t w = ctx.worker % usage_.size();
  const std::int64_t hour = hour_now();
  const std::string_view team = ctx.identity.team.empty() ? std::string_view("-") : std::string_view(ctx.identity.team);
  usage_row* row = usage_last_[w];
  if (!row || row->hour != hour || row->team != team || row->key_id != ctx.identity.key_id || row->model != ctx.model) {
    usage_row one;
    one.hour = hour;
    one.team = team;
    one.key_id = ctx.identity.key_id;
    one.model = ctx.model;
    row = &usage_[w][one.id()];
    if (row->team.empty() && row->model.empty() && row->requests == 0) row->add(one);  // takes the identity
    usage_last_[w] = row;  // elements of an unordered_map stay put until erased
  }
  row->requests += 1;
  if (billable(ctx)) {
    row->prompt += ctx.usage.prompt;
    row->completion += ctx.usage.completion;
    const auto* price = ctx.snap && ctx.snap->cfg ? served_price(*ctx.snap->cfg, ctx) : ctx.reservation->price;
    if (price) row->cost_nano += cost_nano(*price, ctx.usage);
  }
}

awaitable<void> engine::flush_usage(unsigned worker) {
  auto& table = usage_[worker % usage_.size()];
  if (table.empty()) co_return;
  std::vector<usage_row> rows;
  rows.reserve(table.size());
  for (auto& [id, r] : table) rows.push_back(r);
  table.clear();
  usage_last_[worker % usage_last_.size()] = nullptr;
  if (co_await store_->add_usage(worker, rows)) co_return;
  // Unreachable: keep the counts for the next try (a row written halfway may count twice; usage
  // is a report, the audit trail and the budgets are the exact records).
  for (auto& r : rows) table[r.id()].add(r);
}

awaitable<void> engine::usage_loop(unsigned worker, std::weak_ptr<const bool> alive) {
  steady_timer_t timer(co_await net::this_coro::executor);
  for (;;) {
    timer.expires_after(seconds(1));
    if (auto [ec] = co_await timer.async_wait(); ec) co_return;
    if (alive.expired()) co_return;
    co_await flush_usage(worker);
  }
}

awaitable<std::optional<std::vector<usage_row>>> engine::usage(unsigned worker, std::int64_t from_hour,
                                                               std::int64_t to_hour) {
  co_await flush_usage(worker);  // this worker's latest counts (other workers' within a second)
  co_return co_await store_->usage(worker, from_hour, to_hour);
}

}  // namespace tollgate::policy
