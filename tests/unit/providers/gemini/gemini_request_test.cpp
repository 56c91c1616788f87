// SPDX-License-Identifier: Apache-2.0
// OpenAI chat request → generateContent body (PROTOCOLS.md §1.1 → §4.2).
#include "providers/vertex/gemini.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

namespace tollgate::providers::vertex {
namespace {

namespace json = boost::json;

json::object parse_object(std::string_view text) { return json::parse(text).as_object(); }

json::object translate_ok(std::string_view request) {
  auto r = to_generate_content_request(parse_object(request));
  EXPECT_TRUE(r) << (r ? std::string() : r.error().param + ": " + r.error().message);
  return r ? *r : json::object();
}

translate_error translate_fails(std::string_view request) {
  auto r = to_generate_content_request(parse_object(request));
  EXPECT_FALSE(r) << "unexpectedly translated: " << (r ? json::serialize(*r) : std::string());
  return r ? translate_error{} : r.error();
}

// --- messages -----------------------------------------------------------------------------------

TEST(GeminiRequestTest, SimpleUserMessage) {
  const json::object body = translate_ok(R"({"model":"gemini","messages":[{"role":"user","content":"Hello"}]})");
  EXPECT_EQ(json::value(body), json::parse(R"({"contents":[{"role":"user","parts":[{"text":"Hello"}]}]})"));
}

TEST(GeminiRequestTest, SystemAndDeveloperMessagesBecomeSystemInstruction) {
  const json::object body = translate_ok(R"({"messages":[
    {"role":"system","content":"You are terse."},
    {"role":"developer","content":[{"type":"text","text":"Answer in French."}]},
    {"role":"user","content":"Hi"},
    {"role":"system","content":""}]})");
  EXPECT_EQ(body.at("systemInstruction"),
            json::parse(R"({"parts":[{"text":"You are terse."},{"text":"Answer in French."}]})"));
  EXPECT_EQ(body.at("contents"), json::parse(R"([{"role":"user","parts":[{"text":"Hi"}]}])"));
}

TEST(GeminiRequestTest, MultiTurnMapsRolesAndMergesConsecutiveTurns) {
  const json::object body = translate_ok(R"({"messages":[
    {"role":"user","content":"one"},
    {"role":"user","content":[{"type":"text","text":"two"},{"type":"text","text":""}]},
    {"role":"assistant","content":"three"},
    {"role":"assistant","content":[{"type":"text","text":"four"}]},
    {"role":"assistant","content":null},
    {"role":"user","content":"five"}]})");
  EXPECT_EQ(body.at("contents"), json::parse(R"([
    {"role":"user","parts":[{"text":"one"},{"text":"two"}]},
    {"role":"model","parts":[{"text":"three"},{"text":"four"}]},
    {"role":"user","parts":[{"text":"five"}]}])"));
  EXPECT_FALSE(body.contains("systemInstruction"));
  EXPECT_FALSE(body.contains("generationConfig"));
}

TEST(GeminiRequestTest, ToolRoundTrip) {
  const json::object body = translate_ok(R"({"messages":[
    {"role":"user","content":"Weather in SF and NYC?"},
    {"role":"assistant","content":null,"tool_calls":[
      {"id":"call_a","type":"function","function":{"name":"weather","arguments":"{\"location\":\"SF\"}"}},
      {"id":"call_b","type":"function","function":{"name":"time","arguments":""}}]},
    {"role":"tool","tool_call_id":"call_a","content":"{\"temp\":20}"},
    {"role":"tool","tool_call_id":"call_b","content":[{"type":"text","text":"noon"}]},
    {"role":"user","content":"Thanks"}],
    "tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"location":{"type":"string"}}}}},
             {"type":"function","function":{"name":"time"}}]})");
  EXPECT_EQ(body.at("contents"), json::parse(R"([
    {"role":"user","parts":[{"text":"Weather in SF and NYC?"}]},
    {"role":"model","parts":[
      {"functionCall":{"name":"weather","args":{"location":"SF"}},"thoughtSignature":"skip_thought_signature_validator"},
      {"functionCall":{"name":"time","args":{}}}]},
    {"role":"user","parts":[
      {"functionResponse":{"name":"weather","response":{"content":{"temp":20}}}},
      {"functionResponse":{"name":"time","response":{"content":"noon"}}},
      {"text":"Thanks"}]}])"));
}

TEST(GeminiRequestTest, ThoughtSignatureIsEchoedFromExtraContent) {
  const json::object body = translate_ok(R"({"messages":[
    {"role":"user","content":"q"},
    {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"},
      "extra_content":{"google":{"thought_signature":"EskgCsYg"}}}]},
    {"role":"tool","tool_call_id":"c1","content":"ok"}]})");
  const json::array& model_parts = body.at("contents").as_array()[1].at("parts").as_array();
  ASSERT_EQ(model_parts.size(), 1u);
  EXPECT_EQ(model_parts[0].at("thoughtSignature"), "EskgCsYg");
}

TEST(GeminiRequestTest, AssistantTextAndToolCallsShareTheModelTurn) {
  const json::object body = translate_ok(R"({"messages":[
    {"role":"user","content":"q"},
    {"role":"assistant","content":"Let me check.","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":[1,2]}"}}]},
    {"role":"tool","tool_call_id":"c1","content":"not json {"}]})");
  EXPECT_EQ(body.at("contents").as_array()[1], json::parse(R"({"role":"model","parts":[
    {"text":"Let me check."},
    {"functionCall":{"name":"f","args":{"a":[1,2]}},"thoughtSignature":"skip_thought_signature_validator"}]})"));
  EXPECT_EQ(body.at("contents").as_array()[2].at("parts").as_array()[0].at("functionResponse").at("response"),
            json::parse(R"({"content":"not json {"})"));
}

TEST(GeminiRequestTest, InvalidToolArgumentsNameTheParam) {
  const translate_error e = translate_fails(R"({"messages":[
    {"role":"user","content":"q"},
    {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{not json"}}]}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages[1].tool_calls[0].function.arguments");

  const translate_error arr = translate_fails(R"({"messages":[
    {"role":"user","content":"q"},
    {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]})");
  EXPECT_EQ(arr.param, "messages[1].tool_calls[0].function.arguments");
}

TEST(GeminiRequestTest, ToolResultForUnknownCallIsRefused) {
  const translate_error e = translate_fails(R"({"messages":[
    {"role":"user","content":"q"},
    {"role":"tool","tool_call_id":"nope","content":"x"}]})");
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "messages[1].tool_call_id");
  EXPECT_NE(e.message.find("nope"), std::string::npos);

  const translate_error missing = translate_fails(R"({"messages":[{"role":"tool","content":"x"}]})");
  EXPECT_EQ(missing.code, translate_errc::missing_parameter);
  EXPECT_EQ(missing.param, "messages[0].tool_call_id");
}

TEST(GeminiRequestTest, ImagesAsDataUrlsBecomeInlineData) {
  const json::object body = translate_ok(R"({"messages":[{"role":"user","content":[
    {"type":"text","text":"What is this?"},
    {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}}]}]})");
  EXPECT_EQ(body.at("contents").as_array()[0].at("parts"), json::parse(R"([
    {"text":"What is this?"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}])"));
}

TEST(GeminiRequestTest, UnsupportedInputsAreRefusedWithTheirParam) {
  const translate_error url = translate_fails(R"({"messages":[{"role":"user","content":[
    {"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]})");
  EXPECT_EQ(url.code, translate_errc::unsupported);
  EXPECT_EQ(url.param, "messages[0].content[0].image_url.url");

  const translate_error audio = translate_fails(R"({"messages":[{"role":"user","content":[
    {"type":"text","text":"listen"},{"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]})");
  EXPECT_EQ(audio.code, translate_errc::unsupported);
  EXPECT_EQ(audio.param, "messages[0].content[1]");

  const translate_error file = translate_fails(R"({"messages":[{"role":"user","content":[
    {"type":"file","file":{"file_id":"file-123"}}]}]})");
  EXPECT_EQ(file.code, translate_errc::unsupported);
  EXPECT_EQ(file.param, "messages[0].content[0].file.file_data");

  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"audio":{"voice":"alloy"}})").param, "audio");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"modalities":["text","audio"]})").param,
            "modalities");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"logprobs":true})").param, "logprobs");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]})").param,
            "functions");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"x"}}]}]})")
                .param,
            "messages[0].content[0].type");
}

TEST(GeminiRequestTest, MalformedMessagesAreRefused) {
  EXPECT_EQ(translate_fails(R"({"model":"m"})").code, translate_errc::missing_parameter);
  EXPECT_EQ(translate_fails(R"({"messages":{}})").code, translate_errc::invalid_type);
  EXPECT_EQ(translate_fails(R"({"messages":[]})").param, "messages");
  EXPECT_EQ(translate_fails(R"({"messages":[{"content":"x"}]})").param, "messages[0].role");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"robot","content":"x"}]})").param, "messages[0].role");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":""}]})").param, "messages[0].content");
  // Only a system prompt: Gemini needs at least one turn.
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"system","content":"be nice"}]})").param, "messages");
}

// --- generationConfig ---------------------------------------------------------------------------

TEST(GeminiRequestTest, SamplingParametersGoToGenerationConfig) {
  const json::object body = translate_ok(R"({"messages":[{"role":"user","content":"x"}],
    "max_completion_tokens":512,"max_tokens":99,"temperature":0.2,"top_p":0.9,"seed":7,
    "presence_penalty":0,"frequency_penalty":0.5,"n":1,"user":"u-1","parallel_tool_calls":true,
    "stream":true,"stream_options":{"include_usage":true}})");
  EXPECT_EQ(body.at("generationConfig"), json::parse(R"({"maxOutputTokens":512,"temperature":0.2,"topP":0.9,
    "seed":7,"frequencyPenalty":0.5})"));
}

TEST(GeminiRequestTest, MaxTokensIsUsedWhenAlone) {
  const json::object body = translate_ok(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":64})");
  EXPECT_EQ(body.at("generationConfig"), json::parse(R"({"maxOutputTokens":64})"));
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})").param, "max_tokens");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})").param, "temperature");
}

TEST(GeminiRequestTest, StopVariants) {
  EXPECT_EQ(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"stop":"END"})").at("generationConfig"),
            json::parse(R"({"stopSequences":["END"]})"));
  EXPECT_EQ(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"stop":["a","","b"]})").at("generationConfig"),
            json::parse(R"({"stopSequences":["a","b"]})"));
  EXPECT_FALSE(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"stop":null})").contains("generationConfig"));
  EXPECT_FALSE(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"stop":""})").contains("generationConfig"));
  EXPECT_FALSE(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"stop":[]})").contains("generationConfig"));
  const translate_error e = translate_fails(R"({"messages":[{"role":"user","content":"x"}],"stop":["a",3]})");
  EXPECT_EQ(e.code, translate_errc::invalid_type);
  EXPECT_EQ(e.param, "stop[1]");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"stop":5})").param, "stop");
}

TEST(GeminiRequestTest, MoreThanOneChoiceIsRefused) {
  const translate_error e = translate_fails(R"({"messages":[{"role":"user","content":"x"}],"n":2})");
  EXPECT_EQ(e.code, translate_errc::unsupported);
  EXPECT_EQ(e.param, "n");
  EXPECT_EQ(to_string(e.code), "unsupported_parameter");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"n":0})").code, translate_errc::invalid_value);
}

TEST(GeminiRequestTest, ResponseFormatJsonObject) {
  const json::object body = translate_ok(R"({"messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"json_object"}})");
  EXPECT_EQ(body.at("generationConfig"), json::parse(R"({"responseMimeType":"application/json"})"));
  EXPECT_FALSE(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}})")
                   .contains("generationConfig"));
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}})").param,
            "response_format.type");
}

TEST(GeminiRequestTest, ResponseFormatJsonSchemaBecomesResponseSchema) {
  const json::object body = translate_ok(R"({"messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,"schema":{
      "type":"object","additionalProperties":false,"required":["name","age","tags"],
      "properties":{"name":{"type":"string","description":"full name"},
                    "age":{"type":["integer","null"]},
                    "tags":{"type":"array","items":{"type":"string","enum":["a","b"]}}}}}}})");
  EXPECT_EQ(body.at("generationConfig"), json::parse(R"({"responseMimeType":"application/json","responseSchema":{
    "type":"OBJECT","required":["name","age","tags"],
    "properties":{"name":{"type":"STRING","description":"full name"},
                  "age":{"type":"INTEGER","nullable":true},
                  "tags":{"type":"ARRAY","items":{"type":"STRING","enum":["a","b"]}}},
    "propertyOrdering":["name","age","tags"]}})"));
}

TEST(GeminiRequestTest, InexpressibleJsonSchemaIsSentAsResponseJsonSchema) {
  const json::object request = parse_object(R"({"messages":[{"role":"user","content":"x"}],
    "response_format":{"type":"json_schema","json_schema":{"name":"tree","schema":{
      "$defs":{"node":{"type":"object","properties":{"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}}}},
      "$ref":"#/$defs/node"}}}})");
  auto body = to_generate_content_request(request);
  ASSERT_TRUE(body);
  const json::object& gen = body->at("generationConfig").as_object();
  EXPECT_EQ(gen.at("responseMimeType"), "application/json");
  EXPECT_FALSE(gen.contains("responseSchema"));
  EXPECT_EQ(gen.at("responseJsonSchema"), request.at("response_format").at("json_schema").at("schema"));
}

// --- tools ------------------------------------------------------------------------------------

constexpr std::string_view two_tools = R"("tools":[
  {"type":"function","function":{"name":"weather","description":"Get weather","strict":true,
    "parameters":{"type":"object","properties":{"location":{"type":"string"},"unit":{"type":"string","enum":["c","f"]}},
                  "required":["location"],"additionalProperties":false}}},
  {"type":"function","function":{"name":"ping","parameters":{"type":"object","properties":{}}}}])";

std::string with_tools(std::string_view extra) {
  std::string s = R"({"messages":[{"role":"user","content":"x"}],)";
  s += two_tools;
  if (!extra.empty()) {
    s += ',';
    s += extra;
  }
  s += '}';
  return s;
}

TEST(GeminiRequestTest, ToolsBecomeFunctionDeclarations) {
  const json::object body = translate_ok(with_tools(""));
  EXPECT_EQ(body.at("tools"), json::parse(R"([{"functionDeclarations":[
    {"name":"weather","description":"Get weather","parameters":{"type":"OBJECT",
      "properties":{"location":{"type":"STRING"},"unit":{"type":"STRING","enum":["c","f"]}},
      "propertyOrdering":["location","unit"],"required":["location"]}},
    {"name":"ping"}]}])"));
  EXPECT_FALSE(body.contains("toolConfig"));
}

TEST(GeminiRequestTest, InexpressibleToolParametersUseParametersJsonSchema) {
  const json::object request = parse_object(R"({"messages":[{"role":"user","content":"x"}],"tools":[
    {"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{
      "v":{"oneOf":[{"type":"string"},{"type":"number"}]}}}}}]})");
  auto body = to_generate_content_request(request);
  ASSERT_TRUE(body);
  const json::object& decl = body->at("tools").as_array()[0].at("functionDeclarations").as_array()[0].as_object();
  EXPECT_FALSE(decl.contains("parameters"));
  EXPECT_EQ(decl.at("parametersJsonSchema"), request.at("tools").as_array()[0].at("function").at("parameters"));
}

TEST(GeminiRequestTest, ToolChoiceVariants) {
  const auto fcc = [](std::string_view choice) {
    return translate_ok(with_tools(std::string("\"tool_choice\":") + std::string(choice)))
        .at("toolConfig")
        .at("functionCallingConfig");
  };
  EXPECT_EQ(fcc(R"("auto")"), json::parse(R"({"mode":"AUTO"})"));
  EXPECT_EQ(fcc(R"("none")"), json::parse(R"({"mode":"NONE"})"));
  EXPECT_EQ(fcc(R"("required")"), json::parse(R"({"mode":"ANY"})"));
  EXPECT_EQ(fcc(R"({"type":"function","function":{"name":"weather"}})"),
            json::parse(R"({"mode":"ANY","allowedFunctionNames":["weather"]})"));
  EXPECT_EQ(fcc(R"({"type":"allowed_tools","allowed_tools":{"mode":"required","tools":[{"type":"function","function":{"name":"ping"}}]}})"),
            json::parse(R"({"mode":"ANY","allowedFunctionNames":["ping"]})"));

  // allowed_tools in auto mode: Gemini takes allowedFunctionNames only with ANY, so only the allowed
  // declarations are sent.
  const json::object auto_allowed = translate_ok(with_tools(
      R"("tool_choice":{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[{"type":"function","function":{"name":"ping"}}]}})"));
  EXPECT_EQ(auto_allowed.at("toolConfig"), json::parse(R"({"functionCallingConfig":{"mode":"AUTO"}})"));
  const json::array& decls = auto_allowed.at("tools").as_array()[0].at("functionDeclarations").as_array();
  ASSERT_EQ(decls.size(), 1u);
  EXPECT_EQ(decls[0].at("name"), "ping");
}

TEST(GeminiRequestTest, ToolChoiceErrors) {
  const translate_error unknown = translate_fails(with_tools(R"("tool_choice":{"type":"function","function":{"name":"nope"}})"));
  EXPECT_EQ(unknown.code, translate_errc::invalid_value);
  EXPECT_EQ(unknown.param, "tool_choice.function.name");
  EXPECT_EQ(translate_fails(R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"required"})").param, "tool_choice");
  EXPECT_EQ(translate_fails(with_tools(R"("tool_choice":"sometimes")")).param, "tool_choice");
  // tool_choice "none"/"auto" without tools: nothing to configure.
  EXPECT_FALSE(translate_ok(R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"none"})").contains("toolConfig"));
  const translate_error custom = translate_fails(R"({"messages":[{"role":"user","content":"x"}],
    "tools":[{"type":"custom","custom":{"name":"grammar"}}]})");
  EXPECT_EQ(custom.code, translate_errc::unsupported);
  EXPECT_EQ(custom.param, "tools[0].type");
}

// --- JSON Schema → Vertex Schema -----------------------------------------------------------------

TEST(GeminiSchemaTest, AnyOfWithNullBecomesNullable) {
  auto s = to_vertex_schema(json::parse(R"({"description":"maybe a date",
    "anyOf":[{"type":"string","format":"date"},{"type":"null"}]})"));
  ASSERT_TRUE(s);
  EXPECT_EQ(json::value(*s), json::parse(R"({"description":"maybe a date","type":"STRING","format":"date","nullable":true})"));
}

TEST(GeminiSchemaTest, AnyOfWithSeveralBranchesIsKept) {
  auto s = to_vertex_schema(json::parse(R"({"anyOf":[{"type":"string"},{"type":"integer","minimum":0}]})"));
  ASSERT_TRUE(s);
  EXPECT_EQ(json::value(*s), json::parse(R"({"anyOf":[{"type":"STRING"},{"type":"INTEGER","minimum":0}]})"));
}

TEST(GeminiSchemaTest, ConstBecomesEnumAndNumericLimitsAreKept) {
  auto s = to_vertex_schema(json::parse(R"({"$schema":"http://json-schema.org/draft-07/schema#","type":"object",
    "properties":{"kind":{"const":"circle"},"r":{"type":"number","minimum":0,"maximum":10},
                  "pts":{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":4,"uniqueItems":true}}})"));
  ASSERT_TRUE(s);
  EXPECT_EQ(json::value(*s), json::parse(R"({"type":"OBJECT","properties":{
    "kind":{"enum":["circle"]},"r":{"type":"NUMBER","minimum":0,"maximum":10},
    "pts":{"type":"ARRAY","items":{"type":"INTEGER"},"minItems":1,"maxItems":4}},
    "propertyOrdering":["kind","r","pts"]})"));
}

TEST(GeminiSchemaTest, InexpressibleSchemas) {
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"$ref":"#/$defs/x"})")));
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"type":["string","number"]})")));
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"type":"null"})")));
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"enum":[1,2]})")));
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"type":"array","items":[{"type":"string"}]})")));
  EXPECT_FALSE(to_vertex_schema(json::parse(R"({"type":"object","properties":{"a":{"not":{"type":"string"}}}})")));
  EXPECT_FALSE(to_vertex_schema(json::parse("true")));
}

}  // namespace
}  // namespace tollgate::providers::vertex
