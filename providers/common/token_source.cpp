// SPDX-License-Identifier: Apache-2.0
#include "providers/common/token_source.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>

#include <openssl/ssl.h>

#include <map>
#include <vector>

namespace tollgate::providers::oauth {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono;

namespace {

/// Sends `req` on a connected stream and reads the answer; completes through the io_context.
template <class Stream>
void exchange(Stream& s, http::request<http::string_body>& req, fetch_response& out) {
  http::async_write(s, req, [&](beast::error_code ec, std::size_t) {
    if (ec) {
      out.error = "write: " + ec.message();
      return;
    }
    auto buf = std::make_shared<beast::flat_buffer>();
    auto res = std::make_shared<http::response<http::string_body>>();
    http::async_read(s, *buf, *res, [&out, buf, res](beast::error_code rec, std::size_t) {
      if (rec) {
        out.error = "read: " + rec.message();
        return;
      }
      out.status = res->result_int();
      out.body = std::move(res->body());
    });
  });
}

}  // namespace

fetch_response http_fetch(const google::http_request_data& data, milliseconds timeout) {
  fetch_response out;
  auto u = boost::urls::parse_uri(data.url);
  if (!u || (u->scheme() != "http" && u->scheme() != "https")) {
    out.error = "not an http(s) URL";
    return out;
  }
  const bool tls = u->scheme() == "https";
  const std::string host(u->host_name().empty() ? u->encoded_host_address() : u->host_name());
  const std::string port = u->has_port() ? std::string(u->port()) : (tls ? "443" : "80");
  std::string target(u->encoded_path());
  if (target.empty()) target = "/";
  if (u->has_query()) target += "?" + std::string(u->encoded_query());

  http::request<http::string_body> req{data.method == "GET" ? http::verb::get : http::verb::post, target, 11};
  req.set(http::field::host, u->has_port() ? host + ":" + port : host);
  req.set(http::field::user_agent, "tollgate/0.1");
  for (auto& [k, v] : data.headers) req.set(k, v);
  if (data.method != "GET") {
    req.body() = data.body;
    req.prepare_payload();
  }

  net::io_context ioc;
  net::ip::tcp::resolver resolver(ioc);
  beast::tcp_stream tcp(ioc);
  // A TLS context only for https (loading the system CA store is not free, and plain http needs none).
  std::optional<net::ssl::context> ctx;
  if (tls) {
    ctx.emplace(net::ssl::context::tls_client);
    ctx->set_default_verify_paths();
    ctx->set_verify_mode(net::ssl::verify_peer);
  }
  std::optional<net::ssl::stream<beast::tcp_stream&>> ssl;
  tcp.expires_after(timeout);
  resolver.async_resolve(host, port, [&](beast::error_code ec, net::ip::tcp::resolver::results_type r) {
    if (ec) {
      out.error = "resolve " + host + ": " + ec.message();
      return;
    }
    tcp.async_connect(r, [&](beast::error_code cec, const net::ip::tcp::endpoint&) {
      if (cec) {
        out.error = "connect " + host + ":" + port + ": " + cec.message();
        return;
      }
      if (!tls) return exchange(tcp, req, out);
      ssl.emplace(tcp, *ctx);
      SSL_set_tlsext_host_name(ssl->native_handle(), host.c_str());
      ssl->set_verify_callback(net::ssl::host_name_verification(host));
      ssl->async_handshake(net::ssl::stream_base::client, [&](beast::error_code hec) {
        if (hec) {
          out.error = "TLS with " + host + ": " + hec.message();
          return;
        }
        exchange(*ssl, req, out);
      });
    });
  });
  // The tcp_stream's deadline bounds every step; run_for is a backstop for the resolver.
  ioc.run_for(timeout + seconds(1));
  if (out.status == 0 && out.error.empty()) out.error = "timed out";
  return out;
}

namespace {

/// Threads of token sources that were destroyed: a destructor must not wait for a token request
/// in flight (a config reload drops the old adapters on a worker thread), so the stopped thread
/// is handed here and joined at process exit, when it has long finished.
struct reaper {
  std::mutex mu;
  std::vector<std::thread> threads;
  void add(std::thread t) {
    std::lock_guard lk(mu);
    threads.push_back(std::move(t));
  }
  ~reaper() {
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
};
reaper& reaper_instance() {
  static reaper r;
  return r;
}

}  // namespace

token_source::token_source(token_fn fetch_token, std::chrono::milliseconds min_age) : s_(std::make_shared<state>()) {
  reaper_instance();  // constructed first, so destroyed (and joining) after every token source
  s_->fetch_token = std::move(fetch_token);
  s_->min_age = min_age;
  thread_ = std::thread([s = s_] { run(s); });
}

std::shared_ptr<token_source> token_source::shared(const std::string& identity,
                                                  const std::function<std::unique_ptr<token_source>()>& make) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<token_source>> live;
  std::lock_guard lk(mu);
  std::erase_if(live, [](const auto& e) { return e.second.expired(); });
  if (auto s = live[identity].lock()) return s;
  std::shared_ptr<token_source> s = make();
  live[identity] = s;
  return s;
}

std::shared_ptr<token_source> token_source::for_google(google::credentials creds) {
  // (In memory only: the key id, not the key, tells two service-account keys apart.)
  const std::string identity =
      std::holds_alternative<google::metadata_server_credentials>(creds)
          ? "google-metadata|" + std::get<google::metadata_server_credentials>(creds).host
          : "google-sa|" + std::get<google::service_account_key>(creds).client_email + "|" +
                std::get<google::service_account_key>(creds).private_key_id + "|" +
                std::get<google::service_account_key>(creds).token_uri;
  return shared(identity, [&creds] { return std::make_unique<token_source>([creds = std::move(creds)]() -> google::auth_result<google::access_token> {
    google::http_request_data req;
    const bool metadata = std::holds_alternative<google::metadata_server_credentials>(creds);
    if (metadata) {
      auto r = google::make_metadata_token_request(std::get<google::metadata_server_credentials>(creds).host);
      if (!r) return r.error();
      req = std::move(*r);
    } else {
      const auto& key = std::get<google::service_account_key>(creds);
      auto jwt = google::make_jwt_assertion(key, floor<seconds>(system_clock::now()));
      if (!jwt) return jwt.error();
      req = google::make_token_request(key, jwt->jwt);
    }
    auto res = http_fetch(req, seconds(10));
    if (!res.error.empty())
      return google::auth_error{google::auth_errc::token_rejected, "token request failed: " + res.error, "", true};
    return metadata ? google::parse_metadata_token_response(res.status, res.body)
                    : google::parse_token_response(res.status, res.body);
  }); });
}

std::shared_ptr<token_source> token_source::for_entra(std::string authority, std::string tenant_id, std::string client_id,
                                                      std::string client_secret, std::string scope) {
  while (!authority.empty() && authority.back() == '/') authority.pop_back();
  google::http_request_data req;
  req.method = "POST";
  req.url = authority + "/" + google::form_urlencode(tenant_id) + "/oauth2/v2.0/token";
  req.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  req.body = "grant_type=client_credentials&client_id=" + google::form_urlencode(client_id) +
             "&client_secret=" + google::form_urlencode(client_secret) + "&scope=" + google::form_urlencode(scope);
  const std::string identity = "entra|" + req.url + "|" + req.body;  // (the grant, secret included: in memory only)
  return shared(identity, [&req] { return std::make_unique<token_source>([req = std::move(req)]() -> google::auth_result<google::access_token> {
    auto res = http_fetch(req, seconds(10));
    if (!res.error.empty())
      return google::auth_error{google::auth_errc::token_rejected, "token request failed: " + res.error, "", true};
    // Entra answers the standard OAuth 2.0 token and error shapes.
    return google::parse_token_response(res.status, res.body);
  }); });
}

token_source::~token_source() {
  {
    std::lock_guard lk(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  reaper_instance().add(std::move(thread_));
}

std::optional<std::string> token_source::authorization() const {
  std::lock_guard lk(s_->mu);
  if (s_->authorization.empty() || steady_clock::now() >= s_->usable_until) return std::nullopt;
  return s_->authorization;
}

std::string token_source::last_error() const {
  std::lock_guard lk(s_->mu);
  return s_->last_error.empty() ? std::string("no token yet") : s_->last_error;
}

void token_source::run(const std::shared_ptr<state>& sp) {
  state& s = *sp;
  std::unique_lock lk(s.mu);
  while (!s.stop) {
    auto d = s.cache.decide(steady_clock::now());
    if (d.what == google::token_cache::action::refresh || d.what == google::token_cache::action::refresh_and_use) {
      lk.unlock();
      const auto sent = steady_clock::now();
      auto t = s.fetch_token();
      lk.lock();
      if (t) {
        std::string header = t->authorization();
        // (A token the cache refuses, one that expires within its margin, is not handed out.)
        if (s.cache.complete(d.ticket, std::move(*t), sent)) {
          s.authorization = std::move(header);
          s.usable_until = s.cache.expires_at() - seconds(10);  // margin for the request in flight
          s.obtained_at = steady_clock::now();
          s.last_error.clear();
        }
      } else {
        s.last_error = t.error().message;
        s.cache.fail(d.ticket, t.error(), steady_clock::now());
      }
      continue;
    }
    // Nothing to do now: look again in a second (at once when told to stop).
    s.cv.wait_for(lk, seconds(1), [&] { return s.stop || s.wake; });
    s.wake = false;
  }
}

void token_source::invalidate() const {
  {
    std::lock_guard lk(s_->mu);
    if (s_->authorization.empty() || steady_clock::now() - s_->obtained_at < s_->min_age) return;
    s_->cache.invalidate();
    s_->authorization.clear();
    s_->usable_until = {};
    s_->wake = true;
  }
  s_->cv.notify_one();
}

}  // namespace tollgate::providers::oauth
