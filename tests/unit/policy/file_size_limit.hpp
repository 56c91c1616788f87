// SPDX-License-Identifier: Apache-2.0
#pragma once
// A full disk, for tests: while a file_size_limit lives, this process cannot grow a file past
// `bytes` (RLIMIT_FSIZE). A write beyond is cut short, then fails with EFBIG (SIGXFSZ, which
// would kill the process, is ignored meanwhile). Both are restored when it goes.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>

namespace tollgate::policy::testing {

class file_size_limit {
 public:
  explicit file_size_limit(rlim_t bytes) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    EXPECT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action_), 0);
    EXPECT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit_), 0);
    rlimit limit = old_limit_;
    limit.rlim_cur = bytes;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  }
  ~file_size_limit() {
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &old_limit_), 0);
    EXPECT_EQ(::sigaction(SIGXFSZ, &old_action_, nullptr), 0);
  }
  file_size_limit(const file_size_limit&) = delete;
  file_size_limit& operator=(const file_size_limit&) = delete;

 private:
  struct sigaction old_action_ {};
  rlimit old_limit_{};
};

}  // namespace tollgate::policy::testing
