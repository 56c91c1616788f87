// SPDX-License-Identifier: Apache-2.0
// The event-stream decoder on messages built here: every header type, limits, truncated and
// unknown headers, checksum faults, zero-length payloads, splits at the prelude boundary, and
// the failed state. The vectors from shared/testdata are in event_stream_vectors_test.cpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <boost/crc.hpp>

#include "providers/bedrock/event_stream.hpp"
#include "tests/unit/providers/eventstream/frames.hpp"

namespace {

using tollgate::providers::aws::decode_error;
using tollgate::providers::aws::decoder;
using tollgate::providers::aws::decoder_limits;
using tollgate::providers::aws::header_type;
using tollgate::providers::aws::message;
using tollgate::providers::aws::message_kind;
using namespace tollgate::providers::aws::testing;

struct run {
  std::vector<message> out;
  bool ok = false;
  decode_error error = decode_error::none;
  std::string text;
};

run decode(std::string_view bytes, decoder_limits limits = {}) {
  decoder d(limits);
  run r;
  r.ok = d.feed(bytes, r.out);
  r.error = d.error();
  r.text = d.error_text();
  return r;
}

// ---- tests ----

TEST(EventStreamTest, EmptyMessageFromProtocolsDoc) {
  const std::string bytes("\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff", 16);
  const run r = decode(bytes);
  ASSERT_TRUE(r.ok) << r.text;
  ASSERT_EQ(r.out.size(), 1u);
  EXPECT_EQ(r.out[0].total_length, 16u);
  EXPECT_EQ(r.out[0].headers_length, 0u);
  EXPECT_EQ(r.out[0].prelude_crc, 0x05c248ebu);
  EXPECT_EQ(r.out[0].message_crc, 0x7d98c8ffu);
  EXPECT_TRUE(r.out[0].headers.empty());
  EXPECT_TRUE(r.out[0].payload.empty());
  EXPECT_EQ(r.out[0].kind(), message_kind::other);
  EXPECT_EQ(frame("", ""), bytes);  // the test encoder agrees with the doc
}

TEST(EventStreamTest, EveryHeaderTypeAndExtremeValue) {
  std::string h;
  h += name_and_type("t", header_type::bool_true);
  h += name_and_type("f", header_type::bool_false);
  h += int_header("b", header_type::byte, -128);
  h += int_header("b+", header_type::byte, 127);
  h += int_header("s", header_type::int16, -32768);
  h += int_header("i", header_type::int32, std::numeric_limits<std::int32_t>::min());
  h += int_header("l", header_type::int64, std::numeric_limits<std::int64_t>::min());
  h += int_header("l+", header_type::int64, std::numeric_limits<std::int64_t>::max());
  h += string_header("bytes", std::string("\x00\xff\x01", 3), header_type::byte_array);
  h += string_header("empty", "");
  h += int_header("ts", header_type::timestamp, 1700000000123);
  std::string uuid = name_and_type("u", header_type::uuid);
  for (int i = 0; i < 16; ++i) uuid.push_back(static_cast<char>(0xf0 + i));
  h += uuid;
  h += string_header(std::string(255, 'n'), std::string(300, 'v'));  // longest name, 2-byte length

  const run r = decode(frame(h, "{}"));
  ASSERT_TRUE(r.ok) << r.text;
  ASSERT_EQ(r.out.size(), 1u);
  const message& m = r.out[0];
  ASSERT_EQ(m.headers.size(), 13u);
  EXPECT_EQ(m.headers_length, h.size());
  EXPECT_EQ(m.payload, "{}");
  EXPECT_EQ(m.headers[0].type, header_type::bool_true);
  EXPECT_EQ(m.headers[0].integer, 1);
  EXPECT_EQ(m.headers[1].type, header_type::bool_false);
  EXPECT_EQ(m.headers[1].integer, 0);
  EXPECT_EQ(m.headers[2].integer, -128);
  EXPECT_EQ(m.headers[3].integer, 127);
  EXPECT_EQ(m.headers[4].integer, -32768);
  EXPECT_EQ(m.headers[5].integer, std::numeric_limits<std::int32_t>::min());
  EXPECT_EQ(m.headers[6].integer, std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(m.headers[7].integer, std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(m.headers[8].type, header_type::byte_array);
  EXPECT_EQ(m.headers[8].bytes, std::string("\x00\xff\x01", 3));
  EXPECT_EQ(m.headers[9].type, header_type::string);
  EXPECT_TRUE(m.headers[9].bytes.empty());
  EXPECT_EQ(m.headers[10].type, header_type::timestamp);
  EXPECT_EQ(m.headers[10].integer, 1700000000123);
  EXPECT_EQ(m.headers[11].type, header_type::uuid);
  ASSERT_EQ(m.headers[11].bytes.size(), 16u);
  EXPECT_EQ(static_cast<unsigned char>(m.headers[11].bytes[15]), 0xffu);
  EXPECT_EQ(m.headers[12].name, std::string(255, 'n'));
  EXPECT_EQ(m.headers[12].bytes, std::string(300, 'v'));
  // A byte array is not a string header.
  EXPECT_TRUE(m.string_header("bytes").empty());
  EXPECT_EQ(m.find("ts"), &m.headers[10]);
  EXPECT_EQ(m.find("absent"), nullptr);
}

TEST(EventStreamTest, ConvenienceHeaders) {
  const std::string ev = frame(string_header(":event-type", "contentBlockDelta") +
                                   string_header(":content-type", "application/json") +
                                   string_header(":message-type", "event"),
                               R"({"contentBlockIndex":0})");
  const std::string ex = frame(string_header(":message-type", "exception") +
                                   string_header(":exception-type", "validationException"),
                               R"({"message":"bad"})");
  const std::string er = frame(string_header(":message-type", "error") +
                                   string_header(":error-code", "InternalFailure") +
                                   string_header(":error-message", "boom"),
                               "");
  // `:event-type` with a non-string value is not taken as one.
  const std::string odd = frame(int_header(":event-type", header_type::int32, 7) +
                                    string_header(":message-type", "surprise"),
                                "");
  const run r = decode(ev + ex + er + odd);
  ASSERT_TRUE(r.ok) << r.text;
  ASSERT_EQ(r.out.size(), 4u);
  EXPECT_EQ(r.out[0].kind(), message_kind::event);
  EXPECT_EQ(r.out[0].message_type(), "event");
  EXPECT_EQ(r.out[0].event_type(), "contentBlockDelta");
  EXPECT_EQ(r.out[0].content_type(), "application/json");
  EXPECT_EQ(r.out[1].kind(), message_kind::exception);
  EXPECT_EQ(r.out[1].exception_type(), "validationException");
  EXPECT_EQ(r.out[1].payload, R"({"message":"bad"})");
  EXPECT_EQ(r.out[2].kind(), message_kind::error);
  EXPECT_EQ(r.out[2].error_code(), "InternalFailure");
  EXPECT_EQ(r.out[2].error_message(), "boom");
  EXPECT_TRUE(r.out[2].payload.empty());
  EXPECT_EQ(r.out[3].kind(), message_kind::other);
  EXPECT_TRUE(r.out[3].event_type().empty());
  ASSERT_NE(r.out[3].find(":event-type"), nullptr);
  EXPECT_EQ(r.out[3].find(":event-type")->integer, 7);
}

TEST(EventStreamTest, ZeroLengthPayloads) {
  const std::string a = frame(string_header(":message-type", "event"), "");
  const std::string b = frame("", "");
  const std::string c = frame(string_header(":event-type", "x"), "");
  const std::string all = a + b + c + a;
  const run r = decode(all);
  ASSERT_TRUE(r.ok) << r.text;
  ASSERT_EQ(r.out.size(), 4u);
  for (const message& m : r.out) EXPECT_TRUE(m.payload.empty());
  EXPECT_EQ(r.out[0].total_length, a.size());
  EXPECT_EQ(r.out[1].total_length, 16u);
  EXPECT_EQ(r.out[2].event_type(), "x");

  // The same, one byte at a time.
  decoder d;
  std::vector<message> out;
  for (char ch : all) ASSERT_TRUE(d.feed(std::string_view(&ch, 1), out)) << d.error_text();
  EXPECT_EQ(out.size(), 4u);
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_TRUE(d.finish());
}

TEST(EventStreamTest, SplitExactlyAtThePreludeBoundary) {
  const std::string m1 = frame(string_header(":event-type", "messageStart"), R"({"role":"assistant"})");
  const std::string m2 = frame(string_header(":event-type", "messageStop"), R"({"stopReason":"end_turn"})");
  decoder d;
  std::vector<message> out;
  ASSERT_TRUE(d.feed(std::string_view(m1).substr(0, 12), out));
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(d.buffered(), 12u);
  // The rest of m1 plus exactly m2's prelude.
  ASSERT_TRUE(d.feed(m1.substr(12) + m2.substr(0, 12), out)) << d.error_text();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].event_type(), "messageStart");
  EXPECT_EQ(d.buffered(), 12u);
  // Nothing after a prelude, then the rest.
  ASSERT_TRUE(d.feed("", out));
  EXPECT_EQ(d.buffered(), 12u);
  ASSERT_TRUE(d.feed(std::string_view(m2).substr(12), out)) << d.error_text();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].event_type(), "messageStop");
  EXPECT_EQ(out[1].payload, R"({"stopReason":"end_turn"})");
  EXPECT_EQ(d.buffered(), 0u);
  EXPECT_TRUE(d.finish());
}

TEST(EventStreamTest, OversizedLengthIsRefusedFromThePreludeAlone) {
  decoder d(decoder_limits{1024, 128});
  std::vector<message> out;
  EXPECT_FALSE(d.feed(prelude(1025, 0), out));
  EXPECT_EQ(d.error(), decode_error::message_too_large);
  EXPECT_EQ(d.error_text(), "message length 1025 exceeds the maximum of 1024");
  EXPECT_EQ(d.buffered(), 0u);

  // Exactly the limit is fine (and only the bytes that arrived are held).
  decoder at_limit(decoder_limits{1024, 128});
  EXPECT_TRUE(at_limit.feed(prelude(1024, 0), out));
  EXPECT_EQ(at_limit.buffered(), 12u);
  EXPECT_FALSE(at_limit.finish());
  EXPECT_EQ(at_limit.error(), decode_error::truncated_stream);
  EXPECT_EQ(at_limit.error_text(), "stream ended inside a message (12 bytes of 1024 received)");

  // The default limit is 16 MiB; the largest uint32 length is refused with it.
  const run big = decode(prelude(16 * 1024 * 1024 + 1, 0));
  EXPECT_FALSE(big.ok);
  EXPECT_EQ(big.text, "message length 16777217 exceeds the maximum of 16777216");
  const run huge = decode(prelude(0xffffffffu, 0) + std::string(100, 'x'));
  EXPECT_EQ(huge.error, decode_error::message_too_large);
  decoder ok16;
  EXPECT_TRUE(ok16.feed(prelude(16 * 1024 * 1024, 0), out));

  // Split across the prelude: refused when its 12th byte arrives.
  decoder split(decoder_limits{1024, 128});
  const std::string p = prelude(5000, 0);
  EXPECT_TRUE(split.feed(std::string_view(p).substr(0, 11), out));
  EXPECT_EQ(split.buffered(), 11u);
  EXPECT_FALSE(split.feed(p.substr(11) + std::string(4000, 'x'), out));
  EXPECT_EQ(split.error(), decode_error::message_too_large);
  EXPECT_EQ(split.buffered(), 0u);
  EXPECT_TRUE(out.empty());
}

TEST(EventStreamTest, BadLengthsInAValidPrelude) {
  const run short_total = decode(prelude(15, 0) + std::string(10, '\0'));
  EXPECT_EQ(short_total.error, decode_error::message_too_short);
  EXPECT_EQ(short_total.text, "message length 15 is below the minimum of 16");

  const run zero = decode(prelude(0, 0));
  EXPECT_EQ(zero.error, decode_error::message_too_short);

  const run headers_too_long = decode(prelude(20, 5) + std::string(8, '\0'));
  EXPECT_EQ(headers_too_long.error, decode_error::headers_length_invalid);
  EXPECT_EQ(headers_too_long.text, "headers length 5 exceeds message length 20 minus 16");

  const std::string h = string_header("name", std::string(200, 'v'));
  const run over_header_limit = decode(frame(h, ""), decoder_limits{1024, 128});
  EXPECT_EQ(over_header_limit.error, decode_error::headers_length_invalid);
  EXPECT_EQ(over_header_limit.text, "headers length 208 exceeds the maximum of 128");
  EXPECT_TRUE(over_header_limit.out.empty());

  // headers_length == total - 16 exactly: all headers, no payload.
  const run exact = decode(frame(string_header("a", "b"), ""));
  EXPECT_TRUE(exact.ok) << exact.text;
}

TEST(EventStreamTest, TruncatedHeadersAreRejected) {
  const std::string good = string_header(":event-type", "chunk");
  struct bad_case {
    const char* what;
    std::string raw;
    const char* text;
  };
  const std::vector<bad_case> cases = {
      {"name length past the end", std::string("\x05:ev", 4), "header 0: truncated name"},
      {"no type byte", std::string("\x03:ev", 4), "header 0: truncated name"},
      {"no room for the string length", name_and_type("s", header_type::string) + '\x00',
       "header 0 ('s'): truncated value length"},
      {"string shorter than its length", string_header("s", "abcdef").substr(0, 7),
       "header 0 ('s'): truncated value"},
      {"int32 cut", int_header("i", header_type::int32, 1).substr(0, 5),
       "header 0 ('i'): truncated value"},
      {"int64 cut", int_header("l", header_type::int64, 1).substr(0, 9),
       "header 0 ('l'): truncated value"},
      {"timestamp cut", int_header("t", header_type::timestamp, 1).substr(0, 4),
       "header 0 ('t'): truncated value"},
      {"uuid cut", name_and_type("u", header_type::uuid) + std::string(15, 'x'),
       "header 0 ('u'): truncated value"},
      {"byte missing", name_and_type("b", header_type::byte), "header 0 ('b'): truncated value"},
      {"second header cut", good + int_header("n", header_type::int16, 3).substr(0, 3),
       "header 1 ('n'): truncated value"},
  };
  for (const bad_case& c : cases) {
    SCOPED_TRACE(c.what);
    // The payload after the headers must not be read as header bytes.
    const run r = decode(frame(c.raw, "payload bytes"));
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(r.out.empty());
    EXPECT_EQ(r.error, decode_error::header_truncated);
    EXPECT_EQ(r.text, c.text);
  }
}

TEST(EventStreamTest, UnknownHeaderTypesAreRejected) {
  for (int t : {10, 11, 127, 255}) {
    SCOPED_TRACE(t);
    std::string raw = string_header(":event-type", "chunk");
    raw += name_and_type("x\n", static_cast<header_type>(t));
    raw += "abcd";
    const run r = decode(frame(raw, "{}"));
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(r.out.empty());
    EXPECT_EQ(r.error, decode_error::unknown_header_type);
    EXPECT_EQ(r.text, "header 1 ('x?'): unknown value type " + std::to_string(t));
  }
}

TEST(EventStreamTest, ChecksumFaults) {
  const std::string good = frame(string_header(":event-type", "metadata"), R"({"usage":{}})");
  for (std::size_t i = 0; i < good.size(); ++i) {
    SCOPED_TRACE(i);
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    const run r = decode(bad);
    EXPECT_FALSE(r.ok);
    EXPECT_TRUE(r.out.empty());
    if (i < 12) {
      EXPECT_EQ(r.error, decode_error::prelude_checksum_mismatch);
      EXPECT_TRUE(r.text.starts_with("prelude checksum mismatch: computed 0x")) << r.text;
    } else {
      EXPECT_EQ(r.error, decode_error::message_checksum_mismatch);
      EXPECT_TRUE(r.text.starts_with("message checksum mismatch: computed 0x")) << r.text;
    }
  }
}

TEST(EventStreamTest, MessagesBeforeAFaultAreDeliveredThenTheDecoderStaysFailed) {
  const std::string good = frame(string_header(":event-type", "messageStart"), "{}");
  std::string bad = good;
  bad.back() = static_cast<char>(bad.back() ^ 0x80);
  decoder d;
  std::vector<message> out;
  EXPECT_FALSE(d.feed(good + bad + good, out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(d.failed());
  EXPECT_EQ(d.error(), decode_error::message_checksum_mismatch);
  const std::string text = d.error_text();
  EXPECT_EQ(d.buffered(), 0u);
  // No resynchronisation: valid bytes later are not read, and the reason does not change.
  EXPECT_FALSE(d.feed(good, out));
  EXPECT_FALSE(d.feed("", out));
  EXPECT_FALSE(d.finish());
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(d.error_text(), text);
}

TEST(EventStreamTest, FinishOnABoundaryAndInsideAMessage) {
  const std::string m = frame(string_header(":event-type", "x"), "abc");
  decoder clean;
  std::vector<message> out;
  EXPECT_TRUE(clean.finish());  // an empty stream is clean
  EXPECT_TRUE(clean.feed(m, out));
  EXPECT_TRUE(clean.finish());
  EXPECT_FALSE(clean.failed());

  decoder mid_prelude;
  EXPECT_TRUE(mid_prelude.feed(std::string_view(m).substr(0, 5), out));
  EXPECT_FALSE(mid_prelude.finish());
  EXPECT_EQ(mid_prelude.error_text(), "stream ended inside a message (5 bytes received)");

  decoder mid_body;
  EXPECT_TRUE(mid_body.feed(std::string_view(m).substr(0, m.size() - 1), out));
  EXPECT_EQ(mid_body.buffered(), m.size() - 1);
  EXPECT_FALSE(mid_body.finish());
  EXPECT_EQ(mid_body.error(), decode_error::truncated_stream);
}

TEST(EventStreamTest, LargePayloadAcrossManyPieces) {
  std::string payload;
  for (int i = 0; i < 300000; ++i) payload.push_back(static_cast<char>('a' + i % 26));
  const std::string m = frame(string_header(":event-type", "chunk"), payload);
  const std::string stream = m + m;
  decoder d;
  std::vector<message> out;
  std::size_t max_buffered = 0;
  for (std::size_t pos = 0; pos < stream.size(); pos += 4093) {
    ASSERT_TRUE(d.feed(std::string_view(stream).substr(pos, 4093), out)) << d.error_text();
    max_buffered = std::max(max_buffered, d.buffered());
  }
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].payload, payload);
  EXPECT_EQ(out[1].payload, payload);
  EXPECT_LT(max_buffered, m.size());
  EXPECT_TRUE(d.finish());
}

}  // namespace
