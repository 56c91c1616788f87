// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/audit_record.hpp"

#include <cstdio>

#include "gateway/core/json_out.hpp"
#include "gateway/core/provider.hpp"
#include "gateway/core/time.hpp"

namespace tollgate::audit {
using namespace std::chrono;
namespace jo = json_out;

// Built by hand, like the access log line: a record is made for every request, and a json::object
// with thirty members cost a fifth of the audited request's CPU (profiled under wrk).
namespace {

std::int64_t unix_ms(system_clock::time_point t) { return duration_cast<milliseconds>(t.time_since_epoch()).count(); }

std::int64_t us_between(request_context::clock::time_point a, request_context::clock::time_point b) {
  return duration_cast<microseconds>(b - a).count();
}

/// Wall-clock time of a steady-clock instant of this request.
std::int64_t wall_ms(const request_context& ctx, request_context::clock::time_point t) {
  return unix_ms(ctx.wall_start) + duration_cast<milliseconds>(t - ctx.start).count();
}

/// Opens the record with its type and the fields every request record has.
void common(std::string& o, std::string_view type, const request_context& ctx, request_context::clock::time_point end) {
  o.reserve(768);
  o.append("{\"type\":");
  jo::string(o, type);
  jo::field(o, "id", ctx.id_hex);
  jo::field(o, "time", format_time_ms(ctx.wall_start));
  jo::signed_number(o, "start_ms", unix_ms(ctx.wall_start));
  jo::signed_number(o, "end_ms", wall_ms(ctx, end));
  jo::signed_number(o, "latency_us", us_between(ctx.start, end));
  jo::field(o, "client", ctx.client_addr);
  jo::field(o, "user_agent", ctx.user_agent);
  jo::field(o, "method", ctx.method);
  jo::field(o, "path", ctx.path);
  jo::number(o, "status", ctx.status);
  jo::field_or_null(o, "error_code", ctx.error_code);
  jo::field_or_null(o, "details", ctx.details);
}

}  // namespace

std::string call_record(const request_context& ctx, std::int64_t cost_nano, request_context::clock::time_point end,
                        const captured_text* text) {
  std::string o;
  common(o, "call", ctx, end);
  jo::field_or_null(o, "team", ctx.identity.team);
  jo::field_or_null(o, "key_id", ctx.identity.key_id);
  jo::field_or_null(o, "subject", ctx.identity.subject);
  jo::field_or_null(o, "model", ctx.model);
  jo::field_or_null(o, "provider", ctx.target ? std::string_view(ctx.target->provider->name()) : std::string_view());
  jo::field_or_null(o, "upstream_model", ctx.target ? std::string_view(ctx.target->upstream_model) : std::string_view());
  jo::boolean(o, "stream", ctx.stream);
  jo::number(o, "prompt_tokens", ctx.usage.prompt);
  jo::number(o, "cached_tokens", ctx.usage.cached);
  jo::number(o, "cache_write_tokens", ctx.usage.cache_write);
  jo::number(o, "completion_tokens", ctx.usage.completion);
  jo::boolean(o, "usage_reported", ctx.usage.reported);
  jo::signed_number(o, "cost_nano", cost_nano);
  // Exact decimal USD (a string: no binary floating point in a compliance record).
  char usd[48];
  std::snprintf(usd, sizeof usd, "%lld.%09lld", static_cast<long long>(cost_nano / 1'000'000'000),
                static_cast<long long>(cost_nano % 1'000'000'000));
  jo::field(o, "cost_usd", usd);
  // A whole (non-stream) answer goes out right after its record: its first byte is its end.
  const bool has_first = ctx.first_byte != request_context::clock::time_point{};
  jo::key(o, "first_byte_ms");
  if (has_first) o.append(std::to_string(wall_ms(ctx, ctx.first_byte)));
  else if (ctx.client_gone) o.append("null");
  else o.append(std::to_string(wall_ms(ctx, end)));
  jo::key(o, "ttft_us");
  if (ctx.stream && has_first) o.append(std::to_string(us_between(ctx.start, ctx.first_byte)));
  else o.append("null");
  jo::number(o, "retries", ctx.attempts > 1 ? ctx.attempts - 1 : 0);
  jo::string_list(o, "filters", ctx.filter_actions);  // rules that fired: "<rule>:<action>:<direction>"
  if (text) {
    jo::key(o, "prompt");
    o.append(text->prompt_json.empty() ? std::string_view("null") : std::string_view(text->prompt_json));
    jo::field(o, "response", text->response);
  }
  o.push_back('}');
  return o;
}

std::string admin_record(const request_context& ctx, request_context::clock::time_point end) {
  std::string o;
  common(o, "admin", ctx, end);
  jo::field_or_null(o, "admin", ctx.admin);
  jo::field_or_null(o, "action", ctx.action);
  jo::field_or_null(o, "target", ctx.action_target);
  o.push_back('}');
  return o;
}

}  // namespace tollgate::audit
