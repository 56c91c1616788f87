// SPDX-License-Identifier: Apache-2.0
// tollgate --config FILE [--check] [--ready-file FILE]
#include <csignal>
#include <cstring>
#include <iostream>
#include <string>

#include "config/loader.hpp"
#include "gateway/server.hpp"
#include "providers/registry.hpp"

namespace {

constexpr const char* usage =
    "usage: tollgate --config FILE [--check] [--ready-file FILE] [--audit-dir DIR]\n"
    "  --config FILE      YAML configuration (see docs/configuration.md)\n"
    "  --check            validate the configuration and exit (0 valid, 2 invalid)\n"
    "  --ready-file FILE  once listening, write the bound addresses as JSON to FILE\n"
    "  --audit-dir DIR    write the audit trail to DIR (overrides audit.dir)\n"
    "  --version          print the version\n";

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, ready_file, audit_dir;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) config_path = argv[++i];
    else if (a == "--ready-file" && i + 1 < argc) ready_file = argv[++i];
    else if (a == "--audit-dir" && i + 1 < argc) audit_dir = argv[++i];
    else if (a == "--check") check = true;
    else if (a == "--version") {
      std::cout << "tollgate 0.1.0\n";
      return 0;
    } else if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else {
      std::cerr << "tollgate: unknown argument '" << a << "'\n" << usage;
      return 2;
    }
  }
  if (config_path.empty()) {
    std::cerr << "tollgate: --config is required\n" << usage;
    return 2;
  }
  auto loaded = tollgate::config::load_file(config_path);
  std::string error = loaded.error;
  std::shared_ptr<const tollgate::snapshot> snap;
  if (loaded) snap = tollgate::gateway::load_snapshot(loaded.config, error);
  if (!snap) {
    std::cerr << "tollgate: invalid configuration: " << error << "\n";
    return 2;
  }
  if (check) {
    std::cout << "config ok: " << snap->providers.size() << " providers, " << snap->models.size() << " models\n";
    return 0;
  }
  // A caller that disconnects must not kill the process through SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  // A file-size limit (ulimit -f) must fail an audit write with EFBIG, not kill the process.
  std::signal(SIGXFSZ, SIG_IGN);
  tollgate::gateway::server s(snap, {config_path, ready_file, audit_dir});
  return s.run();
}
