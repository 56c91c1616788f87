// SPDX-License-Identifier: Apache-2.0
#include "gateway/content_filters.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <set>

#include "gateway/core/error.hpp"
#include "gateway/core/json_out.hpp"
#include "gateway/core/swar.hpp"
#include "gateway/metrics.hpp"

namespace tollgate::gateway {
namespace json = boost::json;

namespace {

/// "a,b,c" of the sorted names: the key of one compiled selection.
std::string key_of(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string k;
  for (auto& n : names) (k += n) += ',';
  return k;
}

/// Calls `fn` on every prompt text of a request body: each message's string content or text
/// parts, a predicted output (`prediction.content`, the same shapes), each tool's description
/// (the model reads it), and an embeddings input (string or array). `Obj` is json::object,
/// const or not.
template <class Obj, class Fn>
void visit_prompt_texts(Obj& body, Fn&& fn) {
  auto content_of = [&fn](auto* content) {
    if (!content) return;
    if (content->is_string()) fn(*content);
    else if (content->is_array())
      for (auto& part : content->get_array())
        if (auto* t = part.is_object() ? part.get_object().if_contains("text") : nullptr) fn(*t);
  };
  if (auto* msgs = body.if_contains("messages"); msgs && msgs->is_array())
    for (auto& m : msgs->get_array()) content_of(m.is_object() ? m.get_object().if_contains("content") : nullptr);
  if (auto* pred = body.if_contains("prediction"); pred && pred->is_object())
    content_of(pred->get_object().if_contains("content"));
  if (auto* tools = body.if_contains("tools"); tools && tools->is_array())
    for (auto& t : tools->get_array()) {
      auto* function = t.is_object() ? t.get_object().if_contains("function") : nullptr;
      if (auto* d = function && function->is_object() ? function->get_object().if_contains("description") : nullptr) fn(*d);
    }
  if (auto* in = body.if_contains("input")) {
    if (in->is_string()) fn(*in);
    else if (in->is_array())
      for (auto& e : in->get_array()) fn(e);
  }
}

/// Calls `fn(choice, content)` for each object of a chat.completion's `choices` (content: its
/// message's `content`, or nullptr when there is none).
template <class Fn>
void visit_answer_contents(json::value& choices, Fn&& fn) {
  if (!choices.is_array()) return;
  for (auto& c : choices.get_array()) {
    if (!c.is_object()) continue;
    auto* msg = c.get_object().if_contains("message");
    fn(c.get_object(), msg && msg->is_object() ? msg->get_object().if_contains("content") : nullptr);
  }
}

}  // namespace

std::shared_ptr<const content_filters> content_filters::compile(const config::gateway_config& cfg, std::string& error) {
  const auto& c = cfg.content_filters;
  if (c.rules.empty() && !c.moderation) return nullptr;
  auto out = std::make_shared<content_filters>();
  if (c.moderation) {
    out->moderation_ = moderation_target::make(cfg, error);
    if (!error.empty()) return nullptr;
    out->actions_["moderation"] = c.moderation->action;
  }
  std::map<std::string, cf::rule> by_name;
  std::vector<std::string> all;
  std::set<std::string> injection;  // prompt-injection rules: prompts only
  for (std::size_t i = 0; i < c.rules.size(); ++i) {
    const auto& r = c.rules[i];
    const std::string path = "content_filters.rules[" + std::to_string(i) + "]";
    const cf::action a = r.action == "block" ? cf::action::block : r.action == "flag" ? cf::action::flag : cf::action::redact;
    cf::rule rule;
    if (!r.detector.empty()) {
      const cf::detector* d = nullptr;
      std::string known;
      for (const auto& x : cf::all_detectors()) {
        if (cf::detector_name(x) == r.detector) d = &x;
        known += (known.empty() ? "" : ", ") + std::string(cf::detector_name(x));
      }
      if (!d) {
        error = path + ".detector: unknown detector '" + r.detector + "' (expected one of " + known + ")";
        return nullptr;
      }
      rule = cf::rule::make_builtin(*d, a, r.name);
    } else if (!r.regex.empty()) {
      rule = cf::rule::make_regex(r.name, r.regex, a);
    } else if (r.injection) {
      std::vector<cf::phrase> phrases;
      for (const auto& ph : r.injection->phrases) phrases.push_back({ph.text, ph.regex, ph.score});
      rule = cf::rule::make_injection(r.name, std::move(phrases), r.injection->threshold, a);
      injection.insert(r.name);
    } else {
      rule = cf::rule::make_word_list(r.name, r.words, a);
    }
    if (!by_name.emplace(r.name, rule).second) {
      error = path + ".name: duplicate rule name '" + r.name + "'";
      return nullptr;
    }
    out->actions_[r.name] = r.action;
    all.push_back(r.name);
  }
  std::vector<std::string> all_responses;
  for (auto& n : all)
    if (!injection.count(n)) all_responses.push_back(n);
  // One compiled set per distinct list of rules (the default ones, each team's, each route's and
  // each union of a team's and a route's).
  auto set_for = [&](const std::vector<std::string>& names) -> const cf::filter_set* {
    if (names.empty()) return nullptr;
    const std::string k = key_of(names);
    if (auto it = out->sets_.find(k); it != out->sets_.end()) return it->second.get();
    std::vector<cf::rule> rules;
    for (auto& n : names) rules.push_back(by_name.at(n));
    auto set = cf::compile(rules, cf::compile_options{c.max_match_bytes});
    if (!set) {
      error = "content_filters.rules: " + set.error().message;
      return nullptr;
    }
    auto p = std::make_unique<cf::filter_set>(std::move(*set));
    auto* raw = p.get();
    out->sets_.emplace(k, std::move(p));
    return raw;
  };
  // Checks the names of one explicit list (unknown rules; injection rules listed for responses).
  auto check = [&](const std::vector<std::string>& names, const std::string& where, bool responses) {
    for (auto& n : names) {
      if (!by_name.count(n)) {
        error = where + ": unknown rule '" + n + "'";
        return false;
      }
      if (responses && injection.count(n)) {
        error = where + ": rule '" + n + "' is a prompt-injection rule; it applies to prompts only";
        return false;
      }
    }
    return true;
  };
  if (c.apply.prompts && !check(*c.apply.prompts, "content_filters.prompts", false)) return nullptr;
  if (c.apply.responses && !check(*c.apply.responses, "content_filters.responses", true)) return nullptr;
  const std::vector<std::string> default_prompts = c.apply.prompts ? *c.apply.prompts : all;
  const std::vector<std::string> default_responses = c.apply.responses ? *c.apply.responses : all_responses;

  // A direction's rules: the union of the explicit lists of the team and the route; with
  // neither, the default.
  using list = std::optional<std::vector<std::string>>;
  auto names_of = [](const list& a, const list& b, const std::vector<std::string>& fallback) {
    if (!a && !b) return fallback;
    std::vector<std::string> u = a ? *a : std::vector<std::string>{};
    if (b) u.insert(u.end(), b->begin(), b->end());
    return u;
  };
  auto resolve = [&](const config::filter_selection* team, const config::filter_selection* route) {
    const list none;
    const list& tp = team ? team->prompts : none;
    const list& tr = team ? team->responses : none;
    const list& rp = route ? route->prompts : none;
    const list& rr = route ? route->responses : none;
    std::pair<const cf::filter_set*, const cf::filter_set*> sel;
    sel.first = set_for(names_of(tp, rp, default_prompts));
    if (error.empty()) sel.second = set_for(names_of(tr, rr, default_responses));
    return sel;
  };
  out->default_ = resolve(nullptr, nullptr);
  if (!error.empty()) return nullptr;
  std::vector<std::pair<std::string, const config::filter_selection*>> teams, routes;
  for (std::size_t i = 0; i < cfg.teams.size(); ++i) {
    const auto& t = cfg.teams[i];
    if (!t.content_filters) continue;
    const std::string tp = "teams[" + std::to_string(i) + "].content_filters";
    if (t.content_filters->prompts && !check(*t.content_filters->prompts, tp + ".prompts", false)) return nullptr;
    if (t.content_filters->responses && !check(*t.content_filters->responses, tp + ".responses", true)) return nullptr;
    teams.emplace_back(t.name, &*t.content_filters);
    out->teams_[t.name] = resolve(&*t.content_filters, nullptr);
    if (!error.empty()) return nullptr;
  }
  for (std::size_t i = 0; i < cfg.models.size(); ++i) {
    const auto& m = cfg.models[i];
    if (!m.content_filters) continue;
    const std::string mp = "models[" + std::to_string(i) + "].content_filters";
    if (m.content_filters->prompts && !check(*m.content_filters->prompts, mp + ".prompts", false)) return nullptr;
    if (m.content_filters->responses && !check(*m.content_filters->responses, mp + ".responses", true)) return nullptr;
    routes.emplace_back(m.name, &*m.content_filters);
    out->routes_[m.name] = resolve(nullptr, &*m.content_filters);
    if (!error.empty()) return nullptr;
  }
  for (auto& [team, ts] : teams) {
    for (auto& [route, rs] : routes) {
      out->both_[team][route] = resolve(ts, rs);
      if (!error.empty()) return nullptr;
    }
  }
  if (c.moderation && c.moderation->responses) {
    // Streams are moderated through the rewriter: give every selection a set, if only an empty one.
    auto set = cf::compile(std::vector<cf::rule>{});
    if (!set) {
      error = "content_filters: " + set.error().message;
      return nullptr;
    }
    out->empty_.emplace(std::move(*set));
    const cf::filter_set* e = &*out->empty_;
    auto fill = [e](pair_t& p) {
      if (!p.second) p.second = e;
    };
    fill(out->default_);
    for (auto& [_, p] : out->teams_) fill(p);
    for (auto& [_, p] : out->routes_) fill(p);
    for (auto& [_, m] : out->both_)
      for (auto& [__, p] : m) fill(p);
  }
  return out;
}

const std::pair<const cf::filter_set*, const cf::filter_set*>& content_filters::selection(std::string_view team,
                                                                                       std::string_view route) const {
  const auto t = teams_.find(team);
  const auto r = routes_.find(route);
  if (t == teams_.end() && r == routes_.end()) return default_;
  if (r == routes_.end()) return t->second;
  if (t == teams_.end()) return r->second;
  return both_.find(team)->second.find(route)->second;
}

const cf::filter_set* content_filters::prompts_for(std::string_view team, std::string_view route) const {
  return selection(team, route).first;
}

const cf::filter_set* content_filters::responses_for(std::string_view team, std::string_view route) const {
  return selection(team, route).second;
}

std::string_view content_filters::action_of(std::string_view rule) const {
  auto it = actions_.find(rule);
  return it == actions_.end() ? std::string_view("flag") : std::string_view(it->second);
}

std::string joined_rules(const std::vector<std::string>& rules) {
  std::string out;
  for (auto& r : rules) out += (out.empty() ? "" : ", ") + r;
  return out;
}

void record_filter_actions(request_context& ctx, const content_filters& f, const std::vector<std::string>& rules,
                           std::string_view direction) {
  auto& m = gateway_metrics::get().filter_actions;
  for (auto& r : rules) {
    const std::string entry = r + ":" + std::string(f.action_of(r)) + ":" + std::string(direction);
    if (std::find(ctx.filter_actions.begin(), ctx.filter_actions.end(), entry) != ctx.filter_actions.end()) continue;
    ctx.filter_actions.push_back(entry);
    m.counter({r, f.action_of(r), direction}).inc();
  }
}

std::vector<std::string> filter_prompt(request_context& ctx, const content_filters& f, const cf::filter_set& set,
                                       cf::scratch& s) {
  std::vector<std::string> blocked_by;
  std::vector<std::string> fired;
  auto check = [&](json::value& v) {
    if (!v.is_string()) return;
    auto verdict = cf::scan_text(set, s, v.get_string());
    for (auto& r : verdict.rules)
      if (std::find(fired.begin(), fired.end(), r) == fired.end()) fired.push_back(r);
    if (verdict.blocked) {
      for (auto& r : verdict.rules)
        if (f.action_of(r) == "block" && std::find(blocked_by.begin(), blocked_by.end(), r) == blocked_by.end())
          blocked_by.push_back(r);
      if (blocked_by.empty()) blocked_by.push_back("content_filter");  // a failed scan fails closed
      return;
    }
    if (verdict.redacted_text) v = json::string(*verdict.redacted_text);
  };
  visit_prompt_texts(ctx.request_json, check);
  // A message's text parts reach the model one after the other: a match split across them ("AKIA"
  // in one part, the rest of the key in the next) is found in their joined text (as redacted
  // above). A block blocks; a redaction that only the joined text shows cannot be made in the
  // parts, so it refuses the request too (rather than send the match upstream).
  if (auto* msgs = ctx.request_json.if_contains("messages"); msgs && msgs->is_array() && blocked_by.empty()) {
    for (auto& m : msgs->get_array()) {
      auto* content = m.is_object() ? m.get_object().if_contains("content") : nullptr;
      if (!content || !content->is_array()) continue;
      std::string joined;
      int parts = 0;
      for (auto& part : content->get_array())
        if (auto* t = part.is_object() ? part.get_object().if_contains("text") : nullptr; t && t->is_string()) {
          joined += t->get_string();
          ++parts;
        }
      if (parts < 2) continue;
      auto verdict = cf::scan_text(set, s, joined);
      if (!verdict.blocked && !verdict.redacted_text) continue;
      for (auto& r : verdict.rules) {
        if (std::find(fired.begin(), fired.end(), r) == fired.end()) fired.push_back(r);
        if (f.action_of(r) != "flag" && std::find(blocked_by.begin(), blocked_by.end(), r) == blocked_by.end())
          blocked_by.push_back(r);
      }
      if (blocked_by.empty()) blocked_by.push_back("content_filter");  // a failed scan fails closed
    }
  }
  record_filter_actions(ctx, f, fired, "prompt");
  return blocked_by;
}

std::optional<std::string> filter_answer(request_context& ctx, const content_filters& f, const cf::filter_set& set,
                                         cf::scratch& s, std::string body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  auto* choices = v.get_object().if_contains("choices");
  if (!choices || !choices->is_array()) return std::nullopt;
  bool changed = false, unreadable = false;
  std::vector<std::string> fired;
  visit_answer_contents(*choices, [&](json::object& c, json::value* content) {
    // Text in a shape the filters cannot read (parts, not a string) is not sent.
    auto* msg = c.if_contains("message");
    json::value* keys[2] = {nullptr, nullptr};  // reasoning_content, reasoning
    if (msg && msg->is_object()) {
      keys[0] = msg->get_object().if_contains("reasoning_content");
      keys[1] = msg->get_object().if_contains("reasoning");
    }
    for (json::value* t : {content, keys[0], keys[1]})
      if (t && !t->is_string() && !t->is_null()) unreadable = true;
    if (unreadable) return;
    // The reasoning text first (reasoning_content, or reasoning): a block in it withholds the
    // content too, as a stream's would. vLLM sends it under both keys (kept in sync): the same
    // text is filtered once and both keys get the result.
    json::value* filtered = nullptr;
    std::string original;
    for (json::value* rv : keys) {
      if (!rv || !rv->is_string()) continue;
      if (filtered && std::string_view(rv->get_string()) == original) {
        *rv = *filtered;
        continue;
      }
      original = rv->get_string();
      filtered = rv;
      auto rverdict = cf::scan_text(set, s, rv->get_string());
      fired.insert(fired.end(), rverdict.rules.begin(), rverdict.rules.end());
      if (!rverdict.blocked && !rverdict.redacted_text) continue;
      *rv = json::string(rverdict.redacted_text ? *rverdict.redacted_text : std::string());
      changed = true;
      if (rverdict.blocked) {
        for (json::value* other : keys)
          if (other && other != rv && other->is_string()) *other = *rv;
        if (content && content->is_string()) *content = "";
        c["finish_reason"] = "content_filter";
        if (auto* lp = c.if_contains("logprobs"); lp && !lp->is_null()) *lp = nullptr;
        return;
      }
    }
    if (!content || !content->is_string()) return;
    auto verdict = cf::scan_text(set, s, content->get_string());
    fired.insert(fired.end(), verdict.rules.begin(), verdict.rules.end());
    if (!verdict.blocked && !verdict.redacted_text) return;
    // The safe part before the blocking match and the reason the answer stopped, or the
    // redacted text; its log probabilities would carry the tokens of the text taken out.
    *content = json::string(verdict.redacted_text ? *verdict.redacted_text : std::string());
    if (verdict.blocked) c["finish_reason"] = "content_filter";
    if (auto* lp = c.if_contains("logprobs"); lp && !lp->is_null()) *lp = nullptr;
    changed = true;
  });
  if (unreadable) return std::nullopt;
  record_filter_actions(ctx, f, fired, "response");
  return changed ? json::serialize(v) : body;
}

std::vector<std::string> answer_texts(std::string_view body) {
  std::vector<std::string> out;
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  auto* choices = !ec && v.is_object() ? v.get_object().if_contains("choices") : nullptr;
  if (!choices) return out;
  visit_answer_contents(*choices, [&](json::object&, json::value* content) {
    if (content && content->is_string() && !content->get_string().empty()) out.emplace_back(content->get_string());
  });
  return out;
}

std::string withhold_answer(std::string body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  auto* choices = !ec && v.is_object() ? v.get_object().if_contains("choices") : nullptr;
  if (!choices) return body;
  visit_answer_contents(*choices, [&](json::object& c, json::value* content) {
    if (content) *content = "";
    c["finish_reason"] = "content_filter";
  });
  return json::serialize(v);
}

stream_rewriter::stream_rewriter(request_context& ctx, const content_filters& f, const cf::filter_set& set,
                                 cf::scratch& s)
    : ctx_(ctx), f_(f), set_(set), scratch_(s), multi_(ctx.choices > 1) {
  if (auto sf = cf::stream_filter::create(set, s)) filter_.emplace(std::move(*sf));
}

stream_rewriter::choice_ref stream_rewriter::choice(std::uint64_t index) {
  if (index == 0) return {filter_ ? &*filter_ : nullptr, &finished_, &reasoning_};
  if (index >= ctx_.choices) return {};  // an answer the request did not ask for
  if (more_.size() < index) more_.resize(static_cast<std::size_t>(index));
  auto& m = more_[static_cast<std::size_t>(index - 1)];
  if (!m.filter)
    if (auto sf = cf::stream_filter::create(set_, scratch_)) m.filter.emplace(std::move(*sf));
  return {m.filter ? &*m.filter : nullptr, &m.finished, &m.reasoning};
}

bool stream_rewriter::end_reasoning(reasoning_state& r, std::uint64_t index, json::value* in_chunk, std::string& out) {
  if (!r.pending()) return true;
  r.finished = true;
  auto rest = r.filter->finish();
  if (rest.blocked) return false;
  if (rest.text.empty()) return true;
  if (in_chunk != nullptr) *in_chunk = json::string(std::string(in_chunk->get_string()) + rest.text);
  else if (r.as_reasoning && !r.as_content) content_chunk(out, rest.text, index, "reasoning");
  else content_chunk(out, rest.text, index, "reasoning_content", r.as_reasoning ? "reasoning" : "");
  return true;
}

std::vector<std::string> stream_rewriter::fired_rules() const {
  std::vector<std::string> all;
  auto add = [&all](const std::optional<cf::stream_filter>& f) {
    if (!f) return;
    for (auto& r : f->fired_rules())
      if (std::find(all.begin(), all.end(), r) == all.end()) all.push_back(std::move(r));
  };
  add(filter_);
  add(reasoning_.filter);
  for (const auto& m : more_) {
    add(m.filter);
    add(m.reasoning.filter);
  }
  return all;
}

void stream_rewriter::record_rules() { record_filter_actions(ctx_, f_, fired_rules(), "response"); }

void stream_rewriter::on_event(std::string_view name, std::string_view data, std::string& out) {
  if (!name.empty()) {  // error events and the like pass through as they are
    flush_batch(out);
    if (!blocked_) out += sse::format_event(name, data);
    return;
  }
  // Runs of common text chunks are batched (one scan each run); the rest is parsed whole.
  if (filter_ && !finished_ && !multi_ && data != "[DONE]" && in_place(data, out)) return;
  on_data(data, out);
}

std::string stream_rewriter::process(std::string_view sse_bytes) {
  std::string out;
  if (blocked_) return out;
  // About what goes out (the text held back, sent at the end in a chunk of its own, included):
  // appends without reallocation.
  out.reserve(sse_bytes.size() + 512);
  // The translator writes whole events of one data line each ("data: <json>\n\n", or with an
  // "event: <name>" line before it): those are read in place, without the parser's copies.
  // Anything else, and everything after it, goes through the parser (which then holds the rest).
  std::size_t pos = 0;
  while (pos < sse_bytes.size() && parser_.buffered() == 0 && !blocked_) {
    if (const std::size_t size = common_event(sse_bytes.substr(pos))) {  // most events of a stream
      pos += size;
      continue;
    }
    const std::size_t first_nl = sse_bytes.find('\n', pos);  // memchr
    std::size_t end = first_nl;  // the blank line ending the event
    while (end != std::string_view::npos && end + 1 < sse_bytes.size() && sse_bytes[end + 1] != '\n')
      end = sse_bytes.find('\n', end + 1);
    if (end == std::string_view::npos || end + 1 >= sse_bytes.size()) break;
    std::string_view ev = sse_bytes.substr(pos, end - pos);
    std::string_view name;
    bool one_line = end == first_nl;  // the common event: its data line is all of it
    if (ev.size() >= 7 && std::memcmp(ev.data(), "event: ", 7) == 0) {  // (memcmp of a constant size: inlined)
      if (one_line) break;
      const std::size_t nl = first_nl - pos;
      name = ev.substr(7, nl - 7);
      ev.remove_prefix(nl + 1);
      if (name.empty() || name.find('\r') != std::string_view::npos) break;
      one_line = ev.find('\n') == std::string_view::npos;
    }
    if (!one_line || ev.size() < 6 || std::memcmp(ev.data(), "data: ", 6) != 0) break;
    event_ = sse_bytes.substr(pos, end + 2 - pos);
    // (Separate memchr scans: find_first_of calls memchr once per byte of the event.)
    if (ev.find('\r') != std::string_view::npos) break;
    on_event(name, ev.substr(6), out);
    pos = end + 2;
  }
  event_ = {};  // (events from the parser are not in the caller's bytes)
  if (pos < sse_bytes.size() && !blocked_) {
    events_.clear();
    const bool ok = parser_.feed(sse_bytes.substr(pos), events_);
    for (auto& ev : events_) {
      if (blocked_) break;
      on_event(ev.name, ev.data, out);
    }
    if (!ok && !blocked_) {
      // An event past the parser's limit cannot be filtered: the stream ends there (fail closed),
      // after the events completed before it, rather than pass unchecked text.
      flush_batch(out);
      if (!blocked_) end_stream(out, "upstream_error", "The upstream stream sent an event too large to filter.");
      return out;
    }
  }
  flush_batch(out);
  return out;
}

void stream_rewriter::content_chunk(std::string& s, std::string_view text, std::uint64_t index,
                                    std::string_view key, std::string_view key2) const {
  s.reserve(s.size() + 160 + id_.size() + model_.size() + text.size());
  s += "data: {\"id\":";
  json_out::string(s, id_);
  s += ",\"object\":\"chat.completion.chunk\",\"created\":";
  s += std::to_string(created_);
  s += ",\"model\":";
  json_out::string(s, model_);
  s += ",\"choices\":[{\"index\":";
  s += std::to_string(index);
  s += ",\"delta\":{\"";
  s += key;
  s += "\":";
  json_out::string(s, text);
  if (!key2.empty()) {
    s += ",\"";
    s += key2;
    s += "\":";
    json_out::string(s, text);
  }
  s += "},\"finish_reason\":null}]}\n\n";
}

void stream_rewriter::flush(std::string& out) {
  // (Not after a block: a block found in the batch before the finish chunk ended the stream.)
  if (finished_ || !filter_ || blocked_) return;
  if (!end_reasoning(reasoning_, 0, nullptr, out)) {
    end_blocked(out);
    return;
  }
  finished_ = true;
  auto r = filter_->finish();
  sent(r.text);
  if (!r.text.empty()) content_chunk(out, r.text);
  if (r.blocked) end_blocked(out);
}

void stream_rewriter::flush_all(std::string& out) {
  flush(out);
  for (std::size_t i = 0; i < more_.size() && !blocked_; ++i) {
    auto& m = more_[i];
    if (m.finished || !m.filter) continue;
    if (!end_reasoning(m.reasoning, i + 1, nullptr, out)) {
      end_blocked(out);
      return;
    }
    m.finished = true;
    auto r = m.filter->finish();
    sent(r.text);
    if (!r.text.empty()) content_chunk(out, r.text, i + 1);
    if (r.blocked) end_blocked(out);
  }
}

void stream_rewriter::sent(std::string_view text) {
  if (ctx_.capture_text) emitted_ += text;
  if (track_) tracked_ += text;
}

void stream_rewriter::end_blocked(std::string& out) {
  std::vector<std::string> block_rules;
  const auto fired = fired_rules();
  for (auto& r : fired)
    if (f_.action_of(r) == "block") block_rules.push_back(r);
  if (block_rules.empty()) block_rules.push_back("content_filter");  // a failed scan fails closed
  record_filter_actions(ctx_, f_, fired, "response");
  end_stream(out, "content_filtered", "The response was blocked by content filter rules: " + joined_rules(block_rules) + ".");
}

void stream_rewriter::end_stream(std::string& out, std::string_view code, const std::string& message) {
  blocked_ = true;
  record_rules();  // (a redaction sent before the end is on the record however the stream ends)
  json::object c{{"id", id_}, {"object", "chat.completion.chunk"}, {"created", created_}, {"model", model_}};
  // Every answer still open ends here (one, unless the request asked for several).
  json::array ended;
  for (std::uint64_t i = 0; i < std::max(1u, ctx_.choices); ++i) {
    const bool done = i == 0 ? finished_ : i - 1 < more_.size() && more_[std::size_t(i - 1)].finished;
    if (!done || (i == 0 && !multi_))
      ended.push_back(json::object{{"index", i}, {"delta", json::object{}}, {"finish_reason", "content_filter"}});
  }
  if (ended.empty())
    ended.push_back(json::object{{"index", 0}, {"delta", json::object{}}, {"finish_reason", "content_filter"}});
  c["choices"] = std::move(ended);
  out += sse::format_data(json::serialize(c));
  const bool refused = code == "content_filtered";  // else the gateway or a service failed
  out += sse::format_event("error", openai_error_body(message, refused ? "invalid_request_error" : "server_error", "", code));
  out += "data: [DONE]\n\n";
  ctx_.details = std::string(code);
  ctx_.error_code = std::string(code);
}

std::string stream_rewriter::end_by_moderation(std::string_view code, const std::string& message) {
  std::string out;  // (also after a local block: the caller drops that end, which was held)
  end_stream(out, code, message);
  return out;
}

std::vector<std::string> prompt_texts(const request_context& ctx) {
  std::vector<std::string> out;
  visit_prompt_texts(ctx.request_json, [&](const json::value& v) {
    if (v.is_string() && !v.get_string().empty()) out.emplace_back(v.get_string());
  });
  return out;
}

namespace {

/// `needle` in `d` from `from` on (std::string_view::find stops at every '"' of a JSON text to
/// compare, which profiled as a fifth of the filtered relay; glibc's memmem set-up per call cost
/// more than its search in these short texts).
std::size_t find_in(std::string_view d, std::string_view needle, std::size_t from = 0) {
  return swar::find(d, needle, from);
}

enum class chunk_shape { no_text, text, other };

constexpr std::string_view content_key = "\"content\":";
constexpr std::string_view content_name = "\"content\"";  ///< the key however it is spaced
constexpr std::string_view delta_key = "\"delta\":{";
constexpr std::string_view finish_key = "\"finish_reason\":";
constexpr std::string_view data_field = "data: ";
constexpr std::string_view event_end = "\n\n";

/// The end (past the closing quote) of the JSON string literal whose opening quote is at `b`, or
/// npos; `escaped`: whether it holds a backslash escape.
std::size_t string_literal_end(std::string_view d, std::size_t b, bool* escaped = nullptr) {
  const char* const begin = d.data();
  const char* const end = begin + d.size();
  const char* p = begin + b + 1;
  for (;;) {  // (memchr twice per literal: most have no escape, and the text is short)
    const auto* q = static_cast<const char*>(std::memchr(p, '"', std::size_t(end - p)));
    if (q == nullptr) return std::string_view::npos;
    const auto* bs = static_cast<const char*>(std::memchr(p, '\\', std::size_t(q - p)));
    if (bs == nullptr) return std::size_t(q + 1 - begin);
    if (escaped) *escaped = true;
    p = bs + 2;  // past the escaped character
    if (p > end) return std::string_view::npos;
  }
}

/// The value of the first `key` (`"name":"`) when it is a string without escapes.
bool plain_string_field(std::string_view d, std::string_view key, std::string& out) {
  const std::size_t k = find_in(d, key);
  if (k == std::string_view::npos) return false;
  const std::size_t b = k + key.size();
  const std::size_t e = d.find('"', b);
  if (e == std::string_view::npos || d.substr(b, e - b).find('\\') != std::string_view::npos) return false;
  out.assign(d.substr(b, e - b));
  return !out.empty();
}

/// The value of the first `key` (`"name":`) when it is an integer.
bool integer_field(std::string_view d, std::string_view key, std::int64_t& out) {
  const std::size_t k = find_in(d, key);
  if (k == std::string_view::npos) return false;
  const char* b = d.data() + k + key.size();
  const auto [end, ec] = std::from_chars(b, d.data() + d.size(), out);
  return ec == std::errc() && end != b && end < d.data() + d.size() && (*end == ',' || *end == '}');
}

// Where delta.content's JSON string literal (quotes included) lies in a chunk, when that can be
// told without parsing it: after the first "delta" key, exactly one "content" key, as the first
// key of an object or after a comma, with a string value (`text`); no "content" key after the
// delta at all (`no_text`: a tool call, a role chunk without content); anything else needs the
// parse (`other`). Outside a string a '"' is structural, and a "content" inside one would read
// \"content\", so such a key is a key of the chunk.
// `known_prefix`: the bytes up to and including the first "delta" key of an earlier chunk. A
// stream's chunks mostly begin alike (id, object, created, model, choices, index): when this one
// begins with those same bytes, its first "delta" key ends at the same place, found without a
// search; otherwise it is searched for and remembered.
chunk_shape delta_content_literal(std::string_view d, std::pair<std::size_t, std::size_t>& lit,
                                  std::string& known_prefix) {
  // Only what is an object for sure is passed on unparsed: anything else may be text in a shape
  // the searches below do not see, and is parsed (and, not JSON, not relayed).
  if (d.size() < 2 || d.front() != '{' || d.back() != '}') return chunk_shape::other;
  // No text: no "content" key however spaced (`"content" :` is JSON too), nor one spelt with an
  // escape (`"cont\u0065nt"`); either needs the parse.
  const auto no_text_or_other = [&](std::size_t from) {
    return find_in(d, content_name, from) == std::string_view::npos && find_in(d, "\\u") == std::string_view::npos
               ? chunk_shape::no_text
               : chunk_shape::other;
  };
  std::size_t delta;
  if (!known_prefix.empty() && d.starts_with(known_prefix)) {
    delta = known_prefix.size() - delta_key.size();
  } else {
    delta = find_in(d, delta_key);
    if (delta == std::string_view::npos) return no_text_or_other(0);
    known_prefix.assign(d.substr(0, delta + delta_key.size()));
  }
  // The common chunk has its content first in the delta.
  const std::size_t first = delta + delta_key.size();
  const std::size_t k = d.substr(first).starts_with(content_key) ? first : find_in(d, content_key, delta);
  if (k == std::string_view::npos) return no_text_or_other(delta);
  if (find_in(d, content_name, k + content_key.size()) != std::string_view::npos) return chunk_shape::other;
  if (d[k - 1] != '{' && d[k - 1] != ',') return chunk_shape::other;
  const std::size_t b = k + content_key.size();
  if (b >= d.size() || d[b] != '"') return chunk_shape::other;
  const std::size_t e = string_literal_end(d, b);
  if (e == std::string_view::npos) return chunk_shape::other;
  lit = {b, e};
  return chunk_shape::text;
}

/// Whether the last `"finish_reason":` of `d` has a string value (the chunk ends the answer).
bool finishing_chunk(std::string_view d) {
  const auto f = d.rfind(finish_key);
  return f != std::string_view::npos && f + finish_key.size() < d.size() && d[f + finish_key.size()] == '"';
}

/// Whether `suffix`, the bytes after a text chunk's content string, decides the rest of what
/// in_place() needs to know about any chunk ending with them (see known_tail_): a "content" key
/// can neither lie in them nor begin in the string before them (a key's closing quote followed by
/// ':' would be the string's closing quote followed by a ':' that starts the suffix), and their
/// last finish_reason, the chunk's last one, is not a string.
bool deciding_suffix(std::string_view suffix) {
  return !suffix.empty() && suffix[0] != ':' && find_in(suffix, content_key) == std::string_view::npos &&
         find_in(suffix, finish_key) != std::string_view::npos && !finishing_chunk(suffix);
}

}  // namespace

bool stream_rewriter::in_place(std::string_view data, std::string& out) {
  // Reasoning text, and the first chunk after it (its held-back text goes out first), take the
  // general path. (A key inside a string would read \"reasoning: this errs towards parsing.)
  if (reasoning_.pending() || find_in(data, "\"reasoning") != std::string_view::npos) return false;
  // The first chunk names the id, model and creation time that the chunks the rewriter makes
  // itself carry: read without parsing when they are plain, else the chunk is parsed whole.
  if (id_.empty()) {
    std::string id, model;
    std::int64_t created = 0;
    if (!plain_string_field(data, "\"id\":\"", id) || !plain_string_field(data, "\"model\":\"", model) ||
        !integer_field(data, "\"created\":", created))
      return false;
    id_ = std::move(id);
    model_ = std::move(model);
    created_ = created;
  }
  const bool finishing = finishing_chunk(data);
  std::pair<std::size_t, std::size_t> literal;
  const chunk_shape shape = delta_content_literal(data, literal, known_prefix_);
  if (shape == chunk_shape::other || (finishing && shape == chunk_shape::text)) return false;
  if (shape == chunk_shape::no_text) {
    flush_batch(out, finishing);  // the text held back goes out in the batch...
    if (finishing) flush(out);    // ...or, with no batch, in a chunk of its own before the finish chunk
    if (blocked_) return true;
    if (!event_.empty()) out.append(event_);  // (the event as it came)
    else out.append(data_field).append(data).append(event_end);
    return true;
  }
  const std::string_view lit = data.substr(literal.first, literal.second - literal.first);
  const bool escaped = lit.find('\\') != std::string_view::npos;
  if (!add_text(data, literal, escaped)) return false;
  // A text chunk with its content first (data begins with known_prefix_ now) and an ending that
  // decides: later ones that begin and end alike take the path above.
  if (literal.first == known_prefix_.size() + content_key.size() && deciding_suffix(data.substr(literal.second))) {
    known_head_.assign(data_field).append(data.substr(0, literal.first + 1));  // (its opening quote included)
    known_tail_.assign(data.substr(literal.second)).append(event_end);
  }
  return true;
}

namespace {
/// The bytes a common chunk's content string is scanned for: its end ('"'), an escape, and the
/// line ends that would end the SSE line inside it.
constexpr std::array<bool, 256> string_stops = [] {
  std::array<bool, 256> t{};
  t['"'] = t['\\'] = t['\r'] = t['\n'] = true;
  return t;
}();
}  // namespace

std::size_t stream_rewriter::common_event(std::string_view bytes) {
  // The same bytes as an earlier text chunk's event before its content string (the content first
  // in the delta) and after it, up to the blank line. Those bytes were searched once; this
  // event's string is only scanned for its end (the answer in_place() would give, without the
  // search for the event's end and for its keys).
  if (known_tail_.empty() || !filter_ || finished_ || id_.empty() || reasoning_.pending()) return 0;
  const std::size_t head = known_head_.size(), tail = known_tail_.size();
  const char* const p = bytes.data();
  const std::size_t n = bytes.size();
  if (n < head + 1 + tail || std::memcmp(p, known_head_.data(), head) != 0) return 0;
  // The string's end, by a byte loop (a delta's text is a few bytes). A '\r' or '\n' would end
  // the SSE line: such an event is left to the general path.
  bool escaped = false;
  std::size_t e = head;
  for (; e < n; ++e) {
    const char c = p[e];
    if (!string_stops[static_cast<unsigned char>(c)]) continue;
    if (c == '"') break;
    if (c != '\\') return 0;
    escaped = true;
    if (++e < n && (p[e] == '\r' || p[e] == '\n')) return 0;
  }
  if (e >= n || n - (e + 1) < tail || std::memcmp(p + e + 1, known_tail_.data(), tail) != 0) return 0;
  const std::size_t size = e + 1 + tail;
  event_ = std::string_view(p, size);
  const std::size_t skip = data_field.size();
  if (!add_text(std::string_view(p + skip, size - skip - event_end.size()), {head - 1 - skip, e + 1 - skip}, escaped)) {
    event_ = {};
    return 0;
  }
  return size;
}

bool stream_rewriter::add_text(std::string_view data, std::pair<std::size_t, std::size_t> literal, bool escaped) {
  if (batch_.empty() && batch_.capacity() == 0) {  // (once per stream: the run grows without copies)
    batch_.reserve(32);
    joined_.reserve(256);
  }
  const char* const lit = data.data() + literal.first;
  const std::size_t lit_size = literal.second - literal.first;
  if (escaped) {
    boost::system::error_code ec;
    auto v = json::parse(std::string_view(lit, lit_size), ec);
    if (ec || !v.is_string()) return false;
    joined_ += v.get_string();
  } else {
    joined_.append(lit + 1, lit_size - 2);
  }
  batch_.push_back({data, literal, event_, joined_.size()});
  return true;
}

void stream_rewriter::flush_batch(std::string& out, bool last) {
  if (batch_.empty()) return;
  // One scan for the run: Hyperscan's cost per call outweighs its cost per byte at delta sizes.
  auto r = filter_->feed(joined_);
  if (last && !r.blocked && !finished_) {
    finished_ = true;
    auto rest = filter_->finish();
    r.text += rest.text;
    r.blocked = rest.blocked;
  }
  sent(r.text);
  // The text went through unchanged (what went out is the start of the batch's own text): each
  // chunk keeps its text, so most go out as they came.
  const bool own_text = !r.blocked && r.text.size() <= joined_.size() &&
                        std::memcmp(r.text.data(), joined_.data(), r.text.size()) == 0;
  // Otherwise each event as it came, its content string replaced: the run's text goes in the
  // last one (the first one when the run ends in a block), the others carry "" (their other
  // fields stay).
  const std::size_t carrier = r.blocked ? 0 : batch_.size() - 1;
  std::size_t size = out.size() + r.text.size() + r.text.size() / 8 + 16;  // (room for a few escapes)
  for (const auto& p : batch_) size += p.data.size() - (p.literal.second - p.literal.first) + 10;
  out.reserve(size);
  // Bytes of the caller's that go out as they came, kept as one range while they are adjacent:
  // from one event's content string to the next one's, mostly.
  const char* run = nullptr;
  std::size_t run_size = 0;
  auto copy = [&](const char* from, const char* to) {
    if (run != nullptr && run + run_size == from) {
      run_size += std::size_t(to - from);
      return;
    }
    if (run != nullptr) out.append(run, run_size);
    run = from;
    run_size = std::size_t(to - from);
  };
  auto copied = [&] {
    if (run != nullptr) out.append(run, run_size);
    run = nullptr;
  };
  for (std::size_t i = 0; i < batch_.size(); ++i) {
    if (r.blocked && (i > 0 || r.text.empty())) break;
    const auto& p = batch_[i];
    const char* const d = p.data.data();
    const std::size_t text_begin = i == 0 ? 0 : batch_[i - 1].text_end;
    if (own_text && p.text_end <= r.text.size()) {  // its text went out whole: the event as it came
      if (!p.event.empty()) {
        copy(p.event.data(), p.event.data() + p.event.size());
      } else {
        copied();
        out.append(data_field).append(p.data).append(event_end);
      }
      continue;
    }
    // Its content string replaced: by its part of the text (own_text: from where its text begins,
    // in the chunk where the held-back text begins), by the run's text (the carrier), or by "".
    std::string_view text;
    if (own_text) {
      if (text_begin < r.text.size()) text = std::string_view(r.text).substr(text_begin);
    } else if (i == carrier) {
      text = r.text;
    }
    if (text.empty() && !p.event.empty()) {
      // "" is the string's own quotes: the bytes up to its opening quote, then from its closing
      // quote on (one copy with the next event's bytes up to its string).
      copy(p.event.data(), d + p.literal.first + 1);
      copy(d + p.literal.second - 1, p.event.data() + p.event.size());
      continue;
    }
    if (!p.event.empty()) {
      copy(p.event.data(), d + p.literal.first);
    } else {
      copied();
      out.append(data_field).append(d, p.literal.first);
    }
    copied();
    json_out::string(out, text);  // (data is one line: JSON escapes '\n')
    if (!p.event.empty()) copy(d + p.literal.second, p.event.data() + p.event.size());
    else out.append(d + p.literal.second, p.data.size() - p.literal.second).append(event_end);
  }
  copied();
  batch_.clear();
  joined_.clear();
  if (r.blocked) end_blocked(out);
}

void stream_rewriter::on_data(std::string_view data, std::string& out) {
  flush_batch(out);  // (callers batch only through in_place(); this keeps the order)
  if (blocked_) return;
  if (data == "[DONE]") {
    flush_all(out);
    if (blocked_) return;
    record_rules();
    out += "data: [DONE]\n\n";
    return;
  }
  if (finished_ && !multi_) {  // after the finish chunk (a usage chunk): nothing left to filter
    out += sse::format_data(data);
    return;
  }
  boost::system::error_code ec;
  auto v = json::parse(data, ec);
  if (ec || !v.is_object()) {  // nothing the filters can read is sent (fail closed)
    end_stream(out, "upstream_error", "The upstream stream sent an event the content filter cannot read.");
    return;
  }
  auto& o = v.get_object();
  if (auto* id = o.if_contains("id"); id && id->is_string() && !id->get_string().empty()) id_ = id->get_string();
  if (auto* m = o.if_contains("model"); m && m->is_string() && !m->get_string().empty()) model_ = m->get_string();
  if (auto* cr = o.if_contains("created"); cr && cr->is_int64()) created_ = cr->get_int64();
  auto* choices = o.if_contains("choices");
  bool changed = false;
  // Each choice's reasoning and its alias (see below): the alias is made the filtered text's copy
  // before the chunk goes out.
  std::vector<std::pair<json::value*, json::value*>> aliases;
  const auto sync_aliases = [&] {
    for (auto [r, a] : aliases)
      if (*a != *r) {
        *a = *r;
        changed = true;
      }
  };
  if (choices && choices->is_array()) {
    auto& arr = choices->get_array();
    // Each choice of the chunk (one, unless the request asked for several answers) through the
    // filter of its answer.
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_object()) continue;
      auto& c = arr[i].get_object();
      std::uint64_t index = 0;
      if (auto* ix = c.if_contains("index")) {
        if (ix->is_uint64()) index = ix->get_uint64();
        else if (ix->is_int64() && ix->get_int64() >= 0) index = std::uint64_t(ix->get_int64());
      }
      auto* finish = c.if_contains("finish_reason");
      const bool finishing = finish && !finish->is_null();
      auto* delta = c.if_contains("delta");
      json::object* d = delta && delta->is_object() ? &delta->get_object() : nullptr;
      auto* content = d ? d->if_contains("content") : nullptr;
      const bool has_text = content && content->is_string();
      // vLLM sends the reasoning twice, as `reasoning_content` and as `reasoning` (kept in sync):
      // the first is filtered, and the second goes out as a copy of what it became.
      json::value* reasoning = d ? d->if_contains("reasoning_content") : nullptr;
      json::value* alias = d ? d->if_contains("reasoning") : nullptr;
      bool unreadable = (content && !content->is_string() && !content->is_null()) ||
                        (reasoning && !reasoning->is_string() && !reasoning->is_null()) ||
                        (alias && !alias->is_string() && !alias->is_null());
      if (reasoning && !reasoning->is_string()) reasoning = nullptr;
      if (alias && !alias->is_string()) alias = nullptr;
      if (!reasoning) std::swap(reasoning, alias);
      if (unreadable) {  // text in a shape the filters cannot read (parts, not a string): not sent
        end_stream(out, "upstream_error", "The upstream stream sent answer text the content filter cannot read.");
        return;
      }
      if (alias) aliases.emplace_back(reasoning, alias);
      // A role or tool-call delta: no text of the answer.
      if (!has_text && !finishing && reasoning == nullptr) continue;
      const choice_ref ch = choice(index);
      if (ch.filter == nullptr) {  // text that cannot be filtered is not sent (fail closed)
        end_stream(out, "upstream_error",
                   ch.finished == nullptr ? "The upstream stream sent an answer the request did not ask for."
                                          : "The content filter could not start for this stream.");
        return;
      }
      if (*ch.finished) {  // text after its answer's end: nothing the filter could still check
        for (json::value* t : {has_text ? content : nullptr, reasoning})
          if (t != nullptr && !t->get_string().empty()) {
            *t = "";
            changed = true;
          }
        continue;
      }
      // Its end, or the end of the answer before it: no text of the answer goes out unfiltered.
      const auto end_here = [&](bool keep_chunk_text) {
        if (finish) *finish = nullptr;  // the block's own chunk ends the answers (content_filter)
        arr.erase(arr.begin() + std::ptrdiff_t(i + 1), arr.end());  // choices after it: not filtered
        sync_aliases();
        if (keep_chunk_text || i > 0) out += sse::format_data(json::serialize(v));
        end_blocked(out);
      };
      // The reasoning comes first: its text, then (once the content begins or the answer ends)
      // what its filter held back.
      bool reasoning_kept = false;
      if (reasoning != nullptr) {
        reasoning_state& rs = *ch.reasoning;
        (reasoning == d->if_contains("reasoning") ? rs.as_reasoning : rs.as_content) = true;
        if (alias) rs.as_reasoning = true;
        if (!rs.filter)
          if (auto sf = cf::stream_filter::create(set_, scratch_)) rs.filter.emplace(std::move(*sf));
        if (!rs.filter) {
          end_stream(out, "upstream_error", "The content filter could not start for this stream.");
          return;
        }
        if (rs.finished) {  // reasoning after the content began: no stream of its own left
          if (!reasoning->get_string().empty()) {
            *reasoning = "";
            changed = true;
          }
        } else {
          auto rr = rs.filter->feed(reasoning->get_string());
          if (std::string_view(reasoning->get_string()) != rr.text) {
            *reasoning = json::string(rr.text);
            changed = true;
          }
          reasoning_kept = !rr.text.empty();
          if (rr.blocked) {
            if (has_text) *content = "";
            changed = true;
            end_here(reasoning_kept);
            return;
          }
        }
      }
      if ((has_text && !content->get_string().empty()) || finishing) {
        const std::size_t before = reasoning != nullptr ? reasoning->get_string().size() : 0;
        if (!end_reasoning(*ch.reasoning, index, reasoning, out)) {
          if (has_text) *content = "";
          changed = true;
          end_here(reasoning_kept);
          return;
        }
        if (reasoning != nullptr && reasoning->get_string().size() != before) changed = true;
      }
      cf::chunk_result r;
      if (has_text) r = ch.filter->feed(content->get_string());
      if (finishing && !r.blocked) {
        // The answer's end: the text held back goes out in this chunk after its own text, or, in
        // a chunk without text, in a chunk of its own before it.
        *ch.finished = true;
        auto rest = ch.filter->finish();
        r.blocked = rest.blocked;
        if (has_text) {
          r.text += rest.text;
        } else if (!rest.text.empty() && !rest.blocked) {
          sent(rest.text);
          content_chunk(out, rest.text, index);
        }
      }
      if (has_text) {
        sent(r.text);
        if (std::string_view(content->get_string()) != r.text) {
          *content = json::string(r.text);
          // Log probabilities carry the tokens' text: kept only with a text that went out as it came.
          if (auto* lp = c.if_contains("logprobs"); lp && !lp->is_null()) *lp = nullptr;
          changed = true;
        }
      }
      if (r.blocked) {
        end_here((has_text && !r.text.empty()) || reasoning_kept);
        return;
      }
    }
  }
  sync_aliases();
  // (A chunk as it came when unchanged, unless its data spanned lines: one line is written.)
  if (changed || data.find_first_of("\r\n") != std::string_view::npos) out += sse::format_data(json::serialize(v));
  else out.append("data: ").append(data).append("\n\n");
}

}  // namespace tollgate::gateway
