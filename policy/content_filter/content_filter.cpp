// SPDX-License-Identifier: Apache-2.0
#include "policy/content_filter/content_filter.hpp"

#include <algorithm>
#include <atomic>
#include <array>
#include <cctype>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include <hs/hs.h>

namespace tollgate::policy::content_filter {

// How a candidate is checked in code after Hyperscan reports it.
enum class validator : std::uint8_t {
  none,
  email,
  phone_e164,
  phone_grouped,
  phone_nanp,
  card,
  ssn,
  iban,
  ipv4,
  ipv6,
  openai_key,
  slack_key,
};

// How a candidate's start is found when Hyperscan's start of match is not the detector's.
enum class start_rule : std::uint8_t {
  as_reported,
  // The pattern starts at '@' (an anchor Hyperscan tracks cheaply); the match starts at the
  // leftmost byte of the run of local-part characters before it, within the clip. The same span
  // as the whole address pattern's leftmost start, at a hundredth of its scan cost.
  email_local_part,
};

struct pattern_info {
  std::uint32_t rule = 0;
  validator check = validator::none;
  std::uint32_t clip = 0;  // nonzero: matches are clipped to their last `clip` bytes
  start_rule start = start_rule::as_reported;
  int score = 0;  // > 0: a phrase of an injection rule (adds its score, never a candidate)
};

// A set of bytes (bit per byte value).
struct byte_set {
  std::array<std::uint64_t, 4> bits{};
  void add(unsigned char c) noexcept { bits[c >> 6] |= std::uint64_t{1} << (c & 63); }
  bool operator==(const byte_set&) const = default;
};

namespace {

// Scan groups: each group is compiled into a database of its own. Hyperscan is fastest when a
// database holds alike patterns: patterns that start with a literal (keys, '@', "-----BEGIN")
// share one; the digit-structured ones another; IBAN and IPv6, whose leading character classes
// match inside ordinary words, one each. All in one database scanned ordinary prose at ~0.4 GB/s,
// these four at ~2.4 GB/s (docs/benchmarks.md). Custom rules get a group of their own, so that a
// costly custom regex does not slow the built-ins.
// Injection phrases get one too (block mode only, without start-of-match tracking).
enum group : std::uint8_t { g_literal, g_digits, g_iban, g_ipv6, g_custom, g_injection, group_count };

struct builtin_pattern {
  detector det;
  const char* regex;
  validator check;
  unsigned flags;  // extra Hyperscan flags
  unsigned width;  // 0: bounded pattern (Hyperscan's max_width); else clip matches to this width
  group grp;
  start_rule start = start_rule::as_reported;
  // Every byte a match can contain, as inclusive ranges "loHI..." (pairs of characters). A stream
  // holds back only the longest run of text, ending at the newest byte, that lies within some
  // pattern's reach: anything before it can no longer be part of a match still forming.
  const char* reach = "";
};

// Every pattern is bounded-width; validators do what Hyperscan cannot (checksums, context).
// Hyperscan has no lookaround: context (the 2 bytes either side) is checked by the validators.
constexpr builtin_pattern builtin_patterns[] = {
    // Unbounded patterns (width > 0) compile far smaller with SOM; their matches are clipped to the
    // last `width` bytes (start = max(start, end - width)), which bounds every match.
    // email: local@domain, scanned from the '@' (start_rule::email_local_part finds the local part).
    {detector::email, R"(@[A-Za-z0-9.\-]+\.[A-Za-z]{2,18}\b)", validator::email, 0, 254, g_literal,
     start_rule::email_local_part, "AZaz09..__%%++--@@"},
    {detector::phone, R"(\+[1-9][0-9]{7,14}\b)", validator::phone_e164, 0, 0, g_literal, start_rule::as_reported, "++09"},
    {detector::phone, R"(\+[1-9][0-9]{0,2}[ .\-]\(?[0-9]{1,4}\)?(?:[ .\-][0-9]{2,4}){2,4}\b)",
     validator::phone_grouped, 0, 0, g_literal, start_rule::as_reported, "++09  ..--(())"},
    {detector::phone, R"(\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[ .\-][0-9]{4}\b)", validator::phone_nanp, 0, 0, g_digits, start_rule::as_reported, "(())09  ..--"},
    {detector::phone, R"(\b[2-9][0-9]{2}-[2-9][0-9]{2}-[0-9]{4}\b)", validator::phone_nanp, 0, 0, g_digits, start_rule::as_reported, "09--"},
    {detector::phone, R"(\b[2-9][0-9]{2}\.[2-9][0-9]{2}\.[0-9]{4}\b)", validator::phone_nanp, 0, 0, g_digits, start_rule::as_reported, "09.."},
    {detector::payment_card, R"(\b[0-9]{13,19}\b)", validator::card, 0, 0, g_digits, start_rule::as_reported, "09"},
    {detector::payment_card, R"(\b[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}\b)", validator::card, 0, 0, g_digits, start_rule::as_reported, "09  --"},
    {detector::payment_card, R"(\b[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{5}\b)", validator::card, 0, 0, g_digits, start_rule::as_reported, "09  --"},
    {detector::payment_card, R"(\b[0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]{4}[ \-][0-9]{3}\b)",
     validator::card, 0, 0, g_digits, start_rule::as_reported, "09  --"},
    {detector::us_ssn, R"(\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b)", validator::ssn, 0, 0, g_digits, start_rule::as_reported, "09--"},
    {detector::iban, R"(\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b)", validator::iban, 0, 0, g_iban, start_rule::as_reported, "AZ09  "},
    {detector::ipv4, R"(\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b)",
     validator::ipv4, 0, 0, g_digits, start_rule::as_reported, "09.."},
    // The leading \b of the full form is checked by the validator (a word character before the
    // start refuses the match): Hyperscan ran this pattern 12 times slower with it.
    {detector::ipv6, R"((?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b)", validator::ipv6, 0, 0, g_ipv6, start_rule::as_reported, "09AFaf::"},
    {detector::ipv6, R"(\b(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}\b)", validator::ipv6, 0, 0, g_ipv6, start_rule::as_reported, "09AFaf::"},
    {detector::aws_access_key, R"(\b(?:AKIA|ASIA)[A-Z0-9]{16}\b)", validator::none, 0, 0, g_literal, start_rule::as_reported, "AZ09"},
    {detector::private_key, R"(-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY-----)", validator::none, 0, 0, g_literal, start_rule::as_reported, "--AZ09  "},
    {detector::jwt, R"(\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]{10,})", validator::none, 0, 512, g_literal, start_rule::as_reported, "AZaz09__--.."},
    {detector::api_key, R"(\bsk-ant-[A-Za-z0-9_\-]{20,})", validator::none, 0, 200, g_literal, start_rule::as_reported, "AZaz09__--"},
    {detector::api_key, R"(\bsk-[A-Za-z0-9_\-]{20,})", validator::openai_key, 0, 200, g_literal, start_rule::as_reported, "AZaz09__--"},
    {detector::api_key, R"(\bgh[pousr]_[A-Za-z0-9]{36}\b)", validator::none, 0, 0, g_literal, start_rule::as_reported, "AZaz09__"},
    {detector::api_key, R"(\bgithub_pat_[A-Za-z0-9_]{50,})", validator::none, 0, 120, g_literal, start_rule::as_reported, "AZaz09__"},
    {detector::api_key, R"(\bxox[abpr]-[A-Za-z0-9\-]{10,})", validator::slack_key, 0, 120, g_literal, start_rule::as_reported, "AZaz09--"},
    {detector::api_key, R"(\bAIza[0-9A-Za-z_\-]{35})", validator::none, 0, 0, g_literal, start_rule::as_reported, "AZaz09__--"},
};

constexpr detector detector_list[] = {
    detector::email,          detector::phone,       detector::payment_card, detector::us_ssn,
    detector::iban,           detector::ipv4,        detector::ipv6,         detector::aws_access_key,
    detector::private_key,    detector::jwt,         detector::api_key,
};

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_upper(char c) noexcept { return c >= 'A' && c <= 'Z'; }
bool is_lower(char c) noexcept { return c >= 'a' && c <= 'z'; }
bool is_alnum(char c) noexcept { return is_digit(c) || is_upper(c) || is_lower(c); }
bool is_hex(char c) noexcept { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

std::size_t count_digits(std::string_view s) noexcept {
  return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), is_digit));
}

bool luhn(std::string_view digits) noexcept {
  int sum = 0;
  bool dbl = false;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    int d = *it - '0';
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 == 0;
}

// before: up to 2 bytes preceding the match (last byte adjacent); after: up to 2 bytes following.
bool validate(validator v, std::string_view m, std::string_view before, std::string_view after) noexcept {
  const char b1 = before.empty() ? '\0' : before.back();
  const char b2 = before.size() < 2 ? '\0' : before[before.size() - 2];
  const char a1 = after.empty() ? '\0' : after[0];
  const char a2 = after.size() < 2 ? '\0' : after[1];
  switch (v) {
    case validator::none:
      return true;
    case validator::email: {
      // The local part may not start with a dot; domain labels are non-empty and do not start or
      // end with '-'; the domain may not continue with "-x" / ".x".
      const std::size_t at = m.find('@');
      if (at == 0 || at == std::string_view::npos || m.size() - at > 191) return false;
      const std::string_view dom = m.substr(at + 1);
      if (dom.find("..") != std::string_view::npos || dom.find(".-") != std::string_view::npos ||
          dom.find("-.") != std::string_view::npos) {
        return false;
      }
      return m.front() != '.' && !(a1 == '-' && is_alnum(a2)) && !(a1 == '.' && is_alnum(a2)) &&
             !(a1 == '@');
    }
    case validator::phone_e164:
    case validator::phone_grouped: {
      if (is_alnum(b1) || b1 == '+') return false;
      const std::size_t n = count_digits(m);
      return n >= 8 && n <= 15 && !((a1 == '.' || a1 == '-') && is_digit(a2));
    }
    case validator::phone_nanp:
      // Not part of a longer dotted/dashed number (versions, dates, other ids).
      return !((b1 == '.' || b1 == '-') && is_digit(b2)) && !((a1 == '.' || a1 == '-') && is_digit(a2)) &&
             !is_digit(b1);
    case validator::card: {
      std::string digits;
      for (char c : m) {
        if (is_digit(c)) digits.push_back(c);
      }
      if (digits.size() < 13 || digits.size() > 19) return false;
      if (digits.find_first_not_of('0') == std::string::npos) return false;
      if ((b1 == '.' || b1 == ',') && is_digit(b2)) return false;  // decimals: 3.1415926535897932
      if ((a1 == '.' || a1 == ',') && is_digit(a2)) return false;
      return luhn(digits);
    }
    case validator::ssn: {
      const int area = (m[0] - '0') * 100 + (m[1] - '0') * 10 + (m[2] - '0');
      const int group = (m[4] - '0') * 10 + (m[5] - '0');
      const bool serial_zero = m.substr(7, 4) == "0000";
      if (area == 0 || area == 666 || area >= 900 || group == 0 || serial_zero) return false;
      return !(b1 == '-' && is_digit(b2)) && !(a1 == '-' && is_digit(a2));
    }
    case validator::iban: {
      std::string s;
      for (char c : m) {
        if (c != ' ') s.push_back(c);
      }
      if (s.size() < 15 || s.size() > 34) return false;
      std::rotate(s.begin(), s.begin() + 4, s.end());
      unsigned rem = 0;
      for (char c : s) {
        if (is_digit(c)) {
          rem = (rem * 10 + static_cast<unsigned>(c - '0')) % 97;
        } else {
          rem = (rem * 100 + static_cast<unsigned>(c - 'A' + 10)) % 97;
        }
      }
      return rem == 1;
    }
    case validator::ipv4:
      // 1.2.3.4.5 and 10.0.0.1.2 are not addresses (version strings, OIDs).
      return !(b1 == '.' && is_digit(b2)) && !(a1 == '.' && is_digit(a2));
    case validator::ipv6: {
      if (b1 == ':' || (a1 == ':' && is_hex(a2)) || b1 == '.' || is_alnum(b1) || b1 == '_') return false;
      return count_digits(m) > 0;
    }
    case validator::openai_key:
    case validator::slack_key: {
      // Real keys are random: require digits and both cases (sk-learn-... is not a key).
      const std::string_view body = m.size() > 4 ? m.substr(4) : m;
      const bool d = std::any_of(body.begin(), body.end(), is_digit);
      const bool u = std::any_of(body.begin(), body.end(), is_upper);
      const bool l = std::any_of(body.begin(), body.end(), is_lower);
      return v == validator::slack_key ? d : (d && u && l);
    }
  }
  return false;
}

int priority(action a) noexcept {
  switch (a) {
    case action::block:
      return 0;
    case action::redact:
      return 1;
    case action::flag:
      return 2;
  }
  return 2;
}

std::string escape_word(std::string_view w) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (char c : w) {
    if (is_alnum(c)) {
      out.push_back(c);
    } else {
      const auto u = static_cast<unsigned char>(c);
      out += "\\x";
      out.push_back(hex[u >> 4]);
      out.push_back(hex[u & 15]);
    }
  }
  return out;
}

error make_error(std::size_t index, std::string_view name, std::string_view why) {
  error e;
  e.rule_index = index;
  e.rule_name = std::string(name);
  e.message = "rule '" + std::string(name) + "' (index " + std::to_string(index) + "): " + std::string(why);
  return e;
}

}  // namespace

std::string_view detector_name(detector d) noexcept {
  switch (d) {
    case detector::email:
      return "email";
    case detector::phone:
      return "phone";
    case detector::payment_card:
      return "payment_card";
    case detector::us_ssn:
      return "us_ssn";
    case detector::iban:
      return "iban";
    case detector::ipv4:
      return "ipv4";
    case detector::ipv6:
      return "ipv6";
    case detector::aws_access_key:
      return "aws_access_key";
    case detector::private_key:
      return "private_key";
    case detector::jwt:
      return "jwt";
    case detector::api_key:
      return "api_key";
  }
  return "unknown";
}

std::span<const detector> all_detectors() noexcept { return detector_list; }

rule rule::make_builtin(detector d, action a) { return make_builtin(d, a, std::string(detector_name(d))); }

rule rule::make_builtin(detector d, action a, std::string name) {
  rule r;
  r.type = kind::builtin;
  r.builtin = d;
  r.act = a;
  r.name = std::move(name);
  return r;
}

rule rule::make_regex(std::string name, std::string pattern, action a) {
  rule r;
  r.type = kind::regex;
  r.name = std::move(name);
  r.pattern = std::move(pattern);
  r.act = a;
  return r;
}

rule rule::make_word_list(std::string name, std::vector<std::string> words, action a) {
  rule r;
  r.type = kind::word_list;
  r.name = std::move(name);
  r.words = std::move(words);
  r.act = a;
  return r;
}

rule rule::make_injection(std::string name, std::vector<phrase> phrases, int threshold, action a) {
  rule r;
  r.type = kind::injection;
  r.name = std::move(name);
  r.phrases = std::move(phrases);
  r.threshold = threshold;
  r.act = a;
  return r;
}

std::vector<phrase> builtin_injection_phrases() {
  // Phrases of published prompt-injection and jailbreak attempts. A single strong phrase reaches
  // the default threshold (4); weaker ones need company. Listed in docs/content-filters.md.
  constexpr std::string_view prior = R"((?:all\s+|any\s+|the\s+|of\s+|your\s+)*(?:previous|prior|above|earlier|preceding|former))";
  return {
      {"", "ignore\\s+" + std::string(prior) + "\\s+(?:instructions|prompts?|rules|directions|guidelines)", 4},
      {"", "disregard\\s+" + std::string(prior) + "\\s+(?:instructions|prompts?|rules|directions|guidelines)", 4},
      {"", "forget\\s+(?:everything|all)\\s+(?:you\\s+(?:were|have\\s+been)\\s+told|above|before)", 4},
      {"", "(?:override|bypass)\\s+(?:your|the|all)\\s+(?:instructions|rules|safety|guidelines|filters)", 4},
      {"", "(?:reveal|show|print|repeat|output|leak)\\s+(?:me\\s+)?(?:your|the)\\s+(?:system\\s+prompt|initial\\s+instructions|hidden\\s+instructions)", 3},
      {"", "you\\s+are\\s+now\\s+(?:in\\s+)?(?:developer|jailbreak|jailbroken|unrestricted|god|dan)\\s+mode", 4},
      {"do anything now", "", 3},
      {"developer mode", "", 2},
      {"jailbreak", "", 2},
      {"", "pretend\\s+(?:that\\s+)?(?:you\\s+are|to\\s+be)\\s+(?:an?\\s+)?(?:unrestricted|unfiltered|uncensored|evil)", 3},
      {"", "(?:without|no)\\s+(?:any\\s+)?(?:restrictions|filters|censorship|limitations|guidelines)", 1},
      {"", "(?:new|updated|real)\\s+system\\s+(?:prompt|instructions)", 2},
      {"", "act\\s+as\\s+(?:an?\\s+)?(?:unrestricted|unfiltered|uncensored)", 3},
      {"system prompt", "", 1},
  };
}

std::vector<rule> builtin_rules(action a) {
  std::vector<rule> out;
  for (detector d : detector_list) out.push_back(rule::make_builtin(d, a));
  return out;
}

// ---------------------------------------------------------------------------------------------
// filter_set / compile

filter_set::filter_set(filter_set&& o) noexcept
    : rules_(std::move(o.rules_)),
      patterns_(std::move(o.patterns_)),
      block_dbs_(std::move(o.block_dbs_)),
      stream_dbs_(std::move(o.stream_dbs_)),
      small_dbs_(std::move(o.small_dbs_)),
      max_len_(o.max_len_),
      id_(o.id_),
      live_mask_(std::move(o.live_mask_)) {}

filter_set& filter_set::operator=(filter_set&& o) noexcept {
  if (this != &o) {
    free_databases();
    rules_ = std::move(o.rules_);
    patterns_ = std::move(o.patterns_);
    block_dbs_ = std::exchange(o.block_dbs_, {});
    stream_dbs_ = std::exchange(o.stream_dbs_, {});
    small_dbs_ = std::exchange(o.small_dbs_, {});
    max_len_ = o.max_len_;
    id_ = o.id_;
    live_mask_ = std::move(o.live_mask_);
  }
  return *this;
}

void filter_set::free_databases() noexcept {
  for (hs_database_t* db : block_dbs_) hs_free_database(db);
  for (hs_database_t* db : stream_dbs_) hs_free_database(db);
  for (hs_database_t* db : small_dbs_) hs_free_database(db);
  block_dbs_.clear();
  stream_dbs_.clear();
  small_dbs_.clear();
}

filter_set::~filter_set() { free_databases(); }

result<filter_set> compile(std::span<const rule> rules, const compile_options& options) {
  static std::atomic<std::uint64_t> next_id{1};
  filter_set set;
  set.id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  std::vector<std::string> exprs;
  std::vector<unsigned> flags;
  std::vector<group> groups;
  std::vector<byte_set> reaches;  // distinct reach sets of the streamed patterns
  bool unknown_reach = false;     // a custom regex: its reach is not known, hold the whole horizon
  const auto add_reach = [&](const byte_set& r) {
    if (std::find(reaches.begin(), reaches.end(), r) == reaches.end()) reaches.push_back(r);
  };

  for (std::size_t i = 0; i < rules.size(); ++i) {
    const rule& r = rules[i];
    if (r.name.empty()) return make_error(i, r.name, "empty rule name");
    const auto ri = static_cast<std::uint32_t>(i);
    switch (r.type) {
      case rule::kind::builtin:
        for (const auto& p : builtin_patterns) {
          if (p.det != r.builtin) continue;
          exprs.emplace_back(p.regex);
          flags.push_back(HS_FLAG_SOM_LEFTMOST | p.flags);
          groups.push_back(p.grp);
          byte_set r;
          for (const char* q = p.reach; q[0] != '\0' && q[1] != '\0'; q += 2)
            for (int c = static_cast<unsigned char>(q[0]); c <= static_cast<unsigned char>(q[1]); ++c) r.add(static_cast<unsigned char>(c));
          add_reach(r);
          set.patterns_.push_back({ri, p.check,
                                   static_cast<std::uint32_t>(std::min<std::size_t>(p.width, options.max_match_length)),
                                   p.start});
        }
        break;
      case rule::kind::regex:
        if (r.pattern.empty()) return make_error(i, r.name, "empty pattern");
        exprs.push_back(r.pattern);
        flags.push_back(HS_FLAG_SOM_LEFTMOST);
        groups.push_back(g_custom);
        unknown_reach = true;
        set.patterns_.push_back({ri, validator::none, 0});
        break;
      case rule::kind::injection: {
        if (r.act == action::redact) return make_error(i, r.name, "an injection rule can block or flag, not redact");
        if (r.threshold < 1) return make_error(i, r.name, "threshold must be at least 1");
        const std::vector<phrase> phrases = r.phrases.empty() ? builtin_injection_phrases() : r.phrases;
        for (std::size_t k = 0; k < phrases.size(); ++k) {
          const phrase& ph = phrases[k];
          const std::string where = "phrase " + std::to_string(k) + ": ";
          if (ph.score < 1) return make_error(i, r.name, where + "score must be at least 1");
          if (ph.text.empty() == ph.regex.empty()) return make_error(i, r.name, where + "give exactly one of text or regex");
          std::string expr = ph.regex;
          if (!ph.text.empty()) {
            // Whole words, any whitespace between them.
            std::string words;
            std::size_t pos = 0;
            while (pos < ph.text.size()) {
              while (pos < ph.text.size() && std::isspace(static_cast<unsigned char>(ph.text[pos]))) ++pos;
              std::size_t end = pos;
              while (end < ph.text.size() && !std::isspace(static_cast<unsigned char>(ph.text[end]))) ++end;
              if (end > pos) {
                if (!words.empty()) words += "\\s+";
                words += escape_word(std::string_view(ph.text).substr(pos, end - pos));
              }
              pos = end;
            }
            if (words.empty()) return make_error(i, r.name, where + "empty text");
            const auto word_char = [](char c) { return is_alnum(c) || c == '_'; };
            const std::string t = ph.text.substr(ph.text.find_first_not_of(" \t\r\n"));
            expr = (word_char(t.front()) ? "\\b" : "") + words;
            const std::string tt = ph.text.substr(0, ph.text.find_last_not_of(" \t\r\n") + 1);
            if (word_char(tt.back())) expr += "\\b";
          }
          exprs.push_back(expr);
          flags.push_back(HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH);
          groups.push_back(g_injection);
          pattern_info pi{ri, validator::none, 0};
          pi.score = ph.score;
          set.patterns_.push_back(pi);
        }
        break;
      }
      case rule::kind::word_list: {
        std::string alt;
        for (const auto& w : r.words) {
          if (w.empty()) continue;
          // Whole words: a boundary on each side whose edge character is a word character.
          const auto word_char = [](char c) { return is_alnum(c) || c == '_'; };
          if (!alt.empty()) alt.push_back('|');
          if (word_char(w.front())) alt += "\\b";
          alt += escape_word(w);
          if (word_char(w.back())) alt += "\\b";
        }
        if (alt.empty()) return make_error(i, r.name, "empty word list");
        exprs.push_back("(?:" + alt + ")");
        flags.push_back(HS_FLAG_SOM_LEFTMOST | HS_FLAG_CASELESS);
        groups.push_back(g_custom);
        byte_set reach;  // the words' bytes, in both cases (the match is case-insensitive)
        for (const auto& w : r.words)
          for (char c : w) {
            const auto u = static_cast<unsigned char>(c);
            reach.add(u);
            if (is_lower(c)) reach.add(static_cast<unsigned char>(u - 32));
            if (is_upper(c)) reach.add(static_cast<unsigned char>(u + 32));
          }
        add_reach(reach);
        set.patterns_.push_back({ri, validator::none, 0});
        break;
      }
    }
  }

  // Check each expression alone: precise errors per rule, and its width bound.
  for (std::size_t k = 0; k < exprs.size(); ++k) {
    const std::size_t ri = set.patterns_[k].rule;
    hs_expr_info_t* info = nullptr;
    hs_compile_error_t* err = nullptr;
    if (hs_expression_info(exprs[k].c_str(), flags[k], &info, &err) != HS_SUCCESS) {
      std::string msg = err != nullptr && err->message != nullptr ? err->message : "invalid expression";
      hs_free_compile_error(err);
      return make_error(ri, rules[ri].name, "bad pattern: " + msg);
    }
    unsigned width = info->max_width;
    std::free(info);  // allocated by Hyperscan's default allocator (malloc)
    if (set.patterns_[k].score > 0) continue;  // phrases: block mode only, no width bound needed
    if (set.patterns_[k].clip != 0) width = set.patterns_[k].clip;
    if (width == UINT_MAX || width > options.max_match_length) {
      return make_error(ri, rules[ri].name,
                        "pattern can match more than " + std::to_string(options.max_match_length) +
                            " bytes (bounded-width patterns only)");
    }
    set.max_len_ = std::max<std::size_t>(set.max_len_, width);
  }

  for (const rule& r : rules) set.rules_.push_back(r);
  if (!unknown_reach && !reaches.empty() && reaches.size() <= 32) {
    set.live_mask_.assign(256, 0);
    for (std::size_t i = 0; i < reaches.size(); ++i)
      for (unsigned b = 0; b < 256; ++b)
        if ((reaches[i].bits[b >> 6] >> (b & 63)) & 1) set.live_mask_[b] |= std::uint32_t{1} << i;
  }
  if (exprs.empty()) return set;  // nothing to scan: every text passes

  // Block mode (prompts, whole texts): one database per group. Streaming mode (deltas of a few
  // bytes each): one database of every pattern, because there Hyperscan's fixed cost per call
  // outweighs its scan speed (4-byte pieces: 23 MB/s with one database, 8 MB/s with four).
  const auto compile_one = [&](const std::vector<std::size_t>& members, unsigned mode,
                               std::vector<hs_database_t*>& into) -> std::optional<error> {
    std::vector<const char*> ptrs;
    std::vector<unsigned> mflags;
    std::vector<unsigned> ids;  // global expression index: on_match looks up patterns_[id]
    for (std::size_t k : members) {
      ptrs.push_back(exprs[k].c_str());
      mflags.push_back(flags[k]);
      ids.push_back(static_cast<unsigned>(k));
    }
    const auto n = static_cast<unsigned>(ptrs.size());
    hs_database_t* db = nullptr;
    hs_compile_error_t* err = nullptr;
    if (hs_compile_multi(ptrs.data(), mflags.data(), ids.data(), n, mode, nullptr, &db, &err) != HS_SUCCESS) {
      std::string msg = err != nullptr && err->message != nullptr ? err->message : "compile failed";
      std::size_t ri = 0;
      if (err != nullptr && err->expression >= 0 && static_cast<std::size_t>(err->expression) < n) {
        ri = set.patterns_[ids[static_cast<std::size_t>(err->expression)]].rule;
      }
      hs_free_compile_error(err);
      return make_error(ri, rules.empty() ? "" : rules[ri].name, "bad pattern: " + msg);
    }
    into.push_back(db);
    return std::nullopt;
  };
  std::vector<std::size_t> everything;  // the stream database: all but injection phrases
  std::vector<std::size_t> all;         // the small-text block database: every pattern
  for (unsigned g = 0; g < group_count; ++g) {
    std::vector<std::size_t> members;
    for (std::size_t k = 0; k < exprs.size(); ++k) {
      if (groups[k] == g) members.push_back(k);
    }
    if (members.empty()) continue;
    if (g != g_injection) everything.insert(everything.end(), members.begin(), members.end());
    all.insert(all.end(), members.begin(), members.end());
    if (auto e = compile_one(members, HS_MODE_BLOCK, set.block_dbs_)) return *e;
  }
  if (!everything.empty()) {
    if (auto e = compile_one(everything, HS_MODE_STREAM | HS_MODE_SOM_HORIZON_LARGE, set.stream_dbs_)) return *e;
  }
  if (set.block_dbs_.size() > 1) {
    if (auto e = compile_one(all, HS_MODE_BLOCK, set.small_dbs_)) return *e;
  }
  return set;
}

// ---------------------------------------------------------------------------------------------
// scratch

result<scratch> scratch::create(const filter_set& set) {
  scratch s;
  if (!s.grow(set)) return make_error(0, "", "cannot allocate Hyperscan scratch");
  return s;
}

bool scratch::grow(const filter_set& set) noexcept {
  if (std::find(grown_for_.begin(), grown_for_.end(), set.id_) != grown_for_.end()) return true;
  for (const auto* dbs : {&set.block_dbs_, &set.stream_dbs_, &set.small_dbs_}) {
    for (const hs_database_t* db : *dbs) {
      if (hs_alloc_scratch(db, &s_) != HS_SUCCESS) return false;
    }
  }
  try {
    if (grown_for_.size() >= 64) grown_for_.clear();  // sets of old configs: regrow when seen again
    grown_for_.push_back(set.id_);
  } catch (...) {  // out of memory: the scratch is grown; only the memo is lost
  }
  return true;
}

result<scratch> scratch::clone() const {
  scratch c;
  if (s_ != nullptr && hs_clone_scratch(s_, &c.s_) != HS_SUCCESS) {
    return make_error(0, "", "cannot clone Hyperscan scratch");
  }
  c.grown_for_ = grown_for_;
  return c;
}

scratch::scratch(scratch&& o) noexcept : s_(std::exchange(o.s_, nullptr)), grown_for_(std::move(o.grown_for_)) {}
scratch& scratch::operator=(scratch&& o) noexcept {
  if (this != &o) {
    hs_free_scratch(s_);
    s_ = std::exchange(o.s_, nullptr);
    grown_for_ = std::move(o.grown_for_);
  }
  return *this;
}
scratch::~scratch() { hs_free_scratch(s_); }

// ---------------------------------------------------------------------------------------------
// The resolver shared by block and streaming modes. It works on absolute byte offsets; the text
// is held in `buf_` starting at offset `base_` (the whole text in block mode).

struct stream_engine {
  struct candidate {
    std::uint64_t start;
    std::uint64_t end;
    std::uint32_t pattern;
  };
  struct selection {
    std::uint64_t start;
    std::uint64_t end;
    std::uint32_t rule;
    bool silent = false;  // the rest of a redaction already emitted: dropped without a token
  };

  const filter_set* set_ = nullptr;
  // The worker's scratch object, not its hs_scratch_t: scratch::grow() (a reload whose set needs
  // more space) frees and reallocates the Hyperscan scratch while streams of the old set run on.
  const scratch* scratch_ = nullptr;
  std::vector<hs_stream_t*> streams_;  // one per stream database of the set

  std::string own_;         // streaming: retained text
  std::string_view view_;   // retained text (own_ or the caller's text in block mode)
  std::uint64_t base_ = 0;  // absolute offset of view_[0]
  std::uint64_t total_ = 0; // bytes fed
  bool finished_ = false;
  bool blocked_ = false;
  bool failed_ = false;
  std::uint64_t block_offset_ = 0;

  std::vector<candidate> pending_;  // reported, not yet resolved
  std::uint64_t done_ = 0;          // every candidate starting before done_ is resolved
  std::uint64_t pos_ = 0;           // emitted up to here
  std::uint64_t sel_end_ = 0;       // end of the last selected redaction
  // Selected redactions not yet emitted: selected_[selected_head_] on (a vector: a std::deque
  // allocates on construction, and an engine is made for every prompt and every stream).
  std::vector<selection> selected_;
  std::size_t selected_head_ = 0;
  bool any_selected() const noexcept { return selected_head_ < selected_.size(); }
  const selection& next_selected() const noexcept { return selected_[selected_head_]; }
  void pop_selected() {
    if (++selected_head_ == selected_.size()) {
      selected_.clear();
      selected_head_ = 0;
    } else if (selected_head_ >= 32 && 2 * selected_head_ >= selected_.size()) {
      selected_.erase(selected_.begin(), selected_.begin() + std::ptrdiff_t(selected_head_));
      selected_head_ = 0;
    }
  }
  std::vector<bool> fired_;
  std::vector<int> scores_;  // block mode: per rule, the summed scores of the phrases present
  bool any_redaction_ = false;
  bool after_redaction_ = false;  // emit(): continuation bytes here belong to the redaction's last character
  std::vector<std::size_t> last_of_;  // on_match(): per pattern, where its last candidate went in pending_
  std::size_t peak_ = 0;               // the most candidates pending_ held

  static int on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned, void* ctx) {
    auto* self = static_cast<stream_engine*>(ctx);
    const pattern_info& p = self->set_->patterns_[id];
    if (p.score > 0) {  // an injection phrase (each reported once per scan: HS_FLAG_SINGLEMATCH)
      if (self->scores_.size() < self->set_->rules_.size()) self->scores_.resize(self->set_->rules_.size());
      self->scores_[p.rule] += p.score;
      return 0;
    }
    if (p.clip != 0 && to - from > p.clip) from = to - p.clip;
    if (p.start == start_rule::email_local_part) {
      // Text from `to - clip` on is retained: the hold horizon is at least the clip (max_len_).
      if (from < self->base_ || self->byte_at(from) != '@') return 0;  // clipped: no address
      const std::uint64_t floor = std::max<std::uint64_t>(self->base_, p.clip != 0 && to > p.clip ? to - p.clip : 0);
      std::uint64_t s = from;
      while (s > floor && is_local_char(self->byte_at(s - 1))) --s;
      if (s == from) return 0;  // no local part
      from = s;
    }
    // A redact match of a plain pattern that overlaps the pattern's last candidate joins it: the
    // redaction takes every byte either matched anyway (resolve()), and a permissive custom
    // regex over a long run ([A-Za-z0-9+/]{40,80} on 4 MiB of base64) otherwise made a candidate
    // per byte: ~100 MB per such prompt, held until the scan ended.
    if (p.check == validator::none && p.clip == 0 && p.start == start_rule::as_reported &&
        self->set_->rules_[p.rule].act == action::redact) {
      if (self->last_of_.size() < self->set_->patterns_.size()) self->last_of_.resize(self->set_->patterns_.size(), SIZE_MAX);
      const std::size_t at = self->last_of_[id];
      if (at < self->pending_.size()) {
        candidate& c = self->pending_[at];
        if (c.pattern == id && from < c.end && to > c.start) {
          c.start = std::min<std::uint64_t>(c.start, from);
          c.end = std::max<std::uint64_t>(c.end, to);
          return 0;
        }
      }
      self->last_of_[id] = self->pending_.size();
    }
    self->pending_.push_back({from, to, id});
    self->peak_ = std::max(self->peak_, self->pending_.size());
    return 0;
  }

  static bool is_local_char(char c) noexcept {
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
  }

  void close_streams() noexcept {
    for (hs_stream_t* st : streams_) hs_close_stream(st, nullptr, nullptr, nullptr);
    streams_.clear();
  }

  char byte_at(std::uint64_t off) const noexcept { return view_[static_cast<std::size_t>(off - base_)]; }
  std::string_view slice(std::uint64_t from, std::uint64_t to) const noexcept {
    return view_.substr(static_cast<std::size_t>(from - base_), static_cast<std::size_t>(to - from));
  }
  const rule& rule_of(const candidate& c) const noexcept {
    return set_->rules_[set_->patterns_[c.pattern].rule];
  }

  bool valid(const candidate& c) const noexcept {
    const std::uint64_t b = c.start >= 2 ? c.start - 2 : 0;
    const std::uint64_t a = std::min<std::uint64_t>(c.end + 2, total_);
    return validate(set_->patterns_[c.pattern].check, slice(c.start, c.end), slice(b, c.start),
                    slice(c.end, a));
  }

  void fire(std::uint32_t rule) {
    if (fired_.size() < set_->rules_.size()) fired_.resize(set_->rules_.size());
    fired_[rule] = true;
  }

  // A candidate is final (and validatable) once 2 bytes past its end are known, or at the end.
  std::uint64_t validatable_end() const noexcept {
    return finished_ ? total_ : (total_ >= 2 ? total_ - 2 : 0);
  }

  // Drop invalid block candidates; return true (and set the block point) if a valid one is final.
  bool check_block() {
    const std::uint64_t lim = validatable_end();
    std::uint64_t best_end = UINT64_MAX;
    std::uint64_t best_start = UINT64_MAX;
    std::vector<std::uint32_t> blockers;
    for (std::size_t i = 0; i < pending_.size();) {
      const candidate& c = pending_[i];
      if (rule_of(c).act != action::block || c.end > lim) {
        ++i;
        continue;
      }
      if (!valid(c)) {
        pending_[i] = pending_.back();
        pending_.pop_back();
        continue;
      }
      const std::uint32_t r = set_->patterns_[c.pattern].rule;
      if (c.end < best_end) {
        best_end = c.end;
        best_start = c.start;
        blockers.assign(1, r);
      } else if (c.end == best_end) {
        best_start = std::min(best_start, c.start);
        blockers.push_back(r);
      }
      ++i;
    }
    if (best_end == UINT64_MAX) return false;
    for (std::uint32_t r : blockers) fire(r);
    // Resolve everything that ends by the block point's match end, then cut at its start.
    resolve(best_start, best_end);
    blocked_ = true;
    block_offset_ = best_start;
    return true;
  }

  // Resolve candidates starting before `limit` (and ending at or before `end_cap`).
  void resolve(std::uint64_t limit, std::uint64_t end_cap) {
    std::vector<candidate> batch;
    for (std::size_t i = 0; i < pending_.size();) {
      if (pending_[i].start < limit) {
        if (pending_[i].end <= end_cap) batch.push_back(pending_[i]);
        pending_[i] = pending_.back();
        pending_.pop_back();
      } else {
        ++i;
      }
    }
    std::sort(batch.begin(), batch.end(), [this](const candidate& x, const candidate& y) {
      if (x.start != y.start) return x.start < y.start;
      const rule& rx = rule_of(x);
      const rule& ry = rule_of(y);
      if (priority(rx.act) != priority(ry.act)) return priority(rx.act) < priority(ry.act);
      if (x.end != y.end) return x.end > y.end;
      const auto ix = set_->patterns_[x.pattern].rule;
      const auto iy = set_->patterns_[y.pattern].rule;
      if (ix != iy) return ix < iy;
      return x.pattern < y.pattern;
    });
    for (const candidate& c : batch) {
      const rule& r = rule_of(c);
      if (r.act == action::block) continue;  // valid ones end the stream in check_block()
      if (r.act == action::redact && c.start < sel_end_) {
        // A redact match that overlaps the last redaction and ends past it: the redaction goes
        // on to its end (merged while not emitted, else its rest dropped without a second
        // token). Every byte some redact rule matched is taken out: a clipped pattern's match is
        // reported at each end with its start clipped (a JWT past 512 bytes going on), and a
        // custom regex with an upper bound (`[A-Za-z0-9]{20,40}`) matches a 50-byte token as
        // 0-40 and then, leftmost, 1-41 ... 10-50. Skipping those sent the token's tail (until
        // 2026-11-29 for all but clipped patterns).
        if (c.end <= sel_end_ || !valid(c)) continue;
        const std::uint32_t ri = set_->patterns_[c.pattern].rule;
        fire(ri);
        if (any_selected() && selected_.back().end == sel_end_) selected_.back().end = c.end;
        else selected_.push_back({sel_end_, c.end, ri, true});
        sel_end_ = c.end;
        any_redaction_ = true;
        continue;
      }
      if (r.act == action::flag && c.start < sel_end_ && c.end <= sel_end_) continue;
      if (!valid(c)) continue;
      const std::uint32_t ri = set_->patterns_[c.pattern].rule;
      fire(ri);
      if (r.act == action::redact) {
        // From the start of the character the match begins in: a custom regex works on bytes
        // and may begin or end inside a multi-byte character (its rest is dropped in emit()).
        selected_.push_back({char_start(c.start), c.end, ri});
        sel_end_ = c.end;
        any_redaction_ = true;
      }
    }
    done_ = std::max(done_, limit);
  }

  /// The start of the UTF-8 character byte `x` lies in (at most 3 bytes back, never before the
  /// text emitted or retained).
  std::uint64_t char_start(std::uint64_t x) const noexcept {
    int steps = 0;
    while (x > pos_ && x > base_ && x < total_ && steps < 3 && (static_cast<unsigned char>(byte_at(x)) & 0xC0) == 0x80) {
      --x;
      ++steps;
    }
    return x;
  }

  // Largest offset <= x (and >= pos_) that does not split a UTF-8 character.
  std::uint64_t utf8_floor(std::uint64_t x) const noexcept {
    if (x > total_) return x;
    if (x == total_) {
      if (finished_) return x;
      // The text may end inside a character: cut before its lead byte if it is incomplete.
      std::uint64_t p = x;
      int steps = 0;
      while (p > pos_ && p > base_ && steps < 4) {
        --p;
        ++steps;
        const auto b = static_cast<unsigned char>(byte_at(p));
        if ((b & 0xC0) == 0x80) continue;  // continuation byte
        const int need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
        return static_cast<int>(x - p) < need ? p : x;
      }
      return x;
    }
    int steps = 0;
    while (x > pos_ && steps < 3 && (static_cast<unsigned char>(byte_at(x)) & 0xC0) == 0x80) {
      --x;
      ++steps;
    }
    return x;
  }

  void emit(std::uint64_t limit, std::string& out) {
    while (pos_ < limit) {
      if (any_selected() && next_selected().start == pos_) {
        if (!next_selected().silent) {
          out += "[REDACTED:";
          out += set_->rules_[next_selected().rule].name;
          out += ']';
        }
        pos_ = next_selected().end;
        pop_selected();
        after_redaction_ = true;
        continue;
      }
      std::uint64_t stop = limit;
      if (any_selected()) stop = std::min(stop, next_selected().start);
      // The rest of a character a redaction ended inside goes with it: sent alone, its bytes
      // would be no UTF-8 (and JSON-escaped as U+FFFD, or sent invalid).
      while (after_redaction_ && pos_ < stop && (static_cast<unsigned char>(byte_at(pos_)) & 0xC0) == 0x80) ++pos_;
      if (pos_ < stop) after_redaction_ = false;
      out.append(slice(pos_, stop));
      pos_ = stop;
    }
  }

  // Streaming: after new input, resolve and emit what can no longer change.
  void advance(std::string& out) {
    if (check_block()) {
      emit(utf8_floor(block_offset_), out);
      return;
    }
    if (finished_) {
      resolve(UINT64_MAX, UINT64_MAX);
      emit(total_, out);
      return;
    }
    const std::uint64_t horizon = set_->max_len_ + 2;
    std::uint64_t f = total_ > horizon ? total_ - horizon : 0;
    if (!set_->live_mask_.empty()) {
      // Only the longest run of text ending at the newest byte that lies within some pattern's
      // reach can still be part of a match not reported yet; text before it is final. (No match
      // starts before text already emitted, so the run stops at the retained text's start.)
      const std::uint64_t lim = std::min<std::uint64_t>(horizon, total_ - base_);
      std::uint64_t run = 0;
      std::uint32_t alive = ~std::uint32_t{0};
      while (run < lim) {
        alive &= set_->live_mask_[static_cast<unsigned char>(byte_at(total_ - 1 - run))];
        if (alive == 0) break;
        ++run;
      }
      f = std::max(f, total_ - run);
      // A reported candidate is resolved only once its 2 bytes of context after it are known.
      const std::uint64_t v = validatable_end();
      for (const candidate& c : pending_)
        if (c.end > v) f = std::min(f, c.start);
    }
    if (f == 0) return;
    resolve(f, UINT64_MAX);
    emit(utf8_floor(f), out);
  }

  void trim() {
    std::uint64_t keep = std::min(pos_, done_);
    keep = keep >= 2 ? keep - 2 : 0;
    if (keep > base_) {
      own_.erase(0, static_cast<std::size_t>(keep - base_));
      base_ = keep;
    }
    view_ = own_;
  }
};

namespace {

std::vector<std::string> names_of(const filter_set& set, const std::vector<bool>& fired) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < fired.size(); ++i) {
    if (fired[i]) out.push_back(set.rule_at(i).name);
  }
  return out;
}

}  // namespace

verdict scan_text(const filter_set& set, scratch& s, std::string_view text) {
  verdict v;
  stream_engine e;
  e.set_ = &set;
  e.view_ = text;
  e.total_ = text.size();
  e.finished_ = true;
  const auto& dbs = text.size() < filter_set::small_text && !set.small_dbs_.empty() ? set.small_dbs_ : set.block_dbs_;
  for (const hs_database_t* db : dbs) {
    if (hs_scan(db, text.data(), static_cast<unsigned>(text.size()), 0, s.s_, &stream_engine::on_match, &e) !=
        HS_SUCCESS) {
      v.scan_failed = true;
      v.blocked = true;
      return v;
    }
  }
  v.peak_candidates = e.peak_;  // (all found by now: what follows only resolves them)
  // Injection rules: a score at or above the threshold fires the rule; a block stops the whole text.
  bool injection_block = false;
  for (std::size_t r = 0; r < e.scores_.size(); ++r) {
    if (e.scores_[r] <= 0 || e.scores_[r] < set.rules_[r].threshold) continue;
    e.fire(static_cast<std::uint32_t>(r));
    injection_block |= set.rules_[r].act == action::block;
  }
  if (injection_block) {
    if (!e.check_block()) e.resolve(UINT64_MAX, UINT64_MAX);  // other rules that fired are reported too
    v.blocked = true;
    v.block_offset = 0;
    v.redacted_text = std::string();
    v.rules = names_of(set, e.fired_);
    return v;
  }
  if (e.pending_.empty()) {
    v.rules = names_of(set, e.fired_);
    return v;
  }
  std::string out;
  if (e.check_block()) {
    v.blocked = true;
    v.block_offset = static_cast<std::size_t>(e.block_offset_);
    e.emit(e.utf8_floor(e.block_offset_), out);
    v.redacted_text = std::move(out);
  } else {
    e.resolve(UINT64_MAX, UINT64_MAX);
    if (e.any_redaction_) {
      e.emit(e.total_, out);
      v.redacted_text = std::move(out);
    }
  }
  v.rules = names_of(set, e.fired_);
  return v;
}

// ---------------------------------------------------------------------------------------------
// stream_filter

result<stream_filter> stream_filter::create(const filter_set& set, scratch& s) {
  stream_filter f;
  f.e_ = std::make_unique<stream_engine>();
  f.e_->set_ = &set;
  f.e_->scratch_ = &s;
  for (const hs_database_t* db : set.stream_dbs_) {
    hs_stream_t* st = nullptr;
    if (hs_open_stream(db, 0, &st) != HS_SUCCESS) return make_error(0, "", "cannot open Hyperscan stream");
    f.e_->streams_.push_back(st);
  }
  return f;
}

chunk_result stream_filter::feed(std::string_view piece) {
  chunk_result r;
  stream_engine& e = *e_;
  if (e.blocked_ || e.finished_) {
    r.blocked = e.blocked_;
    return r;
  }
  e.own_.append(piece);
  e.view_ = e.own_;
  e.total_ += piece.size();
  for (hs_stream_t* st : e.streams_) {
    if (!piece.empty() && hs_scan_stream(st, piece.data(), static_cast<unsigned>(piece.size()), 0, e.scratch_->s_,
                                         &stream_engine::on_match, &e) != HS_SUCCESS) {
      e.blocked_ = e.failed_ = true;  // fail closed
      r.blocked = true;
      return r;
    }
  }
  e.advance(r.text);
  r.blocked = e.blocked_;
  if (!e.blocked_) e.trim();
  return r;
}

chunk_result stream_filter::finish() {
  chunk_result r;
  stream_engine& e = *e_;
  if (e.blocked_ || e.finished_) {
    r.blocked = e.blocked_;
    return r;
  }
  bool failed = false;
  for (hs_stream_t* st : e.streams_) {
    failed |= hs_close_stream(st, e.scratch_->s_, &stream_engine::on_match, &e) != HS_SUCCESS;
  }
  e.streams_.clear();
  if (failed) {
    e.blocked_ = e.failed_ = true;
    r.blocked = true;
    return r;
  }
  e.finished_ = true;
  e.advance(r.text);
  r.blocked = e.blocked_;
  return r;
}

bool stream_filter::blocked() const noexcept { return e_ != nullptr && e_->blocked_; }

std::vector<std::string> stream_filter::fired_rules() const {
  if (e_ == nullptr) return {};
  return names_of(*e_->set_, e_->fired_);
}

std::size_t stream_filter::held_back() const noexcept {
  if (e_ == nullptr || e_->blocked_ || e_->finished_) return 0;
  return static_cast<std::size_t>(e_->total_ - e_->pos_);
}

stream_filter::stream_filter(stream_filter&&) noexcept = default;
stream_filter& stream_filter::operator=(stream_filter&& o) noexcept {
  if (this != &o) {
    if (e_ != nullptr) e_->close_streams();
    e_ = std::move(o.e_);
  }
  return *this;
}
stream_filter::~stream_filter() {
  if (e_ != nullptr) e_->close_streams();
}

}  // namespace tollgate::policy::content_filter
