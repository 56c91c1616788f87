// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/chain.hpp"

#include <openssl/evp.h>

#include <charconv>
#include <cstdio>

namespace tollgate::audit {

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), md, &n, EVP_sha256(), nullptr);
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(std::size_t(n) * 2, '0');
  for (unsigned i = 0; i < n; ++i) {
    out[2 * i] = digits[md[i] >> 4];
    out[2 * i + 1] = digits[md[i] & 15];
  }
  return out;
}

std::string segment_name(std::string_view instance, std::uint64_t first_seq) {
  char num[32];
  std::snprintf(num, sizeof num, "%020llu", static_cast<unsigned long long>(first_seq));
  return std::string(instance) + "." + num + ".jsonl";
}

std::optional<segment_id> parse_segment_name(std::string_view file) {
  constexpr std::string_view ext = ".jsonl";
  if (file.size() < ext.size() + 22 || !file.ends_with(ext)) return std::nullopt;
  file.remove_suffix(ext.size());
  const auto dot = file.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || file.size() - dot - 1 != 20) return std::nullopt;
  segment_id id;
  id.instance = std::string(file.substr(0, dot));
  auto num = file.substr(dot + 1);
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), id.first_seq);
  if (ec != std::errc{} || p != num.data() + num.size()) return std::nullopt;
  return id;
}

std::string checkpoint_name(std::string_view instance) { return std::string(instance) + ".checkpoint"; }

std::optional<line_head> parse_line_head(std::string_view line) {
  constexpr std::string_view a = "{\"seq\":", b = ",\"prev\":\"";
  if (!line.starts_with(a)) return std::nullopt;
  line.remove_prefix(a.size());
  line_head h;
  auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), h.seq);
  if (ec != std::errc{}) return std::nullopt;
  line.remove_prefix(std::size_t(p - line.data()));
  if (!line.starts_with(b)) return std::nullopt;
  line.remove_prefix(b.size());
  if (line.size() < 66 || line[64] != '"' || (line[65] != ',' && line[65] != '}')) return std::nullopt;
  h.prev = line.substr(0, 64);
  return h;
}

}  // namespace tollgate::audit
