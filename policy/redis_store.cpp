// SPDX-License-Identifier: Apache-2.0
#include "policy/redis_store.hpp"

#include <openssl/sha.h>

#include <algorithm>

#include "policy/scripts.hpp"

namespace tollgate::policy {
namespace {

std::string sha1_hex(std::string_view s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  static constexpr char d[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
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
  return o;
}

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
      admit_sha_(sha1_hex(scripts::admit)),
      settle_sha_(sha1_hex(scripts::settle)) {}

redis_store::~redis_store() { stop(); }

void redis_store::start(const std::vector<executor_t>& workers) {
  for (auto& ex : workers) {
    conns_.push_back(std::make_unique<redis::connection>(ex, client_options(cfg_)));
    conns_.back()->start();
  }
  if (workers.empty()) return;
  sub_ = std::make_unique<redis::connection>(workers.front(), client_options(cfg_));
  sub_->subscribe(cfg_.key_prefix + "invalidate", [this](std::string_view id) {
    for (auto& l : listeners_) l(id);
  });
  sub_->on_state([this](bool up) {
    // Messages sent while we were not subscribed are lost: forget every cached key instead.
    if (up)
      for (auto& l : listeners_) l("*");
  });
  sub_->start();
}

void redis_store::stop() {
  if (sub_) sub_->close();
  for (auto& c : conns_) c->close();
}

bool redis_store::healthy() const {
  for (auto& c : conns_)
    if (!c->up()) return false;
  return !conns_.empty();
}

std::vector<std::string> redis_store::team_keys(const std::string& team) const {
  const std::string base = cfg_.key_prefix + "{" + team + "}:";
  return {base + "l", base + "x"};
}

awaitable<boost::system::result<redis::reply>> redis_store::eval(unsigned worker, const std::string& sha,
                                                                 const std::string& body, std::vector<std::string> keys,
                                                                 std::vector<std::string> args) {
  std::vector<std::string> head{"EVALSHA", sha, std::to_string(keys.size())};
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  for (auto& h : head) argv.push_back(h);
  for (auto& k : keys) argv.push_back(k);
  for (auto& a : args) argv.push_back(a);
  auto r = co_await conn(worker).command(argv);
  if (r && r->type == redis::reply::kind::error && r->str.rfind("NOSCRIPT", 0) == 0) {
    head[0] = "EVAL";
    argv[0] = head[0];
    argv[1] = body;
    r = co_await conn(worker).command(argv);
  }
  co_return r;
}

awaitable<admit_result> redis_store::admit(unsigned worker, const admission& a) {
  std::vector<std::string> args{a.lease, std::to_string(a.tokens), std::to_string(a.cost_nano),
                                std::to_string(a.lease_ms), std::to_string(window_ms_), std::to_string(a.scopes.size())};
  for (auto& s : a.scopes) {
    args.push_back(std::to_string(s.limits.rpm));
    args.push_back(std::to_string(s.limits.tpm));
    args.push_back(std::to_string(s.limits.concurrency));
    args.push_back(std::to_string(s.budget.set() ? s.budget.limit_nano : -1));
    args.push_back(std::string(1, period_kind(s.budget.period)));
  }
  admit_result out;
  if (a.scopes.empty()) co_return out;
  std::vector<std::string> keys;
  for (auto& sc : a.scopes) keys.push_back(cfg_.key_prefix + "{" + sc.team + "}:" + sc.id);
  for (auto& k : team_keys(a.scopes.front().team)) keys.push_back(std::move(k));
  auto r = co_await eval(worker, admit_sha_, std::string(scripts::admit), std::move(keys), std::move(args));
  if (!r || r->type != redis::reply::kind::array || r->elements.empty()) co_return out;  // unavailable
  const auto& e = r->elements;
  if (as_int(e[0]) == 1) {
    out.v = verdict::admitted;
    if (e.size() > 1) out.admitted_at_ms = as_int(e[1]);
    for (std::size_t i = 2; i < e.size(); ++i) out.periods.push_back(e[i].str);
    out.periods.resize(a.scopes.size());
    co_return out;
  }
  if (e.size() < 4) co_return out;
  const std::string& why = e[1].str;
  out.v = why == "rpm" ? verdict::rpm : why == "tpm" ? verdict::tpm : why == "concurrency" ? verdict::concurrency : verdict::budget;
  out.scope = static_cast<std::size_t>(std::max<std::int64_t>(1, as_int(e[2])) - 1);
  out.retry_after_ms = as_int(e[3]);
  co_return out;
}

awaitable<std::vector<settle_result>> redis_store::settle_batch(unsigned worker, std::vector<settlement> batch) {
  std::vector<settle_result> out(batch.size());
  // One script call per team: its keys share one hash tag (one Redis Cluster slot).
  std::vector<bool> done(batch.size(), false);
  for (std::size_t lead = 0; lead < batch.size(); ++lead) {
    if (done[lead] || batch[lead].adm.scopes.empty()) continue;
    const std::string team = batch[lead].adm.scopes.front().team;
    std::vector<std::size_t> members;
    std::vector<std::string> args{std::to_string(window_ms_), ""};
    for (std::size_t c = lead; c < batch.size(); ++c) {
      const settlement& s = batch[c];
      if (done[c] || s.adm.scopes.empty() || s.adm.scopes.front().team != team) continue;
      done[c] = true;
      members.push_back(c);
      const auto& a = s.adm;
      for (std::string v : {a.lease, std::to_string(s.tokens), std::to_string(s.cost_nano),
                            std::to_string(s.admitted_at_ms), std::to_string(a.tokens), std::to_string(a.cost_nano),
                            std::to_string(a.scopes.size())})
        args.push_back(std::move(v));
      for (std::size_t i = 0; i < a.scopes.size(); ++i) {
        const auto& sc = a.scopes[i];
        std::string kinds;
        if (sc.limits.rpm || sc.limits.tpm) kinds += 'r';
        if (sc.limits.concurrency) kinds += 'c';
        if (sc.budget.set()) kinds += 'b';
        args.push_back(sc.id);
        args.push_back(kinds.empty() ? "-" : kinds);
        args.push_back(i < s.periods.size() ? s.periods[i] : std::string());
        const auto soft = sc.budget.set() && sc.budget.soft > 0
                              ? static_cast<std::int64_t>(double(sc.budget.limit_nano) * sc.budget.soft)
                              : 0;
        args.push_back(std::to_string(soft));
      }
    }
    args[1] = std::to_string(members.size());
    std::vector<std::string> keys = team_keys(team);
    for (std::size_t c : members)
      for (auto& sc : batch[c].adm.scopes) {
        std::string k = cfg_.key_prefix + "{" + team + "}:" + sc.id;
        if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(std::move(k));
      }
    auto r = co_await eval(worker, settle_sha_, std::string(scripts::settle), std::move(keys), std::move(args));
    if (!r || r->type != redis::reply::kind::array) continue;  // unreachable: these are retried
    const auto& e = r->elements;
    std::size_t at = 0;
    for (std::size_t c : members) {
      if (at >= e.size()) break;
      settle_result& o = out[c];
      o.reachable = true;
      o.applied = as_int(e[at++]) == 1;
      for (std::size_t i = 0; i < batch[c].adm.scopes.size(); ++i, at += 2) {
        o.spent.push_back(at < e.size() ? as_int(e[at]) : 0);
        o.soft_crossed.push_back(at + 1 < e.size() && as_int(e[at + 1]) == 1);
      }
    }
  }
  co_return out;
}

awaitable<budget_state> redis_store::budget(unsigned worker, const scope_spec& s) {
  budget_state b;
  if (!s.budget.set()) {
    b.reachable = true;
    co_return b;
  }
  // The admission script in read mode (empty lease): same period, same lease expiry, no reservation.
  std::vector<std::string> args{"", "0", "0", "0", std::to_string(window_ms_), "1", "0", "0", "0",
                                std::to_string(s.budget.limit_nano), std::string(1, period_kind(s.budget.period))};
  std::vector<std::string> keys{cfg_.key_prefix + "{" + s.team + "}:" + s.id};
  for (auto& k : team_keys(s.team)) keys.push_back(std::move(k));
  auto r = co_await eval(worker, admit_sha_, std::string(scripts::admit), std::move(keys), std::move(args));
  if (!r || r->type != redis::reply::kind::array || r->elements.size() < 3 || as_int(r->elements[0]) != 2) co_return b;
  b.reachable = true;
  b.spent = as_int(r->elements[1]);
  b.reserved = as_int(r->elements[2]);
  co_return b;
}

awaitable<key_lookup> redis_store::get_key(unsigned worker, std::string id) {
  const std::string key = cfg_.key_prefix + "key:" + id;
  const std::string_view argv[] = {"GET", key};
  auto r = co_await conn(worker).command(argv);
  key_lookup out;
  if (!r || r->type == redis::reply::kind::error) co_return out;
  out.reachable = true;
  if (r->type == redis::reply::kind::string) out.key = key_from_json(r->str);
  co_return out;
}

awaitable<bool> redis_store::put_key(unsigned worker, key_record k) {
  const std::string key = cfg_.key_prefix + "key:" + k.id;
  const std::string body = key_to_json(k);
  const std::string_view argv[] = {"SET", key, body};
  auto r = co_await conn(worker).command(argv);
  co_return r && r->type != redis::reply::kind::error;
}

awaitable<bool> redis_store::publish_invalidation(unsigned worker, std::string id) {
  const std::string channel = cfg_.key_prefix + "invalidate";
  const std::string_view argv[] = {"PUBLISH", channel, id};
  auto r = co_await conn(worker).command(argv);
  co_return r && r->type != redis::reply::kind::error;
}

void redis_store::on_invalidation(std::function<void(std::string_view)> cb) { listeners_.push_back(std::move(cb)); }

}  // namespace tollgate::policy
