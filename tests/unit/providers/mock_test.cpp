// SPDX-License-Identifier: Apache-2.0
#include "providers/mock/mock_adapter.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "policy/policy.hpp"

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
  reported.usage = {7, 9, 0, true};
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

TEST(PolicySettleTest, ReportedUsageWithoutOutputIsCompletedFromTheRelayedText) {
  // A server's usage object said only the prompt (sent early, or partial), and the stream was
  // then cut: the text relayed was generated, and is billed.
  request_context partial = answered(200);
  partial.usage = {7, 0, 0, true};
  partial.relayed_completion_chars = 40;
  policy::fill_usage(partial);
  EXPECT_EQ(partial.usage.prompt, 7u);
  EXPECT_EQ(partial.usage.completion, 10u);
  request_context silent = partial;  // nothing relayed: a reported 0 stands
  silent.usage = {7, 0, 0, true};
  silent.relayed_completion_chars = 0;
  policy::fill_usage(silent);
  EXPECT_EQ(silent.usage.completion, 0u);
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
