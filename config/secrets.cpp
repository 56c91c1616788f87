// SPDX-License-Identifier: Apache-2.0
#include "config/secrets.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tollgate::config {

std::optional<std::string> resolve_secret(const std::string& ref, std::string& why) {
  if (ref.rfind("${env:", 0) == 0 && ref.size() > 7 && ref.back() == '}') {
    std::string name = ref.substr(6, ref.size() - 7);
    const char* v = std::getenv(name.c_str());
    if (!v) {
      why = "environment variable " + name + " is not set";
      return std::nullopt;
    }
    return std::string(v);
  }
  if (ref.rfind("file:", 0) == 0) {
    std::string path = ref.substr(5);
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      why = "cannot read secret file " + path;
      return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
  }
  return ref;
}

}  // namespace tollgate::config
