// SPDX-License-Identifier: Apache-2.0
#include "gateway/server.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cstdio>
#include <fstream>

#include "config/loader.hpp"
#include "gateway/content_filters.hpp"
#include "gateway/core/event_loop.hpp"
#include "gateway/metrics.hpp"
#include "gateway/session.hpp"
#include "policy/keys.hpp"
#include "policy/memory_store.hpp"
#include "policy/redis_store.hpp"
#include "providers/registry.hpp"
#include <boost/asio/use_future.hpp>

namespace tollgate::gateway {
namespace json = boost::json;
using boost::system::error_code;
using namespace std::chrono;

namespace {

std::unique_ptr<acceptor_t> bind(net::io_context& ioc, const config::endpoint& ep, std::string& error) {
  error_code ec;
  auto addr = net::ip::make_address(ep.host, ec);
  if (ec) {
    // A host name: resolve it synchronously once, at start-up.
    net::ip::tcp::resolver r(ioc);
    auto res = r.resolve(ep.host, std::to_string(ep.port), ec);
    if (ec || res.empty()) {
      error = "cannot resolve listen address " + ep.host + ": " + ec.message();
      return nullptr;
    }
    addr = res.begin()->endpoint().address();
  }
  net::ip::tcp::endpoint endpoint(addr, ep.port);
  auto a = std::make_unique<acceptor_t>(executor_t(ioc.get_executor()));
  a->open(endpoint.protocol(), ec);
  if (!ec) a->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a->bind(endpoint, ec);
  if (!ec) a->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    error = "cannot listen on " + ep.host + ":" + std::to_string(ep.port) + ": " + ec.message();
    return nullptr;
  }
  return a;
}

json::object endpoint_json(const acceptor_t& a) {
  error_code ec;
  auto ep = a.local_endpoint(ec);
  return json::object{{"address", ep.address().to_string()}, {"port", ep.port()}};
}

/// The caller listener's TLS context, read from its files now: the certificate chain and key and,
/// for mTLS, the client CA and revocation lists. Null with `error` set when a file is unusable.
/// Each reload builds a new one, so session tickets of the previous context no longer resume:
/// a certificate revoked since is checked again.
std::shared_ptr<net::ssl::context> make_server_tls(const config::tls_server& tls, std::string& error) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                   net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->use_certificate_chain_file(tls.cert_file, ec);
  if (!ec) ctx->use_private_key_file(tls.key_file, net::ssl::context::pem, ec);
  if (ec) {
    error = "cannot load TLS certificate or key: " + ec.message();
    return nullptr;
  }
  if (tls.client_ca_file.empty()) return ctx;
  // mTLS: a caller without a certificate signed by this CA fails the handshake.
  ctx->load_verify_file(tls.client_ca_file, ec);
  if (ec) {
    error = "cannot load the client CA file: " + ec.message();
    return nullptr;
  }
  if (!tls.client_crl_file.empty()) {
    // Revocation lists (PEM, one or more): a revoked certificate, or one whose issuer has no list
    // in the file, fails the handshake. X509_V_FLAG_CRL_CHECK checks the leaf.
    X509_STORE* store = SSL_CTX_get_cert_store(ctx->native_handle());
    X509_LOOKUP* lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    if (lookup == nullptr || X509_load_crl_file(lookup, tls.client_crl_file.c_str(), X509_FILETYPE_PEM) <= 0) {
      ERR_clear_error();
      error = "cannot load the client CRL file " + tls.client_crl_file + " (PEM revocation lists expected)";
      return nullptr;
    }
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
  }
  ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  // With peer verification on, OpenSSL refuses to resume a session (a TLS 1.3 ticket, the
  // session cache) whose context id is unset, failing the handshake: every SDK that caches
  // sessions (Node's https agents, undici, Java) failed its second connection. The id names
  // this listener's verification: sessions resumed carry the certificate verified then.
  static constexpr unsigned char sid_ctx[] = "tollgate-caller-mtls";
  if (SSL_CTX_set_session_id_context(ctx->native_handle(), sid_ctx, sizeof sid_ctx - 1) != 1) {
    error = "cannot set the TLS session id context";
    return nullptr;
  }
  return ctx;
}

}  // namespace

server::server(std::shared_ptr<const snapshot> snap, server_options opts) : snap_(std::move(snap)), opts_(std::move(opts)) {}

server::~server() = default;

bool server::write_ready_file(std::string& error) {
  if (opts_.ready_file.empty()) return true;
  json::object o{{"pid", ::getpid()}, {"listen", endpoint_json(*caller_)}, {"admin", endpoint_json(*admin_)},
                 {"workers", workers_.size()}};
  // Quickstart only (auth.demo_key): the script that started us prints a ready-to-run curl.
  if (!demo_key_.empty()) o["demo_key"] = demo_key_;
  if (!demo_admin_token_.empty()) o["admin_token"] = demo_admin_token_;
  if (audit_) o["audit_dir"] = audit_->dir();
  const std::string tmp = opts_.ready_file + ".tmp";
  {
    // Owner-only: it may hold the quickstart's demo key.
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) ::close(fd);
    std::ofstream out(tmp, std::ios::trunc);
    out << json::serialize(o) << "\n";
    if (!out) {
      error = "cannot write ready file " + tmp;
      return false;
    }
  }
  if (std::rename(tmp.c_str(), opts_.ready_file.c_str()) != 0) {
    error = "cannot rename ready file to " + opts_.ready_file;
    return false;
  }
  return true;
}

std::shared_ptr<const snapshot> load_snapshot(std::shared_ptr<const config::gateway_config> cfg, std::string& error) {
  if (!cfg->auth.pepper.empty() && !policy::pepper_usable(cfg->auth.pepper)) {
    // (A FIPS provider refuses HMAC keys under 112 bits.) Never a key made or checked without it.
    error = "auth.pepper: OpenSSL refuses HMAC-SHA-256 with this pepper (FIPS providers need at least 14 bytes)";
    return nullptr;
  }
  auto snap = providers::build_snapshot(cfg, error);
  if (!snap) return nullptr;
  snap->filters = content_filters::compile(*cfg, error);
  if (!error.empty()) return nullptr;
  return snap;
}

namespace {
/// The quickstart admin token serves a config that asks for the demo key and names no admin token.
bool wants_demo_admin(const config::gateway_config& cfg) { return cfg.auth.demo_key && cfg.auth.admin_tokens.empty(); }
}  // namespace

std::shared_ptr<const config::gateway_config> server::with_demo_admin(
    std::shared_ptr<const config::gateway_config> cfg) const {
  if (demo_admin_token_.empty() || !wants_demo_admin(*cfg)) return cfg;
  auto c = std::make_shared<config::gateway_config>(*cfg);
  c->auth.admin_tokens.push_back({"quickstart", policy::digest_secret(demo_admin_token_, {})});
  return c;
}

std::string server::audit_instance() const {
  if (!snap_->cfg->audit.instance.empty()) return snap_->cfg->audit.instance;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "tollgate");
  std::string name;
  for (const char* p = host; *p; ++p)
    name += (std::isalnum(static_cast<unsigned char>(*p)) || *p == '-' || *p == '_') ? *p : '_';
  error_code ec;
  return name + "-" + std::to_string(caller_->local_endpoint(ec).port());
}

int server::run() {
  std::string error;
  if (wants_demo_admin(*snap_->cfg)) {
    // Quickstart: an admin token for tollgatectl, printed once like the demo key.
    demo_admin_token_ = "tga_" + policy::random_hex(24);
    snap_ = load_snapshot(with_demo_admin(snap_->cfg), error);
    if (!snap_) {
      log_event("error", error);
      return 1;
    }
  }
  const auto& cfg = *snap_->cfg;
  if (!log_.open(cfg.server.access_log, error)) {
    log_event("error", error);
    return 1;
  }
  if (cfg.server.tls.enabled()) {
    server_tls_ = make_server_tls(cfg.server.tls, error);
    if (!server_tls_) {
      log_event("error", error);
      return 1;
    }
  }
  caller_ = bind(control_, cfg.server.listen, error);
  if (caller_) admin_ = bind(control_, cfg.server.admin_listen, error);
  if (!caller_ || !admin_) {
    log_event("error", error);
    return 1;
  }

  if (cfg.audit.enabled) {
    auto acfg = cfg.audit;
    if (!opts_.audit_dir.empty()) acfg.dir = opts_.audit_dir;
    audit_ = std::make_unique<audit::audit_log>(acfg, audit_instance(), gateway_metrics::get().registry,
                                                [](std::string_view level, std::string_view msg, std::string_view extra) {
                                                  log_event(level, msg, extra);
                                                });
    if (auto err = audit_->open(); !err.empty()) {
      log_event("error", err);
      return 1;
    }
  }

  unsigned n = cfg.server.workers ? cfg.server.workers : std::max(1u, std::thread::hardware_concurrency());
  std::shared_ptr<policy::store> store;
  if (cfg.store.type == "redis") store = std::make_shared<policy::redis_store>(cfg.store.redis);
  else store = std::make_shared<policy::memory_store>();
  policy_ = std::make_unique<policy::engine>(store, gateway_metrics::get().registry,
                                             [](std::string_view level, std::string_view msg, std::string_view extra) {
                                               log_event(level, msg, extra);
                                             });
  if (!cfg.store.settlement_journal.empty()) {
    try {
      policy_->open_journal(cfg.store.settlement_journal);
    } catch (const std::exception& e) {
      log_event("error", e.what());
      return 1;
    }
  }
  std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
  std::vector<executor_t> executors;
  for (unsigned i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<worker>(i, snap_, log_, *policy_));
    workers_.back()->set_audit(audit_.get());
    guards.emplace_back(workers_.back()->ioc().get_executor());
    executors.push_back(workers_.back()->executor());
  }
  // Store connections start on the workers' io_contexts before their threads run.
  policy_->start(executors);
  // With Redis as the store, a worker whose callers await an admission's answer polls a moment
  // before it sleeps (store.redis.busy_poll_us, docs/adr/0010).
  const std::chrono::microseconds spin(cfg.store.type == "redis" ? cfg.store.redis.busy_poll_us : 0);
  for (auto& w : workers_) {
    net::co_spawn(w->ioc(), w->sweep_deadlines(milliseconds(50)), net::detached);
    w->thread = std::thread([&ioc = w->ioc(), spin] { run_event_loop(ioc, spin, &policy::redis_store::admissions_awaited); });
  }

  net::co_spawn(control_, accept_loop(*caller_, false), net::detached);
  net::co_spawn(control_, accept_loop(*admin_, true), net::detached);
  // The handlers are installed here, before the ready file says the gateway is up (the coroutine
  // starts only with control_.run()): a SIGHUP or SIGTERM sent as soon as it is ready found the
  // default action, which ended the process undrained.
  // Held here too, until the audit trail is closed: its last owner gone, Asio puts back the
  // default actions, and a SIGTERM after the drain (a script's trap after the Ctrl-C that began
  // it) would end the process before the stop record and checkpoint were written.
  auto signals = std::make_shared<signal_set_t>(executor_t(control_.get_executor()), SIGTERM, SIGINT, SIGHUP);
  net::co_spawn(control_, signal_loop(signals), net::detached);

  if (cfg.auth.demo_key) create_demo_key();
  // A ready file asked for and not written: whatever waits for it would wait in vain, then kill
  // the gateway. It stops at once instead (exit 1), through the same shutdown as a drained stop.
  const bool ready = write_ready_file(error);
  if (ready) {
    log_event("info", "tollgate listening",
              "\"listen\":" + json::serialize(endpoint_json(*caller_)) + ",\"admin\":" + json::serialize(endpoint_json(*admin_)) +
                  ",\"workers\":" + std::to_string(n) + ",\"tls\":" + (server_tls_ ? "true" : "false"));
    control_.run();
  } else {
    log_event("error", error);
  }

  guards.clear();
  for (auto& w : workers_) {
    w->ioc().stop();
    if (w->thread.joinable()) w->thread.join();
    log_.flush(w->log_buffer());  // the worker thread is gone: its buffer is ours now
  }
  // Only now, with every worker thread gone: the store's connections belong to the workers'
  // threads (hiredis contexts are not thread-safe), and closing one here while its worker still
  // read from it aborted the process in hiredis (redisProcessCallbacks' assertion).
  policy_->stop();
  // A charge given up (logged with its cost as it was) makes the exit code 3: a supervisor, CI or
  // a runbook can tell a stop that lost records from a clean one.
  const std::uint64_t lost = policy_->lost() + lost_in_drain_;
  // The store's Redis connections own timers and descriptors of the workers' io_contexts: they go
  // first, while those contexts still exist (ASan caught the reverse order at exit).
  policy_.reset();
  // Every session has ended: the stop record and the checkpoint close the chain.
  const bool audit_whole = !audit_ || audit_->close();
  // Nothing is left to lose: a stop signal from here on is held back (blocked, on this, the last
  // thread) rather than met by the default action Asio puts back as the set goes, which ended the
  // process with the signal's status instead of its own exit code.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, s);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signals.reset();
  if (!ready) return 1;
  if (lost > 0 || !audit_whole) {
    log_event("error", "tollgate stopped, with records lost",
              "\"settlements_lost\":" + std::to_string(lost) + ",\"audit_complete\":" + (audit_whole ? "true" : "false"));
    return 3;
  }
  log_event("info", "tollgate stopped");
  return 0;
}

void server::create_demo_key() {
  policy::key_record proto;
  proto.team = "demo";
  proto.name = "quickstart demo key";
  // The coroutine holds the snapshot: past the wait below, a reload may replace snap_.
  auto fut = net::co_spawn(
      workers_.front()->ioc(),
      [snap = snap_, proto, pol = policy_.get()]() { return pol->create_key(0, *snap->cfg, proto); }, net::use_future);
  if (fut.wait_for(seconds(5)) != std::future_status::ready) {
    log_event("error", "demo key: the policy store did not answer");
    return;
  }
  auto r = fut.get();
  if (!r) {
    log_event("error", "demo key not created: " + r.error());
    return;
  }
  // The one place a secret is printed: the quickstart's own key, on the terminal, never in a log.
  std::fprintf(stdout, "\nDemo API key (team demo, shown once): %s\n", r->full.c_str());
  if (!demo_admin_token_.empty())
    std::fprintf(stdout, "Admin token for tollgatectl (shown once): %s\n", demo_admin_token_.c_str());
  if (audit_) std::fprintf(stdout, "Audit trail: %s\n", audit_->dir().c_str());
  std::fprintf(stdout, "\n");
  std::fflush(stdout);
  demo_key_ = r->full;
}

awaitable<void> server::accept_loop(acceptor_t& acceptor, bool admin) {
  while (!stopping_) {
    worker& w = *workers_[next_worker_++ % workers_.size()];
    auto [ec, socket] = co_await acceptor.async_accept(w.executor());
    if (ec) {
      if (ec == net::error::operation_aborted || stopping_) break;
      // EMFILE and friends: back off briefly rather than spin.
      steady_timer_t t(co_await net::this_coro::executor);
      t.expires_after(milliseconds(50));
      co_await t.async_wait();
      continue;
    }
    auto kind = admin ? listener_kind::admin : listener_kind::caller;
    auto on_done = [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log_event("error", "session ended by exception (bug)", "\"what\":" + json::serialize(json::value(ex.what())));
      }
    };
    if (server_tls_ && !admin)
      net::co_spawn(w.ioc(), run_tls_session(w, std::move(socket), server_tls_, tls_generation_, kind), on_done);
    else
      net::co_spawn(w.ioc(), run_session(w, std::move(socket), kind), on_done);
  }
}

awaitable<void> server::signal_loop(std::shared_ptr<signal_set_t> signals) {
  for (;;) {
    auto [ec, sig] = co_await signals->async_wait();
    if (ec) co_return;
    if (sig == SIGHUP) {
      reload();
      continue;
    }
    log_event("info", "stop signal received: draining", "\"signal\":" + std::to_string(sig));
    co_await drain();
    co_return;
  }
}

void server::reload() {
  auto& m = gateway_metrics::get();
  auto loaded = config::load_file(opts_.config_path);
  std::string error = loaded.error;
  std::shared_ptr<const snapshot> snap;
  if (loaded) snap = load_snapshot(with_demo_admin(loaded.config), error);
  // The listener's certificate, key, client CA and CRLs are read again (files rotated in place
  // included); connections open keep the context they began with. A file that cannot be used
  // fails the whole reload. Turning TLS on or off needs a restart (another kind of listener).
  std::shared_ptr<net::ssl::context> tls = server_tls_;
  if (snap && server_tls_ && snap->cfg->server.tls.enabled() && !(tls = make_server_tls(snap->cfg->server.tls, error)))
    snap.reset();
  if (!snap) {
    m.reloads.counter({"failure"}).inc();
    log_event("error", "config reload failed; keeping the current config",
              "\"reason\":" + json::serialize(json::value(error)));
    return;
  }
  if (!demo_admin_token_.empty() && !wants_demo_admin(*loaded.config)) {
    // The printed token (on stdout, in the ready file, in container logs) must not outlive the
    // quickstart: a config with admin tokens of its own, or without the demo key, ends it.
    demo_admin_token_.clear();
    log_event("info", "the quickstart admin token is retired: the config has its own admin_tokens or no demo_key");
  }
  const auto& old = snap_->cfg->server;
  const auto& now = snap->cfg->server;
  if (old.listen.host != now.listen.host || old.listen.port != now.listen.port || old.workers != now.workers ||
      old.admin_listen.host != now.admin_listen.host || old.admin_listen.port != now.admin_listen.port ||
      old.access_log != now.access_log)
    log_event("warn", "listen addresses, workers and access_log change only on restart");
  const auto& os = snap_->cfg->store;
  const auto& ns = snap->cfg->store;
  if (os.type != ns.type || os.redis != ns.redis || os.settlement_journal != ns.settlement_journal)
    log_event("warn", "the policy store's settings (store.type, everything under store.redis, "
                      "store.settlement_journal) change only on restart: the store keeps the ones it started with");
  if (snap_->cfg->auth.pepper != snap->cfg->auth.pepper)
    log_event("warn", "auth.pepper changed: every key whose hmac-sha256 digest was made under the old pepper (keys "
                      "created through the admin API, and config keys digested with it) no longer authenticates "
                      "(rotate them, or restore the pepper)");
  const auto& oa = snap_->cfg->audit;
  const auto& na = snap->cfg->audit;
  if (oa.enabled != na.enabled || oa.dir != na.dir || oa.mode != na.mode || oa.fail_open != na.fail_open)
    log_event("warn", "audit settings change only on restart");
  if (old.tls.enabled() != now.tls.enabled())
    log_event("warn", "server.tls turned on or off changes only on restart: the listener keeps its current setting");
  const bool new_tls = tls != server_tls_;
  if (new_tls) ++tls_generation_;
  server_tls_ = std::move(tls);
  snap_ = snap;
  for (auto& w : workers_)
    net::post(w->ioc(), [wp = w.get(), snap, new_tls, gen = tls_generation_] {
      wp->set_snapshot(snap);
      wp->pool().reload();
      if (new_tls) wp->set_tls_generation(gen);
    });
  m.reloads.counter({"success"}).inc();
  log_event("info", "config reloaded", "\"models\":" + std::to_string(snap->models.size()));
}

awaitable<void> server::drain() {
  stopping_ = true;
  error_code ec;
  caller_->close(ec);
  admin_->close(ec);
  for (auto& w : workers_) net::post(w->ioc(), [wp = w.get()] { wp->start_drain(); });
  const auto deadline = steady_clock::now() + milliseconds(snap_->cfg->server.timeouts.drain_ms);
  steady_timer_t t(co_await net::this_coro::executor);
  auto live = [&] {
    int n = 0;
    for (auto& w : workers_) n += w->live_sessions.load();
    return n;
  };
  while ((live() > 0 || policy_->pending() > 0) && steady_clock::now() < deadline) {
    t.expires_after(milliseconds(20));
    co_await t.async_wait();
  }
  if (int n = live(); n > 0) {
    log_event("warn", "drain deadline passed; closing remaining connections", "\"connections\":" + std::to_string(n));
    for (auto& w : workers_) net::post(w->ioc(), [wp = w.get()] { wp->close_all(); });
    // Give the sessions a moment to unwind (settle and log run) after their sockets close...
    const auto grace = steady_clock::now() + milliseconds(500);
    while (live() > 0 && steady_clock::now() < grace) {
      t.expires_after(milliseconds(10));
      co_await t.async_wait();
    }
    // ...and the settlements they queued a moment to reach the store.
    const auto sent = steady_clock::now() + milliseconds(500);
    while (policy_->pending() > 0 && steady_clock::now() < sent) {
      t.expires_after(milliseconds(10));
      co_await t.async_wait();
    }
  }
  {
    // The usage counts of the last second (each worker sends its own every second): sent now, or
    // a clean stop lost them. Bounded: an unreachable store fails each within its timeout.
    auto flushed = std::make_shared<std::atomic<unsigned>>(0);
    for (auto& w : workers_)
      net::co_spawn(
          w->ioc(),
          [this, flushed, i = w->index()]() -> awaitable<void> {
            co_await policy_->flush_usage(i);
            ++*flushed;
          },
          net::detached);
    const auto until = steady_clock::now() + milliseconds(500);
    while (flushed->load() < workers_.size() && steady_clock::now() < until) {
      t.expires_after(milliseconds(5));
      co_await t.async_wait();
    }
  }
  if (policy_->pending() > 0) {
    // The store stayed unreachable through the drain: say which charges go unrecorded (each is
    // logged with its cost) rather than drop them silently when the workers stop.
    auto done = std::make_shared<std::atomic<unsigned>>(0);
    for (auto& w : workers_)
      net::post(w->ioc(), [this, done, i = w->index()] {
        policy_->abandon_pending(i);
        ++*done;
      });
    const auto until = steady_clock::now() + milliseconds(500);
    while (done->load() < workers_.size() && steady_clock::now() < until) {
      t.expires_after(milliseconds(5));
      co_await t.async_wait();
    }
    if (int n = policy_->pending(); n > 0) {
      lost_in_drain_ = std::uint64_t(n);
      log_event("error", "settlements still in flight at shutdown: they are lost",
                "\"settlements\":" + std::to_string(n));
    }
  }
  control_.stop();
}

}  // namespace tollgate::gateway
