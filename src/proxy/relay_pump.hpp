#pragma once
// Private to relay.cpp and relay_write.cpp: the state both pumps of one layer-4 relay share, and
// the writes a pump makes, which wait when the other side cannot take more (relay_write.cpp).
// The session's watchdog ends a relay for its age through age_relay (session_watchdog.cpp).
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <cstddef>
#include <string>

#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"

namespace mtlsd::proxy::detail {

// One relay: both pumps see it. A pump that meets an error records it and stops the other by
// cancelling its waits — errors are values, never exceptions.
//
// The session ends the relay by cancellation (its watchdog: deadlines, drain, kill), which
// reaches the operation the relay's own coroutine — the plaintext side's pump (the upstream in
// server mode, the local app in client mode) — is waiting on
// (the TLS side's pump, spawned, has no cancellation of its own). One that comes while that
// operation has completed but the pump has not resumed reaches none; it is only recorded in the
// session's cancellation state (`session_cancel`). So both pumps look at that state every time
// they resume, and before every wait (stop_requested): whichever resumes next stops the relay.
struct relay_state {
  tls_stream& tls;
  stream_socket& tls_socket;
  stream_socket& plain;
  idle_deadline& clock;
  relay_result& r;
  asio::cancellation_state session_cancel{};  // the relay's caller's: the session's
  bool stopping = false;
  // timeouts.max_connection_age passed (age()): each pump reads what has arrived, waiting for
  // nothing more, and then ends as at EOF from its side.
  bool aging = false;
  // Wakes the TLS side's pump from its wait for the TLS peer (that pump has no cancellation of
  // its own, and its socket's other waits must go on: a close_notify being written, above all).
  asio::cancellation_signal tls_wait_wake{};
  bool plain_write_failed = false;   // plain_gone(): the plaintext peer is gone
  bool plain_write_waiting = false;  // write_plain waits for the plaintext peer to take more
  // The TLS side failed (a reset, a record cut short, a protocol error), whichever side ended
  // first: the plain side is reset as the relay ends (relay.cpp).
  bool tls_side_failed = false;

  // `side`: whose end this error is (relay_result::first_end).
  void fail(const char* where, const error_code& ec, relay_end side) {
    if (!stopping && ec != asio::error::operation_aborted) r.ended_by(side);
    if (!stopping && ec != asio::error::operation_aborted && side == relay_end::tls_peer)
      tls_side_failed = true;
    if (!stopping && ec != asio::error::operation_aborted && !r.aborted) {
      r.aborted = true;
      r.error = std::string(where) + ": " + describe(ec, tls);
    }
    stop();
  }
  // Writing to the plaintext peer failed because it is gone (it reset, or closed with our bytes
  // unread: an upstream that answers an upload early, 413, and closes). What it sent before it
  // left still goes to the TLS peer, as it would reach a direct client before the reset: the
  // other pump runs on until it has read that, and then ends the relay without close_notify
  // (the stream was cut, not finished). This pump stops reading from the TLS peer, which may
  // still be sending: the session closes by lingering.
  void plain_gone(const char* where, const error_code& ec) {
    if (!stopping) {
      r.ended_by(relay_end::plain_peer);
      if (!r.aborted) {
        r.aborted = true;
        r.error = std::string(where) + ": " + describe(ec, tls);
      }
    }
    plain_write_failed = true;
    r.tls_peer_sending = true;
    clock.start_half_close();
  }
  // Records that `side` reached its end; true when the other side's end came first. Not this
  // side's own end seen earlier by the watch of a waiting write (relay_write.cpp): that end is
  // still to be passed on (review: the upstream never saw a client's FIN noticed that way, and
  // waited for it until timeouts.half_close, its reply lost).
  bool ended_before(relay_end side) {
    const bool other_first = r.first_end != relay_end::none && r.first_end != side;
    r.ended_by(side);
    return other_first;
  }
  void stop() {
    if (stopping) return;
    stopping = true;
    error_code ignored;
    tls_socket.cancel(ignored);
    plain.cancel(ignored);
  }
  // True when the relay is stopping: a pump stopped it, or the session cancelled it (then it
  // is stopped now).
  bool stop_requested() {
    if (session_cancel.cancelled() != asio::cancellation_type::none) stop();
    return stopping;
  }
  // The age: a graceful end, each side's as at its EOF, with nothing cut in the middle. Both
  // pumps are woken from their waits for input: the TLS side's by its own signal, the plaintext
  // side's by cancelling the waits on that socket (that wait carries the session's cancellation
  // slot, so it cannot carry a signal of its own), which also cuts the wait of a write to it and
  // the watch of a write from it (relay_write.cpp): those are made again. Not shut down for
  // reading, as it was: data that arrives at a socket shut down that way once its FIN went makes
  // Linux reset the connection, and what was still queued for the peer is lost (review: a client
  // sending while it read its download slowly got 1.6 of 4 MiB).
  void age() {
    if (aging || stopping) return;
    aging = true;
    tls_wait_wake.emit(asio::cancellation_type::terminal);
    error_code ignored;
    plain.cancel(ignored);
  }
  // A wait that ended aborted, the relay not stopping, was cut by age(): no failure (a wait for
  // input is over, a write's wait is made again).
  bool age_woke(const error_code& ec) {
    return ec == asio::error::operation_aborted && aging && !stop_requested();
  }
};

// timeouts.max_connection_age passed (session_watchdog.cpp's close_for_age) for the session
// whose relay reports to `result`: its relay ends gracefully (relay_state::age), now if it runs,
// else as it starts (relay_result::age_asked).
inline void age_relay(relay_result& result) {
  result.age_asked = true;
  if (result.running) result.running->age();
}

// Writes everything to a non-blocking plain socket, waiting only when the kernel buffer is full;
// meanwhile the TLS side is watched for its peer leaving. On an error the relay is stopped and
// the error recorded; returns false then.
asio::awaitable<bool> write_plain(relay_state& st, const char* data, std::size_t n);

// The same towards the TLS peer, watching the plaintext side meanwhile: an upstream that resets
// or finishes while the TLS client is not reading is noticed now, not at the idle timeout.
asio::awaitable<bool> write_tls(relay_state& st, const char* data, std::size_t n);

// The common cases without a coroutine frame (one per call otherwise): a chunk the kernel or
// OpenSSL takes whole at once. `wait`: the coroutine above carries on — write_plain from where
// this stopped, write_tls with the same buffer (OpenSSL requires it). Errors are recorded here.
enum class written_now { all, failed, wait };
written_now write_plain_now(relay_state& st, const char*& data, std::size_t& n);
written_now write_tls_now(relay_state& st, const char* data, std::size_t n);

}  // namespace mtlsd::proxy::detail
