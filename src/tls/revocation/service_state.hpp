#pragma once
// What the parts of the revocation service share (OCSP client, CRL fetcher, stapler, the service
// itself): its executor and limits, whether it runs background work and was stopped, the timers
// its loops sleep on, URLs that failed a moment ago, and where outcomes and revocation events
// go. Touched by the service's thread only, so nothing here is locked.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <ctime>
#include <functional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "mtlsd/tls/revocation/event.hpp"
#include "mtlsd/tls/revocation/outcome.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::tls::revocation {

using steady = std::chrono::steady_clock;

// An answer already past its nextUpdate when it came (within revocation_skew_seconds) is kept this
// long before the responder is asked again.
inline constexpr std::time_t ocsp_lapsed_answer_hold = 30;
// A distribution point nobody used for this long is no longer refreshed (and is forgotten); no
// background refresh waits longer than this.
inline constexpr std::time_t crl_idle_lifetime = 3600;

// The background OCSP refresh (ocsp_refresh_due, tls/revocation/ocsp.hpp) looks at least this
// often, and asks at most this many responders at a time.
inline constexpr auto ocsp_refresh_period = std::chrono::seconds(30);
inline constexpr std::size_t ocsp_refreshes_per_pass = 8;

// Exponential backoff for background refreshes: 1s, 2s, 4s ... 5 minutes.
std::time_t backoff(int failures);

class service_state {
 public:
  service_state(boost::asio::any_io_executor executor, outcome_sink report, service_limits limits,
                bool background_work)
      : ex(std::move(executor)),
        lim(limits),
        background(background_work),
        report_to_(std::move(report)) {}

  const boost::asio::any_io_executor ex;
  const service_limits lim;
  const bool background;  // refresh CRLs and staples (the daemon), or answer checks only
  bool stopping = false;

  void report(const outcome& o) const {
    if (report_to_) report_to_(o);
  }

  // Runs `task` on the service's executor; an exception that ends it is reported as
  // task_failed (named `what`).
  template <class Awaitable>
  void spawn(Awaitable task, const char* what) {
    boost::asio::co_spawn(ex, std::move(task),
                          [report = report_to_, what](const std::exception_ptr& e) {
                            if (e && report) report(task_failed{what, util::message_of(e)});
                          });
  }

  // Background loops sleep through this: stop() wakes them. At most a minute at a time, so that
  // a loop notices soon that its slot or cache entry is gone.
  boost::asio::awaitable<void> sleep_for(steady::duration d);
  // Ends background work: loops see `stopping` when they wake (now).
  void stop();

  void subscribe(std::function<void(event_ptr)> sink) { sinks_.push_back(std::move(sink)); }
  void publish(const event_ptr& e) const {
    for (const auto& sink : sinks_)
      sink(e);
  }

  // After a failed request, checks answer "unavailable" at once for a moment instead of each
  // asking the same dead or declining server again (background refreshes have their own
  // backoff). `key` is a URL, or an OCSP CertID when only that certificate's answer was
  // unusable. The error recorded for `key` a moment ago, else null.
  const std::string* recently_failed(const std::string& key);
  void record_failure(const std::string& key, const std::string& error);

 private:
  outcome_sink report_to_;
  std::vector<std::function<void(event_ptr)>> sinks_;
  std::unordered_map<std::string, std::pair<steady::time_point, std::string>> recent_failures_;
  std::unordered_set<boost::asio::steady_timer*> sleeping_;
};

}  // namespace mtlsd::tls::revocation
