// SPDX-License-Identifier: Apache-2.0
// The RESP the admission path writes by hand (resp_args, resp_command) against hiredis's own
// formatting of the same arguments: numbers of every length and sign, strings of every length
// class, bytes RESP must carry as they are. No sockets.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "policy/redis_client.hpp"

namespace tollgate::policy::redis {
namespace {

std::string hiredis_format(const std::vector<std::string>& argv) {
  std::vector<const char*> p;
  std::vector<std::size_t> len;
  for (auto& a : argv) {
    p.push_back(a.data());
    len.push_back(a.size());
  }
  char* out = nullptr;
  const long long n = redisFormatCommandArgv(&out, int(argv.size()), p.data(), len.data());
  EXPECT_GT(n, 0);
  std::string s(out, std::size_t(n));
  redisFreeCommand(out);
  return s;
}

TEST(RespArgsTest, NumbersAndStringsAsHiredisFormatsThem) {
  std::vector<std::string> want = {"EVALSHA", "sha"};
  resp_args args;
  std::vector<std::int64_t> signed_values = {0, 1, -1, 9, -9, 10, -10, 99, 100,
                                             std::numeric_limits<std::int64_t>::min(),
                                             std::numeric_limits<std::int64_t>::max()};
  std::int64_t p = 1;
  for (int digits = 1; digits <= 18; ++digits, p *= 10) {  // each length, at both ends of it
    signed_values.push_back(p);
    signed_values.push_back(p * 10 - 1);
    signed_values.push_back(-p);
  }
  for (auto v : signed_values) {
    args.add(v);
    want.push_back(std::to_string(v));
  }
  for (std::uint64_t v : {std::uint64_t(0), std::uint64_t(10'000'000'000'000'000'000ULL),
                          std::numeric_limits<std::uint64_t>::max()}) {
    args.add(v);
    want.push_back(std::to_string(v));
  }
  for (std::size_t n : {0, 1, 9, 10, 99, 100, 1000}) {
    std::string s(n, 'x');
    if (n > 3) s.replace(1, 2, "\r\n");  // binary-safe: length-prefixed, not line-ended
    args.add(std::string_view(s));
    want.push_back(s);
  }
  EXPECT_EQ(args.count(), want.size() - 2);
  const std::string_view head[] = {"EVALSHA", "sha"};
  EXPECT_EQ(resp_command(head, args), hiredis_format(want));
}

TEST(RespArgsTest, PartsMakeTheSameCommandAsOneTail) {
  // An admission batch goes as keys, header and calls: three parts, some possibly empty, must
  // give exactly the command of their arguments in order.
  resp_args keys, header, calls, empty, all;
  std::vector<std::string> want = {"EVALSHA", "sha", "2"};
  for (std::string k : {"tg:{t}:l", "tg:{t}:x"}) keys.add(k), all.add(k), want.push_back(k);
  for (std::int64_t v : {60000, 1, -1}) header.add(v), all.add(v), want.push_back(std::to_string(v));
  for (std::string c : {"lease|t=1=5", "12,34;1", ""}) calls.add(c), all.add(c), want.push_back(c);
  const std::string_view head[] = {"EVALSHA", "sha", "2"};
  const resp_args* parts[] = {&keys, &empty, &header, &calls};
  EXPECT_EQ(resp_command(head, parts), hiredis_format(want));
  EXPECT_EQ(resp_command(head, parts), resp_command(head, all));
  const resp_args* none[] = {&empty};
  EXPECT_EQ(resp_command(head, none), hiredis_format({"EVALSHA", "sha", "2"}));
}

}  // namespace
}  // namespace tollgate::policy::redis
