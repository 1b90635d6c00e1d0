#include "mtlsd/daemon/revocation_thread.hpp"

#include "mtlsd/daemon/loop_thread.hpp"
#include "mtlsd/daemon/revocation_report.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;

revocation_thread::revocation_thread(metrics::registry& m)
    : work_(asio::make_work_guard(ioc_)),
      service_(ioc_.get_executor(),
               [&m](const tls::revocation::outcome& o) { report_revocation(o, &m); }) {}

void revocation_thread::start() {
  thread_ = start_loop_thread(ioc_, [](const std::string& error) {
    log::error("revocation service error", {{"error", error}});
  });
}

revocation_thread::~revocation_thread() {
  work_.reset();
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace mtlsd::daemon
