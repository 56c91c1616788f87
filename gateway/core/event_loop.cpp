// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/event_loop.hpp"

#include <thread>

namespace tollgate {

void run_event_loop(net::io_context& ioc, std::chrono::microseconds spin, long (*awaited)()) {
  if (spin.count() <= 0 || awaited == nullptr) {
    ioc.run();
    return;
  }
  using clock = std::chrono::steady_clock;
  while (!ioc.stopped()) {
    if (ioc.poll() > 0) continue;  // ran what was ready (and what that made ready)
    bool ran = false;
    if (awaited() > 0) {
      const auto until = clock::now() + spin;
      do {
        ran = ioc.poll_one() > 0;
        if (!ran) std::this_thread::yield();  // a runnable thread on this CPU (Redis?) goes first
      } while (!ran && !ioc.stopped() && awaited() > 0 && clock::now() < until);
    }
    if (!ran) ioc.run_one();  // sleeps until something is ready (returns at once once stopped)
  }
}

}  // namespace tollgate
