#include "mtlsd/proxy/relay.hpp"

#include <prometheus/counter.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cerrno>
#include <exception>
#include <optional>
#include <tuple>
#include <utility>

#include "mtlsd/net/edge_wait.hpp"
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/buffer_pool.hpp"
#include "relay_pump.hpp"

namespace mtlsd::proxy {

void byte_count::give() {
  counter_->Increment(static_cast<double>(total_ - (next_ - meter_step)));
  next_ = total_ + meter_step;
}

namespace {

using detail::relay_state;
using detail::write_plain;
using detail::write_plain_now;
using detail::write_tls;
using detail::write_tls_now;
using detail::written_now;

using asio::as_tuple;

// The pumps' waits for their socket: `deferred` runs the operation in the pump's own frame,
// where use_awaitable starts a coroutine frame of its own for it, which an idle connection holds
// (~0.2 KiB per wait).
constexpr auto idle_wait = as_tuple(asio::deferred);

// How many reads one pump does back to back before it waits again (tls_stream.hpp).
constexpr int reads_per_turn = tls_stream::reads_per_turn;
// The TLS side's pump counts its turn in bytes read off the socket instead (records and their
// headers): it gathers records into its buffer (detail::read_records), so a read returns from
// one to thousands of them. As many bytes as reads_per_turn full records: bulk transfers take
// the turns they took, and a peer sending records of a few bytes gets as many of its bytes
// through per turn, ~5,700 records of 1 byte (where counting reads gave it 8 records, each
// written on its own: review, 262,144 writes and 32,885 epoll_waits for 256 KiB), though not
// for the same CPU time: each record is decrypted on its own. nginx reads until its 16 KiB
// buffer is full, whatever the records cost.
constexpr std::uint64_t turn_bytes = std::uint64_t{reads_per_turn} * pooled_buffer::size();

// A pump that used its whole turn (reads_per_turn reads, or turn_bytes, and data still coming)
// lets the worker's other connections run, then reads on without waiting: the socket is known to
// be readable, and a socket wait would re-arm epoll (Asio's async_wait: one epoll_ctl) to be told
// so again. One post through the scheduler instead (bench/run.sh --syscalls bulk: epoll_ctl 8.2
// -> ~0 per MiB).
// A session cancellation sent meanwhile reaches no socket operation: the pump's loop sees it
// (relay_state::stop_requested). An operation awaited in the pump's frame, not a coroutine of its
// own (a frame allocated per turn). `sock`: the socket the pump reads, whose executor runs the
// relay.
auto yield_turn(stream_socket& sock) {
  return asio::post(sock.get_executor(), asio::deferred);
}

// A wait for the TLS peer, started by `wait` with a handler, that relay_state::age can cut
// (tls_wait_wake), in the pump's frame as idle_wait's.
template <class Wait>
auto wakeable(relay_state& st, Wait wait) {
  return asio::async_initiate<decltype(idle_wait), void(error_code)>(
      [&st, wait](auto handler) {
        wait(asio::bind_cancellation_slot(st.tls_wait_wake.slot(), std::move(handler)));
      },
      idle_wait);
}

// The TLS peer's stream ended (EOF), or the age ended it (relay_state::age): passed on with a
// FIN, unless the other side ended first: then the relay is over and the close that follows
// sends it (one system call less per connection). After the age the TLS peer may still be
// sending, and a close over its unread bytes would reset the connection, destroying what is
// still queued for it: the session closes by lingering.
void tls_side_over(relay_state& st, bool by_age) {
  if (!st.ended_before(relay_end::tls_peer)) {
    error_code ignored;
    st.plain.shutdown(stream_socket::shutdown_send, ignored);
  }
  st.r.tls_stream_ended = true;
  if (by_age) st.r.tls_peer_sending = true;
  st.clock.start_half_close();
}

asio::awaitable<void> tls_to_plain(relay_state& st) {
  co_await asio::this_coro::throw_if_cancelled(false);  // cancellation arrives as values
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
    if (st.stop_requested()) co_return;
    // Wait without a buffer: an idle connection holds none. After the age, no wait: what is
    // there is read, then the end passed on (a read that would block is the end).
    if (wait_for_socket && !st.aging) {
      auto [ec] = co_await wakeable(st, [&st, drained](auto handler) {
        if (drained)
          net::async_wait_drained(st.tls_socket, stream_socket::wait_read, std::move(handler));
        else
          st.tls_socket.async_wait(stream_socket::wait_read, std::move(handler));
      });
      if ((ec || st.stop_requested()) && !st.age_woke(ec))
        co_return st.fail("waiting for TLS peer", ec, relay_end::tls_peer);
    }
    wait_for_socket = true;
    drained = false;
    bool turn_used = true;  // no read would block, no EOF: the socket may hold more
    pooled_buffer buf;
    const std::uint64_t turn_end = st.tls.received() + turn_bytes;
    for (;;) {
      auto got = detail::read_records(st.tls, st.tls_socket, buf.buffer(), turn_end);
      if (got.n == 0 && got.wants == tls_stream::want::write) {
        std::tie(got.ec, got.n) = co_await st.tls.try_read_some(buf.buffer());
        got.wants = tls_stream::want::nothing;  // would_block now: it waits for input
      }
      if (st.stop_requested()) co_return;
      // What came before an end or an error is passed on first: it came whole.
      if (got.n > 0) {
        st.clock.touch();
        const char* rest = buf.data();
        std::size_t left = got.n;
        const auto now = write_plain_now(st, rest, left);
        if (now == written_now::failed) co_return;
        if (now == written_now::wait && !co_await write_plain(st, rest, left)) co_return;
        st.r.from_tls += got.n;
      }
      const auto& ec = got.ec;
      // OpenSSL must send before it reads on (a key update): try_read_some, once the records
      // before are out.
      if (ec == asio::error::would_block && got.wants == tls_stream::want::write) continue;
      if (ec == asio::error::would_block && st.aging) co_return tls_side_over(st, true);
      if (ec == asio::error::would_block) {
        wait_for_socket = true;
        drained = got.wants == tls_stream::want::read;
        turn_used = false;
        // A connection that comes back for more: from now on a read that empties the socket is
        // known to (net/read_drain.hpp; one epoll_ctl), and the read that would block is not
        // made. Not on the first: a connection used once would only pay for it.
        if (drained && std::exchange(blocked_once, true) && !std::exchange(track_tried, true))
          net::track_read_drain(st.tls_socket);
        break;
      }
      wait_for_socket = !st.tls.has_pending();
      if (ec == asio::error::eof) co_return tls_side_over(st, false);
      if (ec) co_return st.fail("reading from TLS peer", ec, relay_end::tls_peer);
      // Looked at again: the write may have yielded. A read since epoll's last report emptied
      // the socket: a wait queued now wakes for whatever came (net/read_drain.hpp).
      if (!st.tls.has_pending() && net::known_drained(st.tls_socket)) {
        drained = true;
        wait_for_socket = true;
        turn_used = false;
        break;
      }
      if (st.tls.received() >= turn_end) break;
    }
    if (turn_used) {
      co_await yield_turn(st.tls_socket);
      wait_for_socket = false;  // read on: what stays unread raises no new event
    }
  }
}

asio::awaitable<void> plain_to_tls(relay_state& st) {
  // The cheaper wait applies (net/edge_wait): the last read would block, or the socket is known
  // drained (net/read_drain).
  bool drained = false;
  bool turn_used = false;  // the last turn read reads_per_turn times: read on after a yield
  bool blocked_once = false, track_tried = false;  // as in tls_to_plain
  for (;;) {
    if (st.stop_requested()) co_return;
    if (turn_used) {
      co_await yield_turn(st.plain);
      if (st.stop_requested()) co_return;
    } else if (!st.aging) {  // after the age: read what is there, as in tls_to_plain
      auto [wait_ec] =
          drained ? co_await net::async_wait_drained(st.plain, stream_socket::wait_read, idle_wait)
                  : co_await st.plain.async_wait(stream_socket::wait_read, idle_wait);
      if ((wait_ec || st.stop_requested()) && !st.age_woke(wait_ec))
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
      if (would_block && !st.aging) {
        drained = true;
        turn_used = false;
        if (std::exchange(blocked_once, true) && !std::exchange(track_tried, true))
          net::track_read_drain(st.plain);
        break;
      }
      // After the age, a read that would block is the end: what had arrived is relayed.
      if (ec == asio::error::eof || would_block) {
        // Everything the plaintext peer sent before it went away is out: the relay ends, and
        // without close_notify, which would tell the TLS peer that the stream ended cleanly.
        if (st.plain_write_failed) {
          st.stop();
          co_return;
        }
        // close_notify, then FIN: clients that only watch TCP see the end too. The TLS peer
        // may still send; the other pump keeps reading.
        const bool other_ended = st.ended_before(relay_end::plain_peer);
        st.clock.start_half_close();
        co_await st.tls.shutdown_send();
        st.r.plain_stream_ended = true;
        if (!other_ended) {  // as in tls_to_plain
          error_code ignored;
          st.tls_socket.shutdown(stream_socket::shutdown_send, ignored);
        }
        co_return;
      }
      if (ec) {
        // A reset: what it sent before is out (written to the TLS socket), but maybe not yet
        // sent by our kernel, and closing over bytes of the TLS peer's we have not read would
        // reset that connection too, destroying it. So the session closes by lingering (as
        // after plain_gone) when such bytes are there, or the other pump is waiting to write
        // the TLS peer's upload (more of it is coming); else a close sends FIN after the last.
        if (ec == asio::error::connection_reset &&
            (st.plain_write_waiting || !net::nothing_to_read(st.tls_socket)))
          st.r.tls_peer_sending = true;
        co_return st.fail("reading from plaintext peer", ec, relay_end::plain_peer);
      }
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

// relay_result::running for the relay's life, from its first wait on (an age asked before it
// started is taken now, before any wait of the relay's: none to wake). The session outlives the
// relay's frame, so clearing it at the end is safe wherever the frame is destroyed.
class running_as {
 public:
  explicit running_as(relay_state& st) : r_(st.r) {
    st.aging = r_.age_asked;
    r_.running = &st;
  }
  running_as(const running_as&) = delete;
  running_as& operator=(const running_as&) = delete;
  ~running_as() { r_.running = nullptr; }

 private:
  relay_result& r_;
};

}  // namespace

asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            idle_deadline& clock, relay_result& result) {
  clock.touch();
  error_code ec;
  net::make_non_blocking(plain, ec);  // the pumps read and write it directly
  if (ec) throw boost::system::system_error(ec, "making the upstream socket non-blocking");
  relay_state st{tls, tls_socket, plain, clock, result};
  const running_as published(st);
  // Neither pump throws: each ends on EOF, on an error (recorded, and the other stopped) or when
  // the session cancels the relay (watchdog). The TLS peer's pump runs in a coroutine of its
  // own; the plaintext side's in this one, so that an idle connection holds one co_spawn entry
  // frame and no parallel group state instead of two and one (~0.7 KiB). The session's
  // cancellation reaches the operation this coroutine waits on, or else is seen in its state by
  // whichever pump resumes next (relay_state::stop_requested); either stops the relay, which
  // cancels the other's waits.
  // Cancellation arrives as values here; the caller's setting is given back at the end (this
  // coroutine shares the caller's, where the pumps each had one of their own).
  const bool caller_throws = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  st.session_cancel = co_await asio::this_coro::cancellation_state;
  const auto ex = co_await asio::this_coro::executor;
  // Made only once this side is over (a timer the handler below cancels): an idle connection
  // does not hold it.
  std::optional<asio::steady_timer> tls_side_ended;
  bool tls_side_over = false;
  std::exception_ptr tls_side_error;
  // This frame outlives the handler: the relay does not return before it ran (below).
  asio::co_spawn(ex, tls_to_plain(st), [&](std::exception_ptr e) {
    if (e) st.stop();
    tls_side_error = e;
    tls_side_over = true;
    if (tls_side_ended) tls_side_ended->cancel();
  });
  std::exception_ptr plain_side_error;
  try {
    co_await plain_to_tls(st);
  } catch (...) {
    plain_side_error = std::current_exception();
    st.stop();
  }
  // Until the other pump ends. The session's cancellation may have come before this wait (after
  // this side's last operation): it is looked at before each wait, not only met by one.
  while (!tls_side_over) {
    st.stop_requested();
    if (!tls_side_ended) tls_side_ended.emplace(ex, asio::steady_timer::time_point::max());
    co_await tls_side_ended->async_wait(idle_wait);
  }
  co_await asio::this_coro::throw_if_cancelled(caller_throws);
  if (tls_side_error) std::rethrow_exception(tls_side_error);
  if (plain_side_error) std::rethrow_exception(plain_side_error);
  // The TLS side ended in an error (a reset, a record cut short, a protocol error): the plain
  // side is reset as it closes, not sent a FIN that reads as a clean end (review: an upstream
  // could not tell a cut stream from a finished one). A plain side without TLS has no other way
  // to hear it. Also when the plain side's FIN came first (review: an upstream that half-closed
  // before reading the upload read a cut upload as whole).
  if (st.tls_side_failed) {
    const linger reset{1, 0};
    ::setsockopt(plain.native_handle(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
}

}  // namespace mtlsd::proxy
