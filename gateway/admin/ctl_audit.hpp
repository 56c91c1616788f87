// SPDX-License-Identifier: Apache-2.0
#pragma once
/// tollgatectl's local audit verbs (`audit export`, `audit verify`): they read segment files
/// directly and need no gateway. Returns the process exit code.
namespace tollgate::ctl {

/// argv[0] is "audit"; argv[1] the verb. `as_json`: the global --json came before `audit`.
int run_audit(int argc, char** argv, bool as_json = false);

}  // namespace tollgate::ctl
