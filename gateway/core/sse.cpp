// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/sse.hpp"

#include <cstring>

namespace tollgate::sse {
namespace {

/// Position of the next CR or LF at or after `from`, or npos. Two vectorised memchr calls:
/// std::string_view::find_first_of calls memchr on the two-byte set once per input byte.
std::size_t find_line_end(std::string_view in, std::size_t from) {
  const char* base = in.data();
  const std::size_t n = in.size() - from;
  const void* lf = std::memchr(base + from, '\n', n);
  const std::size_t lf_pos = lf ? std::size_t(static_cast<const char*>(lf) - base) : in.size();
  const void* cr = std::memchr(base + from, '\r', lf_pos - from);
  if (cr) return std::size_t(static_cast<const char*>(cr) - base);
  return lf ? lf_pos : std::string_view::npos;
}

}  // namespace

bool parser::feed(std::string_view in, std::vector<event>& out) {
  if (!bom_checked_) {
    // A UTF-8 BOM at the very start of the stream is ignored (spec), even when split over reads.
    static constexpr std::string_view bom = "\xEF\xBB\xBF";
    const std::size_t take = std::min(in.size(), bom.size() - bom_buf_.size());
    bom_buf_.append(in.substr(0, take));
    in.remove_prefix(take);
    if (bom_buf_.size() < bom.size() && bom.starts_with(bom_buf_)) return true;  // need more bytes
    bom_checked_ = true;
    if (bom_buf_ != bom) {
      std::string head = std::move(bom_buf_);
      if (!feed_lines(head, out)) return false;
    }
    bom_buf_.clear();
  }
  return feed_lines(in, out);
}

bool parser::feed_lines(std::string_view in, std::vector<event>& out) {
  std::size_t i = 0;
  if (skip_lf_ && i < in.size()) {
    if (in[i] == '\n') ++i;
    skip_lf_ = false;
  }
  while (i < in.size()) {
    std::size_t j = find_line_end(in, i);
    if (j == std::string_view::npos) {
      line_.append(in.substr(i));
      if (line_.size() + cur_.data.size() > max_) return false;
      return true;
    }
    if (line_.empty()) {
      on_line(in.substr(i, j - i), out);
    } else {
      line_.append(in.substr(i, j - i));
      on_line(line_, out);
      line_.clear();
    }
    if (cur_.data.size() > max_) return false;
    if (in[j] == '\r') {
      if (j + 1 < in.size()) {
        i = (in[j + 1] == '\n') ? j + 2 : j + 1;
      } else {
        skip_lf_ = true;
        i = j + 1;
      }
    } else {
      i = j + 1;
    }
  }
  return true;
}

void parser::on_line(std::string_view line, std::vector<event>& out) {
  if (line.empty()) {
    if (has_data_) out.push_back(std::move(cur_));
    cur_ = event{};
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment
  std::string_view field = line, value;
  if (auto c = line.find(':'); c != std::string_view::npos) {
    field = line.substr(0, c);
    value = line.substr(c + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) cur_.data.push_back('\n');
    cur_.data.append(value);
    has_data_ = true;
  } else if (field == "event") {
    cur_.name.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) cur_.id.assign(value);
  } else if (field == "error") {
    // llama.cpp sends `error: {json}` mid-stream instead of a data line.
    cur_.name = "error";
    if (has_data_) cur_.data.push_back('\n');
    cur_.data.append(value);
    has_data_ = true;
  }
  // `retry` and unknown fields are ignored, as the spec says.
}

std::string format_data(std::string_view payload) {
  std::string s;
  s.reserve(payload.size() + 8);
  if (payload.find_first_of("\r\n") == std::string_view::npos) {
    s.append("data: ").append(payload).append("\n\n");
    return s;
  }
  // An upstream's event of several data lines (JSON may break between its tokens): a line each,
  // which the reader joins with '\n' again. Written as one, the second line would be read as a
  // field of its own and dropped, leaving the caller half an object.
  for (std::size_t at = 0;;) {
    const std::size_t end = std::min(payload.find_first_of("\r\n", at), payload.size());
    s.append("data: ").append(payload.substr(at, end - at)).push_back('\n');
    if (end == payload.size()) break;
    at = end + (payload[end] == '\r' && end + 1 < payload.size() && payload[end + 1] == '\n' ? 2 : 1);
  }
  s.push_back('\n');
  return s;
}

std::string format_event(std::string_view name, std::string_view payload) {
  std::string s;
  s.reserve(name.size() + payload.size() + 16);
  s.append("event: ").append(name).append("\ndata: ").append(payload).append("\n\n");
  return s;
}

}  // namespace tollgate::sse
