// SPDX-License-Identifier: Apache-2.0
#pragma once
/// API keys: `tg_<id>_<secret>`. The id is public (logs, audit, admin API); the secret is shown
/// once at creation and only its digest is stored: HMAC-SHA-256 keyed with the server's pepper
/// when one is configured (a stolen store is then useless without the pepper), plain SHA-256
/// otherwise. Digests are compared in constant time.
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

struct evp_md_st;  // OpenSSL's EVP_MD

namespace tollgate::policy {

struct parsed_key {
  std::string_view id;
  std::string_view secret;
};

/// Splits `tg_<id>_<secret>`; nullopt when the shape is wrong (never echo the input).
std::optional<parsed_key> parse_key(std::string_view presented) noexcept;

/// Masks keys in a request path (in place) before anything logs or echoes it: a segment that is a
/// whole key `tg_<id>_<secret>` (percent-encoded or not) becomes its id; another segment that
/// starts like one (`tg_<id>_...`) keeps `tg_<id>_` and loses the rest. A key pasted into a URL
/// (a revoke sent to the wrong listener, a body too large for the admin API) then reaches no
/// access-log line, audit record or error body. True when a segment was masked: a route that
/// names anything but a key must then refuse the path, not act on its masked form.
bool mask_keys_in_path(std::string& path);

/// "hmac-sha256:<hex>" when `pepper` is set, else "sha256:<hex>". Throws std::runtime_error when
/// OpenSSL cannot compute it (a FIPS provider refuses an HMAC key under 14 bytes).
std::string digest_secret(std::string_view secret, std::string_view pepper);

/// Constant-time check of `secret` against a stored digest of either kind; false when OpenSSL
/// cannot compute the digest (never a match against what it failed to fill).
bool verify_secret(std::string_view secret, std::string_view stored_digest, std::string_view pepper) noexcept;

/// Whether OpenSSL computes HMAC-SHA-256 keyed with `pepper` (checked when a config is loaded).
bool pepper_usable(std::string_view pepper) noexcept;

namespace detail {
/// OpenSSL's HMAC(): a test replaces it with one that fails, as a FIPS provider does for a short key.
using hmac_function = unsigned char* (*)(const ::evp_md_st*, const void*, int, const unsigned char*, std::size_t,
                                         unsigned char*, unsigned int*);
extern hmac_function hmac_fn;
}  // namespace detail

/// A 128-bit SipHash-2-4 of `secret` under a key drawn at random once per process (OpenSSL's
/// SIPHASH MAC): lets a replica recognise a secret it verified moments ago for ~1/3 of a digest's
/// cost. Kept in this process's memory only, never stored, logged or sent; useless elsewhere.
/// nullopt if OpenSSL cannot compute it (the caller then verifies every time).
std::optional<std::array<unsigned char, 16>> secret_tag(std::string_view secret) noexcept;

struct new_key {
  std::string id, secret, full;  ///< full = tg_<id>_<secret>
};
/// A fresh key from the OS CSPRNG: 12 id characters, 43 secret characters (256 bits).
new_key generate_key();

/// Lower-case hex of `n` bytes.
std::string to_hex(const unsigned char* p, std::size_t n);
/// `bytes` random bytes from the OS CSPRNG, as hex (instance ids).
std::string random_hex(std::size_t bytes);

}  // namespace tollgate::policy
