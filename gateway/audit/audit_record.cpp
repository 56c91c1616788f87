// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/audit_record.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <cstdio>
#include <ctime>

#include "gateway/core/provider.hpp"

namespace tollgate::audit {
namespace json = boost::json;
using namespace std::chrono;

namespace {

std::int64_t unix_ms(system_clock::time_point t) { return duration_cast<milliseconds>(t.time_since_epoch()).count(); }

/// RFC 3339 in UTC with milliseconds.
std::string rfc3339(system_clock::time_point t) {
  const std::int64_t ms = unix_ms(t);
  const std::time_t secs = std::time_t(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms % 1000));
  return buf;
}

std::int64_t us_between(request_context::clock::time_point a, request_context::clock::time_point b) {
  return duration_cast<microseconds>(b - a).count();
}

/// Wall-clock time of a steady-clock instant of this request.
std::int64_t wall_ms(const request_context& ctx, request_context::clock::time_point t) {
  return unix_ms(ctx.wall_start) + duration_cast<milliseconds>(t - ctx.start).count();
}

void common(json::object& o, const request_context& ctx, request_context::clock::time_point end) {
  o["id"] = ctx.id_hex;
  o["time"] = rfc3339(ctx.wall_start);
  o["start_ms"] = unix_ms(ctx.wall_start);
  o["end_ms"] = wall_ms(ctx, end);
  o["latency_us"] = us_between(ctx.start, end);
  o["client"] = ctx.client_addr;
  o["user_agent"] = ctx.user_agent;
  o["method"] = ctx.method;
  o["path"] = ctx.path;
  o["status"] = ctx.status;
  o["error_code"] = ctx.error_code.empty() ? json::value(nullptr) : json::value(ctx.error_code);
  o["details"] = ctx.details.empty() ? json::value(nullptr) : json::value(ctx.details);
}

}  // namespace

std::string call_record(const request_context& ctx, std::int64_t cost_nano, request_context::clock::time_point end) {
  json::object o;
  o.reserve(32);
  o["type"] = "call";
  common(o, ctx, end);
  o["team"] = ctx.identity.team.empty() ? json::value(nullptr) : json::value(ctx.identity.team);
  o["key_id"] = ctx.identity.key_id.empty() ? json::value(nullptr) : json::value(ctx.identity.key_id);
  o["subject"] = ctx.identity.subject.empty() ? json::value(nullptr) : json::value(ctx.identity.subject);
  o["model"] = ctx.model.empty() ? json::value(nullptr) : json::value(ctx.model);
  if (ctx.target) {
    o["provider"] = ctx.target->provider->name();
    o["upstream_model"] = ctx.target->upstream_model;
  } else {
    o["provider"] = nullptr;
    o["upstream_model"] = nullptr;
  }
  o["stream"] = ctx.stream;
  o["prompt_tokens"] = ctx.usage.prompt;
  o["cached_tokens"] = ctx.usage.cached;
  o["completion_tokens"] = ctx.usage.completion;
  o["usage_reported"] = ctx.usage.reported;
  o["cost_nano"] = cost_nano;
  {
    // Exact decimal USD (a string: no binary floating point in a compliance record).
    char usd[48];
    std::snprintf(usd, sizeof usd, "%lld.%09lld", static_cast<long long>(cost_nano / 1'000'000'000),
                  static_cast<long long>(cost_nano % 1'000'000'000));
    o["cost_usd"] = usd;
  }
  // A whole (non-stream) answer goes out right after its record: its first byte is its end.
  const bool has_first = ctx.first_byte != request_context::clock::time_point{};
  o["first_byte_ms"] = has_first ? json::value(wall_ms(ctx, ctx.first_byte))
                                 : ctx.client_gone ? json::value(nullptr) : json::value(wall_ms(ctx, end));
  o["ttft_us"] = ctx.stream && has_first ? json::value(us_between(ctx.start, ctx.first_byte)) : json::value(nullptr);
  o["retries"] = ctx.attempts > 1 ? ctx.attempts - 1 : 0;
  o["filters"] = json::array();  // content-filter actions (the content-filter issue fills them)
  return json::serialize(o);
}

std::string admin_record(const request_context& ctx, request_context::clock::time_point end) {
  json::object o;
  o["type"] = "admin";
  common(o, ctx, end);
  o["admin"] = ctx.admin.empty() ? json::value(nullptr) : json::value(ctx.admin);
  o["action"] = ctx.action.empty() ? json::value(nullptr) : json::value(ctx.action);
  o["target"] = ctx.action_target.empty() ? json::value(nullptr) : json::value(ctx.action_target);
  return json::serialize(o);
}

}  // namespace tollgate::audit
