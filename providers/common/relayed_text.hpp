// SPDX-License-Identifier: Apache-2.0
#pragma once
/// What translated streams (Bedrock, Vertex) share: each OpenAI chunk they emit tells the request
/// context the text relayed to the caller (a stream that ends without usage is billed from it)
/// and, for teams that capture text in the audit trail, the text itself; one step of a translator
/// is sent the same way; a stream that breaks off ends with the same error event.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <string>
#include <string_view>

#include "gateway/core/error.hpp"
#include "gateway/core/request_context.hpp"
#include "gateway/core/sse.hpp"

namespace tollgate::providers {

/// Counts the `delta.content` (and `reasoning_content`) of `chunk`'s choices into ctx.
inline void count_relayed_text(request_context& ctx, const boost::json::object& chunk) {
  auto* ch = chunk.if_contains("choices");
  if (!ch || !ch->is_array()) return;
  for (auto& c : ch->get_array()) {
    auto* d = c.is_object() ? c.get_object().if_contains("delta") : nullptr;
    if (!d || !d->is_object()) continue;
    for (std::string_view key : {"content", "reasoning_content"})
      if (auto* t = d->get_object().if_contains(key); t && t->is_string()) {
        ctx.relayed_completion_chars += t->get_string().size();
        if (ctx.capture_text && key == "content") ctx.captured_response.append(t->get_string());
      }
  }
}


/// Sends what one step of a translated stream produced (Converse and Gemini translators have the
/// same step shape): its chunks (counted into ctx), its usage (`record`), and an error, which ends
/// the stream with the OpenAI error body (`error_body(e)`) and `[DONE]`. True when the step failed.
template <class Step, class RecordUsage, class ErrorBody>
bool emit_translated_step(request_context& ctx, const Step& step, std::string& out, RecordUsage&& record,
                          ErrorBody&& error_body) {
  for (auto& c : step.chunks) {
    count_relayed_text(ctx, c);
    out += sse::format_data(boost::json::serialize(c));
  }
  if (step.usage) record(*step.usage);
  if (!step.error) return false;
  ctx.details = "upstream_stream_error";
  ctx.error_code = step.error->code;
  out += sse::format_data(boost::json::serialize(error_body(*step.error)));
  out += "data: [DONE]\n\n";
  return true;
}

/// Ends a translated stream that broke off (bad framing, reset, timeout): an `error` event.
inline void emit_stream_failure(request_context& ctx, std::string& out, std::string_view code, std::string_view message) {
  ctx.details = std::string(code);
  ctx.error_code = std::string(code);
  out += sse::format_event("error", openai_error_body(message, "server_error", "", code));
}

}  // namespace tollgate::providers
