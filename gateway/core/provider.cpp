// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/provider.hpp"

#include <boost/url/parse.hpp>

#include <stdexcept>

namespace tollgate {

// Defaults for the half of the interface an adapter does not use. Reaching one is a bug in the
// pipeline (it checks is_local() first), answered as an internal error, never a crash.
awaitable<void> provider_adapter::serve(request_context& ctx, response_sink& sink) const {
  auto m = map_error(errc::internal);
  ctx.status = m.status;
  ctx.error_code = std::string(m.code);
  ctx.details = "adapter_cannot_serve";
  co_await sink.send_full(m.status, "application/json",
                          openai_error_body("provider cannot serve in process", m.type, "", m.code));
}

result<upstream_request> provider_adapter::encode(request_context&) const {
  return make_error_code(errc::internal);
}

std::unique_ptr<stream_translator> provider_adapter::make_stream_translator(request_context&) const {
  return nullptr;
}

std::string provider_adapter::decode_body(request_context&, unsigned, std::string body) const { return body; }

void apply_output_cap(request_context& ctx, std::string_view field) {
  if (ctx.output_cap == 0 || ctx.endpoint != endpoint_kind::chat_completions) return;
  // (The caller gave neither name: output_cap is set only then; so both are the gateway's own.)
  ctx.request_json.erase("max_tokens");
  ctx.request_json.erase("max_completion_tokens");
  ctx.request_json[field] = ctx.output_cap;
}

upstream_request request_to(const upstream_peer& peer, const config::provider_config& settings) {
  upstream_request r;
  r.scheme = peer.scheme;
  r.host = peer.host;
  r.port = peer.port;
  r.settings = &settings;
  r.proxy = &peer.proxy;
  r.pool_key = &peer.pool_key;
  return r;
}

upstream_peer make_upstream_peer(const config::provider_config& cfg) {
  auto u = boost::urls::parse_uri(cfg.base_url);
  if (!u || (u->scheme() != "http" && u->scheme() != "https") || u->host().empty())
    throw std::invalid_argument("base_url is not an http(s) URL: " + cfg.base_url);
  upstream_peer p;
  p.scheme = std::string(u->scheme());
  p.host = std::string(u->host_name().empty() ? u->encoded_host_address() : u->host_name());
  p.port = u->has_port() ? std::string(u->port()) : (p.scheme == "https" ? "443" : "80");
  p.base_path = std::string(u->encoded_path());
  while (!p.base_path.empty() && p.base_path.back() == '/') p.base_path.pop_back();
  p.proxy = choose_proxy(cfg, p.scheme, p.host);
  p.pool_key = p.scheme + "://" + p.host + ":" + p.port + "|verify=" + (cfg.tls.verify ? "1" : "0") +
               "|ca=" + cfg.tls.ca_file + "|proxy=" + p.proxy.host + ":" + p.proxy.port;
  return p;
}

}  // namespace tollgate
