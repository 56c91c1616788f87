// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The content filters as the gateway applies them (docs/content-filters.md): the rule sets of a
/// config compiled once per load (one Hyperscan database pair per distinct selection of rules),
/// the prompt check, the filter of whole answers, and the rewriter of streamed answers, which
/// filters the decoded delta text and re-emits valid SSE with valid JSON.
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "gateway/core/request_context.hpp"
#include "gateway/core/sse.hpp"
#include "gateway/moderation.hpp"
#include "policy/content_filter/content_filter.hpp"

namespace tollgate::gateway {

namespace cf = policy::content_filter;

class content_filters {
 public:
  /// Compiles `cfg.content_filters`; nullptr with `error` set (rule path and Hyperscan's message)
  /// when a rule is bad, and nullptr without error when there are no rules.
  static std::shared_ptr<const content_filters> compile(const config::gateway_config& cfg, std::string& error);

  /// The rules for prompts / responses of `team`'s calls to the model route `route`; nullptr
  /// when none apply. Per direction: the union of the team's and the route's explicit lists,
  /// else the default (content_filters.prompts / responses, else every rule; injection rules
  /// never apply to responses).
  const cf::filter_set* prompts_for(std::string_view team, std::string_view route) const;
  const cf::filter_set* responses_for(std::string_view team, std::string_view route) const;
  /// "block", "redact" or "flag" for a rule name (the moderation endpoint's is "moderation").
  std::string_view action_of(std::string_view rule) const;
  /// The moderation endpoint, when configured.
  const moderation_target* moderation() const { return moderation_ ? &*moderation_ : nullptr; }

 private:
  std::map<std::string, std::unique_ptr<cf::filter_set>, std::less<>> sets_;  ///< by selection key
  std::optional<moderation_target> moderation_;
  std::optional<cf::filter_set> empty_;  ///< no rules: streams moderated without local rules
  std::map<std::string, std::string, std::less<>> actions_;
  std::pair<const cf::filter_set*, const cf::filter_set*> default_{};
  using pair_t = std::pair<const cf::filter_set*, const cf::filter_set*>;
  const pair_t& selection(std::string_view team, std::string_view route) const;
  std::map<std::string, pair_t, std::less<>> teams_;   ///< teams with a selection of their own
  std::map<std::string, pair_t, std::less<>> routes_;  ///< model routes with a selection
  std::map<std::string, std::map<std::string, pair_t, std::less<>>, std::less<>> both_;  ///< [team][route]
};

/// "a, b, c": rule names for a message to the caller.
std::string joined_rules(const std::vector<std::string>& rules);

/// Records the rules that fired on ctx (audit `filters`) and in the metrics.
void record_filter_actions(request_context& ctx, const content_filters& f, const std::vector<std::string>& rules,
                           std::string_view direction);

/// Filters a chat request's message texts (and an embeddings request's input) in place. Returns
/// the rules of a block (empty when not blocked).
std::vector<std::string> filter_prompt(request_context& ctx, const content_filters& f, const cf::filter_set& set,
                                       cf::scratch& s);

/// Filters a whole chat.completion body's message contents; returns the new body, or nothing
/// when the body is no chat.completion (no JSON object with a `choices` list) or a message's
/// content or reasoning is neither a string nor null (a list of parts): its text cannot be found
/// to filter, so it must not be sent (fail closed).
std::optional<std::string> filter_answer(request_context& ctx, const content_filters& f, const cf::filter_set& set, cf::scratch& s,
                          std::string body);

/// Rewrites a translated SSE stream: every chunk's `delta.content` goes through a stream filter;
/// text held back is sent with the last run of text chunks when the finish chunk follows them in
/// the same bytes, else in a chunk of its own before the finish chunk (or in the finish chunk,
/// after its own text, when it carries text). A block ends the stream:
/// the safe text, a chunk with finish_reason `content_filter`, an error event and `[DONE]`.
class stream_rewriter {
 public:
  stream_rewriter(request_context& ctx, const content_filters& f, const cf::filter_set& set, cf::scratch& s);
  /// The SSE to send for `sse_bytes` of translator output.
  std::string process(std::string_view sse_bytes);
  bool blocked() const { return blocked_; }
  /// The finish chunk or [DONE] went through: the answer's text is complete (choice 0's, with `n`).
  bool finished() const { return finished_; }
  /// Every answer the request asked for (`n`) is complete.
  bool all_finished() const {
    if (!finished_ || more_.size() + 1 < std::max(1u, ctx_.choices)) return false;
    for (const auto& m : more_)
      if (!m.finished) return false;
    return true;
  }
  /// Keeps the text sent from now on for take_text() (the moderation windows).
  void track_text() { track_ = true; }
  /// The text sent since the last call.
  std::string take_text() { return std::exchange(tracked_, {}); }
  /// Ends the stream because the moderation endpoint flagged the answer (or failed closed): a
  /// content_filter finish chunk, an error event with `code` and `message`, and [DONE] (also
  /// after a local block: the caller, which held that block's end unsent, drops it).
  std::string end_by_moderation(std::string_view code, const std::string& message);
  /// The rules that fired so far go to the metrics and the request's record (again: no effect).
  /// [DONE] and a block do it; call it too when the stream ends otherwise (the upstream failed,
  /// the caller left, moderation ended it), before the audit record is sealed.
  void record_rules();
  /// The content text sent so far, as filtered (what the audit trail's text capture keeps).
  const std::string& emitted_text() const { return emitted_; }

 private:
  void on_event(std::string_view name, std::string_view data, std::string& out);
  void on_data(std::string_view data, std::string& out);
  /// The common chunk, handled without parsing it: a text chunk joins the batch (its
  /// delta.content string is replaced in place when the batch is flushed), a chunk without text
  /// is relayed. False when the chunk needs the full parse (first chunk, finish chunk, unusual
  /// shape).
  bool in_place(std::string_view data, std::string& out);
  /// The common text chunk's event at the start of `bytes`, told by known_head_ and known_tail_
  /// alone: added to the batch (its whole event in event_), and its size returned; 0 leaves it to
  /// the general path. Only its string is scanned: the rest of its bytes are the known ones.
  std::size_t common_event(std::string_view bytes);
  /// Filters the batched text chunks with one scan and writes them. `last`: the answer's text
  /// ends with them (the finish chunk is next), so the text held back goes out in the batch too,
  /// not in a chunk of its own. When the filter let the batch's text through unchanged (nothing
  /// redacted, nothing held back from before), each chunk keeps its own text: the chunks whose
  /// text went out whole are sent as they came, the one the held-back text begins in carries its
  /// part, and the ones after it carry "". Otherwise the batch's text goes in its last chunk (the
  /// first one when it ends in a block) and the others carry "".
  void flush_batch(std::string& out, bool last = false);
  /// A text chunk of the batch: its delta.content string is replaced when the batch is flushed.
  /// Its decoded text is in joined_ (trivially copyable: the batch grows without moving strings).
  struct pending_text {
    std::string_view data;                        ///< the event's data (in the caller's bytes or events_)
    std::pair<std::size_t, std::size_t> literal;  ///< delta.content's string literal in data
    /// The whole event ("data: " to the blank line) when read in place from the caller's bytes,
    /// else empty: the bytes between two such events' strings are copied at once.
    std::string_view event;
    std::size_t text_end = 0;  ///< where its decoded text ends in joined_
  };
  std::vector<pending_text> batch_;
  std::string joined_;        ///< the batch's texts, decoded, one after the other (one scan)
  std::string known_prefix_;  ///< a text chunk's bytes up to its first "delta" key (see in_place)
  /// A text chunk's event up to its content string's opening quote ("data: " and known_prefix_
  /// with the content first), and its bytes after that string to the blank line. The bytes after
  /// the string were checked once: no "content" key in them, a finish_reason that is not a
  /// string (the last one), and not starting with ':'. An event that begins with the head, and
  /// ends with the tail after a string, is a text chunk that does not finish, told without a key
  /// search (see common_event).
  std::string known_head_, known_tail_;
  /// Adds a text chunk to the batch (false: its escaped literal does not decode: parse it whole).
  bool add_text(std::string_view data, std::pair<std::size_t, std::size_t> literal, bool escaped);
  std::string_view event_;  ///< the event being handled, when read in place (see pending_text)
  /// The filter and state of the answer `index` (n > 1 streams several); filter nullptr when the
  /// index is past the request's n or a filter cannot start (the stream then ends, fail closed).
  /// An answer's reasoning text (`delta.reasoning_content` or `delta.reasoning`: Gemini's thoughts
  /// as the Vertex translator writes them, DeepSeek's and vLLM's), filtered as its own stream
  /// that ends when the answer's content begins (or at the answer's end).
  struct reasoning_state {
    std::optional<cf::stream_filter> filter;  ///< made at the answer's first reasoning text
    bool finished = false;
    /// The keys the upstream sends it under: `reasoning_content`, `reasoning`, or both (vLLM's
    /// alias, kept in sync). What the filter held back goes out under the same ones.
    bool as_content = false, as_reasoning = false;
    bool pending() const { return filter && !finished; }
  };
  struct choice_ref {
    cf::stream_filter* filter = nullptr;
    bool* finished = nullptr;
    reasoning_state* reasoning = nullptr;
  };
  choice_ref choice(std::uint64_t index);
  /// The end of an answer's reasoning: what its filter held back goes out, appended to
  /// `in_chunk` (the reasoning string of the chunk being handled) or else in a chunk of its own.
  /// False when that end revealed a block (the stream has ended).
  bool end_reasoning(reasoning_state& r, std::uint64_t index, boost::json::value* in_chunk, std::string& out);
  /// The end of choice 0's text: what its filter held back goes out in a chunk of its own.
  void flush(std::string& out);
  /// flush() for every choice (at [DONE]).
  void flush_all(std::string& out);
  /// The rules that fired in any choice's text.
  std::vector<std::string> fired_rules() const;
  void end_blocked(std::string& out);
  void end_stream(std::string& out, std::string_view code, const std::string& message);
  void sent(std::string_view text);  ///< text emitted to the caller (capture, moderation)
  /// Appends a chunk of the rewriter's own carrying `text` (the text held back, at the end) for
  /// the choice `index`, as its delta's `key` (and as `key2` too, when given).
  void content_chunk(std::string& out, std::string_view text, std::uint64_t index = 0,
                     std::string_view key = "content", std::string_view key2 = {}) const;

  request_context& ctx_;
  const content_filters& f_;
  const cf::filter_set& set_;
  cf::scratch& scratch_;
  std::optional<cf::stream_filter> filter_;
  sse::parser parser_;
  std::vector<sse::event> events_;
  std::string id_, model_;
  std::int64_t created_ = 0;
  bool blocked_ = false;
  bool finished_ = false;  ///< the filter was flushed (finish chunk or [DONE] seen)
  /// The request asked for several answers (n > 1): their chunks interleave, each answer's text
  /// goes through a filter of its own, and every chunk takes the general path (parsed whole).
  bool multi_ = false;
  /// Choices 1 to n-1 (choice 0 is filter_ and finished_), made as their first chunk comes.
  struct more_choice {
    std::optional<cf::stream_filter> filter;
    bool finished = false;
    reasoning_state reasoning;
  };
  reasoning_state reasoning_;  ///< choice 0's
  std::vector<more_choice> more_;
  std::string emitted_;
  bool track_ = false;
  std::string tracked_;
};

/// The text of a chat request's messages (or an embeddings request's input), one entry each.
std::vector<std::string> prompt_texts(const request_context& ctx);

/// The message contents of a chat.completion body, one entry per choice (none if unreadable).
std::vector<std::string> answer_texts(std::string_view body);

/// A chat.completion body with every choice's content withheld ("") and finish_reason
/// content_filter (the moderation endpoint flagged the answer).
std::string withhold_answer(std::string body);

}  // namespace tollgate::gateway
