// The relay's writes (relay_pump.hpp): each waits, when the other side cannot take more, while
// watching the side it reads from for its peer leaving.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <utility>
#include <variant>

#include "relay_pump.hpp"

namespace mtlsd::proxy::detail {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// While a write waits, how often to look again at a socket that is readable only because of data
// nobody reads yet (backpressure): a FIN or reset behind that data raises no new event.
constexpr auto peer_watch_interval = std::chrono::milliseconds(100);

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

// Waits until `out` can take more bytes. Meanwhile nobody reads `in` (the pump that would is
// this one, parked on its write), so `in` is watched for its peer leaving: a reset ends the
// relay (the result says so), a FIN starts the half-close deadline — what that peer sent still
// goes on — and stops the watching (the FIN stays visible). `watching` carries that across calls.
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
      co_return std::pair{wec ? wait_end::failed : wait_end::writable, wec};
    }
    auto w = co_await (out.async_wait(stream_socket::wait_write, as_tuple(use_awaitable)) ||
                       watch_peer(in));
    if (st.stop_requested())
      co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
    if (w.index() == 0) {
      auto [wec] = std::get<0>(w);
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
      case peer_end::none:
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
