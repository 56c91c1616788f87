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
#include "gateway/core/tokens.hpp"

namespace tollgate::providers {

/// The generated characters of `key` ("delta" in a chunk, "message" in a whole answer) in each
/// of an OpenAI object's choices, as token_chars() counts them: content, reasoning, refusal, and
/// each tool call's (or the deprecated function_call's) name and arguments (all of them output
/// tokens), appended to `text` when given.
inline std::uint64_t choice_chars(const boost::json::object& obj, std::string_view key, std::string* text) {
  std::uint64_t n = 0;
  auto take = [&](std::string_view s) {
    n += token_chars(s);
    if (text) text->append(s);
  };
  auto choices = obj.if_contains("choices");
  if (!choices || !choices->is_array()) return 0;
  for (auto& c : choices->get_array()) {
    if (!c.is_object()) continue;
    auto d = c.get_object().if_contains(key);
    if (!d || !d->is_object()) continue;
    const auto& dobj = d->get_object();
    for (auto field : {"content", "reasoning", "refusal"})
      if (auto t = dobj.if_contains(field); t && t->is_string()) take(t->get_string());
    // vLLM sends its reasoning twice, as `reasoning` and as the deprecated alias
    // `reasoning_content` (kept in sync, vllm#27755): that text is generated once. The alias
    // counts only where it is the only one (DeepSeek, older vLLM).
    if (auto t = dobj.if_contains("reasoning_content"); t && t->is_string() && !dobj.contains("reasoning"))
      take(t->get_string());
    auto take_function = [&](const boost::json::value* f) {
      if (f && f->is_object())
        for (auto field : {"name", "arguments"})
          if (auto t = f->get_object().if_contains(field); t && t->is_string()) take(t->get_string());
    };
    if (auto tc = dobj.if_contains("tool_calls"); tc && tc->is_array())
      for (auto& call : tc->get_array())
        if (call.is_object()) take_function(call.get_object().if_contains("function"));
    take_function(dobj.if_contains("function_call"));  // the deprecated single function call
  }
  return n;
}

/// The generated characters in an OpenAI chunk's deltas (choice_chars).
inline std::uint64_t delta_chars(const boost::json::object& chunk, std::string* text) {
  return choice_chars(chunk, "delta", text);
}

/// Counts what `chunk` relayed into ctx (delta_chars), and captures it for the audit trail when
/// the team captures text. The OpenAI relay and the Bedrock and Vertex translators all count so:
/// a stream that ends without usage is billed the same whichever provider made it.
inline void count_relayed_text(request_context& ctx, const boost::json::object& chunk) {
  ctx.relayed_completion_chars += delta_chars(chunk, ctx.capture_text ? &ctx.captured_response : nullptr);
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
  ctx.refused_in_band = true;
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
