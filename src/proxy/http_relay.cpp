// The HTTP/1.1 relay (http_relay.hpp): the loop over one connection's requests, in steps —
// read a head, send it upstream, run the exchange (http_exchange.cpp), keep alive or close.
#include "http_connection.hpp"

#include <sys/socket.h>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cerrno>

#include "mtlsd/net/edge_wait.hpp"
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/net/socket.hpp"

namespace mtlsd::proxy {
namespace http1 {
namespace {

// What the client's socket holds, seen without taking it: one recv that peeks (told to
// net::note_read as any read of the socket is).
enum class client_peek { nothing, bytes, fin, reset };
client_peek peek_client(stream_socket& s) {
  char byte;
  const ssize_t n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const int err = errno;
  net::note_read(s, 1, n, err);
  if (n > 0) return client_peek::bytes;
  if (n == 0) return client_peek::fin;
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR ? client_peek::nothing
                                                             : client_peek::reset;
}

}  // namespace

asio::awaitable<void> http_connection::close_both() {
  upstream_.close();
  if (response_cut_) {
    error_code ignored;
    tls_socket_.shutdown(stream_socket::shutdown_send, ignored);  // FIN, no close_notify
    co_return;
  }
  co_await client_.close();
}

asio::awaitable<void> http_connection::refuse(int status, std::string_view reason,
                                              std::string why) {
  result_.ended_by(relay_end::local);
  // A refused request's body (a 501 for its coding, a 400 for its Host) or the requests behind
  // it may still be coming: the session closes by lingering, or the client's upload would be
  // reset before it reads why.
  result_.tls_peer_sending = true;
  // The request's line says why too, and a head that never parsed gets one (and its count).
  if (!current_) begin_unparsed_report(std::chrono::steady_clock::now());
  current_->detail = why;
  fail(std::move(why));
  set_status(status);
  const std::string response = simple_response(status, reason, reason, current_->method);
  if (!co_await client_.write(response)) co_await close_both();
}

// Between requests the upstream has nothing to say: if it becomes readable, it closed its end of
// the keep-alive connection (or misbehaves), and the connection ends here — HTTP clients retry
// an idempotent request on a fresh connection, but not one answered by a 502.
asio::awaitable<error_code> http_connection::next_request_head(request_framing& req,
                                                               std::size_t& head_size,
                                                               bool& folded) {
  if (from_client_.buf.size() > 0) {
    // The next request is here already (pipelined): it goes up with no idle wait in which a
    // watch could see the upstream speak, so look now. Bytes or a close there now were asked
    // for by no request; the pipelined request has not gone up, and the client may retry it.
    if (!net::nothing_to_read(plain_)) {
      result_.ended_by(relay_end::plain_peer);
      fail(
          "upstream: closed or spoke before a pipelined request went up (not sent; the client "
          "may retry it)");
      end_ = true;
      co_return error_code{};
    }
    co_return co_await from_client_.whole_head(req, head_size, folded);
  }
  upstream_spoke_ = false;
  // A watch still queued from before has seen no event since it found the socket empty: it
  // watches this wait as well as a new one would.
  if (!watching_ && !watch_upstream()) {
    result_.ended_by(relay_end::plain_peer);
    end_ = true;
    co_return error_code{};
  }
  const error_code ec = co_await from_client_.whole_head(req, head_size, folded);
  if (upstream_spoke_ && cancelled(ec)) {
    // The watch cancelled the client's read (a drain or the watchdog would have too: a
    // cancellation of this coroutine wins, as it did against the parallel group before).
    const auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() == asio::cancellation_type::none && !draining_) {
      result_.ended_by(relay_end::plain_peer);
      end_ = true;
      co_return error_code{};
    }
  }
  co_return ec;
}

// Looks first: the response before may have ended with a FIN that raised no edge of its own
// (nothing_to_read: one recv that peeks). Found empty, the socket raises an edge for whatever
// comes next, so the wait is the epoll_ctl-free one (net/edge_wait.hpp). No yield between the two
// keeps that wait's precondition. No look at all when the socket is known drained
// (net/read_drain.hpp): a FIN that came with the last bytes may still be there, but then epoll has
// yet to report it, and the report completes the watch.
//
// The watch is left queued when the request comes: the response's wait then joins it
// (plain_side::read_some, net/shared_edge_wait.hpp), and the response's event completes the
// watch (ignored, the connection is not idle) and then that wait, in one completion.
bool http_connection::watch_upstream() {
  if (!std::exchange(drain_track_tried_, true)) net::track_read_drain(plain_);
  if (!net::known_drained(plain_) && !net::nothing_to_read(plain_))
    return false;  // bytes, EOF or an error
  start_upstream_watch();
  return true;
}

void http_connection::start_upstream_watch() {
  watching_ = true;
  upstream_watch_.start(plain_, [cell = watch_, watch = ++watch_->watch](const error_code& ec) {
    if (!cell->owner) return;  // the connection is gone
    if (cell->watch == watch) cell->owner->watching_ = false;
    // An error other than a cancellation (the socket failed) counts as the upstream speaking:
    // the connection cannot go on either.
    if (ec != asio::error::operation_aborted) cell->owner->upstream_spoke(watch, ec);
  });
}

// The watch's completion is an event, not yet the upstream speaking: epoll's report of a
// response's last bytes can run after them. The relay reads on while a report it took waits in
// the worker's queue (a large body: reads_per_turn reads in a row, then a turn, in which epoll
// reports the socket again), reads those bytes, finds the socket empty and starts the watch, and
// then that stale report completes it (review: a response from about 700 KB on ended its
// keep-alive connection, `upstream_close` with no detail). So a completion that finds nothing
// to read (one peek: only when the watch completes while idle, never per request) watches
// again; bytes, a FIN or an error there end the connection as before.
void http_connection::upstream_spoke(std::uint64_t watch, const error_code& ec) {
  if (watch != watch_->watch || !idle_) return;  // an earlier watch, or the request came first
  // The peek found the socket empty, and nothing yielded since: the next wait's precondition.
  if (!ec && net::nothing_to_read(plain_) && net::known_drained(plain_))
    return start_upstream_watch();
  upstream_spoke_ = true;
  error_code ignored;
  tls_socket_.cancel(ignored);
}

// A client that leaves while its response is awaited is noticed at once, not when the upstream
// answers or gives up (review: a reset client held its upstream connection for 20 s, and its
// line said 502 upstream_close, or 200 for an answer nobody read). As Envoy resets its upstream
// stream, the exchange ends, the upstream's connection is closed, and the line says no response
// was given (status 0, termination client_close). A wait for the socket to become readable, then
// a peek: an error (a reset) means the client left. A FIN is a half-close, as in TCP mode: the
// client ended its side after its request and reads the answer, however TCP split the FIN from
// the request (a review found the answer cut when the FIN came a moment later; a closed client
// resets at the answer's first bytes anyway). Bytes (a pipelined request, a TLS alert) cannot be
// looked past without reading them. Either ends the watch and the response goes on; so it never
// starts with bytes already here. Looked for only when the socket is not known drained:
// otherwise the wait needs neither that peek nor an epoll_ctl (net/read_drain.hpp). The wait is
// left queued after the exchange, for the next read of the client to join (stop_watching_client):
// a request without a body costs one wait.
void http_connection::watch_client() {
  if (from_client_.buf.size() > 0 || tls_.has_pending()) return;
  if (!net::known_drained(tls_socket_)) {
    switch (peek_client(tls_socket_)) {
      case client_peek::nothing:
        break;
      case client_peek::reset:
        return client_left();
      case client_peek::bytes:
      case client_peek::fin:
        return;
    }
  }
  start_client_watch();
}

// Called where the socket is known drained or a peek just found it empty, with no yield since:
// the shared wait's precondition. A watch an earlier exchange left queued serves this one; a
// completion of it that was already on its way is judged by a peek like any other.
void http_connection::start_client_watch() {
  watch_->client_armed = true;
  if (client_watch_.queued()) return;
  client_watch_.start(tls_socket_, [cell = watch_](const error_code& ec) {
    if (cell->owner && cell->client_armed) cell->owner->client_readable(ec);
  });
}

void http_connection::client_readable(const error_code& ec) {
  if (cancelled(ec) || stopped_) return;  // the exchange is ending anyway
  switch (ec ? client_peek::reset : peek_client(tls_socket_)) {
    case client_peek::nothing:
      // Woken with nothing to read (TCP urgent data): watched again only where the next wait
      // waits for a new event, never in a loop over the same one.
      if (net::known_drained(tls_socket_)) start_client_watch();
      return;
    case client_peek::bytes:
      return;
    case client_peek::fin:
      return;
    case client_peek::reset:
      return client_left();
  }
}

void http_connection::client_left() {
  result_.ended_by(relay_end::tls_peer);
  std::string why = "the client reset its connection";
  why += response_started_ ? " during the response" : " before the response";
  if (current_ && current_->detail.empty()) current_->detail = why;
  fail(std::move(why));
  if (response_started_) response_cut_ = true;  // no close_notify after a response cut short
  stop_exchange();  // exchange() then closes both sides: the upstream sees its connection end
}

void http_connection::wait_for_head() {
  if (head_wait_) return;
  head_wait_ = std::make_unique<asio::steady_timer>(tls_socket_.get_executor(), drain_head_wait);
  head_wait_->async_wait([cell = watch_](const error_code& ec) {
    // Still waiting for a head (none came, or not whole): the drain ends the connection.
    if (!ec && cell->owner && cell->owner->idle_) cell->owner->end_head_wait();
  });
}

// Waits for the next request head; the connection ends instead on drain (after the first
// request, and once a head begun is in: http_connection::drain), when the client closes, when
// the upstream closes while idle, or with a head refused (431, 400) or unreadable.
asio::awaitable<http_connection::then> http_connection::read_request_head(request_framing& req,
                                                                          std::size_t& head_size) {
  // A drain that began before the connection's first request (the connection was admitted
  // during it, as its client finished the handshake in the drain's grace) waits for that
  // request as drain() does: it may have come with the client's Finished (review: the first
  // request was never read, the client got an empty reply).
  if (draining_ && requests_ == 0) wait_for_head();
  if (draining_ && requests_ > 0) {
    result_.ended_by(relay_end::local);
    // What the client sent already decides whether the session lingers (session_linger.cpp):
    // closed over it, the socket would reset the response just sent.
    result_.tls_peer_sending = client_may_send();
    co_return then::close_both;
  }
  // Empty lines a client sent after its last body (RFC 9112 2.2) are not a request begun: the
  // connection is idle (watched, drained at once, bound by the idle timeout, not the head's).
  from_client_.drop_empty_lines();
  idle_ = from_client_.buf.size() == 0 && from_upstream_.buf.size() == 0;
  bool folded = false;
  const error_code ec = co_await next_request_head(req, head_size, folded);
  idle_ = false;
  if (cancelled(ec)) {
    // drain() woke an idle connection; else the watchdog cancelled us (then stop here).
    const auto state = co_await asio::this_coro::cancellation_state;
    if (!draining_ || state.cancelled() != asio::cancellation_type::none) co_return then::stop;
    result_.ended_by(relay_end::local);
    result_.tls_peer_sending = client_may_send();
    co_return then::close_both;
  }
  if (end_) {  // upstream closed while idle
    result_.tls_peer_sending = client_may_send();
    co_return then::close_both;
  }
  if (ec == http::error::end_of_stream) {
    result_.ended_by(relay_end::tls_peer);
    co_return then::close_both;
  }
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    co_await refuse(431, "Request Header Fields Too Large",
                    "request head larger than " + std::to_string(http_head_limit) + " bytes");
    co_return then::stop;
  }
  if (is_http_error(ec)) {
    co_await refuse(400, "Bad Request", "malformed request: " + ec.message());
    co_return then::stop;
  }
  if (folded) {
    // Allowed by RFC 9112 5.2, and safer than unfolding: the upstream never has to agree with
    // us on how a folded Transfer-Encoding or Content-Length reads.
    co_await refuse(400, "Bad Request", "malformed request: obsolete line folding");
    co_return then::stop;
  }
  if (ec) {
    result_.ended_by(relay_end::tls_peer);
    fail("reading the request: " + describe(ec, tls_));  // "truncated", a TLS failure's detail
    co_return then::stop;
  }
  co_return then::go_on;
}

// Starts the exchange: the request head upstream, then 100 Continue to a client waiting for it.
asio::awaitable<http_connection::then> http_connection::send_request_head(std::string_view head,
                                                                          bool request_done,
                                                                          bool send_continue) {
  request_done_ = request_done;
  stopped_ = false;
  response_started_ = false;
  body_malformed_ = false;
  client_write_cut_ = false;
  response_keep_alive_ = true;
  upgraded_ = false;
  if (auto ec = co_await upstream_.write(head)) {
    if (cancelled(ec)) {  // by the watchdog: answered when that was the idle timeout (exchange())
      const auto state = co_await asio::this_coro::cancellation_state;
      if (state.cancelled() == asio::cancellation_type::none || !idle_answer_due())
        co_return then::stop;
      co_await asio::this_coro::reset_cancellation_state();
      co_await answer_idle_timeout();
      co_return then::stop;
    }
    result_.ended_by(relay_end::plain_peer);  // first: refuse() would name mtlsd
    co_await refuse(502, "Bad Gateway", "upstream: writing the request: " + ec.message());
    co_return then::stop;
  }
  if (send_continue) {
    if (auto ec = co_await client_.write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"))) {
      result_.ended_by(relay_end::tls_peer);
      fail("writing 100 Continue: " + describe(ec, tls_));
      co_return then::stop;
    }
  }
  co_return then::go_on;
}

asio::awaitable<void> http_connection::run() {
  for (;;) {
    request_framing req;
    req.header_limit(http_head_limit);
    req.body_limit(boost::none);  // streamed: no limit to enforce on memory
    req.rewrite_chunks();         // a chunked body goes up with mtlsd's framing (http_framing.hpp)
    std::size_t head_size = 0;
    if (auto next = co_await read_request_head(req, head_size); next != then::go_on)
      co_return co_await end_after(next);
    begin_report(req.head());
    req.count_body_in(current_->req_bytes);
    auto verdict = judge_request(req);
    http10_client_ = req.head().version < 11;
    if (verdict.status != 0)
      co_return co_await refuse(verdict.status, verdict.reason, std::move(verdict.why));
    if (auto why = misdirected(forwarding_, request_authority(req.head())); !why.empty())
      co_return co_await refuse(421, "Misdirected Request", std::move(why));
    // The head's bytes, and the views into them, are done with once the edited copy is made.
    forward_request_head({static_cast<const char*>(from_client_.buf.data().data()), head_size},
                         req.head(), forwarding_, request_head_);
    from_client_.buf.consume(head_size);
    if (auto next = co_await send_request_head(request_head_, req.is_done(), verdict.send_continue);
        next != then::go_on)
      co_return co_await end_after(next);
    if (auto next = co_await exchange(req, verdict); next != then::go_on)
      co_return co_await end_after(next);
    report();
    if (draining_) continue;  // closes at the top of the loop
    from_client_.trim();
    from_upstream_.trim();
    // The edited heads too: one large head would otherwise keep its 64 KiB for the connection's
    // life (review: 114 KiB per idle connection after a 60 KB field, 42 KiB after a small one).
    trim_head(request_head_);
    trim_head(response_head_);
  }
}

}  // namespace http1

asio::awaitable<void> http_relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                 http_forwarding forwarding, idle_deadline& clock,
                                 relay_result& result, http_request_sink sink,
                                 session_control* control) {
  clock.touch();
  http1::http_connection c(tls, tls_socket, plain, std::move(forwarding), clock, result,
                           std::move(sink), control);
  struct drain_hook {
    session_control* control;
    ~drain_hook() {
      if (control) control->on_drain({});
    }
  } hook{control};
  if (control) control->on_drain([&c] { c.drain(); });
  co_await c.run();
}

}  // namespace mtlsd::proxy
