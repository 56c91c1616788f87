// SPDX-License-Identifier: Apache-2.0
// The policy engine's phases (authenticate, admit, settle) on the memory store, and its
// degraded mode on a store that cannot be reached. No sockets.
#include "policy/policy.hpp"

#include <gtest/gtest.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <thread>

#include <unistd.h>

#include "config/loader.hpp"
#include "gateway/core/provider.hpp"
#include "policy/keys.hpp"
#include "tests/unit/policy/file_size_limit.hpp"
#include "tests/unit/policy/store_conformance.hpp"

namespace tollgate::policy::testing {
namespace {

/// A store that is never reachable (a dead Redis).
struct dead_store final : store {
  std::string reason;  ///< what last_error() says (empty: not known yet)
  std::string_view kind() const override { return "dead"; }
  bool healthy() const override { return false; }
  std::string last_error() const override { return reason; }
  awaitable<admit_result> admit(unsigned, const admission&) override { co_return admit_result{}; }
  awaitable<std::vector<settle_result>> settle_batch(unsigned, std::vector<settlement> b) override {
    co_return std::vector<settle_result>(b.size());
  }
  awaitable<budget_state> budget(unsigned, const scope_spec&) override { co_return budget_state{}; }
  awaitable<bool> renew(unsigned, const admission&, std::int64_t) override { co_return false; }
  awaitable<key_lookup> get_key(unsigned, std::string) override { co_return key_lookup{}; }
  awaitable<bool> put_key(unsigned, key_record) override { co_return false; }
  awaitable<std::optional<key_page>> list_keys(unsigned, key_query) override { co_return std::nullopt; }
  awaitable<team_lookup> get_team(unsigned, std::string) override { co_return team_lookup{}; }
  awaitable<bool> put_team(unsigned, team_record) override { co_return false; }
  awaitable<write_result> delete_team(unsigned, std::string, std::string) override { co_return write_result::unreachable; }
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned) override { co_return std::nullopt; }
  awaitable<bool> add_usage(unsigned, std::vector<usage_row>) override { co_return false; }
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned, std::int64_t, std::int64_t) override {
    co_return std::nullopt;
  }
  awaitable<bool> publish_invalidation(unsigned, std::string) override { co_return false; }
  void on_invalidation(std::function<void(std::string_view)>) override {}
};

/// The memory store behind a link that can go down: settlements fail while `down` (admissions,
/// made before, went through). Uses the default queue_settlement (settle_batch per settlement).
struct flaky_store final : store {
  flaky_store() = default;
  explicit flaky_store(memory_store::clock_fn now) : inner(std::move(now)) {}
  memory_store inner;
  bool down = false;
  bool admit_down = false;  ///< admissions fail too (an outage before the call)
  /// Admissions are made, but their answer is lost (a reset after Redis ran the script): the
  /// engine is told the store is unavailable and that it may have made them.
  bool lose_answers = false;
  /// Admissions are not made, and the engine is told it may have made them (a batch given up on
  /// that Redis never ran).
  bool doubt_only = false;
  int settle_calls = 0;
  int settlements_sent = 0;  ///< in all the settle_batch calls
  int admit_calls = 0;
  std::chrono::milliseconds timeout{50};  ///< command_timeout(): the store's, whatever the config says
  std::string_view kind() const override { return "flaky"; }
  std::chrono::milliseconds command_timeout() const override { return timeout; }
  std::int64_t clock_ms(unsigned w) const override { return inner.clock_ms(w); }
  awaitable<admit_result> admit(unsigned, const admission& a) override {
    ++admit_calls;
    if (lose_answers || doubt_only) {
      if (lose_answers) inner.admit_now(a);
      admit_result r;
      r.in_doubt = true;
      co_return r;
    }
    co_return admit_down ? admit_result{} : inner.admit_now(a);
  }
  bool healthy() const override { return !down; }
  /// Settlements wait this long before their answer (a blackholed Redis, up to its timeout).
  std::chrono::milliseconds hang{0};
  awaitable<std::vector<settle_result>> settle_batch(unsigned, std::vector<settlement> b) override {
    ++settle_calls;
    settlements_sent += int(b.size());
    if (hang.count() > 0) {
      steady_timer_t t(co_await net::this_coro::executor);
      t.expires_after(hang);
      [[maybe_unused]] auto [ec] = co_await t.async_wait();
    }
    std::vector<settle_result> out(b.size());
    if (!down)
      for (std::size_t i = 0; i < b.size(); ++i) out[i] = inner.settle_now(b[i]);
    co_return out;
  }
  awaitable<budget_state> budget(unsigned, const scope_spec& s) override { co_return inner.budget_now(s); }
  awaitable<bool> renew(unsigned, const admission&, std::int64_t) override { co_return true; }
  awaitable<key_lookup> get_key(unsigned w, std::string id) override { co_return co_await inner.get_key(w, id); }
  awaitable<bool> put_key(unsigned, key_record) override { co_return false; }
  awaitable<std::optional<key_page>> list_keys(unsigned, key_query) override { co_return std::nullopt; }
  awaitable<team_lookup> get_team(unsigned w, std::string name) override { co_return co_await inner.get_team(w, name); }
  awaitable<bool> put_team(unsigned, team_record) override { co_return false; }
  awaitable<write_result> delete_team(unsigned, std::string, std::string) override { co_return write_result::unreachable; }
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned) override { co_return std::nullopt; }
  awaitable<bool> add_usage(unsigned, std::vector<usage_row>) override { co_return true; }
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned, std::int64_t, std::int64_t) override {
    co_return std::nullopt;
  }
  awaitable<bool> publish_invalidation(unsigned, std::string) override { co_return true; }
  void on_invalidation(std::function<void(std::string_view)>) override {}
};

const std::string secret = "S3cretS3cretS3cretS3cretS3cretS3cretS3cret1";

/// A refusal's header `name`, empty when it has none.
std::string header(const failure& f, std::string_view name) {
  for (auto& [k, v] : f.headers)
    if (k == name) return v;
  return {};
}
const std::string full_key = "tg_abc123_" + secret;

std::string yaml(const std::string& extra = {}) {
  return R"(providers:
  - {name: mock, type: mock}
models:
  - {name: mock-gpt, provider: mock}
  - {name: other, provider: mock}
  - {name: cache-writer, provider: mock}
prices:
  "*": {input: 1000, output: 2000}
  cache-writer: {input: 1000, output: 2000, cache_write: 3000}
teams:
  - name: search
    models: ["mock-*"]
    limits: {rpm: 2}
  - name: rich
    budget: {usd: 0.030, period: total, soft: 0.5}
  - name: spiffe
    identities: ["spiffe://corp/ns/x/sa/api"]
  - name: tight
    limits: {rpm: 1, tpm: 20}
server:
  tls: {cert_file: unused.pem, key_file: unused.key, client_ca_file: unused-ca.pem}
keys:
  - {id: abc123, team: search, digest: ")" +
         digest_secret(secret, "") + R"("}
  - {id: old1, team: search, digest: ")" +
         digest_secret(secret, "") + R"(", expires: 2020-01-01}
  - {id: off1, team: search, enabled: false, digest: ")" +
         digest_secret(secret, "") + R"("}
  - {id: rich1, team: rich, digest: ")" +
         digest_secret(secret, "") + R"("}
  - {id: tight1, team: tight, digest: ")" +
         digest_secret(secret, "") + R"("}
)" + extra;
}

class EngineTest : public ::testing::Test {
 protected:
  void make(const std::string& extra = {}, std::shared_ptr<store> st = nullptr) { make_from(yaml(extra), std::move(st)); }
  /// `journal`: a settlement journal file to open before start (empty: none).
  /// `workers`: how many workers the engine has (all on `ioc`; a call's is its ctx().worker);
  /// `degraded_idle`: engine::degraded_idle.
  void make_from(const std::string& text, std::shared_ptr<store> st, const std::string& journal = {},
                 unsigned workers = 1, std::chrono::milliseconds degraded_idle = std::chrono::milliseconds(10'000)) {
    auto loaded = config::load_string(text);
    ASSERT_TRUE(loaded) << loaded.error;
    auto s = std::make_shared<snapshot>();
    s->cfg = loaded.config;
    snap = s;
    if (!st) st = std::make_shared<memory_store>();
    eng = std::make_unique<engine>(st, reg, [this](std::string_view lvl, std::string_view msg, std::string_view extra_json) {
      logs.push_back(std::string(lvl) + " " + std::string(msg) + " " + std::string(extra_json));
    });
    if (!journal.empty()) eng->open_journal(journal);
    eng->degraded_idle(degraded_idle);
    eng->start(std::vector<executor_t>(workers, executor_t(ioc.get_executor())));
  }
  request_context ctx(std::string credential, std::string model = "mock-gpt") {
    request_context c;
    c.id = ++next_id;
    c.id_hex = std::to_string(c.id);
    c.snap = snap;
    c.credential = std::move(credential);
    c.endpoint = endpoint_kind::chat_completions;
    c.model = std::move(model);
    c.prompt_estimate = 5;
    c.max_output_tokens = 5;
    return c;
  }
  /// Whether one release (of an admission in doubt) has been taken by the store.
  bool released() { return reg.expose().find("tollgate_policy_settlements_total{result=\"released\"} 1") != std::string::npos; }
  /// Runs the engine's loops until `done` holds (at most 5 s).
  template <class Done>
  void run_until(Done done) {
    ioc.restart();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  }
  phase_result auth(request_context& c) { return run_sync(ioc, eng->authenticate(c)); }
  phase_result admit(request_context& c) { return run_sync(ioc, eng->admit(c)); }
  /// Authenticates, checks the model grant and admits, as the pipeline does; the error code
  /// value, or 0 when admitted.
  errc call(request_context& c) {
    auto a = auth(c);
    if (!a) return static_cast<errc>(a.error().code.value());
    if (auto g = engine::check_model_grant(c); !g) return static_cast<errc>(g.error().code.value());
    auto r = admit(c);
    return r ? errc::ok : static_cast<errc>(r.error().code.value());
  }
  /// The provider answered 200 with this usage, and the call is handed to settlement (not run).
  void settle_answered(request_context& c, std::uint64_t prompt, std::uint64_t completion) {
    c.status = 200;
    c.upstream_answered = true;
    c.usage = {prompt, completion, 0, 0, true};
    eng->settle(c, executor_t(ioc.get_executor()));
  }
  /// An engine on `flaky`; one call of team rich admitted and answered ($0.004), whose settlement
  /// the store refuses from then on (flaky->down) while it still answers admissions.
  void settlement_refused(const std::shared_ptr<flaky_store>& flaky) {
    make("", flaky);
    auto c = ctx("tg_rich1_" + secret);
    ASSERT_EQ(call(c), errc::ok);
    flaky->down = true;
    settle_answered(c, 2, 1);
  }
  /// A finished, billed call: usage as reported, then settlement runs to the end.
  void finish(request_context& c, std::uint64_t prompt, std::uint64_t completion) {
    settle_answered(c, prompt, completion);
    ioc.restart();
    while (eng->pending() > 0) ioc.run_one_for(std::chrono::milliseconds(5));
  }

  /// Four calls admitted during an outage under budgets: fail_open (and `store_extra`'s
  /// rate-limit policy, counted as `decision`): the budget is not checked then, but what the calls
  /// cost reaches it afterwards, exactly, and is enforced again.
  void outage_calls_are_charged_later(const std::string& store_extra, const std::string& decision) {
    auto flaky = std::make_shared<flaky_store>();
    make("store: {on_unavailable: {budgets: fail_open" + store_extra + "}}\n", flaky);
    flaky->down = flaky->admit_down = true;
    for (int i = 0; i < 4; ++i) {
      auto c = ctx("tg_rich1_" + secret);
      ASSERT_EQ(call(c), errc::ok) << i;
      settle_answered(c, 2, 1);  // 4,000,000 nano-USD each
    }
    std::string m = reg.expose();
    EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"outage\"} 4"), std::string::npos) << m;
    EXPECT_NE(m.find("tollgate_policy_decisions_total{decision=\"" + decision + "\"} 4"), std::string::npos) << m;
    EXPECT_EQ(eng->pending(), 1);  // the four summed into one charge
    ioc.restart();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (flaky->settle_calls < 2 && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
    EXPECT_GE(flaky->settle_calls, 2);  // sealed after 100 ms, then tried while the store is down
    EXPECT_EQ(eng->pending(), 1);
    const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
    EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).spent, 0);
    flaky->down = flaky->admit_down = false;
    ioc.restart();
    while (eng->pending() > 0 && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
    EXPECT_EQ(eng->pending(), 0);
    auto b = run_sync(ioc, eng->budget(0, team));
    EXPECT_EQ(b.spent, 16'000'000);
    EXPECT_EQ(b.reserved, 0);
    m = reg.expose();
    EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"applied\"} 1"), std::string::npos) << m;
    // $0.016 of $0.030 crossed the soft threshold (50%): reported as for any settlement.
    EXPECT_EQ(std::count_if(logs.begin(), logs.end(),
                            [](auto& l) { return l.find("budget soft threshold crossed") != std::string::npos; }),
              1);
    // Enforced again: $0.016 spent, and a call's worst case (5 + 5 tokens, $0.015) no longer fits.
    auto next = ctx("tg_rich1_" + secret);
    EXPECT_EQ(call(next), errc::budget_exceeded);
  }

  /// A charge-only settlement of team rich's budget (period "all"), admitted at `at_ms`, and its
  /// journal line.
  static settlement rich_charge(std::string lease, std::int64_t at_ms, std::int64_t nano) {
    auto loaded = config::load_string(yaml());
    EXPECT_TRUE(loaded) << loaded.error;
    const config::team_config& rich = *loaded.config->find_team("rich");
    settlement s;
    s.charge_only = true;
    s.adm.lease = std::move(lease);
    s.adm.scopes = {scope_spec{"t", "rich", rich.limits, rich.budget}};
    s.periods = {"all"};
    s.cost_nano = nano;
    s.admitted_at_ms = at_ms;
    return s;
  }
  static std::string journal_line(const settlement& s) { return "{\"add\":" + settlement_to_json(s) + "}\n"; }
  /// Team rich's spend in the store.
  std::int64_t rich_spent() {
    const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
    return run_sync(ioc, eng->budget(0, team)).spent;
  }

  /// `n` calls of team rich admitted and answered ($0.004 each) while the store is down, `apart`
  /// from each other (the io_context runs meanwhile: seals and retry rounds happen).
  void outage_calls(int n, std::chrono::milliseconds apart) {
    for (int i = 0; i < n; ++i) {
      auto c = ctx("tg_rich1_" + secret);
      ASSERT_EQ(call(c), errc::ok) << i;
      settle_answered(c, 2, 1);  // 4,000,000 nano-USD
      ioc.restart();
      const auto until = std::chrono::steady_clock::now() + apart;
      while (std::chrono::steady_clock::now() < until) ioc.run_one_for(std::chrono::milliseconds(5));
    }
  }
  /// Stops this engine, starts another on `journal` with a store that answers (`back`, or a new
  /// one: enough for charge-only settlements, which need no lease), lets it replay, and returns
  /// team rich's spend.
  std::int64_t replayed_spend(const std::string& journal, std::shared_ptr<flaky_store> back = nullptr) {
    eng->stop();
    eng.reset();
    if (!back) back = std::make_shared<flaky_store>();
    make_from(yaml("store: {on_unavailable: {budgets: fail_open}}\n"), back, journal);
    ioc.restart();
    run_until([&] { return eng->pending() == 0; });
    const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
    return run_sync(ioc, eng->budget(0, team)).spent;
  }

  metrics::registry reg;
  net::io_context ioc;
  std::shared_ptr<const snapshot> snap;
  std::unique_ptr<engine> eng;
  std::vector<std::string> logs;
  std::uint64_t next_id = 0;
};

TEST(CostTest, AnAbsurdTokenCountSaturatesInsteadOfWrappingNegative) {
  config::price_config p{"m", 1000, 1000, 2000, 1000, 0};
  EXPECT_EQ(cost_nano(p, 0, 0, std::numeric_limits<std::uint64_t>::max(), 0), 1'000'000'000'000'000'000);
  EXPECT_EQ(cost_nano(p, std::numeric_limits<std::uint64_t>::max(), 0, 0, 0), 1'000'000'000'000'000'000);
  EXPECT_EQ(worst_cost_nano(p, std::numeric_limits<std::uint64_t>::max(), 0), 1'000'000'000'000'000'000);
}

TEST_F(EngineTest, AProvidersAnswerIsBilledEvenWhenTheCallerGotAnError) {
  // The provider answered 200 with its usage; the gateway then answered 503 (response moderation
  // failed closed), or 502 (it could not translate the answer): the provider charged all the same.
  make();
  auto c = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(c), errc::ok);
  c.upstream_answered = true;
  c.upstream_status = 200;
  c.status = 503;
  c.usage = {2, 1, 0, 0, true};  // $0.004
  eng->settle(c, executor_t(ioc.get_executor()));
  ioc.restart();
  while (eng->pending() > 0) ioc.run_one_for(std::chrono::milliseconds(5));
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).spent, 4'000'000);
}

TEST_F(EngineTest, EachOfNAnswersIsReservedAsLongAsMaxTokens) {
  // rich: $0.030 budget at $1000/M input and $2000/M output. 5 prompt + 5 output tokens cost
  // $0.015; with n = 10 the worst case is 5 + 50 tokens, $0.105: more than the whole budget.
  make();
  auto ten = ctx("tg_rich1_" + secret);
  ten.choices = 10;
  EXPECT_EQ(call(ten), errc::budget_exceeded);
  auto one = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(one), errc::ok);
}

TEST(CostTest, PricesArePerMillionTokensAndRoundUpToANanoDollar) {
  config::price_config p{"m", 0.15, 0.075, 0.60, 0.1875, 0};
  // 1000 prompt tokens at $0.15/M = $0.00015 = 150000 nano; 500 output at $0.60/M = 300000 nano.
  EXPECT_EQ(cost_nano(p, 1000, 0, 500, 0), 450'000);
  // 400 of the prompt were cached: 600*0.15 + 400*0.075 = 90000 + 30000 nano.
  EXPECT_EQ(cost_nano(p, 1000, 400, 0, 0), 120'000);
  // 200 more were written to the cache (Bedrock): 400*0.15 + 400*0.075 + 200*0.1875.
  EXPECT_EQ(cost_nano(p, 1000, 400, 0, 200), 60'000 + 30'000 + 37'500);
  // Counts that overlap past the prompt are clipped to it, never wrapped.
  EXPECT_EQ(cost_nano(p, 100, 80, 0, 50), 80 * 75 + 20 * 187.5);
  // Admission reserves every prompt token at the dearest prompt price (here the cache write), so a
  // call whose prompt is written to the cache never settles above its reservation.
  EXPECT_EQ(worst_cost_nano(p, 1000, 500), 187'500 + 300'000);
  EXPECT_GE(worst_cost_nano(p, 1000, 500), cost_nano(p, 1000, 0, 500, 1000));
  // One token of a $0.0001/M model is 0.1 nano: rounded up, never free.
  config::price_config cheap{"c", 0.0001, 0.0001, 0.0001, 0.0001, 0};
  EXPECT_EQ(cost_nano(cheap, 1, 0, 0, 0), 1);
  EXPECT_EQ(cost_nano(cheap, 0, 0, 0, 0), 0);
  EXPECT_EQ(worst_cost_nano(cheap, 1, 0), 1);
  EXPECT_EQ(worst_cost_nano(cheap, 0, 0), 0);
}

TEST_F(EngineTest, AdmissionReservesThePromptAtItsDearestPriceSoACacheWriteNeverSettlesAbove) {
  make();
  const scope_spec rich{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  auto c = ctx("tg_rich1_" + secret, "cache-writer");
  ASSERT_EQ(call(c), errc::ok);
  // 5 prompt tokens at the cache-write price ($3000/M) and 5 output tokens ($2000/M).
  EXPECT_EQ(run_sync(ioc, eng->budget(0, rich)).reserved, 5 * 3'000'000 + 5 * 2'000'000);
  // The provider wrote the whole prompt to its cache: the cost is the reservation, not above it.
  c.status = 200;
  c.upstream_answered = true;
  c.usage = {5, 5, 0, 5, true};
  eng->settle(c, executor_t(ioc.get_executor()));
  ioc.restart();
  while (eng->pending() > 0) ioc.run_one_for(std::chrono::milliseconds(5));
  const auto b = run_sync(ioc, eng->budget(0, rich));
  EXPECT_EQ(b.spent, 25'000'000);
  EXPECT_EQ(b.reserved, 0);
}

TEST_F(EngineTest, MissingMalformedUnknownAndWrongKeysAre401WithoutEchoingThem) {
  make();
  for (std::string cred : {std::string(), std::string("sk-not-ours"), std::string("tg_nope_") + secret,
                           std::string("tg_abc123_wrongwrongwrong")}) {
    auto c = ctx(cred);
    auto r = auth(c);
    ASSERT_FALSE(r) << cred;
    EXPECT_EQ(r.error().code, errc::invalid_api_key) << cred;
    if (!cred.empty()) {
      EXPECT_EQ(r.error().message.find(cred), std::string::npos);
    }
  }
  auto good = ctx(full_key);
  ASSERT_TRUE(auth(good));
  EXPECT_EQ(good.identity.team, "search");
  EXPECT_EQ(good.identity.key_id, "abc123");
}

TEST_F(EngineTest, RevokedAndExpiredKeysAreRefusedWithTheirReason) {
  make();
  auto off = ctx("tg_off1_" + secret);
  auto r = auth(off);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("revoked"), std::string::npos);
  auto old = ctx("tg_old1_" + secret);
  r = auth(old);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos);
}

TEST_F(EngineTest, CreatedKeysWorkUntilRevoked) {
  make();
  key_record proto;
  proto.team = "search";
  proto.name = "ci";
  auto created = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(created) << created.error();
  ASSERT_TRUE(parse_key(created->full));
  EXPECT_EQ(created->record.digest.find(parse_key(created->full)->secret), std::string::npos);
  auto c1 = ctx(created->full);
  ASSERT_TRUE(auth(c1));
  ASSERT_TRUE(run_sync(ioc, eng->revoke_key(0, *snap->cfg, created->record.id)));
  auto c2 = ctx(created->full);
  auto r = auth(c2);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("revoked"), std::string::npos);
  EXPECT_FALSE(run_sync(ioc, eng->revoke_key(0, *snap->cfg, "abc123")));  // a config key: edit the file
  key_record stray;
  stray.team = "nosuchteam";
  EXPECT_FALSE(run_sync(ioc, eng->create_key(0, *snap->cfg, stray)));
}

TEST_F(EngineTest, AKeysNextCallsReuseItsCheckUntilSomethingChanges) {
  make("auth: {key_cache_ms: 60000}\n");
  auto first = ctx(full_key);
  ASSERT_TRUE(auth(first));
  ASSERT_EQ(eng->full_key_checks(), 1u);
  for (int i = 0; i < 3; ++i) {
    auto again = ctx(full_key);
    ASSERT_TRUE(auth(again));
    EXPECT_EQ(again.identity.team, "search");
    EXPECT_EQ(again.identity.key_id, "abc123");
    EXPECT_FALSE(again.identity.anonymous);
    EXPECT_EQ(again.grant, first.grant);  // the same grant, not a copy
  }
  EXPECT_EQ(eng->full_key_checks(), 1u);
  EXPECT_NE(reg.expose().find("tollgate_auth_total{result=\"key\"} 4\n"), std::string::npos);  // every call counted

  // Another secret under the same id is checked in full (and refused); the right one still passes.
  auto wrong = ctx("tg_abc123_" + std::string(secret.size(), 'x'));
  ASSERT_FALSE(auth(wrong));
  EXPECT_EQ(eng->full_key_checks(), 2u);
  auto right = ctx(full_key);
  ASSERT_TRUE(auth(right));
  EXPECT_EQ(eng->full_key_checks(), 2u);

  // A new config: checked again, and its changes apply (the team may no longer use mock-*).
  auto loaded = config::load_string(std::regex_replace(yaml("auth: {key_cache_ms: 60000}\n"),
                                                       std::regex(R"(models: \["mock-\*"\])"), "models: [\"other\"]"));
  ASSERT_TRUE(loaded) << loaded.error;
  auto s = std::make_shared<snapshot>();
  s->cfg = loaded.config;
  snap = s;
  auto reloaded = ctx(full_key);
  ASSERT_TRUE(auth(reloaded));
  EXPECT_EQ(eng->full_key_checks(), 3u);
  EXPECT_FALSE(reloaded.grant->may_use("mock-gpt"));
  EXPECT_TRUE(reloaded.grant->may_use("other"));

  // Any invalidation (here a revocation of another key) ends every cached check.
  key_record proto;
  proto.team = "search";
  auto created = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(created) << created.error();
  auto other = ctx(created->full);
  ASSERT_TRUE(auth(other));
  const auto checks = eng->full_key_checks();
  ASSERT_TRUE(run_sync(ioc, eng->revoke_key(0, *snap->cfg, created->record.id)));
  auto after = ctx(full_key);
  ASSERT_TRUE(auth(after));
  EXPECT_EQ(eng->full_key_checks(), checks + 1);
  auto revoked = ctx(created->full);
  EXPECT_FALSE(auth(revoked));
}

TEST_F(EngineTest, TryAuthenticateAnswersWithoutTheStoreOnlyWhatNeedsNoLookup) {
  make("auth: {key_cache_ms: 60000}\n");
  // A key not checked yet, and a certificate name that maps to a team: both need the store.
  auto first = ctx(full_key);
  EXPECT_FALSE(eng->try_authenticate(first).has_value());
  EXPECT_EQ(first.grant, nullptr);
  auto cert = ctx("");
  cert.peer_names = {"spiffe://corp/ns/x/sa/api"};
  EXPECT_FALSE(eng->try_authenticate(cert).has_value());
  EXPECT_EQ(eng->full_key_checks(), 0u);  // nothing counted or looked up on the way

  // Decided at once: no credential (401), a malformed one (401).
  auto none = ctx("");
  auto r = eng->try_authenticate(none);
  ASSERT_TRUE(r.has_value());
  ASSERT_FALSE(*r);
  EXPECT_EQ(r->error().code, errc::invalid_api_key);
  auto bad = ctx("tg_not-a-key");
  r = eng->try_authenticate(bad);
  ASSERT_TRUE(r.has_value());
  ASSERT_FALSE(*r);
  EXPECT_EQ(r->error().code, errc::invalid_api_key);

  // Once checked in full, the same key is answered at once, with the same grant...
  ASSERT_TRUE(auth(first));
  auto again = ctx(full_key);
  r = eng->try_authenticate(again);
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(*r);
  EXPECT_EQ(again.grant, first.grant);
  EXPECT_EQ(again.identity.key_id, "abc123");
  // ...but another secret under its id is not: that goes to the full check (and is refused).
  auto wrong = ctx("tg_abc123_" + std::string(secret.size(), 'x'));
  EXPECT_FALSE(eng->try_authenticate(wrong).has_value());
  EXPECT_FALSE(auth(wrong));
  EXPECT_EQ(eng->full_key_checks(), 2u);
}

TEST_F(EngineTest, ACachedCheckEndsWithItsTtlAndTheKeysExpiry) {
  make("auth: {key_cache_ms: 50}\n");
  auto a = ctx(full_key);
  ASSERT_TRUE(auth(a));
  auto b = ctx(full_key);
  ASSERT_TRUE(auth(b));
  EXPECT_EQ(eng->full_key_checks(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto c = ctx(full_key);
  ASSERT_TRUE(auth(c));
  EXPECT_EQ(eng->full_key_checks(), 2u);

  // A key expiring in a second or two, cached for a minute: refused once it has expired. (Two
  // seconds ahead, not one: with one, a second boundary crossed before the first checks, as a
  // stalled host made happen in CI, found the key already expired.)
  make("auth: {key_cache_ms: 60000}\n");
  key_record proto;
  proto.team = "search";
  proto.expires_unix = std::time(nullptr) + 2;
  auto created = run_sync(ioc, eng->create_key(0, *snap->cfg, proto));
  ASSERT_TRUE(created) << created.error();
  auto d = ctx(created->full);
  ASSERT_TRUE(auth(d));
  auto e = ctx(created->full);
  ASSERT_TRUE(auth(e));
  EXPECT_EQ(eng->full_key_checks(), 1u);
  while (std::time(nullptr) < proto.expires_unix) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto f = ctx(created->full);
  auto r = auth(f);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos);
}

TEST(SecretTagTest, SameSecretSameTagOtherSecretOtherTag) {
  const auto a = secret_tag("S3cretS3cretS3cretS3cretS3cretS3cretS3cret1");
  const auto b = secret_tag("S3cretS3cretS3cretS3cretS3cretS3cretS3cret2");
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
  // The context is started again for each tag: the same secret after another gives the same tag.
  EXPECT_EQ(secret_tag("S3cretS3cretS3cretS3cretS3cretS3cretS3cret1"), a);
  EXPECT_NE(secret_tag(""), a);
  EXPECT_EQ(secret_tag(""), secret_tag(""));
  // Another thread has its own context under the same process key.
  std::optional<std::array<unsigned char, 16>> there;
  std::thread([&] { there = secret_tag("S3cretS3cretS3cretS3cretS3cretS3cretS3cret1"); }).join();
  EXPECT_EQ(there, a);
}

TEST_F(EngineTest, AKeysExpiryIsReadOnTheStoresClock) {
  // Redis's clock (as the store estimates it) reads 2100; this process's reads today. A key that
  // expires in 2099 has expired for every replica that shares that Redis, whatever its own clock.
  const std::int64_t store_now = 4'102'444'800'000;  // 2100-01-01T00:00:00Z
  auto flaky = std::make_shared<flaky_store>([&] { return store_now; });
  make_from(yaml() + "  - {id: late1, team: search, expires: 2099-01-01, digest: \"" + digest_secret(secret, "") + "\"}\n",
            flaky);
  auto c = ctx("tg_late1_" + secret);
  const auto r = auth(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("expired"), std::string::npos) << r.error().message;
}

TEST_F(EngineTest, ClientCertificateNamesMapToTheirTeam) {
  make();
  auto c = ctx("");
  c.peer_names = {"dns.example", "spiffe://corp/ns/x/sa/api"};
  ASSERT_TRUE(auth(c));
  EXPECT_EQ(c.identity.team, "spiffe");
  EXPECT_EQ(c.identity.subject, "spiffe://corp/ns/x/sa/api");
  auto stranger = ctx("");
  stranger.peer_names = {"spiffe://corp/ns/y/sa/api"};
  EXPECT_FALSE(auth(stranger));
  // An SDK needs some API key string: a placeholder beside the certificate does not hide it.
  auto placeholder = ctx("unused");
  placeholder.peer_names = {"spiffe://corp/ns/x/sa/api"};
  ASSERT_TRUE(auth(placeholder));
  EXPECT_EQ(placeholder.identity.team, "spiffe");
  // A Tollgate key beside it is checked as a key: a wrong one is refused, not replaced.
  auto wrong = ctx("tg_abc123_" + std::string(43, 'x'));
  wrong.peer_names = {"spiffe://corp/ns/x/sa/api"};
  EXPECT_FALSE(auth(wrong));
}

TEST_F(EngineTest, ModelsOutsideTheGrantAre403AndUnlisted) {
  make();
  auto c = ctx(full_key, "other");
  EXPECT_EQ(call(c), errc::permission_denied);
  EXPECT_FALSE(engine::may_list(c, "other"));
  EXPECT_TRUE(engine::may_list(c, "mock-gpt"));
}

TEST_F(EngineTest, AnEmptyModelListIsEveryModelTheTeamAllowsAndNotNone) {
  // (docs/configuration.md: left out or [] both mean every model; the admin API lists it as [].)
  make("  - {id: all1, team: search, models: [], digest: \"" + digest_secret(secret, "") + "\"}\n"
       "  - {id: all2, team: rich, models: [], digest: \"" + digest_secret(secret, "") + "\"}\n");
  auto within = ctx("tg_all1_" + secret);
  EXPECT_EQ(call(within), errc::ok);
  auto beyond_team = ctx("tg_all1_" + secret, "other");
  EXPECT_EQ(call(beyond_team), errc::permission_denied) << "an empty key list widened the team's mock-*";
  auto any = ctx("tg_all2_" + secret, "other");
  EXPECT_EQ(call(any), errc::ok);
}

TEST_F(EngineTest, RateLimitRefusalCarriesRetryAfter) {
  make();
  for (int i = 0; i < 2; ++i) {
    auto c = ctx(full_key);
    EXPECT_EQ(call(c), errc::ok);
  }
  auto c = ctx(full_key);
  ASSERT_TRUE(auth(c));
  auto r = admit(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::rate_limited);
  bool retry_after = false;
  for (auto& [k, v] : r.error().headers)
    if (k == "Retry-After") retry_after = std::stoi(v) >= 1 && std::stoi(v) <= 62;  // window plus one bucket (2 s)
  EXPECT_TRUE(retry_after);
}

TEST_F(EngineTest, ACallLargerThanATokenLimitIsToldNoWaitHelpsEvenWhenARateLimitAlsoRefuses) {
  make();
  // tight: rpm 1, tpm 20. One small call fills the rpm; a call reserving 105 tokens is over both,
  // with waits about as long, but no wait ever lets 105 tokens into 20.
  auto small = ctx("tg_tight1_" + secret);
  ASSERT_EQ(call(small), errc::ok);
  auto big = ctx("tg_tight1_" + secret);
  big.max_output_tokens = 100;
  ASSERT_TRUE(auth(big));
  auto r = admit(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::rate_limited);
  EXPECT_NE(r.error().message.find("tokens per minute"), std::string::npos) << r.error().message;
  bool no_retry = false, retry_after = false;
  for (auto& [k, v] : r.error().headers) {
    no_retry = no_retry || (k == "x-should-retry" && v == "false");
    retry_after = retry_after || k == "Retry-After";
  }
  EXPECT_TRUE(no_retry);
  EXPECT_FALSE(retry_after) << "no wait helps: none is given";
  // Counted as what it was answered.
  const std::string m = reg.expose();
  EXPECT_NE(m.find("tollgate_policy_decisions_total{decision=\"tpm\"} 1"), std::string::npos) << m;
  EXPECT_EQ(m.find("tollgate_policy_decisions_total{decision=\"rpm\"} 1"), std::string::npos) << m;
}

TEST_F(EngineTest, BudgetChargesActualCostAndRefusesWhenSpentWithNoRetry) {
  make();
  // rich: $0.030 = 30e6 nano. Prices $1000/M in, $2000/M out are 1e6 and 2e6 nano a token, so
  // each call reserves 5 prompt + 5 output tokens = 15e6 nano: two fit, the third does not.
  auto c1 = ctx("tg_rich1_" + secret), c2 = ctx("tg_rich1_" + secret), c3 = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c1), errc::ok);
  EXPECT_EQ(call(c2), errc::ok);
  ASSERT_TRUE(auth(c3));
  auto r = admit(c3);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::budget_exceeded);
  // Refused while c1 and c2 hold the budget: their settlements may free some, so a wait is given.
  EXPECT_EQ(header(r.error(), "Retry-After"), "1");
  EXPECT_EQ(header(r.error(), "x-should-retry"), "");
  // c1 used less than reserved: 2 prompt + 1 completion = 4e6 nano. The soft threshold (50%) is crossed by c2.
  finish(c1, 2, 1);
  finish(c2, 5, 5);
  auto b = run_sync(ioc, eng->budget(0, scope_spec{"t", "rich", {}, snap->cfg->find_team("rich")->budget}));
  EXPECT_EQ(b.spent, 4'000'000 + 15'000'000);
  EXPECT_EQ(b.reserved, 0);
  // Now spent: 19e6 of 30e6, and a call's worst case is 15e6. No wait helps.
  auto c4 = ctx("tg_rich1_" + secret);
  ASSERT_TRUE(auth(c4));
  auto spent = admit(c4);
  ASSERT_FALSE(spent);
  EXPECT_EQ(spent.error().code, errc::budget_exceeded);
  EXPECT_EQ(header(spent.error(), "x-should-retry"), "false");
  EXPECT_EQ(header(spent.error(), "Retry-After"), "");
  std::size_t soft = 0;
  for (auto& l : logs) soft += l.find("budget soft threshold crossed") != std::string::npos;
  EXPECT_EQ(soft, 1u);
  for (auto& l : logs) EXPECT_EQ(l.find(secret), std::string::npos) << l;
}

TEST_F(EngineTest, UnreachableStoreFailsBudgetsClosedAndLimitsLocally) {
  make("store: {replicas: 2}\n", std::make_shared<dead_store>());
  // A config key still authenticates; the budget team's call fails closed.
  auto rich = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(rich), errc::policy_store_unavailable);
  // search has rpm 2 shared by 2 replicas: 1 per instance while degraded.
  auto a = ctx(full_key), b = ctx(full_key);
  EXPECT_EQ(call(a), errc::ok);
  EXPECT_EQ(call(b), errc::rate_limited);
  // A key that only the store knows cannot be checked: 503, not 401.
  auto unknown = ctx("tg_zzz999_" + secret);
  EXPECT_EQ(call(unknown), errc::policy_store_unavailable);
  // One log line for the transition into degraded mode, not one per call.
  std::size_t degraded = 0;
  for (auto& l : logs) degraded += l.find("degraded mode") != std::string::npos;
  EXPECT_EQ(degraded, 1u);
}

TEST_F(EngineTest, ADegradedReplicaTellsACallOverItsShareButWithinTheLimitToRetry) {
  make("store: {replicas: 2}\n", std::make_shared<dead_store>());
  // tight: tpm 20, 10 per replica while degraded. 15 tokens fit the whole limit once the store is
  // back: a wait, not "never". 105 tokens never fit: no wait.
  const auto refusal_for = [&](std::uint64_t max_tokens) {
    auto c = ctx("tg_tight1_" + secret);
    c.max_output_tokens = max_tokens;
    EXPECT_TRUE(auth(c));
    auto r = admit(c);
    EXPECT_FALSE(r);
    return r ? failure{} : r.error();
  };
  const failure wait = refusal_for(10);
  EXPECT_EQ(wait.code, errc::rate_limited);
  EXPECT_EQ(header(wait, "Retry-After"), "1");
  EXPECT_EQ(header(wait, "x-should-retry"), "");
  EXPECT_NE(wait.message.find("10 of 20"), std::string::npos) << wait.message;
  const failure never = refusal_for(100);
  EXPECT_EQ(never.code, errc::rate_limited);
  EXPECT_EQ(header(never, "x-should-retry"), "false");
  EXPECT_EQ(header(never, "Retry-After"), "");
  EXPECT_NE(never.message.find("limit 20,"), std::string::npos) << "the whole limit: " << never.message;
}

TEST_F(EngineTest, AStoreThatFlipsCallByCallLogsOnePairOfLinesNotOnePerFlip) {
  // Some calls refused by the store and others answered (a Redis Cluster node that serves some
  // teams' slots only): each refusal starts a degraded episode and each answer ends it. The log
  // says so once, and again only when the reason changes or 10 s have passed.
  auto flaky = std::make_shared<flaky_store>();
  std::string y = yaml("store: {replicas: 2}\n");
  y.replace(y.find("limits: {rpm: 2}"), 16, "limits: {rpm: 1000}");
  make_from(y, flaky);
  auto count = [&](std::string_view what) {
    return std::count_if(logs.begin(), logs.end(), [&](auto& l) { return l.find(what) != std::string::npos; });
  };
  for (int i = 0; i < 5; ++i) {
    flaky->admit_down = true;
    auto down = ctx(full_key);
    EXPECT_EQ(call(down), errc::ok);  // rpm-only team: the local fallback
    flaky->admit_down = false;
    auto up = ctx(full_key);
    EXPECT_EQ(call(up), errc::ok);
  }
  EXPECT_EQ(count("policy store unreachable: degraded mode"), 1);
  EXPECT_EQ(count("policy store reachable again"), 1);
  EXPECT_NE(reg.expose().find("\ntollgate_policy_store_degraded 0"), std::string::npos);  // the gauge follows
}

TEST_F(EngineTest, TheDegradedGaugeHoldsWhileAnyWorkerFindsTheStoreUnreachable) {
  // Each worker has its own link to the store: one may be down while another's answers. The gauge
  // is 1 while any worker's last call found the store unreachable, not whichever call came last.
  // A worker with no call for the idle time (10 s; 2.5 s here) no longer counts; one whose calls
  // keep finding the store unreachable keeps counting, however its connection looks.
  auto flaky = std::make_shared<flaky_store>();
  std::string y = yaml("store: {replicas: 2}\n");
  y.replace(y.find("limits: {rpm: 2}"), 16, "limits: {rpm: 1000}");
  make_from(y, flaky, {}, 2, std::chrono::milliseconds(2500));
  const auto gauge = [&] {
    const std::string m = reg.expose();
    const std::string name = "\ntollgate_policy_store_degraded ";
    const auto at = m.find(name);
    return at == std::string::npos ? -1 : std::stoi(m.substr(at + name.size()));
  };
  const auto run_for = [&](int ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    run_until([&] { return std::chrono::steady_clock::now() >= until; });
  };
  const auto call_on = [&](unsigned worker, bool store_down) {
    flaky->admit_down = store_down;
    auto c = ctx(full_key);
    c.worker = worker;
    EXPECT_EQ(call(c), errc::ok);  // rpm-only team: the local fallback when down
  };
  EXPECT_EQ(gauge(), 0);
  call_on(1, true);
  EXPECT_EQ(gauge(), 1);
  call_on(0, false);
  EXPECT_EQ(gauge(), 1) << "worker 1 found the store unreachable; worker 0's answer says nothing of it";
  // Worker 1's next degraded call keeps it counting: checked 3.6 s after the first (more than the
  // idle time, plus a 1 s tick) and 1.6 s after the second.
  run_for(2000);
  call_on(1, true);
  run_for(1600);
  EXPECT_EQ(gauge(), 1) << "worker 1's calls keep finding the store unreachable (the last 1.6 s ago)";
  run_until([&] { return gauge() == 0; });
  EXPECT_EQ(gauge(), 0) << "worker 1 has had no call for the idle time";
  call_on(1, true);
  EXPECT_EQ(gauge(), 1);
  call_on(1, false);
  EXPECT_EQ(gauge(), 0) << "worker 1's next call was answered";
}

TEST_F(EngineTest, DegradedModesReasonIsLoggedOnceEvenWhenLearntLater) {
  // The first call degrades before the store knows why (its first connection still being made);
  // the reason, once known, gets one line of its own, and later calls add none.
  auto dead = std::make_shared<dead_store>();
  make("store: {replicas: 2}\n", dead);
  auto lines = [&] {
    std::vector<std::string> out;
    for (auto& l : logs)
      if (l.find("policy store unreachable") != std::string::npos) out.push_back(l);
    return out;
  };
  auto a = ctx(full_key);
  EXPECT_EQ(call(a), errc::ok);  // rpm-only team: admitted by the local fallback
  ASSERT_EQ(lines().size(), 1u);
  EXPECT_NE(lines()[0].find("degraded mode"), std::string::npos);
  EXPECT_EQ(lines()[0].find("reason"), std::string::npos);
  dead->reason = "TLS handshake with 127.0.0.1: certificate verify failed";
  for (int i = 0; i < 3; ++i) {
    auto c = ctx(full_key);
    call(c);
  }
  ASSERT_EQ(lines().size(), 2u);
  EXPECT_NE(lines()[1].find("\"reason\":\"TLS handshake with 127.0.0.1: certificate verify failed\""), std::string::npos)
      << lines()[1];
}

TEST_F(EngineTest, SettlementsTheStoreDidNotTakeAreRetriedUntilItAnswersAndChargedOnce) {
  auto flaky = std::make_shared<flaky_store>();
  make("", flaky);
  auto c = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(c), errc::ok);
  flaky->down = true;
  settle_answered(c, 2, 1);
  ioc.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (flaky->settle_calls < 2 && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  EXPECT_GE(flaky->settle_calls, 2);  // the first attempt and at least one retry (after 100 ms)
  EXPECT_EQ(eng->pending(), 1);
  EXPECT_NE(reg.expose().find("tollgate_policy_settlements_total{result=\"retried\"}"), std::string::npos);
  flaky->down = false;
  while (eng->pending() > 0 && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  EXPECT_EQ(eng->pending(), 0);
  const std::string m = reg.expose();
  EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"applied\"} 1"), std::string::npos) << m;
  auto b = run_sync(ioc, eng->budget(0, scope_spec{"t", "rich", {}, snap->cfg->find_team("rich")->budget}));
  EXPECT_EQ(b.spent, 4'000'000);  // 2 prompt + 1 completion tokens, charged once
  EXPECT_EQ(b.reserved, 0);
}

TEST_F(EngineTest, AnAdmissionWhoseAnswerWasLostIsReleasedOnceTheStoreAnswers) {
  // Redis ran the script, reserved the call's worst case against the budget, and the reply was
  // lost (a reset right after). Without a release, that hold stayed until the lease expired (5
  // minutes): a team near its budget was refused meanwhile for a call that never ran.
  auto flaky = std::make_shared<flaky_store>();
  make("", flaky);
  flaky->lose_answers = true;
  auto c = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c), errc::policy_store_unavailable);  // budgets fail closed by default
  flaky->lose_answers = false;
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).reserved, 15'000'000);  // 5 prompt + 5 output tokens
  EXPECT_EQ(eng->pending(), 0) << "shutdown does not wait for a release";
  run_until([&] { return released(); });
  EXPECT_TRUE(released());
  const auto b = run_sync(ioc, eng->budget(0, team));
  EXPECT_EQ(b.reserved, 0);
  EXPECT_EQ(b.spent, 0);  // nothing charged: the call never ran
  const std::string m = reg.expose();
  EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"applied\"} 0"), std::string::npos) << m;
  // The budget covers two calls' worst case: with the hold gone, two more are admitted.
  auto d = ctx("tg_rich1_" + secret), e = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(d), errc::ok);
  EXPECT_EQ(call(e), errc::ok);
}

TEST_F(EngineTest, AReleaseForAnAdmissionTheStoreNeverMadeChangesNothing) {
  // The usual case of doubt: the batch was given up on and never ran (or ran past its deadline
  // and reserved nothing). The release finds no lease: no charge, the other call's hold kept,
  // and not counted as lost or as a duplicate settlement.
  auto flaky = std::make_shared<flaky_store>();
  make("", flaky);
  auto held = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(held), errc::ok);
  flaky->doubt_only = true;
  auto c = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c), errc::policy_store_unavailable);
  flaky->doubt_only = false;
  run_until([&] { return released(); });
  EXPECT_TRUE(released());
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  const auto b = run_sync(ioc, eng->budget(0, team));
  EXPECT_EQ(b.reserved, 15'000'000);  // the first call's hold, untouched
  EXPECT_EQ(b.spent, 0);
  const std::string m = reg.expose();
  EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"released\"} 1"), std::string::npos) << m;
  EXPECT_EQ(m.find("tollgate_policy_settlements_total{result=\"lost\"}"), std::string::npos) << m;
  EXPECT_NE(m.find("tollgate_policy_settlements_total{result=\"duplicate\"} 0"), std::string::npos) << m;
}

TEST_F(EngineTest, AReleaseWaitsForTheStoresOwnTimeoutNotTheReloadedConfigs) {
  // The store was made with a 400 ms timeout; a reload lowered store.redis.timeout_ms to 20 (the
  // store keeps its own). A release sent before the store's deadline can reach Redis before the
  // batch it releases, find no lease, and leave that batch's hold for the whole lease.
  auto flaky = std::make_shared<flaky_store>();
  flaky->timeout = std::chrono::milliseconds(400);
  make_from(yaml("store: {redis: {timeout_ms: 20}}\n"), flaky);
  ASSERT_EQ(snap->cfg->store.redis.timeout_ms, 20u);
  flaky->doubt_only = true;
  auto c = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c), errc::policy_store_unavailable);
  flaky->doubt_only = false;
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(150));
  EXPECT_EQ(flaky->settle_calls, 0) << "released before the store's own deadline";
  run_until([&] { return released(); });
  EXPECT_TRUE(released());
}

TEST_F(EngineTest, AReleaseTheStoreNeverTookIsDroppedAtShutdownWithoutALostLine) {
  // It charges nothing, and the store lets the lease go by itself: not a lost settlement (whose
  // error line tells an operator that a cost went missing), and never written to the journal.
  auto flaky = std::make_shared<flaky_store>();
  const std::string dir = ::testing::TempDir() + "/release-journal-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  make_from(yaml(), flaky, dir + "/j");
  flaky->lose_answers = true;
  flaky->down = true;  // the release cannot reach the store either
  auto c = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c), errc::policy_store_unavailable);
  run_until([&] { return flaky->settle_calls >= 1; });
  ASSERT_GE(flaky->settle_calls, 1);  // tried, and refused
  EXPECT_EQ(eng->pending(), 0) << "shutdown does not wait for a release";
  const std::string m = reg.expose();
  EXPECT_NE(m.find("tollgate_policy_settlement_journal_open 0"), std::string::npos) << "not journaled\n" << m;
  eng->abandon_pending(0);
  EXPECT_EQ(eng->pending(), 0);
  const int tried = flaky->settle_calls;
  ioc.restart();
  ioc.run_for(std::chrono::milliseconds(400));  // the retry loop wakes and finds nothing left to send
  EXPECT_EQ(flaky->settle_calls, tried);
  for (const auto& l : logs) EXPECT_EQ(l.find("lost"), std::string::npos) << l;
  EXPECT_EQ(std::filesystem::file_size(dir + "/j"), 0u);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, ALongOutageKeepsOneChargeWaitingPerScopeSetAndTriesOneSettlementARound) {
  // Budgets fail_open, the store down: eight calls 150 ms apart, each charge sealed on its own
  // (every 100 ms). The first charge is sent, and fails; the later ones take sums into one charge
  // that waits unsent, rather than a new charge per seal (which grew memory, the journal and
  // every retry round with the outage). Each round tries one settlement while the store is down.
  auto flaky = std::make_shared<flaky_store>();
  make("store: {on_unavailable: {budgets: fail_open}}\n", flaky);
  flaky->down = flaky->admit_down = true;
  outage_calls(8, std::chrono::milliseconds(150));
  EXPECT_GE(flaky->settle_calls, 2);
  EXPECT_EQ(flaky->settlements_sent, flaky->settle_calls) << "a round sent more than its probe to a store that is down";
  EXPECT_LE(eng->pending(), 3) << "a charge per seal";  // the one sent, the one taking sums, one being summed
  flaky->down = flaky->admit_down = false;
  ioc.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (eng->pending() > 0 && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  EXPECT_EQ(eng->pending(), 0);
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).spent, 32'000'000);  // every cent, once
}

TEST_F(EngineTest, AnOutageChargeThatTookSumsIsJournaledWithThemAndReplayedWhole) {
  // With a journal, a waiting charge that takes later sums is journaled again each time: the
  // next start replays its last figures, so the budget gets every call's cost, once.
  auto flaky = std::make_shared<flaky_store>();
  const std::string dir = ::testing::TempDir() + "/outage-sums-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  make_from(yaml("store: {on_unavailable: {budgets: fail_open}}\n"), flaky, dir + "/j");
  flaky->down = flaky->admit_down = true;
  outage_calls(5, std::chrono::milliseconds(150));
  EXPECT_LE(eng->pending(), 3);
  eng->abandon_pending(0);
  for (const auto& l : logs) EXPECT_EQ(l.find("lost"), std::string::npos) << l;
  EXPECT_EQ(replayed_spend(dir + "/j"), 20'000'000);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, ASettlementOfARetryRoundOnTheWireAtShutdownIsLoggedLostNotDropped) {
  // The store refuses the settlement, and the retry round's send hangs (a blackholed Redis, up to
  // its timeout) when the drain gives up: abandon_pending must find the settlement in that round
  // and log it lost with its cost, not leave it to the drain's count-only line; the round's
  // late answer then changes nothing.
  auto flaky = std::make_shared<flaky_store>();
  settlement_refused(flaky);
  ASSERT_EQ(eng->pending(), 1);
  flaky->hang = std::chrono::milliseconds(1500);
  ioc.restart();
  run_until([&] { return flaky->settle_calls >= 2; });  // the first attempt, then the round's, hanging
  ASSERT_GE(flaky->settle_calls, 2);
  eng->abandon_pending(0);
  EXPECT_EQ(eng->pending(), 0);
  const auto lost = [&] {
    return std::count_if(logs.begin(), logs.end(), [](auto& l) { return l.find("settlement lost at shutdown") != std::string::npos; });
  };
  EXPECT_EQ(lost(), 1);
  ioc.restart();
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2000);
  while (std::chrono::steady_clock::now() < until) ioc.run_one_for(std::chrono::milliseconds(5));
  EXPECT_EQ(eng->pending(), 0) << "counted twice";
  EXPECT_EQ(lost(), 1);
  EXPECT_EQ(flaky->settle_calls, 2) << "the round went on after shutdown gave it up";
}

TEST_F(EngineTest, ASettlementTheJournalCouldNotTakeIsJournaledAtShutdownNotLost) {
  // The disk is full (a file size limit here) when the settlement's first attempt fails: its
  // journal line is refused, and it waits in memory. At shutdown the disk has room again: it is
  // journaled then, and replayed at the next start, rather than logged lost.
  auto flaky = std::make_shared<flaky_store>();
  const std::string dir = ::testing::TempDir() + "/journal-full-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  make_from(yaml(), flaky, dir + "/j");
  auto c = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(c), errc::ok);
  flaky->down = true;
  const auto refused = [&] {
    return std::any_of(logs.begin(), logs.end(), [](auto& l) { return l.find("cannot write") != std::string::npos; });
  };
  {
    testing::file_size_limit full(0);
    settle_answered(c, 2, 1);  // 4,000,000 nano-USD
    ioc.restart();
    run_until(refused);
  }
  ASSERT_TRUE(refused());
  eng->abandon_pending(0);
  for (const auto& l : logs) EXPECT_EQ(l.find("lost"), std::string::npos) << l;
  EXPECT_TRUE(std::any_of(logs.begin(), logs.end(), [](auto& l) { return l.find("kept in the journal") != std::string::npos; }));
  flaky->down = false;  // the same store (which holds the call's lease), back
  EXPECT_EQ(replayed_spend(dir + "/j", flaky), 4'000'000);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, AnOutageChargeNotSealedYetAtShutdownIsJournaledNotLost) {
  // Calls cut at the drain's end are charged (budgets: fail_open, the store down) moments before
  // the workers give up: the charge is not sealed yet (100 ms). With a journal it is kept there
  // for the next start, like any other, and no cost is logged lost.
  auto flaky = std::make_shared<flaky_store>();
  const std::string dir = ::testing::TempDir() + "/outage-journal-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  make_from(yaml("store: {on_unavailable: {budgets: fail_open}}\n"), flaky, dir + "/j");
  flaky->down = flaky->admit_down = true;
  auto c = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(c), errc::ok);
  settle_answered(c, 2, 1);  // 4,000,000 nano-USD
  EXPECT_EQ(eng->pending(), 1);
  eng->abandon_pending(0);  // at once: before the seal
  EXPECT_EQ(eng->pending(), 0);
  for (const auto& l : logs) EXPECT_EQ(l.find("lost"), std::string::npos) << l;
  EXPECT_TRUE(std::any_of(logs.begin(), logs.end(), [](auto& l) { return l.find("kept in the journal") != std::string::npos; }));
  // The next start replays it: the budget is charged once the store is back.
  EXPECT_EQ(replayed_spend(dir + "/j"), 4'000'000);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, SettlementsBackingOffGoAtOnceWhenAnAdmissionShowsTheStoreIsBack) {
  // A settlement the store could not take holds its call's slot and budget hold there until it
  // lands. Its retries back off (up to 1 s); the first admission the store answers ends the wait.
  auto flaky = std::make_shared<flaky_store>();
  ASSERT_NO_FATAL_FAILURE(settlement_refused(flaky));
  run_until([&] { return flaky->settle_calls >= 5; });  // 100, 200, 400, 800 ms: now a 1 s wait
  ASSERT_GE(flaky->settle_calls, 5);
  EXPECT_EQ(eng->pending(), 1);
  flaky->down = false;
  const auto back = std::chrono::steady_clock::now();
  auto next = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(next), errc::ok);
  run_until([&] { return eng->pending() == 0; });
  EXPECT_EQ(eng->pending(), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - back, std::chrono::milliseconds(400)) << "waited out the backoff";
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).spent, 4'000'000);
}

TEST_F(EngineTest, AJournaledChargeOlderThanADayIsLoggedNotReplayed) {
  // The store remembers a charge-only settlement's charge for a day: replayed later, one it had
  // taken (its answer lost before the stop) would be charged twice. Too old: logged with its
  // cost, not sent. A fresh one in the same file is replayed and charged.
  const std::string dir = ::testing::TempDir() + "/old-journal-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream j(dir + "/j");
    j << journal_line(rich_charge("old-o0-1", wall_ms() - 25ll * 3'600'000, 7'000'000))
      << journal_line(rich_charge("new-o0-2", wall_ms() - 60'000, 4'000'000));
  }
  make_from(yaml(), nullptr, dir + "/j");
  run_until([&] { return eng->pending() == 0; });
  EXPECT_EQ(eng->pending(), 0);
  EXPECT_EQ(rich_spent(), 4'000'000);
  EXPECT_EQ(std::count_if(logs.begin(), logs.end(),
                          [](auto& l) { return l.find("too old to replay") != std::string::npos && l.find("old-o0-1") != std::string::npos; }),
            1);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, AJournaledSettlementThatOutlivesTheStoresDayWhileRetriedIsLoggedNotSent) {
  // Replayed a moment before the day limit, with the store down: once past it, the settlement is
  // no longer sent (the store may have forgotten the charge or the lease), but logged with its
  // cost and marked done in the journal.
  const std::string dir = ::testing::TempDir() + "/aging-journal-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  {
    std::ofstream j(dir + "/j");
    j << journal_line(rich_charge("aging-o0-1", wall_ms() - 23ll * 3'600'000 + 1'500, 7'000'000));  // 1.5 s inside the limit
  }
  auto flaky = std::make_shared<flaky_store>();
  flaky->down = true;
  make_from(yaml(), flaky, dir + "/j");
  EXPECT_EQ(eng->pending(), 1);
  ioc.restart();
  run_until([&] { return eng->pending() == 0; });
  EXPECT_EQ(eng->pending(), 0);
  EXPECT_GE(flaky->settle_calls, 1) << "sent while it was young enough";
  EXPECT_EQ(std::count_if(logs.begin(), logs.end(),
                          [](auto& l) { return l.find("too old to send") != std::string::npos && l.find("aging-o0-1") != std::string::npos; }),
            1);
  eng->stop();
  eng.reset();
  EXPECT_EQ(std::filesystem::file_size(dir + "/j"), 0u) << "still open in the journal";
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, AnOutageChargeNeverJoinsAChargeReplayedFromTheJournal) {
  // Charges replayed from the journal while the store is down: a retry round sends only its
  // probe, so the others wait unsent. One of them may have been taken by the store in the last
  // run (its answer lost): a later outage sum must not join it under its lease, where the store
  // would find it charged already and drop the sum.
  const std::string dir = ::testing::TempDir() + "/replayed-charge-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const settlement probed = rich_charge("probed-o0-1", wall_ms() - 60'000, 4'000'000),
                   taken = rich_charge("taken-o0-2", wall_ms() - 60'000, 4'000'000);
  {
    std::ofstream j(dir + "/j");
    j << journal_line(probed) << journal_line(taken);
  }
  auto flaky = std::make_shared<flaky_store>();
  ASSERT_TRUE(flaky->inner.settle_now(taken).applied);  // taken in the last run
  flaky->down = flaky->admit_down = true;
  make_from(yaml("store: {on_unavailable: {budgets: fail_open}}\n"), flaky, dir + "/j");
  ioc.restart();
  run_until([&] { return flaky->settle_calls >= 1; });  // the first round: its probe only
  EXPECT_EQ(flaky->settlements_sent, 1);
  outage_calls(1, std::chrono::milliseconds(300));  // sealed while "taken" waits unsent
  flaky->down = flaky->admit_down = false;
  ioc.restart();
  run_until([&] { return eng->pending() == 0; });
  EXPECT_EQ(rich_spent(), 12'000'000) << "the outage call's cost was dropped";
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, ASettlementTheStoreKeepsRefusingIsNudgedOncePerBackoffNotPerAdmission) {
  // The store answers admissions but refuses one team's settlements (a script error on one
  // scope): each admission must not end the backoff again, or that settlement would be retried
  // at the admissions' rate, for ever when it is journaled.
  auto flaky = std::make_shared<flaky_store>();
  ASSERT_NO_FATAL_FAILURE(settlement_refused(flaky));
  const auto start = std::chrono::steady_clock::now();
  const int admits_before = flaky->admit_calls;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(1500)) {
    // Another team's calls, each answered by the store (admitted, or refused for its rpm of 2:
    // an answer all the same, which is what could nudge the retry).
    auto next = ctx("tg_abc123_" + secret, "mock-gpt");
    (void)call(next);
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(5));
  }
  // The calls did reach the store (else no nudge could come, and the bound below proves nothing).
  EXPECT_GE(flaky->admit_calls - admits_before, 100);
  // Alone: 1 + rounds at 100, 200, 400, 800 ms; one nudge may add one. Per admission: ~300.
  EXPECT_LE(flaky->settle_calls, 8) << "retried at the admissions' pace";
  EXPECT_GE(flaky->settle_calls, 4);
  EXPECT_EQ(eng->pending(), 1);
}

TEST_F(EngineTest, AnAdmissionRefusedWithoutDoubtSendsNoRelease) {
  auto flaky = std::make_shared<flaky_store>();
  make("", flaky);
  flaky->admit_down = true;  // not connected: nothing was sent
  auto c = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(c), errc::policy_store_unavailable);
  EXPECT_EQ(eng->pending(), 0);
  EXPECT_EQ(reg.expose().find("tollgate_policy_settlements_total{result=\"released\"}"), std::string::npos);
}

TEST_F(EngineTest, UnreachableStoreWithFailOpenBudgetsAdmitsUnderLocalLimits) {
  make("store: {on_unavailable: {budgets: fail_open}}\n", std::make_shared<dead_store>());
  auto rich = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(rich), errc::ok);
}

TEST_F(EngineTest, RateLimitsFailClosedRefuseOnlyCallsThatHaveARateLimit) {
  // Budgets fail_open, rate limits fail_closed: a team with a budget and no rate limit has nothing
  // that fails closed, so it is admitted (its budget unchecked, charged later); a team with an rpm
  // is refused.
  make("store: {on_unavailable: {budgets: fail_open, rate_limits: fail_closed}}\n", std::make_shared<dead_store>());
  auto rich = ctx("tg_rich1_" + secret);
  EXPECT_EQ(call(rich), errc::ok);
  auto limited = ctx(full_key, "mock-gpt");
  EXPECT_EQ(call(limited), errc::policy_store_unavailable);
}

TEST_F(EngineTest, CallsAdmittedUnderLocalLimitsDuringAnOutageAreChargedToTheBudgetOnceTheStoreIsBack) {
  outage_calls_are_charged_later("", "local");
}

TEST_F(EngineTest, CallsAdmittedUncheckedDuringAnOutageAreChargedToTheBudgetOnceTheStoreIsBack) {
  outage_calls_are_charged_later(", rate_limits: fail_open", "open");
}

TEST_F(EngineTest, AnOutageCallIsChargedToTheBudgetPeriodOfTheStoresClockNotTheGateways) {
  // The store's clock (Redis's, as estimated) reads the last second of a day that this process's
  // clock has not reached: the call is charged to that day, as an admission Redis had made then.
  const std::int64_t store_now = 1'927'670'399'000;  // 2031-01-31T23:59:59Z
  auto flaky = std::make_shared<flaky_store>([&] { return store_now; });
  std::string y = yaml("store: {on_unavailable: {budgets: fail_open}}\n");
  y.replace(y.find("period: total"), 13, "period: daily");
  make_from(y, flaky);
  flaky->admit_down = true;
  auto c = ctx("tg_rich1_" + secret);
  ASSERT_EQ(call(c), errc::ok);
  flaky->admit_down = false;
  finish(c, 2, 1);  // 4,000,000 nano-USD; sealed after 100 ms, then sent
  const scope_spec team{"t", "rich", {}, snap->cfg->find_team("rich")->budget};
  EXPECT_EQ(run_sync(ioc, eng->budget(0, team)).spent, 4'000'000);
}

TEST_F(EngineTest, OpenGatewayIgnoresForeignCredentialsButChecksTollgateKeys) {
  make("auth: {required: false}\n");
  auto none = ctx("");
  EXPECT_EQ(call(none), errc::ok);
  auto sdk_placeholder = ctx("sk-placeholder");
  EXPECT_EQ(call(sdk_placeholder), errc::ok);
  auto revoked = ctx("tg_off1_" + secret);
  EXPECT_EQ(call(revoked), errc::invalid_api_key);
  // Anything shaped like a Tollgate key is checked as one, even one that does not parse: a
  // revoked key with a character added does not pass as anonymous.
  for (const std::string& mangled : {"tg_off1_" + secret + "!", std::string("tg_off1_"), "tg_" + secret}) {
    auto m = ctx(mangled);
    EXPECT_EQ(call(m), errc::invalid_api_key) << mangled;
  }
}

TEST(KeysTest, KeysInAPathAreMaskedToTheirIds) {
  auto masked = [](std::string p) {
    mask_keys_in_path(p);
    return p;
  };
  const std::string key = "tg_abc123DEF456_" + std::string(43, 'S');
  EXPECT_EQ(masked("/admin/v1/keys/" + key), "/admin/v1/keys/abc123DEF456");
  EXPECT_EQ(masked("/admin/v1/keys/" + key + "/rotate"), "/admin/v1/keys/abc123DEF456/rotate");
  EXPECT_EQ(masked("/v1/" + key + "/x"), "/v1/abc123DEF456/x");  // any segment, any listener
  EXPECT_EQ(masked("/admin/v1/keys/tg%5Fabc123DEF456%5F" + std::string(43, 'S')), "/admin/v1/keys/abc123DEF456");
  // "tg" itself percent-encoded: no "tg" in the raw path, a key all the same.
  EXPECT_EQ(masked("/admin/v1/keys/%74g_abc123DEF456_" + std::string(43, 'S')), "/admin/v1/keys/abc123DEF456");
  EXPECT_EQ(masked("/x/t%67_abc123DEF456_" + std::string(43, 'S') + "/y"), "/x/abc123DEF456/y");
  // Not a key's shape, but a key's start: what follows its id is dropped.
  EXPECT_EQ(masked("/admin/v1/keys/" + key + ".json"), "/admin/v1/keys/tg_abc123DEF456_[masked]");
  // Ids, other paths and a bare prefix stay as they are.
  EXPECT_EQ(masked("/admin/v1/keys/abc123DEF456"), "/admin/v1/keys/abc123DEF456");
  EXPECT_EQ(masked("/v1/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(masked("/tg_/x/"), "/tg_/x/");
  EXPECT_EQ(masked(""), "");
  EXPECT_EQ(masked("/%zz/tg"), "/%zz/tg");
}

TEST(KeysTest, AnHmacOpenSslRefusesMatchesNoSecretAndMakesNoDigest) {
  // A FIPS provider refuses HMAC keys under 112 bits: HMAC() then returns NULL and fills nothing.
  // The digest it would have made must match no secret (a zeroed buffer matched every one against
  // a stored digest of zeros), no digest may be made, and a config with that pepper is refused.
  const std::string zeros = "hmac-sha256:" + std::string(64, '0');
  const std::string good = digest_secret("s3cret", "short-pepper");
  struct restore {
    detail::hmac_function saved = detail::hmac_fn;
    ~restore() { detail::hmac_fn = saved; }
  } on_exit;
  detail::hmac_fn = [](const ::evp_md_st*, const void*, int, const unsigned char*, std::size_t, unsigned char*,
                       unsigned int*) -> unsigned char* { return nullptr; };
  EXPECT_FALSE(verify_secret("anything", zeros, "short-pepper"));
  EXPECT_FALSE(verify_secret("s3cret", good, "short-pepper"));
  EXPECT_THROW(digest_secret("s3cret", "short-pepper"), std::runtime_error);
  EXPECT_FALSE(pepper_usable("short-pepper"));
  EXPECT_EQ(digest_secret("abc", "").substr(0, 7), "sha256:");  // SHA-256 without a pepper is unaffected
  detail::hmac_fn = on_exit.saved;
  EXPECT_TRUE(pepper_usable("short-pepper"));
  EXPECT_TRUE(verify_secret("s3cret", good, "short-pepper"));
}

TEST(KeysTest, ParseDigestVerify) {
  auto k = generate_key();
  EXPECT_EQ(k.full, "tg_" + k.id + "_" + k.secret);
  EXPECT_EQ(k.id.size(), 12u);
  EXPECT_EQ(k.secret.size(), 43u);
  auto p = parse_key(k.full);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->id, k.id);
  EXPECT_EQ(p->secret, k.secret);
  for (auto bad : {"", "tg_", "tg__x", "tg_id_", "sk_id_secret", "tg_i-d_secret", "tg_id_sec ret"}) EXPECT_FALSE(parse_key(bad)) << bad;
  // Length bounds: an id of at most 64 characters (the loader refuses longer config ids), a secret of at most 256.
  EXPECT_TRUE(parse_key("tg_" + std::string(64, 'i') + "_s"));
  EXPECT_FALSE(parse_key("tg_" + std::string(65, 'i') + "_s"));
  EXPECT_TRUE(parse_key("tg_id_" + std::string(256, 's')));
  EXPECT_FALSE(parse_key("tg_id_" + std::string(257, 's')));
  for (int b = 0; b < 256; ++b) {  // every byte, in the id and in the secret: only ASCII letters and digits
    const char c = static_cast<char>(b);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    EXPECT_EQ(parse_key(std::string("tg_i") + c + "d_secret").has_value(), alnum) << b;
    EXPECT_EQ(parse_key(std::string("tg_id_sec") + c + "ret").has_value(), alnum) << b;
  }
  for (int again = 0; again < 2; ++again) {  // known vectors (FIPS 180-2 "abc", RFC 4231 case 2), twice: a reused context
    EXPECT_EQ(digest_secret("abc", ""), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(digest_secret("what do ya want for nothing?", "Jefe"),
              "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  }
  const auto plain = digest_secret(k.secret, "");
  const auto peppered = digest_secret(k.secret, "pepper");
  EXPECT_TRUE(plain.starts_with("sha256:"));
  EXPECT_TRUE(peppered.starts_with("hmac-sha256:"));
  EXPECT_NE(plain.substr(7), peppered.substr(12));
  EXPECT_TRUE(verify_secret(k.secret, plain, ""));
  EXPECT_TRUE(verify_secret(k.secret, peppered, "pepper"));
  EXPECT_FALSE(verify_secret(k.secret, peppered, "other"));
  EXPECT_FALSE(verify_secret(k.secret, peppered, ""));
  EXPECT_FALSE(verify_secret(k.secret + "x", plain, ""));
  EXPECT_FALSE(verify_secret(k.secret, "sha256:abc", ""));
  // Known answer: sha256("abc").
  EXPECT_EQ(digest_secret("abc", ""), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string abc = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  EXPECT_TRUE(verify_secret("abc", abc, ""));
  for (std::size_t at : {std::size_t(7), std::size_t(8), abc.size() - 1}) {  // each nibble of a byte, and the last
    std::string wrong = abc;
    wrong[at] = wrong[at] == '0' ? '1' : '0';
    EXPECT_FALSE(verify_secret("abc", wrong, "")) << wrong;
  }
  EXPECT_NE(generate_key().id, generate_key().id);
}

}  // namespace
}  // namespace tollgate::policy::testing
