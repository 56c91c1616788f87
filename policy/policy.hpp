// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The policy phases of the pipeline. Each is called exactly once per request, in this order:
///  - authenticate(): after the request is read; sets ctx.identity and ctx.grant. May refuse (401).
///  - check_model_grant(): right after routing, before the prompt filters (403).
///  - admit(): after the prompt filters; reserves rate-limit and budget capacity in every scope
///    in one store round trip. May refuse (429) or fail closed (503).
///  - settle(): after the response (success or failure); fills usage, then charges the actual
///    cost and releases the reservations in the background, off the response path. Never fails
///    the request; retries an unreachable store (settlement is idempotent) and counts losses.
/// docs/policy.md describes the algorithms, the error bounds and the degraded modes.
#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>

#include "config/config.hpp"
#include "gateway/core/error.hpp"
#include "gateway/core/metrics.hpp"
#include "gateway/core/net.hpp"
#include "gateway/core/request_context.hpp"
#include "policy/memory_store.hpp"
#include "policy/settlement_journal.hpp"
#include "policy/store.hpp"

namespace tollgate::policy {

/// What an authenticated caller may do. Copied from config and the key record at authentication.
struct grant {
  std::string team, key_id, subject;
  bool anonymous = false;
  std::vector<std::string> team_models, key_models;  ///< patterns; empty: any
  config::limits_config team_limits, key_limits;
  config::budget_config team_budget, key_budget;
  bool may_use(std::string_view model) const;
};

/// What admit() reserved, kept on the request for settle().
struct reservation {
  admission adm;
  std::vector<std::string> periods;
  std::int64_t admitted_at_ms = 0;                  ///< store clock
  std::chrono::steady_clock::time_point admitted{};  ///< this process's clock, for lease renewal
  std::chrono::steady_clock::time_point renewed{};
  bool local = false;  ///< admitted by the per-instance fallback (Redis was unreachable)
  bool unchecked = false;  ///< admitted unchecked (store unreachable, rate_limits: fail_open)
  /// Admitted without the store (local or unchecked) under budgets: fail_open: the scopes with a
  /// budget and their periods (this process's clock), so that the call's cost reaches the store
  /// later (settlement::charge_only). Empty otherwise.
  std::vector<scope_spec> charge_scopes;
  std::vector<std::string> charge_periods;
  const config::price_config* price = nullptr;  ///< the public model's; points into ctx.snap's config
};

using log_fn = std::function<void(std::string_view level, std::string_view msg, std::string_view extra_json)>;

/// Cost in nano-USD of `prompt` (of which `cached` read from a prompt cache and `cache_write`
/// written to one) and `completion` tokens, rounded up.
std::int64_t cost_nano(const config::price_config& p, std::uint64_t prompt, std::uint64_t cached, std::uint64_t completion,
                       std::uint64_t cache_write);
/// The most `prompt` and `completion` tokens can cost, what admission reserves: every prompt token
/// at the dearest of its prices (a cache write may cost more than plain input).
std::int64_t worst_cost_nano(const config::price_config& p, std::uint64_t prompt, std::uint64_t completion);
/// The same for a finished call's token counts.
inline std::int64_t cost_nano(const config::price_config& p, const usage_counts& u) {
  return cost_nano(p, u.prompt, u.cached, u.completion, u.cache_write);
}

/// Whether a finished call is charged: a provider produced a 2xx answer (even one cut short).
bool billable(const request_context& ctx) noexcept;
/// The price of the target that served ctx (route_target::price: a fallback serving another
/// model with an exact price entry of its own is priced by it); before routing, the public
/// model's. Null when none.
const config::price_config* served_price(const config::gateway_config& cfg, const request_context& ctx) noexcept;
/// The output tokens a call reserves at admission: `n` answers of max_tokens each (or
/// `default_max_tokens` when the caller set none); 0 for embeddings.
std::uint64_t reserved_output_tokens(const request_context& ctx, std::uint64_t default_max_tokens) noexcept;
/// Usage the provider did not report: prompt from the estimate, completion counted from what
/// was relayed (streams that ended early or without a usage chunk are still billed), or the
/// reservation's for a whole answer whose body never arrived (request_context::answer_unread).
void fill_usage(request_context& ctx) noexcept;

class engine {
 public:
  engine(std::shared_ptr<store> st, metrics::registry& reg, log_fn log);
  ~engine();

  /// Binds the store to the workers' executors. Call once before serving.
  void start(const std::vector<executor_t>& workers);
  /// How long a worker counts as degraded after its last degraded call with no call since
  /// (10 s; tests shorten it). Call before start().
  void degraded_idle(std::chrono::milliseconds d) { degraded_idle_ = d; }
  /// store::stop(): once the worker threads have ended.
  void stop();

  awaitable<phase_result> authenticate(request_context& ctx);
  /// What authenticate() decides without the store: no credential, a malformed one, or a key
  /// this worker checked moments ago (the common case). nullopt: call authenticate_with_store().
  /// The pipeline calls this first, so that a cache hit costs no coroutine frame.
  std::optional<phase_result> try_authenticate(request_context& ctx);
  /// The rest of authenticate(), for a caller try_authenticate() did not decide: a certificate
  /// name mapped to a team, or a well-formed key to look up (its secret's tag is computed again
  /// here; that happens once per key, worker and auth.key_cache_ms).
  awaitable<phase_result> authenticate_with_store(request_context& ctx);
  awaitable<phase_result> admit(request_context& ctx);
  /// Fills usage the provider did not report, then settles in the background on `ex`.
  void settle(request_context& ctx, executor_t ex);
  /// Settlements not finished yet (shutdown waits for them).
  int pending() const { return pending_.load(); }
  /// Sends this worker's usage counts now (each worker does every second; the drain once more, so
  /// that a clean stop loses none). On its worker's thread.
  awaitable<void> flush_usage(unsigned worker);
  /// Settlements given up since the start (each logged with its cost): the exit code says so.
  std::uint64_t lost() const { return lost_.load(std::memory_order_relaxed); }
  /// At shutdown, once the drain's deadline has passed: `worker`'s settlements still waiting for
  /// an unreachable store, those of a retry round on the wire included, are given up: journaled
  /// (when there is a journal) or else counted as lost and logged with their lease, team and cost
  /// (error), so that no charge disappears without a record. Run on that worker's thread.
  void abandon_pending(unsigned worker);
  /// Opens the settlement journal (store.settlement_journal), before start(): the settlements it
  /// holds from an earlier run are sent by worker 0 from start() on, until the store takes them.
  /// Returns how many; throws std::runtime_error when the file cannot be used.
  std::size_t open_journal(const std::string& path);

  /// The models this caller may list (GET /v1/models).
  static bool may_list(const request_context& ctx, std::string_view model);
  /// The caller's grant for ctx.model: 403 model_not_allowed when its team or key may not use it.
  /// Checked right after the model is found, before the prompt is filtered or sent to a
  /// moderation endpoint, and before admit().
  static phase_result check_model_grant(const request_context& ctx);

  struct created_key {
    std::string full;  ///< tg_<id>_<secret>: shown once, never stored
    key_record record;
  };
  /// Creates a key in the store. Fails with a message when the team is unknown or the store is down.
  awaitable<boost::system::result<created_key, std::string>> create_key(unsigned worker, const config::gateway_config& cfg,
                                                                        key_record proto);
  /// Disables a key in the store and tells every replica. Fails when unknown or unreachable.
  awaitable<boost::system::result<key_record, std::string>> revoke_key(unsigned worker, const config::gateway_config& cfg,
                                                                       std::string id);
  awaitable<key_lookup> find_key(unsigned worker, const config::gateway_config& cfg, std::string id);

  // ---- Admin operations (policy/admin_ops.cpp). Changes reach every replica: the store holds
  // them and pub/sub drops the replicas' caches (within auth.key_cache_ms at worst).

  /// A team as enforced: from config, from the store, or config with the store's override.
  struct team_view {
    bool reachable = false;
    std::optional<config::team_config> team;
    std::string source;  ///< "config", "config+api" (overridden) or "api"
    std::int64_t created_unix = 0;
    /// When the store's answer it is built from was read (cached answers are older).
    std::chrono::steady_clock::time_point as_of{};
  };
  /// The team as enforced now (cached like keys). Unreachable store: config teams still resolve.
  awaitable<team_view> resolve_team(unsigned worker, const config::gateway_config& cfg, std::string name);
  awaitable<boost::system::result<team_view, std::string>> create_team(unsigned worker, const config::gateway_config& cfg,
                                                                      team_record t);
  awaitable<boost::system::result<team_view, std::string>> delete_team(unsigned worker, const config::gateway_config& cfg,
                                                                      std::string name);
  awaitable<std::optional<std::vector<team_view>>> list_teams(unsigned worker, const config::gateway_config& cfg);
  /// One page of the keys of `q.team` (every team when empty), config keys and created ones
  /// together, ids ascending after `q.after`. Never a secret.
  awaitable<std::optional<key_page>> list_keys(unsigned worker, const config::gateway_config& cfg, key_query q);
  /// A new secret for key `id`; the old one keeps working for `overlap_s` seconds.
  awaitable<boost::system::result<created_key, std::string>> rotate_key(unsigned worker, const config::gateway_config& cfg,
                                                                        std::string id, std::int64_t overlap_s);
  /// Changes of limits and budget: absent fields keep their value.
  struct quota_patch {
    std::optional<std::uint64_t> rpm, tpm, concurrency;
    std::optional<std::int64_t> budget_nano;  ///< a new budget amount
    std::optional<config::budget_period> period;
    std::optional<double> soft;
    bool remove_budget = false;  ///< "budget": null
  };
  /// Applies `p` to key `key_id` (when not empty) or to `team`; returns the new limits and budget.
  awaitable<boost::system::result<std::pair<config::limits_config, config::budget_config>, std::string>> set_quota(
      unsigned worker, const config::gateway_config& cfg, std::string team, std::string key_id, quota_patch p);
  /// Usage rows of hours [from_hour, to_hour), this replica's latest counts included.
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned worker, std::int64_t from_hour, std::int64_t to_hour);
  awaitable<budget_state> budget(unsigned worker, const scope_spec& s) { co_return co_await store_->budget(worker, s); }

  store& backing() { return *store_; }
  /// Keys checked in full (digest, record, team) since start; the rest were recognised from the
  /// worker's cache of recent authentications.
  std::uint64_t full_key_checks() const { return full_key_checks_.load(std::memory_order_relaxed); }
  const std::string& instance() const { return instance_; }

 private:
  /// Counts and answers a key that is malformed, unknown or does not match (401).
  failure invalid_key();
  struct cached_key {
    std::optional<key_record> key;
    std::chrono::steady_clock::time_point at;
  };
  /// The key `id` from config or the store (cached for auth.key_cache_ms); `as_of` gets the time
  /// the answer was read.
  awaitable<key_lookup> lookup(unsigned worker, const config::gateway_config& cfg, std::string_view id,
                               std::chrono::steady_clock::time_point* as_of = nullptr);
  void forget(std::string_view id);
  /// What the store reports for settlements handed over by settle(): counts them, and queues
  /// those it could not reach for retry_settlements().
  void on_settled(unsigned worker, std::vector<settlement>& batch, const std::vector<settle_result>& results,
                  bool own_trip);
  /// Sends `worker`'s settlements the store could not reach again, with backoff, until the store
  /// answers or 10 minutes have passed since their first attempt (then they are lost).
  awaitable<void> retry_settlements(unsigned worker, std::weak_ptr<const bool> alive);
  /// How a change tells whether it landed when its write went unanswered (the store took it or
  /// not: a reply lost to a timeout): `landed` on the record read again, and what to tell the
  /// admin when even that read fails.
  struct change_check {
    std::function<bool(const key_record&)> landed;
    std::string if_unknown;
  };
  /// Reads key `id`, lets `change` edit it (or refuse: a non-empty message), and writes it over
  /// the record read, reading again when another change landed in between (store::replace_key);
  /// then drops every replica's copy. The record written, or why not. With `check`, a write the
  /// store did not answer is read back: the change counts as made when it is there, and is tried
  /// again when it is not.
  awaitable<boost::system::result<key_record, std::string>> change_key(
      unsigned worker, const std::string& id, const std::function<std::string(key_record&)>& change,
      const change_check* check = nullptr);
  /// The ids of team `name`'s enabled store keys; nullopt when the store cannot be read. A key
  /// names its team only by name, so a team made later under that name would otherwise take over
  /// keys it never issued: delete_team and create_team revoke these (revoke_keys).
  awaitable<std::optional<std::vector<std::string>>> enabled_keys_of(unsigned worker, std::string name);
  /// Revokes keys `ids` in turn. Empty, or why the first that failed did.
  awaitable<std::string> revoke_keys(unsigned worker, std::vector<std::string> ids);
  /// An admission on `worker` was answered by the store: ends the retry loop's backoff there.
  void store_answered(unsigned worker);
  /// `worker`'s retry items from `first_new` on are new: journaled (when there is a journal), and
  /// the retry loop started unless it runs.
  void retry_from(unsigned worker, std::size_t first_new);
  /// How long a settlement outside the journal is retried before it is lost.
  static constexpr std::chrono::minutes retry_give_up{10};
  /// Journaled settlements admitted longer ago than this are not replayed (the store's memory of
  /// expired leases and charges is a day; an hour of margin).
  static constexpr std::int64_t journal_replay_limit_ms = 23ll * 3'600'000;
  /// The retry loop's first delay, and its longest (it doubles while the store is unreachable).
  static constexpr std::chrono::milliseconds retry_first{100}, retry_longest{1000};
  /// How often renew_leases() looks for leases half gone: a quarter of the shortest store.lease_ms.
  static constexpr std::chrono::milliseconds renew_tick{250};
  /// Every renew_tick, extends the leases of `worker`'s calls that have run half a lease since their
  /// admission or last renewal, so that a call longer than the lease keeps its reservation.
  awaitable<void> renew_leases(unsigned worker, std::weak_ptr<const bool> alive);
  void report_soft(const settlement& s, const settle_result& r);
  /// The cost of a call admitted without the store (budgets: fail_open), for the store later:
  /// summed per worker with the other such calls of the same scopes and periods for up to
  /// outage_seal, then sealed into one charge-only settlement (journaled, if there is a journal)
  /// and sent like a settlement the store could not take, until it does.
  void charge_later(unsigned worker, const reservation& r, std::uint64_t tokens, std::int64_t cost_nano);
  awaitable<void> seal_outage(unsigned worker, std::weak_ptr<const bool> alive);
  /// An admission the store may have made though its answer was lost (admit_result::in_doubt):
  /// a settlement that releases whatever it holds and charges nothing, sent like a settlement
  /// the store could not take, never before `not_before` (when its batch is past its deadline,
  /// so that Redis cannot still make the lease after the release looked for it), until the store
  /// answers or the lease has expired anyway. Not journaled: after a restart the lease expires by
  /// itself.
  void release_later(unsigned worker, const admission& a, std::int64_t at_ms,
                     std::chrono::steady_clock::time_point not_before);
  static constexpr std::chrono::milliseconds outage_seal{100};
  /// Counts `s` as lost and logs it (error) with its lease, team, cost and tokens.
  void lose(const settlement& s, std::string_view why);
  /// Counts a finished call in this worker's usage table (written to the store every second).
  void count_usage(const request_context& ctx);
  awaitable<void> usage_loop(unsigned worker, std::weak_ptr<const bool> alive);
  /// Expires with the engine: its background loops (given a weak copy when spawned) stop at their
  /// next wake-up instead of touching an engine that is gone (tests make and drop engines on one
  /// io_context; a process drops its engine only after its workers stop).
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
  awaitable<key_lookup> store_key(unsigned worker, const config::gateway_config& cfg, const std::string& id);

  std::shared_ptr<store> store_;
  memory_store local_;  ///< per-instance rate limits while the store is unreachable
  log_fn log_;
  std::string instance_;  ///< random per process: leases of two replicas never collide
  std::atomic<int> pending_{0};
  std::atomic<std::uint64_t> lost_{0};
  std::atomic<bool> is_degraded_{false};  ///< for one log line per transition
  /// Per worker: whether its last call found the store unreachable. The gauge is 1 while any
  /// worker's is (each worker has its own connection; one may be down while another is up).
  /// Written by its worker only; the gauge is recomputed under degraded_mu_ at each change.
  std::unique_ptr<std::atomic<bool>[]> worker_degraded_;
  /// Per worker, touched on its thread: when its last degraded call came. A worker with no call
  /// for degraded_idle_ no longer counts (it has nothing to say about the store now).
  std::vector<std::chrono::steady_clock::time_point> degraded_at_;
  std::chrono::milliseconds degraded_idle_{10'000};
  std::size_t worker_count_ = 0;
  /// `at`: when a degraded call's store answer came (stamped on every one, for the idle rule).
  void set_worker_degraded(unsigned worker, bool degraded,
                           std::chrono::steady_clock::time_point at = std::chrono::steady_clock::time_point{});
  /// The reason the degraded log gave (empty: none known yet); a reason learnt later in the
  /// same episode gets a line of its own. Touched only on the degraded path.
  std::mutex degraded_mu_;
  std::string degraded_reason_;
  /// When the last "degraded" line was logged, and whether the episode now ending had one (its
  /// "reachable again" line is logged only then): a store that refuses some calls and answers
  /// others (a Redis Cluster node that serves some teams' slots) flips state call by call, and
  /// would otherwise log two lines per flip. Same reason: one line per degraded_log_every.
  std::chrono::steady_clock::time_point degraded_logged_{};
  bool degraded_told_ = false;
  static constexpr std::chrono::seconds degraded_log_every{10};
  /// Per worker (touched only on that worker's thread): settlements waiting to be sent again.
  struct retry_item {
    settlement s;
    /// First attempt + 10 minutes; never for a settlement in the journal (it outlives the process).
    std::chrono::steady_clock::time_point give_up;
    bool journaled = false;
    /// A release (release_later): never journaled, not counted in pending() (shutdown does not
    /// wait for it), and dropped without a word when given up (at its lease's end, when the store
    /// has let the lease go by itself) or at shutdown.
    bool release = false;
    /// Not sent before (a release: until its admission batch is past its deadline).
    std::chrono::steady_clock::time_point not_before{};
    /// Sent to the store at least once: its figures are final (an outage charge not yet sent
    /// still takes later sums of the same scopes: seal_outage).
    bool sent = false;
  };
  /// Journals these items' settlements again, with their new figures (outage charges that took a sum).
  void journal_again(const std::vector<retry_item>& items, std::span<const std::size_t> which);
  /// Settlements the store could not take, on disk until it does (unused when not configured).
  settlement_journal journal_;
  std::vector<settlement> replay_;  ///< from the journal, until start()
  std::atomic<bool> journal_error_told_{false};
  /// Marks `items` journaled once the journal has them (when there is one): logs an I/O error once.
  void journal_add(std::span<retry_item> items);
  /// Tells the journal these items are finished with (the journaled ones).
  void journal_done(std::span<const retry_item> items);
  struct retry_queue {
    std::vector<retry_item> items;
    bool flushing = false;
    /// The retry loop's timer while it sleeps between rounds, and whether that sleep is a backoff
    /// (longer than the first delay): an admission the store answered ends such a sleep (nudged).
    steady_timer_t* sleeping = nullptr;
    bool backing_off = false;
    bool nudged = false;
    /// One nudge per backoff: spent until a round succeeds (a settlement the store keeps refusing
    /// while it answers admissions is retried at the backoff's pace, not at the admissions').
    bool nudge_spent = false;
    /// Charges of calls admitted without the store, being summed (charge_later), and whether a
    /// seal_outage() is due.
    std::vector<settlement> outage;
    bool sealing = false;
    /// The retry round on the wire (retry_settlements' own): its batch awaiting the store and the
    /// round's items not sent yet (from *in_next), for abandon_pending; null between sends.
    std::vector<retry_item>* in_batch = nullptr;
    std::vector<retry_item>* in_round = nullptr;
    std::size_t* in_next = nullptr;
    bool abandoned = false;  ///< abandon_pending ran: the retry loop touches nothing more
  };
  std::atomic<std::uint64_t> outage_seq_{0};  ///< numbers the charge-only settlements' leases
  std::vector<retry_queue> queues_;
  std::vector<executor_t> executors_;
  /// Per worker: admitted calls not settled yet (for renewal), by their reservation's address
  /// (no copy of the lease string per call).
  std::vector<std::unordered_map<const reservation*, std::shared_ptr<reservation>>> inflight_;
  std::mutex cache_mu_;
  std::unordered_map<std::string, cached_key> cache_;
  struct cached_team {
    std::optional<team_record> team;
    std::chrono::steady_clock::time_point at;
  };
  std::unordered_map<std::string, cached_team> team_cache_;
  /// Per worker: usage not yet written to the store, by "<hour>|<team>|<key>|<model>".
  std::vector<std::unordered_map<std::string, usage_row>> usage_;
  /// Per worker: the row the last call was counted in (most calls repeat it), so that counting
  /// builds no id string; null after the table is emptied.
  std::vector<usage_row*> usage_last_;

  /// Per worker: the last successful authentication of each key id. A call that presents the
  /// same secret (recognised by secret_tag) under the same config, with no invalidation since,
  /// while the key and team answers it was built from are fresh, reuses its grant: no digest, no
  /// record or team copies. Failures are never cached.
  struct auth_entry {
    std::shared_ptr<const grant> g;
    std::array<unsigned char, 16> tag{};
    std::weak_ptr<const config::gateway_config> cfg;
    std::uint64_t generation = 0;
    std::chrono::steady_clock::time_point fresh_until{};
    std::int64_t expires_unix = 0;  ///< the key's (0: never)
    bool capture_text = false;
  };
  struct id_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::unordered_map<std::string, auth_entry, id_hash, std::equal_to<>>> auth_cache_;
  std::atomic<std::uint64_t> generation_{0};  ///< bumped by every forget(): cached authentications end
  std::atomic<std::uint64_t> full_key_checks_{0};

  metrics::family& decisions_;    ///< {decision}
  metrics::family& degraded_;     ///< gauge
  metrics::family& settlements_;  ///< {result}
  metrics::family& soft_;         ///< {team, scope}
  metrics::family& auth_;         ///< {result}
  metrics::family& calls_;        ///< {op}: store round trips (admit and key_lookup are on the critical path)
  metrics::counter_cell& call_admit_;
  metrics::counter_cell& call_key_;
  metrics::counter_cell& call_settle_;
  metrics::counter_cell& call_team_;
  metrics::counter_cell& auth_key_;  ///< auth_{"key"}: every authenticated call
  // The cells every policed call touches, found once (a lookup hashes its labels).
  metrics::gauge_cell& degraded_cell_;
  metrics::counter_cell& admitted_;   ///< decisions_{"admitted"}
  metrics::counter_cell& applied_;    ///< settlements_{"applied"}
  metrics::counter_cell& duplicate_;  ///< settlements_{"duplicate"}
  metrics::family& admission_wait_;  ///< histogram: an admission's wait for the store (batch + round trip)
  metrics::histogram_cell& admission_wait_cell_;
  metrics::family& journal_open_;  ///< gauge: settlements in the settlement journal
  metrics::gauge_cell& journal_open_cell_;
};

}  // namespace tollgate::policy
