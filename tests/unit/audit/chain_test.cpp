// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/chain.hpp"

#include <gtest/gtest.h>

#include <string>

namespace tollgate::audit {
namespace {

const std::string hash_a(64, 'a');

TEST(AuditChainTest, Sha256HexMatchesTheFipsVectors) {
  // FIPS 180-2 appendix B and the empty string.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(AuditChainTest, Sha256HexHashesEmbeddedNulBytes) {
  const std::string with_nul("a\0b", 3);
  EXPECT_NE(sha256_hex(with_nul), sha256_hex("a"));
  EXPECT_EQ(sha256_hex(with_nul).size(), 64u);
}

TEST(AuditChainTest, GenesisIsSixtyFourZeros) {
  EXPECT_EQ(genesis_hash, std::string(64, '0'));
}

TEST(AuditChainTest, SegmentNamePadsTheSeqToTwentyDigits) {
  EXPECT_EQ(segment_name("gw-1", 1), "gw-1.00000000000000000001.jsonl");
  EXPECT_EQ(segment_name("gw", 18446744073709551615ull), "gw.18446744073709551615.jsonl");
  EXPECT_EQ(checkpoint_name("gw-1"), "gw-1.checkpoint");
}

TEST(AuditChainTest, ParseSegmentNameRoundTrips) {
  for (std::uint64_t seq : {1ull, 42ull, 1234567890123ull, 18446744073709551615ull}) {
    auto id = parse_segment_name(segment_name("host_a-8080", seq));
    ASSERT_TRUE(id) << seq;
    EXPECT_EQ(id->instance, "host_a-8080");
    EXPECT_EQ(id->first_seq, seq);
  }
  // The instance is everything before the last dot.
  auto dotted = parse_segment_name("a.b.00000000000000000007.jsonl");
  ASSERT_TRUE(dotted);
  EXPECT_EQ(dotted->instance, "a.b");
  EXPECT_EQ(dotted->first_seq, 7u);
}

TEST(AuditChainTest, ParseSegmentNameRejectsOtherFiles) {
  for (const char* name : {
           "gw.checkpoint",
           "gw.checkpoint.tmp",
           "gw.00000000000000000001.json",        // wrong extension
           "gw.0000000000000000001.jsonl",        // 19 digits
           "gw.000000000000000000001.jsonl",      // 21 digits
           ".00000000000000000001.jsonl",         // no instance
           "00000000000000000000001.jsonl",       // no dot before the number
           "gw.0000000000000000000x.jsonl",       // not a number
           "gw.-0000000000000000001.jsonl",       // sign
           "gw.99999999999999999999.jsonl",       // beyond uint64
           "gw.00000000000000000001.jsonl.bak",
           "",
       }) {
    EXPECT_FALSE(parse_segment_name(name)) << name;
  }
}

TEST(AuditChainTest, ParseLineHeadReadsSeqAndPrev) {
  const std::string line = "{\"seq\":17,\"prev\":\"" + hash_a + "\",\"type\":\"call\"}";
  auto h = parse_line_head(line);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->seq, 17u);
  EXPECT_EQ(h->prev, hash_a);
  // prev points into the line itself (no copy).
  EXPECT_GE(h->prev.data(), line.data());
  EXPECT_LT(h->prev.data(), line.data() + line.size());

  // A record with no fields of its own ends right after prev.
  auto bare = parse_line_head("{\"seq\":3,\"prev\":\"" + hash_a + "\"}");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->seq, 3u);

  auto big = parse_line_head("{\"seq\":18446744073709551615,\"prev\":\"" + std::string(genesis_hash) + "\",\"x\":1}");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->seq, 18446744073709551615ull);
  EXPECT_EQ(big->prev, genesis_hash);
}

TEST(AuditChainTest, ParseLineHeadRejectsLinesThatDoNotStartWithSeqAndPrev) {
  const std::string ok_tail = hash_a + "\",\"type\":\"call\"}";
  for (const std::string& line : {
           std::string(""),
           std::string("hello"),
           std::string("{\"type\":\"call\"}"),
           " {\"seq\":1,\"prev\":\"" + ok_tail,                          // leading space
           "{\"seq\": 1,\"prev\":\"" + ok_tail,                          // space after the colon
           "{\"seq\":-1,\"prev\":\"" + ok_tail,                          // negative
           "{\"seq\":\"1\",\"prev\":\"" + ok_tail,                       // quoted number
           "{\"seq\":1,\"prv\":\"" + ok_tail,                            // misspelt key
           "{\"prev\":\"" + hash_a + "\",\"seq\":1,\"type\":\"call\"}",  // keys swapped
           "{\"seq\":1,\"prev\":\"" + std::string(63, 'a') + "\",\"type\":\"call\"}",  // short hash
           "{\"seq\":1,\"prev\":\"" + std::string(65, 'a') + "\",\"type\":\"call\"}",  // long hash
           "{\"seq\":1,\"prev\":\"" + hash_a,                            // cut inside
           "{\"seq\":99999999999999999999,\"prev\":\"" + ok_tail,        // beyond uint64
       }) {
    EXPECT_FALSE(parse_line_head(line)) << line;
  }
}

}  // namespace
}  // namespace tollgate::audit
