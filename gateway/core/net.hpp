// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Namespace aliases and the default-token types used by every coroutine in the gateway.
/// Every co_await on these objects yields error codes as values (no exceptions on the data plane):
///   auto [ec, n] = co_await stream.async_read_some(buf);
/// Boost 1.81: bare `co_await op()` and `net::as_tuple` without use_awaitable do not exist yet.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace tollgate {
namespace net = boost::asio;
namespace beast = boost::beast;

/// Every coroutine runs on a worker's io_context: its concrete executor, not the type-erased
/// any_io_executor, whose copies, moves and prefer() calls cost ~3k instructions a request.
using base_executor_t = net::io_context::executor_type;
using token_t = net::as_tuple_t<net::use_awaitable_t<base_executor_t>>;
using executor_t = token_t::executor_with_default<base_executor_t>;
using stream_t = beast::tcp_stream::rebind_executor<executor_t>::other;
using socket_t = net::ip::tcp::socket::rebind_executor<executor_t>::other;
using acceptor_t = net::ip::tcp::acceptor::rebind_executor<executor_t>::other;
using resolver_t = net::ip::tcp::resolver::rebind_executor<executor_t>::other;
using steady_timer_t = net::steady_timer::rebind_executor<executor_t>::other;

template <class T = void>
using awaitable = net::awaitable<T, base_executor_t>;

}  // namespace tollgate
