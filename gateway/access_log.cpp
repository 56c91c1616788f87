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

std::string access_log::format(const request_context& ctx) {
  using namespace std::chrono;
  const auto now = request_context::clock::now();
  json::object o;
  o["ts"] = iso8601(ctx.wall_start);
  o["request_id"] = ctx.id_hex;
  o["worker"] = ctx.worker;
  o["client"] = ctx.client_addr;
  o["method"] = ctx.method;
  o["path"] = ctx.path;
  o["status"] = ctx.status;
  if (!ctx.model.empty()) o["model"] = ctx.model;
  if (ctx.target) {
    o["provider"] = ctx.target->provider->name();
    o["upstream_model"] = ctx.target->upstream_model;
  }
  if (ctx.endpoint == endpoint_kind::chat_completions) o["stream"] = ctx.stream;
  if (!ctx.identity.anonymous) {
    o["team"] = ctx.identity.team;
    o["key_id"] = ctx.identity.key_id;
  }
  if (ctx.usage.prompt || ctx.usage.completion) {
    o["prompt_tokens"] = ctx.usage.prompt;
    o["completion_tokens"] = ctx.usage.completion;
    o["usage_source"] = ctx.usage.reported ? "provider" : "counted";
  }
  if (ctx.attempts > 1) o["attempts"] = ctx.attempts;
  if (!ctx.error_code.empty()) o["error_code"] = ctx.error_code;
  if (!ctx.details.empty()) o["details"] = ctx.details;
  if (!ctx.user_agent.empty()) o["user_agent"] = ctx.user_agent.substr(0, 256);
  std::string line = json::serialize(o);
  // Durations in milliseconds with microsecond precision, written as plain decimals (Boost.JSON
  // would print 1.071E0).
  char extra[96];
  int n = std::snprintf(extra, sizeof extra, ",\"duration_ms\":%.3f",
                        double(duration_cast<microseconds>(now - ctx.start).count()) / 1000.0);
  if (ctx.first_byte != request_context::clock::time_point{})
    n += std::snprintf(extra + n, sizeof extra - std::size_t(n), ",\"ttfb_ms\":%.3f",
                       double(duration_cast<microseconds>(ctx.first_byte - ctx.start).count()) / 1000.0);
  line.insert(line.size() - 1, extra, std::size_t(n));
  line.push_back('\n');
  return line;
}

void access_log::write(const request_context& ctx) {
  if (fd_ < 0) return;
  write_all(fd_, format(ctx));
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
