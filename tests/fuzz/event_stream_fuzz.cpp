// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the AWS event-stream decoder must never crash, hang or hold back more than one
// message, and feeding the input in pieces must give the same messages, the same error and the
// same buffered bytes as feeding it whole.
//
// Input layout: byte 0 picks the mode, the rest is the stream. Mode bit 0 rewrites both CRCs of
// every frame to be correct before decoding, so that random mutations get past the checksums and
// reach the length and header checks; bits 1-2 pick small limits.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <boost/crc.hpp>

#include "providers/bedrock/event_stream.hpp"

namespace {

using tollgate::providers::aws::decoder;
using tollgate::providers::aws::decoder_limits;
using tollgate::providers::aws::message;

std::uint32_t read_u32(const std::string& s, std::size_t pos) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

void write_u32(std::string& s, std::size_t pos, std::uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i) s[pos + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xff);
}

std::uint32_t crc32(const std::string& s, std::size_t pos, std::size_t n) {
  boost::crc_32_type c;
  c.process_bytes(s.data() + pos, n);
  return c.checksum();
}

/// Makes the prelude CRC of every frame correct, and the message CRC of every complete one.
void fix_checksums(std::string& s) {
  std::size_t at = 0;
  while (s.size() - at >= 12) {
    write_u32(s, at + 8, crc32(s, at, 8));
    const std::size_t total = read_u32(s, at);
    if (total < 16 || total > s.size() - at) return;
    write_u32(s, at + total - 4, crc32(s, at, total - 4));
    at += total;
  }
}

bool same(const message& a, const message& b) {
  if (a.total_length != b.total_length || a.headers_length != b.headers_length ||
      a.prelude_crc != b.prelude_crc || a.message_crc != b.message_crc || a.payload != b.payload ||
      a.headers.size() != b.headers.size())
    return false;
  for (std::size_t i = 0; i < a.headers.size(); ++i)
    if (a.headers[i].name != b.headers[i].name || a.headers[i].type != b.headers[i].type ||
        a.headers[i].integer != b.headers[i].integer || a.headers[i].bytes != b.headers[i].bytes)
      return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  std::string in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (mode & 1) fix_checksums(in);
  decoder_limits limits;
  limits.max_message_bytes = (mode & 2) ? 64 : 1 << 16;
  limits.max_headers_bytes = (mode & 4) ? 16 : 1024;
  // Nothing held back may reach the limit (or the prelude size, while a prelude is incomplete).
  const std::size_t bound = std::max(tollgate::providers::aws::prelude_bytes, limits.max_message_bytes);

  decoder whole_decoder(limits);
  std::vector<message> whole;
  const bool ok_whole = whole_decoder.feed(in, whole);
  if (whole_decoder.buffered() >= bound) std::abort();

  // The same bytes in pieces of 1..32 bytes, sizes taken from the input itself, with an empty
  // piece now and then.
  decoder split_decoder(limits);
  std::vector<message> split;
  bool ok_split = true;
  std::size_t pos = 0;
  auto feed_split = [&](std::size_t n) {
    const bool ok = split_decoder.feed(std::string_view(in).substr(pos, n), split);
    if (!ok_split && ok) std::abort();  // a failed decoder stays failed
    ok_split = ok;
    pos += n;
    if (split_decoder.buffered() >= bound || split_decoder.buffered() > pos) std::abort();
  };
  for (std::size_t k = 0; pos < in.size(); ++k) {
    const unsigned r = data[k % size];
    if (r & 0x80) feed_split(0);
    feed_split(std::min<std::size_t>(1 + r % 32, in.size() - pos));
  }

  if (ok_whole != ok_split || whole_decoder.error() != split_decoder.error() ||
      whole_decoder.error_text() != split_decoder.error_text() ||
      whole_decoder.buffered() != split_decoder.buffered() || whole.size() != split.size())
    std::abort();
  std::size_t consumed = 0;
  for (std::size_t i = 0; i < whole.size(); ++i) {
    const message& m = whole[i];
    if (!same(m, split[i])) std::abort();
    if (m.total_length < 16 || m.total_length > limits.max_message_bytes ||
        m.headers_length > limits.max_headers_bytes ||
        m.payload.size() != m.total_length - m.headers_length - 16)
      std::abort();
    consumed += m.total_length;
  }
  if (ok_whole && consumed + whole_decoder.buffered() != in.size()) std::abort();
  if (ok_whole != whole_decoder.error_text().empty()) std::abort();
  const bool clean_end = ok_whole && whole_decoder.buffered() == 0;
  if (whole_decoder.finish() != clean_end) std::abort();
  return 0;
}
