// SPDX-License-Identifier: Apache-2.0
// The worker's event loop (gateway/core/event_loop.hpp): run() when it may not spin; polling,
// bounded, while a reply is awaited; sleeping at once when none is.
#include "gateway/core/event_loop.hpp"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <thread>

namespace tollgate {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

std::atomic<long> awaiting{0};
std::atomic<long> asked{0};
std::atomic<clock_type::rep> last_asked{0};
long count_and_answer() {
  ++asked;
  last_asked = clock_type::now().time_since_epoch().count();
  return awaiting.load();
}

struct EventLoopTest : ::testing::Test {
  void SetUp() override {
    awaiting = 0;
    asked = 0;
    last_asked = 0;
  }
  /// Runs the loop with a work guard until another thread posts stop() after `stop_after`;
  /// returns how long the loop ran.
  clock_type::duration run_until_stopped(std::chrono::microseconds spin, clock_type::duration stop_after) {
    auto guard = net::make_work_guard(ioc);
    std::thread stopper([&] {
      std::this_thread::sleep_for(stop_after);
      net::post(ioc, [&] { ioc.stop(); });
    });
    const auto t0 = clock_type::now();
    run_event_loop(ioc, spin, &count_and_answer);
    const auto took = clock_type::now() - t0;
    stopper.join();
    return took;
  }
  net::io_context ioc;
};

TEST_F(EventLoopTest, WithoutSpinItRunsEveryHandlerAndNeverAsks) {
  awaiting = 1;
  int ran = 0;
  for (int i = 0; i < 100; ++i) net::post(ioc, [&] { ++ran; });
  run_event_loop(ioc, 0us, &count_and_answer);  // no work guard: returns when all have run
  EXPECT_EQ(ran, 100);
  EXPECT_EQ(asked.load(), 0);
  EXPECT_TRUE(ioc.stopped());
}

TEST_F(EventLoopTest, RunsHandlersAndReturnsWhenOutOfWorkLikeRun) {
  awaiting = 1;
  int ran = 0;
  std::function<void()> chain = [&] {
    if (++ran < 50) net::post(ioc, chain);  // each handler makes the next one ready
  };
  net::post(ioc, chain);
  run_event_loop(ioc, 1000us, &count_and_answer);
  EXPECT_EQ(ran, 50);
  EXPECT_TRUE(ioc.stopped());
}

TEST_F(EventLoopTest, PollsWhileAReplyIsAwaitedInsteadOfSleeping) {
  awaiting = 1;
  // spin 10 s: the loop polls the whole time, and the stop posted after 30 ms runs from the poll.
  const auto took = run_until_stopped(10'000'000us, 30ms);
  EXPECT_GT(asked.load(), 100) << "it slept instead of polling";
  EXPECT_LT(took, 5s) << "the handler posted during the spin did not run at once";
  EXPECT_TRUE(ioc.stopped());
}

TEST_F(EventLoopTest, SleepsAtOnceWhenNoReplyIsAwaited) {
  awaiting = 0;
  const auto took = run_until_stopped(10'000'000us, 30ms);
  EXPECT_LE(asked.load(), 2) << "it polled with no reply awaited";
  EXPECT_GE(asked.load(), 1);
  EXPECT_LT(took, 5s);
}

TEST_F(EventLoopTest, TheSpinIsBoundedThenItSleeps) {
  awaiting = 1;
  const auto t0 = clock_type::now();
  run_until_stopped(1000us, 300ms);  // spins 1 ms, then sleeps until the stop at 300 ms
  ASSERT_GT(asked.load(), 0);
  const auto last = clock_type::time_point(clock_type::duration(last_asked.load()));
  EXPECT_LT(last - t0, 150ms) << "it kept polling past its bound";
}

TEST_F(EventLoopTest, StopsPollingAsSoonAsTheReplyHasCome) {
  awaiting = 1;
  std::thread answer([] {
    std::this_thread::sleep_for(20ms);
    awaiting = 0;  // the reply came (in the worker, a handler would have counted it)
  });
  const auto t0 = clock_type::now();
  run_until_stopped(10'000'000us, 300ms);
  answer.join();
  const auto last = clock_type::time_point(clock_type::duration(last_asked.load()));
  EXPECT_LT(last - t0, 150ms) << "it kept polling with no reply awaited";
}

}  // namespace
}  // namespace tollgate
