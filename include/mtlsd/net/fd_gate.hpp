#pragma once
// A budget of file descriptors shared by threads: RLIMIT_NOFILE is per process, so whatever
// opens sockets for connections draws on one count (proxy/fd_gate.hpp: the process's gate, and
// what a connection takes from it).
#include <atomic>
#include <cstdint>

namespace mtlsd::net {

class fd_gate {
 public:
  // Unlimited until set (unit tests, and a limit that could not be read).
  void set_budget(std::int64_t fds) { budget_.store(fds); }
  std::int64_t budget() const { return budget_.load(); }
  std::int64_t used() const { return used_.load(); }

  // True when `fds` more fit the budget (then they are held until give_back).
  bool take(std::int64_t fds) {
    if (used_.fetch_add(fds) + fds <= budget_.load()) return true;
    used_.fetch_sub(fds);
    return false;
  }
  void give_back(std::int64_t fds) { used_.fetch_sub(fds); }

 private:
  std::atomic<std::int64_t> budget_{INT64_MAX};
  std::atomic<std::int64_t> used_{0};
};

}  // namespace mtlsd::net
