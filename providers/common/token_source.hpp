// SPDX-License-Identifier: Apache-2.0
#pragma once
/// OAuth access tokens kept fresh by one background thread per provider (Vertex AI: a
/// service-account JWT exchanged at the key's token_uri, or the metadata server; Azure OpenAI: a
/// Microsoft Entra ID client-credentials grant): the thread fetches before the cached token
/// expires, one refresh at a time, with backoff after failures. Workers only read the cached
/// token (a mutex and a string copy): no request ever waits on a token endpoint, and the event
/// loops never block.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "providers/vertex/google_auth.hpp"

namespace tollgate::providers::oauth {

/// One blocking HTTP(S) exchange with a bounded total time (for the token thread only).
struct fetch_response {
  unsigned status = 0;
  std::string body;
  std::string error;  ///< non-empty when no answer came (connect, TLS, timeout)
};
fetch_response http_fetch(const google::http_request_data& req, std::chrono::milliseconds timeout);

class token_source {
 public:
  /// One token request, done on the refresh thread: the token, or why not (never a secret).
  using token_fn = std::function<google::auth_result<google::access_token>()>;

  /// Starts the refresh thread. `min_age`: invalidate() leaves a token younger than this (the
  /// 401s of requests sent with the token it replaced must not throw the new one away).
  explicit token_source(token_fn fetch_token, std::chrono::milliseconds min_age = std::chrono::seconds(10));
  /// Google: a service-account JWT exchange, or the metadata server (http_fetch, 10 s bound).
  /// Shared (see shared()) by the adapters of every snapshot with the same credentials.
  static std::shared_ptr<token_source> for_google(google::credentials creds);
  /// Microsoft Entra ID client-credentials grant: POST `{authority}/{tenant}/oauth2/v2.0/token`.
  static std::shared_ptr<token_source> for_entra(std::string authority, std::string tenant_id, std::string client_id,
                                                 std::string client_secret, std::string scope);
  /// The live source for `identity` (the credentials, as a string), else a new one from `make`:
  /// a config reload builds new adapters, which keep the token their predecessors fetched
  /// instead of answering 502 until a first fetch of their own completes.
  static std::shared_ptr<token_source> shared(const std::string& identity,
                                              const std::function<std::unique_ptr<token_source>()>& make);
  /// Tells the thread to stop and does not wait for it (a config reload must not block a worker
  /// on a token request in flight): the thread owns its state, ends on its own, and is joined at
  /// process exit.
  ~token_source();
  token_source(const token_source&) = delete;
  token_source& operator=(const token_source&) = delete;

  /// "Bearer <token>" while a token is usable; nullopt before the first one arrives or when
  /// refreshing has failed past its expiry (last_error() says why; never a secret).
  std::optional<std::string> authorization() const;
  std::string last_error() const;
  /// The upstream refused the token (a 401): drop it and fetch a new one now, unless it is
  /// younger than min_age. Requests fail fast (no token) until the new one arrives.
  void invalidate() const;

 private:
  struct state {
    token_fn fetch_token;
    mutable std::mutex mu;
    std::condition_variable cv;
    bool stop = false;
    google::token_cache cache;  ///< refresh policy; touched by the thread under mu
    std::string authorization;  ///< current header value, or empty
    std::chrono::steady_clock::time_point usable_until{};
    std::string last_error;
    std::chrono::steady_clock::time_point obtained_at{};
    std::chrono::milliseconds min_age{0};
    bool wake = false;  ///< invalidate() asks the thread to look again at once
  };
  static void run(const std::shared_ptr<state>& s);

  std::shared_ptr<state> s_;
  std::thread thread_;
};

}  // namespace tollgate::providers::oauth
