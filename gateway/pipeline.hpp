// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The fixed request pipeline (docs/life-of-a-request.md): authenticate → decode_request →
/// route → admit → [select target → encode → exchange → decode/stream]* → settle → log.
/// Failures go to one place, fail(), which answers with an OpenAI-shaped error if nothing was
/// sent yet and aborts the stream otherwise. settle and log run exactly once per request.
#include <boost/beast/http/fields.hpp>

#include "gateway/core/provider.hpp"
#include "gateway/worker.hpp"

namespace tollgate::gateway {

inline const header_list no_headers{};

/// Handles one request on the caller listener (API and health endpoints). Never throws;
/// always answers (unless the caller left) and always logs.
awaitable<void> handle_caller_request(worker& w, request_context& ctx, response_sink& sink);

/// Handles one request on the admin listener (/metrics, /healthz, /readyz).
awaitable<void> handle_admin_request(worker& w, request_context& ctx, response_sink& sink);

/// The admin API under /admin/v1/ (docs/admin-api.md): keys and budgets. Admin tokens only.
awaitable<void> handle_admin_api(worker& w, request_context& ctx, response_sink& sink);

/// Answers a gateway error in OpenAI's shape and records it in ctx.
/// `message` and `param` must stay valid until the returned awaitable completes.
awaitable<void> answer_error(request_context& ctx, response_sink& sink, errc code, std::string_view message,
                             std::string_view param = {}, const header_list& extra = no_headers);

/// Hands this request's audit record to the writer, once, just before the last byte of its
/// response goes out (`status` is the status being sent). In strict durability it waits until the
/// record is on disk. Returns false when the record could not be made durable and audit fails
/// closed: the caller must then not complete the response (the sink resets the connection).
/// Requests that are not audited (health checks, /metrics) return true at once.
/// `body` is the whole answer being sent (empty for a stream's end), for text capture.
awaitable<bool> seal_audit(worker& w, request_context& ctx, unsigned status, std::string_view body = {});
/// Whether seal_audit would write a record: callers skip the coroutine (a frame per response)
/// when it would return true at once.
bool audit_pending(worker& w, const request_context& ctx);

/// Writes the access-log line and updates metrics for a finished request (exactly once).
void log_request(worker& w, request_context& ctx);

/// Upstream response headers that may reach the caller: everything but hop-by-hop fields
/// (RFC 9110 §7.6.1, plus those named in Connection), framing and a few the gateway owns.
header_list passthrough_headers(const beast::http::fields& upstream);
/// The same for an upstream response's fields as the exchange parsed them.
header_list passthrough_headers(std::span<const upstream_field> upstream);

}  // namespace tollgate::gateway
