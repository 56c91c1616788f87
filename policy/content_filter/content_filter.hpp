// SPDX-License-Identifier: Apache-2.0
#pragma once
// Content-filter engine: built-in detectors (PII, secrets) and custom rules (regex, word lists),
// compiled once into Hyperscan block (prompts) and streaming (responses) databases.
//
// Pure: no I/O, no metrics, no exceptions on the scan path. Errors are values.
//
// Semantics shared by scan_text() and stream_filter (the stream output, concatenated, equals the
// whole-text output for ANY split of the input):
//   * A candidate is a Hyperscan match (leftmost start for each end, per pattern) that passes its
//     detector's validator. Validators see the matched bytes plus up to 2 bytes of context on each
//     side (fewer only at the start or end of the text).
//   * Block: if any block candidate exists, let E be the smallest end of a block candidate and P
//     the smallest start among block candidates ending at E. The text is blocked at P: the output
//     is the (redacted) text before P, cut back to a UTF-8 character boundary; redactions starting
//     before that cut are emitted whole (as their token). Only candidates ending at or before E
//     count. The rules reported are the blocking rules ending at E plus the redact/flag rules
//     that fired before P.
//   * Redact: among redact candidates, leftmost first; at equal start the longest, then the lowest
//     rule index. Overlapped candidates are dropped. Each selected match becomes
//     "[REDACTED:<rule name>]".
//   * Flag: reported (never changes the text) unless its span lies inside a selected redaction.
//
// Held-back bound (streaming): with L = the longest possible match of any rule in the set
// (filter_set::max_match_length(), at most compile_options::max_match_length), a stream_filter
// never holds back more than L + 5 bytes (L, +2 bytes of validator context, +3 bytes to avoid
// splitting a UTF-8 character): see stream_filter::hold_bound(). When every rule's reach (the
// bytes its matches can contain) is known (built-ins, word lists: not custom regexes), it holds
// back only the longest run of newest text within some rule's reach, and a reported candidate
// whose 2 bytes of following context have not arrived.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/system/result.hpp>

struct hs_database;
struct hs_scratch;
struct hs_stream;

namespace tollgate::policy::content_filter {

/// What a rule does when it matches. Priority on overlap: block > redact > flag.
enum class action { block, redact, flag };

/// Built-in detectors. docs/content-filters.md and the tests list exactly what each matches.
enum class detector {
  email,           ///< local@domain.tld (TLD 2..18 letters; clipped to the last 254 bytes; domain <= 190)
  phone,           ///< E.164 (+ and 8..15 digits), +CC grouped, NANP (555) 234-5678 / 555-234-5678
  payment_card,    ///< 13..19 contiguous digits, or 4-4-4-4, 4-6-5, 4-4-4-4-3 with space/dash; Luhn
  us_ssn,          ///< ddd-dd-dddd; area not 000/666/9xx, group not 00, serial not 0000
  iban,            ///< CC dd + groups (optionally space-separated), 15..34 chars, mod-97 == 1
  ipv4,            ///< dotted quad 0..255, no leading zeros, not part of a longer dotted number
  ipv6,            ///< full 8-group form, or one "::" with groups on both sides; needs a digit
  aws_access_key,  ///< AKIA|ASIA + 16 [A-Z0-9]
  private_key,     ///< "-----BEGIN [WORDS ]PRIVATE KEY-----" header line
  jwt,             ///< eyJ<b64url>.<b64url>.<b64url>(sig >= 10); clipped to the last 512 bytes
  api_key,         ///< sk-ant-, sk-(proj-)..., ghp_/gho_/ghu_/ghs_/ghr_, github_pat_, xox[abpr]-, AIza
};

/// Stable name of a detector ("email", "payment_card", ...); the default rule name.
std::string_view detector_name(detector d) noexcept;

/// Every built-in detector, in enum order.
std::span<const detector> all_detectors() noexcept;

/// One phrase of a prompt-injection rule and the score it adds when present in a text: either
/// plain words (ASCII case-insensitive, whole words, any run of whitespace between them) or a
/// Hyperscan regex (case-insensitive). A phrase counts once per text however often it occurs.
struct phrase {
  std::string text;
  std::string regex;
  int score = 1;
};

/// The built-in phrase set of prompt-injection rules that give none (docs/content-filters.md),
/// with its default threshold.
std::vector<phrase> builtin_injection_phrases();
inline constexpr int builtin_injection_threshold = 4;

/// One rule. Build with the factory functions.
struct rule {
  enum class kind { builtin, regex, word_list, injection };
  kind type = kind::builtin;
  std::string name;  ///< reported when it fires; also the <type> in [REDACTED:<type>]
  action act = action::flag;
  detector builtin = detector::email;  ///< kind::builtin
  std::string pattern;                 ///< kind::regex (Hyperscan syntax, must be bounded-width)
  std::vector<std::string> words;      ///< kind::word_list (whole words, ASCII case-insensitive)
  /// kind::injection: fires on a text whose present phrases' scores sum to `threshold` or more.
  /// Prompts only (block mode): a stream_filter never reports it. Actions: block or flag.
  std::vector<phrase> phrases;
  int threshold = builtin_injection_threshold;

  static rule make_builtin(detector d, action a);                          ///< named detector_name(d)
  static rule make_builtin(detector d, action a, std::string name);
  static rule make_regex(std::string name, std::string pattern, action a);
  static rule make_word_list(std::string name, std::vector<std::string> words, action a);
  static rule make_injection(std::string name, std::vector<phrase> phrases, int threshold, action a);
};

/// All built-ins with one action.
std::vector<rule> builtin_rules(action a);

struct compile_options {
  /// Cap on the longest match of any rule; a rule that can match more is refused. The stream
  /// hold-back is bounded by the actual longest rule (<= this cap) + 5 bytes.
  std::size_t max_match_length = 512;
};

/// A compile error: which rule and why (Hyperscan's message for a bad regex).
struct error {
  std::size_t rule_index = 0;
  std::string rule_name;
  std::string message;  ///< "rule 'x' (index 2): <reason>"
};

template <class T>
using result = boost::system::result<T, error>;

struct pattern_info;   // internal per-expression metadata
struct stream_engine;  // internal resolver shared by both modes
struct verdict;
class scratch;

/// Compiled, immutable rules. Share read-only between workers; compile once per config load.
class filter_set {
 public:
  filter_set(filter_set&&) noexcept;
  filter_set& operator=(filter_set&&) noexcept;
  ~filter_set();

  std::size_t rule_count() const noexcept { return rules_.size(); }
  const rule& rule_at(std::size_t i) const noexcept { return rules_[i]; }
  /// Longest possible match of any rule (bytes).
  std::size_t max_match_length() const noexcept { return max_len_; }
  /// Unique per compile() in this process (never reused, unlike an address).
  std::uint64_t id() const noexcept { return id_; }

 private:
  friend result<filter_set> compile(std::span<const rule>, const compile_options&);
  friend class scratch;
  friend class stream_filter;
  friend struct stream_engine;
  friend verdict scan_text(const filter_set&, scratch&, std::string_view);
  filter_set() = default;

  void free_databases() noexcept;

  std::vector<rule> rules_;
  std::vector<pattern_info> patterns_;  // indexed by Hyperscan expression id
  // Block mode: one database per pattern group (see builtin_patterns in the .cpp): Hyperscan
  // scans a few small databases of alike patterns several times faster than one database of them
  // all. Streaming mode: one database of every pattern (see compile()). docs/benchmarks.md.
  std::vector<hs_database*> block_dbs_;
  std::vector<hs_database*> stream_dbs_;
  /// Block mode for short texts (under small_text bytes): one database of every pattern, since
  /// there the fixed cost per database scanned outweighs the cost per byte.
  std::vector<hs_database*> small_dbs_;
  static constexpr std::size_t small_text = 4096;
  std::size_t max_len_ = 0;
  std::uint64_t id_ = 0;
  // Streams: per byte value, a bit for each distinct reach set (the bytes a pattern's match can
  // contain) that holds it. Empty when a rule's reach is unknown (custom regex): then a stream
  // holds back the whole horizon.
  std::vector<std::uint32_t> live_mask_;
};

/// Compile rules. A bad or unbounded regex, an empty word list or name, an injection rule with
/// action redact, a phrase without text or a score below 1 is refused with the rule's index and
/// name (and Hyperscan's message when it is the one refusing).
result<filter_set> compile(std::span<const rule> rules, const compile_options& options = {});

/// Hyperscan scratch space. Allocate one per worker (thread) and reuse it for every scan of that
/// worker; never use one scratch from two threads at once. Copy to clone for another worker.
class scratch {
 public:
  /// Allocated for both databases of `set` (and any set used with it earlier via grow()).
  static result<scratch> create(const filter_set& set);
  /// Make this scratch large enough for `set` too (e.g. after a config reload). Cheap when it
  /// already was: Hyperscan's own check costs microseconds, so the sets grown for are remembered.
  bool grow(const filter_set& set) noexcept;
  result<scratch> clone() const;

  scratch(scratch&&) noexcept;
  scratch& operator=(scratch&&) noexcept;
  ~scratch();

 private:
  friend class stream_filter;
  friend verdict scan_text(const filter_set&, scratch&, std::string_view);
  scratch() = default;
  hs_scratch* s_ = nullptr;
  std::vector<std::uint64_t> grown_for_;  ///< filter_set ids this scratch is large enough for
};

/// Outcome of scanning a whole text (prompt).
struct verdict {
  bool blocked = false;
  std::size_t block_offset = 0;    ///< when blocked: byte offset of the blocking match (P above)
  std::vector<std::string> rules;  ///< names of rules that fired, in rule order, no duplicates
  /// Engaged iff a redaction fired or the text is blocked: the text to forward instead of the input
  /// (when blocked: the safe prefix a stream would have emitted). Not engaged: forward the input.
  std::optional<std::string> redacted_text;
  bool scan_failed = false;  ///< Hyperscan failed (treat as blocked: fail closed)
  /// The most matches the scan held at once before resolving them (24 bytes each): what a
  /// prompt costs the filter in memory, beyond its text.
  std::size_t peak_candidates = 0;
};

/// Scan a whole text with the block-mode database.
verdict scan_text(const filter_set& set, scratch& s, std::string_view text);

struct chunk_result {
  std::string text;      ///< safe to emit now; never ends inside a UTF-8 character
  bool blocked = false;  ///< the stream is blocked: emit `text`, then end the stream
};

/// Filters one response stream, fed its decoded text pieces in order. Keep `set` and `scratch`
/// alive while it is in use. Not thread-safe (one stream, one worker).
class stream_filter {
 public:
  static result<stream_filter> create(const filter_set& set, scratch& s);

  /// Feed the next piece; returns the text that can be emitted now. After a block, returns
  /// {"", true} and ignores input.
  chunk_result feed(std::string_view piece);
  /// End of the response: returns the remaining text.
  chunk_result finish();

  bool blocked() const noexcept;
  /// Names of the rules that fired so far (never matched text), in rule order.
  std::vector<std::string> fired_rules() const;
  /// Bytes fed but neither emitted nor dropped yet.
  std::size_t held_back() const noexcept;
  /// Upper bound on held_back() for streams of `set`: max_match_length() + 5.
  static std::size_t hold_bound(const filter_set& set) noexcept { return set.max_match_length() + 5; }

  stream_filter(stream_filter&&) noexcept;
  stream_filter& operator=(stream_filter&&) noexcept;
  ~stream_filter();

 private:
  stream_filter() = default;
  std::unique_ptr<stream_engine> e_;
};

}  // namespace tollgate::policy::content_filter
