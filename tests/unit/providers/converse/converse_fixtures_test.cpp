// SPDX-License-Identifier: Apache-2.0
// Recorded Bedrock answers (vercel/ai fixtures) through the translations: every Converse body to a
// chat.completion, every ConverseStream recording (and the derived event-stream captures with
// padding and exception frames) to chat.completion.chunk objects, checked against the recordings.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "providers/bedrock/converse.hpp"

#include "tests/unit/testdata.hpp"

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace tollgate::providers::bedrock;

const fs::path fixture_dir = fs::path(TOLLGATE_TESTDATA) / "vercel-ai-fixtures/packages/amazon-bedrock/src/__fixtures__";
const fs::path derived_dir = fs::path(TOLLGATE_TESTDATA) / "bedrock-eventstream-derived";

const completion_meta meta{"chatcmpl-test-1", 1770933883, "claude-via-bedrock"};

using tollgate::testing::read_file;

json::value load_json(const fs::path& p) { return json::parse(read_file(p)); }

/// Files in the fixture folder whose names start with `amazon-bedrock-` and end with `suffix`.
std::vector<fs::path> fixtures_ending(std::string_view suffix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(fixture_dir)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("amazon-bedrock-") && name.ends_with(suffix)) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

/// `x.chunks.txt` → `x.json` (same recording name), which may not exist.
fs::path paired_json(const fs::path& chunks) {
  std::string name = chunks.filename().string();
  name.resize(name.size() - std::string_view(".chunks.txt").size());
  return chunks.parent_path() / (name + ".json");
}

struct event {
  std::string type;
  std::string payload;  ///< JSON text, as the event-stream decoder hands it over
};

/// A vercel `*.chunks.txt`: one `{"<eventType>": payload}` per line.
std::vector<event> load_chunk_events(const fs::path& p) {
  std::vector<event> out;
  std::istringstream lines(read_file(p));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const json::object o = json::parse(line).as_object();
    EXPECT_EQ(o.size(), 1u) << line;
    out.push_back({std::string(o.begin()->key()), json::serialize(o.begin()->value())});
  }
  return out;
}

/// A derived `*.expected.jsonl`: `{"headers":{":event-type"|":exception-type":..},"payload":"<json>"}`.
std::vector<event> load_derived_events(const fs::path& p) {
  std::vector<event> out;
  std::istringstream lines(read_file(p));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const json::object o = json::parse(line).as_object();
    const json::object& h = o.at("headers").as_object();
    const json::value* type = h.if_contains(":event-type");
    if (!type) type = h.if_contains(":exception-type");
    EXPECT_NE(type, nullptr) << line;
    out.push_back({std::string(type->as_string()), std::string(o.at("payload").as_string())});
  }
  return out;
}

/// What an OpenAI client assembles from the chunks, with the shape checks made on the way.
struct assembled {
  std::size_t chunk_count = 0;
  std::string content;
  std::string reasoning;
  struct call {
    std::string id, name, arguments;
  };
  std::map<std::int64_t, call> calls;
  std::string finish_reason;
  bool finish_was_last = false;
  std::optional<converse_usage> usage;
  std::optional<upstream_error> error;
  std::size_t events_after_error = 0;
};

assembled run(const std::vector<event>& events) {
  converse_stream_translator tr(meta);
  assembled a;
  bool role_seen = false;
  for (const event& ev : events) {
    if (a.error) ++a.events_after_error;
    stream_step step = tr.on_event_text(ev.type, ev.payload);
    if (a.error) {
      EXPECT_TRUE(step.chunks.empty() && !step.error && !step.usage) << "event after a failure produced output";
      continue;
    }
    if (step.usage) a.usage = step.usage;
    if (step.error) a.error = step.error;
    for (const json::object& c : step.chunks) {
      ++a.chunk_count;
      EXPECT_TRUE(a.finish_reason.empty()) << "a chunk after the finish chunk: " << json::serialize(c);
      EXPECT_EQ(c.at("id"), json::value(meta.id));
      EXPECT_EQ(c.at("object"), json::value("chat.completion.chunk"));
      EXPECT_EQ(c.at("created"), json::value(meta.created));
      EXPECT_EQ(c.at("model"), json::value(meta.model));
      const json::array& choices = c.at("choices").as_array();
      EXPECT_EQ(choices.size(), 1u);
      const json::object& choice = choices.at(0).as_object();
      EXPECT_EQ(choice.at("index"), json::value(0));
      const json::object& delta = choice.at("delta").as_object();
      if (const json::value* role = delta.if_contains("role")) {
        EXPECT_FALSE(role_seen) << "role sent twice";
        EXPECT_EQ(*role, json::value("assistant"));
        role_seen = true;
      }
      EXPECT_TRUE(role_seen) << "first chunk lacks delta.role";
      if (const json::value* t = delta.if_contains("content")) a.content += t->as_string();
      if (const json::value* t = delta.if_contains("reasoning_content")) a.reasoning += t->as_string();
      if (const json::value* calls = delta.if_contains("tool_calls")) {
        for (const json::value& cv : calls->as_array()) {
          const json::object& call = cv.as_object();
          const std::int64_t index = call.at("index").to_number<std::int64_t>();
          const json::object& fn = call.at("function").as_object();
          if (const json::value* id = call.if_contains("id")) {
            EXPECT_FALSE(a.calls.contains(index)) << "tool call index reused: " << index;
            EXPECT_EQ(index, static_cast<std::int64_t>(a.calls.size())) << "tool call indexes count from 0";
            EXPECT_EQ(call.at("type"), json::value("function"));
            a.calls[index] = {std::string(id->as_string()), std::string(fn.at("name").as_string()), {}};
          } else {
            EXPECT_TRUE(a.calls.contains(index)) << "arguments for an unknown tool call index " << index;
            EXPECT_FALSE(fn.contains("name"));
          }
          a.calls[index].arguments += fn.at("arguments").as_string();
        }
      }
      if (!choice.at("finish_reason").is_null()) {
        a.finish_reason = std::string(choice.at("finish_reason").as_string());
        EXPECT_TRUE(delta.empty() || (delta.size() == 1 && delta.contains("role")));
      }
    }
  }
  EXPECT_EQ(tr.failed(), a.error.has_value());
  if (!a.error) {
    EXPECT_TRUE(tr.finished());
    EXPECT_EQ(tr.finish_reason(), a.finish_reason);
    EXPECT_EQ(tr.usage(), a.usage);
  }
  return a;
}

/// The same facts read straight from the recorded events, without the translator.
struct recorded {
  std::string text, reasoning;
  std::vector<std::pair<std::string, std::string>> tools;  ///< (toolUseId, name) in order
  std::map<std::int64_t, std::string> tool_input;          ///< by tool order
  std::string stop_reason;
  std::optional<json::object> usage;
};

recorded read_recorded(const std::vector<event>& events) {
  recorded r;
  std::map<std::int64_t, std::int64_t> tool_of_block;
  for (const event& ev : events) {
    const json::value v = json::parse(ev.payload);
    const json::object& p = v.as_object();
    if (ev.type == "contentBlockStart") {
      const json::object& start = p.at("start").as_object();
      if (const json::value* use = start.if_contains("toolUse")) {
        tool_of_block[p.at("contentBlockIndex").to_number<std::int64_t>()] = static_cast<std::int64_t>(r.tools.size());
        r.tools.emplace_back(std::string(use->at("toolUseId").as_string()), std::string(use->at("name").as_string()));
      }
    } else if (ev.type == "contentBlockDelta") {
      const json::object& d = p.at("delta").as_object();
      if (const json::value* t = d.if_contains("text")) r.text += t->as_string();
      if (const json::value* u = d.if_contains("toolUse"))
        r.tool_input[tool_of_block.at(p.at("contentBlockIndex").to_number<std::int64_t>())] += u->at("input").as_string();
      if (const json::value* rc = d.if_contains("reasoningContent"))
        if (const json::value* t = rc->as_object().if_contains("text")) r.reasoning += t->as_string();
    } else if (ev.type == "messageStop") {
      r.stop_reason = std::string(p.at("stopReason").as_string());
    } else if (ev.type == "metadata") {
      r.usage = p.at("usage").as_object();
    }
  }
  return r;
}

std::uint64_t count(const json::object& o, std::string_view key) { return o.at(key).to_number<std::uint64_t>(); }

// ---------------------------------------------------------------------------------------------
// Converse (non-stream)

TEST(ConverseFixturesTest, AllFixturesArePresent) {
  EXPECT_EQ(fixtures_ending(".json").size(), 4u);
  EXPECT_EQ(fixtures_ending(".chunks.txt").size(), 4u);
}

/// Every recorded Converse body, checked against facts read straight from the fixture.
TEST(ConverseFixturesTest, EveryConverseFixtureTranslates) {
  for (const fs::path& p : fixtures_ending(".json")) {
    SCOPED_TRACE(p.filename().string());
    const json::value in = load_json(p);
    auto r = to_chat_completion(in, meta);
    ASSERT_TRUE(r) << r.error().message;
    const json::object& body = r->body;
    EXPECT_EQ(body.at("id"), json::value(meta.id));
    EXPECT_EQ(body.at("object"), json::value("chat.completion"));
    EXPECT_EQ(body.at("created"), json::value(meta.created));
    EXPECT_EQ(body.at("model"), json::value(meta.model));
    const json::object& choice = body.at("choices").as_array().at(0).as_object();
    const json::object& msg = choice.at("message").as_object();
    EXPECT_EQ(msg.at("role"), json::value("assistant"));

    std::string text, reasoning;
    std::vector<const json::object*> uses;
    for (const json::value& b : in.at("output").at("message").at("content").as_array()) {
      if (const json::value* t = b.as_object().if_contains("text")) text += t->as_string();
      if (const json::value* u = b.as_object().if_contains("toolUse")) uses.push_back(&u->as_object());
      if (const json::value* rc = b.as_object().if_contains("reasoningContent"))
        reasoning += rc->at("reasoningText").at("text").as_string();
    }
    if (text.empty() && !uses.empty()) {
      EXPECT_TRUE(msg.at("content").is_null());
    } else {
      EXPECT_EQ(msg.at("content"), json::value(text));
    }
    if (reasoning.empty()) {
      EXPECT_FALSE(msg.contains("reasoning_content"));
    } else {
      EXPECT_EQ(msg.at("reasoning_content"), json::value(reasoning));
    }
    if (uses.empty()) {
      EXPECT_FALSE(msg.contains("tool_calls"));
    } else {
      const json::array& calls = msg.at("tool_calls").as_array();
      ASSERT_EQ(calls.size(), uses.size());
      for (std::size_t i = 0; i < calls.size(); ++i) {
        EXPECT_EQ(calls[i].at("id"), uses[i]->at("toolUseId"));
        EXPECT_EQ(calls[i].at("type"), json::value("function"));
        EXPECT_EQ(calls[i].at("function").at("name"), uses[i]->at("name"));
        EXPECT_EQ(json::parse(calls[i].at("function").at("arguments").as_string()), uses[i]->at("input"));
      }
    }
    EXPECT_EQ(choice.at("finish_reason"), json::value(map_stop_reason(in.at("stopReason").as_string())));
    EXPECT_EQ(r->finish_reason, choice.at("finish_reason").as_string());

    const json::object& fu = in.at("usage").as_object();
    const json::object& u = body.at("usage").as_object();
    // Cached tokens are part of OpenAI's prompt_tokens; the fixtures report 0 of them.
    const std::uint64_t cache_read = fu.contains("cacheReadInputTokens") ? count(fu, "cacheReadInputTokens") : 0;
    const std::uint64_t cache_write = fu.contains("cacheWriteInputTokens") ? count(fu, "cacheWriteInputTokens") : 0;
    EXPECT_EQ(count(u, "prompt_tokens"), count(fu, "inputTokens") + cache_read + cache_write);
    EXPECT_EQ(count(u, "completion_tokens"), count(fu, "outputTokens"));
    EXPECT_EQ(count(u, "total_tokens"), count(fu, "totalTokens"));
    if (fu.contains("cacheReadInputTokens")) {
      EXPECT_EQ(count(u.at("prompt_tokens_details").as_object(), "cached_tokens"), cache_read);
    } else {
      EXPECT_FALSE(u.contains("prompt_tokens_details"));
    }
    ASSERT_TRUE(r->usage);
    EXPECT_EQ(r->usage->prompt_tokens(), count(u, "prompt_tokens"));
  }
}

chat_completion translate_fixture(std::string_view name) {
  auto r = to_chat_completion(load_json(fixture_dir / name), meta);
  EXPECT_TRUE(r) << (r ? std::string() : r.error().message);
  return r ? *r : chat_completion{};
}

TEST(ConverseFixturesTest, TextFixture) {
  const chat_completion c = translate_fixture("amazon-bedrock-text.json");
  EXPECT_EQ(c.body, json::parse(R"({"id":"chatcmpl-test-1","object":"chat.completion","created":1770933883,
    "model":"claude-via-bedrock","choices":[{"index":0,"message":{"role":"assistant",
    "content":"Let me count the \"r\"s in \"strawberry\":\n\ns-t-**r**-a-w-b-e-**r**-**r**-y\n\nThere are **3** \"r\"s in \"strawberry.\"",
    "refusal":null},"logprobs":null,"finish_reason":"stop"}],
    "usage":{"prompt_tokens":22,"completion_tokens":57,"total_tokens":79,"prompt_tokens_details":{"cached_tokens":0}}})"));
  EXPECT_EQ(c.finish_reason, "stop");
}

TEST(ConverseFixturesTest, ToolCallFixture) {
  const chat_completion c = translate_fixture("amazon-bedrock-tool-call.1.json");
  const json::object& msg = c.body.at("choices").at(0).at("message").as_object();
  EXPECT_TRUE(msg.at("content").is_null());
  const json::array& calls = msg.at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].at("id"), json::value("tool-use-id"));
  EXPECT_EQ(calls[0].at("function").at("name"), json::value("bash"));
  EXPECT_EQ(calls[0].at("function").at("arguments"), json::value(R"({"command":"ls -l"})"));
  EXPECT_EQ(c.body.at("choices").at(0).at("finish_reason"), json::value("tool_calls"));
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":10,"completion_tokens":20,"total_tokens":30})"));
}

TEST(ConverseFixturesTest, ToolWithoutArgumentsFixture) {
  const chat_completion c = translate_fixture("amazon-bedrock-tool-no-args.json");
  const json::object& msg = c.body.at("choices").at(0).at("message").as_object();
  EXPECT_EQ(msg.at("content"), json::value("I'll update the issue list for you."));
  EXPECT_EQ(msg.at("tool_calls"), json::parse(R"([{"id":"tool-use-id","type":"function",
      "function":{"name":"updateIssueList","arguments":"{}"}}])"));
  EXPECT_EQ(c.finish_reason, "tool_calls");
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":100,"completion_tokens":25,"total_tokens":125})"));
}

TEST(ConverseFixturesTest, ReasoningFixture) {
  const chat_completion c = translate_fixture("amazon-bedrock-reasoning.json");
  const json::object& msg = c.body.at("choices").at(0).at("message").as_object();
  EXPECT_EQ(msg.at("reasoning_content"),
            json::value("Let me count the r's in \"strawberry\":\n\ns-t-r-a-w-b-e-r-r-y\n\nThere are 3 r's."));
  EXPECT_EQ(msg.at("content"), json::value("There are **3** r's in \"strawberry\":\n\n1. st**r**awbe**r****r**y"));
  EXPECT_EQ(c.finish_reason, "stop");
  ASSERT_TRUE(c.usage);
  EXPECT_EQ(c.usage->prompt_tokens(), 51u);
  EXPECT_EQ(c.usage->completion_tokens(), 78u);
  EXPECT_EQ(c.usage->total_tokens(), 129u);
}

/// The translated body has the keys (and key types) of a real OpenAI chat.completion.
TEST(ConverseFixturesTest, ResponseShapeMatchesARealOpenAiResponse) {
  const json::value openai =
      load_json(fs::path(TOLLGATE_TESTDATA) / "vercel-ai-fixtures/packages/openai/src/chat/__fixtures__/openai-text.json");
  const chat_completion c = translate_fixture("amazon-bedrock-text.json");
  auto same_keys = [](const json::object& ours, const json::object& theirs, std::string_view where) {
    for (const auto& kv : ours) {
      const json::value* t = theirs.if_contains(kv.key());
      ASSERT_NE(t, nullptr) << where << "." << kv.key() << " is not in the OpenAI response";
      EXPECT_EQ(kv.value().kind() == json::kind::int64 || kv.value().kind() == json::kind::uint64,
                t->kind() == json::kind::int64 || t->kind() == json::kind::uint64)
          << where << "." << kv.key();
      if (!kv.value().is_number()) {
        EXPECT_EQ(kv.value().kind(), t->kind()) << where << "." << kv.key();
      }
    }
  };
  same_keys(c.body, openai.as_object(), "response");
  same_keys(c.body.at("choices").at(0).as_object(), openai.at("choices").at(0).as_object(), "choice");
  same_keys(c.body.at("choices").at(0).at("message").as_object(), openai.at("choices").at(0).at("message").as_object(),
            "message");
  same_keys(c.body.at("usage").as_object(), openai.at("usage").as_object(), "usage");
}

TEST(ConverseFixturesTest, CacheReadsCountAsPromptTokens) {
  // Bedrock counts cache reads and writes apart from inputTokens; OpenAI's prompt_tokens includes them.
  auto r = to_chat_completion(json::parse(R"({"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},
      "stopReason":"max_tokens","usage":{"inputTokens":4,"outputTokens":7,"totalTokens":1547,
      "cacheReadInputTokens":1500,"cacheWriteInputTokens":36}})"),
                              meta);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body.at("usage"), json::parse(R"({"prompt_tokens":1540,"completion_tokens":7,"total_tokens":1547,
      "prompt_tokens_details":{"cached_tokens":1500}})"));
  EXPECT_EQ(r->finish_reason, "length");
}

TEST(ConverseFixturesTest, StopReasonMapping) {
  EXPECT_EQ(map_stop_reason("end_turn"), "stop");
  EXPECT_EQ(map_stop_reason("stop_sequence"), "stop");
  EXPECT_EQ(map_stop_reason("max_tokens"), "length");
  EXPECT_EQ(map_stop_reason("model_context_window_exceeded"), "length");
  EXPECT_EQ(map_stop_reason("tool_use"), "tool_calls");
  EXPECT_EQ(map_stop_reason("content_filtered"), "content_filter");
  EXPECT_EQ(map_stop_reason("guardrail_intervened"), "content_filter");
  EXPECT_EQ(map_stop_reason("malformed_model_output"), "stop");
}

TEST(ConverseFixturesTest, UnreadableConverseBodiesAreRefused) {
  for (std::string_view body : {R"([])", R"({"output":{}})", R"({"output":{"message":{"content":"x"}}})"}) {
    auto r = to_chat_completion(json::parse(body), meta);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().code, translate_errc::invalid_upstream);
  }
  // No usage at all is not fatal: the caller learns it from chat_completion::usage.
  auto r = to_chat_completion(json::parse(R"({"output":{"message":{"content":[]}},"stopReason":"end_turn"})"), meta);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->usage);
  EXPECT_FALSE(r->body.contains("usage"));
  EXPECT_EQ(r->body.at("choices").at(0).at("message").at("content"), json::value(""));
}

// ---------------------------------------------------------------------------------------------
// ConverseStream

/// Every recorded stream, checked against the same facts read straight from its events.
TEST(ConverseFixturesTest, EveryStreamFixtureTranslates) {
  for (const fs::path& p : fixtures_ending(".chunks.txt")) {
    SCOPED_TRACE(p.filename().string());
    const std::vector<event> events = load_chunk_events(p);
    const recorded rec = read_recorded(events);
    const assembled a = run(events);
    ASSERT_FALSE(a.error) << a.error->message;
    EXPECT_EQ(a.content, rec.text);
    EXPECT_EQ(a.reasoning, rec.reasoning);
    ASSERT_EQ(a.calls.size(), rec.tools.size());
    for (std::size_t i = 0; i < rec.tools.size(); ++i) {
      const assembled::call& call = a.calls.at(static_cast<std::int64_t>(i));
      EXPECT_EQ(call.id, rec.tools[i].first);
      EXPECT_EQ(call.name, rec.tools[i].second);
      const auto in = rec.tool_input.find(static_cast<std::int64_t>(i));
      const std::string input = in == rec.tool_input.end() ? std::string() : in->second;
      EXPECT_EQ(call.arguments, input.empty() ? "{}" : input);
      EXPECT_TRUE(json::parse(call.arguments).is_object()) << call.arguments;
    }
    EXPECT_EQ(a.finish_reason, map_stop_reason(rec.stop_reason));
    ASSERT_TRUE(rec.usage);
    ASSERT_TRUE(a.usage);
    EXPECT_EQ(a.usage->prompt_tokens(), count(*rec.usage, "inputTokens"));
    EXPECT_EQ(a.usage->completion_tokens(), count(*rec.usage, "outputTokens"));
    EXPECT_EQ(a.usage->total_tokens(), count(*rec.usage, "totalTokens"));
  }
}

TEST(ConverseFixturesTest, TextStream) {
  const assembled a = run(load_chunk_events(fixture_dir / "amazon-bedrock-text.chunks.txt"));
  EXPECT_EQ(a.content, "Let me count the \"r\"s in \"strawberry\":\n\ns-t-**r**-a-w-b-e-**r**-**r**-y\n\nThere are **3** r's in \"strawberry.\"");
  EXPECT_EQ(a.chunk_count, 1u + 12u + 1u);  // role chunk, 12 text deltas, finish chunk
  EXPECT_EQ(a.finish_reason, "stop");
  ASSERT_TRUE(a.usage);
  EXPECT_EQ(make_usage_chunk(meta, *a.usage), json::parse(R"({"id":"chatcmpl-test-1","object":"chat.completion.chunk",
      "created":1770933883,"model":"claude-via-bedrock","choices":[],
      "usage":{"prompt_tokens":22,"completion_tokens":55,"total_tokens":77}})"));
}

TEST(ConverseFixturesTest, ToolCallStream) {
  // No messageStart and metadata before messageStop, as recorded.
  const assembled a = run(load_chunk_events(fixture_dir / "amazon-bedrock-tool-call.1.chunks.txt"));
  ASSERT_EQ(a.calls.size(), 1u);
  EXPECT_EQ(a.calls.at(0).id, "tool-use-id");
  EXPECT_EQ(a.calls.at(0).name, "test-tool");
  EXPECT_EQ(a.calls.at(0).arguments, R"({"value":"Sparkle Day"})");
  EXPECT_EQ(a.content, "");
  EXPECT_EQ(a.finish_reason, "tool_calls");
  ASSERT_TRUE(a.usage);
  EXPECT_EQ(a.usage->prompt_tokens(), 125u);
  EXPECT_EQ(a.usage->completion_tokens(), 45u);
}

TEST(ConverseFixturesTest, ReasoningStream) {
  const assembled a = run(load_chunk_events(fixture_dir / "amazon-bedrock-reasoning.chunks.txt"));
  EXPECT_EQ(a.reasoning,
            "Let me count the r's in \"strawberry\":\n\ns-t-r-a-w-b-e-r-r-y\n\nr appears at positions 3, 8, and 9.\n\n"
            "So there are 3 r's.");
  EXPECT_EQ(a.finish_reason, "stop");
  ASSERT_TRUE(a.usage);
  EXPECT_EQ(a.usage->total_tokens(), 145u);
}

/// The recordings that are the same call streamed and not streamed: what they share must agree.
/// (The text and tool-call.1 pairs are different calls: their texts and tools differ.)
TEST(ConverseFixturesTest, StreamAgreesWithItsNonStreamTwin) {
  {
    SCOPED_TRACE("tool-no-args");
    const fs::path chunks = fixture_dir / "amazon-bedrock-tool-no-args.chunks.txt";
    const assembled a = run(load_chunk_events(chunks));
    auto c = to_chat_completion(load_json(paired_json(chunks)), meta);
    ASSERT_TRUE(c);
    const json::object& msg = c->body.at("choices").at(0).at("message").as_object();
    EXPECT_EQ(a.content, msg.at("content").as_string());
    ASSERT_EQ(a.calls.size(), 1u);
    EXPECT_EQ(a.calls.at(0).id, msg.at("tool_calls").at(0).at("id").as_string());
    EXPECT_EQ(a.calls.at(0).name, msg.at("tool_calls").at(0).at("function").at("name").as_string());
    EXPECT_EQ(a.calls.at(0).arguments, msg.at("tool_calls").at(0).at("function").at("arguments").as_string());
    EXPECT_EQ(a.finish_reason, c->finish_reason);
    ASSERT_TRUE(a.usage && c->usage);
    EXPECT_EQ(*a.usage, *c->usage);
  }
  {
    SCOPED_TRACE("reasoning");
    const fs::path chunks = fixture_dir / "amazon-bedrock-reasoning.chunks.txt";
    const assembled a = run(load_chunk_events(chunks));
    auto c = to_chat_completion(load_json(paired_json(chunks)), meta);
    ASSERT_TRUE(c);
    EXPECT_EQ(a.content, c->body.at("choices").at(0).at("message").at("content").as_string());
    EXPECT_EQ(a.finish_reason, c->finish_reason);
  }
}

/// The derived binary captures (same events with `p` padding, plus exception frames), as the
/// event-stream decoder hands them over: type from `:event-type` / `:exception-type`, payload text.
TEST(ConverseFixturesTest, DerivedCapturesWithPaddingMatchTheRecordings) {
  const std::pair<std::string_view, std::string_view> pairs[] = {
      {"converse-stream-text.expected.jsonl", "amazon-bedrock-text.chunks.txt"},
      {"converse-stream-tool-use.expected.jsonl", "amazon-bedrock-tool-call.1.chunks.txt"},
      {"converse-stream-reasoning.expected.jsonl", "amazon-bedrock-reasoning.chunks.txt"},
  };
  for (const auto& [derived, recording] : pairs) {
    SCOPED_TRACE(std::string(derived));
    const assembled d = run(load_derived_events(derived_dir / derived));
    const assembled r = run(load_chunk_events(fixture_dir / recording));
    ASSERT_FALSE(d.error);
    EXPECT_EQ(d.chunk_count, r.chunk_count);
    EXPECT_EQ(d.content, r.content);
    EXPECT_EQ(d.reasoning, r.reasoning);
    ASSERT_EQ(d.calls.size(), r.calls.size());
    for (const auto& [i, call] : r.calls) EXPECT_EQ(d.calls.at(i).arguments, call.arguments);
    EXPECT_EQ(d.finish_reason, r.finish_reason);
    EXPECT_EQ(d.usage, r.usage);
  }
}

TEST(ConverseFixturesTest, ThrottlingExceptionMidStream) {
  const assembled a = run(load_derived_events(derived_dir / "converse-stream-throttling-exception.expected.jsonl"));
  EXPECT_EQ(a.content, "Let me count the \"");
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->status, 429u);
  EXPECT_EQ(a.error->type, "rate_limit_error");
  EXPECT_EQ(a.error->code, "rate_limit_exceeded");
  EXPECT_TRUE(a.error->retryable);
  EXPECT_EQ(a.error->bedrock_type, "ThrottlingException");
  EXPECT_EQ(a.error->message, "Too many requests, please wait before trying again.");
  EXPECT_TRUE(a.finish_reason.empty());
  EXPECT_EQ(to_openai_error(*a.error), json::parse(R"({"message":"Too many requests, please wait before trying again.",
      "type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"})"));
}

TEST(ConverseFixturesTest, ModelStreamErrorMidStream) {
  std::vector<event> events = load_derived_events(derived_dir / "converse-stream-model-stream-error.expected.jsonl");
  events.push_back({"contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"late"}})"});
  const assembled a = run(events);
  EXPECT_EQ(a.content, "Let me count the \"");
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->status, 500u);
  EXPECT_EQ(a.error->type, "server_error");
  EXPECT_EQ(a.error->code, "model_error");
  EXPECT_EQ(a.error->message, "Model Stream Error: The model stream failed.");
  EXPECT_EQ(a.events_after_error, 1u);  // and run() checked it produced nothing
}

// ---------------------------------------------------------------------------------------------
// Stream cases the recordings do not cover

std::vector<json::object> feed(converse_stream_translator& tr, std::string_view type, std::string_view payload) {
  stream_step s = tr.on_event_text(type, payload);
  EXPECT_FALSE(s.error) << type << ": " << s.error->message;
  return s.chunks;
}

TEST(ConverseStreamTest, TwoToolCallsKeepTheirIndexesAcrossInterleavedBlocks) {
  converse_stream_translator tr(meta);
  auto first = feed(tr, "messageStart", R"({"role":"assistant"})");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].at("choices").at(0).at("delta"), json::parse(R"({"role":"assistant","content":""})"));
  feed(tr, "contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"Checking both."}})");
  feed(tr, "contentBlockStop", R"({"contentBlockIndex":0})");
  auto s1 = feed(tr, "contentBlockStart", R"({"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tu_a","name":"weather"}}})");
  ASSERT_EQ(s1.size(), 1u);
  EXPECT_EQ(s1[0].at("choices").at(0).at("delta"), json::parse(R"({"tool_calls":[{"index":0,"id":"tu_a","type":"function",
      "function":{"name":"weather","arguments":""}}]})"));
  auto s2 = feed(tr, "contentBlockStart", R"({"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"tu_b","name":"time"}}})");
  EXPECT_EQ(s2[0].at("choices").at(0).at("delta").at("tool_calls").at(0).at("index"), json::value(1));
  auto d2 = feed(tr, "contentBlockDelta", R"({"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"tz\":\"UTC\"}"}}})");
  EXPECT_EQ(d2[0].at("choices").at(0).at("delta"), json::parse(R"({"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":\"UTC\"}"}}]})"));
  auto d1 = feed(tr, "contentBlockDelta", R"({"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}})");
  EXPECT_EQ(d1[0].at("choices").at(0).at("delta").at("tool_calls").at(0).at("index"), json::value(0));
  EXPECT_TRUE(feed(tr, "contentBlockStop", R"({"contentBlockIndex":2})").empty());
  EXPECT_TRUE(feed(tr, "unknownFutureEvent", R"({"x":1})").empty());
  auto stop = feed(tr, "messageStop", R"({"stopReason":"tool_use"})");
  ASSERT_EQ(stop.size(), 1u);
  EXPECT_EQ(stop[0].at("choices").at(0), json::parse(R"({"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"})"));
  EXPECT_TRUE(feed(tr, "messageStop", R"({"stopReason":"end_turn"})").empty());  // one finish chunk only
  EXPECT_EQ(tr.finish_reason(), "tool_calls");
  stream_step m = tr.on_event_text("metadata", R"({"usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7,
      "cacheReadInputTokens":2},"metrics":{"latencyMs":5},"p":"abc"})");
  EXPECT_TRUE(m.chunks.empty());
  ASSERT_TRUE(m.usage);
  EXPECT_EQ(to_openai_usage(*m.usage), json::parse(R"({"prompt_tokens":5,"completion_tokens":4,"total_tokens":9,
      "prompt_tokens_details":{"cached_tokens":2}})"));
  EXPECT_TRUE(tr.finished());
  EXPECT_FALSE(tr.failed());
}

TEST(ConverseStreamTest, ReasoningSignatureIsNotForwardedAndEmptyDeltasSendNothing) {
  converse_stream_translator tr(meta);
  auto r = feed(tr, "contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hmm"}}})");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].at("choices").at(0).at("delta"), json::parse(R"({"role":"assistant","reasoning_content":"hmm"})"));
  EXPECT_TRUE(feed(tr, "contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"sig"}}})").empty());
  EXPECT_TRUE(feed(tr, "contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"reasoningContent":{"text":""}}})").empty());
  EXPECT_TRUE(feed(tr, "contentBlockDelta", R"({"contentBlockIndex":1,"delta":{"text":""}})").empty());
  EXPECT_TRUE(feed(tr, "messageStart", R"({"role":"assistant"})").empty());  // role already sent
}

TEST(ConverseStreamTest, MalformedEventsFailTheStream) {
  {
    converse_stream_translator tr(meta);
    stream_step s = tr.on_event_text("contentBlockDelta", R"({"contentBlockIndex":3,"delta":{"toolUse":{"input":"{}"}}})");
    ASSERT_TRUE(s.error);
    EXPECT_EQ(s.error->status, 502u);
    EXPECT_EQ(s.error->code, "invalid_upstream_response");
    EXPECT_TRUE(tr.failed());
    EXPECT_TRUE(tr.on_event_text("messageStop", R"({"stopReason":"end_turn"})").chunks.empty());
  }
  {
    converse_stream_translator tr(meta);
    stream_step s = tr.on_event_text("contentBlockDelta", "{not json");
    ASSERT_TRUE(s.error);
    EXPECT_EQ(s.error->status, 502u);
  }
  {
    converse_stream_translator tr(meta);
    stream_step s = tr.on_event("messageStop", json::value(42));
    ASSERT_TRUE(s.error);
  }
  {
    converse_stream_translator tr(meta);
    stream_step s = tr.on_event_text("serviceUnavailableException", "Service Unavailable");
    ASSERT_TRUE(s.error);
    EXPECT_EQ(s.error->status, 503u);
    EXPECT_TRUE(s.error->retryable);
  }
}

TEST(ConverseStreamTest, StreamExceptionTypes) {
  const struct {
    std::string_view type;
    unsigned status;
    std::string_view openai_type;
    bool retryable;
  } rows[] = {
      {"throttlingException", 429, "rate_limit_error", true},
      {"validationException", 400, "invalid_request_error", false},
      {"modelStreamErrorException", 500, "server_error", false},
      {"internalServerException", 500, "server_error", true},
      {"serviceUnavailableException", 503, "server_error", true},
      {"modelTimeoutException", 504, "server_error", true},
  };
  for (const auto& row : rows) {
    converse_stream_translator tr(meta);
    stream_step s = tr.on_event_text(row.type, R"({"message":"boom"})");
    ASSERT_TRUE(s.error) << row.type;
    EXPECT_EQ(s.error->status, row.status) << row.type;
    EXPECT_EQ(s.error->type, row.openai_type) << row.type;
    EXPECT_EQ(s.error->retryable, row.retryable) << row.type;
    EXPECT_EQ(s.error->message, "boom");
  }
}

}  // namespace
