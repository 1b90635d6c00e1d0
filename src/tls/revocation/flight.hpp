#pragma once
// Something several coroutines of the revocation service's thread wait for (one OCSP request, one
// CRL download, a set of lookups), and the guard that ends a request's flight however it ends.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <string>

namespace mtlsd::tls::revocation {

// A timer that never expires until finish() moves its expiry into the past (which also completes
// later waits at once).
struct flight {
  explicit flight(const boost::asio::any_io_executor& ex)
      : done(ex, std::chrono::steady_clock::time_point::max()) {}
  boost::asio::steady_timer done;
  bool finished = false;
  void finish() {
    finished = true;
    done.expires_at(std::chrono::steady_clock::time_point::min());
  }
  boost::asio::awaitable<void> wait() {
    if (!finished) co_await done.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
};

// Whatever happens to a fetch (answer, error, exception, cancellation), its flight leaves the
// in-flight map and every session waiting on it wakes up.
template <class Map, class Flight>
struct inflight_guard {
  Map& inflight;
  Flight& flight;
  const std::string& key;
  ~inflight_guard() {
    inflight.erase(key);
    flight.finish();
  }
};

}  // namespace mtlsd::tls::revocation
