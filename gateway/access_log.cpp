// SPDX-License-Identifier: Apache-2.0
#include "gateway/access_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "gateway/core/provider.hpp"

namespace tollgate::gateway {
namespace json = boost::json;
namespace {

std::string iso8601(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = ms / 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms % 1000));
  return buf;
}

void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  std::size_t left = s.size();
  while (left) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a full disk or closed pipe must not stop the gateway
    p += n;
    left -= std::size_t(n);
  }
}

}  // namespace

bool access_log::open(const std::string& where, std::string& error) {
  if (where == "off") return true;
  if (where == "stdout") {
    fd_ = STDOUT_FILENO;
    return true;
  }
  fd_ = ::open(where.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    error = "cannot open access log " + where + ": " + std::strerror(errno);
    return false;
  }
  owns_ = true;
  return true;
}

access_log::~access_log() {
  if (owns_ && fd_ >= 0) ::close(fd_);
}

namespace {

/// Appends `v` as a JSON string (quotes, backslashes and control characters escaped).
void put_string(std::string& out, std::string_view v) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      out.append("\\u00").push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

void put_field(std::string& out, std::string_view key, std::string_view value) {
  out.append(",\"").append(key).append("\":");
  put_string(out, value);
}

void put_number(std::string& out, std::string_view key, std::uint64_t v) {
  out.append(",\"").append(key).append("\":").append(std::to_string(v));
}

void put_millis(std::string& out, std::string_view key, request_context::clock::duration d) {
  char buf[48];
  const int n = std::snprintf(buf, sizeof buf, ",\"%.*s\":%.3f", int(key.size()), key.data(),
                              double(std::chrono::duration_cast<std::chrono::microseconds>(d).count()) / 1000.0);
  out.append(buf, std::size_t(n));
}

}  // namespace

// Written by hand rather than through a json::object: the access line is built for every
// request, and the object's allocations cost more than the rest of the log phase.
std::string access_log::format(const request_context& ctx) {
  const auto now = request_context::clock::now();
  std::string o;
  o.reserve(512);
  o.append("{\"ts\":");
  put_string(o, iso8601(ctx.wall_start));
  put_field(o, "request_id", ctx.id_hex);
  put_number(o, "worker", ctx.worker);
  put_field(o, "client", ctx.client_addr);
  put_field(o, "method", ctx.method);
  put_field(o, "path", ctx.path);
  put_number(o, "status", ctx.status);
  if (!ctx.model.empty()) put_field(o, "model", ctx.model);
  if (ctx.target) {
    put_field(o, "provider", ctx.target->provider->name());
    put_field(o, "upstream_model", ctx.target->upstream_model);
  }
  if (ctx.endpoint == endpoint_kind::chat_completions) o.append(ctx.stream ? ",\"stream\":true" : ",\"stream\":false");
  if (!ctx.identity.anonymous) {
    put_field(o, "team", ctx.identity.team);
    put_field(o, "key_id", ctx.identity.key_id);
  }
  if (ctx.usage.prompt || ctx.usage.completion) {
    put_number(o, "prompt_tokens", ctx.usage.prompt);
    put_number(o, "completion_tokens", ctx.usage.completion);
    put_field(o, "usage_source", ctx.usage.reported ? "provider" : "counted");
  }
  if (ctx.attempts > 1) put_number(o, "attempts", ctx.attempts);
  if (!ctx.error_code.empty()) put_field(o, "error_code", ctx.error_code);
  if (!ctx.details.empty()) put_field(o, "details", ctx.details);
  if (!ctx.user_agent.empty()) put_field(o, "user_agent", std::string_view(ctx.user_agent).substr(0, 256));
  put_millis(o, "duration_ms", now - ctx.start);
  if (ctx.first_byte != request_context::clock::time_point{}) put_millis(o, "ttfb_ms", ctx.first_byte - ctx.start);
  o.append("}\n");
  return o;
}

void access_log::append(std::string& buffer, const request_context& ctx) {
  if (fd_ < 0) return;
  buffer += format(ctx);
  if (buffer.size() >= 32 * 1024) flush(buffer);
}

void access_log::flush(std::string& buffer) {
  if (fd_ < 0 || buffer.empty()) return;
  {
    std::lock_guard lock(write_mu_);
    write_all(fd_, buffer);
  }
  buffer.clear();
}

void log_event(std::string_view level, std::string_view msg, std::string_view extra) {
  json::object o;
  o["ts"] = iso8601(std::chrono::system_clock::now());
  o["level"] = level;
  o["msg"] = msg;
  std::string line = json::serialize(o);
  if (!extra.empty()) {
    line.pop_back();
    line.append(",").append(extra).append("}");
  }
  line.push_back('\n');
  write_all(STDERR_FILENO, line);
}

}  // namespace tollgate::gateway
