// SPDX-License-Identifier: Apache-2.0
#pragma once
/// One Redis connection adapted to Asio coroutines: hiredis' async context driven by Asio waits on
/// its socket, commands pipelined on that socket, reconnect with exponential backoff.
///
/// Errors (all `boost::asio::error` codes, so callers compare against the usual names):
///   - net::error::not_connected        the connection is not up (fails at once, never waits)
///   - net::error::timed_out            no reply within options.timeout; the connection is dropped
///                                      and reconnected, and every command in flight fails the same way
///   - net::error::connection_reset     the connection was lost (I/O error, EOF, protocol error)
///                                      while the command was in flight
///   - net::error::operation_aborted    close() or the destructor ran while the command was in flight
///   - net::error::invalid_argument     empty argv
///   - net::error::operation_not_supported  command() on a connection in subscriber mode
/// A Redis error reply (`-ERR ...`) is not a failure: it is a reply of kind::error.
/// hiredis writes with write(2): the process must ignore SIGPIPE (gateway/main.cpp does), or a
/// write into a connection the server (or the TLS relay) has closed kills it.
#include <boost/system/result.hpp>

#include <charconv>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/core/net.hpp"

namespace tollgate::policy::redis {

/// A RESP2 reply, copied out of hiredis (which frees its own reply when the callback returns).
struct reply {
  enum class kind { nil, integer, string, status, error, array };
  kind type = kind::nil;
  long long integer = 0;
  std::string str;              ///< string, status, error text
  std::vector<reply> elements;  ///< array
};

/// TLS to Redis (store.redis.tls). hiredis 0.14 has none: policy/redis_tls.hpp relays its plain
/// RESP through a TLS connection made with Asio and OpenSSL.
struct tls_options {
  bool enabled = false;
  bool verify = true;               ///< verify the server's chain and name (never turn off outside tests)
  std::string ca_file;              ///< CAs to trust besides the system's
  std::string cert_file, key_file;  ///< a client certificate, for Redis's tls-auth-clients
  std::string server_name;          ///< the name to verify and send as SNI; empty: the host
};

struct options {
  std::string host = "127.0.0.1";  ///< an IP address, or a name resolved (Asio's resolver) at every attempt
  std::uint16_t port = 6379;
  std::string unix_path;             ///< non-empty: connect over this unix socket instead
  std::string username, password;    ///< AUTH [username] password after connect when password is set
  unsigned db = 0;                   ///< SELECT when non-zero
  std::chrono::milliseconds timeout{50};  ///< per command
  std::chrono::milliseconds connect_timeout{200};  ///< TCP connect, then each handshake step
  std::chrono::milliseconds backoff_min{50}, backoff_max{2000};
  tls_options tls;  ///< TCP only (not with unix_path)
};

/// Arguments written straight into RESP ("$<len>\r\n<bytes>\r\n" each), without a string per
/// argument: the policy scripts take hundreds of small arguments per batch.
class resp_args {
 public:
  void add(std::string_view s) {
    char h[24];
    h[0] = '$';
    char* end = std::to_chars(h + 1, h + sizeof h - 2, s.size()).ptr;
    *end++ = '\r';
    *end++ = '\n';
    buf_.append(h, std::size_t(end - h)).append(s.data(), s.size()).append("\r\n", 2);
    ++n_;
  }
  /// A number: its bulk string written whole on the stack, then one append (the admission
  /// script's arguments are mostly numbers, ~25 per call).
  template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, char>)
  void add(T v) {
    char b[32];  // "$" and up to 2 length digits and "\r\n" before b + 5; up to 20 digits; "\r\n"
    char* const digits = b + 5;
    char* end = std::to_chars(digits, b + sizeof b - 2, v).ptr;
    const auto len = std::size_t(end - digits);  // 1 to 20
    char* start = digits - 2;
    start[0] = '\r';
    start[1] = '\n';
    if (len >= 10) *--start = char('0' + len % 10);
    *--start = char('0' + (len >= 10 ? len / 10 : len));
    *--start = '$';
    *end++ = '\r';
    *end++ = '\n';
    buf_.append(start, std::size_t(end - start));
    ++n_;
  }
  /// Appends every argument of `o`, in order.
  void append(const resp_args& o) {
    buf_ += o.buf_;
    n_ += o.n_;
  }
  std::size_t count() const { return n_; }
  std::string_view bytes() const { return buf_; }
  void reserve(std::size_t bytes) { buf_.reserve(bytes); }

 private:
  std::string buf_;
  std::size_t n_ = 0;
};

/// The whole command: `head` (the command name and its first arguments), then `tail`'s arguments.
std::string resp_command(std::span<const std::string_view> head, const resp_args& tail);
/// The same with the arguments of several parts, in order, each copied once (an admission batch's
/// keys, header and calls: no part is first appended to another).
std::string resp_command(std::span<const std::string_view> head, std::span<const resp_args* const> parts);

enum class state { connecting, up, down };

/// One Redis connection on one executor (a worker's io_context). Not thread-safe: every call on the
/// executor's thread. Callbacks (on_message, on_state) and command completions run on the executor,
/// never inside hiredis, so they may call any member, close() included.
///
/// Connecting is: a host name resolved (each of its addresses tried in turn) → TCP/unix connect
/// (connect_timeout) → AUTH when a password is set, SELECT when db is non-zero, or a PING when
/// neither (so `up` always means the server answered) → the on_connect hook → SUBSCRIBE in
/// subscriber mode → up. A failure at any step drops the connection and retries after a backoff
/// that doubles from backoff_min to backoff_max (each wait jittered: jittered_backoff) and resets after a connection that stayed up for
/// at least backoff_max (one that drops sooner keeps the doubled backoff). A READONLY
/// answer (the server became a replica) drops it too. Answers that say something about the server
/// (Cluster refusals, LOADING, OOM, ...) become last_error() until the next good answer.
class connection {
 public:
  connection(executor_t ex, options o);
  /// Closes; pending commands complete with operation_aborted.
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  /// Connects now; on failure or loss reconnects with exponential backoff (min..max) forever until
  /// close(). Call once, after subscribe()/on_state()/on_connect().
  void start();
  /// Drops the connection and stops reconnecting; pending commands complete with operation_aborted.
  /// on_state is not called. Idempotent.
  void close();
  /// Drops the connection as a lost one (on_state(false), then reconnects with the backoff), with
  /// `why` as last_error() (told to on_error): for a connection its owner finds no longer works,
  /// such as a subscriber that stopped delivering. Nothing when it is not up.
  void reconnect(std::string why);
  state current() const;
  bool up() const;
  /// When the connection gives up on the oldest command on the wire (its timeout drops the
  /// connection, failing every later command with it); time_point::max() when none is pending.
  std::chrono::steady_clock::time_point gives_up_at() const;
  /// Why the last connection attempt failed, when known (resolution, TLS set-up and handshake),
  /// empty once an attempt succeeds; or, while up, the last answer that said something about the
  /// server (a Cluster refusal, READONLY, LOADING, OOM, ...), empty again at the next good answer.
  std::string last_error() const;

  /// Sends one command given as argv (binary-safe, redisAsyncCommandArgv). Many may be in flight:
  /// they pipeline on the one socket and complete in order. `argv` is copied into the send buffer
  /// before the first suspension. Completes with the reply or an error code (see the file comment):
  /// not up → not_connected at once; no reply within options.timeout → timed_out, and the connection
  /// is dropped and reconnected (a Redis that is slow is treated as down); connection lost →
  /// connection_reset.
  awaitable<boost::system::result<reply>> command(std::span<const std::string_view> argv);
  /// command() for a command already in RESP form (resp_command()): sent as is, copied into the
  /// send buffer before the first suspension.
  awaitable<boost::system::result<reply>> command_resp(std::string_view resp);

  /// Subscriber mode (use a dedicated connection; command() is then refused): SUBSCRIBE `channel`
  /// after every (re)connect; `on_message(payload)` per message. The connection is up only once the
  /// subscription is confirmed. Call before start().
  void subscribe(std::string channel, std::function<void(std::string_view)> on_message);
  /// Called with true after each successful connect+AUTH+SELECT(+hook)(+SUBSCRIBE), and with false
  /// when such a connection is lost. Call before start().
  void on_state(std::function<void(bool)> cb);
  /// Called with each new reason the connection is down or refused (last_error(), when it changes
  /// to something other than empty). Call before start().
  void on_error(std::function<void(const std::string&)> cb);
  /// Optional hook run after each connect+AUTH+SELECT and before the connection reports up, e.g. to
  /// SCRIPT LOAD. It sends with setup_command(). Returning false drops the connection, which is then
  /// retried with backoff. Call before start(); may be left unset.
  void on_connect(std::function<awaitable<bool>()> hook);
  /// command() for the on_connect hook: accepted only while the hook runs (not_connected otherwise).
  /// Its timeout is options.connect_timeout.
  awaitable<boost::system::result<reply>> setup_command(std::span<const std::string_view> argv);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

/// The wait before a reconnect attempt whose backoff step is `step`: a point drawn by `random` in
/// [step/2, step] ("equal jitter"), never longer than the step. Every worker of every replica loses
/// its connection at the same moment when Redis restarts; without jitter they would all retry in the
/// same millisecond at every step, a wave each time.
std::chrono::milliseconds jittered_backoff(std::chrono::milliseconds step, std::uint64_t random);

/// For tests: a host name is resolved by `resolve` instead of Asio's resolver (the addresses to
/// try, in order; empty: the name does not resolve), as if DNS answered that. Null: the resolver
/// again. Not for use while connections attempt.
void resolve_host_names_for_tests(std::vector<std::string> (*resolve)(const std::string& host));

}  // namespace tollgate::policy::redis
