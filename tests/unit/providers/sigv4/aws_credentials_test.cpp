// SPDX-License-Identifier: Apache-2.0
// AWS credential resolution (config -> environment -> shared credentials file) with an injected
// environment and file system: the real process environment and files are never read, except by
// the one test of system_credentials_inputs() (a file in the test's temp directory).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "providers/bedrock/sigv4.hpp"

namespace aws = tollgate::providers::aws;

namespace {

constexpr const char* secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr const char* token =
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfK";

/// A fake process: environment variables and files.
struct fake_world {
  std::map<std::string, std::string, std::less<>> env{{"HOME", "/home/u"}};
  std::map<std::string, std::string> files;
  mutable std::vector<std::string> reads;

  aws::credentials_inputs inputs() const {
    return {[this](std::string_view name) -> std::optional<std::string> {
              auto it = env.find(name);
              if (it == env.end() || it->second.empty()) return std::nullopt;
              return it->second;
            },
            [this](const std::string& path) -> std::optional<std::string> {
              reads.push_back(path);
              auto it = files.find(path);
              if (it == files.end()) return std::nullopt;
              return it->second;
            }};
  }
};

const std::string default_path = "/home/u/.aws/credentials";

std::string file_with(const std::string& profile, const std::string& id, const std::string& key,
                      const std::string& tok = "") {
  std::string s = "[" + profile + "]\naws_access_key_id = " + id + "\naws_secret_access_key = " + key + "\n";
  if (!tok.empty()) s += "aws_session_token = " + tok + "\n";
  return s;
}

// ---- single sources --------------------------------------------------------------------------

TEST(AwsCredentialsTest, ConfigKeysComeFirst) {
  fake_world w;
  w.env["AWS_ACCESS_KEY_ID"] = "AKIDENV";
  w.env["AWS_SECRET_ACCESS_KEY"] = "envsecret";
  w.files[default_path] = file_with("default", "AKIDFILE", "filesecret");
  aws::credentials_config cfg;
  cfg.access_key_id = "AKIDCFG";
  cfg.secret_access_key = secret;
  cfg.session_token = token;
  auto r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->source, aws::credentials_source::config);
  EXPECT_EQ(r->creds.access_key_id, "AKIDCFG");
  EXPECT_EQ(r->creds.secret_access_key, secret);
  EXPECT_EQ(r->creds.session_token, token);
  EXPECT_TRUE(w.reads.empty());  // no file was touched
}

TEST(AwsCredentialsTest, EnvironmentComesBeforeTheFile) {
  fake_world w;
  w.env["AWS_ACCESS_KEY_ID"] = "AKIDENV";
  w.env["AWS_SECRET_ACCESS_KEY"] = secret;
  w.env["AWS_SESSION_TOKEN"] = token;
  w.env["AWS_PROFILE"] = "other";  // a profile from the environment does not outrank environment keys
  w.files[default_path] = file_with("default", "AKIDFILE", "filesecret") + file_with("other", "AKIDO", "o");
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->source, aws::credentials_source::environment);
  EXPECT_EQ(r->creds.access_key_id, "AKIDENV");
  EXPECT_EQ(r->creds.secret_access_key, secret);
  EXPECT_EQ(r->creds.session_token, token);
  EXPECT_TRUE(w.reads.empty());
}

TEST(AwsCredentialsTest, EnvironmentWithoutTokenGivesLongTermCredentials) {
  fake_world w;
  w.env["AWS_ACCESS_KEY_ID"] = "AKIDENV";
  w.env["AWS_SECRET_ACCESS_KEY"] = secret;
  w.env["AWS_SESSION_TOKEN"] = "";  // empty counts as unset
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->creds.session_token, "");
}

TEST(AwsCredentialsTest, DefaultProfileOfTheDefaultFile) {
  fake_world w;
  w.files[default_path] = file_with("default", "AKIDFILE", secret, token);
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->source, aws::credentials_source::shared_credentials_file);
  EXPECT_EQ(r->profile, "default");
  EXPECT_EQ(r->path, default_path);
  EXPECT_EQ(r->creds.access_key_id, "AKIDFILE");
  EXPECT_EQ(r->creds.secret_access_key, secret);
  EXPECT_EQ(r->creds.session_token, token);
}

TEST(AwsCredentialsTest, AwsProfileSelectsTheProfile) {
  fake_world w;
  w.env["AWS_PROFILE"] = "prod";
  w.files[default_path] = file_with("default", "AKIDDEF", "d") + file_with("prod", "AKIDPROD", secret);
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->profile, "prod");
  EXPECT_EQ(r->creds.access_key_id, "AKIDPROD");
}

TEST(AwsCredentialsTest, ConfigProfileOutranksAwsProfileAndEnvironmentKeys) {
  fake_world w;
  w.env["AWS_PROFILE"] = "prod";
  w.env["AWS_ACCESS_KEY_ID"] = "AKIDENV";
  w.env["AWS_SECRET_ACCESS_KEY"] = "envsecret";
  w.files[default_path] = file_with("prod", "AKIDPROD", "p") + file_with("cfg", "AKIDCFGPROFILE", secret);
  aws::credentials_config cfg;
  cfg.profile = "cfg";
  auto r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->source, aws::credentials_source::shared_credentials_file);
  EXPECT_EQ(r->creds.access_key_id, "AKIDCFGPROFILE");
}

TEST(AwsCredentialsTest, FilePathFromEnvironmentAndFromConfig) {
  fake_world w;
  w.env["AWS_SHARED_CREDENTIALS_FILE"] = "~/creds/env";
  w.files["/home/u/creds/env"] = file_with("default", "AKIDENVPATH", secret);
  w.files["/etc/tollgate/aws"] = file_with("default", "AKIDCFGPATH", secret);
  w.files[default_path] = file_with("default", "AKIDDEFAULTPATH", secret);

  auto from_env = aws::resolve_credentials({}, w.inputs());
  ASSERT_TRUE(from_env) << from_env.error().message;
  EXPECT_EQ(from_env->creds.access_key_id, "AKIDENVPATH");
  EXPECT_EQ(from_env->path, "/home/u/creds/env");

  aws::credentials_config cfg;
  cfg.shared_credentials_file = "/etc/tollgate/aws";
  auto from_cfg = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_TRUE(from_cfg) << from_cfg.error().message;
  EXPECT_EQ(from_cfg->creds.access_key_id, "AKIDCFGPATH");
}

// ---- errors ----------------------------------------------------------------------------------

TEST(AwsCredentialsTest, NothingFoundIsAClearError) {
  fake_world w;
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::credentials_not_found);
  EXPECT_NE(r.error().message.find("AWS_ACCESS_KEY_ID"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(default_path), std::string::npos) << r.error().message;

  w.env.erase("HOME");
  r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::credentials_not_found);
  EXPECT_NE(r.error().message.find("HOME"), std::string::npos) << r.error().message;

  // Both callbacks absent: nothing to look at, still an error value.
  r = aws::resolve_credentials({}, aws::credentials_inputs{});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::credentials_not_found);
}

TEST(AwsCredentialsTest, DefaultFileWithoutDefaultProfileIsNotFound) {
  fake_world w;
  w.files[default_path] = file_with("other", "AKIDO", secret);
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::credentials_not_found);
  EXPECT_NE(r.error().message.find("[default]"), std::string::npos) << r.error().message;
}

TEST(AwsCredentialsTest, MissingRequestedProfileIsAnError) {
  fake_world w;
  w.env["AWS_PROFILE"] = "typo";
  w.files[default_path] = file_with("default", "AKIDDEF", secret);
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::profile_not_found);
  EXPECT_NE(r.error().message.find("'typo'"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("AWS_PROFILE"), std::string::npos) << r.error().message;

  aws::credentials_config cfg;
  cfg.profile = "also-typo";
  r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::profile_not_found);
  EXPECT_NE(r.error().message.find("'also-typo'"), std::string::npos) << r.error().message;
}

TEST(AwsCredentialsTest, UnreadableExplicitFileIsAnError) {
  fake_world w;
  w.env["AWS_SHARED_CREDENTIALS_FILE"] = "/nope/credentials";
  auto r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::unreadable_credentials_file);
  EXPECT_NE(r.error().message.find("/nope/credentials"), std::string::npos);

  fake_world w2;  // a requested profile but no file at the default path
  w2.env["AWS_PROFILE"] = "prod";
  r = aws::resolve_credentials({}, w2.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::unreadable_credentials_file);
}

TEST(AwsCredentialsTest, PartialSourcesAreErrorsNotFallThrough) {
  fake_world w;
  w.files[default_path] = file_with("default", "AKIDFILE", "filesecret");

  aws::credentials_config cfg;
  cfg.access_key_id = "AKIDCFG";
  auto r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("secret_access_key"), std::string::npos);

  cfg = {};
  cfg.secret_access_key = secret;
  r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);

  cfg = {};
  cfg.session_token = token;
  r = aws::resolve_credentials(cfg, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);

  w.env["AWS_ACCESS_KEY_ID"] = "AKIDENV";
  r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("AWS_SECRET_ACCESS_KEY"), std::string::npos);

  w.env.erase("AWS_ACCESS_KEY_ID");
  w.env["AWS_SECRET_ACCESS_KEY"] = secret;
  r = aws::resolve_credentials({}, w.inputs());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

TEST(AwsCredentialsTest, IncompleteProfilesAreErrors) {
  const std::string path = "/p";
  auto r = aws::credentials_from_shared_file("[a]\naws_access_key_id = AKID\n", "a", path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("aws_secret_access_key is missing"), std::string::npos) << r.error().message;

  r = aws::credentials_from_shared_file(std::string("[a]\naws_secret_access_key = ") + secret + "\n", "a", path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("aws_access_key_id is missing"), std::string::npos) << r.error().message;

  r = aws::credentials_from_shared_file("[a]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = b\n", "a", path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
  EXPECT_NE(r.error().message.find("not supported"), std::string::npos) << r.error().message;

  r = aws::credentials_from_shared_file("[a]\naws_access_key_id = AKID\naws_secret_access_key =\n", "a", path);
  ASSERT_FALSE(r);  // an empty value counts as missing
  EXPECT_EQ(r.error().code, aws::aws_errc::incomplete_credentials);
}

TEST(AwsCredentialsTest, MalformedFilesNameThePathAndLine) {
  struct bad {
    const char* text;
    int line;
  };
  const bad cases[] = {
      {"aws_access_key_id = AKID\n", 1},                        // property before any section
      {"[default]\naws_access_key_id AKID\n", 2},              // no '='
      {"# c\n\n[default\naws_access_key_id = AKID\n", 3},       // no ']'
      {"[]\n", 1},                                              // empty name
      {"[default] trailing\n", 1},                              // text after the header
      {"[default]\n = value\n", 2},                             // empty key
  };
  for (const bad& b : cases) {
    fake_world w;
    w.files[default_path] = b.text;
    auto r = aws::resolve_credentials({}, w.inputs());
    ASSERT_FALSE(r) << b.text;
    EXPECT_EQ(r.error().code, aws::aws_errc::malformed_credentials_file) << b.text;
    EXPECT_EQ(r.error().message.rfind(default_path + ":" + std::to_string(b.line) + ": ", 0), 0u)
        << r.error().message;
  }
}

// ---- INI syntax ------------------------------------------------------------------------------

TEST(AwsCredentialsTest, ParsesCommentsWhitespaceCaseCrlfBomAndRepeatedSections) {
  const std::string text =
      "\xEF\xBB\xBF# leading comment\r\n"
      "; another comment\r\n"
      "\r\n"
      "[default]   # comment after a header\r\n"
      "  AWS_Access_Key_ID=AKIDDEFAULT\r\n"
      "  aws_secret_access_key   =   s1/+=  ; inline comment\r\n"
      "s3 =\r\n"
      "    max_concurrent_requests = 10\r\n"  // nested sub-property: ignored
      "[ dev ]\n"
      "aws_access_key_id = AKIDDEV\n"
      "\t# indented comment\n"
      "aws_secret_access_key = s2#not-a-comment\n"
      "[default]\n"
      "aws_session_token = tok\n"  // a repeated section merges into the first
      "[profile prod]\n"
      "aws_access_key_id = AKIDPROD\n"
      "aws_secret_access_key = s3";  // no final newline
  auto parsed = aws::parse_shared_credentials(text, "/p");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ASSERT_EQ(parsed->size(), 3u);
  const auto& def = parsed->at("default");
  EXPECT_EQ(def.at("aws_access_key_id"), "AKIDDEFAULT");
  EXPECT_EQ(def.at("aws_secret_access_key"), "s1/+=");
  EXPECT_EQ(def.at("aws_session_token"), "tok");
  EXPECT_EQ(def.at("s3"), "");
  EXPECT_EQ(def.count("max_concurrent_requests"), 0u);
  EXPECT_EQ(parsed->at("dev").at("aws_secret_access_key"), "s2#not-a-comment");
  EXPECT_EQ(parsed->at("profile prod").at("aws_secret_access_key"), "s3");

  auto dev = aws::credentials_from_shared_file(text, "dev", "/p");
  ASSERT_TRUE(dev);
  EXPECT_EQ(dev->access_key_id, "AKIDDEV");
  EXPECT_EQ(dev->session_token, "");
  // In the credentials file "[profile prod]" is the profile named "profile prod", not "prod".
  auto prod = aws::credentials_from_shared_file(text, "prod", "/p");
  ASSERT_FALSE(prod);
  EXPECT_EQ(prod.error().code, aws::aws_errc::profile_not_found);

  auto empty = aws::parse_shared_credentials("", "/p");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

// ---- secrets never leak into messages --------------------------------------------------------

TEST(AwsCredentialsTest, NoErrorMessageContainsASecret) {
  const std::string s = secret, t = token;
  std::vector<aws::credentials_error> errors;
  auto collect = [&](const fake_world& w, const aws::credentials_config& cfg) {
    auto r = aws::resolve_credentials(cfg, w.inputs());
    ASSERT_FALSE(r);
    errors.push_back(r.error());
  };
  {  // config with a secret but no key id, and with a token only
    fake_world w;
    aws::credentials_config cfg;
    cfg.secret_access_key = s;
    collect(w, cfg);
    cfg = {};
    cfg.session_token = t;
    collect(w, cfg);
  }
  {  // environment with a secret and a token but no key id
    fake_world w;
    w.env["AWS_SECRET_ACCESS_KEY"] = s;
    w.env["AWS_SESSION_TOKEN"] = t;
    collect(w, {});
  }
  {  // malformed lines that contain the secret and the token
    for (const std::string& text :
         {"[default]\naws_secret_access_key " + s + "\n", "aws_secret_access_key = " + s + "\n",
          "[default]\naws_session_token " + t + "\n", "[" + s + "\n", "[default] " + s + "\n"}) {
      fake_world w;
      w.files[default_path] = text;
      collect(w, {});
    }
  }
  {  // incomplete profile that holds the secret and the token, missing profile next to one
    fake_world w;
    w.files[default_path] = "[default]\naws_secret_access_key = " + s + "\naws_session_token = " + t + "\n";
    collect(w, {});
    w.env["AWS_PROFILE"] = "missing";
    collect(w, {});
  }
  {  // an unreadable file while a token sits in the environment
    fake_world w;
    w.env["AWS_SHARED_CREDENTIALS_FILE"] = "/nope";
    w.env["AWS_SESSION_TOKEN"] = t;
    collect(w, {});
  }
  ASSERT_EQ(errors.size(), 11u);
  for (const auto& e : errors) {
    EXPECT_FALSE(e.message.empty());
    EXPECT_EQ(e.message.find(s), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find(t), std::string::npos) << e.message;
    // Not even a fragment: distinctive prefixes of the secret and the token.
    EXPECT_EQ(e.message.find("wJalrXUtnFEMI"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("AQoDYXdzEPT"), std::string::npos) << e.message;
  }
}

// ---- the real-world adapter ------------------------------------------------------------------

TEST(AwsCredentialsTest, SystemInputsReadFilesAndTheEnvironment) {
  const auto in = aws::system_credentials_inputs();
  ASSERT_TRUE(in.getenv && in.read_file);
  EXPECT_FALSE(in.getenv("TOLLGATE_SIGV4_TEST_SURELY_UNSET_VARIABLE"));

  const std::filesystem::path p = std::filesystem::path(testing::TempDir()) / "tollgate_sigv4_credentials_test";
  {
    std::ofstream out(p, std::ios::binary);
    out << "[default]\r\naws_access_key_id = A\r\n";
  }
  EXPECT_EQ(in.read_file(p.string()), "[default]\r\naws_access_key_id = A\r\n");
  std::filesystem::remove(p);
  EXPECT_FALSE(in.read_file(p.string()));
}

TEST(AwsCredentialsTest, SourceNames) {
  EXPECT_EQ(aws::to_string(aws::credentials_source::config), "config");
  EXPECT_EQ(aws::to_string(aws::credentials_source::environment), "environment");
  EXPECT_EQ(aws::to_string(aws::credentials_source::shared_credentials_file), "shared_credentials_file");
}

}  // namespace
