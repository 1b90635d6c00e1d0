#include "mtlsd/daemon/revocation_thread.hpp"

#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;

revocation_thread::revocation_thread(metrics::registry& m)
    : work_(asio::make_work_guard(ioc_)), service_(ioc_.get_executor(), &m) {}

void revocation_thread::start() {
  thread_ = std::thread([this] {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {
        log::error("revocation service error", {{"error", e.what()}});
      }
    }
  });
}

revocation_thread::~revocation_thread() {
  work_.reset();
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mtlsd::daemon
