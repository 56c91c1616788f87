// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Owns the worker threads, the listeners, and the process signals: SIGTERM/SIGINT drain and
/// stop, SIGHUP reloads the config (a bad new config keeps the old one).
#include <boost/asio/signal_set.hpp>

#include <memory>
#include <string>
#include <vector>

#include "gateway/access_log.hpp"
#include "gateway/audit/audit_log.hpp"
#include "gateway/worker.hpp"

namespace tollgate::gateway {

struct server_options {
  std::string config_path;
  std::string ready_file;
  std::string audit_dir;  ///< --audit-dir: overrides audit.dir
};

/// Builds the snapshot of a loaded config: provider adapters, the model table and the compiled
/// content filters. nullptr with `error` (naming the config path) when something is refused.
std::shared_ptr<const snapshot> load_snapshot(std::shared_ptr<const config::gateway_config> cfg, std::string& error);

class server {
 public:
  server(std::shared_ptr<const snapshot> snap, server_options opts);
  ~server();
  /// Binds, serves until a stop signal, drains, and returns the process exit code.
  int run();

 private:
  awaitable<void> accept_loop(acceptor_t& acceptor, bool admin);
  using signal_set_t = net::signal_set::rebind_executor<executor_t>::other;
  awaitable<void> signal_loop(std::shared_ptr<signal_set_t> signals);
  awaitable<void> drain();
  void reload();
  bool write_ready_file(std::string& error);
  void create_demo_key();
  /// Quickstart (auth.demo_key without admin tokens): an admin token made at start, its digest
  /// added to every config this process loads that still has the demo key and no admin tokens
  /// (a reload to any other config retires the token for good).
  std::shared_ptr<const config::gateway_config> with_demo_admin(std::shared_ptr<const config::gateway_config> cfg) const;
  std::string audit_instance() const;

  std::shared_ptr<const snapshot> snap_;
  server_options opts_;
  access_log log_;
  std::unique_ptr<policy::engine> policy_;  ///< outlives the workers (their settlements use it)
  // Workers are declared before the control context so they outlive it: a pending accept on the
  // control context owns a socket bound to a worker's io_context (ASan caught the reverse order).
  std::vector<std::unique_ptr<worker>> workers_;
  net::io_context control_{1};  ///< signals and accept loops
  std::unique_ptr<acceptor_t> caller_, admin_;
  std::shared_ptr<net::ssl::context> server_tls_;  ///< the caller listener's; replaced by each reload
  std::size_t next_worker_ = 0;
  bool stopping_ = false;
  std::uint64_t lost_in_drain_ = 0;  ///< settlements the drain gave up without a log line of their own
  std::string demo_key_;  ///< auth.demo_key: the quickstart key, for the ready file
  std::uint64_t tls_generation_ = 0;  ///< worker::tls_generation: the TLS contexts made so far
  std::string demo_admin_token_;  ///< auth.demo_key: an admin token for tollgatectl, for the ready file
  std::unique_ptr<audit::audit_log> audit_;
};

}  // namespace tollgate::gateway
