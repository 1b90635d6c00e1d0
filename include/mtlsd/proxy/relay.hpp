#pragma once
// Moving bytes between the TLS side and the plaintext side of a connection: two pumps, one per
// direction, run concurrently. A pump waits for readability holding no buffer, borrows one from
// the worker's pool while data moves (buffer_pool.hpp), and reads again only after its write
// completed, so a slow receiver stops the sender (backpressure) and memory stays bounded. At
// EOF a pump half-closes the far side (TCP shutdown(SHUT_WR) <-> TLS close_notify) and lets the
// other direction run on, as ghostunnel's proxy does.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>

#include "mtlsd/proxy/net.hpp"
#include "mtlsd/proxy/tls_stream.hpp"

namespace mtlsd::proxy {

// Shared with the session's watchdog: each pump moves the idle deadline forward on activity.
struct activity_clock {
  std::chrono::steady_clock::duration idle{};  // 0 = no idle timeout
  std::chrono::steady_clock::time_point deadline{};
  void touch() {
    if (idle.count() > 0) deadline = std::chrono::steady_clock::now() + idle;
  }
};

struct relay_result {
  std::uint64_t from_tls = 0;    // bytes read from the TLS peer and written to the plain side
  std::uint64_t from_plain = 0;  // bytes read from the plain side and written to the TLS peer
  bool aborted = false;          // a direction ended with an error (reset), not with EOF
  std::string error;             // what that error was
};

// Relays until both directions reached EOF or one failed. Never throws for network errors.
asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            activity_clock& clock, relay_result& result);

}  // namespace mtlsd::proxy
