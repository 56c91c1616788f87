// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Explicit table from config `type:` to adapter factory (no static-initialisation registration).
#include <memory>
#include <string>

#include "gateway/core/provider.hpp"

namespace tollgate::providers {

/// Builds the snapshot (adapters + model table) for a validated config. On error returns null
/// and sets `error` (config path and reason).
std::shared_ptr<snapshot> build_snapshot(std::shared_ptr<const config::gateway_config> cfg, std::string& error);

}  // namespace tollgate::providers
