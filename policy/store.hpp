// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The policy store: where limits, budgets and created keys live. Two implementations with the
/// same semantics (one conformance suite, tests/unit/policy/store_conformance.hpp):
///  - memory_store: one process, the embedded default;
///  - redis_store: every replica shares one Redis; admission is one EVALSHA round trip.
///
/// Algorithms (docs/policy.md gives the error bounds):
///  - requests and tokens per minute: a sliding window of 30 buckets of 2 s (plus the current
///    one) on the store's clock; a call counts for 60 to 62 s, so no 60 s span ever holds more
///    than the limit;
///  - concurrency: calls in flight, each holding a lease that expires `lease_ms` after admission
///    or its last renewal;
///  - budgets: spent + reserved + this call's worst case <= limit, reservations being leases.
/// Admission checks every scope and every kind, then reserves in all of them: all or nothing.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace boost::json {
class object;
}

#include "config/config.hpp"
#include "gateway/core/net.hpp"

namespace tollgate::policy {

/// One scope (a team or a key) with its limits, as admission needs them.
struct scope_spec {
  std::string id;    ///< "t" (the team itself) or "k:<key id>"; stored under the team's hash tag
  std::string team;  ///< hash tag: every scope of one team lives in one Redis Cluster slot
  config::limits_config limits;
  config::budget_config budget;
};

struct admission {
  std::string lease;  ///< unique per call (gateway instance + request id)
  std::vector<scope_spec> scopes;
  std::uint64_t tokens = 0;    ///< reserved against TPM
  std::int64_t cost_nano = 0;  ///< reserved against budgets (worst case)
  std::uint32_t lease_ms = 300'000;
  /// A store's own rendering of this admission, built once and kept for its settlement (the Redis
  /// store's lease member). Opaque to the engine; whoever changes the fields above clears it.
  mutable std::string rendered;
};

enum class verdict { admitted, rpm, tpm, concurrency, budget, unavailable };

struct admit_result {
  verdict v = verdict::unavailable;
  std::size_t scope = 0;              ///< which scope refused
  std::int64_t retry_after_ms = 0;    ///< for rpm/tpm/concurrency, and a budget held by calls in flight (1000)
  std::vector<std::string> periods;   ///< budget period id per scope ("" : no budget), for settle
  std::int64_t admitted_at_ms = 0;    ///< store clock at admission (which rate bucket to correct)
  /// For the x-ratelimit-* headers (admitted and refused calls): the scope with the fewest
  /// requests (tokens) left in its window, after this call's reservation when admitted, and that
  /// number (never below 0); scope -1 when no scope limits requests (tokens). Ties: the first.
  int requests_scope = -1;
  std::int64_t requests_left = 0;
  int tokens_scope = -1;
  std::int64_t tokens_left = 0;
  /// Time until every count in the window now has left it (the windows' "reset to their initial
  /// state"): the end of the current bucket plus the window.
  std::int64_t reset_ms = 0;
  /// unavailable only: the call was sent and no answer says what the store did with it (the
  /// connection timed out or broke after sending; an error reply other than one saying the
  /// command was refused before it ran), so the store may hold a reservation for it all the same.
  /// The engine then sends a settlement that releases it (charging nothing), rather than leave it
  /// held until its lease expires.
  bool in_doubt = false;
};

/// The rate windows' layout, the same in both stores and admit.lua (NB there): 30 buckets of
/// window/30 each, plus the current one (docs/policy.md gives the error bound).
inline constexpr std::int64_t window_buckets = 30;
inline std::int64_t bucket_ms_of(std::int64_t window_ms) { return std::max<std::int64_t>(1, window_ms / window_buckets); }
/// Time from `now_ms` until every count now in the window has left it (the end of the current
/// bucket plus the window): admit_result::reset_ms.
inline std::int64_t window_reset_ms(std::int64_t now_ms, std::int64_t bucket_ms) {
  return (now_ms / bucket_ms + window_buckets + 1) * bucket_ms - now_ms;
}

/// For the x-ratelimit-* figures: counts scope `i` of a call (its limits, and the requests and
/// tokens its window holds) into `r`, which keeps per kind the scope with the fewest left (never
/// below 0; ties keep the first). Both stores, and the Redis store's reading of a batch admitted
/// from its sums, apply this rule as admit.lua does.
inline void note_window(admit_result& r, int i, const config::limits_config& l, std::int64_t requests,
                        std::int64_t tokens) {
  if (l.rpm) {
    const std::int64_t left = std::max<std::int64_t>(0, std::int64_t(l.rpm) - requests);
    if (r.requests_scope < 0 || left < r.requests_left) r.requests_scope = i, r.requests_left = left;
  }
  if (l.tpm) {
    const std::int64_t left = std::max<std::int64_t>(0, std::int64_t(l.tpm) - tokens);
    if (r.tokens_scope < 0 || left < r.tokens_left) r.tokens_scope = i, r.tokens_left = left;
  }
}

struct settlement {
  admission adm;                     ///< as admitted
  std::vector<std::string> periods;  ///< from admit_result
  std::uint64_t tokens = 0;          ///< actual tokens (prompt + completion)
  std::int64_t cost_nano = 0;        ///< actual cost
  std::int64_t admitted_at_ms = 0;   ///< from admit_result
  /// The call (or, summed, several calls) was admitted without the store while it was
  /// unreachable (store.on_unavailable), so the store holds no lease or reservation for it: only
  /// its cost is charged to the budgets of `adm.scopes`, in `periods`, once per `adm.lease`
  /// (remembered a day); nothing is released and no rate window is corrected.
  bool charge_only = false;
};

struct settle_result {
  bool reachable = false;               ///< false: try again later (idempotent)
  bool applied = false;                 ///< false when it had been applied already
  std::vector<std::int64_t> spent;      ///< per scope, after this charge (0 without budget)
  std::vector<bool> soft_crossed;       ///< per scope: this charge crossed the soft threshold first
};

/// A key created through the admin API (config keys are turned into the same record).
struct key_record {
  std::string id, team, name, digest;
  /// After a rotation: the previous secret's digest, still accepted until `old_digest_expires_unix`.
  std::string old_digest;
  std::int64_t old_digest_expires_unix = 0;
  std::vector<std::string> models;
  std::int64_t expires_unix = 0;
  std::int64_t created_unix = 0;
  bool enabled = true;
  config::limits_config limits;
  config::budget_config budget;
};

/// Which keys a listing wants: ids in ascending byte order, after a cursor, a page at a time.
struct key_query {
  std::string team;   ///< "" : every team's keys
  std::string after;  ///< only ids greater than this ("" : from the first)
  std::size_t limit = 100;
};

/// One page of a key listing.
struct key_page {
  std::vector<key_record> keys;  ///< at most the query's limit, ids ascending
  bool has_more = false;         ///< more keys match after the last one
};

struct key_lookup {
  bool reachable = false;
  std::optional<key_record> key;
  /// The record as the store holds it ("" : none): the precondition of store::replace_key.
  std::string stored;
};

/// A team created through the admin API, or the admin API's changes to a team declared in config
/// (its models, limits and budget then come from this record: the override).
struct team_record {
  std::string name;
  std::vector<std::string> models;
  config::limits_config limits;
  config::budget_config budget;
  std::int64_t created_unix = 0;
  /// The quota API's override of a team declared in the config file: it stands only while the
  /// file declares that team (a team removed from the file does not live on through it), and
  /// the team's models stay the file's.
  bool overrides_config = false;
};

struct team_lookup {
  bool reachable = false;
  std::optional<team_record> team;
  /// The record as the store holds it ("" : none): the precondition of store::replace_team.
  std::string stored;
};

/// A compare-and-set write's outcome.
enum class write_result { written, changed, unreachable };

/// Usage of one (team, key, model) in one UTC hour, for the admin API's usage report.
struct usage_row {
  std::int64_t hour = 0;  ///< hours since the epoch
  std::string team, key_id, model;
  std::uint64_t requests = 0, prompt = 0, completion = 0;
  std::int64_t cost_nano = 0;
  /// "<hour>|<team>|<key>|<model>": rows with one id are summed.
  std::string id() const { return std::to_string(hour) + "|" + team + "|" + key_id + "|" + model; }
  /// Adds `o`'s counts (taking its identity when this row is empty).
  void add(const usage_row& o) {
    if (team.empty() && model.empty() && requests == 0) {
      hour = o.hour;
      team = o.team;
      key_id = o.key_id;
      model = o.model;
    }
    requests += o.requests;
    prompt += o.prompt;
    completion += o.completion;
    cost_nano += o.cost_nano;
  }
};

struct budget_state {
  bool reachable = false;
  std::int64_t spent = 0, reserved = 0;
};

class store {
 public:
  virtual ~store() = default;
  virtual std::string_view kind() const = 0;
  /// Binds to the workers' executors (one connection each for Redis). Before any other call.
  virtual void start(const std::vector<executor_t>&) {}
  /// Closes the store's connections. Call when no thread runs the workers' executors any more (or
  /// from the one that runs them all, as tests do): connections are not thread-safe.
  virtual void stop() {}
  /// Whether the last operations reached the store (false: degraded).
  virtual bool healthy() const { return true; }
  /// Why the store was last unreachable, when it knows (a TLS handshake error, ...); for logs.
  virtual std::string last_error() const { return {}; }
  /// How long the store waits for an answer before it gives up on a command (fixed when it was
  /// made: a reload does not change it); 0 when it never gives up (the memory store).
  virtual std::chrono::milliseconds command_timeout() const { return {}; }
  /// The store's clock in ms since the epoch as best known on `worker`'s thread, without asking
  /// it (for a call admitted while it is unreachable): this process's clock unless the store
  /// keeps an estimate of its own.
  virtual std::int64_t clock_ms(unsigned worker) const;

  virtual awaitable<admit_result> admit(unsigned worker, const admission& a) = 0;
  /// Settles calls a worker finished, in one round trip of their own; one result per call, in order.
  virtual awaitable<std::vector<settle_result>> settle_batch(unsigned worker, std::vector<settlement> batch) = 0;

  /// Where queue_settlement() reports: on the worker's thread, one result per settlement of
  /// `batch` (reachable=false: not applied, send it again later; settlement is idempotent).
  /// `own_trip`: the batch went to the store in a round trip of its own (false: it rode along with
  /// admissions).
  using settled_fn = std::function<void(unsigned worker, std::vector<settlement>& batch,
                                        const std::vector<settle_result>& results, bool own_trip)>;
  /// Set once, before the first queue_settlement().
  void on_settled(settled_fn fn) { settled_ = std::move(fn); }
  /// Hands over a finished call's settlement: the store applies it soon, once, after everything
  /// `worker` admitted or queued before it, and reports it through on_settled. The Redis store
  /// carries it inside the worker's next admission script call for its team (one script reads
  /// and writes each scope once for both), and sends it alone when no admission comes within
  /// 0.5 ms; the memory store applies it at once. Default: settle_batch, one round trip per
  /// settlement.
  virtual void queue_settlement(unsigned worker, settlement s, executor_t ex);
  awaitable<settle_result> settle(unsigned worker, const settlement& s) {
    std::vector<settlement> one;
    one.push_back(s);
    auto r = co_await settle_batch(worker, std::move(one));
    co_return r.empty() ? settle_result{} : r.front();
  }
  virtual awaitable<budget_state> budget(unsigned worker, const scope_spec& scope) = 0;
  /// Extends an admitted call's lease to `expiry_ms` (store clock) if it is still held (a call
  /// longer than the lease keeps its reservation); false when the store is unreachable.
  virtual awaitable<bool> renew(unsigned worker, const admission& a, std::int64_t expiry_ms) = 0;

  virtual awaitable<key_lookup> get_key(unsigned worker, std::string id) = 0;
  /// Creates or replaces; false when the store is unreachable.
  virtual awaitable<bool> put_key(unsigned worker, key_record k) = 0;
  /// One page of key records (admin API listing), ids ascending; nullopt when the store is
  /// unreachable. Reads only the page's records, not every key ever issued.
  virtual awaitable<std::optional<key_page>> list_keys(unsigned worker, key_query q) = 0;

  /// Writes `k` only while key k.id's record is still `stored` (as a get_key read it; "" : no
  /// record), in one atomic step: two admin changes made at once never undo each other (a rotation
  /// that read the key before a revocation must not write it back enabled). `changed`: nothing
  /// written; read again. The default reads, compares and writes in three steps (test stores).
  virtual awaitable<write_result> replace_key(unsigned worker, key_record k, std::string stored);

  virtual awaitable<team_lookup> get_team(unsigned worker, std::string name) = 0;
  virtual awaitable<bool> put_team(unsigned worker, team_record t) = 0;
  /// As replace_key, for team `t.name` (a quota change racing the team's deletion).
  virtual awaitable<write_result> replace_team(unsigned worker, team_record t, std::string stored);
  /// Removes the record while it is still `stored` (as get_team read it), in one atomic step: a
  /// slow deletion never removes a team created again under that name meanwhile. `changed`:
  /// nothing removed.
  virtual awaitable<write_result> delete_team(unsigned worker, std::string name, std::string stored) = 0;
  virtual awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned worker) = 0;

  /// Adds usage counts (summed per hour, team, key and model); false when unreachable.
  virtual awaitable<bool> add_usage(unsigned worker, std::vector<usage_row> rows) = 0;
  /// The rows of hours [from_hour, to_hour); nullopt when unreachable.
  virtual awaitable<std::optional<std::vector<usage_row>>> usage(unsigned worker, std::int64_t from_hour,
                                                                 std::int64_t to_hour) = 0;

  /// Tells every replica (pub/sub for Redis) that `id` changed: their caches drop it.
  virtual awaitable<bool> publish_invalidation(unsigned worker, std::string id) = 0;
  /// Called (on any thread) with the id of a key some replica changed.
  virtual void on_invalidation(std::function<void(std::string_view)> cb) = 0;

  /// What an operator should read in the log ("warn", message), on any thread. Set once, before
  /// start().
  using notice_fn = std::function<void(std::string_view level, std::string_view message)>;
  void on_notice(notice_fn fn) { notice_ = std::move(fn); }

 protected:
  /// Reports a batch handed over by queue_settlement().
  void report_settled(unsigned worker, std::vector<settlement>& batch, const std::vector<settle_result>& results,
                      bool own_trip) {
    if (settled_) settled_(worker, batch, results, own_trip);
  }
  void notice(std::string_view level, std::string_view message) const {
    if (notice_) notice_(level, message);
  }

 private:
  awaitable<void> settle_alone(unsigned worker, std::vector<settlement> batch);
  settled_fn settled_;
  notice_fn notice_;
};

/// A scope's soft threshold in nano-USD (0: none, also when limit × soft rounds down to 0): both
/// stores fire the soft-threshold event on it.
inline std::int64_t soft_nano(const scope_spec& sc) {
  return sc.budget.set() && sc.budget.soft > 0 ? static_cast<std::int64_t>(double(sc.budget.limit_nano) * sc.budget.soft) : 0;
}

/// This process's wall clock, in ms since the epoch (the stores' and the engine's one reading of it).
std::int64_t wall_ms();
/// For tests: wall_ms() reads `clock` instead (as if this host's clock were stepped); null: the
/// system clock again. Not for use while other threads read the clock.
void use_wall_clock_for_tests(std::int64_t (*clock)());

/// Period id of a budget at `now_ms` (UTC): "d<days since epoch>", "m<YYYYMM>" or "all".
std::string period_id(config::budget_period p, std::int64_t now_ms);
/// Each scope's budget period id at `now_ms` ("" : no budget), as admit_result::periods holds them.
std::vector<std::string> periods_of(const admission& a, std::int64_t now_ms);

/// Ids of one kind order by time as strings; ids of two kinds do not ("m202611" sorts after
/// "d20419"), and a budget's period kind can be reconfigured. `stored` is a scope's current
/// period ("" : none yet). A period starts (its spend from 0) only when `pid` is later and of the
/// same kind, for an admission (`pid`: its period under the current config) and a settlement
/// (`pid`: settled_period()'s, the period now of the kind the call was admitted under) alike.
/// Under another kind (kind_changed: the config changed) an admission takes the new id and keeps
/// the spend: a change of kind, or replicas reloading one after the other, never forgets what was
/// spent; a settlement admitted before the change is charged to the current period (admit.lua).
inline bool later_period(std::string_view stored, std::string_view pid) {
  return stored.empty() || (stored < pid && stored[0] == pid[0]);
}
/// An admission's period is of another kind than the stored one: the id changes, the spend stays
/// unless the stored period has ended by its own kind's calendar (period_ended).
inline bool kind_changed(std::string_view stored, std::string_view pid) {
  return !stored.empty() && !pid.empty() && stored[0] != pid[0];
}
/// A stored period id is no longer its kind's current one at `now_ms` ("all" never ends).
/// (settled_period() of `stored` is its kind's current one.)
bool period_ended(const std::string& stored, std::int64_t now_ms);
/// The spend of a scope whose stored period is `stored` that counts under period `pid` (the
/// config's, now): 0 when `pid` starts a new period of the same kind, or when `stored` is of
/// another kind and has ended.
inline std::int64_t spend_counted(const std::string& stored, std::int64_t spent, std::string_view pid, std::int64_t now_ms) {
  if (later_period(stored, pid)) return 0;
  if (kind_changed(stored, pid) && period_ended(stored, now_ms)) return 0;
  return spent;
}
/// The period a settlement is charged to: the current one (at `now_ms`) of the kind of `admitted`,
/// its admission's period id. A call that spans midnight is charged to the new day.
std::string settled_period(const std::string& admitted, std::int64_t now_ms);

/// A settlement as one line of JSON (the settlement journal), and back (nullopt: not one).
std::string settlement_to_json(const settlement& s);
std::optional<settlement> settlement_from_json(const boost::json::object& o);

/// key_record <-> JSON (the Redis representation; no secret in it, only the digest).
std::string key_to_json(const key_record& k);
std::optional<key_record> key_from_json(std::string_view s);
/// A key declared in config, as a record.
key_record key_of(const config::key_config& k);
std::string team_to_json(const team_record& t);
std::optional<team_record> team_from_json(std::string_view s);

}  // namespace tollgate::policy
