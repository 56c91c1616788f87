// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Incremental Server-Sent Events parser (WHATWG HTML §9.2.6) and writer. Pure: bytes in, events
/// out, no I/O. Any split of the input gives the same events. Accepts CRLF, LF and CR line ends,
/// comment lines, multi-line data. Also surfaces llama.cpp's non-standard `error: {...}` line as
/// an event named "error" (PROTOCOLS.md §5), which a strict parser would drop.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::sse {

struct event {
  std::string name;  ///< `event:` field; empty means "message"
  std::string data;  ///< `data:` lines joined with '\n'
  std::string id;
};

class parser {
 public:
  explicit parser(std::size_t max_event_bytes = 4 * 1024 * 1024) : max_(max_event_bytes) {}

  /// Feeds bytes; appends every completed event to `out`. Returns false if an event grew
  /// beyond the limit (the stream should be treated as broken).
  bool feed(std::string_view bytes, std::vector<event>& out);

  /// Bytes of an incomplete line or event held back (bounded by the limit).
  std::size_t buffered() const { return line_.size() + cur_.data.size(); }

 private:
  bool feed_lines(std::string_view bytes, std::vector<event>& out);
  void on_line(std::string_view line, std::vector<event>& out);

  std::size_t max_;
  std::string line_;
  event cur_;
  bool has_data_ = false;
  bool skip_lf_ = false;  ///< last byte fed was CR: a following LF belongs to it
  bool bom_checked_ = false;
  std::string bom_buf_;  ///< the first bytes, until it is known whether they are a BOM
};

/// `data: <payload>\n\n`; a payload of several lines (CR, LF or CRLF) becomes a `data:` line each,
/// which a reader joins with LF (JSON from a serializer has none; an upstream's event may).
std::string format_data(std::string_view payload);
/// `event: <name>\ndata: <payload>\n\n`.
std::string format_event(std::string_view name, std::string_view payload);

}  // namespace tollgate::sse
