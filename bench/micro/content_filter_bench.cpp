// SPDX-License-Identifier: Apache-2.0
// Content-filter throughput (the content-filter issue's benchmark, engine part): every built-in
// detector on, in block mode (prompts) and streaming mode (responses, fed in pieces as deltas
// arrive), over two texts, each repeated to 1 MiB:
//   * prose: the GNU GPL version 3 as Debian ships it (/usr/share/common-licenses/GPL-3, package
//     base-files, on every Debian system): 35 KB of ordinary English prose;
//   * dense: the shipped no-false-positive corpus (tests/unit/content_filter/corpus/prose.txt),
//     ordinary text with a number, version or date on nearly every line: the hard case for the
//     digit-structured detectors.
// Reported as bytes per second of one core (Google Benchmark's SetBytesProcessed).
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

#include "policy/content_filter/content_filter.hpp"

namespace cf = tollgate::policy::content_filter;

namespace {

std::string mib_of(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string one = ss.str();
  if (one.empty()) std::abort();
  std::string text;
  while (text.size() < (1u << 20)) text += one;
  return text;
}

struct fixture {
  cf::filter_set set;
  cf::scratch scratch;
  std::string prose;
  std::string dense;
};

fixture& get() {
  static fixture f = [] {
    auto rules = cf::builtin_rules(cf::action::redact);
    auto set = cf::compile(rules);
    if (!set) std::abort();
    auto s = cf::scratch::create(*set);
    if (!s) std::abort();
    return fixture{std::move(*set), std::move(*s), mib_of("/usr/share/common-licenses/GPL-3"),
                   mib_of(std::string(TOLLGATE_SOURCE_DIR) + "/tests/unit/content_filter/corpus/prose.txt")};
  }();
  return f;
}

const std::string& text_of(const benchmark::State& state) {
  return state.range(0) == 0 ? get().prose : get().dense;
}

// Arg 0: prose, 1: dense.
void BM_PromptScan(benchmark::State& state) {
  auto& f = get();
  const std::string& text = text_of(state);
  for (auto _ : state) {
    auto v = cf::scan_text(f.set, f.scratch, text);
    benchmark::DoNotOptimize(v);
  }
  state.SetLabel(state.range(0) == 0 ? "prose" : "dense");
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(text.size()));
}
BENCHMARK(BM_PromptScan)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// Args: text, piece size (16 bytes is a typical delta of several tokens; 256 a batch of them).
void BM_StreamFilter(benchmark::State& state) {
  auto& f = get();
  const std::string& text = text_of(state);
  const auto piece = static_cast<std::size_t>(state.range(1));
  for (auto _ : state) {
    auto sf = cf::stream_filter::create(f.set, f.scratch);
    if (!sf) std::abort();
    std::size_t out = 0;
    for (std::size_t i = 0; i < text.size(); i += piece) out += sf->feed(std::string_view(text).substr(i, piece)).text.size();
    out += sf->finish().text.size();
    benchmark::DoNotOptimize(out);
  }
  state.SetLabel(state.range(0) == 0 ? "prose" : "dense");
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(text.size()));
}
BENCHMARK(BM_StreamFilter)->Args({0, 16})->Args({0, 64})->Args({0, 256})->Args({1, 64})->Unit(benchmark::kMillisecond);

// What every filtered request pays besides the bytes: a short prompt's scan (every block
// database) and a response stream opened and closed.
void BM_ShortPrompt(benchmark::State& state) {
  auto& f = get();
  const std::string prompt = "Say hello in one short sentence.";
  for (auto _ : state) {
    auto v = cf::scan_text(f.set, f.scratch, prompt);
    benchmark::DoNotOptimize(v);
  }
}
BENCHMARK(BM_ShortPrompt);

void BM_StreamOpenClose(benchmark::State& state) {
  auto& f = get();
  for (auto _ : state) {
    auto sf = cf::stream_filter::create(f.set, f.scratch);
    auto r = sf->finish();
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_StreamOpenClose);

}  // namespace

BENCHMARK_MAIN();
