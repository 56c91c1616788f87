// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the content stream filter, with every built-in detector (some blocking, most
// redacting) and a word list, must give for the input cut into pieces (sizes taken from the
// input) exactly what the whole-text scan gives, never crash, and never hold back more than its
// bound.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "policy/content_filter/content_filter.hpp"

namespace cf = tollgate::policy::content_filter;

namespace {
struct engine {
  cf::filter_set set;
  cf::scratch scratch;
};
engine& get() {
  static engine e = [] {
    auto rules = cf::builtin_rules(cf::action::redact);
    for (auto& r : rules)
      if (r.name == "private_key" || r.name == "aws_access_key") r.act = cf::action::block;
    rules.push_back(cf::rule::make_word_list("banned", {"forbidden", "c++"}, cf::action::flag));
    auto set = cf::compile(rules);
    if (!set) std::abort();
    auto s = cf::scratch::create(*set);
    if (!s) std::abort();
    return engine{std::move(*set), std::move(*s)};
  }();
  return e;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  auto& e = get();
  const std::size_t step0 = data[0] % 17 + 1;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto whole = cf::scan_text(e.set, e.scratch, text);
  auto sf = cf::stream_filter::create(e.set, e.scratch);
  if (!sf) std::abort();
  std::string out;
  bool blocked = false;
  std::size_t pos = 0, step = step0;
  while (pos < text.size() && !blocked) {
    const std::size_t n = std::min(step, text.size() - pos);
    auto r = sf->feed(text.substr(pos, n));
    out += r.text;
    blocked = r.blocked;
    if (sf->held_back() > cf::stream_filter::hold_bound(e.set)) std::abort();
    pos += n;
    step = step % 13 + 1;
  }
  if (!blocked) {
    auto r = sf->finish();
    out += r.text;
    blocked = r.blocked;
  }
  if (whole.scan_failed) return 0;
  const std::string expected = whole.redacted_text ? *whole.redacted_text : std::string(text);
  if (blocked != whole.blocked || out != expected) std::abort();
  return 0;
}
