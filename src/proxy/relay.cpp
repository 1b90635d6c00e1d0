#include "mtlsd/proxy/relay.hpp"

#include <poll.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "mtlsd/proxy/buffer_pool.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// How many reads one pump does back to back before it waits again. Reads and writes that
// complete at once do not go through the scheduler, so without a bound one busy connection
// could keep its worker from every other connection.
constexpr int reads_per_turn = 8;

// While a write waits, how often to look again at a socket that is readable only because of data
// nobody reads yet (backpressure): a FIN or reset behind that data raises no new event.
constexpr auto peer_watch_interval = std::chrono::milliseconds(100);

// One relay: both pumps see it. A pump that meets an error records it and stops the other by
// cancelling its waits — errors are values, never exceptions.
struct relay_state {
  tls_stream& tls;
  stream_socket& tls_socket;
  stream_socket& plain;
  activity_clock& clock;
  relay_result& r;
  bool stopping = false;

  // `side`: whose end this error is (relay_result::first_end).
  void fail(const char* where, const error_code& ec, relay_end side) {
    if (!stopping && ec != asio::error::operation_aborted) r.ended_by(side);
    if (!stopping && ec != asio::error::operation_aborted && !r.aborted) {
      r.aborted = true;
      r.error = std::string(where) + ": " + ec.message();
    }
    stop();
  }
  void stop() {
    if (stopping) return;
    stopping = true;
    error_code ignored;
    tls_socket.cancel(ignored);
    plain.cancel(ignored);
  }
};

enum class peer_end { none, reset, fin };

// How the peer of `sock` stands, without reading: reset (or fully closed), FIN, or still there.
peer_end peer_state(stream_socket& sock) {
  pollfd p{sock.native_handle(), POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return peer_end::none;
  if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return peer_end::reset;
  if (p.revents & POLLRDHUP) return peer_end::fin;
  return peer_end::none;
}

// Watches `sock`, which nobody reads while a write to the other side waits, until its peer
// resets or sends FIN. none: cancelled (the write went ahead, or the relay stopped).
asio::awaitable<peer_end> watch_peer(stream_socket& sock) {
  asio::steady_timer pause(sock.get_executor());
  for (;;) {
    auto [ec] = co_await sock.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted) co_return peer_end::none;
    if (ec) co_return peer_end::reset;
    if (auto e = peer_state(sock); e != peer_end::none) co_return e;
    pause.expires_after(peer_watch_interval);
    auto [tec] = co_await pause.async_wait(as_tuple(use_awaitable));
    if (tec) co_return peer_end::none;
  }
}

// Writes everything to a non-blocking plain socket, waiting only when the kernel buffer is full;
// meanwhile the TLS side is watched for its peer leaving (nobody reads it while we wait).
asio::awaitable<error_code> write_plain(relay_state& st, const char* data, std::size_t n) {
  using namespace asio::experimental::awaitable_operators;
  bool watching = true;
  while (n > 0) {
    error_code ec;
    std::size_t written = st.plain.write_some(asio::buffer(data, n), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      if (!watching) {
        auto [wec] =
            co_await st.plain.async_wait(stream_socket::wait_write, as_tuple(use_awaitable));
        if (wec) co_return wec;
        if (st.stopping) co_return asio::error::operation_aborted;
        continue;
      }
      auto w = co_await (st.plain.async_wait(stream_socket::wait_write, as_tuple(use_awaitable)) ||
                         watch_peer(st.tls_socket));
      if (st.stopping) co_return asio::error::operation_aborted;
      if (w.index() == 0) {
        if (auto [wec] = std::get<0>(w); wec) co_return wec;
        continue;
      }
      switch (std::get<1>(w)) {
        case peer_end::reset:
          co_return asio::error::connection_reset;  // reported as the TLS peer's reset below
        case peer_end::fin:
          // The TLS peer finished sending (or left): what it sent still goes on, bounded by
          // the half-close deadline.
          st.r.ended_by(relay_end::tls_peer);
          st.clock.start_half_close();
          watching = false;
          continue;
        case peer_end::none:
          co_return asio::error::operation_aborted;
      }
      continue;
    }
    if (ec) co_return ec;
    data += written;
    n -= written;
  }
  co_return error_code{};
}

asio::awaitable<void> tls_to_plain(relay_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);  // cancellation arrives as values
  for (;;) {
    if (st.stopping) co_return;
    // Wait without a buffer: an idle connection holds none (OpenSSL may already hold
    // read-ahead bytes, which need no waiting).
    if (!st.tls.has_pending()) {
      auto [ec] =
          co_await st.tls_socket.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
      if (ec || st.stopping) co_return st.fail("waiting for TLS peer", ec, relay_end::tls_peer);
    }
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      auto [ec, n] = co_await st.tls.try_read_some(buf.buffer());
      if (st.stopping) co_return;
      if (ec == asio::error::would_block) break;
      if (ec == asio::error::eof) {
        error_code ignored;
        st.r.ended_by(relay_end::tls_peer);
        st.plain.shutdown(stream_socket::shutdown_send, ignored);  // pass the EOF on
        st.clock.start_half_close();
        co_return;
      }
      if (ec) co_return st.fail("reading from TLS peer", ec, relay_end::tls_peer);
      st.clock.touch();
      if (auto wec = co_await write_plain(st, buf.data(), n)) {
        if (wec == asio::error::connection_reset && !st.stopping)
          co_return st.fail("TLS peer left while the plaintext peer was not reading", wec,
                            relay_end::tls_peer);
        co_return st.fail("writing to plaintext peer", wec, relay_end::plain_peer);
      }
      st.r.from_tls += n;
    }
  }
}

asio::awaitable<void> plain_to_tls(relay_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);  // cancellation arrives as values
  for (;;) {
    if (st.stopping) co_return;
    auto [wait_ec] =
        co_await st.plain.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    if (wait_ec || st.stopping)
      co_return st.fail("waiting for plaintext peer", wait_ec, relay_end::plain_peer);
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      error_code ec;
      std::size_t n = st.plain.read_some(buf.buffer(), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec == asio::error::eof) {
        // close_notify, then FIN: clients that only watch TCP see the end too. The TLS peer
        // may still send; the other pump keeps reading.
        st.r.ended_by(relay_end::plain_peer);
        st.clock.start_half_close();
        co_await st.tls.shutdown_send();
        error_code ignored;
        st.tls_socket.shutdown(stream_socket::shutdown_send, ignored);
        co_return;
      }
      if (ec) co_return st.fail("reading from plaintext peer", ec, relay_end::plain_peer);
      st.clock.touch();
      auto wec = co_await st.tls.write(asio::buffer(buf.data(), n));
      if (st.stopping) co_return;
      if (wec) co_return st.fail("writing to TLS peer", wec, relay_end::tls_peer);
      st.r.from_plain += n;
    }
  }
}

}  // namespace

asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            activity_clock& clock, relay_result& result) {
  using namespace asio::experimental::awaitable_operators;
  clock.touch();
  plain.non_blocking(true);  // the pumps read and write it directly, waiting only when needed
  relay_state st{tls, tls_socket, plain, clock, result};
  // Neither pump throws: each ends on EOF, on an error (recorded, and the other stopped) or when
  // the session cancels the relay (watchdog).
  co_await (tls_to_plain(st) && plain_to_tls(st));
}

}  // namespace mtlsd::proxy
