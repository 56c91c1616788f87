// SPDX-License-Identifier: Apache-2.0
// The event-stream decoder against the shared vectors: aws-sdk-go's codec vectors (positive and
// negative) and the Bedrock ConverseStream / InvokeModelWithResponseStream streams encoded with
// @smithy/eventstream-codec (PROTOCOLS.md §6). Files are discovered by walking the folders, and
// each stream is also fed one byte at a time and split at every offset.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "providers/bedrock/event_stream.hpp"

#include "tests/unit/testdata.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using tollgate::providers::aws::decode_error;
using tollgate::providers::aws::decoder;
using tollgate::providers::aws::header_type;
using tollgate::providers::aws::message;
using tollgate::providers::aws::message_kind;

const fs::path testdata = TOLLGATE_TESTDATA;
const fs::path aws_vectors = testdata / "aws-eventstream-test-vectors";
const fs::path bedrock_streams = testdata / "bedrock-eventstream-derived";

using tollgate::testing::read_file;

/// Regular files directly in `dir` (optionally only those ending in `suffix`), sorted.
std::vector<fs::path> files_in(const fs::path& dir, std::string_view suffix = {}) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().filename().string().ends_with(suffix)) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = value(c);
    EXPECT_GE(v, 0) << "bad base64 character in test vector";
    if (v < 0) return out;
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

struct decoded {
  std::vector<message> messages;
  bool ok = false;
  bool finished = false;
  decode_error error = decode_error::none;
  std::string error_text;
};

decoded decode_whole(std::string_view bytes) {
  decoder d;
  decoded r;
  r.ok = d.feed(bytes, r.messages);
  r.finished = d.finish();
  r.error = d.error();
  r.error_text = d.error_text();
  return r;
}

void expect_same_messages(const std::vector<message>& got, const std::vector<message>& want,
                          const std::string& where) {
  ASSERT_EQ(got.size(), want.size()) << where;
  for (std::size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(where + " message " + std::to_string(i));
    EXPECT_EQ(got[i].total_length, want[i].total_length);
    EXPECT_EQ(got[i].headers_length, want[i].headers_length);
    EXPECT_EQ(got[i].prelude_crc, want[i].prelude_crc);
    EXPECT_EQ(got[i].message_crc, want[i].message_crc);
    EXPECT_EQ(got[i].payload, want[i].payload);
    ASSERT_EQ(got[i].headers.size(), want[i].headers.size());
    for (std::size_t h = 0; h < got[i].headers.size(); ++h) {
      EXPECT_EQ(got[i].headers[h].name, want[i].headers[h].name);
      EXPECT_EQ(got[i].headers[h].type, want[i].headers[h].type);
      EXPECT_EQ(got[i].headers[h].integer, want[i].headers[h].integer);
      EXPECT_EQ(got[i].headers[h].bytes, want[i].headers[h].bytes);
    }
  }
}

/// Offset at which each message of a whole-decoded stream starts, plus the end.
std::vector<std::size_t> boundaries(const std::vector<message>& ms) {
  std::vector<std::size_t> b{0};
  for (const message& m : ms) b.push_back(b.back() + m.total_length);
  return b;
}

/// Bytes a correct decoder holds back after `fed` bytes: those of the message in progress.
std::size_t expected_buffered(const std::vector<std::size_t>& bounds, std::size_t fed) {
  auto it = std::upper_bound(bounds.begin(), bounds.end(), fed);
  return fed - *(it - 1);
}

/// Feeds `bytes` in the pieces given by `cuts` (increasing offsets) and checks, after every
/// piece, that exactly the bytes of the message in progress are buffered.
std::vector<message> feed_in_pieces(std::string_view bytes, const std::vector<std::size_t>& cuts,
                                    const std::vector<std::size_t>& bounds) {
  decoder d;
  std::vector<message> out;
  std::size_t pos = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(bytes.size());
  for (std::size_t end : ends) {
    EXPECT_TRUE(d.feed(bytes.substr(pos, end - pos), out)) << d.error_text();
    pos = end;
    EXPECT_EQ(d.buffered(), expected_buffered(bounds, pos)) << "after " << pos << " bytes";
    EXPECT_EQ(out.size(),
              static_cast<std::size_t>(std::upper_bound(bounds.begin(), bounds.end(), pos) -
                                       bounds.begin() - 1))
        << "messages out after " << pos << " bytes";
  }
  EXPECT_TRUE(d.finish());
  return out;
}

/// Whole, byte by byte, every two-piece split and random pieces must agree.
void check_incremental(const fs::path& file) {
  SCOPED_TRACE(file.filename().string());
  const std::string bytes = read_file(file);
  const decoded whole = decode_whole(bytes);
  ASSERT_TRUE(whole.ok && whole.finished) << whole.error_text;
  const auto bounds = boundaries(whole.messages);
  ASSERT_EQ(bounds.back(), bytes.size());

  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < bytes.size(); ++i) every.push_back(i);
  expect_same_messages(feed_in_pieces(bytes, every, bounds), whole.messages, "byte by byte");

  for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
    expect_same_messages(feed_in_pieces(bytes, {cut}, bounds), whole.messages,
                         "split at " + std::to_string(cut));
    if (::testing::Test::HasFailure()) return;  // one broken split is enough to read
  }

  std::mt19937 rng(12345);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::size_t> cuts;
    std::size_t pos = 0;
    while (true) {
      pos += std::uniform_int_distribution<std::size_t>(0, 300)(rng);
      if (pos >= bytes.size()) break;
      cuts.push_back(pos);
    }
    expect_same_messages(feed_in_pieces(bytes, cuts, bounds), whole.messages,
                         "random pieces, round " + std::to_string(round));
  }
}

std::vector<fs::path> all_streams() {
  std::vector<fs::path> files = files_in(aws_vectors / "encoded" / "positive");
  for (const auto& p : files_in(bedrock_streams, ".bin")) files.push_back(p);
  return files;
}

TEST(EventStreamVectorsTest, AwsPositiveVectorsDecodeToTheirJson) {
  const auto files = files_in(aws_vectors / "encoded" / "positive");
  ASSERT_FALSE(files.empty()) << "no vectors under " << aws_vectors;
  std::size_t checked = 0;
  for (const fs::path& file : files) {
    const std::string name = file.filename().string();
    SCOPED_TRACE(name);
    const fs::path expected_path = aws_vectors / "decoded" / "positive" / name;
    ASSERT_TRUE(fs::exists(expected_path));
    boost::system::error_code ec;
    const json::value expected = json::parse(read_file(expected_path), ec);
    ASSERT_FALSE(ec) << ec.message();
    const json::object& want = expected.as_object();

    const decoded got = decode_whole(read_file(file));
    ASSERT_TRUE(got.ok && got.finished) << got.error_text;
    ASSERT_EQ(got.messages.size(), 1u);
    const message& m = got.messages[0];
    EXPECT_EQ(m.total_length, want.at("total_length").to_number<std::int64_t>());
    EXPECT_EQ(m.headers_length, want.at("headers_length").to_number<std::int64_t>());
    EXPECT_EQ(static_cast<std::int32_t>(m.prelude_crc), want.at("prelude_crc").to_number<std::int64_t>());
    EXPECT_EQ(static_cast<std::int32_t>(m.message_crc), want.at("message_crc").to_number<std::int64_t>());
    EXPECT_EQ(m.payload, base64_decode(want.at("payload").as_string()));

    const json::array& headers = want.at("headers").as_array();
    ASSERT_EQ(m.headers.size(), headers.size());
    for (std::size_t i = 0; i < headers.size(); ++i) {
      const json::object& h = headers[i].as_object();
      const header_type type = static_cast<header_type>(h.at("type").to_number<int>());
      SCOPED_TRACE("header " + std::string(h.at("name").as_string()));
      EXPECT_EQ(m.headers[i].name, std::string_view(h.at("name").as_string()));
      EXPECT_EQ(m.headers[i].type, type);
      const json::value& v = h.at("value");
      switch (type) {
        case header_type::bool_true:
        case header_type::bool_false:
          EXPECT_EQ(m.headers[i].integer != 0, v.as_bool());
          EXPECT_TRUE(m.headers[i].bytes.empty());
          break;
        case header_type::byte:
        case header_type::int16:
        case header_type::int32:
        case header_type::int64:
        case header_type::timestamp:
          EXPECT_EQ(m.headers[i].integer, v.to_number<std::int64_t>());
          EXPECT_TRUE(m.headers[i].bytes.empty());
          break;
        case header_type::byte_array:
        case header_type::string:
        case header_type::uuid:
          EXPECT_EQ(m.headers[i].bytes, base64_decode(v.as_string()));
          break;
        default:
          ADD_FAILURE() << "unexpected type in vector";
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, files.size());
  std::cout << "[          ] aws positive vectors checked: " << checked << "\n";
}

TEST(EventStreamVectorsTest, AwsNegativeVectorsAreRejected) {
  const auto files = files_in(aws_vectors / "encoded" / "negative");
  ASSERT_FALSE(files.empty()) << "no vectors under " << aws_vectors;
  for (const fs::path& file : files) {
    const std::string name = file.filename().string();
    SCOPED_TRACE(name);
    const std::string bytes = read_file(file);
    const std::string want = lower(trim(read_file(aws_vectors / "decoded" / "negative" / name)));
    ASSERT_FALSE(want.empty());

    const decoded got = decode_whole(bytes);
    EXPECT_FALSE(got.ok);
    EXPECT_TRUE(got.messages.empty());
    EXPECT_TRUE(got.error_text.starts_with(want)) << got.error_text << " vs " << want;

    // Byte by byte: the same error, no message.
    decoder d;
    std::vector<message> out;
    bool ok = true;
    for (char c : bytes) ok = d.feed(std::string_view(&c, 1), out) && ok;
    EXPECT_FALSE(ok);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(d.error(), got.error);
    EXPECT_EQ(d.error_text(), got.error_text);
    EXPECT_EQ(d.buffered(), 0u);
  }
  std::cout << "[          ] aws negative vectors checked: " << files.size() << "\n";
}

TEST(EventStreamVectorsTest, BedrockStreamsDecodeToTheirExpectedLines) {
  const auto files = files_in(bedrock_streams, ".bin");
  ASSERT_FALSE(files.empty()) << "no streams under " << bedrock_streams;
  std::size_t total_messages = 0;
  for (const fs::path& file : files) {
    SCOPED_TRACE(file.filename().string());
    fs::path expected_path = file;
    expected_path.replace_extension(".expected.jsonl");
    ASSERT_TRUE(fs::exists(expected_path));
    std::vector<json::object> want;
    std::istringstream lines(read_file(expected_path));
    for (std::string line; std::getline(lines, line);) {
      if (trim(line).empty()) continue;
      boost::system::error_code ec;
      json::value v = json::parse(line, ec);
      ASSERT_FALSE(ec) << ec.message();
      want.push_back(v.as_object());
    }
    ASSERT_FALSE(want.empty());

    const decoded got = decode_whole(read_file(file));
    ASSERT_TRUE(got.ok && got.finished) << got.error_text;
    ASSERT_EQ(got.messages.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      SCOPED_TRACE("message " + std::to_string(i));
      const message& m = got.messages[i];
      EXPECT_EQ(m.total_length, want[i].at("total_length").to_number<std::int64_t>());
      EXPECT_EQ(m.payload, std::string_view(want[i].at("payload").as_string()));
      const json::object& headers = want[i].at("headers").as_object();
      ASSERT_EQ(m.headers.size(), headers.size());
      std::size_t h = 0;
      for (const auto& [name, value] : headers) {  // boost::json::object keeps wire order
        EXPECT_EQ(m.headers[h].name, std::string_view(name));
        EXPECT_TRUE(m.headers[h].is_string());
        EXPECT_EQ(m.headers[h].bytes, std::string_view(value.as_string()));
        EXPECT_EQ(m.string_header(name), std::string_view(value.as_string()));
        ++h;
      }
      // The convenience accessors agree with the raw headers.
      EXPECT_EQ(m.content_type(), "application/json");
      if (m.message_type() == "event") {
        EXPECT_EQ(m.kind(), message_kind::event);
        EXPECT_FALSE(m.event_type().empty());
        EXPECT_TRUE(m.exception_type().empty());
      } else {
        EXPECT_EQ(m.message_type(), "exception");
        EXPECT_EQ(m.kind(), message_kind::exception);
        EXPECT_TRUE(m.exception_type().ends_with("Exception")) << m.exception_type();
        EXPECT_TRUE(m.event_type().empty());
      }
    }
    total_messages += got.messages.size();
  }
  std::cout << "[          ] bedrock streams checked: " << files.size() << " (" << total_messages
            << " messages)\n";
}

TEST(EventStreamVectorsTest, BedrockExceptionFramesCarryTheirType) {
  const decoded throttled =
      decode_whole(read_file(bedrock_streams / "converse-stream-throttling-exception.bin"));
  ASSERT_TRUE(throttled.ok) << throttled.error_text;
  ASSERT_FALSE(throttled.messages.empty());
  EXPECT_EQ(throttled.messages.back().kind(), message_kind::exception);
  EXPECT_EQ(throttled.messages.back().exception_type(), "throttlingException");

  const decoded model_error =
      decode_whole(read_file(bedrock_streams / "converse-stream-model-stream-error.bin"));
  ASSERT_TRUE(model_error.ok) << model_error.error_text;
  ASSERT_FALSE(model_error.messages.empty());
  EXPECT_EQ(model_error.messages.back().exception_type(), "modelStreamErrorException");
  EXPECT_EQ(model_error.messages.front().event_type(), "messageStart");
}

TEST(EventStreamVectorsTest, AnySplitGivesTheSameMessagesAndBuffersOneMessageAtMost) {
  const auto files = all_streams();
  ASSERT_GT(files.size(), 6u) << "expected the aws and bedrock vectors";
  for (const fs::path& file : files) {
    check_incremental(file);
    if (HasFailure()) return;
  }
  std::cout << "[          ] streams fed incrementally: " << files.size() << "\n";
}

TEST(EventStreamVectorsTest, ConcatenatedStreamsDecodeToTheConcatenatedMessages) {
  std::string all;
  std::vector<message> want;
  for (const fs::path& file : all_streams()) {
    const std::string bytes = read_file(file);
    decoded d = decode_whole(bytes);
    ASSERT_TRUE(d.ok) << d.error_text;
    all += bytes;
    for (auto& m : d.messages) want.push_back(std::move(m));
  }
  ASSERT_FALSE(want.empty());
  const decoded got = decode_whole(all);
  ASSERT_TRUE(got.ok && got.finished) << got.error_text;
  expect_same_messages(got.messages, want, "concatenated");
  const auto bounds = boundaries(want);
  std::vector<std::size_t> cuts;
  for (std::size_t i = 7; i < all.size(); i += 7) cuts.push_back(i);
  expect_same_messages(feed_in_pieces(all, cuts, bounds), want, "concatenated, 7-byte pieces");
}

}  // namespace
