// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <memory>
#include <string>
#include <variant>

#include "config/config.hpp"

namespace tollgate::config {

/// Outcome of loading: the config, or a message naming the YAML path and line.
struct load_result {
  std::shared_ptr<const gateway_config> config;
  std::string error;  ///< empty on success
  explicit operator bool() const { return config != nullptr; }
};

/// Reads, parses, resolves secrets and validates. Never throws.
load_result load_file(const std::string& path);
/// Same from text (tests). `origin` names the source in messages.
load_result load_string(const std::string& yaml, const std::string& origin = "<string>");

/// Cross-field checks (unique names, references, sanity of limits). Returns "" when valid.
std::string validate(const gateway_config& cfg);

}  // namespace tollgate::config
