// The relay's writes (relay_pump.hpp): each waits, when the other side cannot take more, while
// watching the side it reads from for its peer leaving.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <utility>
#include <variant>

#include "mtlsd/net/edge_wait.hpp"
#include "relay_pump.hpp"

namespace mtlsd::proxy::detail {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// The watch's pauses after a wake-up that found the peer still there: the first, and the longest
// they double up to.
constexpr auto peer_watch_first_pause = std::chrono::milliseconds(100);
constexpr auto peer_watch_longest_pause = std::chrono::milliseconds(3200);

// Watches `sock`, which nobody reads while a write to the other side waits, until its peer
// resets or sends FIN. none: cancelled (the write went ahead, or the relay stopped).
// The socket is readable all along (the bytes nobody reads), so its own async_wait would complete
// at once, every time: the watch looks (peer_state), then waits for the socket's next event
// (net::async_wait_drained, whose "sleeps until more comes" is meant here): bytes, a FIN or a
// reset arriving after the look. The kernel also reports other wake-ups of the socket (the
// acknowledgements of what the other pump writes to it) as readable, so after each wake-up that
// finds the peer still there the watch pauses, 100 ms doubling up to 3.2 s: a stuck write whose
// peer keeps waking the socket costs a few wake-ups a minute, not ten a second (review: 1,000
// clients that never read their download took 19% of a core, each woken every 100 ms). A reset
// or FIN is noticed at once while the watch waits, and at the pause's end while it pauses: within
// 3.2 s. Without edge waits (another Boost than 1.81) every wait completes at once, and the
// pauses alone bound the cost.
asio::awaitable<peer_end> watch_peer(stream_socket& sock) {
  asio::steady_timer pause(sock.get_executor());
  auto next_pause = peer_watch_first_pause;
  for (;;) {
    // Before each wait: an end already reported (while nobody waited) raises no event again.
    if (auto e = peer_state(sock); e != peer_end::none) co_return e;
    auto [ec] =
        co_await net::async_wait_drained(sock, stream_socket::wait_read, as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted) co_return peer_end::none;
    if (ec) co_return peer_end::reset;
    if (auto e = peer_state(sock); e != peer_end::none) co_return e;
    pause.expires_after(next_pause);
    next_pause = std::min(next_pause * 2, peer_watch_longest_pause);
    auto [tec] = co_await pause.async_wait(as_tuple(use_awaitable));
    if (tec) co_return peer_end::none;
  }
}

// Waits until `out` can take more bytes. Meanwhile nobody reads `in` (the pump that would is
// this one, parked on its write), so `in` is watched for its peer leaving: a reset ends the
// relay (the result says so), a FIN starts the half-close deadline — what that peer sent still
// goes on — and stops the watching (the FIN stays visible). `watching` carries that across calls.
// The age's wake-up (relay_state::age) cuts these waits too: the write goes on, they are made
// again.
enum class wait_end { writable, in_peer_reset, failed };
asio::awaitable<std::pair<wait_end, error_code>> wait_writable(relay_state& st, stream_socket& out,
                                                               stream_socket& in, relay_end in_side,
                                                               bool& watching) {
  using namespace asio::experimental::awaitable_operators;
  for (;;) {
    if (st.stop_requested())
      co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
    if (!watching) {
      auto [wec] = co_await out.async_wait(stream_socket::wait_write, as_tuple(use_awaitable));
      if (st.stop_requested())
        co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
      if (st.age_woke(wec)) continue;  // the write goes on after the age
      co_return std::pair{wec ? wait_end::failed : wait_end::writable, wec};
    }
    auto w = co_await (out.async_wait(stream_socket::wait_write, as_tuple(use_awaitable)) ||
                       watch_peer(in));
    if (st.stop_requested())
      co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
    if (w.index() == 0) {
      auto [wec] = std::get<0>(w);
      if (st.age_woke(wec)) continue;
      co_return std::pair{wec ? wait_end::failed : wait_end::writable, wec};
    }
    switch (std::get<1>(w)) {
      case peer_end::reset:
        co_return std::pair{wait_end::in_peer_reset, error_code(asio::error::connection_reset)};
      case peer_end::fin:
        st.r.ended_by(in_side);
        st.clock.start_half_close();
        watching = false;
        continue;
      case peer_end::none:  // the watch's wait was cut: by the age (age_woke), or a stop
        if (st.age_woke(error_code(asio::error::operation_aborted))) continue;
        co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
    }
  }
}

// A write to the plaintext peer failed: it is gone (reset, or closed with bytes unread), or
// something else went wrong.
void fail_plain_write(relay_state& st, const error_code& ec) {
  if (ec == asio::error::broken_pipe || ec == asio::error::connection_reset)
    st.plain_gone("writing to plaintext peer", ec);
  else
    st.fail("writing to plaintext peer", ec, relay_end::plain_peer);
}

}  // namespace

asio::awaitable<bool> write_plain(relay_state& st, const char* data, std::size_t n) {
  bool watching = true;
  while (n > 0) {
    error_code ec;
    std::size_t written = st.plain.write_some(asio::buffer(data, n), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      st.plain_write_waiting = true;
      auto [how, wec] =
          co_await wait_writable(st, st.plain, st.tls_socket, relay_end::tls_peer, watching);
      st.plain_write_waiting = false;
      if (how == wait_end::writable) continue;
      if (how == wait_end::in_peer_reset)
        st.fail("TLS peer left while the plaintext peer was not reading", wec, relay_end::tls_peer);
      else
        st.fail("writing to plaintext peer", wec, relay_end::plain_peer);
      co_return false;
    }
    if (ec) {
      fail_plain_write(st, ec);
      co_return false;
    }
    data += written;
    n -= written;
  }
  co_return true;
}

asio::awaitable<bool> write_tls(relay_state& st, const char* data, std::size_t n) {
  bool watching = true;
  for (;;) {
    // Retried with the same buffer after would_block, as OpenSSL requires.
    auto ec = co_await st.tls.try_write(asio::buffer(data, n));
    if (st.stop_requested()) co_return false;
    if (!ec) co_return true;
    if (ec == asio::error::would_block) {
      auto [how, wec] =
          co_await wait_writable(st, st.tls_socket, st.plain, relay_end::plain_peer, watching);
      if (how == wait_end::writable) continue;
      if (how == wait_end::in_peer_reset)
        st.fail("plaintext peer left while the TLS peer was not reading", wec,
                relay_end::plain_peer);
      else
        st.fail("writing to TLS peer", wec, relay_end::tls_peer);
      co_return false;
    }
    st.fail("writing to TLS peer", ec, relay_end::tls_peer);
    co_return false;
  }
}

written_now write_plain_now(relay_state& st, const char*& data, std::size_t& n) {
  error_code ec;
  const std::size_t written = st.plain.write_some(asio::buffer(data, n), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return written_now::wait;
  if (ec) {
    fail_plain_write(st, ec);
    return written_now::failed;
  }
  data += written;
  n -= written;
  return n == 0 ? written_now::all : written_now::wait;
}
written_now write_tls_now(relay_state& st, const char* data, std::size_t n) {
  const auto a = st.tls.write_now(asio::buffer(data, n));
  if (a.wants != tls_stream::want::nothing) return written_now::wait;
  if (a.ec) {
    st.fail("writing to TLS peer", a.ec, relay_end::tls_peer);
    return written_now::failed;
  }
  return written_now::all;
}

}  // namespace mtlsd::proxy::detail
