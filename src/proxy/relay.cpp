#include "mtlsd/proxy/relay.hpp"

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <tuple>
#include <utility>

#include "mtlsd/net/edge_wait.hpp"
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/buffer_pool.hpp"

namespace mtlsd::proxy {
namespace {

using detail::peer_end;
using detail::peer_state;

using asio::as_tuple;
using asio::use_awaitable;

// How many reads one pump does back to back before it waits again (tls_stream.hpp).
constexpr int reads_per_turn = tls_stream::reads_per_turn;

// While a write waits, how often to look again at a socket that is readable only because of data
// nobody reads yet (backpressure): a FIN or reset behind that data raises no new event.
constexpr auto peer_watch_interval = std::chrono::milliseconds(100);

// One relay: both pumps see it. A pump that meets an error records it and stops the other by
// cancelling its waits — errors are values, never exceptions.
//
// The session ends the relay by cancellation (its watchdog: deadlines, drain, kill), which
// reaches the operation a pump is waiting on. One that comes while a pump's last operation has
// completed but the pump has not resumed reaches none; it is only recorded in the pump's
// cancellation state, which the pumps therefore look at before every wait (stop_if_cancelled).
struct relay_state {
  tls_stream& tls;
  stream_socket& tls_socket;
  stream_socket& plain;
  idle_deadline& clock;
  relay_result& r;
  bool stopping = false;

  // `side`: whose end this error is (relay_result::first_end).
  void fail(const char* where, const error_code& ec, relay_end side) {
    if (!stopping && ec != asio::error::operation_aborted) r.ended_by(side);
    if (!stopping && ec != asio::error::operation_aborted && !r.aborted) {
      r.aborted = true;
      r.error = std::string(where) + ": " + describe(ec, tls);
    }
    stop();
  }
  // Records that `side` reached its end; true when the other side's end came first.
  bool ended_before(relay_end side) {
    const bool other_first = r.first_end != relay_end::none;
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
};

// True (and the relay stopped) when the session cancelled the relay; `cs`: the pump's
// this_coro::cancellation_state.
bool stop_if_cancelled(relay_state& st, const asio::cancellation_state& cs) {
  if (cs.cancelled() != asio::cancellation_type::none) st.stop();
  return st.stopping;
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

// Waits until `out` can take more bytes. Meanwhile nobody reads `in` (the pump that would is
// this one, parked on its write), so `in` is watched for its peer leaving: a reset ends the
// relay (the result says so), a FIN starts the half-close deadline — what that peer sent still
// goes on — and stops the watching (the FIN stays visible). `watching` carries that across calls.
enum class wait_end { writable, in_peer_reset, failed };
asio::awaitable<std::pair<wait_end, error_code>> wait_writable(relay_state& st, stream_socket& out,
                                                               stream_socket& in, relay_end in_side,
                                                               bool& watching) {
  using namespace asio::experimental::awaitable_operators;
  const auto cs = co_await asio::this_coro::cancellation_state;
  for (;;) {
    if (stop_if_cancelled(st, cs))
      co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
    if (!watching) {
      auto [wec] = co_await out.async_wait(stream_socket::wait_write, as_tuple(use_awaitable));
      if (st.stopping)
        co_return std::pair{wait_end::failed, error_code(asio::error::operation_aborted)};
      co_return std::pair{wec ? wait_end::failed : wait_end::writable, wec};
    }
    auto w = co_await (out.async_wait(stream_socket::wait_write, as_tuple(use_awaitable)) ||
                       watch_peer(in));
    if (st.stopping)
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

// Writes everything to a non-blocking plain socket, waiting only when the kernel buffer is full;
// meanwhile the TLS side is watched for its peer leaving. On an error the relay is stopped and
// the error recorded; returns false then.
asio::awaitable<bool> write_plain(relay_state& st, const char* data, std::size_t n) {
  bool watching = true;
  while (n > 0) {
    error_code ec;
    std::size_t written = st.plain.write_some(asio::buffer(data, n), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      auto [how, wec] =
          co_await wait_writable(st, st.plain, st.tls_socket, relay_end::tls_peer, watching);
      if (how == wait_end::writable) continue;
      if (how == wait_end::in_peer_reset)
        st.fail("TLS peer left while the plaintext peer was not reading", wec, relay_end::tls_peer);
      else
        st.fail("writing to plaintext peer", wec, relay_end::plain_peer);
      co_return false;
    }
    if (ec) {
      st.fail("writing to plaintext peer", ec, relay_end::plain_peer);
      co_return false;
    }
    data += written;
    n -= written;
  }
  co_return true;
}

// The same towards the TLS peer, watching the plaintext side meanwhile: an upstream that resets
// or finishes while the TLS client is not reading is noticed now, not at the idle timeout.
asio::awaitable<bool> write_tls(relay_state& st, const char* data, std::size_t n) {
  bool watching = true;
  for (;;) {
    // Retried with the same buffer after would_block, as OpenSSL requires.
    auto ec = co_await st.tls.try_write(asio::buffer(data, n));
    if (st.stopping) co_return false;
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

// The common cases without a coroutine frame (one per call otherwise): a chunk the kernel or
// OpenSSL takes whole at once. `wait`: the coroutine above carries on — write_plain from where
// this stopped, write_tls with the same buffer (OpenSSL requires it). Errors are recorded here.
enum class written_now { all, failed, wait };
written_now write_plain_now(relay_state& st, const char*& data, std::size_t& n) {
  error_code ec;
  const std::size_t written = st.plain.write_some(asio::buffer(data, n), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) return written_now::wait;
  if (ec) {
    st.fail("writing to plaintext peer", ec, relay_end::plain_peer);
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

// A pump that used its whole turn (reads_per_turn reads and data still coming) lets the worker's
// other connections run, then reads on without waiting: the socket is known to be readable, and
// a socket wait would re-arm epoll (Asio's async_wait: one epoll_ctl) to be told so again. One
// post through the scheduler instead (bench/run.sh --syscalls bulk: epoll_ctl 8.2 -> ~0 per MiB).
// A session cancellation sent meanwhile reaches no socket operation: the pump's loop sees it
// (stop_if_cancelled).
asio::awaitable<void> yield_turn() {
  const auto ex = co_await asio::this_coro::executor;
  co_await asio::post(ex, use_awaitable);
}

asio::awaitable<void> tls_to_plain(relay_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);  // cancellation arrives as values
  const auto cs = co_await asio::this_coro::cancellation_state;
  // Whether to wait for the socket before reading. Not when OpenSSL already holds bytes it has
  // not tried to decrypt (read-ahead). But once a read would block, whatever it holds is an
  // incomplete record: its rest must be waited for, or this loop would spin without yielding
  // and hold the worker thread for as long as the peer keeps the record unfinished.
  bool wait_for_socket = !st.tls.has_pending();
  // The cheaper wait applies (net/edge_wait): the last read would block (WANT_READ), or the
  // socket is known drained (net/read_drain).
  bool drained = false;
  bool blocked_once = false;  // a read would block before: the next such starts tracking (below)
  bool track_tried = false;
  for (;;) {
    if (stop_if_cancelled(st, cs)) co_return;
    // Wait without a buffer: an idle connection holds none.
    if (wait_for_socket) {
      auto [ec] = drained ? co_await net::async_wait_drained(
                                st.tls_socket, stream_socket::wait_read, as_tuple(use_awaitable))
                          : co_await st.tls_socket.async_wait(stream_socket::wait_read,
                                                              as_tuple(use_awaitable));
      if (ec || st.stopping) co_return st.fail("waiting for TLS peer", ec, relay_end::tls_peer);
    }
    wait_for_socket = true;
    drained = false;
    bool turn_used = true;  // no read would block, no EOF: the socket may hold more
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      auto [ec, n, wants] = st.tls.read_now(buf.buffer());
      if (wants == tls_stream::want::write)
        std::tie(ec, n) = co_await st.tls.try_read_some(buf.buffer());
      if (st.stopping) co_return;
      if (ec == asio::error::would_block) {
        wait_for_socket = true;
        drained = wants == tls_stream::want::read;
        turn_used = false;
        // A connection that comes back for more: from now on a read that empties the socket is
        // known to (net/read_drain.hpp; one epoll_ctl), and the read that would block is not
        // made. Not on the first: a connection used once would only pay for it.
        if (drained && std::exchange(blocked_once, true) && !std::exchange(track_tried, true))
          net::track_read_drain(st.tls_socket);
        break;
      }
      wait_for_socket = !st.tls.has_pending();
      if (ec == asio::error::eof) {
        // Passed on with a FIN, unless the other side ended first: then the relay is over and
        // the close that follows sends it (one system call less per connection).
        if (!st.ended_before(relay_end::tls_peer)) {
          error_code ignored;
          st.plain.shutdown(stream_socket::shutdown_send, ignored);
        }
        st.clock.start_half_close();
        co_return;
      }
      if (ec) co_return st.fail("reading from TLS peer", ec, relay_end::tls_peer);
      st.clock.touch();
      const char* rest = buf.data();
      std::size_t left = n;
      const auto now = write_plain_now(st, rest, left);
      if (now == written_now::failed) co_return;
      if (now == written_now::wait && !co_await write_plain(st, rest, left)) co_return;
      st.r.from_tls += n;
      // Looked at again: the write may have yielded. A read since epoll's last report emptied
      // the socket: a wait queued now wakes for whatever came (net/read_drain.hpp).
      if (!st.tls.has_pending() && net::known_drained(st.tls_socket)) {
        drained = true;
        wait_for_socket = true;
        turn_used = false;
        break;
      }
    }
    if (turn_used) {
      co_await yield_turn();
      wait_for_socket = false;  // read on: what stays unread raises no new event
    }
  }
}

asio::awaitable<void> plain_to_tls(relay_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);  // cancellation arrives as values
  const auto cs = co_await asio::this_coro::cancellation_state;
  // The cheaper wait applies (net/edge_wait): the last read would block, or the socket is known
  // drained (net/read_drain).
  bool drained = false;
  bool turn_used = false;  // the last turn read reads_per_turn times: read on after a yield
  bool blocked_once = false, track_tried = false;  // as in tls_to_plain
  for (;;) {
    if (stop_if_cancelled(st, cs)) co_return;
    if (turn_used) {
      co_await yield_turn();
      if (stop_if_cancelled(st, cs)) co_return;
    } else {
      auto [wait_ec] =
          drained ? co_await net::async_wait_drained(st.plain, stream_socket::wait_read,
                                                     as_tuple(use_awaitable))
                  : co_await st.plain.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
      if (wait_ec || st.stopping)
        co_return st.fail("waiting for plaintext peer", wait_ec, relay_end::plain_peer);
    }
    drained = false;
    turn_used = true;
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      error_code ec;
      std::size_t n = st.plain.read_some(buf.buffer(), ec);
      const bool would_block = ec == asio::error::would_block || ec == asio::error::try_again;
      net::note_read(st.plain, buf.buffer().size(),
                     ec ? (ec == asio::error::eof ? 0 : -1) : static_cast<ssize_t>(n),
                     would_block ? EAGAIN : 0);
      if (would_block) {
        drained = true;
        turn_used = false;
        if (std::exchange(blocked_once, true) && !std::exchange(track_tried, true))
          net::track_read_drain(st.plain);
        break;
      }
      if (ec == asio::error::eof) {
        // close_notify, then FIN: clients that only watch TCP see the end too. The TLS peer
        // may still send; the other pump keeps reading.
        const bool other_ended = st.ended_before(relay_end::plain_peer);
        st.clock.start_half_close();
        co_await st.tls.shutdown_send();
        if (!other_ended) {  // as in tls_to_plain
          error_code ignored;
          st.tls_socket.shutdown(stream_socket::shutdown_send, ignored);
        }
        co_return;
      }
      if (ec) co_return st.fail("reading from plaintext peer", ec, relay_end::plain_peer);
      st.clock.touch();
      const auto now = write_tls_now(st, buf.data(), n);
      if (now == written_now::failed) co_return;
      if (now == written_now::wait && !co_await write_tls(st, buf.data(), n)) co_return;
      st.r.from_plain += n;
      if (net::known_drained(st.plain)) {
        drained = true;  // as in tls_to_plain
        turn_used = false;
        break;
      }
    }
  }
}

}  // namespace

asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            idle_deadline& clock, relay_result& result) {
  using namespace asio::experimental::awaitable_operators;
  clock.touch();
  error_code ec;
  net::make_non_blocking(plain, ec);  // the pumps read and write it directly
  if (ec) throw boost::system::system_error(ec, "making the upstream socket non-blocking");
  relay_state st{tls, tls_socket, plain, clock, result};
  // Neither pump throws: each ends on EOF, on an error (recorded, and the other stopped) or when
  // the session cancels the relay (watchdog).
  co_await (tls_to_plain(st) && plain_to_tls(st));
  // The TLS side ended in an error (a reset, a record cut short, a protocol error): the plain
  // side is reset as it closes, not sent a FIN that reads as a clean end (review: an upstream
  // could not tell a cut stream from a finished one). A plain side without TLS has no other way
  // to hear it.
  if (result.aborted && result.first_end == relay_end::tls_peer) {
    const linger reset{1, 0};
    ::setsockopt(plain.native_handle(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
}

}  // namespace mtlsd::proxy
