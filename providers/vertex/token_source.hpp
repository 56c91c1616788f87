// SPDX-License-Identifier: Apache-2.0
#pragma once
/// OAuth access tokens for Vertex AI, kept fresh by one background thread per provider: it signs
/// the service account's JWT assertion and exchanges it at the key's token_uri (or asks the
/// metadata server), before the cached token expires, one refresh at a time, with backoff after
/// failures. Workers only read the cached token (a mutex and a string copy): no request ever waits
/// on the token endpoint, and the event loops never block.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "providers/vertex/google_auth.hpp"

namespace tollgate::providers::vertex {

/// One blocking HTTP(S) exchange with a bounded total time (for the token thread only).
struct fetch_response {
  unsigned status = 0;
  std::string body;
  std::string error;  ///< non-empty when no answer came (connect, TLS, timeout)
};
fetch_response http_fetch(const google::http_request_data& req, std::chrono::milliseconds timeout);

class token_source {
 public:
  using fetch_fn = std::function<fetch_response(const google::http_request_data&)>;

  /// Starts the refresh thread. `fetch` defaults to http_fetch with a 10 s bound.
  explicit token_source(google::credentials creds, fetch_fn fetch = {});
  /// Tells the thread to stop and does not wait for it (a config reload must not block a worker
  /// on a token request in flight); the thread owns its state and ends on its own.
  ~token_source();
  token_source(const token_source&) = delete;
  token_source& operator=(const token_source&) = delete;

  /// "Bearer <token>" while a token is usable; nullopt before the first one arrives or when
  /// refreshing has failed past its expiry (last_error() says why; never a secret).
  std::optional<std::string> authorization() const;
  std::string last_error() const;

 private:
  struct state {
    google::credentials creds;
    fetch_fn fetch;
    mutable std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    google::token_cache cache;  ///< refresh policy; touched by the thread under mu
    std::string authorization;  ///< current header value, or empty
    std::chrono::steady_clock::time_point usable_until{};
    std::string last_error;
  };
  static void run(const std::shared_ptr<state>& s);
  static google::auth_result<google::access_token> fetch_token(state& s);

  std::shared_ptr<state> s_;
};

}  // namespace tollgate::providers::vertex
