// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The provider interface: every upstream kind implements `provider_adapter`. Adapters are built
/// once per config load, immutable, and shared by all workers (so const and thread-safe).
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "gateway/core/error.hpp"
#include "gateway/core/net.hpp"
#include "gateway/core/proxy.hpp"
#include "gateway/core/request_context.hpp"

namespace tollgate {
namespace gateway {
class content_filters;
}

/// Where the gateway writes its answer. Implemented by the session for the caller's connection.
/// Each call returns false when the caller is gone (the write failed). Worker-thread only.
class response_sink {
 public:
  virtual ~response_sink() = default;
  /// A complete response with a body.
  virtual awaitable<bool> send_full(unsigned status, std::string_view content_type, std::string body,
                                    const header_list& extra = {}) = 0;
  /// Starts a chunked response (SSE streams).
  virtual awaitable<bool> start_stream(unsigned status, std::string_view content_type, const header_list& extra = {}) = 0;
  virtual awaitable<bool> send_chunk(std::string_view data) = 0;
  /// Ends a chunked response properly (last chunk).
  virtual awaitable<bool> end_stream() = 0;
  /// Closes the caller's connection without finishing the response (a reset).
  virtual void abort() = 0;
};

/// An HTTP request an adapter wants sent upstream. The gateway's upstream client sends it.
struct upstream_request {
  std::string scheme;  ///< "http" or "https"
  std::string host;
  std::string port;
  std::string target;  ///< path and query
  header_list headers;  ///< without Host, Content-Length and hop-by-hop fields
  std::string body;
  const config::provider_config* settings = nullptr;  ///< timeouts, TLS, proxy
  const proxy_choice* proxy = nullptr;  ///< decided at config load (reads the environment)
  const std::string* pool_key = nullptr;  ///< full peer identity: connections are pooled per key
};

/// The fixed part of an HTTP provider's upstream requests, computed once at config load.
struct upstream_peer {
  std::string scheme, host, port, base_path;
  proxy_choice proxy;
  std::string pool_key;  ///< scheme, host, port, TLS settings and proxy (Pingora's pooling rule)
};

/// Parses `base_url` and decides proxying. Throws std::invalid_argument for a URL that is not
/// http(s) (config load only).
upstream_peer make_upstream_peer(const config::provider_config& settings);

/// A request to `peer` with its connection settings filled in (target, headers and body are the
/// adapter's). `peer` and `settings` must outlive the request (they live in the snapshot).
upstream_request request_to(const upstream_peer& peer, const config::provider_config& settings);

/// Turns an upstream stream body into the bytes the caller receives, incrementally: bytes in,
/// SSE bytes out, never buffering more than one event. Records usage in the request context it
/// was made for (which must outlive it).
class stream_translator {
 public:
  virtual ~stream_translator() = default;
  /// Appends to `out` what to send for these upstream bytes.
  virtual void feed(std::string_view bytes, std::string& out) = 0;
  /// The upstream body ended: `complete` is false when it broke off (reset, timeout, bad framing).
  /// Appends any closing bytes (a final `[DONE]`, or an error event).
  virtual void finish(bool complete, std::string_view why, std::string& out) = 0;
  /// True once the stream carried an error (caller gets an error event; the call failed).
  virtual bool failed() const = 0;
  /// True once the upstream's own end marker passed (OpenAI's `[DONE]`): nothing after it is
  /// relayed, and the caller's stream can end before the upstream's body does.
  virtual bool done() const { return false; }
  /// The stream ends here without finish(): the caller left, or a response filter stopped it.
  /// What was generated but held back (a Vertex tool call still being assembled) is counted for
  /// the bill.
  virtual void abandon() {}
};

class provider_adapter {
 public:
  explicit provider_adapter(const config::provider_config& cfg) : cfg_(cfg) {}
  virtual ~provider_adapter() = default;
  provider_adapter(const provider_adapter&) = delete;
  provider_adapter& operator=(const provider_adapter&) = delete;

  const std::string& name() const { return cfg_.name; }
  const config::provider_config& settings() const { return cfg_; }

  /// True: the adapter answers in process through serve() (the mock). False: HTTP, through
  /// encode() / make_stream_translator() / decode_body().
  virtual bool is_local() const { return false; }

  /// Local adapters only: answers the request through `sink`. Sets ctx.usage. Must set
  /// ctx.cancel_upstream while it waits, so a caller that leaves ends the wait.
  virtual awaitable<void> serve(request_context& ctx, response_sink& sink) const;

  /// HTTP adapters: the request to send for ctx (model already routed to ctx.target). May edit
  /// ctx.request_json in place (it is not used again except by a later encode for a fallback).
  virtual result<upstream_request> encode(request_context& ctx) const;

  /// HTTP adapters: a translator for a successful (2xx) streamed answer.
  virtual std::unique_ptr<stream_translator> make_stream_translator(request_context& ctx) const;

  /// HTTP adapters: a complete upstream body (success or error) → the body for the caller.
  /// Records usage from a success; rewrites error bodies into OpenAI's shape.
  virtual std::string decode_body(request_context& ctx, unsigned status, std::string body) const;

 protected:
  const config::provider_config& cfg_;  ///< owned by the snapshot's config, which outlives us
};

/// Puts ctx.output_cap into the OpenAI request (ctx.request_json) as `field` ("max_tokens" or
/// "max_completion_tokens", whichever the upstream takes), for a call whose caller gave neither.
/// Clears what an earlier target's encode put there (a fallback to another kind of provider).
void apply_output_cap(request_context& ctx, std::string_view field);

/// One place a model can be served: a provider and the model name it knows.
struct route_target {
  const provider_adapter* provider = nullptr;
  std::string upstream_model;
  /// What its answers cost (into the snapshot's config): the public model's price, or, for a
  /// fallback serving another model that has an exact entry of its own in `prices`, that one.
  const config::price_config* price = nullptr;
};

/// A public model name and its targets in order (primary first, then fallbacks).
struct model_route {
  std::string name;
  std::vector<route_target> targets;
};

/// Everything a config load builds: the config, adapters and the model table. Immutable and
/// shared; each request holds a pointer to the snapshot it started with.
class snapshot {
 public:
  std::shared_ptr<const config::gateway_config> cfg;
  std::vector<std::unique_ptr<provider_adapter>> providers;
  std::unordered_map<std::string, model_route> models;
  std::vector<const model_route*> model_order;  ///< config order, for /v1/models
  /// The compiled content filters (gateway/content_filters.hpp); null when none are configured.
  std::shared_ptr<const gateway::content_filters> filters;

  const model_route* find_model(std::string_view name) const {
    auto it = models.find(std::string(name));
    return it == models.end() ? nullptr : &it->second;
  }
};

}  // namespace tollgate
