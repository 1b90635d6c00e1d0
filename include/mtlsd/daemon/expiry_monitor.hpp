#pragma once
// Early warning for certificates about to expire: a WARN line once a day per certificate that
// expires within 30 days (served or trusted; what the SPIFFE Workload API rotates, once
// expired: runtime::expiry_warning_windows), checked hourly on the control thread. The
// expiry gauges carry the same facts for alerting; this is for people reading logs.
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::daemon {

class expiry_monitor {
 public:
  using runtime_source = std::function<std::shared_ptr<const runtime::runtime>()>;
  expiry_monitor(boost::asio::io_context& ioc, runtime_source current);

  void start();
  // Checks now; `now` is injectable for tests. Returns how many warnings were logged.
  int check(std::time_t now);

 private:
  void schedule();

  boost::asio::steady_timer timer_;
  runtime_source current_;
  std::map<std::string, std::time_t> last_warned_;  // by "subject|serial"
};

}  // namespace mtlsd::daemon
