// SPDX-License-Identifier: Apache-2.0
#include "policy/redis_store.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <map>
#include <set>

#include "policy/keys.hpp"
#include "policy/scripts.hpp"

namespace tollgate::policy {
namespace {

/// join_all()'s shared state: its tasks may outlive the awaiting caller (a stopped worker).
struct join_state {
  explicit join_state(executor_t ex) : done(ex) {}
  std::size_t left = 0;
  steady_timer_t done;
};

awaitable<void> joined(std::shared_ptr<join_state> j, awaitable<void> task) {
  struct finished {  // also if the task throws: the join must end
    join_state& j;
    ~finished() {
      if (--j.left == 0) j.done.cancel();
    }
  } on_exit{*j};
  co_await std::move(task);
}

/// Runs `tasks` side by side on `ex` and returns when every one has finished (an exception ends
/// its task, not the others; it is dropped, as a detached coroutine's is).
awaitable<void> join_all(executor_t ex, std::vector<awaitable<void>> tasks) {
  if (tasks.empty()) co_return;
  auto j = std::make_shared<join_state>(ex);
  j->left = tasks.size();
  for (auto& t : tasks) net::co_spawn(ex, joined(j, std::move(t)), net::detached);
  j->done.expires_at(steady_timer_t::time_point::max());
  co_await j->done.async_wait();  // cancelled by the last task to finish
}

std::string sha1_hex(std::string_view s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return to_hex(md, sizeof md);
}

redis::options client_options(const config::redis_config& c) {
  redis::options o;
  o.host = c.host;
  o.port = c.port;
  o.unix_path = c.unix_path;
  o.username = c.username;
  o.password = c.password;
  o.db = c.db;
  o.timeout = std::chrono::milliseconds(c.timeout_ms);
  o.connect_timeout = std::chrono::milliseconds(c.connect_timeout_ms);
  o.tls.enabled = c.tls.enabled;
  o.tls.verify = c.tls.verify;
  o.tls.ca_file = c.tls.ca_file;
  o.tls.cert_file = c.tls.cert_file;
  o.tls.key_file = c.tls.key_file;
  o.tls.server_name = c.tls.server_name;
  return o;
}

constexpr std::string_view cmd_evalsha = "EVALSHA", cmd_eval = "EVAL";

constexpr std::string_view beat_prefix = "~beat:";
constexpr auto beat_every = std::chrono::milliseconds(500);
constexpr unsigned deaf_after = 4;  // beats in a row: 2 s

char period_kind(config::budget_period p) {
  return p == config::budget_period::daily ? 'd' : p == config::budget_period::total ? 't' : 'm';
}

std::int64_t as_int(const redis::reply& r) {
  if (r.type == redis::reply::kind::integer) return r.integer;
  if (r.type == redis::reply::kind::string || r.type == redis::reply::kind::status) {
    try {
      return std::stoll(r.str);
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

}  // namespace

redis_store::redis_store(config::redis_config cfg, std::int64_t window_ms)
    : cfg_(std::move(cfg)),
      window_ms_(window_ms),
      script_sha_(sha1_hex(scripts::admit)),
      beat_(std::string(beat_prefix) + random_hex(12)) {}

redis_store::~redis_store() { stop(); }

void redis_store::start(const std::vector<executor_t>& workers) {
  queues_.resize(workers.size());
  clock_offset_.assign(workers.size(), std::numeric_limits<std::int64_t>::min());
  for (std::size_t i = 0; i < workers.size(); ++i) queues_[i].carry = std::make_unique<steady_timer_t>(workers[i]);
  executors_ = workers;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    conns_.push_back(std::make_unique<redis::connection>(workers[i], client_options(cfg_)));
    // Redis's clock from the moment each connection is made, so that even a worker's first
    // admission carries a deadline. Without an answer (TIME refused by an ACL) the estimate waits
    // for the first script reply, as before; the connection is good either way.
    conns_.back()->on_connect([this, w = unsigned(i), c = conns_.back().get()]() -> awaitable<bool> {
      std::array<std::string_view, 1> time{"TIME"};
      auto r = co_await c->setup_command(std::span<const std::string_view>(time));
      if (r && r->type == redis::reply::kind::array && r->elements.size() == 2)
        learn_offset(w, as_int(r->elements[0]) * 1000 + as_int(r->elements[1]) / 1000, true);
      if (w == 0) co_await check_eviction(*c);
      co_return true;
    });
    conns_.back()->start();
  }
  if (workers.empty()) return;
  sub_ = std::make_unique<redis::connection>(workers.front(), client_options(cfg_));
  sub_->subscribe(cfg_.key_prefix + "invalidate", [this](std::string_view id) {
    if (id.starts_with(beat_prefix)) {  // a heartbeat, ours or another replica's: no key
      if (id == beat_) unheard_ = 0;
      return;
    }
    for (auto& l : listeners_) l(id);
  });
  sub_->on_state([this](bool up) {
    // Messages sent while we were not subscribed are lost: forget every cached key instead.
    unheard_ = 0;
    if (up)
      for (auto& l : listeners_) l("*");
  });
  sub_->on_error([this](const std::string& why) {
    notice("warn", "the key invalidation channel is down (" + why +
                       "): revocations made through other replicas reach this one only as auth.key_cache_ms expires");
  });
  sub_->start();
  auto alive = std::make_shared<const bool>(true);
  alive_ = alive;
  net::co_spawn(workers.front(), beat_loop(alive), net::detached);
}

awaitable<void> redis_store::beat_loop(std::weak_ptr<const bool> alive) {
  steady_timer_t timer(co_await net::this_coro::executor);
  const std::string channel = cfg_.key_prefix + "invalidate";
  for (;;) {
    timer.expires_after(beat_every);
    if (auto [ec] = co_await timer.async_wait(); ec) co_return;
    if (alive.expired()) co_return;
    if (!sub_->up() || !conns_.front()->up()) continue;  // (a subscriber down says so itself)
    const std::string_view argv[] = {"PUBLISH", channel, beat_};
    auto r = co_await conns_.front()->command(argv);
    if (alive.expired()) co_return;
    if (!r || r->type == redis::reply::kind::error || !sub_->up()) continue;  // not published: nothing learnt
    if (++unheard_ < deaf_after) continue;
    unheard_ = 0;
    // Cached keys may be stale from the moment it went deaf: dropped now, and again once it is
    // back (on_state).
    for (auto& l : listeners_) l("*");
    sub_->reconnect("it delivered none of this replica's last " + std::to_string(deaf_after) +
                    " heartbeats; reconnecting");
  }
}

awaitable<void> redis_store::check_eviction(redis::connection& c) {
  // Leases, windows and counters carry no TTL: a Redis that evicts any key may drop a lease set
  // (its holds then stay until the scope is reset) or a scope's hash (calls in flight forgotten).
  // Asked at each connect of worker 0; a server that refuses CONFIG (an ACL, a managed service
  // that renames it) answers an error and nothing is said.
  std::array<std::string_view, 3> get{"CONFIG", "GET", "maxmemory-policy"};
  auto r = co_await c.setup_command(std::span<const std::string_view>(get));
  if (!r || r->type != redis::reply::kind::array || r->elements.size() != 2) co_return;
  const std::string policy = r->elements[1].str;
  if (!policy.starts_with("allkeys-")) {
    eviction_told_.clear();
    co_return;
  }
  if (policy == eviction_told_) co_return;
  eviction_told_ = policy;
  notice("warn", "Redis evicts any key under memory pressure (maxmemory-policy " + policy +
                     "): it may drop Tollgate's leases and counters, holding reservations or admitting beyond the "
                     "limits; run it with noeviction (docs/policy.md, \"Eviction and ACLs\")");
}

void redis_store::stop() {
  alive_.reset();
  if (sub_) sub_->close();
  for (auto& c : conns_) c->close();
}

std::string redis_store::last_error() const {
  for (auto& c : conns_)
    if (auto e = c->last_error(); !e.empty()) return e;
  return {};
}

bool redis_store::healthy() const {
  for (auto& c : conns_)
    if (!c->up()) return false;
  return !conns_.empty();
}

std::vector<std::string> redis_store::team_keys(const std::string& team) const {
  return {scope_key(team, "l"), scope_key(team, "x")};
}

std::string redis_store::scope_key(const std::string& team, const std::string& suffix) const {
  std::string k;
  scope_key(team, suffix, k);
  return k;
}

void redis_store::scope_key(const std::string& team, const std::string& suffix, std::string& out) const {
  out.clear();
  out.reserve(cfg_.key_prefix.size() + team.size() + suffix.size() + 3);
  out.append(cfg_.key_prefix).append(1, '{').append(team).append("}:", 2).append(suffix);
}

void redis_store::add_scope_keys(std::vector<std::string>& keys, const std::vector<const scope_spec*>& specs) const {
  // The specs are distinct, their scopes nearly so (one scope under two specs: its limits
  // changed while a call was in flight): one key per distinct scope id.
  for (std::size_t i = 0; i < specs.size(); ++i) {
    bool seen = false;
    for (std::size_t j = 0; j < i && !seen; ++j) seen = specs[j]->id == specs[i]->id;
    if (!seen) keys.push_back(scope_key(specs[i]->team, specs[i]->id));
  }
}

awaitable<boost::system::result<redis::reply>> redis_store::eval(unsigned worker, const std::string& sha,
                                                                 std::string_view body, const std::vector<std::string>& keys,
                                                                 const redis::resp_args& args, const redis::resp_args& more) {
  // Keys and arguments go straight into one RESP buffer, each part copied once: no string per
  // argument, no hiredis formatting (both were per-call mallocs on the admission path).
  redis::resp_args key_args;
  std::size_t size = 0;
  for (auto& k : keys) size += k.size() + 16;
  key_args.reserve(size);
  for (auto& k : keys) key_args.add(k);
  const std::string nkeys = std::to_string(keys.size());
  // Arrays, not initializer lists: GCC 12 rejects those inside a coroutine.
  std::string_view head[] = {cmd_evalsha, sha, nkeys};
  const redis::resp_args* parts[] = {&key_args, &args, &more};
  std::string cmd = redis::resp_command(head, parts);
  auto r = co_await conn(worker).command_resp(cmd);
  if (r && r->type == redis::reply::kind::error && r->str.rfind("NOSCRIPT", 0) == 0) {
    head[0] = cmd_eval;
    head[1] = body;
    cmd = redis::resp_command(head, parts);
    r = co_await conn(worker).command_resp(cmd);
  }
  co_return r;
}

std::string redis_store::lease_member(const admission& a) {
  std::string m;
  lease_member(a, m);
  return m;
}

void redis_store::lease_member(const admission& a, std::string& m) {
  m.assign(a.lease);
  char digits[24];
  for (auto& s : a.scopes) {
    m += '|';
    m += s.id;
    m += s.limits.concurrency ? "=1=" : "=0=";
    const auto end = std::to_chars(digits, digits + sizeof digits, s.budget.set() ? a.cost_nano : 0).ptr;
    m.append(digits, std::size_t(end - digits));
  }
}

namespace {

/// Scope specs of a batch, each sent once and referred to by its 1-based index. A batch holds a
/// few distinct specs (its team and its keys): a linear search, no key string per call.
template <class Same>
struct spec_table {
  std::vector<const scope_spec*> specs;
  redis::resp_args header;
  /// The index of `s`, emitting it into the header when it is new.
  template <class Emit>
  std::size_t ref(const scope_spec& s, Emit&& emit) {
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (Same{}(*specs[i], s)) return i + 1;
    specs.push_back(&s);
    emit(header);
    return specs.size();
  }
};

std::int64_t budget_limit(const scope_spec& s) { return s.budget.set() ? s.budget.limit_nano : -1; }

/// What admit.lua is told about a scope: its id, limits, budget and soft threshold.
struct same_spec {
  bool operator()(const scope_spec& a, const scope_spec& b) const {
    return a.id == b.id && a.limits.rpm == b.limits.rpm && a.limits.tpm == b.limits.tpm &&
           a.limits.concurrency == b.limits.concurrency && budget_limit(a) == budget_limit(b) &&
           period_kind(a.budget.period) == period_kind(b.budget.period) && soft_nano(a) == soft_nano(b);
  }
};

}  // namespace

redis_store::batch_plan redis_store::script_args(const std::vector<const admission*>& calls,
                                                 const std::vector<settlement>& settles, std::int64_t deadline_ms) const {
  spec_table<same_spec> specs;
  std::vector<spec_sums> sums;
  batch_plan plan;
  const auto spec = [&specs, &sums](const scope_spec& s) {
    return specs.ref(s, [&s, &sums](redis::resp_args& h) {
      h.add(s.id);
      h.add(s.limits.rpm);
      h.add(s.limits.tpm);
      h.add(s.limits.concurrency);
      h.add(budget_limit(s));
      const char kind = period_kind(s.budget.period);
      h.add(std::string_view(&kind, 1));
      h.add(soft_nano(s));
      sums.emplace_back();
    });
  };
  // The batch's sums (admit.lua: "The sums"), unless the batch must go call by call.
  bool summable = aggregate_.load(std::memory_order_relaxed);
  struct correction {
    std::size_t spec;
    std::int64_t bucket, tokens;
  };
  std::vector<correction> corrections;
  const std::int64_t bucket_ms = bucket_ms_of(window_ms_);
  redis::resp_args& tail = plan.calls;
  tail.reserve(calls.size() * 128 + settles.size() * 192);
  std::string packed;
  // A call's numbers as one argument, "a,b,c" then ";..." per scope (admit.lua's header).
  const auto num = [&packed](auto v, char sep) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
    packed.append(digits, std::size_t(end - digits));
    if (sep) packed += sep;
  };
  std::string charge_member;
  for (const settlement& s : settles) {
    const auto& a = s.adm;
    if (s.charge_only) {
      // No lease in flight to find: "!<lease>", which admit.lua remembers a day in the expired
      // set once charged. Its tokens as reserved: no rate window to correct. Call by call.
      charge_member.assign("!").append(a.lease);
      tail.add(charge_member);
      summable = false;
    } else {
      if (a.rendered.empty()) lease_member(a, a.rendered);  // (built when it was admitted)
      tail.add(a.rendered);
    }
    packed.clear();
    num(s.tokens, ',');
    num(s.cost_nano, ',');
    num(s.admitted_at_ms, ',');
    num(s.charge_only ? s.tokens : a.tokens, ',');
    num(s.charge_only ? 0 : a.cost_nano, 0);
    const std::int64_t d = std::int64_t(s.tokens) - std::int64_t(a.tokens);
    for (std::size_t i = 0; i < a.scopes.size(); ++i) {
      const std::size_t k = spec(a.scopes[i]);
      plan.settle_specs.push_back(k - 1);
      const std::string_view pid = i < s.periods.size() ? std::string_view(s.periods[i]) : std::string_view();
      packed += ';';
      num(k, ',');
      packed += pid;
      spec_sums& t = sums[k - 1];
      t.settles += 1;
      t.reserved += a.cost_nano;
      t.charged += s.cost_nano;
      if (a.scopes[i].budget.set()) {  // one period per scope, or call by call
        if (pid.empty() || (!t.pid.empty() && t.pid != pid)) summable = false;
        t.pid = pid;
      }
      if (d != 0 && summable) {
        const std::int64_t bucket = s.admitted_at_ms / bucket_ms;
        auto c = std::find_if(corrections.begin(), corrections.end(),
                              [&](const correction& x) { return x.spec == k && x.bucket == bucket; });
        if (c == corrections.end()) corrections.push_back({k, bucket, d});
        else c->tokens += d;
      }
    }
    tail.add(packed);
  }
  for (const admission* a : calls) {
    if (a->lease.empty()) {
      tail.add(std::string_view());
      summable = false;  // a budget read: its answer is the call-by-call one
    } else {
      if (a->rendered.empty()) lease_member(*a, a->rendered);
      tail.add(a->rendered);
    }
    packed.clear();
    num(a->tokens, ',');
    num(a->cost_nano, 0);
    for (auto& sc : a->scopes) {
      const std::size_t k = spec(sc);
      plan.admit_specs.push_back(k - 1);
      packed += ';';
      num(k, 0);
      spec_sums& t = sums[k - 1];
      t.admits += 1;
      t.tokens += std::int64_t(a->tokens);
      t.cost += a->cost_nano;
    }
    tail.add(packed);
  }
  // Two specs of one scope (its limits changed between a call and its settlement) share one
  // state in the script: the sums per spec would not see each other.
  for (std::size_t i = 0; summable && i < specs.specs.size(); ++i)
    for (std::size_t j = i + 1; j < specs.specs.size(); ++j)
      if (specs.specs[i]->id == specs.specs[j]->id) summable = false;
  // A lease settled twice in one batch is charged once: the call-by-call path finds it once.
  if (summable && settles.size() > 1) {
    std::vector<std::string_view> leases;
    leases.reserve(settles.size());
    for (const settlement& s : settles) leases.push_back(s.adm.lease);
    std::sort(leases.begin(), leases.end());
    summable = std::adjacent_find(leases.begin(), leases.end()) == leases.end();
  }
  redis::resp_args& args = plan.args;
  args.reserve(64 + specs.header.bytes().size() + sums.size() * 64 + corrections.size() * 32);
  // One lease length for the batch (admit.lua): the longest asked. Calls asking less are renewed
  // at half their own, so a longer lease costs them nothing; a shorter one (the first call's, say,
  // from before a reload raised lease_ms) would be swept while the engine still counts on it.
  if (calls.empty()) {
    args.add(std::string_view("0"));
  } else {
    std::uint32_t lease_ms = 0;
    for (const admission* c : calls) lease_ms = std::max(lease_ms, c->lease_ms);
    args.add(lease_ms);
  }
  args.add(window_ms_);
  args.add(calls.size());
  args.add(settles.size());
  args.add(specs.specs.size());
  args.add(deadline_ms);
  args.append(specs.header);
  if (summable) {
    args.add(std::string_view("1"));
    for (const spec_sums& t : sums) {
      args.add(t.admits);
      args.add(t.tokens);
      args.add(t.cost);
      args.add(t.settles);
      args.add(t.reserved);
      args.add(t.charged);
      args.add(t.pid);
    }
    args.add(corrections.size());
    for (const correction& c : corrections) {
      args.add(c.spec);
      args.add(c.bucket);
      args.add(c.tokens);
    }
  } else {
    args.add(std::string_view("0"));
  }
  plan.summed = summable;
  plan.specs = std::move(specs.specs);
  return plan;
}

namespace {
/// One of admit.lua's rate figures, `left * 16 + scope index` (0: no scope limits the kind).
void read_figure(std::int64_t packed, std::size_t nscopes, int& scope, std::int64_t& left) {
  const std::int64_t idx = packed % 16;
  if (packed <= 0 || idx < 1 || std::size_t(idx) > nscopes) return;
  scope = int(idx - 1);
  left = packed / 16;
}
}  // namespace

void redis_store::admitted(admit_result& out, const admission& a, std::int64_t now_ms) const {
  out.v = verdict::admitted;
  out.admitted_at_ms = now_ms;
  out.reset_ms = window_reset_ms(now_ms, bucket_ms_of(window_ms_));  // the script's buckets
  // The same period ids as the script's, from the same (Redis) clock reading.
  out.periods = periods_of(a, now_ms);
}

admit_result redis_store::parse_admit(const std::vector<redis::reply>& e, std::size_t& at, const admission& a,
                                      std::int64_t now_ms) const {
  admit_result out;  // unavailable unless the reply says otherwise
  if (at >= e.size()) return out;
  const std::int64_t code = as_int(e[at]);
  if (code == 3) {  // Redis ran it past the batch's deadline: nothing reserved
    ++at;
    late_.fetch_add(1, std::memory_order_relaxed);
    return out;
  }
  const std::size_t width = code == 1 ? 3 : code == 0 ? 6 : 4;
  if (at + width > e.size()) {
    at = e.size();
    return out;
  }
  if (code == 1) {  // admitted: 1, requests, tokens
    read_figure(as_int(e[at + 1]), a.scopes.size(), out.requests_scope, out.requests_left);
    read_figure(as_int(e[at + 2]), a.scopes.size(), out.tokens_scope, out.tokens_left);
    at += 3;
    admitted(out, a, now_ms);
    return out;
  }
  out.admitted_at_ms = now_ms;
  out.reset_ms = window_reset_ms(now_ms, bucket_ms_of(window_ms_));  // the script's buckets
  const std::int64_t why = as_int(e[at + 1]), idx = as_int(e[at + 2]), retry = as_int(e[at + 3]);
  if (code == 0) {
    read_figure(as_int(e[at + 4]), a.scopes.size(), out.requests_scope, out.requests_left);
    read_figure(as_int(e[at + 5]), a.scopes.size(), out.tokens_scope, out.tokens_left);
  }
  at += width;
  if (code != 0) return admit_result{};
  out.v = why == 1 ? verdict::rpm : why == 2 ? verdict::tpm : why == 3 ? verdict::concurrency : verdict::budget;
  out.scope = static_cast<std::size_t>(std::max<std::int64_t>(1, idx) - 1);
  out.retry_after_ms = retry;
  return out;
}

std::vector<settle_result> redis_store::parse_settles(const std::vector<redis::reply>& e,
                                                      const std::vector<settlement>& settles, const batch_plan& plan,
                                                      std::size_t& at) {
  std::vector<settle_result> out(settles.size());  // unreachable unless the reply has them
  if (at >= e.size()) return out;
  if (as_int(e[at++]) == 1) {
    // Applied from the sums: each scope's spend before them is in the reply; each settlement's
    // spend after it, and the first to cross the soft threshold, follow in order.
    const std::size_t nspecs = plan.specs.size();
    if (at + 2 * nspecs > e.size()) {
      at = e.size();
      return out;
    }
    std::vector<std::int64_t> spent(nspecs);
    std::vector<bool> crossed(nspecs);
    for (std::size_t k = 0; k < nspecs; ++k) {
      spent[k] = as_int(e[at + 2 * k]);
      crossed[k] = as_int(e[at + 2 * k + 1]) == 1;
    }
    at += 2 * nspecs;
    std::size_t next = 0;  // into plan.settle_specs
    for (std::size_t c = 0; c < settles.size(); ++c) {
      const auto& scopes = settles[c].adm.scopes;
      settle_result& o = out[c];
      o.reachable = o.applied = true;
      o.spent.assign(scopes.size(), 0);
      o.soft_crossed.assign(scopes.size(), false);
      for (std::size_t i = 0; i < scopes.size(); ++i) {
        const std::size_t k = next < plan.settle_specs.size() ? plan.settle_specs[next++] : nspecs;
        if (k >= nspecs || !scopes[i].budget.set()) continue;
        spent[k] += settles[c].cost_nano;
        o.spent[i] = spent[k];
        const std::int64_t soft = soft_nano(*plan.specs[k]);
        if (soft > 0 && spent[k] >= soft && !crossed[k]) o.soft_crossed[i] = crossed[k] = true;
      }
    }
    return out;
  }
  for (std::size_t c = 0; c < settles.size(); ++c) {
    const std::size_t n = settles[c].adm.scopes.size();
    if (at >= e.size()) break;
    const bool applied = as_int(e[at]) == 1;
    if (applied && at + n >= e.size()) break;
    ++at;
    settle_result& o = out[c];
    o.reachable = true;
    o.applied = applied;
    o.spent.assign(n, 0);
    o.soft_crossed.assign(n, false);
    if (!applied) continue;  // (applied before: the script sends nothing more)
    for (std::size_t i = 0; i < n; ++i, ++at) {
      const std::int64_t v = as_int(e[at]);  // -(spent + 1): this charge crossed the soft threshold first
      o.spent[i] = v < 0 ? -v - 1 : v;
      o.soft_crossed[i] = v < 0;
    }
  }
  return out;
}

void redis_store::parse_admits(const std::vector<redis::reply>& e, std::size_t& at, const batch_plan& plan,
                               const std::vector<const admission*>& calls, std::int64_t now_ms,
                               std::vector<admit_result>& out) const {
  out.assign(calls.size(), admit_result{});  // unavailable unless the reply says otherwise
  if (at >= e.size()) return;
  if (as_int(e[at++]) != 1) {
    for (std::size_t i = 0; i < calls.size(); ++i) out[i] = parse_admit(e, at, *calls[i], now_ms);
    return;
  }
  // All admitted from the sums: each call's figures from its scopes' counts before the batch
  // and the calls before it, as admit.lua works them out call by call.
  const std::size_t nspecs = plan.specs.size();
  if (at + 2 * nspecs > e.size()) {
    at = e.size();
    return;
  }
  std::vector<std::int64_t> rs(nspecs), ts(nspecs);
  for (std::size_t k = 0; k < nspecs; ++k) {
    rs[k] = as_int(e[at + 2 * k]);
    ts[k] = as_int(e[at + 2 * k + 1]);
  }
  at += 2 * nspecs;
  std::size_t next = 0;  // into plan.admit_specs
  for (std::size_t c = 0; c < calls.size(); ++c) {
    const admission& a = *calls[c];
    admit_result& o = out[c];
    for (std::size_t i = 0; i < a.scopes.size(); ++i) {
      const std::size_t k = next < plan.admit_specs.size() ? plan.admit_specs[next++] : nspecs;
      const auto& l = a.scopes[i].limits;
      if (k >= nspecs || (l.rpm == 0 && l.tpm == 0)) continue;
      rs[k] += 1;
      ts[k] += std::int64_t(a.tokens);
      note_window(o, int(i), l, rs[k], ts[k]);  // (all admitted: nothing left is below 0)
    }
    admitted(o, a, now_ms);
  }
}

awaitable<admit_result> redis_store::admit(unsigned worker, const admission& a) {
  if (a.scopes.empty() || queues_.empty()) co_return admit_result{};
  // Queued for this worker's next batch: whatever arrives while a batch is on the wire goes in the
  // next one, so batches grow with load and a lone call waits for nothing.
  auto p = std::make_shared<pending_admit>();
  p->a = &a;
  const unsigned w = worker % unsigned(queues_.size());
  auto& q = queues_[w];
  p->seq = q.seq++;
  q.admits.push_back(p);
  if (!q.admitting) {
    q.admitting = true;
    net::co_spawn(co_await net::this_coro::executor, flush_admissions(w), net::detached);
  } else if (!q.second && !q.waiting && q.admits.size() >= second_batch_at) {
    q.second = true;  // many calls wait while a batch is on the wire: a second batch goes now
    net::co_spawn(co_await net::this_coro::executor, send_second_batch(w), net::detached);
  } else if (q.waiting) {
    q.carry->cancel();  // settlements were waiting for a ride: go now
  }
  if (!p->done) {
    // Named locals, not temporaries inside the co_await expression: GCC 12 destroyed the frame's
    // shared_ptr early otherwise (ASan caught it).
    net::use_awaitable_t<base_executor_t> token;  // Boost 1.81's async_initiate takes the token by lvalue
    pending_admit* raw = p.get();
    auto init = [raw](auto handler) {
      auto h = std::make_shared<decltype(handler)>(std::move(handler));
      // Dispatched: the batch's reader runs on this worker, so the caller resumes right there,
      // not after another pass of the worker's queue (interleaved A/B at -c32: faster in 11 of
      // 12 rounds, +5 to +12%; at -c64 no difference).
      raw->wake = [h] {
        auto ex = net::get_associated_executor(*h);
        net::dispatch(ex, [h] { std::move(*h)(); });
      };
    };
    co_await net::async_initiate<net::use_awaitable_t<base_executor_t>, void()>(init, token);
  }
  admit_result out = std::move(p->result);
  co_return out;
}

void redis_store::queue_settlement(unsigned worker, settlement s, executor_t ex) {
  if (queues_.empty() || s.adm.scopes.empty()) {
    store::queue_settlement(worker, std::move(s), ex);
    return;
  }
  const unsigned w = worker % unsigned(queues_.size());
  auto& q = queues_[w];
  q.settles.push_back(pending_settle{std::move(s), q.seq++});
  // An admission batch running will carry it; otherwise flush_admissions waits a moment
  // (carry_wait) for an admission to carry it, and then sends it alone.
  if (!q.admitting && !q.settling) {
    q.admitting = true;
    net::co_spawn(executors_[w], flush_admissions(w), net::detached);
  }
}

std::vector<settlement> redis_store::take_settles(worker_queue& q, const std::string& team, std::size_t max) {
  std::vector<settlement> out;
  auto keep = q.settles.begin();
  for (auto it = q.settles.begin(); it != q.settles.end(); ++it) {
    if (out.size() < max && it->s.adm.scopes.front().team == team) out.push_back(std::move(it->s));
    else *keep++ = std::move(*it);
  }
  q.settles.erase(keep, q.settles.end());
  return out;
}

std::string redis_store::oldest_team(const worker_queue& q) {
  // The oldest admission's team, unless a settlement of another team has waited longer: then that
  // team's turn (with its admissions, if any) comes.
  if (!q.settles.empty() && (q.admits.empty() || q.settles.front().seq < q.admits.front()->seq))
    return q.settles.front().s.adm.scopes.front().team;
  return q.admits.front()->a->scopes.front().team;
}

awaitable<void> redis_store::send_round(unsigned worker) {
  auto& q = queues_[worker];
  // Each team with a queued admission (and the team of a settlement older than them all), oldest
  // first. One team, the common case: its batch, no more frames.
  std::vector<std::string> teams{oldest_team(q)};
  for (const auto& p : q.admits) {
    if (teams.size() == max_round_teams) break;
    const std::string& t = p->a->scopes.front().team;
    if (std::find(teams.begin(), teams.end(), t) == teams.end()) teams.push_back(t);
  }
  if (teams.size() == 1) {
    co_await send_batch(worker, std::move(teams.front()));
    co_return;
  }
  // Several teams: a batch each (a script stays in one team's slot), all on the wire together,
  // pipelined on the worker's connection. One after another, the tenth team's caller waited ten
  // round trips, and a worker admitted about two calls per round trip whatever the load: with a
  // remote Redis (a few ms away) a queue that grows, inside no timeout. Each batch stays atomic,
  // and Redis runs them in the order sent.
  std::vector<awaitable<void>> batches;
  for (auto& t : teams) batches.push_back(send_batch(worker, std::move(t)));
  const executor_t ex = co_await net::this_coro::executor;
  co_await join_all(ex, std::move(batches));
}

awaitable<void> redis_store::send_batch(unsigned worker, std::string team) {
  constexpr std::size_t max_batch = 64;
  auto& q = queues_[worker];
  // One batch: the oldest calls of one team (a Redis Cluster script stays in one slot), with that
  // team's settlements.
  std::vector<std::shared_ptr<pending_admit>> batch;
  auto keep = q.admits.begin();
  for (auto it = q.admits.begin(); it != q.admits.end(); ++it) {
    if (batch.size() < max_batch && (*it)->a->scopes.front().team == team) batch.push_back(std::move(*it));
    else *keep++ = std::move(*it);
  }
  q.admits.erase(keep, q.admits.end());
  std::vector<settlement> settles = take_settles(q, team, max_settles);
  if (batch.empty() && settles.empty()) co_return;  // (taken meanwhile by another batch)
  std::vector<settle_result> res = co_await run_batch(worker, team, batch, settles);
  if (!settles.empty()) report_settled(worker, settles, res, batch.empty());
}

awaitable<void> redis_store::send_second_batch(unsigned worker) {
  auto& q = queues_[worker];
  if (!q.admits.empty()) co_await send_batch(worker, oldest_team(q));
  q.second = false;
}

awaitable<void> redis_store::flush_admissions(unsigned worker) {
  auto& q = queues_[worker];
  for (;;) {
    while (!q.admits.empty()) co_await send_round(worker);
    // Settlements with no admission to carry them: the worker's next admission usually follows
    // within a moment; wait that long for it (it ends the wait at once) rather than send them
    // alone.
    if (q.settles.empty() || q.settles.size() >= max_settles) break;
    q.waiting = true;
    q.carry->expires_after(carry_wait);
    [[maybe_unused]] auto [ec] = co_await q.carry->async_wait();
    q.waiting = false;
    if (q.admits.empty()) break;
  }
  q.admitting = false;
  // Settlements that nothing carried: alone, now.
  if (!q.settles.empty() && !q.settling) {
    q.settling = true;
    co_await flush_settlements(worker);
  }
}

awaitable<void> redis_store::flush_settlements(unsigned worker) {
  auto& q = queues_[worker];
  // While an admission batch runs, it carries the settlements (and hands leftovers back here).
  while (!q.settles.empty() && !q.admitting) {
    const std::string team = q.settles.front().s.adm.scopes.front().team;
    std::vector<settlement> settles = take_settles(q, team, max_settles);
    const std::vector<std::shared_ptr<pending_admit>> none;
    std::vector<settle_result> res = co_await run_batch(worker, team, none, settles);
    report_settled(worker, settles, res, true);
  }
  q.settling = false;
}

namespace {

/// redis_store::admissions_awaited(): per thread, as each worker has its own connection.
thread_local long admissions_due = 0;

/// Counts an admission batch in admissions_due from its send until end() (or its scope's end).
class admission_due {
 public:
  explicit admission_due(bool admits) : on_(admits) {
    if (on_) ++admissions_due;
  }
  admission_due(const admission_due&) = delete;
  admission_due& operator=(const admission_due&) = delete;
  ~admission_due() { end(); }
  void end() {
    if (on_) --admissions_due;
    on_ = false;
  }

 private:
  bool on_;
};

}  // namespace

long redis_store::admissions_awaited() { return admissions_due; }

namespace {
constexpr std::int64_t offset_unknown = std::numeric_limits<std::int64_t>::min();
}  // namespace

std::int64_t redis_store::deadline_for(unsigned worker) const {
  if (worker >= clock_offset_.size() || clock_offset_[worker] == offset_unknown) return 0;
  // Given up at its own timeout; a script that starts before then must also run and be answered
  // by then (2 ms: a batch's script takes well under one).
  std::int64_t left = std::int64_t(cfg_.timeout_ms) - 2;
  // Or with the oldest command already on the wire, when that one times out (its drop fails this
  // batch too). Redis runs a connection's commands in order: a batch that runs before that moment
  // ran after the older command, whose answer then went first, so no margin is needed there.
  if (worker < conns_.size()) {
    const auto at = conns_[worker]->gives_up_at();
    if (at != std::chrono::steady_clock::time_point::max())
      left = std::min(left, std::int64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             at - std::chrono::steady_clock::now())
                                             .count()));
  }
  return clock_ms(worker) + std::max<std::int64_t>(left, 0) - 1;
}

namespace {
std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::int64_t redis_store::clock_ms(unsigned worker) const {
  // Anchored to the steady clock: a step of this host's wall clock (NTP, an operator) leaves the
  // estimate where it was. Anchored to the wall clock, a step forward put every later deadline
  // and budget period ahead of Redis until the estimate had sunk back, a millisecond per reply.
  if (worker >= clock_offset_.size() || clock_offset_[worker] == offset_unknown) return wall_ms();
  return steady_ms() + clock_offset_[worker];
}

void redis_store::learn_offset(unsigned worker, std::int64_t redis_ms, bool fresh) {
  if (worker >= clock_offset_.size() || redis_ms <= 0) return;
  const std::int64_t sample = redis_ms - steady_ms();
  std::int64_t& o = clock_offset_[worker];
  o = o == offset_unknown || fresh ? sample : std::max(sample, o - 1);
}

awaitable<std::vector<settle_result>> redis_store::run_batch(unsigned worker, const std::string& team,
                                                             const std::vector<std::shared_ptr<pending_admit>>& admits,
                                                             const std::vector<settlement>& settles) {
  std::vector<const admission*> calls;
  calls.reserve(admits.size());
  for (auto& p : admits) calls.push_back(p->a);
  const std::int64_t deadline = admits.empty() ? 0 : deadline_for(worker);
  batch_plan plan = script_args(calls, settles, deadline);
  std::vector<std::string> keys = team_keys(team);
  add_scope_keys(keys, plan.specs);
  admission_due due(!admits.empty());
  auto r = co_await eval(worker, script_sha_, scripts::admit, keys, plan.args, plan.calls);
  if (plan.summed && r && r->type == redis::reply::kind::error &&
      r->str.find("Unknown Redis command") != std::string::npos) {
    // A server before Redis 6.2 has no ZMSCORE, which the sums need. The script stopped there,
    // before writing anything: this batch goes again call by call, and so does every later one.
    if (aggregate_.exchange(false))
      notice("warn", "Redis lacks ZMSCORE (Redis 6.2 or later): policy batches go call by call, "
                     "which costs Redis more CPU per call");
    plan = script_args(calls, settles, deadline);  // (the first send's deadline: earlier, so safe)
    r = co_await eval(worker, script_sha_, scripts::admit, keys, plan.args, plan.calls);
  }
  due.end();  // answered (or failed): from here on the callers run
  if (r && r->type == redis::reply::kind::error) refused_batch(team, r->str);
  const bool ok = r && r->type == redis::reply::kind::array && !r->elements.empty();
  std::size_t at = 1;
  std::vector<settle_result> out;
  std::vector<admit_result> results;
  if (ok) {
    learn_offset(worker, as_int(r->elements[0]));
    const std::size_t from = at;
    out = parse_settles(r->elements, settles, plan, at);
    if (from < r->elements.size() && as_int(r->elements[from]) == 1) sums_.settled.fetch_add(1, std::memory_order_relaxed);
    const std::size_t admit_from = at;
    parse_admits(r->elements, at, plan, calls, as_int(r->elements[0]), results);
    if (admit_from < r->elements.size() && as_int(r->elements[admit_from]) == 1)
      sums_.admitted.fetch_add(1, std::memory_order_relaxed);
    sums_.batches.fetch_add(1, std::memory_order_relaxed);
  } else {
    out.resize(settles.size());  // unreachable: the caller sends them again (idempotent)
  }
  // Sent, and no answer says what Redis did: it may have run the script (a reply lost to a reset
  // or late past the timeout; an error from something between, such as a proxy that forwarded
  // the command). Not so when nothing was sent (not connected), or when Redis said it refused the
  // command before running any of it: a needless release costs a round trip, a missing one
  // holds the call's slot and budget until its lease expires.
  bool in_doubt = false;
  if (!ok && !admits.empty()) {
    if (!r) {
      const auto ec = r.error();
      in_doubt = ec == net::error::timed_out || ec == net::error::connection_reset || ec == net::error::operation_aborted;
    } else {
      static constexpr std::string_view refused_before_running[] = {
          "NOSCRIPT", "BUSY", "LOADING", "MOVED", "ASK", "CROSSSLOT", "CLUSTERDOWN", "TRYAGAIN",
          "MASTERDOWN", "NOAUTH", "NOPERM", "MISCONF", "READONLY", "OOM", "ERR unknown command"};
      in_doubt = std::none_of(std::begin(refused_before_running), std::end(refused_before_running),
                              [&](std::string_view p) { return r->str.starts_with(p); });
    }
  }
  for (std::size_t i = 0; i < admits.size(); ++i) {
    auto& p = *admits[i];
    if (ok && i < results.size()) p.result = std::move(results[i]);
    else p.result.in_doubt = in_doubt;
    p.done = true;
    if (p.wake) p.wake();
  }
  co_return out;
}

void redis_store::refused_batch(const std::string& team, const std::string& reply) {
  // An error reply is Redis's own word (NOPERM from an ACL, WRONGTYPE on a scope key, OOM): the
  // batch's calls are answered as if Redis were unreachable and its settlements retried, so
  // without this line nothing would say why. Said again when the reply changes, else once a
  // minute (a settlement Redis keeps refusing is retried every second).
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(refusal_mu_);
    if (reply == last_refusal_ && now - last_refusal_at_ < std::chrono::minutes(1)) return;
    last_refusal_ = reply;
    last_refusal_at_ = now;
  }
  notice("error", "Redis refused a policy batch of team '" + team + "': " + reply.substr(0, 200));
}

awaitable<std::vector<settle_result>> redis_store::settle_batch(unsigned worker, std::vector<settlement> batch) {
  std::vector<settle_result> out(batch.size());
  // One script call per team: its keys share one hash tag (one Redis Cluster slot).
  std::vector<bool> done(batch.size(), false);
  const std::vector<std::shared_ptr<pending_admit>> none;
  for (std::size_t lead = 0; lead < batch.size(); ++lead) {
    if (done[lead] || batch[lead].adm.scopes.empty()) continue;
    const std::string team = batch[lead].adm.scopes.front().team;
    std::vector<std::size_t> members;
    std::vector<settlement> settles;
    for (std::size_t c = lead; c < batch.size(); ++c) {
      if (done[c] || batch[c].adm.scopes.empty() || batch[c].adm.scopes.front().team != team) continue;
      done[c] = true;
      members.push_back(c);
      settles.push_back(batch[c]);
    }
    std::vector<settle_result> res = co_await run_batch(worker, team, none, settles);
    for (std::size_t i = 0; i < members.size() && i < res.size(); ++i) out[members[i]] = std::move(res[i]);
  }
  co_return out;
}

awaitable<budget_state> redis_store::budget(unsigned worker, const scope_spec& s) {
  budget_state b;
  if (!s.budget.set()) {
    b.reachable = true;
    co_return b;
  }
  // The script with one admission of an empty lease reads the budget (sweeping expired leases)
  // and reserves nothing.
  admission peek;
  scope_spec only = s;
  only.limits = {};
  peek.scopes.push_back(only);
  std::vector<const admission*> one{&peek};
  const std::vector<settlement> no_settles;
  const batch_plan plan = script_args(one, no_settles);
  std::vector<std::string> keys = team_keys(s.team);
  keys.push_back(scope_key(s.team, s.id));
  auto r = co_await eval(worker, script_sha_, scripts::admit, keys, plan.args, plan.calls);
  // {now, 0 (no settlements), 0 (call by call), 2, spent, reserved, 0}
  if (!r || r->type != redis::reply::kind::array || r->elements.size() < 7 || as_int(r->elements[3]) != 2) co_return b;
  b.reachable = true;
  b.spent = as_int(r->elements[4]);
  b.reserved = as_int(r->elements[5]);
  co_return b;
}

awaitable<bool> redis_store::renew(unsigned worker, const admission& a, std::int64_t expiry_ms) {
  if (a.scopes.empty()) co_return true;
  // XX: only a lease still held is extended; one already swept or settled stays gone.
  const std::string key = scope_key(a.scopes.front().team, "l"), score = std::to_string(expiry_ms),
                    member = a.rendered.empty() ? lease_member(a) : a.rendered;
  const std::string_view argv[] = {"ZADD", key, "XX", score, member};
  auto r = co_await conn(worker).command(argv);
  co_return r && r->type != redis::reply::kind::error;
}

awaitable<key_lookup> redis_store::get_key(unsigned worker, std::string id) {
  const std::string key = cfg_.key_prefix + "key:" + id;
  const std::string_view argv[] = {"GET", key};
  auto r = co_await conn(worker).command(argv);
  key_lookup out;
  if (!r || r->type == redis::reply::kind::error) co_return out;
  out.reachable = true;
  if (r->type == redis::reply::kind::string) {
    out.key = key_from_json(r->str);
    out.stored = r->str;
  }
  co_return out;
}

awaitable<write_result> redis_store::replace_key(unsigned worker, key_record k, std::string stored) {
  // A new key is listed before it is written: a key written but missing from its team's listing
  // would escape the team's deletion (which revokes the keys listed) and pass to a team created
  // later under the name. Listed and then not written, an id is skipped by every listing.
  if (stored.empty()) {
    const bool listed = co_await index_key(worker, k);  // (not in a conditional: GCC 12)
    if (!listed) co_return write_result::unreachable;
  }
  co_return co_await compare_and_set(worker, cfg_.key_prefix + "key:" + k.id, stored, key_to_json(k),
                                     cfg_.key_prefix + "keys", k.id);
}

awaitable<write_result> redis_store::compare_and_set(unsigned worker, std::string key, std::string stored,
                                                     std::string body, std::string index, std::string member) {
  // Admin writes are rare: EVAL with the script's text, no SHA to keep loaded. One key, as every
  // script here (a Cluster proxy routes it by that key); the index is added to as put_key does.
  static constexpr std::string_view script =
      "if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[2]) return 1";
  // A new record is added to its index first: one written and not indexed would be missing from
  // listings for good (nothing rebuilds an index both of whose counts lack it). An index entry
  // whose record was then not written is skipped by every listing.
  const std::string_view add[] = {"SADD", index, member};
  if (stored.empty()) {
    auto a = co_await conn(worker).command(add);
    if (!a || a->type == redis::reply::kind::error) co_return write_result::unreachable;
  }
  const std::string_view argv[] = {"EVAL", script, "1", key, stored, body};
  auto r = co_await conn(worker).command(argv);
  if (!r || r->type != redis::reply::kind::integer) co_return write_result::unreachable;
  if (r->integer != 1) co_return write_result::changed;
  co_return write_result::written;
}

awaitable<bool> redis_store::put_key(unsigned worker, key_record k) {
  const std::string key = cfg_.key_prefix + "key:" + k.id;
  const std::string body = key_to_json(k);
  const std::string_view argv[] = {"SET", key, body};
  auto r = co_await conn(worker).command(argv);
  if (!r || r->type == redis::reply::kind::error) co_return false;
  // The index of key ids, for listing.
  const std::string index = cfg_.key_prefix + "keys";
  const std::string_view add[] = {"SADD", index, k.id};
  r = co_await conn(worker).command(add);
  if (!r || r->type == redis::reply::kind::error) co_return false;
  co_return co_await index_key(worker, k);
}

awaitable<bool> redis_store::index_key(unsigned worker, const key_record& k) {
  const std::string all = cfg_.key_prefix + "key_ids", team = cfg_.key_prefix + "team_key_ids:" + k.team;
  const std::string_view add_all[] = {"ZADD", all, "0", k.id}, add_team[] = {"ZADD", team, "0", k.id};
  std::vector<std::string> cmds{redis::resp_command(add_all, redis::resp_args{}),
                                redis::resp_command(add_team, redis::resp_args{})};
  if (co_await pipelined(worker, std::move(cmds), 2)) co_return true;
  notice("warn", "a key could not be added to the listing indexes (" + all + ", " + team + ")");
  co_return false;
}

namespace {

bool ok_reply(const boost::system::result<redis::reply>& r) { return r && r->type != redis::reply::kind::error; }

/// Field separator in usage hashes: a control character no team, key id or model name holds.
constexpr char usage_sep = '\x1f';

/// pipelined()'s shared state: its lanes may outlive the awaiting caller (a stopped worker).
struct pipeline_run {
  explicit pipeline_run(std::vector<std::string> c) : cmds(std::move(c)), out(cmds.size()) {}
  std::vector<std::string> cmds;
  std::vector<redis::reply> out;
  std::size_t next = 0;
  bool failed = false;
};

/// One lane: the next command not yet sent, until none is left or one failed.
awaitable<void> pipeline_lane(std::shared_ptr<pipeline_run> run, redis::connection* c) {
  while (!run->failed && run->next < run->cmds.size()) {
    const std::size_t i = run->next++;
    auto r = co_await c->command_resp(run->cmds[i]);
    if (!ok_reply(r)) {
      run->failed = true;
      break;
    }
    run->out[i] = std::move(*r);
  }
}

}  // namespace

awaitable<std::optional<std::vector<redis::reply>>> redis_store::pipelined(unsigned worker,
                                                                           std::vector<std::string> cmds,
                                                                           std::size_t window) {
  auto run = std::make_shared<pipeline_run>(std::move(cmds));
  std::vector<awaitable<void>> lanes;
  for (std::size_t i = 0, n = std::min(std::max<std::size_t>(window, 1), run->cmds.size()); i < n; ++i)
    lanes.push_back(pipeline_lane(run, &conn(worker)));
  const executor_t ex = co_await net::this_coro::executor;
  co_await join_all(ex, std::move(lanes));
  if (run->failed) co_return std::nullopt;
  co_return std::move(run->out);
}

awaitable<std::optional<std::vector<std::pair<std::string, std::string>>>> redis_store::members_docs(unsigned worker, std::string kind) {
  // The index in SSCAN pages, then each document (the GETs pipelined). Pages, not one SMEMBERS:
  // the index only grows (revoked keys stay listed), and one reply of a few hundred thousand ids
  // outlasted the command timeout, which drops the worker's connection with its admissions.
  const std::string index = cfg_.key_prefix + kind + "s";
  std::vector<std::string> ids;
  std::string cursor = "0";
  do {
    const std::string_view argv[] = {"SSCAN", index, cursor, "COUNT", "500"};
    auto r = co_await conn(worker).command(argv);
    if (!ok_reply(r) || r->elements.size() != 2) co_return std::nullopt;
    cursor = r->elements[0].str;
    for (auto& e : r->elements[1].elements) ids.push_back(std::move(e.str));
  } while (cursor != "0");
  std::sort(ids.begin(), ids.end());  // (SSCAN may return a member twice)
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<std::string> gets;
  gets.reserve(ids.size());
  for (auto& id : ids) {
    const std::string key = cfg_.key_prefix + kind + ":" + id;
    const std::string_view get[] = {"GET", key};
    gets.push_back(redis::resp_command(get, redis::resp_args{}));
  }
  auto docs = co_await pipelined(worker, std::move(gets), 64);
  if (!docs) co_return std::nullopt;
  std::vector<std::pair<std::string, std::string>> out;
  for (std::size_t i = 0; i < docs->size(); ++i)
    if ((*docs)[i].type == redis::reply::kind::string) out.emplace_back(std::move(ids[i]), std::move((*docs)[i].str));
  co_return out;
}

awaitable<bool> redis_store::ensure_key_index(unsigned worker) {
  // Listings page through sorted sets of ids (all keys, and each team's), kept beside the id set
  // "keys" that every key write adds to. Keys written before those indexes existed (an older
  // version), or whose index write failed, make the id set the larger: then the indexes are
  // rebuilt from it, once, by whichever listing notices. Two counts per listing, O(1) each.
  const std::string ids = cfg_.key_prefix + "keys", all = cfg_.key_prefix + "key_ids";
  const std::string_view scard[] = {"SCARD", ids}, zcard[] = {"ZCARD", all};
  std::vector<std::string> counts{redis::resp_command(scard, redis::resp_args{}),
                                  redis::resp_command(zcard, redis::resp_args{})};
  auto n = co_await pipelined(worker, std::move(counts), 2);
  if (!n) co_return false;
  if (as_int((*n)[0]) <= as_int((*n)[1])) co_return true;
  notice("info", "building the key listing index from " + ids + " (" + std::to_string(as_int((*n)[0])) +
                     " ids, " + std::to_string(as_int((*n)[1])) + " indexed)");
  auto docs = co_await members_docs(worker, "key");
  if (!docs) co_return false;
  std::vector<std::string> adds;
  for (const auto& [id, doc] : *docs) {
    const std::string_view add_all[] = {"ZADD", all, "0", id};
    adds.push_back(redis::resp_command(add_all, redis::resp_args{}));
    // (An unreadable record is counted in the global index, so that the counts agree, and listed
    // nowhere: a listing shows only records it can read.)
    if (auto k = key_from_json(doc)) {
      const std::string team = cfg_.key_prefix + "team_key_ids:" + k->team;
      const std::string_view add_team[] = {"ZADD", team, "0", id};
      adds.push_back(redis::resp_command(add_team, redis::resp_args{}));
    }
  }
  auto added = co_await pipelined(worker, std::move(adds), 64);
  co_return added.has_value();
}

awaitable<std::optional<key_page>> redis_store::list_keys(unsigned worker, key_query q) {
  if (!co_await ensure_key_index(worker)) co_return std::nullopt;
  const std::string index = q.team.empty() ? cfg_.key_prefix + "key_ids" : cfg_.key_prefix + "team_key_ids:" + q.team;
  const std::string from = q.after.empty() ? std::string("-") : "(" + q.after, count = std::to_string(q.limit + 1);
  const std::string_view range[] = {"ZRANGEBYLEX", index, from, "+", "LIMIT", "0", count};
  auto r = co_await conn(worker).command(range);
  if (!ok_reply(r) || r->type != redis::reply::kind::array) co_return std::nullopt;
  key_page out;
  out.has_more = r->elements.size() > q.limit;
  if (out.has_more) r->elements.resize(q.limit);
  std::vector<std::string> gets;
  for (const auto& id : r->elements) {
    const std::string key = cfg_.key_prefix + "key:" + id.str;
    const std::string_view get[] = {"GET", key};
    gets.push_back(redis::resp_command(get, redis::resp_args{}));
  }
  auto docs = co_await pipelined(worker, std::move(gets), 64);
  if (!docs) co_return std::nullopt;
  for (auto& d : *docs)
    if (d.type == redis::reply::kind::string)
      if (auto k = key_from_json(d.str)) out.keys.push_back(std::move(*k));
  co_return out;
}

awaitable<team_lookup> redis_store::get_team(unsigned worker, std::string name) {
  const std::string key = cfg_.key_prefix + "team:" + name;
  const std::string_view argv[] = {"GET", key};
  auto r = co_await conn(worker).command(argv);
  team_lookup out;
  if (!ok_reply(r)) co_return out;
  out.reachable = true;
  if (r->type == redis::reply::kind::string) {
    out.team = team_from_json(r->str);
    out.stored = r->str;
  }
  co_return out;
}

awaitable<write_result> redis_store::replace_team(unsigned worker, team_record t, std::string stored) {
  co_return co_await compare_and_set(worker, cfg_.key_prefix + "team:" + t.name, stored, team_to_json(t),
                                     cfg_.key_prefix + "teams", t.name);
}

awaitable<bool> redis_store::put_team(unsigned worker, team_record t) {
  const std::string key = cfg_.key_prefix + "team:" + t.name, index = cfg_.key_prefix + "teams";
  const std::string body = team_to_json(t);
  const std::string_view set[] = {"SET", key, body};
  if (!ok_reply(co_await conn(worker).command(set))) co_return false;
  const std::string_view add[] = {"SADD", index, t.name};
  co_return ok_reply(co_await conn(worker).command(add));
}

awaitable<write_result> redis_store::delete_team(unsigned worker, std::string name, std::string stored) {
  const std::string key = cfg_.key_prefix + "team:" + name, index = cfg_.key_prefix + "teams";
  static constexpr std::string_view script =
      "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end redis.call('DEL', KEYS[1]) return 1";
  const std::string_view argv[] = {"EVAL", script, "1", key, stored};
  auto r = co_await conn(worker).command(argv);
  if (!r || r->type != redis::reply::kind::integer) co_return write_result::unreachable;
  if (r->integer != 1) co_return write_result::changed;
  // Removed: so reported whatever the index's answer, so that every replica is told.
  const std::string_view rem[] = {"SREM", index, name};
  if (!ok_reply(co_await conn(worker).command(rem)))
    notice("warn", "a team was deleted but not removed from its listing index (" + index + "): it is listed until removed");
  co_return write_result::written;
}

awaitable<std::optional<std::vector<team_record>>> redis_store::list_teams(unsigned worker) {
  auto docs = co_await members_docs(worker, "team");
  if (!docs) co_return std::nullopt;
  std::vector<team_record> out;
  for (auto& [name, d] : *docs)
    if (auto t = team_from_json(d)) out.push_back(std::move(*t));
  co_return out;
}

awaitable<bool> redis_store::add_usage(unsigned worker, std::vector<usage_row> rows) {
  std::vector<std::string> cmds;
  std::set<std::int64_t> hours;
  for (auto& r : rows) {
    const std::string key = cfg_.key_prefix + "usage:" + std::to_string(r.hour);
    const std::string base = r.team + usage_sep + r.key_id + usage_sep + r.model + usage_sep;
    const std::pair<char, std::int64_t> fields[] = {{'r', std::int64_t(r.requests)},
                                                    {'p', std::int64_t(r.prompt)},
                                                    {'c', std::int64_t(r.completion)},
                                                    {'$', r.cost_nano}};
    for (auto& [f, v] : fields) {
      if (v == 0) continue;
      const std::string field = base + f, amount = std::to_string(v);
      const std::string_view argv[] = {"HINCRBY", key, field, amount};
      cmds.push_back(redis::resp_command(argv, redis::resp_args{}));
    }
    hours.insert(r.hour);
  }
  for (const std::int64_t h : hours) {
    const std::string key = cfg_.key_prefix + "usage:" + std::to_string(h);
    const std::string_view expire[] = {"EXPIRE", key, "34560000"};  // 400 days
    cmds.push_back(redis::resp_command(expire, redis::resp_args{}));
  }
  if (co_await pipelined(worker, std::move(cmds), 64)) co_return true;
  // Unreachable (the connection dropped): the caller keeps the counts for its next try. Refused
  // with the connection up (a key of the wrong type): a retry would add the rows that went
  // through again every second, so this flush's counts are dropped instead, and said.
  if (!conn(worker).up()) co_return false;
  notice("warn", "Redis refused a usage count (a usage:<hour> key of another type?): this second's counts are "
                 "left out of the usage report; budgets and the audit trail are not affected");
  co_return true;
}

awaitable<std::optional<std::vector<usage_row>>> redis_store::usage(unsigned worker, std::int64_t from_hour,
                                                                    std::int64_t to_hour) {
  // One hash per hour: up to 9,600 of them for the longest report (400 days), read 8 at a time
  // (an hour of a large deployment holds thousands of fields: 8 of them stay far within the
  // command timeout, which would drop the admissions sharing this connection).
  std::vector<std::string> cmds;
  for (std::int64_t h = from_hour; h < to_hour; ++h) {
    const std::string key = cfg_.key_prefix + "usage:" + std::to_string(h);
    const std::string_view argv[] = {"HGETALL", key};
    cmds.push_back(redis::resp_command(argv, redis::resp_args{}));
  }
  auto replies = co_await pipelined(worker, std::move(cmds), 8);
  if (!replies) co_return std::nullopt;
  std::vector<usage_row> out;
  for (std::int64_t h = from_hour; h < to_hour; ++h) {
    std::map<std::string, usage_row> rows;
    const auto& e = (*replies)[std::size_t(h - from_hour)].elements;
    for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
      const std::string& field = e[i].str;
      if (field.size() < 2 || field[field.size() - 2] != usage_sep) continue;
      const std::string id = field.substr(0, field.size() - 2);
      auto& row = rows[id];
      if (row.team.empty() && row.model.empty()) {
        const auto a = id.find(usage_sep), b = id.find(usage_sep, a + 1);
        if (a == std::string::npos || b == std::string::npos) continue;
        row.hour = h;
        row.team = id.substr(0, a);
        row.key_id = id.substr(a + 1, b - a - 1);
        row.model = id.substr(b + 1);
      }
      const std::int64_t v = std::strtoll(e[i + 1].str.c_str(), nullptr, 10);
      switch (field.back()) {
        case 'r': row.requests = std::uint64_t(v); break;
        case 'p': row.prompt = std::uint64_t(v); break;
        case 'c': row.completion = std::uint64_t(v); break;
        case '$': row.cost_nano = v; break;
        default: break;
      }
    }
    for (auto& [id, row] : rows) out.push_back(std::move(row));
  }
  co_return out;
}

awaitable<bool> redis_store::publish_invalidation(unsigned worker, std::string id) {
  const std::string channel = cfg_.key_prefix + "invalidate";
  const std::string_view argv[] = {"PUBLISH", channel, id};
  auto r = co_await conn(worker).command(argv);
  const bool ok = r && r->type != redis::reply::kind::error;
  if (!ok)
    notice("warn", "an invalidation could not be published (" + (r ? r->str : r.error().message()) +
                       "): the other replicas drop their copy as auth.key_cache_ms expires");
  co_return ok;
}

void redis_store::on_invalidation(std::function<void(std::string_view)> cb) { listeners_.push_back(std::move(cb)); }

}  // namespace tollgate::policy
