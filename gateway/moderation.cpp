// SPDX-License-Identifier: Apache-2.0
#include "gateway/moderation.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <functional>
#include <utility>

#include "gateway/upstream_client.hpp"

namespace tollgate::gateway {
namespace json = boost::json;

std::optional<moderation_target> moderation_target::make(const config::gateway_config& gc, std::string& error) {
  if (!gc.content_filters.moderation) return std::nullopt;
  moderation_target m;
  m.cfg = *gc.content_filters.moderation;
  const config::provider_config* p = nullptr;
  for (const auto& x : gc.providers)
    if (x.name == m.cfg.provider) p = &x;
  if (!p) {  // config validation refuses this first; kept for direct callers
    error = "content_filters.moderation.provider: unknown provider '" + m.cfg.provider + "'";
    return std::nullopt;
  }
  m.settings = *p;
  m.settings.timeouts.connect_ms = m.settings.timeouts.first_byte_ms = m.settings.timeouts.idle_ms = m.cfg.timeout_ms;
  try {
    m.peer = make_upstream_peer(m.settings);
  } catch (const std::invalid_argument& e) {
    error = "content_filters.moderation.provider: " + std::string(e.what());
    return std::nullopt;
  }
  m.target = m.peer.base_path + "/moderations";
  return m;
}

moderation_result read_moderation_answer(std::string_view body) {
  moderation_result r;
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  const json::array* results = nullptr;
  if (!ec && v.is_object())
    if (auto* x = v.get_object().if_contains("results"); x && x->is_array()) results = &x->get_array();
  if (!results || results->empty()) {
    r.error = "the moderation answer has no results";
    return r;
  }
  r.what = moderation_result::outcome::passed;
  for (const auto& res : *results) {
    const auto* o = res.if_object();
    const auto* flagged = o ? o->if_contains("flagged") : nullptr;
    if (!flagged || !flagged->is_bool()) {
      r.what = moderation_result::outcome::failed;
      r.error = "a moderation result has no boolean 'flagged'";
      r.categories.clear();
      return r;
    }
    if (!flagged->get_bool()) continue;
    r.what = moderation_result::outcome::flagged;
    if (auto* cats = o->if_contains("categories"); cats && cats->is_object())
      for (const auto& [name, val] : cats->get_object())
        if (val.is_bool() && val.get_bool() &&
            std::find(r.categories.begin(), r.categories.end(), name) == r.categories.end())
          r.categories.emplace_back(name);
  }
  return r;
}

awaitable<moderation_result> moderate(upstream_pool& pool, const moderation_target& m, std::vector<std::string> inputs,
                                      request_context& caller) {
  moderation_result r;
  if (caller.client_gone) {
    r.error = "the caller is gone";
    co_return r;
  }
  upstream_request req = request_to(m.peer, m.settings);
  req.target = m.target;
  req.headers = m.settings.headers;
  req.headers.emplace_back("Content-Type", "application/json");
  if (!m.settings.api_key.empty()) req.headers.emplace_back("Authorization", "Bearer " + m.settings.api_key);
  json::array in;
  for (auto& s : inputs) in.emplace_back(json::string(std::move(s)));
  json::object body;
  body["model"] = m.cfg.model;
  body["input"] = std::move(in);
  req.body = json::serialize(body);
  // The call has its own context: the caller's holds the cancel hook of the caller's upstream.
  request_context side;
  // The caller's hook ends this call too, and the caller's own upstream (a stream being
  // moderated) as before; put back when this call ends, before `side` goes.
  struct forward {
    request_context& caller;
    std::function<void()> own;
    ~forward() { caller.cancel_upstream = std::move(own); }
  } fwd{caller, std::exchange(caller.cancel_upstream, {})};
  caller.cancel_upstream = [&side, &own = fwd.own] {
    if (side.cancel_upstream) side.cancel_upstream();
    if (own) own();
  };
  upstream_exchange ex(pool, side);
  auto started = co_await ex.start(req);
  if (started) {
    r.error = started->message;
    co_return r;
  }
  std::string answer;
  const auto ec = co_await ex.read_all(answer, 1u << 20);
  if (ec) {
    r.error = "the moderation answer could not be read: " + ec.message();
    co_return r;
  }
  const unsigned status = ex.status();
  ex.release();
  if (status != 200) {
    r.error = "the moderation endpoint answered HTTP " + std::to_string(status);
    co_return r;
  }
  co_return read_moderation_answer(answer);
}

}  // namespace tollgate::gateway
