// How a session ends by lingering: FIN, then what the client still sends is read and
// discarded until it closes, so that closing the socket over its unread bytes does not turn into
// a reset that destroys what mtlsd wrote last (an alert, a response, a GOAWAY). nginx's
// lingering close.
#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <optional>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/buffer_pool.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {

using asio::as_tuple;
using asio::use_awaitable;

// After a refusal the alert is already written; closing now, with the client's unread bytes in
// our receive queue, would make the kernel send RST — and a RST can destroy the alert before the
// client reads it (curl then reports a reset instead of "certificate required"). So: FIN, then
// read and discard until the client closes, bounded by `bound` (nginx's lingering close). The
// HTTP/1.1 relay closes the same way after answering a request whose body was still coming.
// What is already there is read without waiting: a client that closed first (a silent socket,
// half a ClientHello) ends the session here, in the same turn, rather than after an async read
// completes — queued behind every other ready socket, and holding its SSL object (~24 KiB with
// the read buffer) meanwhile: 2,000 such sockets closing at once held ~48 MB for seconds. For
// the same reason the sink is small; a client that fills it (one still uploading) gets a relay
// buffer on loan instead, so that its bytes go in 16 KiB reads rather than 1 KiB ones.
// With `quiet`, a client that sends nothing for that long ends it too (nginx's lingering_timeout
// inside its lingering_time): a pool that parks the connection is not held for all of `bound`.
asio::awaitable<void> linger_close(session& s, config::duration bound, config::duration quiet) {
  s.enter(phase::closing, bound);
  if (quiet.count() > 0 && quiet < bound) {
    s.clock.idle = quiet;
    s.clock.close_by = s.clock.deadline;
    s.clock.touch();
    s.watchdog_timer.cancel();  // the deadline moved earlier than enter()'s
  }
  error_code ec;
  s.peer.shutdown(stream_socket::shutdown_send, ec);
  if (ec) co_return;
  net::make_non_blocking(s.peer, ec);
  std::array<char, 1024> small;
  std::optional<pooled_buffer> large;
  // A peer that keeps sending gets a few reads per turn, then the worker serves the others (a
  // post: waiting for readiness would miss the edge of bytes already queued); the closing
  // deadline's cancellation ends it at that co_await.
  constexpr int reads_per_turn = tls_stream::reads_per_turn;
  for (int reads = 1;; ++reads) {
    const std::size_t n = s.peer.read_some(large ? large->buffer() : asio::buffer(small), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      auto [wait_ec] =
          co_await s.peer.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
      if (wait_ec) co_return;
    } else if (ec) {
      co_return;  // EOF, or the peer is gone: nothing left to linger for
    } else {
      s.clock.touch();  // with `quiet`: the client is not quiet yet
      s.lingered_read = steady::now();
      if (!large && n == small.size()) large.emplace();
      if (reads % reads_per_turn == 0) co_await asio::post(s.peer.get_executor(), use_awaitable);
    }
  }
}

namespace {

// Bytes sent to the client that its TCP has not acknowledged yet (the FIN counts as one).
int unacknowledged(stream_socket& peer) {
  int queued = 0;
  return ::ioctl(peer.native_handle(), SIOCOUTQ, &queued) == 0 ? queued : -1;
}

// While a drain is under way the lingering ends once the client's TCP has acknowledged every
// byte mtlsd sent, FIN included, and the client has sent nothing for drain_quiet: from then on a
// reset cannot take the answer away from a Linux client any more (it reads what arrived before
// it sees the reset), and a pool that keeps the connection parked does not hold the drain for
// the 5 s quiet period. The quiet part is for a client still uploading, which reads the answer
// only once its body is out (http.client, requests): ended while it sends, it would meet the
// reset before it reads. Looked at every 20 ms; until the drain begins (drain_started is
// cancelled then), not at all.
constexpr auto drain_quiet = std::chrono::milliseconds(200);

asio::awaitable<void> acknowledged_during_drain(session& s, asio::steady_timer& drain_started) {
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto state = co_await asio::this_coro::cancellation_state;
  const auto cancelled = [&state] { return state.cancelled() != asio::cancellation_type::none; };
  if (!s.control.draining()) {
    // Ends only by cancellation: the drain's hook, or the lingering ending first.
    co_await drain_started.async_wait(as_tuple(use_awaitable));
    if (!s.control.draining() || cancelled()) co_return;
  }
  const auto began = steady::now();
  asio::steady_timer look(s.peer.get_executor());
  for (;;) {
    const auto now = steady::now();
    const auto last_read = std::max(began, s.lingered_read);
    if (now - last_read >= drain_quiet && unacknowledged(s.peer) == 0) co_return;
    look.expires_after(std::chrono::milliseconds(20));
    auto [ec] = co_await look.async_wait(as_tuple(use_awaitable));
    // A cancellation can come while the tick's completion is already queued: it then arrives
    // as a success, and only the state says so.
    if (ec || cancelled()) co_return;
  }
}

}  // namespace

// The HTTP/1.1 relay answered a request whose body was still coming (an upstream's early 413),
// or mtlsd answered one itself, and closed (close_notify, FIN); or mtlsd ended an HTTP/2
// connection the client had not. Closing the socket now, with the client's bytes unread, would
// make the kernel send RST: a client that writes its whole body before it reads (http.client,
// requests) would see its upload fail and never read the answer, and whatever of the answer was
// not yet sent would be lost. So the session lingers, as nginx does: it reads and discards what
// the client sends until the client closes, for at most timeouts.half_close — the time the relay
// gives one side to finish after the other did (nginx's lingering_time is 30 s too; with
// half_close 0s, "no limit", the 30 s default still bounds it) — and no longer than 5 s without
// a byte from it (nginx's lingering_timeout). The upstream has no part in this: its connection
// closes first. A drain ends it early once everything sent was acknowledged and the client is
// quiet (above), and its timeout's kill at the latest.
asio::awaitable<void> close_lingering(session& s) {
  using namespace asio::experimental::awaitable_operators;
  constexpr config::duration quiet = std::chrono::seconds(5);
  error_code ignored;
  s.upstream.close(ignored);
  const config::duration half_close = s.listener->cfg.timeouts.half_close;
  const config::duration bound =
      half_close.count() > 0 ? half_close : config::timeout_options{}.half_close;
  asio::steady_timer drain_started(s.peer.get_executor(), steady::time_point::max());
  struct hook_reset {  // at any end, an exception's too: the hook must not outlive the timer
    session_control& control;
    ~hook_reset() { control.on_drain({}); }
  } reset{s.control};
  s.control.on_drain([&drain_started] { drain_started.cancel(); });
  co_await (linger_close(s, bound, quiet) || acknowledged_during_drain(s, drain_started));
}

}  // namespace mtlsd::proxy::detail
