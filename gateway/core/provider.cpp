// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/provider.hpp"

namespace tollgate {

// Defaults for the half of the interface an adapter does not use. Reaching one is a bug in the
// pipeline (it checks is_local() first), answered as an internal error, never a crash.
awaitable<void> provider_adapter::serve(request_context& ctx, response_sink& sink) const {
  auto m = map_error(errc::internal);
  ctx.status = m.status;
  ctx.error_code = std::string(m.code);
  ctx.details = "adapter_cannot_serve";
  co_await sink.send_full(m.status, "application/json",
                          openai_error_body("provider cannot serve in process", m.type, "", m.code));
}

result<upstream_request> provider_adapter::encode(const request_context&) const {
  return make_error_code(errc::internal);
}

std::unique_ptr<stream_translator> provider_adapter::make_stream_translator(request_context&) const {
  return nullptr;
}

std::string provider_adapter::decode_body(request_context&, unsigned, std::string body) const { return body; }

}  // namespace tollgate
