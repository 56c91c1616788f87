// SPDX-License-Identifier: Apache-2.0
// URLs of generateContent / streamGenerateContent / predict on Vertex AI (PROTOCOLS.md §4.1).
#include "providers/vertex/gemini.hpp"

#include <gtest/gtest.h>

namespace tollgate::providers::vertex {
namespace {

vertex_target target(std::string location, std::string model = "gemini-2.5-flash") {
  return vertex_target{"my-project", std::move(location), std::move(model), "v1"};
}

TEST(GeminiUrlTest, RegionalGenerateContent) {
  auto url = make_vertex_url(target("us-central1"), vertex_method::generate_content);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "us-central1-aiplatform.googleapis.com");
  EXPECT_EQ(url->path,
            "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent");
  EXPECT_EQ(url->url(),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project/locations/us-central1/publishers/"
            "google/models/gemini-2.5-flash:generateContent");
}

TEST(GeminiUrlTest, RegionalStreamUsesAltSse) {
  auto url = make_vertex_url(target("europe-west4"), vertex_method::stream_generate_content);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "europe-west4-aiplatform.googleapis.com");
  EXPECT_EQ(url->path,
            "/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:"
            "streamGenerateContent?alt=sse");
}

TEST(GeminiUrlTest, PredictForEmbeddings) {
  auto url = make_vertex_url(target("us-central1", "text-embedding-005"), vertex_method::predict);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->path, "/v1/projects/my-project/locations/us-central1/publishers/google/models/text-embedding-005:predict");
}

TEST(GeminiUrlTest, GlobalLocationUsesTheGlobalHost) {
  auto url = make_vertex_url(target("global"), vertex_method::generate_content);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "aiplatform.googleapis.com");
  EXPECT_EQ(url->url(),
            "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/publishers/google/models/"
            "gemini-2.5-flash:generateContent");
}

TEST(GeminiUrlTest, MultiRegionsUseRepHosts) {
  EXPECT_EQ(vertex_host("us"), "aiplatform.us.rep.googleapis.com");
  EXPECT_EQ(vertex_host("eu"), "aiplatform.eu.rep.googleapis.com");
  EXPECT_EQ(vertex_host("asia-northeast1"), "asia-northeast1-aiplatform.googleapis.com");
}

TEST(GeminiUrlTest, ApiVersionIsKept) {
  vertex_target t = target("us-central1");
  t.api_version = "v1beta1";
  auto url = make_vertex_url(t, vertex_method::generate_content);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->path.substr(0, 9), "/v1beta1/");
}

TEST(GeminiUrlTest, ModelNamesAreNormalised) {
  EXPECT_EQ(*model_resource_name("gemini-2.5-flash"), "publishers/google/models/gemini-2.5-flash");
  EXPECT_EQ(*model_resource_name("anthropic/claude-sonnet-4@20250514"),
            "publishers/anthropic/models/claude-sonnet-4@20250514");
  EXPECT_EQ(*model_resource_name("publishers/google/models/gemini-2.0-flash-001"),
            "publishers/google/models/gemini-2.0-flash-001");
  EXPECT_EQ(*model_resource_name("models/123"), "models/123");
}

TEST(GeminiUrlTest, FullResourceNameReplacesProjectAndLocation) {
  vertex_target t{"", "us-central1", "projects/other/locations/us-east5/publishers/anthropic/models/claude-x", "v1"};
  auto url = make_vertex_url(t, vertex_method::generate_content);
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "us-east5-aiplatform.googleapis.com");
  EXPECT_EQ(url->path, "/v1/projects/other/locations/us-east5/publishers/anthropic/models/claude-x:generateContent");
}

TEST(GeminiUrlTest, UnsafeValuesAreRefused) {
  auto bad_location = make_vertex_url(target("us-central1.evil.com#"), vertex_method::generate_content);
  ASSERT_FALSE(bad_location);
  EXPECT_EQ(bad_location.error().param, "location");

  auto bad_model = make_vertex_url(target("us-central1", "gemini?x=1"), vertex_method::generate_content);
  ASSERT_FALSE(bad_model);
  EXPECT_EQ(bad_model.error().param, "model");

  auto traversal = make_vertex_url(target("us-central1", "google/../../x"), vertex_method::generate_content);
  ASSERT_FALSE(traversal);
  EXPECT_EQ(traversal.error().param, "model");

  vertex_target no_project = target("us-central1");
  no_project.project.clear();
  auto p = make_vertex_url(no_project, vertex_method::generate_content);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().param, "project");

  EXPECT_FALSE(model_resource_name(""));
}

}  // namespace
}  // namespace tollgate::providers::vertex
