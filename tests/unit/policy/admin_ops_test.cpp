// SPDX-License-Identifier: Apache-2.0
// The engine's admin operations. Changes and lookups that race other replicas' changes: a store
// whose reads are answered late (read at once, answered after a delay, as a Redis reply on its
// way) lets a revocation or a deletion land between an operation's read and its write or cache
// fill. And the quota API's overrides of config teams across config reloads.
#include <gtest/gtest.h>

#include <boost/asio/detached.hpp>

#include <functional>
#include <optional>
#include <thread>

#include "config/loader.hpp"
#include "gateway/core/provider.hpp"
#include "policy/keys.hpp"
#include "policy/memory_store.hpp"
#include "policy/policy.hpp"
#include "tests/unit/policy/store_conformance.hpp"

namespace tollgate::policy::testing {
namespace {
using namespace std::chrono;

/// The memory store, with key and team reads answered `read_delay` after they were made, and an
/// invalidation channel the test drives (deliver() as another replica's PUBLISH would).
struct late_store final : store {
  memory_store inner;
  milliseconds read_delay{0};
  std::vector<std::function<void(std::string_view)>> listeners;
  void deliver(std::string_view id) {
    for (auto& l : listeners) l(id);
  }
  awaitable<void> late() {
    if (read_delay.count() == 0) co_return;
    steady_timer_t t(co_await net::this_coro::executor);
    t.expires_after(read_delay);
    co_await t.async_wait();
  }
  std::string_view kind() const override { return "late"; }
  awaitable<admit_result> admit(unsigned, const admission& a) override { co_return inner.admit_now(a); }
  awaitable<std::vector<settle_result>> settle_batch(unsigned, std::vector<settlement> b) override {
    std::vector<settle_result> out;
    for (auto& s : b) out.push_back(inner.settle_now(s));
    co_return out;
  }
  awaitable<budget_state> budget(unsigned, const scope_spec& s) override { co_return inner.budget_now(s); }
  awaitable<bool> renew(unsigned, const admission&, std::int64_t) override { co_return true; }
  int key_reads = 0;
  awaitable<key_lookup> get_key(unsigned w, std::string id) override {
    ++key_reads;
    if (keys_down) co_return key_lookup{};
    key_lookup r = co_await inner.get_key(w, id);  // read now...
    co_await late();                                // ...answered later
    co_return r;
  }
  awaitable<bool> put_key(unsigned w, key_record k) override { co_return co_await inner.put_key(w, std::move(k)); }
  int lose_key_replies = 0;   ///< key writes applied, answered as unreachable (a reply lost to a timeout)
  int drop_key_writes = 0;    ///< key writes not applied, answered as unreachable
  bool keys_down_after = false;  ///< once a write was answered unreachable, key reads fail too
  bool keys_down = false;
  awaitable<write_result> replace_key(unsigned w, key_record k, std::string stored) override {
    if (drop_key_writes > 0) {
      --drop_key_writes;
      keys_down = keys_down_after;
      co_return write_result::unreachable;
    }
    const write_result r = co_await inner.replace_key(w, std::move(k), std::move(stored));
    if (lose_key_replies > 0 && r == write_result::written) {
      --lose_key_replies;
      keys_down = keys_down_after;
      co_return write_result::unreachable;
    }
    co_return r;
  }
  awaitable<std::optional<key_page>> list_keys(unsigned w, key_query q) override { co_return co_await inner.list_keys(w, q); }
  bool teams_down = false;  ///< team reads find the store unreachable
  awaitable<team_lookup> get_team(unsigned w, std::string name) override {
    if (teams_down) co_return team_lookup{};
    team_lookup r = co_await inner.get_team(w, name);
    co_await late();
    co_return r;
  }
  awaitable<bool> put_team(unsigned w, team_record t) override { co_return co_await inner.put_team(w, std::move(t)); }
  awaitable<write_result> replace_team(unsigned w, team_record t, std::string stored) override {
    co_return co_await inner.replace_team(w, std::move(t), std::move(stored));
  }
  awaitable<write_result> delete_team(unsigned w, std::string name, std::string stored) override {
    co_return co_await inner.delete_team(w, name, std::move(stored));
  }
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned w) override { co_return co_await inner.list_teams(w); }
  awaitable<bool> add_usage(unsigned, std::vector<usage_row>) override { co_return true; }
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned, std::int64_t, std::int64_t) override {
    co_return std::nullopt;
  }
  awaitable<bool> publish_invalidation(unsigned, std::string id) override {
    deliver(id);
    co_return true;
  }
  void on_invalidation(std::function<void(std::string_view)> cb) override { listeners.push_back(std::move(cb)); }
};

class AdminOpsTest : public ::testing::Test {
 protected:
  /// The config, with team `search` allowed `search_models` and team `old` declared when `with_old`.
  static std::string yaml(const std::string& search_models = "[\"mock-*\"]", bool with_old = true) {
    return "providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\n"
           "  - {name: other, provider: mock}\nprices:\n  \"*\": {input: 1, output: 1}\nteams:\n"
           "  - name: search\n    models: " + search_models + "\n" + (with_old ? "  - name: old\n" : "") +
           "auth: {key_cache_ms: 30000}\n";
  }
  /// A new config snapshot, as SIGHUP loads one.
  void reload(const std::string& text) {
    auto loaded = config::load_string(text);
    ASSERT_TRUE(loaded) << loaded.error;
    auto s = std::make_shared<snapshot>();
    s->cfg = loaded.config;
    snap = s;
  }
  void SetUp() override {
    reload(yaml());
    eng = std::make_unique<engine>(st, reg, [](auto, auto, auto) {});
    eng->start({executor_t(ioc.get_executor())});
    key_record proto;
    proto.team = "search";
    auto made = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
    ASSERT_TRUE(made);
    key = *made;
  }
  void TearDown() override { eng->stop(); }
  request_context ctx(std::string credential) {
    request_context c;
    c.id = ++next_id;
    c.id_hex = std::to_string(c.id);
    c.snap = snap;
    c.credential = std::move(credential);
    c.endpoint = endpoint_kind::chat_completions;
    c.model = "mock-gpt";
    return c;
  }
  bool accepted(const std::string& credential) {
    auto c = ctx(credential);
    return bool(run_sync(ioc, eng->authenticate(c)));
  }
  /// Another replica revokes the key: its record written disabled, the invalidation delivered.
  void revoke_elsewhere() {
    key_record k = *run_sync(ioc, st->inner.get_key(0, key.record.id)).key;
    k.enabled = false;
    ASSERT_TRUE(run_sync(ioc, st->inner.put_key(0, k)));
    st->deliver(key.record.id);
  }
  /// Runs `op` until its read is on its way (answered 50 ms late), then `meanwhile`, then to its end.
  template <class T>
  T race(awaitable<T> op, const std::function<void()>& meanwhile) {
    st->read_delay = milliseconds(50);
    std::optional<T> out;
    net::co_spawn(ioc, [&]() -> awaitable<void> { out = co_await std::move(op); }, net::detached);
    ioc.restart();
    ioc.run_for(milliseconds(10));
    st->read_delay = milliseconds(0);
    meanwhile();
    ioc.restart();
    const auto deadline = steady_clock::now() + seconds(5);
    while (!out && steady_clock::now() < deadline) ioc.run_one_for(milliseconds(5));
    if (!out) throw std::runtime_error("the raced operation did not finish");
    return std::move(*out);
  }

  std::shared_ptr<late_store> st = std::make_shared<late_store>();
  metrics::registry reg;
  net::io_context ioc;
  std::shared_ptr<const snapshot> snap;
  std::unique_ptr<engine> eng;
  engine::created_key key;
  std::uint64_t next_id = 0;
};

TEST_F(AdminOpsTest, ALookupAnsweredAfterARevocationIsNotCached) {
  // A call's lookup reads the key enabled; the revocation's invalidation arrives before that
  // answer does. The call itself is let through (it started before the revocation), but the
  // answer must not be cached: with a 30 s cache the key would work for 30 s more.
  auto c = ctx(key.full);
  const phase_result first = race(eng->authenticate(c), [&] { revoke_elsewhere(); });
  EXPECT_TRUE(first);
  EXPECT_FALSE(accepted(key.full)) << "the revoked key was accepted from a cache filled by a stale read";
}

TEST_F(AdminOpsTest, ARotationThatReadTheKeyBeforeARevocationDoesNotReEnableIt) {
  auto rotated = race(eng->rotate_key(0, *snap->cfg, key.record.id, 0), [&] {
    auto r = run_sync(ioc, eng->revoke_key(0, *snap->cfg, key.record.id));
    ASSERT_TRUE(r);
  });
  ASSERT_FALSE(rotated) << "a rotation over a revocation";
  EXPECT_NE(rotated.error().find("is revoked"), std::string::npos) << rotated.error();
  const auto stored = run_sync(ioc, st->inner.get_key(0, key.record.id));
  ASSERT_TRUE(stored.key);
  EXPECT_FALSE(stored.key->enabled);
  EXPECT_FALSE(accepted(key.full));
}

TEST_F(AdminOpsTest, AQuotaChangeThatReadTheKeyBeforeARotationKeepsTheNewSecret) {
  // Written over the record it read, the quota change would put back the old digest: the leaked
  // secret working again, the new one refused. It reads again and keeps the rotation.
  engine::created_key fresh;
  engine::quota_patch p;
  p.rpm = 7;
  auto quota = race(eng->set_quota(0, *snap->cfg, "search", key.record.id, p), [&] {
    auto r = run_sync(ioc, eng->rotate_key(0, *snap->cfg, key.record.id, 0));
    ASSERT_TRUE(r);
    fresh = *r;
  });
  ASSERT_TRUE(quota) << quota.error();
  EXPECT_EQ(quota->first.rpm, 7u);
  EXPECT_TRUE(accepted(fresh.full));
  EXPECT_FALSE(accepted(key.full));
}

TEST_F(AdminOpsTest, ARotationWhoseReplyWasLostShowsTheSecretItSet) {
  // The store took the new digest and the reply was lost: read back, the rotation is made and
  // its secret shown (it was a 503, and the key held a secret nobody had).
  st->lose_key_replies = 1;
  auto r = run_sync(ioc, eng->rotate_key(0, *snap->cfg, key.record.id, 0));
  ASSERT_TRUE(r) << r.error();
  EXPECT_TRUE(accepted(r->full));
  EXPECT_FALSE(accepted(key.full)) << "no overlap: the old secret ends";
  // A write that did not land is made again, with a secret of its own.
  st->drop_key_writes = 1;
  auto again = run_sync(ioc, eng->rotate_key(0, *snap->cfg, key.record.id, 0));
  ASSERT_TRUE(again) << again.error();
  EXPECT_TRUE(accepted(again->full));
  EXPECT_FALSE(accepted(r->full));
}

TEST_F(AdminOpsTest, ARotationTheStoreCannotConfirmSaysSoAndWhatToDo) {
  st->lose_key_replies = 1;
  st->keys_down_after = true;
  auto r = run_sync(ioc, eng->rotate_key(0, *snap->cfg, key.record.id, 0));
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().starts_with("the policy store is unavailable")) << r.error();  // (a 503)
  EXPECT_NE(r.error().find("rotate the key again"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("the old one no longer works"), std::string::npos) << r.error();
}

TEST_F(AdminOpsTest, ARevocationWhoseReplyWasLostIsConfirmedByReadingBack) {
  st->lose_key_replies = 1;
  auto r = run_sync(ioc, eng->revoke_key(0, *snap->cfg, key.record.id));
  ASSERT_TRUE(r) << r.error();
  EXPECT_FALSE(r->enabled);
  EXPECT_FALSE(accepted(key.full));
}

TEST_F(AdminOpsTest, AQuotaChangeRacingATeamsDeletionDoesNotBringItBack) {
  team_record t;
  t.name = "ephemeral";
  ASSERT_TRUE(run_sync(ioc, eng->create_team(0, *snap->cfg, t)));
  engine::quota_patch p;
  p.rpm = 3;
  auto quota = race(eng->set_quota(0, *snap->cfg, "ephemeral", "", p), [&] {
    ASSERT_TRUE(run_sync(ioc, eng->delete_team(0, *snap->cfg, "ephemeral")));
  });
  ASSERT_FALSE(quota);
  EXPECT_NE(quota.error().find("no team"), std::string::npos) << quota.error();
  EXPECT_FALSE(run_sync(ioc, st->inner.get_team(0, "ephemeral")).team);
}

TEST_F(AdminOpsTest, OfTwoCreationsOfOneNameAtOnceOneWinsAndKeepsTheKeysItIssued) {
  // Two replicas create team "twin" at once. The first read "no such team" before the second
  // wrote it and issued a key. The first's write is over what it read (nothing): it fails, and
  // the keys of "an earlier team of that name" it listed, which now include the winner's key,
  // stay enabled. Revoking them before the write had won would cut off the winner's callers.
  team_record first;
  first.name = "twin";
  first.limits.rpm = 1;
  engine::created_key winners;
  auto lost = race(eng->create_team(0, *snap->cfg, first), [&] {
    team_record second;
    second.name = "twin";
    second.limits.rpm = 5;
    ASSERT_TRUE(run_sync(ioc, eng->create_team(0, *snap->cfg, second)));
    key_record proto;
    proto.team = "twin";
    auto made = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
    ASSERT_TRUE(made) << made.error();
    winners = *made;
  });
  ASSERT_FALSE(lost) << "two creations of one name both succeeded";
  EXPECT_NE(lost.error().find("already exists"), std::string::npos) << lost.error();
  const auto stored = run_sync(ioc, st->inner.get_team(0, "twin"));
  ASSERT_TRUE(stored.team);
  EXPECT_EQ(stored.team->limits.rpm, 5u) << "the loser's write replaced the winner's team";
  const auto k = run_sync(ioc, st->inner.get_key(0, winners.record.id));
  ASSERT_TRUE(k.key);
  EXPECT_TRUE(k.key->enabled) << "the losing creation revoked the winner's key";
}

TEST_F(AdminOpsTest, AConfigTeamsModelsStayTheFilesAfterAQuotaChange) {
  // The quota API changes limits and budgets; it cannot set a config team's models. An override
  // stored by a quota change must not freeze them: narrowed in the file, they are narrowed.
  engine::quota_patch p;
  p.rpm = 100;
  ASSERT_TRUE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "search", "", p)));
  reload(yaml("[\"other\"]"));
  auto c = ctx(key.full);
  ASSERT_TRUE(run_sync(ioc, eng->authenticate(c)));
  EXPECT_FALSE(c.grant->may_use("mock-gpt")) << "the file narrowed the models; the override kept mock-*";
  EXPECT_TRUE(c.grant->may_use("other"));
  const auto view = run_sync(ioc, eng->resolve_team(0, *snap->cfg, "search"));
  ASSERT_TRUE(view.team);
  EXPECT_EQ(view.source, "config+api");
  EXPECT_EQ(view.team->limits.rpm, 100u);
}

TEST_F(AdminOpsTest, AConfigTeamsOverrideHoldsThroughAnOutageAfterTheCacheWasInvalidated) {
  // An admin cut team `search` off (usd 0). The invalidation channel then reconnects ("*": every
  // replica drops what it cached), and the store is unreachable. The team resolved to the file's
  // quotas alone, with no budget: its config keys were admitted under local limits, uncharged.
  engine::quota_patch p;
  p.rpm = 100;
  p.budget_nano = 0;
  p.period = config::budget_period::total;
  ASSERT_TRUE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "search", "", p)));
  auto before = run_sync(ioc, eng->resolve_team(0, *snap->cfg, "search"));
  ASSERT_TRUE(before.team);
  ASSERT_EQ(before.team->limits.rpm, 100u);
  ASSERT_TRUE(before.team->budget.set());
  st->deliver("*");
  st->teams_down = true;
  auto during = run_sync(ioc, eng->resolve_team(0, *snap->cfg, "search"));
  ASSERT_TRUE(during.team);
  EXPECT_EQ(during.source, "config+api");
  EXPECT_EQ(during.team->limits.rpm, 100u) << "the file's quota, not the admin's override";
  EXPECT_TRUE(during.team->budget.set()) << "the admin's zero budget was lost";
  EXPECT_EQ(during.as_of, steady_clock::time_point{}) << "an answer kept through an outage is not fresh";
  // The same after a change of that team elsewhere, and once the store answers again it is read.
  st->deliver("team:search");
  EXPECT_EQ(run_sync(ioc, eng->resolve_team(0, *snap->cfg, "search")).team->limits.rpm, 100u);
  st->teams_down = false;
  p.rpm = 7;
  ASSERT_TRUE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "search", "", p)));
  EXPECT_EQ(run_sync(ioc, eng->resolve_team(0, *snap->cfg, "search")).team->limits.rpm, 7u);
}

TEST_F(AdminOpsTest, AnAdminReadOfOneKeyLeavesOtherCachedAuthenticationsAlone) {
  // find_key (every admin read of a key) ended every cached authentication of the replica: a
  // dashboard polling one key's budget made each caller's next call read the store again.
  key_record proto;
  proto.team = "search";
  auto other = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(other);
  ASSERT_TRUE(accepted(key.full));
  const int reads = st->key_reads;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run_sync(ioc, eng->find_key(0, *snap->cfg, other->record.id)).key);
  const int after_reads = st->key_reads;
  EXPECT_EQ(after_reads - reads, 3) << "each admin read reads the store";
  const auto full_checks = eng->full_key_checks();
  ASSERT_TRUE(accepted(key.full));
  EXPECT_EQ(st->key_reads, after_reads) << "the first key's record was read again";
  EXPECT_EQ(eng->full_key_checks(), full_checks) << "the first key's cached authentication was dropped (a digest again)";
}

TEST_F(AdminOpsTest, AConfigTeamRemovedFromTheFileDoesNotLiveOnThroughItsOverride) {
  key_record proto;
  proto.team = "old";
  auto made = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(made);
  engine::quota_patch p;
  p.rpm = 100;
  ASSERT_TRUE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "old", "", p)));
  EXPECT_TRUE(accepted(made->full));
  reload(yaml("[\"mock-*\"]", /*with_old=*/false));
  st->deliver("*");  // (a reload drops cached answers as a reconnect does)
  EXPECT_FALSE(accepted(made->full)) << "the team left the file; its override kept its keys working";
  EXPECT_FALSE(run_sync(ioc, eng->resolve_team(0, *snap->cfg, "old")).team);
  const auto teams = run_sync(ioc, eng->list_teams(0, *snap->cfg));
  ASSERT_TRUE(teams);
  for (const auto& t : *teams) EXPECT_NE(t.team->name, "old");
  EXPECT_FALSE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "old", "", p)));
  // The name is free again for an API team of its own.
  team_record fresh;
  fresh.name = "old";
  ASSERT_TRUE(run_sync(ioc, eng->create_team(0, *snap->cfg, fresh)));
  EXPECT_EQ(run_sync(ioc, eng->resolve_team(0, *snap->cfg, "old")).source, "api");
  // ... and the old team's keys are not the new one's.
  EXPECT_FALSE(accepted(made->full)) << "a new team took over the keys of the removed one";
  key_record mine;
  mine.team = "old";
  auto own = run_sync(ioc, eng->create_key(0, *snap->cfg, mine));
  ASSERT_TRUE(own);
  EXPECT_TRUE(accepted(own->full)) << "the new team's own keys work";
}


TEST_F(AdminOpsTest, AnApiTeamWhoseNameTheFileLaterDeclaresGivesWayToTheFilesQuotas) {
  // The file is the authority for the teams it declares: an API team of the same name, created
  // before, had kept its own quotas (here: no budget at all) and dropped the file's silently.
  reload(yaml("[\"mock-*\"]", /*with_old=*/false));
  team_record api;
  api.name = "old";
  api.limits.rpm = 5;
  ASSERT_TRUE(run_sync(ioc, eng->create_team(0, *snap->cfg, api)));
  EXPECT_EQ(run_sync(ioc, eng->resolve_team(0, *snap->cfg, "old")).source, "api");
  reload("providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: mock-gpt, provider: mock}\n"
         "prices:\n  \"*\": {input: 1, output: 1}\nteams:\n  - name: search\n"
         "  - name: old\n    limits: {rpm: 9}\n    budget: {usd: 100, period: monthly}\n"
         "auth: {key_cache_ms: 30000}\n");
  st->deliver("*");
  auto view = run_sync(ioc, eng->resolve_team(0, *snap->cfg, "old"));
  ASSERT_TRUE(view.team);
  EXPECT_EQ(view.source, "config");
  EXPECT_EQ(view.team->limits.rpm, 9u);
  EXPECT_EQ(view.team->budget.limit_nano, 100'000'000'000);
  const auto teams = run_sync(ioc, eng->list_teams(0, *snap->cfg));
  ASSERT_TRUE(teams);
  int listed = 0;
  for (const auto& t : *teams)
    if (t.team->name == "old") {
      ++listed;
      EXPECT_EQ(t.source, "config");
      EXPECT_EQ(t.team->limits.rpm, 9u);
    }
  EXPECT_EQ(listed, 1);
  // A quota change starts from the file's values, not the shadowed API team's.
  engine::quota_patch p;
  p.rpm = 50;
  ASSERT_TRUE(run_sync(ioc, eng->set_quota(0, *snap->cfg, "old", "", p)));
  view = run_sync(ioc, eng->resolve_team(0, *snap->cfg, "old"));
  ASSERT_TRUE(view.team);
  EXPECT_EQ(view.source, "config+api");
  EXPECT_EQ(view.team->limits.rpm, 50u);
  EXPECT_EQ(view.team->budget.limit_nano, 100'000'000'000);
}
TEST_F(AdminOpsTest, AKeyOlderThanItsApiTeamBelongedToAnEarlierTeamOfThatNameAndIsRefused) {
  // A team's deletion revokes the keys its listing shows; one missing from the listing (an index
  // write lost) stays enabled. The team created later under the name must not take it over: the
  // key was made before the team was.
  team_record t;
  t.name = "reborn";
  ASSERT_TRUE(run_sync(ioc, eng->create_team(0, *snap->cfg, t)));
  key_record proto;
  proto.team = "reborn";
  auto made = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(made);
  EXPECT_TRUE(accepted(made->full));
  // The earlier team gone and a new one written in its place, the key left as it was.
  auto old = run_sync(ioc, st->inner.get_team(0, "reborn"));
  ASSERT_TRUE(old.team);
  ASSERT_EQ(run_sync(ioc, st->inner.delete_team(0, "reborn", old.stored)), write_result::written);
  team_record later = *old.team;
  later.created_unix = std::time(nullptr);
  ASSERT_TRUE(run_sync(ioc, st->inner.put_team(0, later)));
  key_record earlier = made->record;  // (made a minute before the new team)
  earlier.created_unix = later.created_unix - 60;
  ASSERT_TRUE(run_sync(ioc, st->inner.put_key(0, earlier)));
  st->deliver("*");
  EXPECT_TRUE(run_sync(ioc, st->inner.get_key(0, made->record.id)).key->enabled);
  EXPECT_FALSE(accepted(made->full)) << "a team created later took over an earlier team's key";
  // A key made for the new team works.
  key_record mine;
  mine.team = "reborn";
  auto own = run_sync(ioc, eng->create_key(0, *snap->cfg, mine));
  ASSERT_TRUE(own);
  EXPECT_TRUE(accepted(own->full));
}
}  // namespace
}  // namespace tollgate::policy::testing
