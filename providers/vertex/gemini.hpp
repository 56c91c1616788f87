// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Pure JSON translations between the OpenAI chat-completions / embeddings API and Gemini on
/// Vertex AI. No I/O, no auth, no SSE framing: the adapter builds the URL with make_vertex_url,
/// sends the bodies built here with a Bearer token from providers/vertex/google_auth.hpp, splits
/// `streamGenerateContent?alt=sse` into `data:` payloads and feeds each to `gemini_stream_translator`.
///
///   OpenAI chat request ──to_generate_content_request──► generateContent body
///   GenerateContentResponse ──to_chat_completion──► chat.completion
///   streamed GenerateContentResponse chunks ──gemini_stream_translator──► chat.completion.chunk objects + usage
///   Google RPC error body ──map_google_error──► status + OpenAI error object (+ RetryInfo delay)
///   OpenAI embeddings request ──to_predict_requests──► :predict bodies ──to_openai_embeddings──► list
///
/// Wire formats: PROTOCOLS.md §1 (OpenAI) and §4 (Vertex AI Gemini). Nothing here throws except
/// std::bad_alloc: refusals are values (`translate_result`). Unknown fields in Google payloads
/// (safetyRatings, citationMetadata, createTime, trafficType, ...) are ignored. All functions are
/// thread-safe; the stream translator is one object per stream, used from one thread.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <boost/system/result.hpp>

#include "providers/common/translate.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::providers::vertex {

// ---------------------------------------------------------------------------------------------
// Refusals

// One vocabulary for every translator (providers/common/translate.hpp).
using providers::to_string;
using providers::translate_errc;
using providers::translate_error;
using providers::translate_result;

// ---------------------------------------------------------------------------------------------
// URLs (PROTOCOLS.md §4.1)

enum class vertex_method {
  generate_content,         ///< `:generateContent`
  stream_generate_content,  ///< `:streamGenerateContent?alt=sse` (SSE; without alt=sse Google streams a JSON array)
  predict,                  ///< `:predict` (text embeddings)
};

struct vertex_target {
  std::string project;             ///< project id (`my-project`, or `example.com:my-project`)
  std::string location;            ///< `us-central1`, `europe-west4`, `global`, `us`, `eu`, ...
  std::string model;               ///< see model_resource_name
  std::string api_version = "v1";  ///< `v1` (GA) or `v1beta1`
};

/// Host and path apart, so the adapter can send the path to another host (a test server).
struct vertex_url {
  std::string host;  ///< `us-central1-aiplatform.googleapis.com`; no scheme, no port
  std::string path;  ///< `/v1/projects/p/locations/us-central1/publishers/google/models/m:generateContent`
                     ///< (with `?alt=sse` for streaming)
  /// `https://` + host + path.
  std::string url() const;
};

/// The API host for a location: `global` → `aiplatform.googleapis.com`; the multi-regions `us`
/// and `eu` → `aiplatform.{location}.rep.googleapis.com` (google-genai's rule); any other
/// location → `{location}-aiplatform.googleapis.com`.
std::string vertex_host(std::string_view location);

/// Model name normalisation (js-genai `tModel` for Vertex): `gemini-2.5-flash` →
/// `publishers/google/models/gemini-2.5-flash`; `anthropic/claude-x` →
/// `publishers/anthropic/models/claude-x`; names starting `publishers/`, `models/` or `projects/`
/// are kept. Refused (`invalid_value`, param `model`) when empty or when a segment holds anything
/// but letters, digits and `.-_@:` (so the name cannot reshape the URL).
translate_result<std::string> model_resource_name(std::string_view model);

/// The URL of `method` for `target`: `/{version}/projects/{project}/locations/{location}/{model
/// resource name}:{method}`, where a model given as a full `projects/.../locations/{l}/...` name
/// replaces the project and location part, and its location `l` picks the host. Refused (`invalid_value`, param `project` / `location` / `model` /
/// `api_version`) for empty or URL-unsafe values.
translate_result<vertex_url> make_vertex_url(const vertex_target& target, vertex_method method);

// ---------------------------------------------------------------------------------------------
// Chat request (PROTOCOLS.md §4.2)

/// JSON Schema (as OpenAI tools and `response_format` carry it) → the Vertex `Schema` object
/// (OpenAPI 3.0 subset): `type` upper-cased (`["string","null"]` → `STRING` + `nullable`),
/// `const` (string) → `enum`, `anyOf` with a `{type:"null"}` branch → `nullable`, object
/// properties in order with `propertyOrdering` (Gemini otherwise orders them alphabetically),
/// and the keywords `format title description nullable enum required items minItems maxItems
/// minProperties maxProperties minLength maxLength minimum maximum pattern default example`
/// kept. The annotations `$schema $id $comment additionalProperties examples deprecated readOnly
/// writeOnly uniqueItems strict` are dropped. Anything else (`$ref`, `$defs`, `oneOf`, `allOf`,
/// `not`, tuple `items`, several non-null types, non-string `enum` values, boolean schemas) makes
/// the schema inexpressible: nullopt, and the caller sends the JSON Schema as it is instead
/// (`responseJsonSchema` / `parametersJsonSchema`).
std::optional<boost::json::object> to_vertex_schema(const boost::json::value& json_schema);

/// The thought signature sent on a model turn's first functionCall part when the caller did not
/// send the one Gemini returned (Google's documented dummy for histories that lack signatures;
/// Gemini 3 refuses function calls without one).
inline constexpr std::string_view dummy_thought_signature = "skip_thought_signature_validator";

/// OpenAI chat-completions request object → generateContent (and streamGenerateContent) body.
/// The model is not in the body (it is in the URL) and `stream` does not change the body.
///
/// - `system` / `developer` messages → `systemInstruction.parts[{text}]`, in order, wherever they appear.
/// - user content (string, or `text` / `image_url` / `file` parts) → a `user` turn of `{text}`
///   parts; images and files given as base64 `data:` URLs → `inlineData {mimeType, data}`.
///   Empty texts are dropped; a user message left with no part is refused (`messages[i].content`).
/// - assistant content (string, or `text` / `refusal` parts) and `tool_calls` → a `model` turn:
///   text parts, then `functionCall {name, args}` parts, `args` parsed from the `arguments`
///   string, which must hold a JSON object (an empty string counts as `{}`). The thought
///   signature comes from `tool_calls[j].extra_content.google.thought_signature` (where
///   to_chat_completion puts it); a turn whose calls carry none gets dummy_thought_signature on
///   its first call. An assistant message with nothing in it is skipped.
/// - `role:"tool"` → `functionResponse {name, response:{content}}` in a user turn; `name` is that
///   of the earlier tool call with the same `tool_call_id` (unknown id → refused), `content` is
///   the text parsed as JSON when it is JSON, else the text.
/// - consecutive turns of the same Gemini role are merged (tool results and a following user
///   message become one user turn); at least one turn is required.
/// - `generationConfig`: `maxOutputTokens` (`max_completion_tokens`, else `max_tokens`),
///   `temperature`, `topP`, `stopSequences` (`stop`: string or array), `presencePenalty` /
///   `frequencyPenalty` (when not 0), `seed`; `n` must be 1 (`candidateCount` is left at its
///   default); `response_format` `json_object` → `responseMimeType:"application/json"`,
///   `json_schema` → the same plus `responseSchema` (to_vertex_schema) or, when the schema is
///   inexpressible, `responseJsonSchema`.
/// - `tools` (function tools) → `tools:[{functionDeclarations:[{name, description?,
///   parameters? | parametersJsonSchema?}]}]`; an empty object schema sends no parameters.
///   `tool_choice`: "auto" → AUTO, "none" → NONE, "required" → ANY,
///   `{type:"function",function:{name}}` → ANY + `allowedFunctionNames:[name]`,
///   `{type:"allowed_tools",allowed_tools:{mode,tools}}` → AUTO (only those declarations sent) or
///   ANY + `allowedFunctionNames`.
/// Refused with the OpenAI `param`: image / file parts that are not base64 data URLs, audio parts,
/// `audio`, `modalities` with audio, `n` > 1, `logprobs:true`, `functions` / `function_call`,
/// non-function tools, `tool_choice` naming an undeclared tool, `web_search_options`.
/// Ignored: `user`, `metadata`, `store`, `service_tier`, `parallel_tool_calls`, `stream_options`,
/// `reasoning_effort`, `prediction`, `logit_bias`, `top_logprobs` (without logprobs).
translate_result<boost::json::object> to_generate_content_request(const boost::json::object& chat_request);

// ---------------------------------------------------------------------------------------------
// Usage, finish reasons, chat response (PROTOCOLS.md §4.3)

/// Gemini `usageMetadata`. `totalTokenCount` includes the thought tokens and the tool-use prompt.
struct gemini_usage {
  std::uint64_t prompt_tokens = 0;           ///< `promptTokenCount` (includes cached tokens)
  std::uint64_t candidates_tokens = 0;       ///< `candidatesTokenCount`
  std::uint64_t thoughts_tokens = 0;         ///< `thoughtsTokenCount`
  std::uint64_t tool_use_prompt_tokens = 0;  ///< `toolUsePromptTokenCount`
  std::uint64_t cached_tokens = 0;           ///< `cachedContentTokenCount`
  std::optional<std::uint64_t> total;        ///< `totalTokenCount`, when sent

  /// OpenAI `prompt_tokens`: prompt + tool-use prompt.
  std::uint64_t openai_prompt_tokens() const { return prompt_tokens + tool_use_prompt_tokens; }
  /// OpenAI `completion_tokens`: candidates + thoughts (OpenAI counts reasoning as completion).
  std::uint64_t openai_completion_tokens() const { return candidates_tokens + thoughts_tokens; }
  /// `totalTokenCount`, else the sum of the two above.
  std::uint64_t total_tokens() const { return total.value_or(openai_prompt_tokens() + openai_completion_tokens()); }
  bool operator==(const gemini_usage&) const = default;
};

/// Reads a `usageMetadata` object; nullopt when it is not an object or carries no token count
/// (Vertex stream chunks send `{"trafficType":"ON_DEMAND"}` alone). Absent counts are 0.
std::optional<gemini_usage> parse_usage(const boost::json::value& usage_metadata);

/// OpenAI `usage`: `{prompt_tokens, completion_tokens, total_tokens}`, plus
/// `prompt_tokens_details.cached_tokens` when `cachedContentTokenCount` > 0 and
/// `completion_tokens_details.reasoning_tokens` when `thoughtsTokenCount` > 0.
boost::json::object to_openai_usage(const gemini_usage& usage);

/// Gemini `finishReason` → OpenAI `finish_reason`: STOP → stop; MAX_TOKENS → length; SAFETY,
/// RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY → content_filter; anything else
/// (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, ...) → stop.
std::string_view map_finish_reason(std::string_view finish_reason) noexcept;

/// What the caller decides and Google does not send: response / chunk `id`, `created` (Unix
/// seconds) and `model` (the name the caller asked for).
struct completion_meta {
  std::string id;
  std::int64_t created = 0;
  std::string model;
};

/// The OpenAI id of the `index`-th tool call (from 0, in response order) of completion `completion_id`:
/// `call_{completion_id}_{index}` (`call_{index}` when the id is empty). Deterministic, so a
/// streamed and a non-streamed answer name their calls alike, and unique across turns as long
/// as completion ids are.
std::string tool_call_id(std::string_view completion_id, std::size_t index);

struct chat_completion {
  boost::json::object body;          ///< the `chat.completion` object
  std::optional<gemini_usage> usage; ///< nullopt when Google sent no usable `usageMetadata`
  std::string finish_reason;
  std::string response_id;           ///< Google's `responseId`, for logs; may be empty
  std::string model_version;         ///< Google's `modelVersion`; may be empty
};

/// GenerateContentResponse → OpenAI `chat.completion` with one choice, from `candidates[0]`:
/// - `content` = its text parts concatenated (parts with `thought:true` go to
///   `reasoning_content` instead); null when there is no text but there are tool calls.
/// - `functionCall` parts → `tool_calls[{id: tool_call_id(meta.id, i), type:"function",
///   function:{name, arguments: serialized args ("{}" when none)}}]`, each with
///   `extra_content.google.thought_signature` when the part carried a `thoughtSignature`.
/// - `finish_reason` from map_finish_reason, except that "stop" becomes "tool_calls" when the
///   message holds tool calls (length / content_filter are kept: they say more).
/// - no candidates and `promptFeedback.blockReason` → an empty assistant message (`content:""`)
///   with `finish_reason:"content_filter"`.
/// - `usage` from `usageMetadata` (to_openai_usage), when present.
/// Refused (`invalid_upstream`) when the body is not an object, or has neither a candidate nor a
/// block reason.
translate_result<chat_completion> to_chat_completion(const boost::json::value& response, const completion_meta& meta);

// ---------------------------------------------------------------------------------------------
// Errors (PROTOCOLS.md §4.5)

/// A Google error, as the gateway should answer it.
struct upstream_error {
  unsigned status = 502;     ///< recommended HTTP status for the caller
  std::string type;          ///< OpenAI error `type`: rate_limit_error, invalid_request_error, ...
  std::string code;          ///< OpenAI error `code`: the Google status lower-cased (see map_google_status)
  std::string message;       ///< Google's message (or a generic one when it sent none)
  bool retryable = false;    ///< another attempt (or another target) may succeed
  std::string google_status; ///< `RESOURCE_EXHAUSTED`, ...; empty when the body had none
  /// From a `google.rpc.RetryInfo` detail's `retryDelay` (`"34.4s"`), when present.
  std::optional<std::chrono::milliseconds> retry_delay;

  /// `retry_delay` rounded up to whole seconds, for a `Retry-After` header (34.4 s → 35).
  std::optional<std::uint64_t> retry_after_seconds() const;
};

/// A protobuf JSON Duration (`"12s"`, `"34.4s"`, `"0.000001s"`) → milliseconds, rounded up;
/// nullopt when malformed or negative.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view duration);

/// Maps a Google RPC status name and message. `code` is the status lower-cased
/// (`resource_exhausted`) — the lower_snake form OpenAI codes use, and still greppable against
/// Google's docs:
///
/// | Google status                                   | status | OpenAI type           | retryable |
/// |-------------------------------------------------|--------|-----------------------|-----------|
/// | INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE | 400 | invalid_request_error | no        |
/// | UNAUTHENTICATED                                 | 401    | authentication_error  | no        |
/// | PERMISSION_DENIED                               | 403    | permission_error      | no        |
/// | NOT_FOUND                                       | 404    | not_found_error       | no        |
/// | ALREADY_EXISTS                                  | 409    | invalid_request_error | no        |
/// | ABORTED                                         | 409    | server_error          | yes       |
/// | RESOURCE_EXHAUSTED                              | 429    | rate_limit_error      | yes       |
/// | CANCELLED, UNKNOWN, INTERNAL                    | 500    | server_error          | yes       |
/// | DATA_LOSS                                       | 500    | server_error          | no        |
/// | UNIMPLEMENTED                                   | 501    | server_error          | no        |
/// | UNAVAILABLE                                     | 503    | server_error          | yes       |
/// | DEADLINE_EXCEEDED                               | 504    | server_error          | yes       |
///
/// An empty or unknown status falls back on `http_status` (0 when unknown): 429 → rate limit
/// (retryable), 5xx → retryable server_error with that status, other 4xx → that status as
/// invalid_request_error, anything else → 502 server_error; `code` is then `upstream_error`.
upstream_error map_google_status(std::string_view google_status, std::string_view message, unsigned http_status = 0);

/// A non-2xx Vertex response (or an `{"error":...}` object met in a stream): reads
/// `error.{code,message,status,details}` — also when the body is a JSON array holding it, as
/// streamGenerateContent without alt=sse sends — and RetryInfo's `retryDelay`. The body need not
/// be JSON (a proxy's HTML page): then the HTTP status alone decides.
upstream_error map_google_error(unsigned http_status, std::string_view body);
upstream_error map_google_error(unsigned http_status, const boost::json::value& body);

/// `{"message","type","param":null,"code"}`: the object inside OpenAI's error body, also what a
/// stream's final `data: {"error":{...}}` event carries.
boost::json::object to_openai_error(const upstream_error& e);

/// `{"error":{...}}`, a complete OpenAI error response body.
boost::json::object to_openai_error_body(const upstream_error& e);

// ---------------------------------------------------------------------------------------------
// Streaming (PROTOCOLS.md §4.4)

/// What one streamed chunk turned into.
struct stream_step {
  std::vector<boost::json::object> chunks;  ///< `chat.completion.chunk` objects to send, in order
  std::optional<gemini_usage> usage;        ///< this chunk's `usageMetadata` (cumulative): see make_usage_chunk
  std::optional<upstream_error> error;      ///< an error object or a malformed chunk: end the stream
};

/// Turns streamGenerateContent chunks (each SSE `data:` payload, a GenerateContentResponse)
/// into OpenAI chunks, one at a time. Owns no I/O; one object per stream, used by one thread.
///
/// - The first chunk sent carries `delta.role:"assistant"` (together with its first content).
/// - text parts → `delta.content`; `thought:true` text parts → `delta.reasoning_content`;
///   empty texts send nothing.
/// - a whole `functionCall` part → one `delta.tool_calls:[{index, id, type:"function",
///   function:{name, arguments}}]` with the full arguments (Gemini does not stream them in
///   fragments); `index` counts tool calls from 0 in stream order, `id` = tool_call_id(meta.id,
///   index), and `extra_content.google.thought_signature` as in to_chat_completion.
/// - streamed arguments (Vertex `streamFunctionCallArguments`): a call that starts with
///   `willContinue:true` is assembled from the `partialArgs` (`jsonPath` + `stringValue`
///   appended / `numberValue` / `boolValue` / `nullValue`) of the parts that follow, until a
///   `functionCall` part without `willContinue`; then it is sent as one tool_calls delta.
/// - `finishReason` → a chunk with an empty delta and the mapped `finish_reason` ("tool_calls"
///   when tool calls were sent and the reason maps to "stop"); a pending streamed call is sent
///   first. `promptFeedback.blockReason` without candidates → `finish_reason:"content_filter"`.
/// - `usageMetadata` → no chunk; `stream_step::usage` is set (the caller sends make_usage_chunk
///   once the upstream body has ended, since every chunk repeats a cumulative usage).
/// - a chunk `{"error":{...}}` → `stream_step::error` via map_google_error; a chunk that is not
///   a JSON object, or a partial argument with an unusable `jsonPath`, fails the stream (502
///   `invalid_upstream_response`). After a failure every chunk is ignored; after the finish chunk
///   only usage is taken.
class gemini_stream_translator {
 public:
  explicit gemini_stream_translator(completion_meta meta);

  /// One parsed `data:` payload.
  stream_step on_chunk(const boost::json::value& chunk);
  /// The same with the payload still as text (parse failure fails the stream).
  stream_step on_chunk(std::string_view data);

  /// The upstream body ended (Google sends no `[DONE]`). A stream that ended without a
  /// `finishReason` fails (502 `invalid_upstream_response`: it broke off); otherwise nothing.
  stream_step on_end();

  /// A finish chunk was sent.
  bool finished() const { return finished_; }
  /// An error or malformed chunk was seen.
  bool failed() const { return failed_; }
  /// `finish_reason` sent with the finish chunk; empty before it.
  const std::string& finish_reason() const { return finish_reason_; }
  /// The last usage seen (cumulative), if any.
  const std::optional<gemini_usage>& usage() const { return usage_; }
  /// A streamed call still being assembled (generated, not yet sent): its name and its arguments
  /// as far as they came, serialised; empty when none. Kept after a failure. A stream that ends
  /// here bills this text too.
  std::string pending_text() const;
  const completion_meta& meta() const { return meta_; }

 private:
  struct pending_call {
    std::string name;
    std::string thought_signature;
    boost::json::value args;  ///< object being assembled
    /// JSON values the partialArgs may still create (array slots and keys): an upstream's paths
    /// (`$.a[99999]`, event after event) would otherwise grow it without bound.
    std::size_t room = 1 << 16;
  };

  boost::json::object make_chunk(boost::json::object delta, std::string_view finish_reason = {});
  void emit_tool_call(stream_step& step, std::string_view name, const boost::json::value& args,
                      std::string_view thought_signature);
  bool flush_pending(stream_step& step);
  void finish(stream_step& step, std::string_view reason);
  stream_step fail(stream_step step, upstream_error e);

  completion_meta meta_;
  bool role_sent_ = false;
  bool finished_ = false;
  bool failed_ = false;
  std::string finish_reason_;
  std::optional<gemini_usage> usage_;
  std::size_t tool_calls_ = 0;
  std::optional<pending_call> pending_;
};

/// `{id, object:"chat.completion.chunk", created, model, choices:[], usage}`: the chunk OpenAI
/// sends last when `stream_options.include_usage` is set.
boost::json::object make_usage_chunk(const completion_meta& meta, const gemini_usage& usage);

// ---------------------------------------------------------------------------------------------
// Embeddings (PROTOCOLS.md §4.7, `:predict`)

/// Vertex's limit on `instances` per predict call for text-embedding-00x models.
inline constexpr std::size_t default_max_instances = 250;

/// The predict calls that answer one OpenAI embeddings request, in input order.
struct predict_calls {
  std::vector<boost::json::object> bodies;  ///< one `:predict` body per call
  std::size_t input_count = 0;              ///< number of inputs (= embeddings expected back)
  bool base64 = false;                      ///< `encoding_format:"base64"`: answer base64 float32
};

/// OpenAI embeddings request → `:predict` bodies `{"instances":[{"content":"..."}...],
/// "parameters"?:{"outputDimensionality":n}}` with at most `max_instances_per_call` instances
/// each (use 1 for models that take one input per request). `input` must be a non-empty string
/// or a non-empty array of non-empty strings (token arrays are refused); `dimensions` a positive
/// integer; `encoding_format` `float` (default) or `base64`.
translate_result<predict_calls> to_predict_requests(const boost::json::object& embeddings_request,
                                                    std::size_t max_instances_per_call = default_max_instances);

struct embeddings_response {
  boost::json::object body;        ///< OpenAI `{"object":"list","data":[...],"model","usage"}`
  std::uint64_t prompt_tokens = 0; ///< sum of `statistics.token_count`
  bool tokens_reported = false;    ///< every prediction reported its token count
};

/// The predict answers to `calls`' bodies, in the same order → the OpenAI embeddings list:
/// `data[i] = {object:"embedding", index:i, embedding}` from `predictions[].embeddings.values`
/// (a base64 string of little-endian float32 when `calls.base64`), `model` = the name the
/// caller asked for, `usage.prompt_tokens = usage.total_tokens` = the summed token counts.
/// Refused (`invalid_upstream`) when a body lacks its predictions or values, or the count
/// differs from the inputs.
translate_result<embeddings_response> to_openai_embeddings(const predict_calls& calls,
                                                           std::span<const boost::json::value> responses,
                                                           std::string_view model);

}  // namespace tollgate::providers::vertex
