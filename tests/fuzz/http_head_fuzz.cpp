// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the raw request-head guard must never crash or read out of bounds, and a head
// it accepts must be CRLF-terminated.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gateway/core/http_guard.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t end = tollgate::find_head_end(in);
  if (end > in.size()) std::abort();
  std::string_view head = end ? in.substr(0, end) : in;
  tollgate::head_limits limits{4096, 50, 1024};
  auto v = tollgate::check_head(head, limits);
  if (v && end && !head.ends_with("\r\n\r\n")) std::abort();
  (void)tollgate::expects_continue(head);
  return 0;
}
