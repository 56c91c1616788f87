// SPDX-License-Identifier: Apache-2.0
#pragma once
// Files and directories for the audit unit tests (writer and reader).
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::audit::test_util {

/// A fresh directory under /tmp (mkdtemp), removed with everything in it.
class temp_dir {
 public:
  explicit temp_dir(std::string prefix = "tollgate-audit-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (const char* p = ::mkdtemp(tmpl.data())) path_ = p;
  }
  ~temp_dir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline void append_file(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

/// The whole lines of `text` (without newlines); bytes after the last newline are left out.
inline std::vector<std::string> whole_lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    out.push_back(text.substr(start, nl - start));
  return out;
}

}  // namespace tollgate::audit::test_util
