// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The gateway's metric families, declared in one struct (Envoy's stats-struct idea).
#include "gateway/core/metrics.hpp"

namespace tollgate::gateway {

struct gateway_metrics {
  metrics::registry registry;
  metrics::family& requests;          ///< {endpoint, model, provider, status}
  metrics::family& request_duration;  ///< {endpoint, model, provider}
  metrics::family& ttft;              ///< {model, provider}
  metrics::family& overhead;          ///< {endpoint, provider}: duration less upstream waits
  metrics::family& upstream_errors;   ///< {provider, kind}
  metrics::family& tokens;            ///< {model, provider, kind}
  metrics::family& rejections;        ///< {code}: requests refused before routing (framing, limits)
  metrics::family& open_connections;  ///< {listener}
  metrics::family& open_streams;
  metrics::family& reloads;           ///< {result}
  metrics::family& upstream_connects; ///< {provider, reused}
  metrics::family& filter_actions;    ///< {rule, action, direction}
  metrics::family& moderation_calls;  ///< {direction, outcome}: passed, flagged, failed

  gateway_metrics();
  static gateway_metrics& get();
};

}  // namespace tollgate::gateway
