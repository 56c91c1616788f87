// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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

/// A certificate SAN in the form `teams[].identities` are compared in, or nullopt when `value`
/// is not a well-formed name of its kind. A URI (`is_uri`) needs a scheme (`spiffe:`), which is
/// lower-cased, and printable ASCII without spaces; a DNS name is letters, digits, `-`, `.`, `_`
/// and `*` only, lower-cased (DNS names are case-insensitive). So a DNS SAN can never equal a URI
/// identity: a CA that issued `DNS:spiffe://corp/...` does not thereby grant that SPIFFE ID.
std::optional<std::string> canonical_san(std::string_view value, bool is_uri);

/// Cross-field checks (unique names, references, sanity of limits). Returns "" when valid.
std::string validate(const gateway_config& cfg);

}  // namespace tollgate::config
