// SPDX-License-Identifier: Apache-2.0
#pragma once
/// What translated streams tell the request context about each OpenAI chunk they emit: the text
/// relayed to the caller (a stream that ends without usage is billed from it) and, for teams that
/// capture text in the audit trail, the text itself.
#include <boost/json/object.hpp>

#include "gateway/core/request_context.hpp"

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

}  // namespace tollgate::providers
