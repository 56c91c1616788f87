// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Incremental decoder for the AWS event-stream framing (`application/vnd.amazon.eventstream`),
/// the body of Bedrock ConverseStream and InvokeModelWithResponseStream (PROTOCOLS.md §3.6).
/// Pure: bytes in, messages out, no I/O, no exceptions. Any split of the input gives the same
/// messages and the same error. Both CRC32s are checked; lengths are checked against the frame
/// and against configurable limits before any byte of an oversized message is buffered.
///
/// Message layout, big-endian throughout:
///   total_length u32 | headers_length u32 | prelude_crc u32 (crc32 of the first 8 bytes)
///   | headers | payload | message_crc u32 (crc32 of everything before it)
/// Header: name_len u8, name, type u8, value (types 0..9, see `header_type`).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::aws {

/// Header value types as numbered on the wire.
enum class header_type : std::uint8_t {
  bool_true = 0,   ///< no value bytes
  bool_false = 1,  ///< no value bytes
  byte = 2,        ///< int8
  int16 = 3,
  int32 = 4,
  int64 = 5,
  byte_array = 6,  ///< u16 length + bytes
  string = 7,      ///< u16 length + UTF-8 bytes (not validated)
  timestamp = 8,   ///< int64 milliseconds since the Unix epoch
  uuid = 9,        ///< 16 raw bytes
};

struct event_header {
  std::string name;
  header_type type = header_type::bool_true;
  /// byte, int16, int32, int64 and timestamp values (sign-extended); 1 / 0 for bool_true / bool_false.
  std::int64_t integer = 0;
  /// byte_array, string and uuid (16 raw bytes) values; empty for the other types.
  std::string bytes;

  bool is_string() const { return type == header_type::string; }
};

/// `:message-type`: `event` (with `:event-type`), `exception` (with `:exception-type`) or
/// `error` (with `:error-code`, `:error-message`). `other` when absent or anything else — the
/// AWS SDKs reject such a message, so an adapter should too.
enum class message_kind { event, exception, error, other };

/// One complete, checksum-verified message.
struct message {
  std::uint32_t total_length = 0;
  std::uint32_t headers_length = 0;
  std::uint32_t prelude_crc = 0;
  std::uint32_t message_crc = 0;
  std::vector<event_header> headers;  ///< in wire order; duplicates are kept
  std::string payload;

  /// The first header called `name`, or nullptr.
  const event_header* find(std::string_view name) const;
  /// The value of the first header called `name` if that header is a string; empty otherwise.
  std::string_view string_header(std::string_view name) const;

  std::string_view message_type() const { return string_header(":message-type"); }
  std::string_view event_type() const { return string_header(":event-type"); }
  std::string_view exception_type() const { return string_header(":exception-type"); }
  std::string_view content_type() const { return string_header(":content-type"); }
  std::string_view error_code() const { return string_header(":error-code"); }
  std::string_view error_message() const { return string_header(":error-message"); }
  message_kind kind() const;
};

/// Why a decoder stopped. Once set, it never changes (the framing cannot be resynchronised).
enum class decode_error {
  none,
  prelude_checksum_mismatch,
  message_too_short,        ///< total_length < 16
  message_too_large,        ///< total_length > limits.max_message_bytes
  headers_length_invalid,   ///< headers_length > total_length - 16 or > limits.max_headers_bytes
  message_checksum_mismatch,
  header_truncated,         ///< a header runs past the end of the headers block
  unknown_header_type,
  truncated_stream,         ///< finish() called with part of a message buffered
};

struct decoder_limits {
  /// aws-c-event-stream's limits (PROTOCOLS.md §3.6).
  static constexpr std::size_t default_max_message_bytes = 16 * 1024 * 1024;
  static constexpr std::size_t default_max_headers_bytes = 128 * 1024;

  std::size_t max_message_bytes = default_max_message_bytes;  ///< largest accepted total_length
  std::size_t max_headers_bytes = default_max_headers_bytes;  ///< largest accepted headers_length
};

/// The minimum message: prelude (12) + message CRC (4).
inline constexpr std::size_t min_message_bytes = 16;
inline constexpr std::size_t prelude_bytes = 12;

class decoder {
 public:
  explicit decoder(decoder_limits limits = {}) : limits_(limits) {}

  /// Consumes `bytes` and appends every message it completes to `out`, in order. Holds back at
  /// most one incomplete message (its prelude is checked as soon as its first 12 bytes are in,
  /// so an oversized or corrupt length is refused before the rest is buffered). Returns false
  /// once the stream is broken: messages completed before the fault are still appended, bytes
  /// after it are discarded, and every later call returns false without reading its input.
  bool feed(std::string_view bytes, std::vector<message>& out);

  /// Declares the end of the stream: fails with `truncated_stream` if part of a message is
  /// buffered. Returns true when the stream ended cleanly on a message boundary.
  bool finish();

  bool failed() const { return error_ != decode_error::none; }
  decode_error error() const { return error_; }
  /// Human-readable reason, e.g. "message checksum mismatch: computed 0x…, received 0x…";
  /// empty while the decoder is healthy.
  const std::string& error_text() const { return error_text_; }

  /// Bytes of the current incomplete message held back; always less than that message's
  /// total_length (or than 12 while its prelude is incomplete), hence <= max_message_bytes.
  std::size_t buffered() const { return buf_.size(); }

 private:
  /// Checks the 12-byte prelude at the front of `frame`; returns total_length, 0 on error.
  std::size_t check_prelude(std::string_view frame);
  /// Checks the message CRC and parses one complete message of exactly total_length bytes.
  bool decode(std::string_view frame, std::vector<message>& out);
  bool fail(decode_error e, std::string text);

  decoder_limits limits_;
  std::string buf_;          ///< the incomplete message, from its first byte
  std::size_t total_ = 0;    ///< its total_length once its prelude is in and checked; else 0
  decode_error error_ = decode_error::none;
  std::string error_text_;
};

}  // namespace tollgate::providers::aws
