// SPDX-License-Identifier: Apache-2.0
#pragma once
/// tollgatectl's local audit verbs (`audit export`, `audit verify`): they read segment files
/// directly and need no gateway. Returns the process exit code.
namespace tollgate::ctl {

/// argv[0] is "audit"; argv[1] the verb.
int run_audit(int argc, char** argv);

}  // namespace tollgate::ctl
