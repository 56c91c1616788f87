// SPDX-License-Identifier: Apache-2.0
#include "policy/policy.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cmath>
#include <ctime>

#include "gateway/core/provider.hpp"
#include "gateway/core/tokens.hpp"
#include "policy/keys.hpp"

namespace tollgate::policy {
namespace json = boost::json;
using namespace std::chrono;

namespace {

bool any_match(const std::vector<std::string>& patterns, std::string_view model) {
  if (patterns.empty()) return true;
  for (auto& p : patterns)
    if (config::glob_match(p, model)) return true;
  return false;
}

std::string quote(std::string_view s) { return json::serialize(json::value(json::string(s))); }

template <class T>
boost::system::result<T, std::string> as_error(std::string message) {
  return {boost::system::in_place_error, std::move(message)};
}

std::int64_t seconds_ceil(std::int64_t ms) { return std::max<std::int64_t>(1, (ms + 999) / 1000); }

const char* verdict_name(verdict v) {
  switch (v) {
    case verdict::admitted: return "admitted";
    case verdict::rpm: return "rpm";
    case verdict::tpm: return "tpm";
    case verdict::concurrency: return "concurrency";
    case verdict::budget: return "budget";
    case verdict::unavailable: return "unavailable";
  }
  return "unavailable";
}

config::limits_config divided(const config::limits_config& l, unsigned n) {
  auto d = [n](std::uint64_t v) { return v == 0 ? 0 : std::max<std::uint64_t>(1, v / n); };
  return {d(l.rpm), d(l.tpm), d(l.concurrency)};
}

/// One scope as the store sees it; nullopt when it limits nothing.
std::optional<scope_spec> make_scope(std::string id, const std::string& team, const config::limits_config& l,
                                     const config::budget_config& b) {
  if (!l.any() && !b.set()) return std::nullopt;
  return scope_spec{std::move(id), team, l, b};
}

failure refusal(errc e, std::string msg, std::int64_t retry_ms = 0, bool retry_useless = false) {
  auto f = make_failure(e, std::move(msg), "", error_source::policy);
  if (retry_ms > 0) {
    f.headers.emplace_back("Retry-After", std::to_string(seconds_ceil(retry_ms)));
    f.headers.emplace_back("retry-after-ms", std::to_string(retry_ms));
  }
  // The OpenAI SDKs honour x-should-retry: a spent budget does not come back in seconds.
  if (retry_useless) f.headers.emplace_back("x-should-retry", "false");
  return f;
}

/// The x-ratelimit-* figures of an admission's answer (admitted or refused).
void rate_headers(request_context& ctx, const admit_result& res, const admission& a) {
  if (res.requests_scope >= 0 && std::size_t(res.requests_scope) < a.scopes.size()) {
    ctx.rate.limit_requests = a.scopes[res.requests_scope].limits.rpm;
    ctx.rate.remaining_requests = res.requests_left;
  }
  if (res.tokens_scope >= 0 && std::size_t(res.tokens_scope) < a.scopes.size()) {
    ctx.rate.limit_tokens = a.scopes[res.tokens_scope].limits.tpm;
    ctx.rate.remaining_tokens = res.tokens_left;
  }
  ctx.rate.reset_ms = res.reset_ms;
}

}  // namespace

bool grant::may_use(std::string_view model) const {
  return any_match(team_models, model) && any_match(key_models, model);
}

bool engine::may_list(const request_context& ctx, std::string_view model) {
  return !ctx.grant || ctx.grant->may_use(model);
}

phase_result engine::check_model_grant(const request_context& ctx) {
  if (may_list(ctx, ctx.model)) return flow::next;
  return make_failure(errc::permission_denied, "This API key may not use the model '" + ctx.model + "'.", "model",
                      error_source::policy);
}

namespace {

/// USD per million tokens × tokens, as nano-USD, rounded up once.
std::int64_t nano_of(double usd_per_million_tokens) {
  // USD per million tokens × tokens × 1e9 nano-USD / 1e6 = × 1000.
  const double nano = usd_per_million_tokens * 1000.0;
  // Saturated far below INT64_MAX (converting a larger double is undefined): $1,000,000,000, beyond
  // any budget, so such a cost is refused for budget, never wrapped negative.
  constexpr double cap = 1e18;
  if (!(nano < cap)) return static_cast<std::int64_t>(cap);
  return static_cast<std::int64_t>(std::ceil(nano - 1e-6));
}

}  // namespace

std::int64_t cost_nano(const config::price_config& p, std::uint64_t prompt, std::uint64_t cached, std::uint64_t completion,
                       std::uint64_t cache_write) {
  cached = std::min(cached, prompt);
  cache_write = std::min(cache_write, prompt - cached);
  return nano_of(p.input * double(prompt - cached - cache_write) + p.cached_input * double(cached) +
                 p.cache_write * double(cache_write) + p.output * double(completion));
}

std::int64_t worst_cost_nano(const config::price_config& p, std::uint64_t prompt, std::uint64_t completion) {
  const double per_prompt_token = std::max({p.input, p.cached_input, p.cache_write});
  return nano_of(per_prompt_token * double(prompt) + p.output * double(completion));
}

engine::engine(std::shared_ptr<store> st, metrics::registry& reg, log_fn log)
    : store_(std::move(st)),
      log_(std::move(log)),
      instance_(random_hex(6)),
      decisions_(reg.add("tollgate_policy_decisions_total",
                         "Admission decisions: admitted, rpm, tpm, concurrency, budget, unavailable, local (admitted by "
                         "the per-instance fallback), open (admitted unchecked by fail_open).",
                         metrics::kind::counter, {"decision"})),
      degraded_(reg.add("tollgate_policy_store_degraded",
                        "1 while any worker's last call found the policy store unreachable and the degraded policy "
                        "applied (a worker with no admission for 10 s no longer counts).", metrics::kind::gauge)),
      settlements_(reg.add("tollgate_policy_settlements_total",
                           "Settlements by result: applied, duplicate, retried, lost, local; outage: calls admitted while the "
                            "store was unreachable (budgets: fail_open), their cost charged to it later; released: "
                            "releases the store took, of admissions whose answer was lost (in case it had made them).", metrics::kind::counter,
                           {"result"})),
      soft_(reg.add("tollgate_budget_soft_threshold_total",
                    "Budgets that crossed their soft threshold (once per period), by team and scope (team or key).",
                    metrics::kind::counter, {"team", "scope"})),
      auth_(reg.add("tollgate_auth_total", "Authentication results: key, mtls, anonymous, missing, invalid, revoked, "
                                           "expired, unavailable.",
                    metrics::kind::counter, {"result"})),
      calls_(reg.add("tollgate_policy_store_calls_total",
                     "Policy store round trips by operation: admit and key_lookup happen before the upstream call; "
                     "settle counts settlements sent on their own after the response (most ride along with the next "
                     "admission and need no round trip of their own).",
                     metrics::kind::counter, {"op"})),
      call_admit_(calls_.counter({"admit"})),
      call_key_(calls_.counter({"key_lookup"})),
      call_settle_(calls_.counter({"settle"})),
      call_team_(calls_.counter({"team_lookup"})),
      auth_key_(auth_.counter({"key"})),
      degraded_cell_(degraded_.gauge({})),
      admitted_(decisions_.counter({"admitted"})),
      applied_(settlements_.counter({"applied"})),
      duplicate_(settlements_.counter({"duplicate"})),
      admission_wait_(reg.add("tollgate_policy_admission_seconds",
                              "Time an admission waited for the policy store: for the worker's batch to go out, "
                              "then its round trip (the Redis store), or the check itself (the memory store).",
                              metrics::kind::histogram, {},
                              {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1})),
      admission_wait_cell_(admission_wait_.histogram({})),
      journal_open_(reg.add("tollgate_policy_settlement_journal_open",
                            "Settlements in the settlement journal (store.settlement_journal), waiting for the policy "
                            "store to take them; 0 without a journal.",
                            metrics::kind::gauge)),
      journal_open_cell_(journal_open_.gauge({})) {
  degraded_cell_.set(0);
  journal_open_cell_.set(0);
  store_->on_invalidation([this](std::string_view id) { forget(id); });
  store_->on_notice([this](std::string_view level, std::string_view message) {
    log_(level, message, "\"store\":" + quote(store_->kind()));
  });
  store_->on_settled([this](unsigned worker, std::vector<settlement>& batch, const std::vector<settle_result>& results,
                            bool own_trip) { on_settled(worker, batch, results, own_trip); });
}

engine::~engine() = default;

void engine::start(const std::vector<executor_t>& workers) {
  queues_.resize(std::max<std::size_t>(1, workers.size()));
  worker_count_ = std::max<std::size_t>(1, workers.size());
  worker_degraded_ = std::make_unique<std::atomic<bool>[]>(worker_count_);
  degraded_at_.assign(worker_count_, steady_clock::time_point{});
  inflight_.resize(std::max<std::size_t>(1, workers.size()));
  usage_.resize(std::max<std::size_t>(1, workers.size()));
  usage_last_.assign(std::max<std::size_t>(1, workers.size()), nullptr);
  auth_cache_.resize(std::max<std::size_t>(1, workers.size()));
  executors_ = workers;
  store_->start(workers);
  for (std::size_t i = 0; i < workers.size(); ++i) {
    net::co_spawn(workers[i], renew_leases(unsigned(i), alive_), net::detached);
    net::co_spawn(workers[i], usage_loop(unsigned(i), alive_), net::detached);
  }
  // Settlements from the journal of an earlier run: worker 0 sends them until the store takes them.
  if (!replay_.empty() && !workers.empty()) {
    auto& q = queues_.front();
    for (auto& s : replay_) {
      // Sent before, maybe (an earlier run's answer lost): its figures are final, and an outage
      // charge of this run never joins it (seal_outage).
      q.items.push_back(retry_item{std::move(s), steady_clock::time_point::max(), true});
      q.items.back().sent = true;
    }
    replay_.clear();
    q.flushing = true;
    net::co_spawn(workers.front(), retry_settlements(0, alive_), net::detached);
  }
}

awaitable<void> engine::renew_leases(unsigned worker, std::weak_ptr<const bool> alive) {
  steady_timer_t timer(co_await net::this_coro::executor);
  for (;;) {
    // A lease is renewed once half of it has passed, and this loop looks every renew_tick: a
    // quarter of the shortest lease allowed (store.lease_ms >= 1000), so a renewal lands at most
    // three quarters into the lease, not after it (a 1 s tick renewed a 1 s lease when it had
    // already expired, and an admission in between swept the running call's holds).
    timer.expires_after(renew_tick);
    if (auto [ec] = co_await timer.async_wait(); ec) co_return;
    if (alive.expired()) co_return;
    // A worker whose last degraded call is degraded_idle_ old, with no call since, no longer
    // counts: the gauge tells of the calls being made, and an idle worker makes none. (Asking
    // the store instead would answer for another command: a Redis that refuses scripts for
    // memory or permissions still answers PING, and its connection stays up.)
    if (const unsigned w = worker % unsigned(worker_count_);
        worker_degraded_[w].load(std::memory_order_relaxed) && steady_clock::now() - degraded_at_[w] >= degraded_idle_)
      set_worker_degraded(w, false);
    const auto now = steady_clock::now();
    std::vector<std::shared_ptr<reservation>> due;
    for (auto& [key, r] : inflight_[worker])
      if (now - r->renewed >= milliseconds(r->adm.lease_ms / 2)) due.push_back(r);
    for (auto& r : due) {
      // The new expiry on the store's clock: its admission time plus what has passed here since.
      const auto elapsed = duration_cast<milliseconds>(now - r->admitted).count();
      const std::int64_t until = r->admitted_at_ms + elapsed + r->adm.lease_ms;
      // A call admitted by the per-instance limits holds its slot in local_, on local_'s clock.
      bool renewed = true;
      if (r->local) local_.renew_now(r->adm, until);
      else renewed = co_await store_->renew(worker, r->adm, until);
      if (alive.expired()) co_return;
      if (renewed) r->renewed = now;
    }
  }
}
void engine::stop() { store_->stop(); }

void engine::forget(std::string_view id) {
  generation_.fetch_add(1, std::memory_order_relaxed);  // every cached authentication ends
  std::lock_guard lock(cache_mu_);
  // Team records are marked stale, not dropped: while the store is unreachable the last one read
  // still holds. Dropped, a config team resolved to the file's quotas alone, and an admin's
  // override (a budget cut to zero, a lowered rpm) was lost for the outage.
  if (id == "*") {  // the invalidation channel was down: anything may have changed
    cache_.clear();
    for (auto& [name, t] : team_cache_) t.at = {};
  } else if (id.starts_with("team:")) {
    if (auto it = team_cache_.find(std::string(id.substr(5))); it != team_cache_.end()) it->second.at = {};
  } else {
    cache_.erase(std::string(id));
  }
}

awaitable<key_lookup> engine::lookup(unsigned worker, const config::gateway_config& cfg, std::string_view id,
                                     steady_clock::time_point* as_of) {
  const auto now = steady_clock::now();
  if (as_of) *as_of = now;
  for (auto& k : cfg.keys)
    if (k.id == id) co_return key_lookup{true, key_of(k), {}};
  const auto ttl = milliseconds(cfg.auth.key_cache_ms);
  {
    std::lock_guard lock(cache_mu_);
    if (auto it = cache_.find(std::string(id)); it != cache_.end() && now - it->second.at < ttl) {
      if (as_of) *as_of = it->second.at;
      co_return key_lookup{true, it->second.key, {}};
    }
  }
  call_key_.inc();
  // An invalidation that arrives while the read is on its way may be about this very key: the
  // answer then serves this call but is not cached (it may predate the change).
  const auto generation = generation_.load(std::memory_order_relaxed);
  key_lookup r = co_await store_->get_key(worker, std::string(id));
  if (!r.reachable) {
    // The store is down, so nobody can revoke through it either: the last answer stays good.
    std::lock_guard lock(cache_mu_);
    if (auto it = cache_.find(std::string(id)); it != cache_.end()) {
      if (as_of) *as_of = it->second.at;
      co_return key_lookup{true, it->second.key, {}};
    }
    co_return r;
  }
  {
    std::lock_guard lock(cache_mu_);
    if (cache_.size() > 100'000) cache_.clear();  // bound memory under a flood of random ids
    // (forget() bumps the generation before it takes the lock: seen here if it erased first.)
    if (generation_.load(std::memory_order_relaxed) == generation) cache_[std::string(id)] = {r.key, now};
  }
  co_return r;
}

awaitable<key_lookup> engine::find_key(unsigned worker, const config::gateway_config& cfg, std::string id) {
  // A fresh read of this key only. (Not forget(): its generation bump ends every cached
  // authentication of this replica, and an admin dashboard polling a key's budget made every
  // caller pay a full digest check again.)
  {
    std::lock_guard lock(cache_mu_);
    cache_.erase(id);
  }
  co_return co_await lookup(worker, cfg, id);
}

namespace {
/// The team whose identities name one of the caller's certificate SANs, if any (and the first
/// such SAN). A certificate whose SANs name two teams names none (`*ambiguous` set): which one
/// won would depend on the order of the SANs in the certificate.
const config::team_config* team_of_peer(const config::gateway_config& cfg, const request_context& ctx,
                                        const std::string** peer, bool* ambiguous = nullptr) {
  const config::team_config* found = nullptr;
  for (auto& name : ctx.peer_names)
    for (auto& t : cfg.teams)
      for (auto& id : t.identities)
        if (id == name) {
          if (found && found != &t) {
            if (ambiguous) *ambiguous = true;
            return nullptr;
          }
          if (!found) *peer = &name;
          found = &t;
        }
  return found;
}
}  // namespace

std::optional<phase_result> engine::try_authenticate(request_context& ctx) {
  const auto& cfg = *ctx.snap->cfg;
  const auto anonymous = [&]() -> phase_result {
    auto g = std::make_shared<grant>();
    g->anonymous = true;
    ctx.grant = std::move(g);
    auth_.counter({"anonymous"}).inc();
    return flow::next;
  };
  auto parsed = parse_key(ctx.credential);
  // Anything that starts like a Tollgate key is checked as one: a revoked key with a character
  // added must not pass on an open gateway as anonymous.
  if (!parsed && !ctx.credential.starts_with("tg_")) {
    // No key, or a credential that is not a Tollgate key (an SDK's placeholder): a verified client
    // certificate whose SAN maps to a team identifies the caller, else an open gateway lets it in.
    const std::string* peer = nullptr;
    bool ambiguous = false;
    if (team_of_peer(cfg, ctx, &peer, &ambiguous)) {
      ctx.credential.clear();  // (authenticate() takes the certificate's path)
      return std::nullopt;     // its team is resolved in the store
    }
    if (ambiguous) {
      auth_.counter({"invalid"}).inc();
      return make_failure(errc::invalid_api_key,
                          "The client certificate's names map to more than one team; the gateway uses none of them.",
                          "", error_source::policy);
    }
    if (!cfg.auth.required) return anonymous();
    if (!ctx.credential.empty()) return invalid_key();
    auth_.counter({"missing"}).inc();
    return make_failure(errc::invalid_api_key,
                        "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' (or in an api-key "
                        "or x-api-key header).",
                        "", error_source::policy);
  }
  if (!parsed) return invalid_key();
  // A key this worker authenticated moments ago, presenting the same secret.
  const auto tag = secret_tag(parsed->secret);
  auto* cache = ctx.worker < auth_cache_.size() ? &auth_cache_[ctx.worker] : nullptr;
  if (!tag || !cache) return std::nullopt;
  auto it = cache->find(parsed->id);
  if (it == cache->end()) return std::nullopt;
  const auth_entry& e = it->second;
  if (e.tag != *tag || e.generation != generation_.load(std::memory_order_relaxed) || e.cfg.owner_before(ctx.snap->cfg) ||
      ctx.snap->cfg.owner_before(e.cfg) || steady_clock::now() >= e.fresh_until ||
      (e.expires_unix && e.expires_unix <= store_->clock_ms(ctx.worker) / 1000))
    return std::nullopt;
  ctx.grant = e.g;
  ctx.identity.team = e.g->team;
  ctx.identity.key_id = e.g->key_id;
  ctx.identity.anonymous = false;
  ctx.capture_text = e.capture_text;
  auth_key_.inc();
  return flow::next;
}

failure engine::invalid_key() {
  auth_.counter({"invalid"}).inc();
  return make_failure(errc::invalid_api_key, "Incorrect API key provided.", "", error_source::policy);
}

awaitable<phase_result> engine::authenticate(request_context& ctx) {
  if (auto r = try_authenticate(ctx)) co_return std::move(*r);
  co_return co_await authenticate_with_store(ctx);
}

awaitable<phase_result> engine::authenticate_with_store(request_context& ctx) {
  const auto& cfg = *ctx.snap->cfg;
  // Made only here: the common case (a cache hit) ends in try_authenticate, with no allocation.
  std::shared_ptr<grant> g;
  auto from_team = [&](const config::team_config& t) {
    g->team = t.name;
    g->team_models = t.models;
    g->team_limits = t.limits;
    g->team_budget = t.budget;
    ctx.capture_text = t.capture_text;
  };
  if (ctx.credential.empty()) {
    // A verified client certificate whose SAN maps to a team (try_authenticate found one).
    const std::string* peer = nullptr;
    const config::team_config* t = team_of_peer(cfg, ctx, &peer);
    // Its models, limits and budget as the admin API may have changed them.
    auto view = co_await resolve_team(ctx.worker, cfg, t->name);
    g = std::make_shared<grant>();
    from_team(view.team ? *view.team : *t);
    g->subject = *peer;
    ctx.identity.team = t->name;
    ctx.identity.subject = *peer;
    ctx.identity.anonymous = false;
    ctx.grant = std::move(g);
    auth_.counter({"mtls"}).inc();
    co_return flow::next;
  }
  // A well-formed key that no cached grant answers: look it up (try_authenticate refused the
  // malformed ones).
  auto parsed = parse_key(ctx.credential);
  const auto tag = secret_tag(parsed->secret);
  auto* cache = ctx.worker < auth_cache_.size() ? &auth_cache_[ctx.worker] : nullptr;
  full_key_checks_.fetch_add(1, std::memory_order_relaxed);
  const auto generation = generation_.load(std::memory_order_relaxed);
  steady_clock::time_point key_as_of;
  auto found = co_await lookup(ctx.worker, cfg, parsed->id, &key_as_of);
  if (!found.reachable) {
    auth_.counter({"unavailable"}).inc();
    co_return make_failure(errc::policy_store_unavailable,
                           "The policy store is unavailable; the key cannot be checked. Retry shortly.", "",
                           error_source::policy);
  }
  if (!found.key) co_return invalid_key();
  const key_record& k = *found.key;
  // After a rotation the previous secret stays valid for the overlap it was given.
  const bool current = verify_secret(parsed->secret, k.digest, cfg.auth.pepper);
  // Expiries are read on the store's clock (Redis's, as estimated), as the limits are: replicas
  // whose own clocks disagree still agree when a key, or a rotated-out secret, stops working.
  const std::int64_t now_s = store_->clock_ms(ctx.worker) / 1000;
  if (!current && !(k.old_digest.size() && k.old_digest_expires_unix > now_s &&
                    verify_secret(parsed->secret, k.old_digest, cfg.auth.pepper)))
    co_return invalid_key();
  if (!k.enabled) {
    auth_.counter({"revoked"}).inc();
    co_return make_failure(errc::invalid_api_key, "This API key has been revoked.", "", error_source::policy);
  }
  if (k.expires_unix && k.expires_unix <= now_s) {
    auth_.counter({"expired"}).inc();
    co_return make_failure(errc::invalid_api_key, "This API key has expired.", "", error_source::policy);
  }
  const auto view = co_await resolve_team(ctx.worker, cfg, k.team);
  if (!view.team) {
    auth_.counter({view.reachable ? "invalid" : "unavailable"}).inc();
    if (!view.reachable)
      co_return make_failure(errc::policy_store_unavailable,
                             "The policy store is unavailable; the key's team cannot be checked. Retry shortly.", "",
                             error_source::policy);
    co_return make_failure(errc::invalid_api_key, "This API key's team no longer exists.", "", error_source::policy);
  }
  if (view.source == "api" && k.created_unix > 0 && k.created_unix < view.created_unix) {
    // Made before its team: the key of an earlier team of that name, deleted since. The team
    // created later does not take it over, even where the deletion failed to revoke it.
    auth_.counter({"invalid"}).inc();
    co_return make_failure(errc::invalid_api_key, "This API key's team no longer exists.", "", error_source::policy);
  }
  const config::team_config* t = &*view.team;
  g = std::make_shared<grant>();
  from_team(*t);
  g->key_id = k.id;
  g->key_models = k.models;
  g->key_limits = k.limits;
  g->key_budget = k.budget;
  ctx.identity.team = t->name;
  ctx.identity.key_id = k.id;
  ctx.identity.anonymous = false;
  // Remembered while both answers it rests on are fresh, and only for the current secret (the
  // previous one's overlap ends on its own clock).
  if (tag && cache && current) {
    if (cache->size() > 10'000) cache->clear();  // bound memory
    auth_entry& e = (*cache)[std::string(parsed->id)];
    e = {g, *tag, ctx.snap->cfg, generation,
         std::min(key_as_of, view.as_of) + milliseconds(cfg.auth.key_cache_ms), k.expires_unix, t->capture_text};
  }
  ctx.grant = std::move(g);
  auth_key_.inc();
  co_return flow::next;
}

awaitable<phase_result> engine::admit(request_context& ctx) {
  const auto& cfg = *ctx.snap->cfg;
  const grant& g = *ctx.grant;  // its model grant checked already (check_model_grant)
  auto r = std::make_shared<reservation>();
  r->price = ctx.route && !ctx.route->targets.empty() ? ctx.route->targets.front().price : cfg.find_price(ctx.model);
  if (g.anonymous) {
    ctx.reservation = std::move(r);
    co_return flow::next;
  }
  admission& a = r->adm;
  a.scopes.reserve(2);
  if (auto s = make_scope("t", g.team, g.team_limits, g.team_budget)) a.scopes.push_back(std::move(*s));
  if (!g.key_id.empty())
    if (auto s = make_scope("k:" + g.key_id, g.team, g.key_limits, g.key_budget)) a.scopes.push_back(std::move(*s));
  if (a.scopes.empty()) {  // nothing to enforce: no round trip
    ctx.reservation = std::move(r);
    co_return flow::next;
  }
  const std::uint64_t out = reserved_output_tokens(ctx, cfg.store.default_max_tokens);
  // A call reserved at the default cap is held to it upstream: its output, and so its cost, can
  // then not outgrow the reservation (a model's own limit may be far above the default).
  if (ctx.max_output_tokens == 0 && ctx.endpoint == endpoint_kind::chat_completions && cfg.store.send_default_max_tokens &&
      std::any_of(a.scopes.begin(), a.scopes.end(), [](const scope_spec& s) { return s.budget.set() || s.limits.tpm > 0; }))
    ctx.output_cap = cfg.store.default_max_tokens;
  a.lease = instance_ + "-" + ctx.id_hex;
  a.tokens = ctx.prompt_estimate + out;
  a.cost_nano = r->price ? worst_cost_nano(*r->price, ctx.prompt_estimate, out) : 0;
  // Which target will answer is not known yet: the dearest of them is reserved (a fallback to a
  // model priced above the primary's must fit the budget too).
  if (ctx.route)
    for (const route_target& t : ctx.route->targets)
      if (t.price && t.price != r->price) a.cost_nano = std::max(a.cost_nano, worst_cost_nano(*t.price, ctx.prompt_estimate, out));
  a.lease_ms = cfg.store.lease_ms;

  call_admit_.inc();
  const auto asked = steady_clock::now();
  admit_result res = co_await store_->admit(ctx.worker, a);
  const auto answered = steady_clock::now();
  std::vector<std::uint64_t> whole_tpm;  // filled only when a degraded replica's share applies
  admission_wait_.observe(admission_wait_cell_, std::chrono::duration<double>(answered - asked).count());
  if (res.v == verdict::unavailable) {
    if (res.in_doubt) {
      // The batch's deadline is at most one store timeout after now (it is the moment the store
      // gives up on it, which a reset can come before); Redis's clock is read when it was sent.
      // The store's own timeout, not this snapshot's: a reload does not change the store's.
      const auto now = steady_clock::now();
      release_later(ctx.worker, a,
                    store_->clock_ms(ctx.worker) - std::chrono::duration_cast<milliseconds>(now - asked).count(),
                    now + store_->command_timeout() + milliseconds(5));
    }
    set_worker_degraded(ctx.worker, true, answered);
    const bool began = !is_degraded_.exchange(true);
    const std::string why = store_->last_error();
    // One line when degraded mode begins, and one more if the reason was not known then (a call
    // that came while the first connection was still being made) and is now.
    bool tell = began;
    {
      std::lock_guard lock(degraded_mu_);
      const auto now = steady_clock::now();
      if (began) {
        tell = why != degraded_reason_ || degraded_logged_ == steady_clock::time_point{} ||
               now - degraded_logged_ >= degraded_log_every;
        degraded_reason_ = why;
        degraded_told_ = tell;
      } else if (degraded_reason_.empty() && !why.empty()) {
        degraded_reason_ = why;
        tell = degraded_told_ = true;
      }
      if (tell) degraded_logged_ = now;
    }
    if (tell)
      log_("warn",
           began ? "policy store unreachable: degraded mode (budgets and limits per store.on_unavailable)"
                 : "policy store unreachable: the reason (degraded mode continues)",
           "\"store\":" + quote(store_->kind()) + (why.empty() ? std::string() : ",\"reason\":" + quote(why)));
    bool has_budget = false, has_limits = false;
    for (auto& s : a.scopes) {
      has_budget = has_budget || s.budget.set();
      has_limits = has_limits || s.limits.any();
    }
    const auto closed = [&] {
      decisions_.counter({"unavailable"}).inc();
      return refusal(errc::policy_store_unavailable,
                     "The policy store is unavailable and this call's limits cannot be checked. Retry shortly.", 1000);
    };
    if (has_budget && cfg.store.budgets == config::on_store_failure::fail_closed) co_return closed();
    // Rate limits fail closed only for a call that has one: a call with a budget alone (fail_open)
    // has no rate limit to fail.
    if (has_limits && cfg.store.rate_limits == config::on_store_failure::fail_closed) co_return closed();
    if (has_budget) {
      // Budgets fail_open: unchecked now, but the call's cost is charged when the store is back,
      // to the periods of the store's clock as last known (Redis's, estimated from its replies).
      const std::int64_t now_ms = store_->clock_ms(ctx.worker);
      for (const auto& s : a.scopes)
        if (s.budget.set()) {
          r->charge_scopes.push_back(s);
          r->charge_periods.push_back(period_id(s.budget.period, now_ms));
        }
    }
    if (cfg.store.rate_limits == config::on_store_failure::fail_open) {
      decisions_.counter({"open"}).inc();
      r->unchecked = true;
      ctx.reservation = std::move(r);
      co_return flow::next;
    }
    // Per-instance limits: each replica takes its share of the limit; budgets (fail_open) unchecked
    // here and charged later.
    // Each scope's whole tpm, kept: a call larger than this replica's share but within the whole
    // limit can fit again once the store is back, so it is not told that it never will.
    whole_tpm.reserve(a.scopes.size());
    for (const auto& s : a.scopes) whole_tpm.push_back(s.limits.tpm);
    admission local = a;
    local.rendered.clear();  // its scopes and cost change below
    for (auto& s : local.scopes) {
      s.limits = divided(s.limits, cfg.store.replicas);
      s.budget = {};
    }
    local.cost_nano = 0;
    res = local_.admit_now(local);
    r->local = true;
    r->adm = std::move(local);
    rate_headers(ctx, res, r->adm);
    if (res.v == verdict::admitted) {
      decisions_.counter({"local"}).inc();
      r->periods = std::move(res.periods);
      r->admitted_at_ms = res.admitted_at_ms;
      // Renewed like any other: a call longer than lease_ms, in an outage as long, keeps its
      // local concurrency slot (else the next local admission swept it and exceeded the share).
      r->admitted = r->renewed = steady_clock::now();
      if (!inflight_.empty()) inflight_[ctx.worker % inflight_.size()].emplace(r.get(), r);
      ctx.reservation = std::move(r);
      co_return flow::next;
    }
  } else {
    set_worker_degraded(ctx.worker, false);
    store_answered(ctx.worker % unsigned(queues_.size() ? queues_.size() : 1));
    if (is_degraded_.exchange(false)) {
      bool tell = false;
      {
        std::lock_guard lock(degraded_mu_);
        tell = std::exchange(degraded_told_, false);
      }
      if (tell) log_("info", "policy store reachable again: full enforcement", "\"store\":" + quote(store_->kind()));
    }
  }
  // A call that reserves more tokens than a scope's tpm never fits, whatever else refused it
  // (a rate limit's wait may be as long): answered as that, with no retry, not with a wait.
  const auto tpm_of = [&](std::size_t i) { return whole_tpm.empty() ? r->adm.scopes[i].limits.tpm : whole_tpm[i]; };
  if (res.v == verdict::rpm || res.v == verdict::concurrency || res.v == verdict::tpm)
    for (std::size_t i = 0; i < r->adm.scopes.size(); ++i)
      if (const auto tpm = tpm_of(i); tpm && a.tokens > tpm) {
        res.v = verdict::tpm;
        res.scope = i;
        break;
      }
  (res.v == verdict::admitted ? admitted_ : decisions_.counter({verdict_name(res.v)})).inc();
  rate_headers(ctx, res, r->adm);
  if (res.v == verdict::admitted) {
    r->periods = std::move(res.periods);
    r->admitted_at_ms = res.admitted_at_ms;
    r->admitted = r->renewed = steady_clock::now();
    inflight_[ctx.worker % inflight_.size()].emplace(r.get(), r);
    ctx.reservation = std::move(r);
    co_return flow::next;
  }
  const scope_spec& s = r->adm.scopes[res.scope];
  const bool is_key = s.id != "t";
  const std::string who = is_key ? "key " + g.key_id : "team " + g.team;
  switch (res.v) {
    case verdict::rpm:
      co_return refusal(errc::rate_limited, "Rate limit reached for requests per minute on " + who + ": limit " +
                                                std::to_string(s.limits.rpm) + ". Retry after the time in Retry-After.",
                        res.retry_after_ms);
    case verdict::tpm: {
      // `s` holds this replica's share while the store is unreachable; the whole limit decides
      // whether any wait can help.
      const std::uint64_t whole = tpm_of(res.scope);
      const bool never = a.tokens > whole;
      if (!never && a.tokens > s.limits.tpm)
        co_return refusal(errc::rate_limited,
                          "The policy store is unreachable and this call reserves " + std::to_string(a.tokens) +
                              " tokens, more than this replica's share of the tokens-per-minute limit on " + who +
                              " (" + std::to_string(s.limits.tpm) + " of " + std::to_string(whole) +
                              "). Retry shortly.",
                          1000);
      const std::string limit = whole_tpm.empty() || never
                                    ? std::to_string(whole)
                                    : std::to_string(s.limits.tpm) + " (this replica's share of " +
                                          std::to_string(whole) + " while the policy store is unreachable)";
      co_return refusal(errc::rate_limited,
                        "Rate limit reached for tokens per minute on " + who + ": limit " + limit + ", this call reserves " +
                            std::to_string(a.tokens) + " (prompt estimate plus max_tokens).",
                        never ? 0 : res.retry_after_ms, never);
    }
    case verdict::concurrency:
      co_return refusal(errc::rate_limited, "Too many requests in flight on " + who + ": limit " +
                                                std::to_string(s.limits.concurrency) + ".",
                        res.retry_after_ms);
    case verdict::budget:
      // The store gives a wait only when calls in flight hold what this call needs (their
      // settlements, usually below their worst case, may free it): a retry may then succeed, and
      // the SDKs retry a 429 at Retry-After. A budget its spend alone exhausts gives none.
      if (res.retry_after_ms > 0)
        co_return refusal(errc::budget_exceeded,
                          "The USD budget of " + who + " for this period is committed to calls in flight (at their "
                          "worst-case cost); retry when they finish.",
                          res.retry_after_ms);
      co_return refusal(errc::budget_exceeded,
                        "The USD budget of " + who + " for this period is exhausted (or this call's worst-case cost "
                        "would exceed it).",
                        0, true);
    default:
      co_return refusal(errc::policy_store_unavailable, "The policy store is unavailable. Retry shortly.", 1000);
  }
}

const config::price_config* served_price(const config::gateway_config& cfg, const request_context& ctx) noexcept {
  return ctx.target && ctx.target->price ? ctx.target->price : cfg.find_price(ctx.model);
}

bool billable(const request_context& ctx) noexcept {
  // Only answers a provider produced are billed: a refused connect or an error status is not. A
  // stream cut short keeps its 200 (the status went out before the cut) and is billed. A remote
  // provider's 2xx is billed whatever the caller got: the provider charged for it.
  const unsigned status = ctx.upstream_status ? ctx.upstream_status : ctx.status;
  // A stream its provider ended with an error event before any output and without usage (a
  // throttling exception in Bedrock's first frame, a Gemini RESOURCE_EXHAUSTED event, an OpenAI
  // error event) was refused in-band: the provider charges nothing for it, and neither does the
  // budget. (A stream cut by a reset is still billed its prompt: the provider may have read it.)
  if (ctx.stream && ctx.refused_in_band && !ctx.usage.reported && ctx.relayed_completion_chars == 0)
    return false;
  return ctx.upstream_answered && status / 100 == 2 &&
         (ctx.endpoint == endpoint_kind::chat_completions || ctx.endpoint == endpoint_kind::embeddings);
}

std::uint64_t reserved_output_tokens(const request_context& ctx, std::uint64_t default_max_tokens) noexcept {
  if (ctx.endpoint == endpoint_kind::embeddings) return 0;
  // Each of the `n` answers a chat call asks for may be as long as its max_tokens.
  return std::uint64_t(std::max(ctx.choices, 1u)) * (ctx.max_output_tokens ? ctx.max_output_tokens : default_max_tokens);
}

void fill_usage(request_context& ctx) noexcept {
  if (!billable(ctx)) return;
  if (ctx.usage.reported) {
    // Usage that gives no output though output was relayed (a partial usage object, or one a
    // stream sent before it was cut): the relayed text is counted rather than billed as nothing.
    if (ctx.usage.completion == 0 && ctx.relayed_completion_chars > 0)
      ctx.usage.completion = estimate_tokens_from_chars(ctx.relayed_completion_chars);
    // Usage that gives no prompt count (a server that omits it, or sends it as null) for a call
    // that had a prompt: no model reads a prompt for nothing, so the admission's estimate is
    // billed rather than 0.
    if (ctx.usage.prompt == 0) ctx.usage.prompt = ctx.prompt_estimate;
    return;
  }
  // Prompt from the estimate; completion counted from what was relayed to the caller, or, for a
  // whole answer whose body never arrived, the most it can have been (its reservation).
  ctx.usage.prompt = ctx.prompt_estimate;
  if (ctx.answer_unread)
    ctx.usage.completion =
        reserved_output_tokens(ctx, ctx.snap && ctx.snap->cfg ? ctx.snap->cfg->store.default_max_tokens : 0);
  else
    ctx.usage.completion = estimate_tokens_from_chars(ctx.relayed_completion_chars);
}

void engine::settle(request_context& ctx, executor_t ex) {
  fill_usage(ctx);
  count_usage(ctx);
  auto r = ctx.reservation;
  if (!r || r->adm.scopes.empty()) return;
  if (!inflight_.empty()) inflight_[ctx.worker % inflight_.size()].erase(r.get());
  // The admission moves into its settlement (no copy of its scopes): a second settle() of this
  // call finds no scopes and returns above; renew_leases() skips it the same way.
  settlement s;
  s.adm = std::move(r->adm);
  s.periods = std::move(r->periods);
  s.admitted_at_ms = r->admitted_at_ms;
  if (billable(ctx)) {
    s.tokens = ctx.usage.prompt + ctx.usage.completion;
    const config::price_config* price = ctx.snap && ctx.snap->cfg ? served_price(*ctx.snap->cfg, ctx) : r->price;
    s.cost_nano = price ? cost_nano(*price, ctx.usage) : 0;
  }
  if (r->local || r->unchecked) {
    const std::int64_t cost = s.cost_nano;
    if (r->local) {  // the per-instance limits: their hold released, their token count corrected
      s.cost_nano = 0;
      local_.settle_now(s);
      settlements_.counter({"local"}).inc();
    }
    if (cost > 0 && !r->charge_scopes.empty()) charge_later(ctx.worker, *r, s.tokens, cost);
    return;
  }
  // Handed to the store: the Redis store carries it in this worker's next admission script call
  // (or sends it alone when no admission comes within 0.5 ms); results come to on_settled().
  ++pending_;
  store_->queue_settlement(ctx.worker, std::move(s), ex);
}

void engine::on_settled(unsigned worker, std::vector<settlement>& batch, const std::vector<settle_result>& results,
                        bool own_trip) {
  if (own_trip) call_settle_.inc();
  const unsigned w = worker % unsigned(queues_.size());
  auto& q = queues_[w];
  std::size_t failed = 0;
  const std::size_t first_new = q.items.size();
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (i < results.size() && results[i].reachable) {
      (results[i].applied ? applied_ : duplicate_).inc();
      if (results[i].applied) report_soft(batch[i], results[i]);
      --pending_;
    } else {
      // Idempotent, so sent again until the store answers (shutdown waits up to drain_ms for it).
      q.items.push_back(retry_item{std::move(batch[i]), steady_clock::now() + retry_give_up});
      ++failed;
    }
  }
  if (failed == 0) return;
  settlements_.counter({"retried"}).inc(double(failed));
  retry_from(w, first_new);
}

void engine::retry_from(unsigned worker, std::size_t first_new) {
  auto& q = queues_[worker];
  journal_add(std::span<retry_item>(q.items).subspan(first_new));
  if (!q.flushing && worker < executors_.size()) {
    q.flushing = true;
    net::co_spawn(executors_[worker], retry_settlements(worker, alive_), net::detached);
  }
}

awaitable<void> engine::retry_settlements(unsigned worker, std::weak_ptr<const bool> alive) {
  constexpr std::size_t max_batch = 128;
  auto& q = queues_[worker];
  steady_timer_t timer(co_await net::this_coro::executor);
  milliseconds delay = retry_first;
  while (!q.items.empty()) {
    timer.expires_after(delay);
    q.sleeping = &timer;
    q.backing_off = delay > retry_first;
    auto [ec] = co_await timer.async_wait();  // not in the if: GCC 12 and co_await in conditions
    if (alive.expired()) co_return;
    q.sleeping = nullptr;
    // (Cleared whatever ended the wait: a nudge that came as the timer fired must not linger.)
    const bool nudged = std::exchange(q.nudged, false);
    if (ec && nudged) ec = {};  // the store answers again: send now
    if (ec) {
      for (const auto& it : q.items)
        if (!it.release) --pending_;
      q.items.clear();
      break;
    }
    // One round: everything waiting and due, a batch per team (a Redis Cluster script stays in
    // one slot).
    std::vector<retry_item> round = std::move(q.items);
    q.items.clear();
    const auto started = steady_clock::now();
    std::size_t due = 0;
    for (std::size_t i = 0; i < round.size(); ++i) {
      if (round[i].not_before > started) q.items.push_back(std::move(round[i]));
      else if (i != due++) round[due - 1] = std::move(round[i]);
    }
    round.resize(due);
    std::size_t failed = 0;
    // A batch per team, in one pass: the round's items in team order (each team's in the order
    // queued), then cut into batches of up to max_batch. The first batch is one settlement, a
    // probe, one sent before when there is one: when the store does not answer it and says it is
    // unreachable, the round ends there and the rest wait unsent (an outage's charges keep taking
    // sums: seal_outage), rather than every batch of the round waiting out its own timeout. (A
    // store that answers but refuses the probe, an error reply, is reachable: the round goes on.)
    std::stable_sort(round.begin(), round.end(), [](const retry_item& a, const retry_item& b) {
      return a.s.adm.scopes.front().team < b.s.adm.scopes.front().team;
    });
    for (std::size_t i = 1; i < round.size(); ++i)
      if (round[i].sent && !round[0].sent) {
        std::swap(round[0], round[i]);
        break;
      }
    std::size_t next = 0;
    bool probe = true;
    while (next < round.size()) {
      const std::string team = round[next].s.adm.scopes.front().team;
      std::vector<retry_item> batch;
      const std::size_t most = probe ? 1 : max_batch;
      while (next < round.size() && batch.size() < most && round[next].s.adm.scopes.front().team == team)
        batch.push_back(std::move(round[next++]));
      std::vector<settlement> sends;
      for (auto& it : batch) {
        it.sent = true;
        sends.push_back(it.s);
      }
      call_settle_.inc();
      q.in_batch = &batch;
      q.in_round = &round;
      q.in_next = &next;
      std::vector<settle_result> res = co_await store_->settle_batch(worker, std::move(sends));
      if (alive.expired()) co_return;
      q.in_batch = q.in_round = nullptr;
      q.in_next = nullptr;
      if (q.abandoned) co_return;  // (shutdown took this round's items meanwhile: abandon_pending)
      const auto now = steady_clock::now();
      std::vector<retry_item> finished;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        if (i < res.size() && res[i].reachable && batch[i].release) {
          settlements_.counter({"released"}).inc();  // whether or not the store had made the lease
        } else if (i < res.size() && res[i].reachable) {
          (res[i].applied ? applied_ : duplicate_).inc();
          if (res[i].applied) report_soft(batch[i].s, res[i]);
          --pending_;
          if (batch[i].journaled) finished.push_back(std::move(batch[i]));
        } else if (now >= batch[i].give_up) {
          // A release: its lease has expired, nothing is left to release.
          if (!batch[i].release) lose(batch[i].s, "settlement lost: the policy store stayed unreachable");
        } else if (batch[i].journaled && batch[i].s.admitted_at_ms > 0 &&
                   batch[i].s.admitted_at_ms < wall_ms() - journal_replay_limit_ms) {
          // Journaled settlements are never given up, but past the store's day of memory one
          // could be charged twice or not at all: as at a replay, logged with its cost instead.
          lose(batch[i].s, "settlement journal: too old to send (the store remembers charges for a day); its cost is not charged");
          finished.push_back(std::move(batch[i]));
        } else {
          q.items.push_back(std::move(batch[i]));
          ++failed;
        }
      }
      journal_done(finished);
      const bool answered = !res.empty() && res.front().reachable;
      if (probe && !answered && !store_->healthy())
        for (; next < round.size(); ++next) q.items.push_back(std::move(round[next]));  // unsent: still open to sums
      probe = false;
    }
    if (failed) settlements_.counter({"retried"}).inc(double(failed));
    delay = failed ? std::min(delay * 2, retry_longest) : retry_first;
    if (!failed) q.nudge_spent = false;
  }
  q.flushing = false;
}

void engine::set_worker_degraded(unsigned worker, bool degraded, steady_clock::time_point at) {
  if (!worker_degraded_) return;  // (not started)
  if (degraded) degraded_at_[worker % worker_count_] = at;  // every degraded call, not only the first
  auto& mine = worker_degraded_[worker % worker_count_];
  if (mine.load(std::memory_order_relaxed) == degraded) return;  // the hot path: no change
  std::lock_guard lock(degraded_mu_);
  mine.store(degraded, std::memory_order_relaxed);
  bool any = false;
  for (std::size_t i = 0; i < worker_count_ && !any; ++i) any = worker_degraded_[i].load(std::memory_order_relaxed);
  degraded_cell_.set(any ? 1 : 0);
}

void engine::store_answered(unsigned worker) {
  if (worker >= queues_.size()) return;
  auto& q = queues_[worker];
  // Settlements that failed while the store was away hold their calls' slots and budget holds
  // there: once an admission shows it is back, they go at once rather than after the backoff.
  if (q.sleeping != nullptr && q.backing_off && !q.nudged && !q.nudge_spent && !q.items.empty()) {
    q.nudged = q.nudge_spent = true;
    q.sleeping->cancel();
  }
}

namespace {
/// Whether a charge-only settlement charges these scopes' budgets in these periods (then a
/// charge for the same may be added to it).
bool charges_same(const settlement& s, const std::vector<scope_spec>& scopes, const std::vector<std::string>& periods) {
  if (s.periods != periods || s.adm.scopes.size() != scopes.size()) return false;
  for (std::size_t i = 0; i < scopes.size(); ++i) {
    const auto &a = s.adm.scopes[i], &b = scopes[i];
    if (a.id != b.id || a.team != b.team || a.budget.limit_nano != b.budget.limit_nano ||
        a.budget.period != b.budget.period || a.budget.soft != b.budget.soft)
      return false;
  }
  return true;
}
}  // namespace

void engine::charge_later(unsigned worker, const reservation& r, std::uint64_t tokens, std::int64_t cost_nano) {
  if (queues_.empty()) return;
  const unsigned w = worker % unsigned(queues_.size());
  auto& q = queues_[w];
  settlements_.counter({"outage"}).inc();
  const auto same = [&r](const settlement& s) { return charges_same(s, r.charge_scopes, r.charge_periods); };
  for (auto& s : q.outage)
    if (same(s)) {
      s.tokens += tokens;
      s.cost_nano += cost_nano;
      return;
    }
  settlement s;
  s.charge_only = true;
  s.adm.lease = instance_ + "-o" + std::to_string(w) + "-" + std::to_string(++outage_seq_);
  s.adm.scopes = r.charge_scopes;
  s.periods = r.charge_periods;
  s.tokens = tokens;
  s.cost_nano = cost_nano;
  s.admitted_at_ms = wall_ms();
  q.outage.push_back(std::move(s));
  ++pending_;
  if (!q.sealing && w < executors_.size()) {
    q.sealing = true;
    net::co_spawn(executors_[w], seal_outage(w, alive_), net::detached);
  }
}

awaitable<void> engine::seal_outage(unsigned worker, std::weak_ptr<const bool> alive) {
  steady_timer_t timer(co_await net::this_coro::executor);
  timer.expires_after(outage_seal);
  co_await timer.async_wait();
  if (alive.expired()) co_return;
  auto& q = queues_[worker];
  q.sealing = false;
  if (q.outage.empty()) co_return;  // (given up at shutdown)
  // Sealed. A charge of the same scopes and periods still waiting, never sent, takes the sum
  // (its journal line written again with the new figures: the journal keeps a lease's last);
  // else the sum is a new charge. Once sent, a charge is final (every resend carries the same
  // figures under the same lease, so the store charges it once). Since a retry round stops at
  // the first send the store does not answer, a long outage leaves one charge per scope set
  // waiting, not one per seal (ten a second: memory, journal and each round grew with the outage).
  const std::size_t first_new = q.items.size();
  const auto give_up = steady_clock::now() + retry_give_up;
  std::vector<std::size_t> merged;  // (indexes: the pushes below may move the items)
  for (auto& s : q.outage) {
    std::size_t into = first_new;
    for (std::size_t i = 0; i < first_new && into == first_new; ++i) {
      const retry_item& it = q.items[i];
      if (!it.sent && !it.release && it.s.charge_only && charges_same(it.s, s.adm.scopes, s.periods)) into = i;
    }
    if (into == first_new) {
      q.items.push_back(retry_item{std::move(s), give_up});
      continue;
    }
    q.items[into].s.tokens += s.tokens;
    q.items[into].s.cost_nano += s.cost_nano;
    q.items[into].give_up = std::max(q.items[into].give_up, give_up);  // (the newest cost's 10 minutes)
    --pending_;  // (counted once, in the charge it joined)
    if (q.items[into].journaled) merged.push_back(into);
  }
  q.outage.clear();
  journal_again(q.items, merged);
  retry_from(worker, first_new);
}

void engine::journal_again(const std::vector<retry_item>& items, std::span<const std::size_t> which) {
  if (which.empty()) return;
  std::vector<const settlement*> s;
  for (std::size_t i : which) s.push_back(&items[i].s);
  std::string error;
  if (!journal_.add(s, error)) {
    // The journal holds the charge's earlier figures: a crash now replays those, and the rest of
    // the sum lives in memory only, as without a journal.
    if (!journal_error_told_.exchange(true)) log_("error", error, {});
  }
}

void engine::release_later(unsigned worker, const admission& a, std::int64_t at_ms, steady_clock::time_point not_before) {
  if (queues_.empty()) return;
  const unsigned w = worker % unsigned(queues_.size());
  // The lease as sent (its rendering included): a settlement finds it only if the store made it,
  // and then releases its slot and budget hold and charges nothing. When the store did not make
  // it (the usual case: the batch never ran, or ran past its deadline and reserved nothing), the
  // settlement finds nothing and does nothing. Its tokens stay counted in the rate window (as
  // used): which bucket Redis put them in is not known, and a correction in the wrong one would
  // skew two buckets; they leave with the window, within 62 s.
  settlement s;
  s.adm = a;
  s.periods = periods_of(a, at_ms);
  s.tokens = a.tokens;
  s.admitted_at_ms = at_ms;
  auto& q = queues_[w];
  const std::size_t first_new = q.items.size();
  retry_item it{std::move(s), steady_clock::now() + milliseconds(a.lease_ms), false, true};
  it.not_before = not_before;
  q.items.push_back(std::move(it));
  retry_from(w, first_new);
}

void engine::lose(const settlement& s, std::string_view why) {
  settlements_.counter({"lost"}).inc();
  lost_.fetch_add(1, std::memory_order_relaxed);
  const std::string team = s.adm.scopes.empty() ? std::string() : s.adm.scopes.front().team;
  log_("error", why,
       "\"lease\":" + quote(s.adm.lease) + ",\"team\":" + quote(team) + ",\"cost_usd\":" +
           std::to_string(double(s.cost_nano) / 1e9) + ",\"tokens\":" + std::to_string(s.tokens));
  --pending_;
}

void engine::abandon_pending(unsigned worker) {
  if (worker >= queues_.size()) return;
  auto& q = queues_[worker];
  q.abandoned = true;
  // A retry round on the wire: its batch (whose answer may still come: applied or not, it is
  // kept or logged here, and a replay of a kept one charges nothing twice) and what it had not
  // sent yet. Left in the round, they were neither kept nor logged, only counted in the drain's
  // last line.
  if (q.in_batch != nullptr) {
    for (auto& it : *q.in_batch) q.items.push_back(std::move(it));
    q.in_batch->clear();
  }
  if (q.in_round != nullptr && q.in_next != nullptr) {
    for (std::size_t& i = *q.in_next; i < q.in_round->size(); ++i) q.items.push_back(std::move((*q.in_round)[i]));
  }
  // Outage charges not sealed yet (calls cut by the drain's end are charged moments before this)
  // are sealed now, and journaled with the rest when there is a journal, rather than lost.
  if (!q.outage.empty()) {
    const std::size_t first_new = q.items.size();
    for (auto& s : q.outage) q.items.push_back(retry_item{std::move(s), steady_clock::now()});
    q.outage.clear();
    journal_add(std::span<retry_item>(q.items).subspan(first_new));
  }
  // Settlements whose journal line could not be written when they first failed (a full disk
  // then): one more try, now, rather than a loss.
  if (journal_.enabled()) {
    const auto unjournaled = std::stable_partition(q.items.begin(), q.items.end(), [](const retry_item& it) { return it.journaled; });
    journal_add(std::span<retry_item>(q.items).subspan(std::size_t(unjournaled - q.items.begin())));
  }
  std::size_t kept = 0;
  std::int64_t kept_nano = 0;
  for (auto& it : q.items) {
    if (it.journaled) {
      ++kept;
      kept_nano += it.s.cost_nano;
      --pending_;
    } else if (it.release) {
      // Charges nothing; the lease expires by itself.
    } else {
      lose(it.s, "settlement lost at shutdown: the policy store was unreachable");
    }
  }
  if (kept)
    log_("warn", "settlements kept in the journal for the next start: the policy store was unreachable",
         "\"settlements\":" + std::to_string(kept) + ",\"cost_usd\":" + std::to_string(double(kept_nano) / 1e9));
  q.items.clear();  // the retry loop, if asleep, finds nothing when it wakes
}

void engine::journal_add(std::span<retry_item> items) {
  if (!journal_.enabled() || items.empty()) return;
  std::vector<const settlement*> s;
  for (auto& it : items)
    if (!it.release) s.push_back(&it.s);
  if (s.empty()) return;
  std::string error;
  if (!journal_.add(s, error)) {
    // Kept in memory and retried as without a journal; said once per run of failures.
    if (!journal_error_told_.exchange(true)) log_("error", error, {});
    return;
  }
  journal_error_told_.store(false);  // (written again: the next failure is news)
  for (auto& it : items) {
    if (it.release) continue;
    it.journaled = true;
    it.give_up = steady_clock::time_point::max();
  }
}

void engine::journal_done(std::span<const retry_item> items) {
  if (items.empty()) return;
  std::vector<std::string_view> leases;
  for (auto& it : items) leases.push_back(it.s.adm.lease);
  std::string error;
  if (!journal_.done(leases, error) && !journal_error_told_.exchange(true)) log_("error", error, {});
}

std::size_t engine::open_journal(const std::string& path) {
  auto opened = journal_.open(path);  // throws with the reason
  journal_.on_count([this](std::size_t n) { journal_open_cell_.set(double(n)); });
  if (opened.skipped)
    log_("warn", "settlement journal: lines that do not parse were skipped",
         "\"path\":" + quote(path) + ",\"lines\":" + std::to_string(opened.skipped));
  // The store remembers an expired lease, and a charge-only settlement's charge, for a day: a
  // settlement older than that could be charged twice (a charge the store took before its answer
  // was lost) or not at all (a lease forgotten). Not replayed, and logged with its cost.
  const std::int64_t too_old = wall_ms() - journal_replay_limit_ms;
  std::vector<std::string_view> stale;
  for (const auto& s : opened.open)
    if (s.admitted_at_ms > 0 && s.admitted_at_ms < too_old) {
      ++pending_;  // (lose() counts it out)
      lose(s, "settlement journal: too old to replay (the store remembers charges for a day); its cost is not charged");
      stale.push_back(s.adm.lease);
    }
  if (!stale.empty()) {
    std::string error;
    if (!journal_.done(stale, error)) log_("error", error, {});
    std::erase_if(opened.open, [&](const settlement& s) { return s.admitted_at_ms > 0 && s.admitted_at_ms < too_old; });
  }
  if (opened.open.empty()) return 0;
  std::int64_t nano = 0;
  for (auto& s : opened.open) nano += s.cost_nano;
  log_("info", "settlement journal: replaying settlements the policy store did not take before the last stop",
       "\"path\":" + quote(path) + ",\"settlements\":" + std::to_string(opened.open.size()) + ",\"cost_usd\":" +
           std::to_string(double(nano) / 1e9));
  replay_ = std::move(opened.open);
  pending_ += int(replay_.size());
  journal_open_cell_.set(double(replay_.size()));
  return replay_.size();
}

void engine::report_soft(const settlement& s, const settle_result& r) {
  for (std::size_t i = 0; i < r.soft_crossed.size() && i < s.adm.scopes.size(); ++i) {
    if (!r.soft_crossed[i]) continue;
    const auto& sc = s.adm.scopes[i];
    const bool key = sc.id != "t";
    soft_.counter({sc.team, key ? "key" : "team"}).inc();
    log_("warn", "budget soft threshold crossed",
         "\"team\":" + quote(sc.team) + (key ? ",\"key_id\":" + quote(sc.id.substr(2)) : std::string()) +
             ",\"spent_usd\":" + std::to_string(double(r.spent[i]) / 1e9) + ",\"budget_usd\":" +
             std::to_string(double(sc.budget.limit_nano) / 1e9) + ",\"soft\":" + std::to_string(sc.budget.soft));
  }
}

awaitable<boost::system::result<engine::created_key, std::string>> engine::create_key(unsigned worker,
                                                                                     const config::gateway_config& cfg,
                                                                                     key_record proto) {
  const auto team = co_await resolve_team(worker, cfg, proto.team);
  if (!team.reachable) co_return as_error<created_key>(std::string("the policy store is unavailable"));
  if (!team.team) co_return as_error<created_key>("unknown team '" + proto.team + "'");
  created_key out;
  for (int tries = 0; tries < 3; ++tries) {
    auto k = generate_key();
    auto existing = co_await lookup(worker, cfg, k.id);
    if (!existing.reachable) co_return as_error<created_key>(std::string("the policy store is unavailable"));
    if (existing.key) continue;
    proto.id = k.id;
    proto.digest = digest_secret(k.secret, cfg.auth.pepper);
    proto.created_unix = std::time(nullptr);
    // Over "no record": never overwrites a key drawn with the same id meanwhile, and a record
    // written counts as created even if its listing index could not be updated (a 503 then would
    // leave an enabled key whose secret nobody was shown).
    const write_result w = co_await store_->replace_key(worker, proto, "");
    if (w == write_result::unreachable) co_return as_error<created_key>(std::string("the policy store is unavailable"));
    if (w == write_result::changed) continue;
    forget(proto.id);
    out.full = std::move(k.full);
    out.record = std::move(proto);
    co_return out;
  }
  co_return as_error<created_key>(std::string("could not draw an unused key id"));
}

}  // namespace tollgate::policy
