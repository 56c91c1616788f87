// SPDX-License-Identifier: Apache-2.0
// OpenAI chat request → Bedrock Converse body: system prompts, multi-turn, merging for
// alternation, tool round trips, inference settings, tool_choice variants, and every refusal with
// its OpenAI `param`.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <string>
#include <string_view>

#include "providers/bedrock/converse.hpp"

namespace {

namespace json = boost::json;
using tollgate::providers::bedrock::to_converse_request;
using tollgate::providers::bedrock::translate_errc;
using tollgate::providers::bedrock::translate_error;

json::object obj(std::string_view text) { return json::parse(text).as_object(); }

/// Translates and expects success; the body on failure is empty (and the test has failed).
json::object ok(std::string_view request) {
  auto r = to_converse_request(obj(request));
  if (!r) {
    ADD_FAILURE() << "refused: " << r.error().message << " (param " << r.error().param << ")";
    return {};
  }
  return *r;
}

translate_error refused(std::string_view request) {
  auto r = to_converse_request(obj(request));
  if (r) {
    ADD_FAILURE() << "accepted: " << json::serialize(*r);
    return {};
  }
  return r.error();
}

TEST(ConverseRequestTest, SystemAndUserTextWithoutModelOrStreamInBody) {
  const json::object body = ok(R"({"model":"claude","stream":true,"messages":[
      {"role":"system","content":"You are terse."},
      {"role":"user","content":"Hello"}]})");
  EXPECT_EQ(body, obj(R"({"messages":[{"role":"user","content":[{"text":"Hello"}]}],
                          "system":[{"text":"You are terse."}]})"));
}

TEST(ConverseRequestTest, DeveloperAndLateSystemMessagesAllGoToSystemInOrder) {
  const json::object body = ok(R"({"messages":[
      {"role":"developer","content":[{"type":"text","text":"Rule one."},{"type":"text","text":"Rule two."}]},
      {"role":"user","content":"Hi"},
      {"role":"system","content":"Rule three."}]})");
  EXPECT_EQ(body.at("system"), json::parse(R"([{"text":"Rule one."},{"text":"Rule two."},{"text":"Rule three."}])"));
  EXPECT_EQ(body.at("messages"), json::parse(R"([{"role":"user","content":[{"text":"Hi"}]}])"));
}

TEST(ConverseRequestTest, MultiTurnKeepsAlternationAndTextParts) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":[{"type":"text","text":"What is 2+2?"},{"type":"text","text":"Be brief."}]},
      {"role":"assistant","content":"4"},
      {"role":"user","content":"And 3+3?"}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"([
      {"role":"user","content":[{"text":"What is 2+2?"},{"text":"Be brief."}]},
      {"role":"assistant","content":[{"text":"4"}]},
      {"role":"user","content":[{"text":"And 3+3?"}]}])"));
  EXPECT_FALSE(body.contains("system"));
  EXPECT_FALSE(body.contains("inferenceConfig"));
  EXPECT_FALSE(body.contains("toolConfig"));
}

TEST(ConverseRequestTest, ConsecutiveSameRoleMessagesAreMerged) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"one"},
      {"role":"user","content":"two"},
      {"role":"assistant","content":"three"},
      {"role":"assistant","content":[{"type":"text","text":"four"}]},
      {"role":"user","content":"five"}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"([
      {"role":"user","content":[{"text":"one"},{"text":"two"}]},
      {"role":"assistant","content":[{"text":"three"},{"text":"four"}]},
      {"role":"user","content":[{"text":"five"}]}])"));
}

TEST(ConverseRequestTest, BlankMessagesAreDroppedAndTheirNeighboursMerged) {
  // Converse refuses blank text blocks; an empty assistant turn between two user turns vanishes.
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"first"},
      {"role":"assistant","content":"  "},
      {"role":"user","content":[{"type":"text","text":""},{"type":"text","text":"second"}]}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"([{"role":"user","content":[{"text":"first"},{"text":"second"}]}])"));
}

TEST(ConverseRequestTest, OnlyBlankMessagesAreRefused) {
  const translate_error e = refused(R"({"messages":[{"role":"system","content":"sys"},{"role":"user","content":""}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages");
}

TEST(ConverseRequestTest, AConversationThatBeginsWithTheAssistantIsRefusedNamingTheMessage) {
  // Bedrock answers a ValidationException; OpenAI takes it. Said before anything is sent, with
  // the message that begins it (after the system messages, and after a blank user message).
  const translate_error e = refused(R"({"messages":[{"role":"system","content":"sys"},{"role":"user","content":" "},
    {"role":"assistant","content":"Hi, how can I help?"},{"role":"user","content":"weather?"}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages[2].role");
  EXPECT_NE(e.message.find("begins with a user message"), std::string::npos) << e.message;
}

TEST(ConverseRequestTest, ToolRoundTrip) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"Weather in Paris and Rome?"},
      {"role":"assistant","content":null,"tool_calls":[
        {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
        {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\",\"units\":{\"temp\":\"C\"}}"}}]},
      {"role":"tool","tool_call_id":"call_1","content":"18C sunny"},
      {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C "},{"type":"text","text":"cloudy"}]},
      {"role":"user","content":"Thanks, which is warmer?"}],
    "tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather",
              "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"([
      {"role":"user","content":[{"text":"Weather in Paris and Rome?"}]},
      {"role":"assistant","content":[
        {"toolUse":{"toolUseId":"call_1","name":"get_weather","input":{"city":"Paris"}}},
        {"toolUse":{"toolUseId":"call_2","name":"get_weather","input":{"city":"Rome","units":{"temp":"C"}}}}]},
      {"role":"user","content":[
        {"toolResult":{"toolUseId":"call_1","content":[{"text":"18C sunny"}]}},
        {"toolResult":{"toolUseId":"call_2","content":[{"text":"21C cloudy"}]}},
        {"text":"Thanks, which is warmer?"}]}])"));
  EXPECT_EQ(body.at("toolConfig"), json::parse(R"({"tools":[{"toolSpec":{"name":"get_weather",
      "description":"Current weather",
      "inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}}]})"));
}

TEST(ConverseRequestTest, AssistantTextAndToolCallsShareOneMessage) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"Update it"},
      {"role":"assistant","content":"I'll update the issue list for you.","tool_calls":[
        {"id":"t1","type":"function","function":{"name":"updateIssueList","arguments":""}}]},
      {"role":"tool","tool_call_id":"t1","content":""}],
    "tools":[{"type":"function","function":{"name":"updateIssueList"}}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"j([
      {"role":"user","content":[{"text":"Update it"}]},
      {"role":"assistant","content":[{"text":"I'll update the issue list for you."},
        {"toolUse":{"toolUseId":"t1","name":"updateIssueList","input":{}}}]},
      {"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"text":"(empty)"}]}}]}])j"));
  // No parameters: an open object schema; no description key at all.
  EXPECT_EQ(body.at("toolConfig"), json::parse(R"({"tools":[{"toolSpec":{"name":"updateIssueList",
      "inputSchema":{"json":{"type":"object","properties":{}}}}}]})"));
}

TEST(ConverseRequestTest, BadToolArgumentsJsonIsRefusedWithItsParam) {
  const translate_error e = refused(R"({"messages":[
      {"role":"user","content":"go"},
      {"role":"assistant","tool_calls":[
        {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
        {"id":"b","type":"function","function":{"name":"f","arguments":"{\"x\": 1,"}}]}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages[1].tool_calls[1].function.arguments");
  EXPECT_NE(e.message.find("not valid JSON"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("messages[1].tool_calls[1].function.arguments"), std::string::npos) << e.message;
}

TEST(ConverseRequestTest, ToolArgumentsMustBeAnObject) {
  const translate_error e = refused(R"({"messages":[{"role":"user","content":"go"},
      {"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1,2]"}}]}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");
}

TEST(ConverseRequestTest, MissingToolCallIdIsRefused) {
  const translate_error e = refused(R"({"messages":[{"role":"user","content":"go"},{"role":"tool","content":"x"}]})");
  EXPECT_EQ(e.code, translate_errc::missing_parameter);
  EXPECT_EQ(e.param, "messages[1].tool_call_id");
}

TEST(ConverseRequestTest, InferenceConfig) {
  const json::object body = ok(R"({"messages":[{"role":"user","content":"x"}],
      "max_tokens":256,"temperature":0.5,"top_p":0.9,"stop":"END"})");
  EXPECT_EQ(body.at("inferenceConfig"),
            json::parse(R"({"maxTokens":256,"temperature":0.5,"topP":0.9,"stopSequences":["END"]})"));
}

TEST(ConverseRequestTest, MaxCompletionTokensWinsOverMaxTokens) {
  const json::object body = ok(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":10,"max_completion_tokens":20})");
  EXPECT_EQ(body.at("inferenceConfig"), json::parse(R"({"maxTokens":20})"));
}

TEST(ConverseRequestTest, StopAsArrayAndEmptyStops) {
  EXPECT_EQ(ok(R"({"messages":[{"role":"user","content":"x"}],"stop":["a","b"]})").at("inferenceConfig"),
            json::parse(R"({"stopSequences":["a","b"]})"));
  EXPECT_FALSE(ok(R"({"messages":[{"role":"user","content":"x"}],"stop":""})").contains("inferenceConfig"));
  EXPECT_FALSE(ok(R"({"messages":[{"role":"user","content":"x"}],"stop":null,"temperature":null})").contains("inferenceConfig"));
  const translate_error e = refused(R"({"messages":[{"role":"user","content":"x"}],"stop":["a",3]})");
  EXPECT_EQ(e.code, translate_errc::invalid_type);
  EXPECT_EQ(e.param, "stop[1]");
}

TEST(ConverseRequestTest, BadInferenceValuesAreRefused) {
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":"5"})").param, "max_tokens");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":"x"}],"max_completion_tokens":0})").param,
            "max_completion_tokens");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})").param, "temperature");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":"x"}],"top_p":[1]})").param, "top_p");
}

constexpr std::string_view two_tools = R"("tools":[
    {"type":"function","function":{"name":"a","parameters":{"type":"object"}}},
    {"type":"function","function":{"name":"b","parameters":{"type":"object"}}}])";

json::object with_choice(std::string_view choice) {
  std::string req = R"({"messages":[{"role":"user","content":"x"}],)" + std::string(two_tools);
  if (!choice.empty()) req += R"(,"tool_choice":)" + std::string(choice);
  return ok(req + "}");
}

TEST(ConverseRequestTest, ToolChoiceVariants) {
  EXPECT_FALSE(with_choice("").at("toolConfig").as_object().contains("toolChoice"));
  EXPECT_EQ(with_choice(R"("auto")").at("toolConfig").at("toolChoice"), json::parse(R"({"auto":{}})"));
  EXPECT_EQ(with_choice(R"("required")").at("toolConfig").at("toolChoice"), json::parse(R"({"any":{}})"));
  EXPECT_EQ(with_choice(R"({"type":"function","function":{"name":"b"}})").at("toolConfig").at("toolChoice"),
            json::parse(R"({"tool":{"name":"b"}})"));
  EXPECT_EQ(with_choice(R"("auto")").at("toolConfig").at("tools").as_array().size(), 2u);
  EXPECT_FALSE(with_choice(R"("none")").contains("toolConfig"));
}

TEST(ConverseRequestTest, ToolChoiceNoneKeepsToolsWhenHistoryHasToolBlocks) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"x"},
      {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"a","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"c","content":"done"}],)" + std::string(two_tools) + R"(,"tool_choice":"none"})");
  ASSERT_TRUE(body.contains("toolConfig"));
  EXPECT_EQ(body.at("toolConfig").at("tools").as_array().size(), 2u);
  EXPECT_FALSE(body.at("toolConfig").as_object().contains("toolChoice"));
}

TEST(ConverseRequestTest, ToolHistoryWithoutToolsDeclaresTheUsedNames) {
  const json::object body = ok(R"({"messages":[
      {"role":"user","content":"x"},
      {"role":"assistant","tool_calls":[
        {"id":"c1","type":"function","function":{"name":"lookup","arguments":"{}"}},
        {"id":"c2","type":"function","function":{"name":"lookup","arguments":"{}"}}]},
      {"role":"tool","tool_call_id":"c1","content":"r1"},
      {"role":"tool","tool_call_id":"c2","content":"r2"}]})");
  EXPECT_EQ(body.at("toolConfig"), json::parse(R"({"tools":[{"toolSpec":{"name":"lookup",
      "inputSchema":{"json":{"type":"object","properties":{}}}}}]})"));
}

TEST(ConverseRequestTest, BadToolChoicesAreRefused) {
  const std::string base = R"({"messages":[{"role":"user","content":"x"}],)";
  translate_error e = refused(base + std::string(two_tools) + R"(,"tool_choice":{"type":"function","function":{"name":"zzz"}}})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "tool_choice");
  e = refused(base + std::string(two_tools) + R"(,"tool_choice":"sometimes"})");
  EXPECT_EQ(e.param, "tool_choice");
  e = refused(base + R"("tool_choice":"required"})");
  EXPECT_EQ(e.param, "tool_choice");
  e = refused(base + R"("tools":[{"type":"custom","custom":{"name":"x"}}]})");
  EXPECT_EQ(e.code, translate_errc::unsupported);
  EXPECT_EQ(e.param, "tools[0].type");
  e = refused(base + R"("tools":[{"type":"function","function":{"parameters":{}}}]})");
  EXPECT_EQ(e.code, translate_errc::missing_parameter);
  EXPECT_EQ(e.param, "tools[0].function.name");
}

TEST(ConverseRequestTest, UnsupportedInputsNameTheirParam) {
  struct row {
    std::string_view request;
    std::string_view param;
  };
  const row rows[] = {
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":"see"},
          {"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]})",
       "messages[0].content[1].image_url.url"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/bmp;base64,Qk0="}}]}]})",
       "messages[0].content[0].image_url.url"},
      {R"({"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]},
          {"role":"user","content":"x"}]})",
       "messages[0].content[0]"},
      {R"({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]}]})",
       "messages[0].content[0]"},
      {R"({"messages":[{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}]})", "messages[0].content[0]"},
      {R"({"messages":[{"role":"user","content":"x"}],"n":2})", "n"},
      {R"({"messages":[{"role":"user","content":"x"}],"audio":{"voice":"alloy","format":"mp3"}})", "audio"},
      {R"({"messages":[{"role":"user","content":"x"}],"modalities":["text","audio"]})", "modalities"},
      {R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})", "logprobs"},
      {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}})", "response_format"},
      {R"({"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]})", "functions"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"function","name":"f","content":"r"}]})", "messages[1].role"},
  };
  for (const row& r : rows) {
    const translate_error e = refused(r.request);
    EXPECT_EQ(e.code, translate_errc::unsupported) << r.request;
    EXPECT_EQ(e.param, r.param) << r.request;
    EXPECT_NE(e.message.find("Amazon Bedrock"), std::string::npos) << e.message;
  }
}

TEST(ConverseRequestTest, ImagesSentAsDataUrlsBecomeImageBlocksInTheirPlace) {
  // Converse takes png, jpeg, gif and webp as base64 bytes in the JSON API; the text around an
  // image keeps its order.
  const json::object body = ok(R"({"messages":[{"role":"user","content":[{"type":"text","text":"what is"},
      {"type":"image_url","image_url":{"url":"data:image/PNG;base64,iVBORw0KGgo=","detail":"high"}},
      {"type":"text","text":"and"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}}]}]})");
  EXPECT_EQ(body.at("messages"), json::parse(R"([{"role":"user","content":[{"text":"what is"},
      {"image":{"format":"png","source":{"bytes":"iVBORw0KGgo="}}},{"text":"and"},
      {"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}]}])"));
}

TEST(ConverseRequestTest, HarmlessOpenAiFieldsAreAccepted) {
  const json::object body = ok(R"({"messages":[{"role":"user","content":"x"}],"n":1,"logprobs":false,
      "response_format":{"type":"text"},"presence_penalty":0.5,"seed":7,"user":"u","stream_options":{"include_usage":true},
      "parallel_tool_calls":true,"modalities":["text"]})");
  EXPECT_EQ(body, obj(R"({"messages":[{"role":"user","content":[{"text":"x"}]}]})"));
}

TEST(ConverseRequestTest, MalformedMessagesAreRefusedWithParams) {
  EXPECT_EQ(refused(R"({"model":"m"})").code, translate_errc::missing_parameter);
  EXPECT_EQ(refused(R"({"messages":{}})").param, "messages");
  EXPECT_EQ(refused(R"({"messages":[]})").param, "messages");
  EXPECT_EQ(refused(R"({"messages":[{"content":"x"}]})").param, "messages[0].role");
  EXPECT_EQ(refused(R"({"messages":[{"role":"robot","content":"x"}]})").param, "messages[0].role");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user"}]})").param, "messages[0].content");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":5}]})").code, translate_errc::invalid_type);
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})").param, "messages[0].content[0].text");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":[{"type":"video"}]}]})").param, "messages[0].content[0].type");
  EXPECT_EQ(refused(R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"type":"function",
      "function":{"name":"f","arguments":"{}"}}]}]})").param, "messages[1].tool_calls[0].id");
}

}  // namespace
