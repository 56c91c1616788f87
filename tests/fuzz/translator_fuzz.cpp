// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the JSON translators (OpenAI ⇄ Bedrock Converse, OpenAI ⇄ Gemini) must never
// crash or throw on any input, whether it arrives as a request, a response or stream events.
// The first byte picks the role the rest plays.
#include <boost/json/parse.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "providers/bedrock/converse.hpp"
#include "providers/vertex/gemini.hpp"

namespace bedrock = tollgate::providers::bedrock;
namespace vertex = tollgate::providers::vertex;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const int role = data[0] % 4;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  boost::system::error_code ec;
  auto v = boost::json::parse(in, ec);
  switch (role) {
    case 0:  // a caller's chat request
      if (!ec && v.is_object()) {
        (void)bedrock::to_converse_request(v.get_object());
        (void)vertex::to_generate_content_request(v.get_object());
        (void)bedrock::to_embedding_calls(v.get_object(), "amazon.titan-embed-text-v2:0");
        (void)vertex::to_predict_requests(v.get_object());
      }
      break;
    case 1:  // a provider's whole answer
      if (!ec) {
        (void)bedrock::to_chat_completion(v, {"id", 0, "m"});
        (void)vertex::to_chat_completion(v, {"id", 0, "m"});
        (void)bedrock::map_bedrock_http_error(400, "", in);
        (void)vertex::map_google_error(400, in);
      }
      break;
    case 2: {  // ConverseStream events: lines "<eventType> <payload>"
      bedrock::converse_stream_translator t({"id", 0, "m"});
      std::size_t start = 0;
      while (start < in.size()) {
        std::size_t nl = in.find('\n', start);
        if (nl == std::string_view::npos) nl = in.size();
        auto line = in.substr(start, nl - start);
        auto sp = line.find(' ');
        if (sp != std::string_view::npos) (void)t.on_event_text(line.substr(0, sp), line.substr(sp + 1));
        start = nl + 1;
      }
      break;
    }
    default: {  // Gemini SSE payloads, one per line
      vertex::gemini_stream_translator t({"id", 0, "m"});
      std::size_t start = 0;
      while (start < in.size()) {
        std::size_t nl = in.find('\n', start);
        if (nl == std::string_view::npos) nl = in.size();
        (void)t.on_chunk(in.substr(start, nl - start));
        start = nl + 1;
      }
      (void)t.on_end();
    }
  }
  return 0;
}
