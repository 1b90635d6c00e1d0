#pragma once
// listeners[].upstream_check: one probe loop per listener that has a check, on the control
// thread's io_context (never a worker's: a slow or hanging upstream cannot delay a session).
// `tcp` connects and closes; `http` sends GET path and calls 2xx/3xx up. Both use the shared
// c-ares resolver and the one HTTP client (net/http_client.hpp), each probe bounded by the
// check's timeout, the next one `interval` after the previous one started.
//
// Results feed /readyz (see the daemon's readiness()) and mtlsd_upstream_up{listener}. A reload
// calls update(): checks of listeners that are gone or lost their check stop (and their series
// goes), new ones start, and a check whose upstream or settings changed starts over.
#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/metrics/metrics.hpp"

namespace mtlsd::daemon {

class upstream_checks {
 public:
  enum class health { unknown, up, down };  // unknown: the first probe has not answered yet
  struct status {
    std::string listener;
    std::string upstream;  // address as configured
    health state = health::unknown;
    std::string detail;  // why down; "HTTP 204" and the like when up
  };

  upstream_checks(boost::asio::io_context& ioc, metrics::registry& metrics);
  ~upstream_checks();
  upstream_checks(const upstream_checks&) = delete;
  upstream_checks& operator=(const upstream_checks&) = delete;

  // Starts, keeps or stops checks to match `cfg`'s listeners. Control thread only.
  void update(const config::configuration& cfg);
  // Stops every check and removes its series (before the metrics registry goes away).
  void stop();
  // Listeners with a check, in configuration order.
  std::vector<status> statuses() const;

 private:
  struct check;
  boost::asio::io_context& ioc_;
  metrics::registry& metrics_;
  std::vector<std::shared_ptr<check>> checks_;  // configuration order
};

const char* to_string(upstream_checks::health h);

}  // namespace mtlsd::daemon
