// SPDX-License-Identifier: Apache-2.0
#include "gateway/access_log.hpp"

#include "gateway/core/json_out.hpp"
#include "gateway/core/time.hpp"

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
  json_out::string(o, format_time_ms(ctx.wall_start));
  json_out::field(o, "request_id", ctx.id_hex);
  json_out::number(o, "worker", ctx.worker);
  json_out::field(o, "client", ctx.client_addr);
  json_out::field(o, "method", ctx.method);
  json_out::field(o, "path", ctx.path);
  json_out::number(o, "status", ctx.status);
  if (!ctx.model.empty()) json_out::field(o, "model", ctx.model);
  if (ctx.target) {
    json_out::field(o, "provider", ctx.target->provider->name());
    json_out::field(o, "upstream_model", ctx.target->upstream_model);
  }
  if (ctx.endpoint == endpoint_kind::chat_completions) o.append(ctx.stream ? ",\"stream\":true" : ",\"stream\":false");
  if (!ctx.identity.anonymous) {
    json_out::field(o, "team", ctx.identity.team);
    json_out::field(o, "key_id", ctx.identity.key_id);
    // A caller known by its certificate: the SAN that named its team (two services of one team
    // told apart, as in the audit record).
    if (!ctx.identity.subject.empty()) json_out::field(o, "subject", ctx.identity.subject);
  }
  if (ctx.usage.prompt || ctx.usage.completion) {
    json_out::number(o, "prompt_tokens", ctx.usage.prompt);
    json_out::number(o, "completion_tokens", ctx.usage.completion);
    json_out::field(o, "usage_source", ctx.usage.reported ? "provider" : "counted");
  }
  if (ctx.attempts > 1) json_out::number(o, "attempts", ctx.attempts);
  if (!ctx.error_code.empty()) json_out::field(o, "error_code", ctx.error_code);
  if (!ctx.details.empty()) json_out::field(o, "details", ctx.details);
  if (!ctx.filter_actions.empty()) json_out::string_list(o, "filters", ctx.filter_actions);
  if (!ctx.user_agent.empty()) json_out::field(o, "user_agent", std::string_view(ctx.user_agent).substr(0, 256));
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
  o["ts"] = format_time_ms(std::chrono::system_clock::now());
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
