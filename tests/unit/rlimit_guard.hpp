#pragma once
// Puts a resource limit back as it was when the test ends, an ASSERT's early return included:
// the unit tests may share one process (sanitized builds run them as two shards), and a tight
// limit left behind would fail the tests after it for no reason of theirs.
#include <sys/resource.h>

namespace mtlsd::test {

class rlimit_guard {
 public:
  explicit rlimit_guard(int resource) : resource_(resource) {
    ok_ = ::getrlimit(resource_, &saved_) == 0;
  }
  ~rlimit_guard() {
    if (ok_) ::setrlimit(resource_, &saved_);
  }
  rlimit_guard(const rlimit_guard&) = delete;
  rlimit_guard& operator=(const rlimit_guard&) = delete;

  bool ok() const { return ok_; }
  const rlimit& saved() const { return saved_; }

 private:
  int resource_;
  rlimit saved_{};
  bool ok_ = false;
};

}  // namespace mtlsd::test
