// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the SSE parser must never crash, and any split of the input must give the
// same events as feeding it whole.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "gateway/core/sse.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  using tollgate::sse::event;
  std::vector<event> whole, split;
  tollgate::sse::parser a(1 << 16), b(1 << 16);
  const bool ok_a = a.feed(in, whole);
  // Split at positions derived from the input itself.
  std::size_t pos = 0;
  bool ok_b = true;
  std::size_t step = size ? (data[0] % 7) + 1 : 1;
  while (pos < in.size() && ok_b) {
    std::size_t n = std::min(step, in.size() - pos);
    ok_b = b.feed(in.substr(pos, n), split);
    pos += n;
    step = step % 5 + 1;
  }
  if (ok_a && ok_b) {
    if (whole.size() != split.size()) std::abort();
    for (std::size_t i = 0; i < whole.size(); ++i)
      if (whole[i].data != split[i].data || whole[i].name != split[i].name || whole[i].id != split[i].id) std::abort();
  }
  return 0;
}
