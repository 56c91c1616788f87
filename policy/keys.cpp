// SPDX-License-Identifier: Apache-2.0
#include "policy/keys.hpp"

#include <boost/url/pct_string_view.hpp>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <memory>
#include <stdexcept>

namespace tollgate::policy {
namespace detail {
hmac_function hmac_fn = &HMAC;
}  // namespace detail
namespace {

constexpr std::string_view alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// ASCII letters and digits, by range (find_first_not_of `alnum` searches the set for every
/// byte: ~1,500 instructions for a key, on every request).
bool is_alnum(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

/// SHA-256 fetched once: EVP_sha256() makes OpenSSL 3 look the implementation up on every digest
/// (half the cost of checking a key, measured).
const EVP_MD* sha256_md() {
  static EVP_MD* const fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return fetched != nullptr ? fetched : EVP_sha256();
}

/// nullopt when OpenSSL fails: never a digest of zeros (which a zeroed stored digest would match).
std::optional<std::array<unsigned char, 32>> sha256(std::string_view data) {
  std::array<unsigned char, 32> md{};
  unsigned len = 0;
  // One context per thread, reinitialised per digest: EVP_Digest allocates and frees one on
  // every call (a key check per request).
  struct ctx_deleter {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  thread_local const std::unique_ptr<EVP_MD_CTX, ctx_deleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), sha256_md(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), md.data(), &len) != 1) {
    len = 0;
    if (EVP_Digest(data.data(), data.size(), md.data(), &len, sha256_md(), nullptr) != 1) return std::nullopt;
  }
  if (len != md.size()) return std::nullopt;
  return md;
}

/// nullopt when OpenSSL refuses (a FIPS provider refuses keys under 112 bits): the array it
/// would have filled stays zeros, and a check against a digest of zeros would pass any secret.
std::optional<std::array<unsigned char, 32>> hmac_sha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, 32> md{};
  unsigned len = 0;
  if (detail::hmac_fn(sha256_md(), key.data(), static_cast<int>(key.size()),
                      reinterpret_cast<const unsigned char*>(data.data()), data.size(), md.data(), &len) == nullptr ||
      len != md.size())
    return std::nullopt;
  return md;
}

/// Random characters from `alnum` without modulo bias (rejection sampling on bytes < 248).
std::string random_alnum(std::size_t n) {
  std::string out;
  out.reserve(n);
  unsigned char buf[64];
  while (out.size() < n) {
    if (RAND_bytes(buf, sizeof buf) != 1) throw std::runtime_error("RAND_bytes failed");
    for (unsigned char b : buf)
      if (b < 248 && out.size() < n) out.push_back(alnum[b % 62]);
  }
  return out;
}

}  // namespace

std::optional<parsed_key> parse_key(std::string_view s) noexcept {
  if (!s.starts_with("tg_")) return std::nullopt;
  s.remove_prefix(3);
  auto sep = s.find('_');
  if (sep == std::string_view::npos) return std::nullopt;
  parsed_key k{s.substr(0, sep), s.substr(sep + 1)};
  if (!is_alnum(k.id) || k.id.size() > 64 || !is_alnum(k.secret) || k.secret.size() > 256) return std::nullopt;
  return k;
}

bool mask_keys_in_path(std::string& path) {
  // (Every caller's path: nothing to do. A '%' may hide a "tg": %74g, t%67.)
  if (path.find("tg") == std::string::npos && path.find('%') == std::string::npos) return false;
  bool masked = false;
  std::string out;
  out.reserve(path.size());
  std::size_t at = 0;
  for (;;) {
    const std::size_t end = std::min(path.find('/', at), path.size());
    const std::string_view segment(path.data() + at, end - at);
    // %XX decoded (Boost.URL); a segment that is no valid percent-encoding is taken as it is.
    std::string decoded(segment);
    if (segment.find('%') != std::string_view::npos)
      if (auto pct = boost::urls::make_pct_string_view(segment)) decoded = pct->decode();
    const std::size_t id_end = decoded.starts_with("tg_") ? decoded.find('_', 3) : std::string::npos;
    if (auto k = parse_key(decoded)) {
      out.append(k->id);
      masked = true;
    } else if (id_end != std::string::npos) {
      out.append(decoded, 0, id_end + 1).append("[masked]");
      masked = true;
    } else {
      out.append(segment);
    }
    if (end == path.size()) break;
    out.push_back('/');
    at = end + 1;
  }
  path = std::move(out);
  return masked;
}

std::string digest_secret(std::string_view secret, std::string_view pepper) {
  if (!pepper.empty()) {
    auto md = hmac_sha256(pepper, secret);
    if (!md) throw std::runtime_error("OpenSSL refused HMAC-SHA-256 with auth.pepper: no key digest made");
    return "hmac-sha256:" + to_hex(md->data(), md->size());
  }
  auto md = sha256(secret);
  if (!md) throw std::runtime_error("OpenSSL failed to compute SHA-256: no key digest made");
  return "sha256:" + to_hex(md->data(), md->size());
}

bool pepper_usable(std::string_view pepper) noexcept { return hmac_sha256(pepper, "tollgate").has_value(); }

namespace {
/// `n` bytes as 2n lowercase hex digits at `out`.
void write_hex(const unsigned char* p, std::size_t n, char* out) noexcept {
  static constexpr char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
}
}  // namespace

bool verify_secret(std::string_view secret, std::string_view stored, std::string_view pepper) noexcept {
  std::optional<std::array<unsigned char, 32>> md;
  std::string_view hex;
  if (stored.starts_with("hmac-sha256:")) {
    if (pepper.empty()) return false;
    md = hmac_sha256(pepper, secret);
    hex = stored.substr(12);
  } else if (stored.starts_with("sha256:")) {
    md = sha256(secret);
    hex = stored.substr(7);
  } else {
    return false;
  }
  if (!md || hex.size() != 64) return false;  // (no digest computed: no secret matches)
  char mine[64];  // on the stack: this runs on every authenticated call (a std::string of 64 allocates)
  write_hex(md->data(), md->size(), mine);
  return CRYPTO_memcmp(mine, hex.data(), 64) == 0;
}

std::optional<std::array<unsigned char, 16>> secret_tag(std::string_view secret) noexcept {
  // One context per thread, keyed once; EVP_MAC_init without a key starts it again under the
  // same key (a new key per call costs as much again).
  struct mac_ctx {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "SIPHASH", nullptr);
    EVP_MAC_CTX* ctx = mac ? EVP_MAC_CTX_new(mac) : nullptr;
    bool ready = false;
    mac_ctx() {
      static const std::optional<std::array<unsigned char, 16>> process_key = []() -> std::optional<std::array<unsigned char, 16>> {
        std::array<unsigned char, 16> k{};
        if (RAND_bytes(k.data(), int(k.size())) != 1) return std::nullopt;
        return k;
      }();
      if (!ctx || !process_key) return;
      std::size_t size = 16;
      const OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_END};
      ready = EVP_MAC_init(ctx, process_key->data(), process_key->size(), params) == 1;
    }
    ~mac_ctx() {
      EVP_MAC_CTX_free(ctx);
      EVP_MAC_free(mac);
    }
  };
  thread_local mac_ctx m;
  std::array<unsigned char, 16> tag{};
  std::size_t len = 0;
  if (!m.ready || EVP_MAC_init(m.ctx, nullptr, 0, nullptr) != 1 ||
      EVP_MAC_update(m.ctx, reinterpret_cast<const unsigned char*>(secret.data()), secret.size()) != 1 ||
      EVP_MAC_final(m.ctx, tag.data(), &len, tag.size()) != 1 || len != tag.size())
    return std::nullopt;
  return tag;
}

new_key generate_key() {
  new_key k;
  k.id = random_alnum(12);
  k.secret = random_alnum(43);
  k.full = "tg_" + k.id + "_" + k.secret;
  return k;
}

std::string to_hex(const unsigned char* p, std::size_t n) {
  std::string out(n * 2, '0');
  write_hex(p, n, out.data());
  return out;
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), int(bytes)) != 1) throw std::runtime_error("RAND_bytes failed");
  return to_hex(reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
}

}  // namespace tollgate::policy
