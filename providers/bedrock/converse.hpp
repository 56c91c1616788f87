// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Pure JSON translations between the OpenAI chat-completions / embeddings API and AWS Bedrock
/// (Converse, ConverseStream, InvokeModel for embeddings). No I/O, no signing, no event-stream
/// framing: the adapter sends the bodies built here, decodes frames with providers/bedrock/
/// event_stream.hpp and feeds the decoded events to `converse_stream_translator`.
///
///   OpenAI chat request ──to_converse_request──► Converse body (POST /model/{id}/converse[-stream])
///   Converse response ──to_chat_completion──► chat.completion
///   ConverseStream events ──converse_stream_translator──► chat.completion.chunk objects + usage
///   Bedrock error (HTTP or stream exception) ──map_bedrock_error──► status + OpenAI error object
///   OpenAI embeddings request ──to_embedding_calls──► InvokeModel bodies ──to_openai_embeddings──► list
///
/// Wire formats: PROTOCOLS.md §1 (OpenAI) and §3 (Bedrock); the Bedrock API model is botocore's
/// bedrock-runtime `service-2.json`. Nothing here throws except std::bad_alloc: refusals are values
/// (`translate_result`). Unknown fields in Bedrock payloads (such as the `p` padding of stream
/// events) are ignored. All functions are thread-safe; the stream translator is one object per
/// stream, used from one thread.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include "providers/common/translate.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::bedrock {

// ---------------------------------------------------------------------------------------------
// Refusals

// One vocabulary for every translator (providers/common/translate.hpp).
using providers::to_string;
using providers::translate_errc;
using providers::translate_error;
using providers::translate_result;

// ---------------------------------------------------------------------------------------------
// Chat request

/// OpenAI chat-completions request object → Converse (and ConverseStream) request body. The model
/// id is not in the body (it is in the URL), and `stream` does not change the body.
///
/// - `system` / `developer` messages → `system:[{text}]`, in order, wherever they appear.
/// - user / assistant text (string or `{type:"text"}` parts) → `{text}` blocks. Blank texts are
///   dropped (Converse refuses blank text blocks); a message left with no block disappears, and a
///   request left with no message at all is refused (`messages`).
/// - assistant `tool_calls` → `toolUse {toolUseId, name, input}`, `input` parsed from the
///   `arguments` string, which must hold a JSON object (a blank string counts as `{}`); anything
///   else is refused with param `messages[i].tool_calls[j].function.arguments`.
/// - `role:"tool"` → a user message holding `toolResult {toolUseId, content:[{text}]}` (the text
///   parts joined; a blank result becomes the text `(empty)`, as a blank block would be refused).
/// - Converse needs user and assistant to alternate: consecutive messages of the same Converse
///   role (tool results included) are merged into one message, blocks in order.
/// - `inferenceConfig`: `maxTokens` (`max_completion_tokens`, else `max_tokens`), `temperature`,
///   `topP` (`top_p`), `stopSequences` (`stop`, string or array).
/// - `tools` (function tools) → `toolConfig.tools[].toolSpec {name, description?, inputSchema.json}`
///   (`parameters`, or an empty object schema). `tool_choice`: "auto" → `{auto:{}}`, "required" →
///   `{any:{}}`, `{type:"function",function:{name}}` (a name from `tools`) → `{tool:{name}}`,
///   "none" → no `toolConfig`. Converse refuses toolUse / toolResult blocks without a
///   `toolConfig`, so when the messages hold tool calls or results, "none" keeps the tools
///   (without `toolChoice`), and a request without `tools` declares the function names used in the
///   history with an open object schema.
/// Refused with the OpenAI `param`: image / audio / file parts, `audio`, `modalities` with audio,
/// `n` > 1, `logprobs`, `response_format` other than text, `functions` / `function_call`,
/// non-function tools. Ignored: penalties, `seed`, `user`, `metadata`, `store`, `service_tier`,
/// `parallel_tool_calls`, `stream_options`, `reasoning_effort`.
translate_result<boost::json::object> to_converse_request(const boost::json::object& chat_request);

// ---------------------------------------------------------------------------------------------
// Usage, stop reasons, chat response

/// Bedrock `TokenUsage`. Bedrock counts cache reads and writes apart from `inputTokens`, whereas
/// OpenAI's `prompt_tokens` includes cached tokens, so prompt_tokens() adds them back.
struct converse_usage {
  std::uint64_t input_tokens = 0;        ///< `inputTokens` (not read from / written to the cache)
  std::uint64_t output_tokens = 0;       ///< `outputTokens`
  std::uint64_t cache_read_tokens = 0;   ///< `cacheReadInputTokens`
  std::uint64_t cache_write_tokens = 0;  ///< `cacheWriteInputTokens`
  bool has_cache_read = false;           ///< `cacheReadInputTokens` was present

  std::uint64_t prompt_tokens() const { return input_tokens + cache_read_tokens + cache_write_tokens; }
  std::uint64_t completion_tokens() const { return output_tokens; }
  std::uint64_t total_tokens() const { return prompt_tokens() + completion_tokens(); }
  bool operator==(const converse_usage&) const = default;
};

/// Reads a `TokenUsage` object; nullopt when `usage` is not an object or lacks the token counts.
std::optional<converse_usage> parse_usage(const boost::json::value& usage);

/// OpenAI `usage`: `{prompt_tokens, completion_tokens, total_tokens}`, plus
/// `prompt_tokens_details.cached_tokens` when Bedrock reported cache reads.
boost::json::object to_openai_usage(const converse_usage& usage);

/// Bedrock `stopReason` → OpenAI `finish_reason`: end_turn / stop_sequence → stop; max_tokens /
/// model_context_window_exceeded → length; tool_use → tool_calls; content_filtered /
/// guardrail_intervened → content_filter; anything else (malformed_model_output, ...) → stop.
std::string_view map_stop_reason(std::string_view stop_reason) noexcept;

/// What the caller decides and Bedrock does not send: response / chunk `id`, `created` (Unix
/// seconds) and `model` (the name the caller asked for).
struct completion_meta {
  std::string id;
  std::int64_t created = 0;
  std::string model;
};

struct chat_completion {
  boost::json::object body;            ///< the `chat.completion` object
  std::optional<converse_usage> usage; ///< nullopt when Bedrock sent no usable `usage`
  std::string finish_reason;
};

/// Converse response → OpenAI `chat.completion` with one choice: `content` = the text blocks
/// concatenated (null when there is none but there are tool calls), `tool_calls` from `toolUse`
/// blocks (`arguments` = the serialized `input`), `reasoning_content` from
/// `reasoningContent.reasoningText.text`, `finish_reason` from `stopReason`, `usage`.
/// Refused (`invalid_upstream`) when the body has no `output.message.content` array.
translate_result<chat_completion> to_chat_completion(const boost::json::value& converse_response,
                                                     const completion_meta& meta);

// ---------------------------------------------------------------------------------------------
// Errors (HTTP error responses and stream exception events)

/// A Bedrock error, as the gateway should answer it.
struct upstream_error {
  unsigned status = 502;    ///< recommended HTTP status for the caller
  std::string type;         ///< OpenAI error `type`: rate_limit_error, invalid_request_error, ...
  std::string code;         ///< OpenAI error `code` (lower_snake), never empty
  std::string message;      ///< Bedrock's message (or a generic one when it sent none)
  bool retryable = false;   ///< another attempt (or another target) may succeed
  std::string bedrock_type; ///< normalized Bedrock error name, e.g. `ThrottlingException`; may be empty
};

/// Normalizes a Bedrock error name: keeps the part before `:` and after `#` (botocore's rule for
/// `x-amzn-ErrorType`) and upper-cases the first letter, so `throttlingException` (a stream
/// exception's `:exception-type`) and `ThrottlingException:http://internal.amazon.com/coral/
/// com.amazon.bedrock/` both give `ThrottlingException`.
std::string normalize_error_type(std::string_view raw);

/// Maps a Bedrock error name (any spelling `normalize_error_type` accepts) and message:
///
/// | Bedrock type                       | status | OpenAI type           | retryable |
/// |------------------------------------|--------|-----------------------|-----------|
/// | ThrottlingException                | 429    | rate_limit_error      | yes       |
/// | ServiceQuotaExceededException      | 429    | rate_limit_error      | no        |
/// | ModelNotReadyException             | 503    | server_error          | yes       |
/// | ValidationException                | 400    | invalid_request_error | no        |
/// | ConflictException                  | 400    | invalid_request_error | no        |
/// | AccessDeniedException              | 403    | permission_error      | no        |
/// | ResourceNotFoundException          | 404    | not_found_error       | no        |
/// | ModelTimeoutException              | 504    | server_error          | yes       |
/// | ModelErrorException, ModelStreamErrorException | 500 | server_error   | no        |
/// | InternalServerException            | 500    | server_error          | yes       |
/// | ServiceUnavailableException        | 503    | server_error          | yes       |
/// | credential / signature errors      | 502    | server_error          | no        |
///
/// Credential errors (UnrecognizedClientException, InvalidSignatureException, ExpiredToken...,
/// IncompleteSignature..., MissingAuthenticationToken...) are the gateway's configuration, not the
/// caller's, hence 502. An unknown type falls back on `http_status` (0 when unknown): 429 →
/// rate limit, 5xx → retryable server_error with that status, other 4xx → that status as
/// invalid_request_error, anything else → 502.
upstream_error map_bedrock_error(std::string_view error_type, std::string_view message, unsigned http_status = 0);

/// A non-2xx Bedrock HTTP response: the type from the `x-amzn-ErrorType` header (pass "" when
/// absent), else from the body's `__type` or `code`; the message from the body's `message`
/// (or `Message`). The body need not be JSON.
upstream_error map_bedrock_http_error(unsigned http_status, std::string_view error_type_header, std::string_view body);

/// `{"message","type","param":null,"code"}`: the object inside OpenAI's error body, also what a
/// stream's final `data: {"error":{...}}` event carries.
boost::json::object to_openai_error(const upstream_error& e);

/// `{"error":{...}}`, a complete OpenAI error response body.
boost::json::object to_openai_error_body(const upstream_error& e);

// ---------------------------------------------------------------------------------------------
// Streaming

/// What one ConverseStream event turned into.
struct stream_step {
  std::vector<boost::json::object> chunks;  ///< `chat.completion.chunk` objects to send, in order
  std::optional<converse_usage> usage;      ///< from a `metadata` event: see make_usage_chunk
  std::optional<upstream_error> error;      ///< an exception event or a malformed event: end the stream
};

/// Turns decoded ConverseStream events into OpenAI chunks, one event at a time. Owns no I/O; one
/// object per stream, used by one thread.
///
/// - The first chunk carries `delta.role:"assistant"` (`messageStart` gives
///   `{role:"assistant", content:""}`; a stream without `messageStart` gets the role on its first
///   chunk).
/// - text deltas → `delta.content`; reasoning text deltas → `delta.reasoning_content`
///   (signatures and redacted reasoning are not forwarded).
/// - a `toolUse` block start → `delta.tool_calls:[{index, id, type:"function", function:{name,
///   arguments:""}}]`; its input deltas → `delta.tool_calls:[{index, function:{arguments}}]`, where
///   `index` counts tool calls from 0 in stream order. A tool block whose input stayed empty gets
///   `arguments:"{}"` at its `contentBlockStop`, matching the non-stream `input:{}`.
/// - `messageStop` → a chunk with an empty delta and the mapped `finish_reason`.
/// - `metadata` → no chunk; `stream_step::usage` is set (the caller decides whether to send a
///   usage chunk, and when: Bedrock may send `metadata` before or after `messageStop`).
/// - exception events (`throttlingException`, `modelStreamErrorException`, `validationException`,
///   `internalServerException`, `serviceUnavailableException`, ...) → `stream_step::error` via
///   map_bedrock_error. A payload that is not a JSON object, or a tool input delta for a block
///   that never started as a tool, also fails the stream (502 `invalid_upstream_response`).
/// - other event types and unknown fields are ignored. After a failure every event is ignored.
class converse_stream_translator {
 public:
  explicit converse_stream_translator(completion_meta meta);

  /// One decoded event: `event_type` is the `:event-type` header (or `:exception-type` for an
  /// exception message), `payload` the parsed JSON payload.
  stream_step on_event(std::string_view event_type, const boost::json::value& payload);
  /// The same with the payload as the decoder hands it over, JSON text (a payload that does not
  /// parse fails the stream; an exception stays that exception).
  stream_step on_event_text(std::string_view event_type, std::string_view payload_json);

  /// A `messageStop` was seen: the stream is complete once it has also ended cleanly.
  bool finished() const { return finished_; }
  /// An exception or malformed event was seen.
  bool failed() const { return failed_; }
  /// `finish_reason` sent with the `messageStop` chunk; empty before it.
  const std::string& finish_reason() const { return finish_reason_; }
  /// Usage from the `metadata` event, if one came.
  const std::optional<converse_usage>& usage() const { return usage_; }
  const completion_meta& meta() const { return meta_; }

 private:
  boost::json::object make_chunk(boost::json::object delta, std::string_view finish_reason = {});
  stream_step fail(upstream_error e);

  completion_meta meta_;
  bool role_sent_ = false;
  bool finished_ = false;
  bool failed_ = false;
  std::string finish_reason_;
  std::optional<converse_usage> usage_;
  struct tool_block {
    std::size_t index = 0;  ///< OpenAI tool_calls index
    bool has_input = false; ///< a non-empty input delta was sent
  };
  std::map<std::int64_t, tool_block> tools_;  ///< by Bedrock contentBlockIndex
  std::size_t next_tool_index_ = 0;
};

/// `{id, object:"chat.completion.chunk", created, model, choices:[], usage}`: the chunk OpenAI
/// sends last when `stream_options.include_usage` is set.
boost::json::object make_usage_chunk(const completion_meta& meta, const converse_usage& usage);

// ---------------------------------------------------------------------------------------------
// Embeddings (InvokeModel)

enum class embedding_family {
  titan_text_v2,  ///< `amazon.titan-embed-text-v2*`: ONE input per InvokeModel call
  cohere_embed,   ///< `cohere.embed-*`: up to 96 texts per call
};

/// The family for a model id, by prefix; a cross-region inference profile prefix such as `us.` or
/// `eu.` is allowed. nullopt for anything else (ARNs included).
std::optional<embedding_family> find_embedding_family(std::string_view model_id);

/// The InvokeModel calls that answer one OpenAI embeddings request, in input order.
struct embedding_calls {
  embedding_family family = embedding_family::titan_text_v2;
  std::vector<boost::json::object> bodies;  ///< one InvokeModel body per call (POST /model/{id}/invoke)
  std::size_t input_count = 0;              ///< number of inputs (= embeddings expected back)
  bool base64 = false;                      ///< `encoding_format:"base64"`: answer base64 float32
};

/// OpenAI embeddings request → InvokeModel bodies for `model_id`.
/// - Titan Text Embeddings v2: one call per input, `{"inputText", "dimensions"?, "normalize":true}`;
///   `dimensions` must be 256, 512 or 1024.
/// - Cohere Embed: `{"texts":[...], "input_type":"search_document"}` in batches of 96 texts;
///   `dimensions` only for embed-v4 (`output_dimension`: 256, 512, 1024 or 1536).
/// `input` must be a non-empty string or a non-empty array of non-empty strings (token arrays
/// are refused); `encoding_format` is `float` (default) or `base64`.
translate_result<embedding_calls> to_embedding_calls(const boost::json::object& embeddings_request,
                                                     std::string_view model_id);

/// One InvokeModel answer.
struct invoke_response {
  boost::json::value body;
  /// The `X-Amzn-Bedrock-Input-Token-Count` response header, when present (Cohere bodies carry
  /// no token count; Titan's `inputTextTokenCount` wins when both exist).
  std::optional<std::uint64_t> input_token_count;
};

struct embeddings_response {
  boost::json::object body;        ///< OpenAI `{"object":"list","data":[...],"model","usage"}`
  std::uint64_t prompt_tokens = 0;
  bool tokens_reported = false;    ///< every call reported its token count
};

/// The answers to `calls`' bodies, in the same order → the OpenAI embeddings list, `index` in
/// input order, `model` = the name the caller asked for. Refused (`invalid_upstream`) when a body
/// lacks its embeddings or the count differs from the inputs.
translate_result<embeddings_response> to_openai_embeddings(const embedding_calls& calls,
                                                           std::span<const invoke_response> responses,
                                                           std::string_view model);

}  // namespace tollgate::providers::bedrock
