// SPDX-License-Identifier: Apache-2.0
#pragma once
/// What a translation between OpenAI's API and a provider's (Bedrock Converse, Gemini) returns when
/// it refuses its input: one vocabulary for every translator. Header-only.
#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include <string>
#include <string_view>

namespace tollgate::providers {

/// Why a translation refused its input.
enum class translate_errc {
  invalid_type = 1,   ///< a field has the wrong JSON type (400 `invalid_type`)
  invalid_value,      ///< a field's value is unusable, e.g. tool arguments that are not JSON (400)
  missing_parameter,  ///< a required field is absent (400 `missing_required_parameter`)
  unsupported,        ///< valid OpenAI, but the provider cannot do it: images, audio, n > 1, ... (400)
  invalid_upstream,   ///< a provider body the gateway cannot read (the adapter answers 502)
};

/// The OpenAI `code` for `e`: `invalid_type`, `invalid_value`, `missing_required_parameter`,
/// `unsupported_parameter`, `invalid_upstream_response`.
constexpr std::string_view to_string(translate_errc e) noexcept {
  switch (e) {
    case translate_errc::invalid_type: return "invalid_type";
    case translate_errc::invalid_value: return "invalid_value";
    case translate_errc::missing_parameter: return "missing_required_parameter";
    case translate_errc::unsupported: return "unsupported_parameter";
    case translate_errc::invalid_upstream: return "invalid_upstream_response";
  }
  return "invalid_value";
}

struct translate_error {
  translate_errc code = translate_errc::invalid_value;
  std::string message;  ///< safe to show the caller
  std::string param;    ///< OpenAI parameter path (`messages[2].tool_calls[0].function.arguments`) or empty
};

template <class T>
using translate_result = boost::system::result<T, translate_error>;

/// The JSON kind of `v` as OpenAI's error messages name it ("string", "integer", "object", ...).
inline std::string_view json_kind_name(const boost::json::value& v) noexcept {
  switch (v.kind()) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return "boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64: return "integer";
    case boost::json::kind::double_: return "number";
    case boost::json::kind::string: return "string";
    case boost::json::kind::array: return "array";
    case boost::json::kind::object: return "object";
  }
  return "value";
}

}  // namespace tollgate::providers
