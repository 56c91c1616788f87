// SPDX-License-Identifier: Apache-2.0
#pragma once
// `data:` URLs of OpenAI content parts (image_url, file): the inline form the providers that take
// images or files in the request body (Vertex's inlineData, Bedrock's image bytes) accept.
#include <optional>
#include <string>
#include <string_view>

#include "gateway/core/text.hpp"

namespace tollgate::providers {

struct data_url {
  std::string mime_type;  ///< lower case
  std::string_view data;  ///< the base64 text, as it came
};

/// `data:<mime>[;params];base64,<data>`; nullopt for anything else.
inline std::optional<data_url> parse_data_url(std::string_view url) {
  if (url.substr(0, 5) != "data:") return std::nullopt;
  const std::size_t comma = url.find(',');
  if (comma == std::string_view::npos) return std::nullopt;
  std::string_view meta = url.substr(5, comma - 5);
  const std::string_view data = url.substr(comma + 1);
  constexpr std::string_view b64 = ";base64";
  if (meta.size() < b64.size() || !text::iequals(meta.substr(meta.size() - b64.size()), b64)) return std::nullopt;
  meta.remove_suffix(b64.size());
  const std::string_view mime = meta.substr(0, meta.find(';'));
  if (mime.empty() || mime.find('/') == std::string_view::npos || data.empty()) return std::nullopt;
  data_url out{std::string(mime), data};
  for (char& c : out.mime_type) c = char(text::ascii_lower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace tollgate::providers
