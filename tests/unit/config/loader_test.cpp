// SPDX-License-Identifier: Apache-2.0
#include "config/loader.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace tollgate::config {
namespace {

load_result load(const std::string& yaml) { return load_string(yaml, "test.yaml"); }

constexpr const char* minimal = R"(providers:
  - {name: mock, type: mock}
models:
  - {name: m, provider: mock}
prices:
  m: {input: 1, output: 2}
)";

TEST(ConfigLoaderTest, MinimalConfigGetsDefaults) {
  auto r = load(minimal);
  ASSERT_TRUE(r) << r.error;
  const auto& c = *r.config;
  EXPECT_EQ(c.server.listen.host, "127.0.0.1");
  EXPECT_EQ(c.server.listen.port, 8080);
  EXPECT_EQ(c.server.admin_listen.port, 9090);
  EXPECT_EQ(c.server.limits.max_body_bytes, 4u * 1024 * 1024);
  EXPECT_EQ(c.server.timeouts.drain_ms, 30000u);
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].primary.upstream_model, "m");  // defaults to the public name
  EXPECT_EQ(c.store.redis.timeout_ms, 50u);
  EXPECT_EQ(c.store.redis.busy_poll_us, 100u);
}

TEST(ConfigLoaderTest, UnknownKeysNameTheirPathAndLine) {
  struct {
    const char* yaml;
    const char* expected;
  } cases[] = {
      {"serverr: {}\n", "test.yaml: serverr: unknown key (line 1)"},
      {"server:\n  limtis: {}\n", "server.limtis: unknown key (line 2)"},
      {"server:\n  limits:\n    max_body: 5\n", "server.limits.max_body: unknown key (line 3)"},
      {"providers:\n  - name: a\n    type: mock\n    ttft: 5\n", "providers[0].ttft: unknown key (line 4)"},
      {"providers:\n  - name: a\n    type: mock\n    fault: {kind: error, statuss: 5}\n", "providers[0].fault.statuss: unknown key (line 4)"},
      {"providers:\n  - {name: a, type: mock}\nmodels:\n  - {name: m, provider: a, rate_limt: 5}\n",
       "models[0].rate_limt: unknown key (line 4)"},
  };
  for (auto& c : cases) {
    auto r = load(c.yaml);
    EXPECT_FALSE(r) << c.yaml;
    EXPECT_NE(r.error.find(c.expected), std::string::npos) << "got: " << r.error;
  }
}

TEST(ConfigLoaderTest, WrongTypesAndValuesAreRefused) {
  struct {
    const char* yaml;
    const char* expected;
  } cases[] = {
      {"server:\n  workers: many\n", "server.workers: expected a non-negative integer"},
      {"server:\n  workers: -1\n", "server.workers: expected a non-negative integer"},
      {"server:\n  listen: nowhere\n", "server.listen: expected host:port"},
      {"server:\n  listen: 127.0.0.1:99999\n", "server.listen (port): expected a non-negative integer up to 65535"},
      {"server:\n  limits: [1, 2]\n", "server.limits: expected a mapping"},
      {"providers:\n  - {name: a, type: openai_compatible, base_url: http://x, tls: {verify: maybe}}\n",
       "providers[0].tls.verify: expected true or false"},
      {"providers:\n  - {name: a, type: bedrok}\n", "providers[0].type: unknown provider type 'bedrok'"},
      {"providers:\n  - {name: a, type: openai_compatible}\n", "providers[0].base_url: required"},
      {"providers:\n  - {name: a, type: openai_compatible, base_url: ftp://x}\n", "must start with http:// or https://"},
      {"providers:\n  - {type: mock}\n", "providers[0].name: required"},
      {"providers: {a: 1}\n", "providers: expected a list"},
      {"providers:\n  - {name: a, type: mock, fault: {kind: explode}}\n", "providers[0].fault.kind: expected none, error, reset, stall or throw"},
  };
  for (auto& c : cases) {
    auto r = load(c.yaml);
    EXPECT_FALSE(r) << c.yaml;
    EXPECT_NE(r.error.find(c.expected), std::string::npos) << "yaml: " << c.yaml << "\ngot: " << r.error;
  }
}

TEST(ConfigLoaderTest, MissingProviderReferenceNamesModelProviderAndLine) {
  auto r = load("providers:\n  - {name: a, type: mock}\nmodels:\n  - name: chat\n    provider: bedrok\n");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("models[0].provider: model 'chat' refers to unknown provider 'bedrok' (line 5)"), std::string::npos)
      << r.error;
  auto f = load("providers:\n  - {name: a, type: mock}\nmodels:\n  - name: chat\n    provider: a\n    fallbacks:\n      - provider: zz\n");
  ASSERT_FALSE(f);
  EXPECT_NE(f.error.find("models[0].fallbacks[0].provider: model 'chat' refers to unknown provider 'zz' (line 7)"),
            std::string::npos)
      << f.error;
}

TEST(ConfigLoaderTest, DuplicatesAndSanityAreRefused) {
  EXPECT_NE(load("providers:\n  - {name: a, type: mock}\n  - {name: a, type: mock}\n").error.find("duplicate provider name 'a'"),
            std::string::npos);
  EXPECT_NE(load("providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: m, provider: mock}\n  - {name: m, provider: mock}\n"
                 "prices:\n  m: {input: 0, output: 0}\n")
                .error.find("duplicate model name 'm'"),
            std::string::npos);
  EXPECT_NE(load("server:\n  limits: {max_header_bytes: 100}\n").error.find("max_header_bytes: must be at least 256"),
            std::string::npos);
  EXPECT_NE(load("server:\n  tls: {cert_file: a.pem}\n").error.find("cert_file and key_file must be set together"),
            std::string::npos);
}

TEST(ConfigLoaderTest, AKeyGivenTwiceInOneMappingIsRefusedWherever) {
  // yaml-cpp keeps both and a lookup finds the first: a second `auth:` block (its pepper), a
  // second `teams:` list or a repeated `usd:` was dropped without a word.
  struct {
    std::string yaml;
    const char* expected;
  } cases[] = {
      {std::string(minimal) + "auth: {required: false}\nauth:\n  pepper: p\n",
       "auth: given twice in one mapping (YAML would keep only the first): merge them (line 8)"},
      {std::string(minimal) + "teams:\n  - name: a\n    budget: {usd: 100, usd: 1}\n",
       "teams[0].budget.usd: given twice in one mapping"},
      {std::string(minimal) + "server:\n  limits: {max_body_bytes: 10}\n  limits: {max_header_bytes: 300}\n",
       "server.limits: given twice in one mapping"},
      {"providers:\n  - {name: mock, type: mock}\nmodels:\n  - {name: m, provider: mock}\nprices:\n  m: {input: 1, output: 2}\n"
       "  m: {input: 0, output: 0}\n",
       "prices.m: given twice in one mapping"},
  };
  for (auto& c : cases) {
    auto r = load(c.yaml);
    EXPECT_FALSE(r) << c.yaml;
    EXPECT_NE(r.error.find(c.expected), std::string::npos) << "got: " << r.error;
  }
  // The same key in two different mappings is fine.
  auto ok = load(std::string(minimal) + "teams:\n  - {name: a, limits: {rpm: 1}}\n  - {name: b, limits: {rpm: 2}}\n");
  EXPECT_TRUE(ok) << ok.error;
  // Aliases of aliases (each level ten times the one before) are not walked for ever.
  std::string bomb = std::string(minimal) + "x0: &a0 [1,1,1,1,1,1,1,1,1,1]\n";
  for (int i = 1; i < 9; ++i) {
    const std::string prev = "*a" + std::to_string(i - 1);
    bomb += "x" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + prev;
    for (int j = 1; j < 10; ++j) bomb += "," + prev;
    bomb += "]\n";
  }
  const auto big = load(bomb);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error.find("more than 1,000,000 values (aliases expanding?)"), std::string::npos) << big.error;
}

TEST(ConfigLoaderTest, ARedisTimeoutTooShortForAnyBatchIsRefused) {
  const std::string redis = std::string(minimal) + "store:\n  type: redis\n  redis: {timeout_ms: ";
  EXPECT_NE(load(redis + "4}\n").error.find("store.redis.timeout_ms: must be at least 5"), std::string::npos);
  auto five = load(redis + "5}\n");
  EXPECT_TRUE(five) << five.error;
}

TEST(ConfigLoaderTest, BadYamlAndEmptyFilesAreRefusedWithALine) {
  auto r = load("server: [\n");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("invalid YAML"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("(line "), std::string::npos) << r.error;
  EXPECT_NE(load("").error.find("the file is empty"), std::string::npos);
  EXPECT_NE(load_file("/nonexistent/tollgate.yaml").error.find("cannot open file"), std::string::npos);
}

TEST(ConfigLoaderTest, SecretsComeFromTheEnvironmentOrFilesAndAreNeverEchoed) {
  ::setenv("TOLLGATE_TEST_KEY", "sk-from-env", 1);
  auto r = load("providers:\n  - {name: a, type: openai_compatible, base_url: http://x, api_key: \"${env:TOLLGATE_TEST_KEY}\"}\n");
  ASSERT_TRUE(r) << r.error;
  EXPECT_EQ(r.config->providers[0].api_key, "sk-from-env");

  ::unsetenv("TOLLGATE_TEST_MISSING");
  auto m = load("providers:\n  - {name: a, type: openai_compatible, base_url: http://x, api_key: \"${env:TOLLGATE_TEST_MISSING}\"}\n");
  ASSERT_FALSE(m);
  EXPECT_NE(m.error.find("environment variable TOLLGATE_TEST_MISSING is not set"), std::string::npos) << m.error;

  auto path = std::filesystem::temp_directory_path() / "tollgate-secret-test";
  std::ofstream(path) << "sk-from-file\n";
  auto f = load("providers:\n  - name: a\n    type: openai_compatible\n    base_url: http://x\n    api_key: file:" + path.string() +
                "\n    headers: {X-Team: \"${env:TOLLGATE_TEST_KEY}\"}\n");
  ASSERT_TRUE(f) << f.error;
  EXPECT_EQ(f.config->providers[0].api_key, "sk-from-file");  // trailing newline stripped
  ASSERT_EQ(f.config->providers[0].headers.size(), 1u);
  EXPECT_EQ(f.config->providers[0].headers[0].second, "sk-from-env");
  std::filesystem::remove(path);

  auto bad = load("providers:\n  - {name: a, type: openai_compatible, base_url: http://x, api_key: file:/nonexistent/secret}\n");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error.find("cannot read secret file /nonexistent/secret"), std::string::npos);
}

TEST(ConfigLoaderTest, ShippedExamplesAreValid) {
  for (const char* f : {"config/examples/quickstart.yaml", "config/examples/minimal.yaml"}) {
    auto r = load_file(std::string(TOLLGATE_SOURCE_DIR) + "/" + f);
    EXPECT_TRUE(r) << f << ": " << r.error;
  }
}

TEST(ConfigLoaderTest, EveryRoutedModelNeedsAPriceAndGlobsMayProvideIt) {
  auto r = load("providers:\n  - {name: a, type: mock}\nmodels:\n  - {name: gpt-x, provider: a}\n");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error.find("models[0]: model 'gpt-x' has no price"), std::string::npos) << r.error;
  auto g = load("providers:\n  - {name: a, type: mock}\nmodels:\n  - {name: gpt-x, provider: a}\n"
                "prices:\n  \"gpt-*\": {input: 1, output: 2}\n  gpt-x: {input: 3, output: 4, cached_input: 1.5, cache_write: 3.75}\n");
  ASSERT_TRUE(g) << g.error;
  const price_config* p = g.config->find_price("gpt-x");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->input, 3);  // the exact name wins over the glob
  EXPECT_EQ(p->cached_input, 1.5);
  EXPECT_EQ(g.config->find_price("gpt-y")->input, 1);
  EXPECT_EQ(g.config->find_price("gpt-y")->cached_input, 1);  // defaults to the input price
  EXPECT_EQ(p->cache_write, 3.75);
  EXPECT_EQ(g.config->find_price("gpt-y")->cache_write, 1);  // defaults to the input price too
  auto negative = load("prices:\n  m: {input: 1, output: 2, cache_write: -1}\n");
  EXPECT_NE(negative.error.find("prices.m.cache_write: expected a non-negative number"), std::string::npos)
      << negative.error;
  EXPECT_EQ(g.config->find_price("claude"), nullptr);
  auto half = load("prices:\n  m: {input: 1}\n");
  EXPECT_NE(half.error.find("prices.m: input and output (USD per million tokens) are required"), std::string::npos)
      << half.error;
}

TEST(ConfigLoaderTest, AnIdentityIsAUriOrADnsNameInTheFormCertificatesAreComparedIn) {
  const std::string mtls = "server:\n  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}\n";
  // DNS names are case-insensitive and so is a URI's scheme: both are kept lower-cased, as the
  // handshake lower-cases the certificate's SANs. A URI's path keeps its case.
  auto g = load(std::string(minimal) + mtls + R"(teams:
  - {name: a, identities: ["SPIFFE://corp/NS/x", "Batch.SVC.corp.example", "*.jobs.example", "svc_1.example"]}
)");
  ASSERT_TRUE(g.error.empty()) << g.error;
  EXPECT_EQ(g.config->teams[0].identities,
            (std::vector<std::string>{"spiffe://corp/NS/x", "batch.svc.corp.example", "*.jobs.example", "svc_1.example"}));
  // Spelled differently, the same DNS name under two teams is still one identity twice.
  auto twice = load(std::string(minimal) + mtls + R"(teams:
  - {name: a, identities: ["dns.example"]}
  - {name: b, identities: ["DNS.example"]}
)");
  EXPECT_NE(twice.error.find("teams[1].identities: 'dns.example' is already the identity of team 'a'"), std::string::npos)
      << twice.error;
  // Neither a URI (no scheme, a bad scheme, nothing after it, a space) nor a DNS name ('/', a
  // space, non-ASCII): each is refused at its index rather than loaded to match nothing.
  for (const char* bad : {"spiffe:", ":corp/x", "1x://corp", "sp iffe://corp", "spiffe://corp/a b", "corp/ns/x",
                          "svc .example", "sv\u00e9.example", "spiffe://corp/\u00e9"}) {
    auto r = load(std::string(minimal) + mtls + "teams:\n  - {name: a, identities: [\"ok.example\", \"" + bad + "\"]}\n");
    EXPECT_NE(r.error.find("teams[0].identities[1]: must be a URI with a scheme (spiffe://trust-domain/path) or a DNS name"),
              std::string::npos)
        << bad << ": " << r.error;
  }
}

TEST(ConfigLoaderTest, AVertexPartnerModelIsALoadErrorNotAFailureOnEveryCall) {
  auto with = [](const std::string& models) {
    return load("providers:\n  - {name: mock, type: mock}\n  - {name: v, type: vertex, project: p, location: us-east5, endpoint: \"https://vertex.example\"}\n"
                "models:\n" + models + "prices:\n  \"*\": {input: 1, output: 2}\n");
  };
  for (const char* fine : {"gemini-2.5-flash", "google/gemini-2.5-flash", "publishers/google/models/gemini-2.5-pro",
                           "projects/p/locations/us-east5/endpoints/123", "projects/p/locations/l/publishers/google/models/g"}) {
    auto r = with("  - {name: m, provider: v, upstream_model: \"" + std::string(fine) + "\"}\n");
    EXPECT_TRUE(r.error.empty()) << fine << ": " << r.error;
  }
  auto claude = with("  - {name: m, provider: v, upstream_model: \"anthropic/claude-sonnet-4@20250514\"}\n");
  EXPECT_NE(claude.error.find("models[0].upstream_model: 'anthropic/claude-sonnet-4@20250514' is a 'anthropic' model, which "
                              "Vertex serves through rawPredict"),
            std::string::npos)
      << claude.error;
  auto full = with("  - {name: m, provider: mock, fallbacks: [{provider: v, upstream_model: "
                   "\"projects/p/locations/l/publishers/meta/models/llama\"}]}\n");
  EXPECT_NE(full.error.find("models[0].fallbacks[0].upstream_model: 'projects/p/locations/l/publishers/meta/models/llama' is a "
                            "'meta' model"),
            std::string::npos)
      << full.error;
}

TEST(ConfigLoaderTest, ACertificateNameIsReadOnlyInTheFormOfItsKind) {
  using tollgate::config::canonical_san;
  EXPECT_EQ(canonical_san("spiffe://corp/ns/x", true), "spiffe://corp/ns/x");
  EXPECT_EQ(canonical_san("Batch.Example", false), "batch.example");
  // A DNS SAN spelled like a SPIFFE ID, or a URI SAN without a scheme, is no name at all: else a
  // CA that signs DNS names only would grant whatever URI identity it was asked to spell.
  EXPECT_EQ(canonical_san("spiffe://corp/ns/x", false), std::nullopt);
  EXPECT_EQ(canonical_san("batch.example", true), std::nullopt);
  // An embedded NUL (IA5String allows it) ends neither kind early.
  EXPECT_EQ(canonical_san(std::string_view("ok.example\0.evil", 16), false), std::nullopt);
  EXPECT_EQ(canonical_san(std::string_view("spiffe://ok\0/x", 14), true), std::nullopt);
  EXPECT_EQ(canonical_san("", false), std::nullopt);
}

TEST(ConfigLoaderTest, AnIdentityNamesOneTeamAndNeedsClientCertificates) {
  const std::string mtls = "server:\n  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}\n";
  auto twice = load(std::string(minimal) + mtls + R"(teams:
  - {name: a, identities: ["spiffe://corp/ns/x/sa/api"]}
  - {name: b, identities: ["dns.example", "spiffe://corp/ns/x/sa/api"]}
)");
  EXPECT_NE(twice.error.find("teams[1].identities: 'spiffe://corp/ns/x/sa/api' is already the identity of team 'a'"),
            std::string::npos)
      << twice.error;
  auto no_ca = load(std::string(minimal) + R"(teams:
  - {name: a, identities: ["spiffe://corp/ns/x/sa/api"]}
)");
  EXPECT_NE(no_ca.error.find("teams[0].identities: no caller presents a certificate without server.tls.client_ca_file"),
            std::string::npos)
      << no_ca.error;
  auto fine = load(std::string(minimal) + mtls + R"(teams:
  - {name: a, identities: ["spiffe://corp/ns/x/sa/api"]}
  - {name: b, identities: ["dns.example"]}
)");
  EXPECT_TRUE(fine.error.empty()) << fine.error;
  auto empty = load(std::string(minimal) + mtls + "teams:\n  - {name: a, identities: [\"\"]}\n");
  EXPECT_NE(empty.error.find("teams[0].identities[0]: must be a URI with a scheme"), std::string::npos) << empty.error;
  // A CA without the listener's own certificate: the listener would be plain HTTP and ask for no
  // certificate at all.
  auto ca_only = load(std::string(minimal) + "server:\n  tls: {client_ca_file: ca.pem}\n");
  EXPECT_NE(ca_only.error.find("server.tls.client_ca_file: mTLS needs the listener's own cert_file and key_file"),
            std::string::npos)
      << ca_only.error;
  // Revocation lists without a client CA would check no certificate.
  auto crl_only = load(std::string(minimal) + "server:\n  tls: {cert_file: c.pem, key_file: k.pem, client_crl_file: crl.pem}\n");
  EXPECT_NE(crl_only.error.find("server.tls.client_crl_file: revocation lists apply to client certificates"),
            std::string::npos)
      << crl_only.error;
  auto with_crl = load(std::string(minimal) +
                       "server:\n  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem, client_crl_file: crl.pem}\n");
  EXPECT_TRUE(with_crl.error.empty()) << with_crl.error;
  EXPECT_EQ(with_crl.config->server.tls.client_crl_file, "crl.pem");
}

TEST(ConfigLoaderTest, TeamsKeysBudgetsAndStoreParse) {
  auto r = load(std::string(minimal) + R"(server:
  tls: {cert_file: c.pem, key_file: k.pem, client_ca_file: ca.pem}
teams:
  - name: search
    models: ["gpt-*", m]
    limits: {rpm: 60, tpm: 1000, concurrency: 3}
    budget: {usd: 12.5, period: daily, soft: 0.9}
    identities: ["spiffe://corp/ns/search/sa/api"]
keys:
  - id: abc123
    team: search
    digest: sha256:)" + std::string(64, 'a') + R"(
    expires: 2027-01-31
    limits: {rpm: 5}
store:
  type: redis
  redis: {address: 10.0.0.5:6380, password: pw, key_prefix: "tg:", timeout_ms: 20, busy_poll_us: 0}
  replicas: 3
  on_unavailable: {budgets: fail_open, rate_limits: fail_closed}
  lease_ms: 60000
  send_default_max_tokens: false
auth:
  pepper: pep
  key_cache_ms: 500
  admin_tokens: [{name: ops, digest: "sha256:)" + std::string(64, 'b') + R"("}]
)");
  ASSERT_TRUE(r) << r.error;
  const auto& c = *r.config;
  ASSERT_EQ(c.teams.size(), 1u);
  EXPECT_EQ(c.teams[0].limits.rpm, 60u);
  EXPECT_EQ(c.teams[0].limits.concurrency, 3u);
  EXPECT_EQ(c.teams[0].budget.limit_nano, 12'500'000'000);
  EXPECT_EQ(c.teams[0].budget.period, budget_period::daily);
  EXPECT_EQ(c.teams[0].identities.at(0), "spiffe://corp/ns/search/sa/api");
  EXPECT_EQ(c.keys.at(0).expires_unix, 1801353600);  // 2027-01-31T00:00:00Z
  EXPECT_EQ(c.keys.at(0).limits.rpm, 5u);
  EXPECT_EQ(c.store.type, "redis");
  EXPECT_EQ(c.store.redis.host, "10.0.0.5");
  EXPECT_EQ(c.store.redis.port, 6380);
  EXPECT_FALSE(c.store.redis.tls.enabled);  // no tls section: plain TCP
  EXPECT_EQ(c.store.redis.busy_poll_us, 0u);  // 0: sleep at once
  EXPECT_EQ(c.store.replicas, 3u);
  EXPECT_FALSE(c.store.send_default_max_tokens);
  EXPECT_TRUE(store_config{}.send_default_max_tokens);  // on unless turned off
  EXPECT_EQ(c.store.budgets, on_store_failure::fail_open);
  EXPECT_EQ(c.store.rate_limits, on_store_failure::fail_closed);
  EXPECT_EQ(c.auth.admin_tokens.at(0).name, "ops");
  EXPECT_TRUE(c.auth.required);
}

TEST(ConfigLoaderTest, BadPolicyConfigIsRefusedWithPathAndLine) {
  const std::string base = minimal;
  const std::string digest = "sha256:" + std::string(64, 'a');
  struct bad {
    std::string yaml, expected;
  } cases[] = {
      {base + "teams:\n  - {name: t, budget: {usd: 5, period: weekly}}\n", "teams[0].budget.period: expected daily, monthly or total"},
      {base + "teams:\n  - {name: t, budget: {period: daily}}\n", "teams[0].budget.usd: required"},
      // Not a number: `nan` parses as a double, and a NaN budget was no budget at all.
      {base + "teams:\n  - {name: t, budget: {usd: nan}}\n", "teams[0].budget.usd: expected a non-negative number, got 'nan'"},
      {base + "teams:\n  - {name: t, budget: {usd: NAN, period: daily}}\n", "teams[0].budget.usd: expected a non-negative number"},
      {base + "teams:\n  - {name: t, budget: {usd: inf}}\n", "teams[0].budget.usd: expected a non-negative number, got 'inf'"},
      {base + "teams:\n  - {name: t, budget: {usd: 5, soft: nan}}\n", "teams[0].budget.soft"},
      {base + "teams:\n  - {name: t, budget: {usd: 5, soft: 80}}\n", "teams[0].budget.soft: expected a fraction"},
      {base + "teams:\n  - {name: t, limits: {rpn: 5}}\n", "teams[0].limits.rpn: unknown key"},
      {base + "teams:\n  - {name: t}\n  - {name: t}\n", "duplicate team 't'"},
      {base + "teams:\n  - {name: '-'}\n", "'-' is reserved for anonymous callers"},
      {base + "teams:\n  - {name: tg_ml_research}\n", "must not start with 'tg_'"},
      {base + "keys:\n  - {id: a1, team: nobody, digest: " + digest + "}\n", "keys[0].team: unknown team 'nobody'"},
      {base + "teams:\n  - {name: t}\nkeys:\n  - {id: a_1, team: t, digest: " + digest + "}\n", "keys[0].id: must be letters and digits"},
      {base + "teams:\n  - {name: t}\nkeys:\n  - {id: " + std::string(65, 'a') + ", team: t, digest: " + digest + "}\n", "keys[0].id: at most 64 characters"},
      {base + "teams:\n  - {name: t}\nkeys:\n  - {id: a1, team: t, digest: md5:abc}\n", "keys[0].digest: expected sha256:"},
      {base + "teams:\n  - {name: t}\nkeys:\n  - {id: a1, team: t, digest: hmac-" + digest + "}\n", "needs auth.pepper"},
      {base + "teams:\n  - {name: t}\nkeys:\n  - {id: a1, team: t, digest: " + digest + ", expires: soon}\n", "keys[0].expires: expected a UTC time"},
      {base + "store: {type: etcd}\n", "store.type: expected memory or redis"},
      {base + "store: {on_unavailable: {budgets: local}}\n", "store.on_unavailable.budgets: expected fail_closed or fail_open"},
      {base + "store: {replicas: 0}\n", "store.replicas: must be at least 1"},
      // Bounded like a request's max_tokens: what a call reserves stays finite in 64 bits.
      {base + "store: {default_max_tokens: 100000001}\n",
       "store.default_max_tokens: expected a non-negative integer up to 100000000"},
      {base + "store: {send_default_max_tokens: sometimes}\n", "store.send_default_max_tokens"},
      {base + "store: {send_default_max_tokens: [true]}\n", "store.send_default_max_tokens"},
      {base + "store: {settlement_journal: [a, b]}\n", "store.settlement_journal"},
      {base + "store: {settlement_journal: {path: x}}\n", "store.settlement_journal"},
      {base + "store: {redis: {adress: x}}\n", "store.redis.adress: unknown key"},
      {base + "store: {type: redis, redis: {busy_poll_us: 5000}}\n",
       "store.redis.busy_poll_us: expected a non-negative integer up to 1000, got '5000'"},
      {base + "store: {type: redis, redis: {busy_poll_us: -1}}\n", "store.redis.busy_poll_us: expected a non-negative integer"},
      {base + "store: {type: redis, redis: {busy_poll_us: fast}}\n", "store.redis.busy_poll_us: expected a non-negative integer"},
      {base + "store: {type: redis, redis: {tls: {ca: /x}}}\n", "store.redis.tls.ca: unknown key"},
      {base + "store: {type: redis, redis: {tls: {verify: maybe}}}\n", "store.redis.tls.verify"},
      {base + "store: {type: redis, redis: {tls: {ca_file: /nonexistent/ca.pem}}}\n",
       "store.redis.tls.ca_file: cannot read /nonexistent/ca.pem"},
      {base + "store: {type: redis, redis: {tls: {cert_file: /etc/hostname}}}\n",
       "store.redis.tls: cert_file and key_file must be set together"},
      {base + "store: {type: redis, redis: {address: \"unix:/run/redis.sock\", tls: {}}}\n",
       "store.redis.tls: TLS needs a TCP address"},
      {base + "store: {type: redis, redis: {address: \"redis://:s3cret@redis.internal:6379\"}}\n",
       "store.redis.address: expected host:port (a host name or IP address, and a port; not a URL)"},
      {base + "store: {type: redis, redis: {address: \"user:s3cret@redis.internal:6379\"}}\n",
       "store.redis.address: expected host:port (a host name or IP address, and a port; not a URL)"},
      {base + "server: {listen: \"http://0.0.0.0:8080\"}\n", "server.listen: expected host:port"},
      {base + "store: {type: redis, redis: {connect_timeout_ms: 0}}\n", "store.redis.connect_timeout_ms: must be at least 1"},
      {base + "auth: {pepper: \"\"}\n", "auth.pepper: is empty"},
      {base + "auth: {admin_tokens: [{name: ops, digest: \"sha256:" + std::string(64, 'B') + "\"}]}\n",
       "auth.admin_tokens[0].digest: expected sha256:<64 lowercase hex>"},
      {base + "auth: {admin_tokens: [{name: ops, digest: \"hmac-sha256:" + std::string(64, 'b') + "\"}]}\n",
       "auth.admin_tokens[0].digest: expected sha256:<64 lowercase hex>"},
      {base + "auth: {admin_tokens: [{name: ops, digest: \"sha256:" + std::string(63, 'b') + "\"}]}\n",
       "auth.admin_tokens[0].digest: expected sha256:<64 lowercase hex>"},
      {base + "auth: {admin_tokens: [{name: \"\", digest: \"sha256:" + std::string(64, 'b') + "\"}]}\n",
       "auth.admin_tokens[0].name: must not be empty"},
      {base + "auth: {admin_tokens: [{name: ops, digest: \"sha256:" + std::string(64, 'b') + "\"}, {name: ops, digest: \"sha256:" +
           std::string(64, 'c') + "\"}]}\n",
       "auth.admin_tokens[1].name: duplicate admin token name 'ops'"},
      {base + "auth: {admin_tokens: [{name: a, digest: \"sha256:" + std::string(64, 'b') + "\"}, {name: b, digest: \"sha256:" +
           std::string(64, 'b') + "\"}]}\n",
       "auth.admin_tokens[1].digest: the same token as admin_tokens[0]"},
  };
  for (auto& c : cases) {
    auto r = load(c.yaml);
    EXPECT_FALSE(r) << c.yaml;
    EXPECT_NE(r.error.find(c.expected), std::string::npos) << "got: " << r.error;
    EXPECT_EQ(r.error.find("s3cret"), std::string::npos) << "a password in an address is echoed: " << r.error;
  }
}

TEST(ConfigLoaderTest, EndpointsTakeHostNamesAndAddressesOfEveryKind) {
  for (const char* address : {"redis.internal:6380", "10.0.0.5:6380", "[::1]:6380", "[fe80::1%eth0]:6380", "my_host-1:1"}) {
    auto r = load(std::string(minimal) + "store: {type: redis, redis: {address: \"" + address + "\"}}\n");
    ASSERT_TRUE(r) << address << ": " << r.error;
    EXPECT_EQ(r.config->store.redis.port, std::stoi(std::string(address).substr(std::string(address).rfind(':') + 1)));
  }
}

TEST(ConfigLoaderTest, RedisTlsSectionTurnsTlsOn) {
  auto r = load(std::string(minimal) + R"(store:
  type: redis
  redis:
    address: 10.0.0.5:6380
    tls: {ca_file: /etc/hostname, server_name: redis.internal, cert_file: /etc/hostname, key_file: /etc/hostname}
)");
  ASSERT_TRUE(r) << r.error;
  const auto& t = r.config->store.redis.tls;
  EXPECT_TRUE(t.enabled);
  EXPECT_TRUE(t.verify);
  EXPECT_EQ(t.ca_file, "/etc/hostname");
  EXPECT_EQ(t.server_name, "redis.internal");
  EXPECT_EQ(t.key_file, "/etc/hostname");
  auto off = load(std::string(minimal) + "store: {type: redis, redis: {tls: {enabled: false, ca_file: /nonexistent}}}\n");
  ASSERT_TRUE(off) << off.error;  // off: its files are not needed
  EXPECT_FALSE(off.config->store.redis.tls.enabled);
}

TEST(ConfigLoaderTest, GlobMatchesStarsOnly) {
  EXPECT_TRUE(glob_match("gpt-*", "gpt-4o"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*-mini", "gpt-4o-mini"));
  EXPECT_TRUE(glob_match("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXXbYY"));
  EXPECT_FALSE(glob_match("gpt-4o", "gpt-4o-mini"));
  EXPECT_FALSE(glob_match("gpt?", "gpt4"));  // ? is literal
}

TEST(ConfigLoaderTest, AuditDefaultsToStrictInADirectoryNamedAudit) {
  auto r = load(minimal);
  ASSERT_TRUE(r) << r.error;
  const auto& a = r.config->audit;
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.mode, audit_config::durability::strict);
  EXPECT_EQ(a.dir, "audit");
  EXPECT_EQ(a.instance, "");
  EXPECT_EQ(a.batch_ms, 200u);
  EXPECT_EQ(a.segment_max_bytes, 64ull << 20);
  EXPECT_EQ(a.segment_max_age_s, 3600u);
  EXPECT_EQ(a.retention_days, 0u);
  EXPECT_EQ(a.checkpoint_s, 60u);
  EXPECT_FALSE(a.fail_open);
  EXPECT_EQ(a.max_pending_bytes, 64ull << 20);
}

TEST(ConfigLoaderTest, AuditParsesEveryField) {
  auto r = load(std::string(minimal) + R"(audit:
  enabled: true
  dir: /var/lib/tollgate/audit
  instance: gw_east-1
  durability: batched
  batch_ms: 50
  segment_max_bytes: 4096
  segment_max_age_s: 600
  retention_days: 30
  checkpoint_s: 5
  on_error: fail_open
  max_pending_bytes: 1048576
)");
  ASSERT_TRUE(r) << r.error;
  const auto& a = r.config->audit;
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.dir, "/var/lib/tollgate/audit");
  EXPECT_EQ(a.instance, "gw_east-1");
  EXPECT_EQ(a.mode, audit_config::durability::batched);
  EXPECT_EQ(a.batch_ms, 50u);
  EXPECT_EQ(a.segment_max_bytes, 4096u);  // the smallest allowed
  EXPECT_EQ(a.segment_max_age_s, 600u);
  EXPECT_EQ(a.retention_days, 30u);
  EXPECT_EQ(a.checkpoint_s, 5u);
  EXPECT_TRUE(a.fail_open);
  EXPECT_EQ(a.max_pending_bytes, 1048576u);

  auto closed = load(std::string(minimal) + "audit: {on_error: fail_closed, durability: strict, batch_ms: 0}\n");
  ASSERT_TRUE(closed) << closed.error;  // batch_ms only matters in batched mode
  EXPECT_FALSE(closed.config->audit.fail_open);
  EXPECT_EQ(closed.config->audit.mode, audit_config::durability::strict);

  auto off = load(std::string(minimal) + "audit: {enabled: false, dir: \"\"}\n");
  ASSERT_TRUE(off) << off.error;  // no directory needed when there is no trail
  EXPECT_FALSE(off.config->audit.enabled);
}

TEST(ConfigLoaderTest, BadAuditConfigIsRefusedWithPath) {
  const std::string base = minimal;
  struct bad {
    std::string yaml, expected;
  } cases[] = {
      {base + "audit:\n  durabilty: strict\n", "audit.durabilty: unknown key (line 8)"},
      {base + "audit:\n  dir: a\n  fsync: always\n", "audit.fsync: unknown key (line 9)"},
      {base + "audit:\n  durability: fast\n", "audit.durability: expected strict or batched, got 'fast' (line 8)"},
      {base + "audit:\n  durability: [strict]\n", "audit.durability: expected a string"},
      {base + "audit: {on_error: ignore}\n", "audit.on_error: expected fail_closed or fail_open, got 'ignore'"},
      {base + "audit: {instance: gw.1}\n", "audit.instance: expected letters, digits, '_' or '-', got 'gw.1'"},
      {base + "audit: {instance: ../etc}\n", "audit.instance: expected letters, digits, '_' or '-'"},
      {base + "audit: {instance: \"gw 1\"}\n", "audit.instance: expected letters, digits, '_' or '-'"},
      {base + "audit: {instance: \"\"}\n", "audit.instance: expected letters, digits, '_' or '-', got ''"},
      {base + "audit: {segment_max_bytes: 4095}\n", "audit.segment_max_bytes: must be at least 4096"},
      {base + "audit: {segment_max_bytes: 0}\n", "audit.segment_max_bytes: must be at least 4096"},
      {base + "audit: {durability: batched, batch_ms: 0}\n", "audit.batch_ms: must be at least 1 in batched mode"},
      {base + "audit: {batch_ms: 60001}\n", "audit.batch_ms: expected a non-negative integer up to 60000"},
      {base + "audit: {checkpoint_s: -1}\n", "audit.checkpoint_s: expected a non-negative integer"},
      {base + "audit: {enabled: yes}\n", "audit.enabled: expected true or false, got 'yes'"},
      {base + "audit: {dir: \"\"}\n", "audit.dir: must not be empty"},
      {base + "audit: [strict]\n", "audit: expected a mapping"},
  };
  for (auto& c : cases) {
    auto r = load(c.yaml);
    EXPECT_FALSE(r) << c.yaml;
    EXPECT_NE(r.error.find(c.expected), std::string::npos) << "yaml: " << c.yaml << "\ngot: " << r.error;
  }
}

TEST(ConfigLoaderTest, RelativeAuditDirLivesBesideTheConfigFile) {
  char tmpl[] = "/tmp/tollgate-loader-test-XXXXXX";
  const char* made = ::mkdtemp(tmpl);
  ASSERT_NE(made, nullptr);
  const std::string dir = made;
  struct cleanup {
    std::string path;
    ~cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } remove_dir{dir};
  const std::string path = dir + "/tollgate.yaml";

  std::ofstream(path) << minimal;
  auto d = load_file(path);
  ASSERT_TRUE(d) << d.error;
  EXPECT_EQ(d.config->audit.dir, dir + "/audit");

  std::ofstream(path) << minimal << "audit: {dir: trail/gw}\n";
  auto rel = load_file(path);
  ASSERT_TRUE(rel) << rel.error;
  EXPECT_EQ(rel.config->audit.dir, dir + "/trail/gw");

  std::ofstream(path) << minimal << "audit: {dir: /srv/audit}\n";
  auto abs = load_file(path);
  ASSERT_TRUE(abs) << abs.error;
  EXPECT_EQ(abs.config->audit.dir, "/srv/audit");

  // load_string has no file to be beside: the path stays as written.
  EXPECT_EQ(load(std::string(minimal) + "audit: {dir: trail}\n").config->audit.dir, "trail");

  // The settlement journal the same way; unset stays unset (no journal).
  EXPECT_EQ(d.config->store.settlement_journal, "");
  std::ofstream(path) << minimal << "store: {settlement_journal: state/settlements.journal}\n";
  auto journal = load_file(path);
  ASSERT_TRUE(journal) << journal.error;
  EXPECT_EQ(journal.config->store.settlement_journal, dir + "/state/settlements.journal");
  EXPECT_EQ(journal.config->audit.dir, dir + "/audit");
  std::ofstream(path) << minimal << "store: {settlement_journal: /var/lib/tollgate/s.journal}\n";
  auto journal_abs = load_file(path);
  ASSERT_TRUE(journal_abs) << journal_abs.error;
  EXPECT_EQ(journal_abs.config->store.settlement_journal, "/var/lib/tollgate/s.journal");
}

}  // namespace
}  // namespace tollgate::config
