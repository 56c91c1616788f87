// SPDX-License-Identifier: Apache-2.0
#pragma once
// Reading the shared test data (../shared/testdata, passed in as TOLLGATE_TESTDATA) in unit tests.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

#include <gtest/gtest.h>

namespace tollgate::testing {

/// The root of the shared test data.
inline std::filesystem::path testdata_dir() { return std::filesystem::path(TOLLGATE_TESTDATA); }

/// A file's bytes, or nullopt when it cannot be opened.
inline std::optional<std::string> try_read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A file's bytes; a file that cannot be opened fails the test (and gives "").
inline std::string read_file(const std::filesystem::path& p) {
  auto text = try_read_file(p);
  EXPECT_TRUE(text.has_value()) << "missing test data file " << p;
  return text.value_or("");
}

}  // namespace tollgate::testing
