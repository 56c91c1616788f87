// SPDX-License-Identifier: Apache-2.0
// Google Benchmark: cost of the OpenAI-compatible stream translator per upstream stream, and of
// the request decode + encode per request (the gateway's own CPU on the hot path).
#include <benchmark/benchmark.h>

#include <string>

#include "gateway/content_filters.hpp"
#include "gateway/core/provider.hpp"
#include "providers/openai/openai_compatible_adapter.hpp"
#include "providers/unified.hpp"

namespace {

using namespace tollgate;

std::string make_stream(int chunks) {
  const std::string c =
      R"({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini","system_fingerprint":"fp_bench",)";
  std::string s;
  for (int i = 0; i < chunks; ++i)
    s += "data: " + c + R"("choices":[{"index":0,"delta":{"content":" word)" + std::to_string(i) +
         R"("},"logprobs":null,"finish_reason":null}],"usage":null})" + "\n\n";
  s += "data: " + c + R"("choices":[],"usage":{"prompt_tokens":19,"completion_tokens":20,"total_tokens":39}})" + "\n\n";
  s += "data: [DONE]\n\n";
  return s;
}

struct fixture {
  config::provider_config cfg;
  std::unique_ptr<providers::openai_compatible_adapter> adapter;
  route_target target;
  fixture() {
    cfg.name = "bench";
    cfg.type = "openai_compatible";
    cfg.base_url = "http://127.0.0.1:1/v1";
    cfg.proxy = "none";
    adapter = std::make_unique<providers::openai_compatible_adapter>(cfg);
    target = {adapter.get(), "gpt-4o-mini"};
  }
};

void BM_StreamTranslate(benchmark::State& state) {
  fixture f;
  const std::string body = make_stream(int(state.range(0)));
  const bool wants_usage = state.range(1) != 0;
  std::string out;
  for (auto _ : state) {
    request_context ctx;
    ctx.target = &f.target;
    ctx.caller_wants_usage = wants_usage;
    auto t = f.adapter->make_stream_translator(ctx);
    out.clear();
    t->feed(body, out);
    t->finish(true, {}, out);
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(body.size()));
  state.counters["chunks_per_s"] = benchmark::Counter(double(state.iterations()) * double(state.range(0)), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StreamTranslate)->Args({20, 1})->Args({20, 0})->Args({200, 0});

// The translator followed by the content-filter rewriter (every built-in detector, redact), as
// the relay runs them on a filtered stream: what filtering adds per stream.
void BM_StreamTranslateFiltered(benchmark::State& state) {
  fixture f;
  const std::string body = make_stream(int(state.range(0)));
  config::gateway_config gc;
  for (const auto d : policy::content_filter::all_detectors()) {
    config::filter_rule_config r;
    r.name = std::string(policy::content_filter::detector_name(d));
    r.detector = r.name;
    gc.content_filters.rules.push_back(r);
  }
  std::string error;
  auto filters = gateway::content_filters::compile(gc, error);
  const auto* set = filters ? filters->responses_for("", "") : nullptr;
  if (!set) {
    state.SkipWithError(error.c_str());
    return;
  }
  auto scratch = policy::content_filter::scratch::create(*set);
  std::string out;
  for (auto _ : state) {
    request_context ctx;
    ctx.target = &f.target;
    auto t = f.adapter->make_stream_translator(ctx);
    gateway::stream_rewriter rw(ctx, *filters, *set, *scratch);
    out.clear();
    t->feed(body, out);
    t->finish(true, {}, out);
    std::string sent = rw.process(out);
    benchmark::DoNotOptimize(sent);
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(body.size()));
  state.counters["chunks_per_s"] = benchmark::Counter(double(state.iterations()) * double(state.range(0)), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StreamTranslateFiltered)->Args({20, 0})->Args({200, 0});

void BM_DecodeEncodeRequest(benchmark::State& state) {
  fixture f;
  const std::string body =
      R"({"model":"bench-chat","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0.2})";
  for (auto _ : state) {
    request_context ctx;
    ctx.endpoint = endpoint_kind::chat_completions;
    ctx.body = body;
    ctx.target = &f.target;
    auto r = providers::decode_request(ctx);
    auto req = f.adapter->encode(ctx);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(req);
  }
}
BENCHMARK(BM_DecodeEncodeRequest);

void BM_ScanUsage(benchmark::State& state) {
  const std::string body =
      R"({"id":"chatcmpl-bench","object":"chat.completion","created":1732000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":22,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_bench"})";
  for (auto _ : state) {
    usage_counts u;
    benchmark::DoNotOptimize(providers::scan_usage(body, u));
  }
}
BENCHMARK(BM_ScanUsage);

}  // namespace

BENCHMARK_MAIN();
