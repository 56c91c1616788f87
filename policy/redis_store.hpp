// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The shared store: one Redis (or a Redis Cluster: every key of a team carries the team as a
/// hash tag) for every replica. One script (admit.lua), with the Redis server's clock, admits a
/// worker's batch of calls and applies the settlements that finished meanwhile: one EVALSHA per
/// batch. One connection per worker (pipelined, never shared across threads) and one subscriber
/// connection for key invalidations.
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "policy/redis_client.hpp"
#include "policy/store.hpp"

namespace tollgate::policy {

class redis_store final : public store {
 public:
  /// `window_ms` is 60 000 in production; tests shorten it.
  explicit redis_store(config::redis_config cfg, std::int64_t window_ms = 60'000);
  ~redis_store() override;

  std::string_view kind() const override { return "redis"; }
  void start(const std::vector<executor_t>& workers) override;
  void stop() override;
  bool healthy() const override;
  std::string last_error() const override;
  std::chrono::milliseconds command_timeout() const override { return std::chrono::milliseconds(cfg_.timeout_ms); }
  /// `worker`'s estimate of Redis's clock: this process's steady clock plus the estimated offset,
  /// once it has one (each connection reads Redis's TIME as it connects, and every reply carries
  /// it); this process's wall clock until then.
  std::int64_t clock_ms(unsigned worker) const override;

  awaitable<admit_result> admit(unsigned worker, const admission& a) override;
  awaitable<std::vector<settle_result>> settle_batch(unsigned worker, std::vector<settlement> batch) override;
  void queue_settlement(unsigned worker, settlement s, executor_t ex) override;
  awaitable<budget_state> budget(unsigned worker, const scope_spec& s) override;
  awaitable<bool> renew(unsigned worker, const admission& a, std::int64_t expiry_ms) override;
  awaitable<key_lookup> get_key(unsigned worker, std::string id) override;
  awaitable<bool> put_key(unsigned worker, key_record k) override;
  awaitable<write_result> replace_key(unsigned worker, key_record k, std::string stored) override;
  awaitable<std::optional<key_page>> list_keys(unsigned worker, key_query q) override;
  awaitable<team_lookup> get_team(unsigned worker, std::string name) override;
  awaitable<bool> put_team(unsigned worker, team_record t) override;
  awaitable<write_result> replace_team(unsigned worker, team_record t, std::string stored) override;
  awaitable<write_result> delete_team(unsigned worker, std::string name, std::string stored) override;
  /// One compare-and-set: SET `key` to `body` only while it holds `stored` ("" : absent); then
  /// SADD `member` to `index`.
  /// (By value: the callers pass temporaries, which a coroutine frame must own.)
  awaitable<write_result> compare_and_set(unsigned worker, std::string key, std::string stored, std::string body,
                                          std::string index, std::string member);
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned worker) override;
  awaitable<bool> add_usage(unsigned worker, std::vector<usage_row> rows) override;
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned worker, std::int64_t from_hour,
                                                         std::int64_t to_hour) override;
  awaitable<bool> publish_invalidation(unsigned worker, std::string id) override;
  void on_invalidation(std::function<void(std::string_view)> cb) override;

  /// Admission batches that the calling thread (a worker) has sent to Redis and whose answer has
  /// not come yet: its callers wait for it. The worker's event loop keeps polling rather than
  /// sleeping while this is above 0 (store.redis.busy_poll_us, gateway/core/event_loop.hpp).
  /// Settlement-only batches do not count: nobody waits for them.
  static long admissions_awaited();

  /// false: every batch goes call by call (admit.lua's other path), as tests compare the two.
  void use_sums(bool on) { aggregate_.store(on, std::memory_order_relaxed); }
  /// Script calls so far, and how many of them applied their settlements (admissions) from the
  /// batch's sums rather than call by call.
  struct sums_counts {
    std::uint64_t batches = 0, settled = 0, admitted = 0;
  };
  sums_counts sums_used() const {
    return {sums_.batches.load(std::memory_order_relaxed), sums_.settled.load(std::memory_order_relaxed),
            sums_.admitted.load(std::memory_order_relaxed)};
  }

  /// Admissions Redis ran after their batch's deadline (the gateway had given up on it), which
  /// therefore reserved nothing.
  std::uint64_t late_admissions() const { return late_.load(std::memory_order_relaxed); }
  /// For tests: `worker`'s estimate of Redis's clock moves by `ms` (as a wrong first reading
  /// would move it).
  void shift_clock_estimate(unsigned worker, std::int64_t ms) {
    if (worker < clock_offset_.size()) clock_offset_[worker] += ms;
  }

  /// A team's two lease sets (admit.lua explains them): <prefix>{<team>}:l and :x.
  std::vector<std::string> team_keys(const std::string& team) const;
  /// <prefix>{<team>}:<suffix>: every key of a team shares its hash tag (one Cluster slot).
  std::string scope_key(const std::string& team, const std::string& suffix) const;
  /// scope_key() written into `out` (cleared first): no allocation once `out` has grown.
  void scope_key(const std::string& team, const std::string& suffix, std::string& out) const;
  /// Appends the scope hashes of a batch's specs, once each (scripts declare every key they touch).
  void add_scope_keys(std::vector<std::string>& keys, const std::vector<const scope_spec*>& specs) const;

 private:
  /// EVALSHA, and EVAL once when the server does not know the script yet (NOSCRIPT).
  /// The arguments are `args` then `more` (a batch's header, then its calls).
  awaitable<boost::system::result<redis::reply>> eval(unsigned worker, const std::string& sha, std::string_view body,
                                                      const std::vector<std::string>& keys, const redis::resp_args& args,
                                                      const redis::resp_args& more);
  redis::connection& conn(unsigned worker) { return *conns_[worker % conns_.size()]; }
  /// The ids and documents of an index set ("<prefix><kind>s" of ids, "<prefix><kind>:<id>"
  /// each); ids without a document are left out.
  awaitable<std::optional<std::vector<std::pair<std::string, std::string>>>> members_docs(unsigned worker,
                                                                                          std::string kind);
  /// Adds key `k` to the sorted id indexes that listings page through ("<prefix>key_ids" and
  /// "<prefix>team_key_ids:<team>"); false when Redis did not take it.
  awaitable<bool> index_key(unsigned worker, const key_record& k);
  /// Rebuilds those indexes from the id set "<prefix>keys" when it holds more ids than they do
  /// (keys written by an older version); false when Redis is unreachable.
  awaitable<bool> ensure_key_index(unsigned worker);
  /// Sends `cmds` (RESP, resp_command()) on `worker`'s connection, pipelined, at most `window` on
  /// the wire at once: the admin API's reads and the usage writes wait one round trip per window,
  /// not per command, while the window keeps the last command's wait within the command timeout
  /// and a long read from holding the admissions queued behind it. The replies in order, or
  /// nullopt when any command failed or Redis refused it.
  awaitable<std::optional<std::vector<redis::reply>>> pipelined(unsigned worker, std::vector<std::string> cmds,
                                                                std::size_t window);

  /// An admission waiting for its worker's next batch.
  struct pending_admit {
    const admission* a = nullptr;  ///< owned by the awaiting caller, alive until it resumes
    admit_result result;
    bool done = false;
    std::function<void()> wake;
    std::uint64_t seq = 0;  ///< arrival order among the worker's admissions and settlements
  };
  struct pending_settle {
    settlement s;
    std::uint64_t seq = 0;
  };
  /// Per worker (touched only on that worker's thread): what waits for the next script call.
  /// One admission batch on the wire at a time, and a second one when second_batch_at calls
  /// queue up meanwhile; each carries the settlements of its team queued meanwhile. Settlements
  /// that no admission comes to carry within carry_wait go alone.
  struct worker_queue {
    std::vector<std::shared_ptr<pending_admit>> admits;
    std::vector<pending_settle> settles;
    std::uint64_t seq = 0;
    bool admitting = false;  ///< flush_admissions is running
    bool second = false;     ///< send_second_batch is running (a second batch on the wire)
    bool settling = false;   ///< flush_settlements is running
    /// flush_admissions waits on it (at most carry_wait) for an admission to carry the queued
    /// settlements; an admission arriving cancels it.
    std::unique_ptr<steady_timer_t> carry;
    bool waiting = false;
  };
  /// How long queued settlements wait for an admission to carry them before they go alone.
  /// Measured on the benchmark machine (one worker, 32 connections): sending them alone at once
  /// made one script call of their own per 29 settlements; waiting 0.5 ms, one per 300 to 800,
  /// and 5 to 9% more requests per second. A settlement is thus applied at most 0.5 ms plus a
  /// round trip after its call ended (when the store answers).
  static constexpr std::chrono::microseconds carry_wait{500};
  /// Sends the worker's queued admissions, in rounds of one batch per team (send_round), each
  /// with its team's queued settlements, until no admission is left; then waits up to carry_wait for an
  /// admission to carry leftover settlements, and sends them alone when none comes.
  awaitable<void> flush_admissions(unsigned worker);
  /// How many queued calls send a second batch while the first is on the wire. With one batch
  /// at a time the calls move in waves (what arrives while a batch is on the wire waits for it
  /// and for its own): on the benchmark machine (`wrk -c32`, one worker) the path then left the
  /// two cores 16-20% idle. A second batch at 12 waiting calls: +2 to +16% requests per second
  /// (median +9%) over ten interleaved rounds, idle 9-12%, Redis CPU per call unchanged; at 4
  /// the batches got small enough to cost Redis more (+6 to +11% per call) for less gain, and
  /// two batches always (tried in earlier sessions) gave none. Each batch stays atomic and Redis
  /// runs them in the order sent, so the limits hold as with one.
  static constexpr std::size_t second_batch_at = 12;
  static constexpr std::size_t max_settles = 128;  ///< settlements per script call
  /// One script call: the oldest queued calls of `team` (at most 64) with that team's queued
  /// settlements; the results go to the callers and to report_settled. Nothing when none is left.
  awaitable<void> send_batch(unsigned worker, std::string team);
  /// A batch for each team with queued admissions (at most max_round_teams), all on the wire
  /// together; returns when every one is answered.
  awaitable<void> send_round(unsigned worker);
  static constexpr std::size_t max_round_teams = 32;
  /// The team whose turn is next: the oldest admission's, or a settlement's that waited longer.
  static std::string oldest_team(const worker_queue& q);
  /// send_batch() once, while flush_admissions has a batch on the wire.
  awaitable<void> send_second_batch(unsigned worker);
  /// Sends queued settlements alone while no admission batch is running to carry them (called
  /// by flush_admissions when it gives up waiting).
  awaitable<void> flush_settlements(unsigned worker);
  /// Takes up to `max` settlements of `team` out of the queue, oldest first.
  static std::vector<settlement> take_settles(worker_queue& q, const std::string& team, std::size_t max);
  /// One script call: `settles` then `admits`, all of one team. Fills the admissions' results and
  /// returns the settlements' (unreachable ones when the store did not answer).
  awaitable<std::vector<settle_result>> run_batch(unsigned worker, const std::string& team,
                                                  const std::vector<std::shared_ptr<pending_admit>>& admits,
                                                  const std::vector<settlement>& settles);
  /// One scope spec's sums over a batch (admit.lua: "The sums").
  struct spec_sums {
    std::size_t admits = 0;
    std::int64_t tokens = 0, cost = 0;
    std::size_t settles = 0;
    std::int64_t reserved = 0, charged = 0;
    std::string_view pid;  ///< the settlements' budget period (one per scope, or no sums)
  };
  /// One script call's arguments, and the specs they refer to by index (for reading the reply).
  struct batch_plan {
    redis::resp_args args;   ///< the header, the scope specs and the sums
    redis::resp_args calls;  ///< then the settlements and the admissions (sent after `args`)
    bool summed = false;                   ///< the batch's sums are in `args`
    std::vector<const scope_spec*> specs;  ///< into the batch's calls: alive while they are
    /// Each scope's index in `specs`, in order: the settlements' scopes, the admissions' scopes.
    std::vector<std::size_t> settle_specs, admit_specs;
  };
  /// admit.lua's arguments: header, scope specs (deduplicated), the batch's sums (when it may be
  /// applied from them), the settlements, the admissions.
  batch_plan script_args(const std::vector<const admission*>& calls, const std::vector<settlement>& settles,
                         std::int64_t deadline_ms = 0) const;
  /// The Redis time by which `worker` gives up on a batch sent now (0: not known yet): the
  /// worker's estimate of Redis's clock (clock_ms) plus the time left before
  /// the connection gives up (the timeout, or less when an older command is on the wire: its
  /// timeout drops the connection and this batch with it), less a millisecond, and 2 ms more on
  /// its own timeout for the script to run and be answered. The estimate never
  /// exceeds the true offset (below), so Redis finds a batch that runs after the gateway gave up
  /// past its deadline.
  std::int64_t deadline_for(unsigned worker) const;
  /// Learns from a reply's Redis time `redis_ms`, read just now: `redis_ms - now` is at most the
  /// true offset (Redis read its clock before the reply came); the estimate keeps the largest
  /// such figure and sinks by 1 ms per reply, so that it follows a clock that is stepped back.
  /// `fresh`: the first reading of a new connection (maybe a new server, after a failover):
  /// replaces the estimate.
  void learn_offset(unsigned worker, std::int64_t redis_ms, bool fresh = false);
  /// At worker 0's connect: warns once per policy when Redis may evict any key (allkeys-*).
  awaitable<void> check_eviction(redis::connection& c);
  std::string eviction_told_;  ///< the allkeys-* policy last warned of (worker 0's thread only)
  /// One call's results in admit.lua's call-by-call reply (three integers from `at` when
  /// admitted, six when refused); `at` is left after them.
  admit_result parse_admit(const std::vector<redis::reply>& e, std::size_t& at, const admission& a,
                           std::int64_t now_ms) const;
  /// The admissions' results, from either form of the reply (sums or call by call).
  void parse_admits(const std::vector<redis::reply>& e, std::size_t& at, const batch_plan& plan,
                    const std::vector<const admission*>& calls, std::int64_t now_ms, std::vector<admit_result>& out) const;
  /// What every admitted call's result carries: the clock reading, reset and period ids.
  void admitted(admit_result& out, const admission& a, std::int64_t now_ms) const;
  /// The settlements' results in admit.lua's reply, either form (from index 1); `at` is left
  /// after them.
  static std::vector<settle_result> parse_settles(const std::vector<redis::reply>& e, const std::vector<settlement>& settles,
                                                  const batch_plan& plan, std::size_t& at);
  /// The lease as admit.lua holds it and finds it when settling: "<lease>|<scope>=<c>=<amount>|...".
  static std::string lease_member(const admission& a);
  /// lease_member() written into `out` (cleared first): no allocation once `out` has grown.
  static void lease_member(const admission& a, std::string& out);

  config::redis_config cfg_;
  std::vector<worker_queue> queues_;  ///< per worker; touched only on that worker's thread
  std::vector<executor_t> executors_;
  std::int64_t window_ms_;
  /// Cleared for good (every worker) when the server lacks ZMSCORE (Redis before 6.2).
  std::atomic<bool> aggregate_{true};
  /// Logs an error reply to a policy batch (refused_batch), at most once a minute per reply text.
  void refused_batch(const std::string& team, const std::string& reply);
  std::mutex refusal_mu_;
  std::string last_refusal_;
  std::chrono::steady_clock::time_point last_refusal_at_{};
  struct {
    std::atomic<std::uint64_t> batches{0}, settled{0}, admitted{0};
  } sums_;
  mutable std::atomic<std::uint64_t> late_{0};  ///< (counted while parsing, a const step)
  /// Per worker (touched on its thread): Redis's clock minus this process's steady clock, in ms,
  /// estimated from below; INT64_MIN until the first reply.
  std::vector<std::int64_t> clock_offset_;
  std::string script_sha_;
  std::vector<std::unique_ptr<redis::connection>> conns_;
  std::unique_ptr<redis::connection> sub_;
  std::vector<std::function<void(std::string_view)>> listeners_;

  /// The subscriber's heartbeat. A subscriber sends nothing once subscribed: one whose path went
  /// dark (a host gone without a reset, a NAT entry dropped) or that stayed on the old primary
  /// after a failover that the workers followed would never hear another invalidation, and
  /// nothing would say so. Every beat_every, worker 0 publishes this process's own beat on the
  /// invalidation channel; a subscriber that misses deaf_after of them in a row is reconnected
  /// (which drops every cached key and team).
  awaitable<void> beat_loop(std::weak_ptr<const bool> alive);
  std::string beat_;        ///< "~beat:<random>": this process's; every beat starts "~beat:"
  unsigned unheard_ = 0;    ///< beats published since ours was last heard (worker 0's thread)
  std::shared_ptr<const bool> alive_;  ///< the beat loop's: reset by stop()
};

}  // namespace tollgate::policy
