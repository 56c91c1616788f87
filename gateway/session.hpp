// SPDX-License-Identifier: Apache-2.0
#pragma once
/// A client connection: a coroutine that owns its stream for life, on one worker. Reads each
/// request under the head/body limits and timeouts, refuses ambiguous framing, hands the request
/// to the pipeline, and keeps the connection alive between requests.
#include <boost/asio/ssl/context.hpp>

#include "gateway/worker.hpp"

namespace tollgate::gateway {

enum class listener_kind { caller, admin };

/// Runs one plain-TCP connection to its end. `socket` must belong to w's io_context.
awaitable<void> run_session(worker& w, socket_t socket, listener_kind kind);

/// Runs one TLS connection (handshake first) to its end.
awaitable<void> run_tls_session(worker& w, socket_t socket, std::shared_ptr<net::ssl::context> tls,
                                std::uint64_t tls_generation, listener_kind kind);

}  // namespace tollgate::gateway
