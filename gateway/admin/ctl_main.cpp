// SPDX-License-Identifier: Apache-2.0
// tollgatectl: the admin CLI. Its verbs (team, key, quota, usage, audit) arrive with the admin API
// issue; today it answers --help and --version and refuses everything else clearly.
#include <iostream>
#include <string>

namespace {

constexpr const char* help =
    "usage: tollgatectl [--url URL] <command> [options]\n"
    "\n"
    "Admin client for a Tollgate gateway (admin listener, default http://127.0.0.1:9090).\n"
    "\n"
    "Options:\n"
    "  --url URL     admin API base URL (default http://127.0.0.1:9090)\n"
    "  --json        machine-readable output\n"
    "  --help        show this help\n"
    "  --version     show the version\n"
    "\n"
    "Commands (not available in this version):\n"
    "  team create|list|show|delete\n"
    "  key create|list|show|revoke|rotate\n"
    "  quota set|show\n"
    "  usage\n"
    "  audit export|verify\n"
    "\n"
    "Exit codes: 0 ok, 2 usage error.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << help;
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h" || a == "help") {
      std::cout << help;
      return 0;
    }
    if (a == "--version") {
      std::cout << "tollgatectl 0.1.0\n";
      return 0;
    }
  }
  std::cerr << "tollgatectl: '" << argv[1] << "' is not available in this version (see tollgatectl --help)\n";
  return 2;
}
