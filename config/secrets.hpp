// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <optional>
#include <string>

namespace tollgate::config {

/// Resolves a secret reference: `${env:NAME}` reads the environment, `file:PATH` reads a file
/// (trailing newline stripped); anything else is returned as written. On failure returns
/// nullopt and sets `why` (which names the variable or file, never a value).
std::optional<std::string> resolve_secret(const std::string& ref, std::string& why);

}  // namespace tollgate::config
