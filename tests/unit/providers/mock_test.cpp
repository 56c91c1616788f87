// SPDX-License-Identifier: Apache-2.0
#include "providers/mock/mock_adapter.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <future>

#include <boost/asio/use_future.hpp>
#include <boost/json/parse.hpp>

#include "policy/policy.hpp"
#include "providers/openai/openai_compatible_adapter.hpp"
#include "providers/unified.hpp"
#include "gateway/core/sse.hpp"

namespace tollgate::providers {
namespace {

TEST(MockAdapterTest, WordsAreDeterministicAndOfTheRequestedLength) {
  auto a = mock_adapter::words_for("hello", 16);
  auto b = mock_adapter::words_for("hello", 16);
  auto c = mock_adapter::words_for("goodbye", 16);
  ASSERT_EQ(a.size(), 16u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_TRUE(mock_adapter::words_for("x", 0).empty());
}

TEST(MockAdapterTest, EmbeddingsAreDeterministicUnitVectors) {
  auto a = mock_adapter::embedding_for("text", 64);
  auto b = mock_adapter::embedding_for("text", 64);
  ASSERT_EQ(a.size(), 64u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, mock_adapter::embedding_for("other", 64));
  double norm = 0;
  for (float x : a) norm += double(x) * x;
  EXPECT_NEAR(std::sqrt(norm), 1.0, 1e-5);
}

/// Takes what the mock sends; refuses the chunk numbered `refuse_at` (0 = the role chunk), as
/// the gateway's sink does when the caller has left or a filter blocked the stream.
struct refusing_sink final : response_sink {
  int refuse_at = -1;
  int chunks = 0;
  std::string sent;
  awaitable<bool> send_full(unsigned, std::string_view, std::string body, const header_list&) override {
    sent += body;
    co_return true;
  }
  awaitable<bool> start_stream(unsigned, std::string_view, const header_list&) override { co_return true; }
  awaitable<bool> send_chunk(std::string_view data) override {
    if (chunks++ == refuse_at) co_return false;
    sent += data;
    co_return true;
  }
  awaitable<bool> end_stream() override { co_return true; }
  void abort() override {}
};

TEST(MockAdapterTest, AWordIsBilledWhenItsSendFails) {
  config::provider_config cfg;
  cfg.name = "mock";
  cfg.type = "mock";
  const mock_adapter mock(cfg);
  const route_target target{&mock, "mock-1"};
  for (const int refuse_at : {-1, 1, 3}) {
    request_context ctx;
    ctx.endpoint = endpoint_kind::chat_completions;
    ctx.body = R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5})";
    ASSERT_TRUE(decode_request(ctx));
    ctx.target = &target;
    refusing_sink sink;
    sink.refuse_at = refuse_at;
    net::io_context ioc;
    auto done = net::co_spawn(ioc, mock.serve(ctx, sink), net::use_future);
    ioc.run();
    done.get();
    // Chunk k (k ≥ 1) carries word k: a refused chunk's word was generated, so it is billed.
    const std::size_t words = refuse_at < 0 ? 5 : std::size_t(refuse_at);
    EXPECT_EQ(ctx.usage.completion, words) << "refused at " << refuse_at;
    const auto all = mock_adapter::words_for("hi", 5);
    std::uint64_t chars = 0;
    for (std::size_t i = 0; i < words; ++i) chars += all[i].size() + (i ? 1 : 0);
    EXPECT_EQ(ctx.relayed_completion_chars, chars);
    // The caller got the words before the refused chunk, and not the refused one.
    const std::size_t delivered = refuse_at < 0 ? 5 : words - 1;
    std::string want, got;
    for (std::size_t i = 0; i < delivered; ++i) want.append(i ? " " : "").append(all[i]);
    sse::parser p;
    std::vector<sse::event> events;
    ASSERT_TRUE(p.feed(sink.sent, events));
    for (auto& e : events) {
      if (e.data == "[DONE]") continue;
      const auto chunk = boost::json::parse(e.data);
      for (auto& c : chunk.at("choices").as_array())
        if (auto* t = c.at("delta").as_object().if_contains("content"); t && t->is_string()) got += t->as_string();
    }
    EXPECT_EQ(got, want) << "refused at " << refuse_at;
  }
}

/// A chat call a provider answered with `status`.
request_context answered(unsigned status) {
  request_context ctx;
  ctx.endpoint = endpoint_kind::chat_completions;
  ctx.upstream_answered = true;
  ctx.status = status;
  return ctx;
}

TEST(PolicySettleTest, UnreportedUsageIsCountedFromRelayedText) {
  request_context ctx = answered(200);
  ctx.prompt_estimate = 12;
  ctx.relayed_completion_chars = 41;  // a stream cut short, without a usage chunk
  policy::fill_usage(ctx);
  EXPECT_EQ(ctx.usage.prompt, 12u);
  EXPECT_EQ(ctx.usage.completion, 11u);  // ceil(41 / 4)
  EXPECT_FALSE(ctx.usage.reported);
}

TEST(PolicySettleTest, ReportedUsageIsKeptAndUnansweredCallsAreNotBilled) {
  request_context reported = answered(200);
  reported.usage = {7, 9, 0, 0, true};
  reported.relayed_completion_chars = 1000;
  policy::fill_usage(reported);
  EXPECT_EQ(reported.usage.prompt, 7u);
  EXPECT_EQ(reported.usage.completion, 9u);

  request_context refused;  // connect failed: the provider produced nothing
  refused.endpoint = endpoint_kind::chat_completions;
  refused.status = 502;
  refused.prompt_estimate = 50;
  policy::fill_usage(refused);
  EXPECT_EQ(refused.usage.prompt, 0u);

  request_context error_status = answered(429);  // an error status costs nothing
  error_status.prompt_estimate = 50;
  policy::fill_usage(error_status);
  EXPECT_EQ(error_status.usage.prompt, 0u);
}

TEST(PolicySettleTest, AStreamItsProviderRefusedInBandBeforeAnyOutputCostsNothing) {
  // A 200 head, then an error event (Bedrock's throttlingException frame, Gemini's
  // RESOURCE_EXHAUSTED), or a reset: how the stream ended, and what it relayed first.
  auto ended = [](std::string details, std::uint64_t relayed_chars) {
    request_context ctx = answered(200);
    ctx.stream = true;
    ctx.prompt_estimate = 50;
    ctx.refused_in_band = details == "upstream_stream_error";
    ctx.details = std::move(details);
    ctx.relayed_completion_chars = relayed_chars;
    policy::fill_usage(ctx);
    return ctx;
  };
  // Refused in-band before any output: not charged by the provider, so not billed either.
  const auto refused = ended("upstream_stream_error", 0);
  EXPECT_EQ(refused.usage.prompt, 0u);
  EXPECT_EQ(refused.usage.completion, 0u);
  EXPECT_FALSE(policy::billable(refused));
  // The same error after some output: what was generated is billed, with the prompt.
  const auto late = ended("upstream_stream_error", 8);
  EXPECT_EQ(late.usage.prompt, 50u);
  EXPECT_EQ(late.usage.completion, 2u);
  // Cut by a reset before any output: the provider may have read the prompt; billed it.
  EXPECT_EQ(ended("upstream_reset", 0).usage.prompt, 50u);
  // The caller leaving as the refusal was written overwrites the details, not the refusal.
  request_context gone = answered(200);
  gone.stream = true;
  gone.prompt_estimate = 50;
  gone.refused_in_band = true;
  gone.details = "client_disconnected";
  policy::fill_usage(gone);
  EXPECT_FALSE(policy::billable(gone));
  EXPECT_EQ(gone.usage.prompt, 0u);
}

TEST(PolicySettleTest, ReportedUsageWithoutOutputIsCompletedFromTheRelayedText) {
  // A server's usage object said only the prompt (sent early, or partial), and the stream was
  // then cut: the text relayed was generated, and is billed.
  request_context partial = answered(200);
  partial.usage = {7, 0, 0, 0, true};
  partial.relayed_completion_chars = 40;
  policy::fill_usage(partial);
  EXPECT_EQ(partial.usage.prompt, 7u);
  EXPECT_EQ(partial.usage.completion, 10u);
  request_context silent = partial;  // nothing relayed: a reported 0 stands
  silent.usage = {7, 0, 0, 0, true};
  silent.relayed_completion_chars = 0;
  policy::fill_usage(silent);
  EXPECT_EQ(silent.usage.completion, 0u);
}

TEST(PolicySettleTest, ReportedUsageWithoutAPromptCountBillsThePromptEstimate) {
  // A local server's usage with only completion_tokens (or prompt_tokens: null): the prompt was
  // read all the same, so its estimate is billed, not 0.
  request_context no_prompt = answered(200);
  no_prompt.prompt_estimate = 120;
  no_prompt.usage = {0, 9, 0, 0, true};
  policy::fill_usage(no_prompt);
  EXPECT_EQ(no_prompt.usage.prompt, 120u);
  EXPECT_EQ(no_prompt.usage.completion, 9u);
  // Through the reader the OpenAI-compatible adapter uses, a null count reads as absent.
  request_context read = answered(200);
  read.prompt_estimate = 33;
  ASSERT_TRUE(scan_usage(R"({"choices":[],"usage":{"prompt_tokens":null,"completion_tokens":4}})", read.usage));
  policy::fill_usage(read);
  EXPECT_EQ(read.usage.prompt, 33u);
  EXPECT_EQ(read.usage.completion, 4u);
  request_context counted = answered(200);  // a reported count is never replaced by the estimate
  counted.prompt_estimate = 120;
  counted.usage = {80, 9, 0, 0, true};
  policy::fill_usage(counted);
  EXPECT_EQ(counted.usage.prompt, 80u);
}

TEST(PolicySettleTest, AWholeAnswerWhoseBodyNeverArrivedIsBilledAtItsReservation) {
  // n answers of max_tokens each: the most it can have cost, as reserved at admission.
  request_context cut = answered(502);  // the caller got 502; the provider's 200 is billed
  cut.upstream_status = 200;
  cut.answer_unread = true;
  cut.prompt_estimate = 50;
  cut.max_output_tokens = 30;
  cut.choices = 2;
  policy::fill_usage(cut);
  EXPECT_EQ(cut.usage.prompt, 50u);
  EXPECT_EQ(cut.usage.completion, 60u);
  EXPECT_EQ(policy::reserved_output_tokens(cut, 999), 60u);
  cut.max_output_tokens = 0;  // none asked: the configured default
  EXPECT_EQ(policy::reserved_output_tokens(cut, 999), 1998u);
  cut.endpoint = endpoint_kind::embeddings;
  EXPECT_EQ(policy::reserved_output_tokens(cut, 999), 0u);
}

}  // namespace
}  // namespace tollgate::providers
