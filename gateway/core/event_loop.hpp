// SPDX-License-Identifier: Apache-2.0
#pragma once
/// A worker's event loop: io_context::run(), except that a worker with nothing ready to run while
/// its callers await a reply (a Redis admission) keeps polling its sockets for a bounded time
/// before it sleeps in epoll_wait. The reply then finds the thread awake: no wake-up of a
/// sleeping thread (and, on a VM, of a halted vCPU) between the store's answer and the calls it
/// admits. docs/adr/0010-busy-poll-while-an-admission-is-due.md has the measurements.
#include <chrono>

#include "gateway/core/net.hpp"

namespace tollgate {

/// Runs `ioc` until it is stopped. `spin` 0: exactly io_context::run(). Otherwise, whenever no
/// handler is ready and `awaited()` is above 0, polls (non-blocking epoll_wait and the handlers it
/// makes ready), yielding the CPU between polls to any thread waiting for it (on a shared core
/// that may be Redis itself), until a handler runs, `awaited()` drops to 0 or `spin` has passed;
/// then blocks as run() would. A loaded worker never gets there (it always has a handler ready),
/// and an idle one spins at most `spin` per wait. Exceptions from handlers propagate, as from
/// run().
void run_event_loop(net::io_context& ioc, std::chrono::microseconds spin, long (*awaited)());

}  // namespace tollgate
