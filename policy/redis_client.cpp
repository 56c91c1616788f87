// SPDX-License-Identifier: Apache-2.0
#include "policy/redis_client.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <mutex>
#include <random>
#include <utility>

#include "policy/redis_tls.hpp"

/// How this file is put together (hiredis 0.14.1, no SSL):
///  - A `redis_link` owns one redisAsyncContext: the Asio waits on its socket (the "event adapter"), the
///    FIFO of commands in flight and the timer for the oldest one. It lives in a shared_ptr; every
///    Asio handler holds a reference and every call into hiredis is made while one is held, so the
///    `redis_link*` that hiredis hands back to the C callbacks is always alive.
///  - hiredis frees the context by itself (EOF, I/O error, failed connect) from inside
///    redisAsyncHandleRead/Write. It calls ev.cleanup first; there the redis_link forgets `ac`, releases
///    (does not close: hiredis owns the fd) the descriptor and wakes the supervisor.
///  - No user code runs inside hiredis: replies are copied out, and their callers resume after
///    redisAsyncHandleRead has returned (in order, on the same thread, not posted: under load a
///    posted completion waits a whole pass of the worker's handler queue); failures are posted;
///    pub/sub payloads are posted; connect/subscribe confirmations only set flags and cancel a timer.
///  - A command is written when sent (write_now), not after a writability wait; what the socket
///    does not take is left to the armed wait.
///  - `impl::supervise` is one coroutine per connection: connect, handshake, up, wait for loss,
///    back off, again, until close().
namespace tollgate::policy::redis {
namespace {

using clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using result_t = boost::system::result<reply>;
using descriptor_t = net::posix::basic_stream_descriptor<executor_t>;
using signature = void(error_code, reply);

result_t failed(net::error::basic_errors e) { return result_t(error_code(net::error::make_error_code(e))); }

reply convert(const redisReply* r) {
  reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = reply::kind::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = reply::kind::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = reply::kind::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = reply::kind::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = reply::kind::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:  // REDIS_REPLY_NIL
      break;
  }
  return out;
}

/// A type-erased completion handler for one command. complete() posts it to its executor, so it
/// never runs inside hiredis; dispatch() runs it at once when the caller is already on that
/// executor (and outside hiredis).
struct completion {
  virtual ~completion() = default;
  virtual void complete(error_code ec, reply r) = 0;
  virtual void dispatch(error_code ec, reply r) = 0;
};

template <class Handler>
struct completion_for final : completion {
  completion_for(Handler h, executor_t fallback) : handler_(std::move(h)), fallback_(std::move(fallback)) {}
  void complete(error_code ec, reply r) override {
    auto ex = net::get_associated_executor(handler_, fallback_);
    net::post(ex, [h = std::move(handler_), ec, r = std::move(r)]() mutable { std::move(h)(ec, std::move(r)); });
  }
  void dispatch(error_code ec, reply r) override {
    auto ex = net::get_associated_executor(handler_, fallback_);
    net::dispatch(ex, [h = std::move(handler_), ec, r = std::move(r)]() mutable { std::move(h)(ec, std::move(r)); });
  }
  Handler handler_;
  executor_t fallback_;
};

struct pending_command {
  clock::time_point deadline;
  std::unique_ptr<completion> done;
};

void ev_add_read(void* p);
void ev_del_read(void* p);
void ev_add_write(void* p);
void ev_del_write(void* p);
void ev_cleanup(void* p);
void on_connected(const redisAsyncContext* ac, int status);
void on_reply(redisAsyncContext* ac, void* r, void* privdata);
void on_sub_reply(redisAsyncContext* ac, void* r, void* privdata);

/// One hiredis async context and its Asio event adapter.
struct redis_link : std::enable_shared_from_this<redis_link> {
  explicit redis_link(executor_t e) : ex(e), fd(e), deadline_timer(e), event(e) {}
  redis_link(const redis_link&) = delete;
  redis_link& operator=(const redis_link&) = delete;
  ~redis_link() {
    // The supervisor and close() free every context; a context still here would dangle into us.
    if (ac != nullptr) {
      ac->ev.addRead = ac->ev.delRead = ac->ev.addWrite = ac->ev.delWrite = ac->ev.cleanup = nullptr;
      ac->ev.data = ac->data = nullptr;
      release_fd();
      redisAsyncContext* c = std::exchange(ac, nullptr);
      pending.clear();  // the NULL-reply callbacks below find nothing to complete
      redisAsyncFree(c);
    }
  }

  executor_t ex;
  redisAsyncContext* ac = nullptr;  ///< null once hiredis has cleaned up (or before open)
  descriptor_t fd;
  steady_timer_t deadline_timer;  ///< the oldest pending command's deadline
  steady_timer_t event;           ///< the supervisor waits on it; cancelled on connect/subscribe/loss
  std::deque<pending_command> pending;
  error_code fail_code;  ///< why we dropped it (timed_out, operation_aborted); empty: lost by itself
  std::function<void(std::string)> deliver;  ///< subscriber: hands a payload to the owner (posted)
  /// Told of an error reply worth logging (its text), and once with "" at the next good reply.
  std::function<void(std::string)> note_error;
  bool error_noted = false;  ///< note_error was last told of an error
  bool readonly = false;     ///< dropped because the server answered READONLY
  bool want_read = false, want_write = false, read_waiting = false, write_waiting = false;
  bool timer_armed = false, connected = false, subscribed = false, gone = false;
  bool sub_refused = false;  ///< Redis answered SUBSCRIBE with an error (and the hiredis passed it on)
  std::uint64_t timer_generation = 0;  ///< numbers deadline_timer's waits (arm_deadline)
  int depth = 0;  ///< > 0 while inside redisAsyncHandleRead/Write: hiredis must not be freed then
  bool reading = false;  ///< inside on_ready's redisAsyncHandleRead: replies wait in `replied`
  bool sending = false;  ///< inside send(): the write is made at once, not armed
  /// Replies read by one redisAsyncHandleRead, completed when it has returned. Under load a
  /// posted completion waits behind every handler already queued on the worker (hundreds of
  /// µs); the caller is the batch that the next one waits for, so it runs at once instead.
  std::vector<std::pair<std::unique_ptr<completion>, reply>> replied;

  std::shared_ptr<tls_bridge> bridge;  ///< the TLS relay this context talks through, if any

  bool live() const { return ac != nullptr && connected && !gone; }

  /// An error reply. Those that say something about the server rather than the command are noted
  /// for the degraded-mode log line; READONLY (the server is a replica now: a failover moved the
  /// primary, and the address may name the new one) also drops the connection, so that the next
  /// attempt resolves the address again.
  void observe_error(std::string_view e) {
    std::string_view code = e.substr(0, e.find(' '));
    // Redis before 7 wraps what a script's command got: "ERR Error running script ... -READONLY ...".
    if (code == "ERR" && e.find("-READONLY ") != std::string_view::npos) code = "READONLY";
    std::string why;
    if (code == "MOVED" || code == "ASK" || code == "CROSSSLOT" || code == "CLUSTERDOWN")
      why = "Redis Cluster answered '" + std::string(e.substr(0, 120)) +
            "': Tollgate needs one Redis endpoint that serves every key (a standalone or failover-managed "
            "primary, or a Cluster proxy that routes EVALSHA by its first key); it does not follow Cluster "
            "redirections";
    else if (code == "READONLY")
      why = "Redis answered READONLY: the server is a replica (after a failover?); reconnecting";
    else if (code == "LOADING" || code == "MASTERDOWN" || code == "OOM" || code == "NOPERM" || code == "BUSY" ||
             code == "MISCONF" || code == "NOAUTH" || code == "WRONGTYPE")
      why = "Redis answered '" + std::string(e.substr(0, 160)) + "'";
    if (why.empty()) return;
    error_noted = true;
    if (note_error) note_error(std::move(why));
    if (code == "READONLY" && !readonly) {
      readonly = true;
      drop(net::error::connection_reset);
    }
  }

  /// Starts a non-blocking connect (to `via`, a TLS bridge's socket, when given). False: failed
  /// at once (the redis_link is then gone).
  bool open(const options& o, const std::string& via = {}) {
    const std::string& unix_path = via.empty() ? o.unix_path : via;
    redisAsyncContext* c = unix_path.empty() ? redisAsyncConnect(o.host.c_str(), o.port)
                                             : redisAsyncConnectUnix(unix_path.c_str());
    if (c == nullptr || c->err != 0) {
      if (c != nullptr) redisAsyncFree(c);
      gone = true;
      return false;
    }
    ac = c;
    c->data = this;
    c->ev.data = this;
    c->ev.addRead = ev_add_read;
    c->ev.delRead = ev_del_read;
    c->ev.addWrite = ev_add_write;
    c->ev.delWrite = ev_del_write;
    c->ev.cleanup = ev_cleanup;
    error_code ec;
    fd.assign(c->c.fd, ec);
    if (ec) {
      drop(ec);
      return false;
    }
    // Arms the first write wait: writability is how hiredis learns the connect finished.
    redisAsyncSetConnectCallback(c, on_connected);
    return true;
  }

  void arm_read() {
    if (read_waiting || gone || ac == nullptr) return;
    read_waiting = true;
    fd.async_wait(descriptor_t::wait_read, [self = shared_from_this()](error_code ec) { self->on_ready(ec, true); });
  }

  void arm_write() {
    if (write_waiting || gone || ac == nullptr) return;
    write_waiting = true;
    fd.async_wait(descriptor_t::wait_write, [self = shared_from_this()](error_code ec) { self->on_ready(ec, false); });
  }

  void on_ready(error_code ec, bool read) {
    (read ? read_waiting : write_waiting) = false;
    if (ac == nullptr || gone) return;  // released at cleanup: the wait was cancelled
    if (ec) {
      if (ec != net::error::operation_aborted) drop(net::error::connection_reset);
      return;
    }
    if (read ? want_read : want_write) {
      ++depth;
      if (read) {
        reading = true;
        redisAsyncHandleRead(ac);  // may free the context (then ev_cleanup has run)
        reading = false;
      } else {
        redisAsyncHandleWrite(ac);
      }
      --depth;
    }
    if (read ? want_read : want_write) read ? arm_read() : arm_write();
    if (read && !replied.empty()) {
      // Outside hiredis now: the callers resume here, in order (this handler holds `self`).
      auto done = std::move(replied);
      replied.clear();
      for (auto& [c, r] : done) c->dispatch({}, std::move(r));
    }
  }

  /// Writes hiredis' output buffer now rather than after a writability wait: the socket is
  /// almost always writable, and the wait would queue the batch behind every handler pending on
  /// the worker. What the socket does not take is left to the armed wait.
  void write_now() {
    if (!want_write || gone || ac == nullptr) return;
    if (depth > 0) {  // inside hiredis (never, today): write when it has returned
      arm_write();
      return;
    }
    ++depth;
    redisAsyncHandleWrite(ac);  // may free the context (then ev_cleanup has run)
    --depth;
    if (want_write) arm_write();
  }

  /// Called by hiredis (ev.cleanup) just before it frees the context, after it has run every
  /// pending reply callback with a NULL reply.
  void on_gone() {
    if (gone) return;
    gone = true;
    if (bridge) bridge->close();
    connected = false;
    ac = nullptr;
    release_fd();
    deadline_timer.cancel();
    event.cancel();
    // Nothing should be left (hiredis failed them all just before), but never strand a caller.
    while (!pending.empty()) {
      auto p = std::move(pending.front());
      pending.pop_front();
      p.done->complete(loss_code(), {});
    }
  }

  void release_fd() {
    if (fd.is_open()) (void)fd.release();  // cancels our waits; hiredis closes the fd itself
  }

  error_code loss_code() const {
    return fail_code ? fail_code : error_code(net::error::make_error_code(net::error::connection_reset));
  }

  /// Frees the context now: pending commands fail with `why`, the supervisor wakes and reconnects.
  void drop(error_code why) {
    if (ac == nullptr || gone) return;
    if (!fail_code) fail_code = why;
    if (depth > 0) {  // inside hiredis: it would use the context after we return
      net::post(ex, [self = shared_from_this()] { self->drop(self->fail_code); });
      return;
    }
    auto keep = shared_from_this();
    redisAsyncFree(ac);  // NULL-reply callbacks for every pending command, then ev_cleanup
    on_gone();           // no-op unless hiredis skipped the cleanup hook
  }

  /// Writes one command into hiredis' output buffer; `done` completes with the reply or an error.
  void send(std::span<const std::string_view> argv, clock::duration timeout, std::unique_ptr<completion> done) {
    constexpr std::size_t inline_args = 8;
    std::array<const char*, inline_args> ptr_inline{};
    std::array<std::size_t, inline_args> len_inline{};
    std::vector<const char*> ptr_heap;
    std::vector<std::size_t> len_heap;
    const char** ptrs = ptr_inline.data();
    std::size_t* lens = len_inline.data();
    if (argv.size() > inline_args) {
      ptr_heap.resize(argv.size());
      len_heap.resize(argv.size());
      ptrs = ptr_heap.data();
      lens = len_heap.data();
    }
    for (std::size_t i = 0; i < argv.size(); ++i) {
      ptrs[i] = argv[i].data() != nullptr ? argv[i].data() : "";
      lens[i] = argv[i].size();
    }
    enqueue([&] { return redisAsyncCommandArgv(ac, on_reply, this, static_cast<int>(argv.size()), ptrs, lens); },
            timeout, std::move(done));
  }

  /// send() for a command already in RESP form.
  void send_resp(std::string_view resp, clock::duration timeout, std::unique_ptr<completion> done) {
    enqueue([&] { return redisAsyncFormattedCommand(ac, on_reply, this, resp.data(), resp.size()); }, timeout,
            std::move(done));
  }

  /// Hands one command to hiredis (`command()` returns hiredis' status), queues `done` for its
  /// reply, and writes it at once.
  template <class Command>
  void enqueue(Command command, clock::duration timeout, std::unique_ptr<completion> done) {
    if (!live()) {
      done->complete(net::error::not_connected, {});
      return;
    }
    sending = true;
    const int rc = command();
    sending = false;
    if (rc != REDIS_OK) {
      done->complete(net::error::not_connected, {});
      return;
    }
    const auto due = clock::now() + timeout;
    pending.push_back({due, std::move(done)});
    arm_deadline(due);
    write_now();
  }

  /// SUBSCRIBE channel; confirmations and messages arrive in on_sub_reply.
  bool send_subscribe(const std::string& channel) {
    if (!live()) return false;
    std::array<const char*, 2> ptrs{"SUBSCRIBE", channel.c_str()};
    std::array<std::size_t, 2> lens{9, channel.size()};
    return redisAsyncCommandArgv(ac, on_sub_reply, this, 2, ptrs.data(), lens.data()) == REDIS_OK;
  }

  /// One timer for the whole FIFO, armed for the earliest deadline it has seen. Replies do not
  /// re-arm it; when it fires it re-arms for the earliest deadline still pending, or drops the
  /// connection. A command whose deadline comes before the armed one (a 50 ms command behind a
  /// handshake's 200 ms PING) re-arms it: no command waits past its own timeout.
  void arm_deadline(clock::time_point due) {
    if (gone || (timer_armed && deadline_timer.expiry() <= due)) return;
    timer_armed = true;
    const std::uint64_t armed = ++timer_generation;  // a wait this replaces sees another number
    deadline_timer.expires_at(due);
    deadline_timer.async_wait([self = shared_from_this(), armed](error_code ec) { self->on_deadline(ec, armed); });
  }

  void on_deadline(error_code ec, std::uint64_t armed) {
    if (armed != timer_generation) return;  // re-armed since
    timer_armed = false;
    if (ec || gone || pending.empty()) return;
    clock::time_point earliest = clock::time_point::max();
    for (const auto& p : pending) earliest = std::min(earliest, p.deadline);  // (a pipeline's depth)
    if (earliest > clock::now()) {
      arm_deadline(earliest);
      return;
    }
    drop(net::error::timed_out);
  }
};

redis_link* from(void* p) { return static_cast<redis_link*>(p); }

void ev_add_read(void* p) {
  from(p)->want_read = true;
  from(p)->arm_read();
}
void ev_del_read(void* p) { from(p)->want_read = false; }
void ev_add_write(void* p) {
  from(p)->want_write = true;
  if (!from(p)->sending) from(p)->arm_write();  // send() writes at once, then arms what is left
}
void ev_del_write(void* p) { from(p)->want_write = false; }
void ev_cleanup(void* p) { from(p)->on_gone(); }

void on_connected(const redisAsyncContext* ac, int status) {
  redis_link* l = from(ac->data);
  if (l == nullptr) return;
  if (status == REDIS_OK) l->connected = true;  // on REDIS_ERR hiredis frees the context next
  l->event.cancel();
}

void on_reply(redisAsyncContext*, void* r, void* privdata) {
  redis_link* l = from(privdata);
  if (l->pending.empty()) return;
  auto p = std::move(l->pending.front());
  l->pending.pop_front();
  if (auto* rep = static_cast<const redisReply*>(r); rep != nullptr && rep->type == REDIS_REPLY_ERROR) {
    l->observe_error(std::string_view(rep->str, rep->len));
  } else if (l->error_noted && rep != nullptr) {
    l->error_noted = false;
    if (l->note_error) l->note_error({});
  }
  if (r != nullptr && l->reading)
    l->replied.emplace_back(std::move(p.done), convert(static_cast<const redisReply*>(r)));
  else if (r != nullptr)
    p.done->complete({}, convert(static_cast<const redisReply*>(r)));
  else
    p.done->complete(l->loss_code(), {});
}

void on_sub_reply(redisAsyncContext*, void* r, void* privdata) {
  redis_link* l = from(privdata);
  auto* rep = static_cast<const redisReply*>(r);
  if (rep != nullptr && rep->type == REDIS_REPLY_ERROR) {
    // Refused (an ACL without the channel: Redis 7's default for new users), where the hiredis in
    // use passes the error on (0.14 does not; attempt() then names the likely reason): kept as
    // the reason the attempt fails.
    l->sub_refused = true;
    if (l->note_error) l->note_error("SUBSCRIBE refused by Redis: " + std::string(rep->str, rep->len));
    return;
  }
  if (rep == nullptr || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) return;
  const redisReply* kind = rep->element[0];
  const std::string_view k(kind->str, kind->len);
  if (k == "subscribe") {
    l->subscribed = true;
    l->event.cancel();
  } else if (k == "message" && rep->element[2]->type == REDIS_REPLY_STRING && l->deliver) {
    l->deliver(std::string(rep->element[2]->str, rep->element[2]->len));
  }
}

bool accepted(const result_t& r) { return r && r->type != reply::kind::error; }

std::vector<std::string> (*resolve_for_tests)(const std::string&) = nullptr;

}  // namespace

void resolve_host_names_for_tests(std::vector<std::string> (*resolve)(const std::string& host)) {
  resolve_for_tests = resolve;
}

std::chrono::milliseconds jittered_backoff(std::chrono::milliseconds step, std::uint64_t random) {
  if (step.count() <= 1) return step;
  const auto half = step.count() / 2;
  const auto span = static_cast<std::uint64_t>(step.count() - half) + 1;  // [half, step]
  return std::chrono::milliseconds(half + static_cast<long long>(random % span));
}

struct connection::impl : std::enable_shared_from_this<impl> {
  impl(executor_t e, options o) : ex(e), opt(std::move(o)), backoff_timer(e), jitter(std::random_device{}()) {
    if (opt.tls.enabled) {
      std::string error;
      tls_ctx = tls_bridge::make_context(opt.tls, error);
      set_error(std::move(error));
    }
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;
  ~impl() {
    if (cur) cur->drop(net::error::operation_aborted);
  }

  executor_t ex;
  options opt;
  steady_timer_t backoff_timer;
  std::mt19937_64 jitter;  ///< draws each backoff wait (jittered_backoff)
  std::shared_ptr<redis_link> cur;
  bool started = false, closed = false, is_up = false, attempting = false, in_hook = false;
  std::string channel;
  std::function<void(std::string_view)> message_cb;
  std::function<void(bool)> state_cb;
  std::function<awaitable<bool>()> hook;
  std::shared_ptr<net::ssl::context> tls_ctx;  ///< with opt.tls.enabled (null: its files failed to load)
  mutable std::mutex error_mu;  ///< last_error is read from any thread (logs)
  std::string last_error;       ///< why the last attempt failed, when known

  void set_error(std::string e) {
    bool news = false;
    {
      std::lock_guard lock(error_mu);
      news = !e.empty() && e != last_error;
      last_error = e;
    }
    if (news && error_cb) error_cb(e);  // (on the connection's executor)
  }
  std::function<void(const std::string&)> error_cb;
  std::string error() const {
    std::lock_guard lock(error_mu);
    return last_error;
  }

  bool up() const { return is_up && cur && cur->live(); }

  /// A handshake step's answer. An error reply (a wrong password, a database that does not exist)
  /// is why the connection failed: kept as last_error, for the degraded-mode log line.
  bool handshake_ok(std::string_view step, const result_t& r) {
    if (accepted(r)) return true;
    set_error(std::string(step) + (r ? " refused by Redis: " + r->str : " got no answer within connect_timeout_ms"));
    return false;
  }

  void close() {
    if (closed) return;
    closed = true;
    is_up = false;
    backoff_timer.cancel();
    if (cur) cur->drop(net::error::operation_aborted);
  }

  /// Hands a command and its completion to `l` through `write` (the link's send or send_resp), and
  /// awaits the reply. No `up` check: the handshake sends before the connection is up.
  template <class Write>
  static awaitable<result_t> submit(std::shared_ptr<redis_link> l, Write write) {
    auto token = net::as_tuple(net::use_awaitable_t<base_executor_t>{});
    auto [ec, r] = co_await net::async_initiate<decltype(token), signature>(
        [&l, &write](auto handler) {
          using handler_t = decltype(handler);
          write(*l, std::make_unique<completion_for<handler_t>>(std::move(handler), l->ex));
        },
        token);
    if (ec) co_return result_t(ec);
    co_return result_t(std::move(r));
  }

  static awaitable<result_t> send_on(std::shared_ptr<redis_link> l, std::span<const std::string_view> argv,
                                     clock::duration timeout) {
    return submit(std::move(l), [argv, timeout](redis_link& k, std::unique_ptr<completion> done) {
      k.send(argv, timeout, std::move(done));
    });
  }

  static awaitable<result_t> send_resp_on(std::shared_ptr<redis_link> l, std::string_view resp, clock::duration timeout) {
    return submit(std::move(l), [resp, timeout](redis_link& k, std::unique_ptr<completion> done) {
      k.send_resp(resp, timeout, std::move(done));
    });
  }

  /// Waits until `l->*flag` is set, the redis_link is gone, close() ran, or `deadline` passes.
  awaitable<void> wait_on(std::shared_ptr<redis_link> l, clock::time_point deadline, bool redis_link::*flag) {
    while (!closed && !l->gone && !((*l).*flag) && clock::now() < deadline) {
      l->event.expires_at(deadline);
      co_await l->event.async_wait();
    }
  }

  /// The addresses to try for opt.host: itself when it is an IP address; otherwise what the
  /// resolver finds now (Asio resolves on a thread of its own, never on the worker), so that a
  /// name that a failover moved is followed at the next attempt. Empty: last_error says why.
  awaitable<std::vector<std::string>> addresses() {
    error_code ec;
    (void)net::ip::make_address(opt.host, ec);
    if (!ec) co_return std::vector<std::string>{opt.host};
    if (resolve_for_tests) {
      auto out = resolve_for_tests(opt.host);
      if (out.empty()) set_error("cannot resolve " + opt.host + ": no address");
      co_return out;
    }
    // Shared with the timer's handler: one already queued when the answer comes must not touch a
    // resolver this frame has destroyed.
    auto res = std::make_shared<resolver_t>(ex);
    steady_timer_t limit(ex);
    limit.expires_after(opt.connect_timeout);
    limit.async_wait([w = std::weak_ptr<resolver_t>(res)](error_code e) {
      if (auto r = w.lock(); r && !e) r->cancel();
    });
    auto [rec, found] = co_await res->async_resolve(opt.host, std::to_string(opt.port));
    limit.cancel();
    std::vector<std::string> out;
    if (!rec)
      for (const auto& e : found) out.push_back(e.endpoint().address().to_string());
    if (out.empty()) set_error("cannot resolve " + opt.host + ": " + (rec ? rec.message() : std::string("no address")));
    co_return out;
  }

  /// A link of this connection's kind, made current.
  std::shared_ptr<redis_link> new_link() {
    auto l = std::make_shared<redis_link>(ex);
    if (!channel.empty()) {
      l->deliver = [w = weak_from_this(), e = ex](std::string payload) {
        net::post(e, [w, payload = std::move(payload)] {
          if (auto s = w.lock(); s && !s->closed && s->message_cb) s->message_cb(payload);
        });
      };
    }
    l->note_error = [w = weak_from_this()](std::string why) {
      if (auto s = w.lock()) s->set_error(std::move(why));
    };
    cur = l;
    return l;
  }

  /// Connects `l` to `o` (its host an IP address, or its unix_path), through a TLS relay when
  /// configured. True: connected.
  awaitable<bool> connect(std::shared_ptr<redis_link> l, const options& o, clock::duration step) {
    if (o.tls.enabled) {
      std::string error;
      l->bridge = co_await tls_bridge::open(o, tls_ctx, error);
      if (!l->bridge) {
        set_error(std::move(error));
        co_return false;
      }
      if (closed) {
        l->bridge->close();
        co_return false;
      }
      if (!l->open(o, l->bridge->path())) co_return false;
      if (!co_await l->bridge->accept(step)) {
        set_error("TLS relay: hiredis did not connect");
        co_return false;
      }
    } else if (!l->open(o)) {
      co_return false;
    }
    co_await wait_on(l, clock::now() + step, &redis_link::connected);
    co_return !closed && l->live();
  }

  /// One attempt: each address in turn, until one connects and takes the handshake. True: the
  /// connection is up. The handshake is per address too: an address that takes TCP connections
  /// and never answers (a paused or hung server behind a name) must not hide the next one.
  awaitable<bool> attempt() {
    if (opt.tls.enabled && !tls_ctx) co_return false;  // last_error says which file
    std::vector<std::string> hosts{std::string()};    // a unix socket: one "address"
    if (opt.unix_path.empty()) {
      hosts = co_await addresses();
      if (hosts.empty() || closed) co_return false;
    }
    for (std::size_t i = 0; i < hosts.size() && !closed; ++i) {
      if (i > 0 && cur) cur->drop(net::error::connection_reset);  // the previous address failed
      const bool up = co_await attempt_on(hosts[i]);  // GCC 12: no co_await in a condition
      if (up) co_return true;
    }
    co_return false;
  }

  /// Connect + handshake to one address ("" : the unix socket). True: the connection is up.
  awaitable<bool> attempt_on(std::string host) {
    const clock::duration step = opt.connect_timeout;
    std::shared_ptr<redis_link> l = new_link();
    options o = opt;
    if (!host.empty()) {
      if (o.tls.server_name.empty()) o.tls.server_name = opt.host;  // the certificate names the configured host
      o.host = std::move(host);
    }
    const bool connected = co_await connect(l, o, step);
    if (!connected || closed || !l->live()) co_return false;

    if (!opt.password.empty()) {
      std::array<std::string_view, 3> a{"AUTH", opt.username, opt.password};
      if (opt.username.empty()) a[1] = opt.password;  // AUTH password (Redis < 6 form)
      std::span<const std::string_view> args(a.data(), opt.username.empty() ? 2 : 3);
      if (!handshake_ok("AUTH", co_await send_on(l, args, step))) co_return false;
    }
    if (opt.db != 0) {
      const std::string db = std::to_string(opt.db);
      std::array<std::string_view, 2> a{"SELECT", db};
      std::span<const std::string_view> args(a);
      if (!handshake_ok("SELECT", co_await send_on(l, args, step))) co_return false;
    }
    if (opt.password.empty() && opt.db == 0) {  // nothing above proved the server answers
      std::array<std::string_view, 1> a{"PING"};
      std::span<const std::string_view> args(a);
      if (!handshake_ok("PING", co_await send_on(l, args, step))) co_return false;
    }
    if (hook) {
      bool ok = false;
      in_hook = true;
      try {
        ok = co_await hook();
      } catch (...) {
        ok = false;
      }
      in_hook = false;
      if (!ok || closed || !l->live()) co_return false;
    }
    if (!channel.empty()) {
      if (!l->send_subscribe(channel)) co_return false;
      co_await wait_on(l, clock::now() + step, &redis_link::subscribed);
      if (!l->subscribed) {
        // hiredis 0.14 does not pass an error reply to SUBSCRIBE on (it drops the connection, or
        // nothing comes): the likeliest reason is named, as Redis's own answer cannot be (and
        // replaces a reason left from an earlier attempt).
        if (!l->sub_refused)
          set_error("SUBSCRIBE " + channel + " was not confirmed (Redis 7 refuses it to an ACL user without " +
                    "permission for the channel: add &" + channel + " or allchannels)");
        co_return false;
      }
    }
    co_return !closed && l->live();
  }

  static awaitable<void> supervise(std::shared_ptr<impl> self) {
    using std::chrono::milliseconds;
    const auto floor = std::max(self->opt.backoff_min, milliseconds(1));
    const auto ceiling = std::max(self->opt.backoff_max, floor);
    auto backoff = floor;
    while (!self->closed) {
      self->attempting = true;
      const bool ok = co_await self->attempt();
      self->attempting = false;
      if (self->closed) break;
      auto l = self->cur;
      if (ok) {
        self->set_error({});
        self->is_up = true;
        if (self->state_cb) self->state_cb(true);
        const auto up_at = clock::now();
        co_await self->wait_on(l, clock::time_point::max(), &redis_link::gone);
        // The backoff starts again only after a connection that lasted (backoff_max): a server
        // that takes every handshake and then times out each first command (overloaded), or a
        // replica still behind the address that answers READONLY (a failover not finished), would
        // otherwise be reconnected to every few hundred ms by every worker of every replica.
        if (!l->readonly && clock::now() - up_at >= ceiling) backoff = floor;
        self->is_up = false;
        if (self->closed) break;
        if (self->state_cb) self->state_cb(false);
        if (self->closed) break;
      } else if (l) {
        l->drop(net::error::connection_reset);
      }
      self->backoff_timer.expires_after(jittered_backoff(backoff, self->jitter()));
      co_await self->backoff_timer.async_wait();
      backoff = std::min(backoff * 2, ceiling);
    }
    self->is_up = false;
  }
};

connection::connection(executor_t ex, options o) : impl_(std::make_shared<impl>(std::move(ex), std::move(o))) {}

connection::~connection() {
  if (impl_) impl_->close();
}

void connection::start() {
  if (impl_->started || impl_->closed) return;
  impl_->started = true;
  net::co_spawn(impl_->ex, impl::supervise(impl_), net::detached);
}

void connection::close() { impl_->close(); }

void connection::reconnect(std::string why) {
  if (!impl_->up()) return;
  impl_->set_error(std::move(why));
  impl_->cur->drop(net::error::make_error_code(net::error::timed_out));
}

std::chrono::steady_clock::time_point connection::gives_up_at() const {
  const auto& l = impl_->cur;
  if (!l || l->pending.empty()) return clock::time_point::max();
  return l->pending.front().deadline;
}

state connection::current() const {
  if (impl_->up()) return state::up;
  if (impl_->attempting && !impl_->closed) return state::connecting;
  return state::down;
}

bool connection::up() const { return impl_->up(); }
std::string connection::last_error() const { return impl_->error(); }

awaitable<boost::system::result<reply>> connection::command(std::span<const std::string_view> argv) {
  auto self = impl_;
  if (argv.empty()) co_return failed(net::error::invalid_argument);
  if (!self->channel.empty()) co_return failed(net::error::operation_not_supported);
  if (!self->up()) co_return failed(net::error::not_connected);
  auto l = self->cur;
  co_return co_await impl::send_on(l, argv, self->opt.timeout);
}

awaitable<boost::system::result<reply>> connection::command_resp(std::string_view resp) {
  auto self = impl_;
  if (resp.empty()) co_return failed(net::error::invalid_argument);
  if (!self->channel.empty()) co_return failed(net::error::operation_not_supported);
  if (!self->up()) co_return failed(net::error::not_connected);
  auto l = self->cur;
  co_return co_await impl::send_resp_on(l, resp, self->opt.timeout);
}

std::string resp_command(std::span<const std::string_view> head, const resp_args& tail) {
  const resp_args* parts[] = {&tail};
  return resp_command(head, parts);
}

std::string resp_command(std::span<const std::string_view> head, std::span<const resp_args* const> parts) {
  resp_args h;
  for (auto a : head) h.add(a);
  std::size_t count = h.count(), bytes = h.bytes().size();
  for (const resp_args* p : parts) {
    count += p->count();
    bytes += p->bytes().size();
  }
  char n[24];
  const char* const n_end = std::to_chars(n, n + sizeof n, count).ptr;
  std::string out;
  out.reserve(3 + std::size_t(n_end - n) + bytes);
  out += '*';
  out.append(n, std::size_t(n_end - n));
  out += "\r\n";
  out += h.bytes();
  for (const resp_args* p : parts) out += p->bytes();
  return out;
}

awaitable<boost::system::result<reply>> connection::setup_command(std::span<const std::string_view> argv) {
  auto self = impl_;
  if (argv.empty()) co_return failed(net::error::invalid_argument);
  if (!self->in_hook || !self->cur || !self->cur->live()) co_return failed(net::error::not_connected);
  auto l = self->cur;
  co_return co_await impl::send_on(l, argv, self->opt.connect_timeout);
}

void connection::subscribe(std::string channel, std::function<void(std::string_view)> on_message) {
  impl_->channel = std::move(channel);
  impl_->message_cb = std::move(on_message);
}

void connection::on_state(std::function<void(bool)> cb) { impl_->state_cb = std::move(cb); }

void connection::on_error(std::function<void(const std::string&)> cb) { impl_->error_cb = std::move(cb); }

void connection::on_connect(std::function<awaitable<bool>()> hook) { impl_->hook = std::move(hook); }

}  // namespace tollgate::policy::redis
