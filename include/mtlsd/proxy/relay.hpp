#pragma once
// Moving bytes between the TLS side and the plaintext side of a connection: two pumps, one per
// direction, run concurrently. A pump waits for readability holding no buffer, borrows one from
// the worker's pool while data moves (buffer_pool.hpp), and reads again only after its write
// completed, so a slow receiver stops the sender (backpressure) and memory stays bounded. At
// EOF a pump half-closes the far side (TCP shutdown(SHUT_WR) <-> TLS close_notify) and lets the
// other direction run on, as ghostunnel's proxy does, for at most timeouts.half_close. Errors are
// values: the pump that meets one records it and cancels the other. While a write waits for a
// slow receiver, the socket nobody reads is watched for its peer leaving (reset: the relay ends;
// FIN: the half-close deadline starts).
#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/tls_stream.hpp"

namespace prometheus {
class Counter;
}  // namespace prometheus

namespace mtlsd::proxy {

namespace detail {
struct relay_state;  // relay_pump.hpp
}  // namespace detail

// The deadline the session's watchdog enforces (each phase sets its own; see session::enter),
// and how the relay moves it: each pump pushes it forward on activity (by `idle`); the first
// EOF caps it with the half-close deadline, and a request head (HTTP/1.1) or header block
// (HTTP/2) still incomplete after a read caps it with the head's own deadline; activity moves
// neither.
struct idle_deadline {
  using clock = std::chrono::steady_clock;
  clock::duration idle{};        // 0 = no idle timeout
  clock::duration half_close{};  // after one direction ended, the other has this long; 0 = no limit
  clock::duration head_limit{};  // http.request_headers_timeout; 0 = no limit
  clock::time_point deadline{};  // what the watchdog enforces
  clock::time_point close_by = clock::time_point::max();  // set by the first half-close
  clock::time_point head_by = clock::time_point::max();   // while a head is incomplete
  bool half_closed = false;
  asio::steady_timer* watchdog = nullptr;  // woken when the deadline moves earlier

  // Without an idle timeout it leaves the deadline alone: another phase's (linger_close)
  // touches too.
  void touch() {
    if (idle.count() > 0) deadline = std::min({clock::now() + idle, close_by, head_by});
  }
  // A request head began and did not end with the read that brought its first bytes: a client
  // sending it a byte at a time (slowloris) keeps the connection no longer than head_limit.
  void start_head() {
    if (head_limit.count() == 0 || head_by != clock::time_point::max()) return;
    head_by = clock::now() + head_limit;
    if (head_by < deadline) {
      deadline = head_by;
      if (watchdog) watchdog->cancel();  // it re-arms with the earlier deadline
    }
  }
  // The head's read ended: only idle and half-close bound what follows. A head that is `whole`
  // counts as in time even just past its deadline (its last read completed before the watchdog
  // ran), so it goes up and gets its answer; one that is not (the watchdog's cancellation ended
  // its read) keeps the deadline past, for the session to name why from past_head_by.
  void end_head(bool whole) {
    if (head_by == clock::time_point::max() || (!whole && past_head_by())) return;
    head_by = clock::time_point::max();
    deadline = close_by;  // what bounds the relay without an idle timeout
    touch();
  }
  // True when the head's deadline is what has passed.
  bool past_head_by() const { return clock::now() >= head_by; }
  // One direction reached EOF (or its sender is known to have finished).
  void start_half_close() {
    if (half_closed) return;
    half_closed = true;
    if (half_close.count() == 0) return;
    close_by = clock::now() + half_close;
    if (close_by < deadline) {
      deadline = close_by;
      if (watchdog) watchdog->cancel();  // it re-arms with the earlier deadline
    }
  }
  // True when the half-close deadline (rather than the idle one) is what has passed.
  bool past_close_by() const { return half_closed && clock::now() >= close_by; }
};

// Who ended a relay first, for the access log's termination: the side whose EOF or error came
// first (a failed write counts against the side written to), or mtlsd itself (a protocol error
// in HTTP mode).
enum class relay_end : std::uint8_t { none, tls_peer, plain_peer, local };

// A byte count that feeds a counter (mtlsd_bytes_total) as it grows, so that a connection that
// stays open shows its bytes before it closes (review: long-lived streams moved the counter only
// at their end): once the count is meter_step past what the counter was last given, it gives the
// difference. Per addition that is an add and a compare; the counter, shared by the listener's
// connections on every worker, gets one atomic add per 64 KiB moved at most. The session's end
// gives the rest (give_rest), so the counter sums exactly what the access lines say. Without a
// counter (until meter(), in tests) it is a plain count.
class byte_count {
 public:
  static constexpr std::uint64_t meter_step = 64 * 1024;

  byte_count& operator+=(std::uint64_t n) {
    total_ += n;
    if (total_ >= next_) give();
    return *this;
  }
  operator std::uint64_t() const { return total_; }  // NOLINT: reads as the count it is
  // From now on `c` gets the bytes as they come (what was counted before goes with the next).
  void meter(prometheus::Counter* c) {
    if (c == counter_) return;
    counter_ = c;
    next_ = c ? meter_step : never;
    if (total_ >= next_) give();
  }
  // What the counter was not given yet, now counted as given: all of it without a counter.
  std::uint64_t give_rest() {
    const std::uint64_t given = counter_ ? next_ - meter_step : 0;
    next_ = counter_ ? total_ + meter_step : never;
    return total_ - given;
  }

 private:
  static constexpr std::uint64_t never = ~std::uint64_t{0};
  void give();  // relay.cpp: the counter gets what it was not given, next_ moves on
  std::uint64_t total_ = 0;
  std::uint64_t next_ = never;  // given: next_ - meter_step, with a counter
  prometheus::Counter* counter_ = nullptr;
};

struct relay_result {
  byte_count from_tls;    // bytes read from the TLS peer and written to the plain side
  byte_count from_plain;  // bytes read from the plain side and written to the TLS peer
                          // (HTTP mode: written to the TLS peer, mtlsd's answers too)
  bool aborted = false;   // a direction ended with an error (reset), not with EOF
  relay_end first_end = relay_end::none;
  std::string error;  // what that error was
  // The relay ended with what the TLS peer sends not read to its end (HTTP/1.1: a request body
  // answered early, or failed; layer 4: the plaintext peer went away while we wrote to it): the
  // TLS peer may still be sending, so the session closes by lingering.
  bool tls_peer_sending = false;
  // HTTP/1.1: the connection became a byte relay after a 101 (an upgrade): no boundary left
  // at which to end it, so timeouts.max_connection_age ends it as in layer 4.
  bool tunnel = false;
  // HTTP/2: mtlsd closed the connection for its client's rapid reset (h2_connection_impl.hpp):
  // termination rate_limited, counted in mtlsd_connections_closed_total{reason="rate_limited"}.
  bool rate_limited = false;
  // timeouts.max_connection_age passed (the session's watchdog: detail::age_relay): the layer-4
  // relay ends gracefully, at once if it runs (`running`, set by relay() while it does), else
  // as soon as it starts (an HTTP/1.1 tunnel writes what it buffered first).
  bool age_asked = false;
  detail::relay_state* running = nullptr;
  // Whether each direction's stream reached its end and the end was passed on: the TLS peer's
  // (its EOF, or the age's end) as a FIN to the plain side, the plain peer's as close_notify. A
  // direction whose end was not is mid-stream: layer 4 has no other boundary, so mtlsd ending
  // the connection then (a deadline, the drain timeout, a revocation, a reload's verdict) cuts
  // it, and the session tells that direction's receiver so (session.cpp: the plain side is
  // reset; the TLS peer gets no close_notify).
  bool tls_stream_ended = false;
  bool plain_stream_ended = false;

  void ended_by(relay_end e) {
    if (first_end == relay_end::none) first_end = e;
  }
};

// Relays until both directions reached EOF or one failed. Never throws for network errors.
asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            idle_deadline& clock, relay_result& result);

namespace detail {
// What read_records gathered: `n` bytes, and what stopped it with room left. `ec`: what the
// read after those bytes met (would_block, with `wants`; eof; an error), the caller's to handle
// once the bytes are passed on; none: the buffer is full, OpenSSL holds nothing more and the
// socket is known drained, or the turn's bytes are read (see read_records).
struct gathered {
  error_code ec;
  std::size_t n = 0;
  tls_stream::want wants = tls_stream::want::nothing;
};
// Reads the TLS peer's records into `buf` while they come without waiting, so that many small
// records reach the plain side in one write (review: a client sending 1-byte records cost one
// write to the upstream per record). No read is made that the relay did not make before: one
// that OpenSSL answers from the bytes it holds (read-ahead), or one of the socket that is not
// known drained (net/read_drain.hpp); and none of the socket once `tls` has read
// `received_until` bytes off it (tls_stream::received: the pump's turn).
gathered read_records(tls_stream& tls, stream_socket& sock, asio::mutable_buffer buf,
                      std::uint64_t received_until);

// How the peer of a socket nobody reads stands, without reading (the watch above): reset, FIN,
// or still there.
enum class peer_end { none, reset, fin };
peer_end peer_state(stream_socket& sock);
}  // namespace detail

}  // namespace mtlsd::proxy
