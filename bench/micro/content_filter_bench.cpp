// SPDX-License-Identifier: Apache-2.0
// Content-filter throughput (the content-filter issue's benchmark, engine part): every built-in
// detector on, over ordinary prose (the shipped no-false-positive corpus, repeated to 1 MiB), in
// block mode (prompts) and streaming mode (responses, fed in 64-byte pieces as deltas arrive).
// Reported as bytes per second of one core (Google Benchmark's SetBytesProcessed).
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

#include "policy/content_filter/content_filter.hpp"

namespace cf = tollgate::policy::content_filter;

namespace {

std::string prose_mib() {
  std::ifstream in(std::string(TOLLGATE_SOURCE_DIR) + "/tests/unit/content_filter/corpus/prose.txt");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string one = ss.str();
  std::string text;
  while (text.size() < (1u << 20)) text += one;
  return text;
}

struct fixture {
  cf::filter_set set;
  cf::scratch scratch;
  std::string text;
};

fixture& get() {
  static fixture f = [] {
    auto rules = cf::builtin_rules(cf::action::redact);
    auto set = cf::compile(rules);
    if (!set) std::abort();
    auto s = cf::scratch::create(*set);
    if (!s) std::abort();
    return fixture{std::move(*set), std::move(*s), prose_mib()};
  }();
  return f;
}

void BM_PromptScanProse(benchmark::State& state) {
  auto& f = get();
  for (auto _ : state) {
    auto v = cf::scan_text(f.set, f.scratch, f.text);
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(f.text.size()));
}
BENCHMARK(BM_PromptScanProse)->Unit(benchmark::kMillisecond);

void BM_StreamFilterProse64(benchmark::State& state) {
  auto& f = get();
  for (auto _ : state) {
    auto sf = cf::stream_filter::create(f.set, f.scratch);
    if (!sf) std::abort();
    std::size_t out = 0;
    for (std::size_t i = 0; i < f.text.size(); i += 64) out += sf->feed(std::string_view(f.text).substr(i, 64)).text.size();
    out += sf->finish().text.size();
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(f.text.size()));
}
BENCHMARK(BM_StreamFilterProse64)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
