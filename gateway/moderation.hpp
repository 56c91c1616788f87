// SPDX-License-Identifier: Apache-2.0
#pragma once
/// External moderation (docs/content-filters.md, "Moderation endpoint"): an OpenAI-moderation-
/// compatible endpoint, POST <base_url>/moderations {"model","input":[texts]}, called on prompts
/// and on windows of answers. Its verdict blocks or flags; its failure fails closed (503
/// moderation_unavailable) or open, as configured.
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "gateway/core/provider.hpp"

namespace tollgate::gateway {

class upstream_pool;

/// Built at config load: the endpoint and how to use it.
struct moderation_target {
  config::moderation_config cfg;
  config::provider_config settings;  ///< the provider's, with every timeout set to cfg.timeout_ms
  upstream_peer peer;
  std::string target;  ///< <base path>/moderations

  /// nullopt with `error` set when the provider cannot be used.
  static std::optional<moderation_target> make(const config::gateway_config& gc, std::string& error);
};

struct moderation_result {
  enum class outcome { passed, flagged, failed };
  outcome what = outcome::failed;
  std::vector<std::string> categories;  ///< flagged: the categories that were true
  std::string error;                    ///< failed: why, for logs (never the text)
};

/// One call with `inputs` (one result each; flagged when any is). Never throws; a timeout,
/// a refused connection, a non-200 status or an unreadable answer is `failed`. While it runs,
/// `caller`'s cancel_upstream also ends it (the drain's end, worker::close_all, must not wait
/// for a moderation call: the caller's call settles within the grace); a caller already gone
/// is `failed` without a call.
awaitable<moderation_result> moderate(upstream_pool& pool, const moderation_target& m, std::vector<std::string> inputs,
                                      request_context& caller);

/// Reads a moderation answer body (exposed for unit tests).
moderation_result read_moderation_answer(std::string_view body);

}  // namespace tollgate::gateway
