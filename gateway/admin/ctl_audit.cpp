// SPDX-License-Identifier: Apache-2.0
#include "gateway/admin/ctl_audit.hpp"

#include <iostream>

namespace tollgate::ctl {

int run_audit(int, char**) {
  std::cerr << "tollgatectl: audit verbs are not built yet\n";
  return 2;
}

}  // namespace tollgate::ctl
