// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Per-request state, built at the start of each request on a connection and destroyed at its
/// end. Phases receive it by reference. Worker-thread only.
#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tollgate {

class snapshot;
class provider_adapter;
struct model_route;
struct route_target;

enum class endpoint_kind { chat_completions, embeddings, models, other };

/// Token counts of one call. `reported` is true when they came from the provider's usage.
struct usage_counts {
  std::uint64_t prompt = 0;
  std::uint64_t completion = 0;
  std::uint64_t cached = 0;       ///< of prompt: read from the provider's prompt cache
  std::uint64_t cache_write = 0;  ///< of prompt: written to it (Bedrock's cacheWriteInputTokens)
  bool reported = false;
};

namespace policy {
struct grant;
struct reservation;
}  // namespace policy

/// Who is calling. Filled by the authenticate phase. Never holds a secret or a digest.
struct caller_identity {
  std::string team;
  std::string key_id;   ///< public key id, when a key authenticated
  std::string subject;  ///< mTLS SAN, when a certificate authenticated
  bool anonymous = true;
};

using header_list = std::vector<std::pair<std::string, std::string>>;

/// OpenAI-style rate-limit figures for the x-ratelimit-* response headers, from admission: the
/// caller's tightest scope (team or key) per kind. A limit of 0: that kind is not limited, its
/// headers are not sent.
struct rate_figures {
  std::uint64_t limit_requests = 0, limit_tokens = 0;
  std::int64_t remaining_requests = 0, remaining_tokens = 0;
  std::int64_t reset_ms = 0;  ///< until the window holds none of the counts it holds now
  bool any() const { return limit_requests || limit_tokens; }
};

struct request_context {
  using clock = std::chrono::steady_clock;

  std::uint64_t id = 0;
  std::string id_hex;
  unsigned worker = 0;
  std::shared_ptr<const snapshot> snap;  ///< config in force for this whole request

  // From the caller.
  std::string method, path, client_addr, user_agent;
  /// `path` had a segment shaped like an API key, masked (policy::mask_keys_in_path): a route that
  /// names a team or a model refuses it rather than act on the masked name.
  bool path_masked = false;
  std::string query;  ///< after '?' (the admin API reads it)
  endpoint_kind endpoint = endpoint_kind::other;
  std::string body;
  boost::json::object request_json;  ///< decoded body (chat/embeddings)
  /// The presented API key (Authorization: Bearer, api-key or x-api-key). A secret: never log it.
  std::string credential;
  std::vector<std::string> peer_names;  ///< SANs (URI, DNS) of a verified client certificate
  caller_identity identity;
  std::shared_ptr<const policy::grant> grant;     ///< what the caller may do (authenticate)
  std::shared_ptr<policy::reservation> reservation;  ///< what admit reserved, for settle
  rate_figures rate;                                ///< for the response's x-ratelimit-* headers

  // Decoded request.
  std::string model;
  bool stream = false;
  bool caller_wants_usage = false;  ///< stream_options.include_usage as the caller sent it
  std::uint64_t prompt_estimate = 0;
  std::uint64_t max_output_tokens = 0;  ///< 0: not given
  /// The output limit the gateway sends upstream for a call whose caller gave none, so that it
  /// cannot outgrow its reservation (store.default_max_tokens; policy::engine::admit); 0: none.
  std::uint64_t output_cap = 0;
  unsigned choices = 1;                 ///< chat's `n`: answers generated, each up to max_output_tokens

  // Routing.
  const model_route* route = nullptr;
  const route_target* target = nullptr;
  unsigned attempts = 0;
  /// Set by an adapter's encode() that refuses a request it cannot translate (400 invalid_value).
  std::string reject_message, reject_param;
  unsigned reject_status = 0;  ///< 0: 400 invalid_value; 502: the provider cannot be reached yet
  /// Set by an adapter's decode_body() when the caller must get another status than the
  /// upstream's (a provider's signature error is the gateway's fault: 502, not 403).
  unsigned answer_status = 0;
  /// The upstream's response headers when it answered an error status (decode_body reads
  /// provider error details from them, such as Bedrock's x-amzn-errortype). Empty otherwise.
  header_list upstream_error_headers;
  /// A 2xx embeddings answer's `X-Amzn-Bedrock-Input-Token-Count` (Bedrock's Cohere models give
  /// their input token count only there); empty otherwise.
  std::string upstream_input_tokens;

  // Outcome.
  usage_counts usage;
  std::uint64_t relayed_completion_chars = 0;  ///< text relayed, for streams without usage
  unsigned status = 0;
  std::string error_code;  ///< OpenAI `code` of an error answer, if any
  std::string details;     ///< lower_snake reason for logs (`upstream_timeout`, `client_disconnected`, ...)
  bool upstream_answered = false;  ///< a provider produced an answer (billable even if cut short)
  /// The stream's provider ended it with an error event of its own (policy::billable: not billed
  /// when nothing was generated). A flag, not `details`, which a caller leaving overwrites.
  bool refused_in_band = false;
  /// The remote provider's status (0: none, or a built-in provider, whose status is `status`).
  /// A 2xx is billed even when the caller got something else (a moderation failure, an answer
  /// the gateway could not translate, a caller gone before the body was read).
  unsigned upstream_status = 0;
  /// A whole (non-stream) 2xx answer whose body could not be read (the upstream broke off): the
  /// provider charged for it, but its usage is unknown, so it is billed at its reservation.
  bool answer_unread = false;
  bool response_started = false;  ///< some response bytes went out: errors can no longer be a status
  bool client_gone = false;
  bool write_timed_out = false;  ///< the caller stopped reading: a write passed server.timeouts.write_ms
  bool close_after = false;       ///< close the connection after this response

  // Audit (gateway/audit): the record is written once, before the last response byte.
  bool admin_listener = false;  ///< arrived on the admin listener
  bool audit_done = false;      ///< this request's record has been handed to the audit writer
  std::string admin;            ///< admin API: the admin token's name
  std::string action;           ///< admin API: what was done ("key.create", ...)
  std::string action_target;    ///< admin API: on what (key id, team)
  /// The caller's team captures prompt and response text in its audit records
  /// (teams[].capture_text). Stream translators then collect the relayed text here.
  bool capture_text = false;
  /// Content-filter rules that fired: "<rule>:<action>:<prompt|response>" (never matched text).
  std::vector<std::string> filter_actions;
  std::string captured_response;

  clock::time_point start = clock::now();
  clock::time_point first_byte{};  ///< first body byte/token to the caller
  /// Time spent waiting for remote upstreams (connecting, their heads, their bodies), summed
  /// over attempts: what is not the gateway's own part of the call's duration.
  clock::duration upstream_wait{};
  std::chrono::system_clock::time_point wall_start = std::chrono::system_clock::now();

  /// Set by whoever waits on an upstream (HTTP connection or mock timer): aborts that wait at once.
  /// Called when the caller disconnects (unless answer_paid), and when a shutdown's drain deadline
  /// passes (worker::close_all). Worker-thread only.
  std::function<void()> cancel_upstream;
  /// A whole (non-stream) request was written upstream, and then a 2xx head came: the provider
  /// generates the answer and charges for it whether the caller waits or not, so the head is
  /// awaited and the body read to the end even if the caller leaves (its usage is billed
  /// exactly). Only the end of a shutdown's drain cuts it short (after a 2xx head it is then
  /// billed at its reservation).
  bool answer_paid = false;
  /// A provider's own retry hint from its error body (Google's RetryInfo), in seconds: the
  /// Retry-After of a 429 passed on without one.
  std::uint32_t upstream_retry_after_s = 0;
};

}  // namespace tollgate
