// SPDX-License-Identifier: Apache-2.0
#include "gateway/metrics.hpp"

namespace tollgate::gateway {
namespace {
const std::vector<double> latency_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30,    60, 120};
// The gateway's own time per call: tens of microseconds when all goes well.
const std::vector<double> overhead_buckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                              0.01,    0.025,  0.05,    0.1,    0.25,  1};
}

gateway_metrics::gateway_metrics()
    : requests(registry.add("tollgate_requests_total", "Requests answered, by endpoint, model, provider and status.",
                            metrics::kind::counter, {"endpoint", "model", "provider", "status"})),
      request_duration(registry.add("tollgate_request_duration_seconds",
                                    "Time from the request read (head and body) to the last response byte.", metrics::kind::histogram,
                                    {"endpoint", "model", "provider"}, latency_buckets)),
      ttft(registry.add("tollgate_time_to_first_token_seconds",
                        "Time from the request read to the first response body byte of a stream.",
                        metrics::kind::histogram, {"model", "provider"}, latency_buckets)),
      overhead(registry.add("tollgate_gateway_overhead_seconds",
                            "Time the gateway added to a call: from the request read to the last response byte, "
                            "less the time spent waiting for remote upstreams (calls served by the built-in "
                            "mock are not counted).",
                            metrics::kind::histogram, {"endpoint", "provider"}, overhead_buckets)),
      upstream_errors(registry.add("tollgate_upstream_errors_total", "Upstream failures by provider and kind.",
                                   metrics::kind::counter, {"provider", "kind"})),
      tokens(registry.add("tollgate_tokens_total", "Tokens by model, provider and kind (prompt, completion).",
                          metrics::kind::counter, {"model", "provider", "kind"})),
      rejections(registry.add("tollgate_http_rejections_total",
                              "Requests refused at the HTTP layer (framing, limits, timeouts), by error code.",
                              metrics::kind::counter, {"code"})),
      open_connections(registry.add("tollgate_open_connections", "Open client connections by listener.",
                                    metrics::kind::gauge, {"listener"})),
      open_streams(registry.add("tollgate_open_streams", "Streaming responses in progress.", metrics::kind::gauge)),
      reloads(registry.add("tollgate_config_reloads_total", "Configuration reloads by result.",
                           metrics::kind::counter, {"result"})),
      upstream_connects(registry.add("tollgate_upstream_connections_total",
                                     "Upstream connections used, by provider and whether reused from the pool.",
                                     metrics::kind::counter, {"provider", "reused"})),
      filter_actions(registry.add("tollgate_content_filter_actions_total",
                                  "Content-filter rules that fired, by rule, action (block, redact, flag) and direction "
                                  "(prompt, response).",
                                  metrics::kind::counter, {"rule", "action", "direction"})),
      moderation_calls(registry.add("tollgate_moderation_calls_total",
                                    "Calls to the moderation endpoint by direction (prompt, response) and outcome "
                                    "(passed, flagged, failed).",
                                    metrics::kind::counter, {"direction", "outcome"})) {
  open_streams.gauge({});
  open_connections.gauge({"caller"});
  open_connections.gauge({"admin"});
  reloads.counter({"success"});
  reloads.counter({"failure"});
}

gateway_metrics& gateway_metrics::get() {
  static gateway_metrics m;
  return m;
}

}  // namespace tollgate::gateway
