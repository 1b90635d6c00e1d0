// The client's side of an HTTP/2 connection: reading, writing, stream idle timeouts, GOAWAY.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include "h2_connection_impl.hpp"
#include "mtlsd/config/duration.hpp"

namespace mtlsd::proxy {
namespace h2 {

using asio::as_tuple;
using asio::use_awaitable;

asio::awaitable<void> connection::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    // A client that keeps the socket full gets read_some's turns (tls_stream.hpp), in which
    // the writer runs too. Backpressure: while a write to the client waits (it takes nothing) and
    // nghttp2 holds output_backlog frames for it, what the client sends waits in the socket, as
    // nghttpx does. Reading on, each request or bad frame would queue another response or
    // RST_STREAM in nghttp2's unbounded queue (review: 700 MB in 6 s from a client that sent GETs
    // and did not read), and every read would count as activity against timeouts.idle.
    while (writing_ && !stopping_ &&
           nghttp2_session_get_outbound_queue_size(session_.get()) >= output_backlog) {
      written_.reset();
      co_await written_.wait();
    }
    if (stopping_) break;
    auto [ec, n] = co_await env_.tls->read_some(asio::buffer(read_buffer_));
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        client_done_ = true;
        env_.result->ended_by(relay_end::tls_peer);
        if (ec != asio::error::eof) {
          env_.result->aborted = true;
          env_.result->error = "reading from the client: " + describe(ec, *env_.tls);
        }
      }
      break;
    }
    env_.result->from_tls += n;
    if (!writing_) env_.clock->touch();  // see writing_
    header_blocks_.feed(read_buffer_.data(), n);
    const auto rv = nghttp2_session_mem_recv(session_.get(), read_buffer_.data(), n);
    out_.signal();
    if (rv < 0) {
      local_failure(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
      // A flood nghttp2 stopped (PING or SETTINGS frames whose acknowledgements pile up, a
      // header block past its CONTINUATION cap) takes nothing more, but may still send: the
      // client is told why (RFC 9113 5.4.1), the header block left open not named as taken.
      // Closed gracefully, as after any GOAWAY for an error: closed over the flood's unread
      // bytes, the kernel would reset the connection, the GOAWAY lost with it (a test saw the
      // client miss it one time in twenty).
      if (rv == NGHTTP2_ERR_FLOODED || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
        nghttp2_session_terminate_session2(session_.get(), last_taken_stream(),
                                           NGHTTP2_ENHANCE_YOUR_CALM);
        goaway_with_error_ = true;
      }
      break;
    }
    // A header block this read did not finish: its deadline starts (once per block; a block
    // within one read, the common case, costs nothing), and ends with the block.
    if (header_blocks_.in_header_block())
      env_.clock->start_head();
    else
      env_.clock->end_head(true);
    if (!nghttp2_session_want_read(session_.get()) || stopping_ || rapid_reset_) break;
  }
  stopping_ = true;
  out_.signal();
  sweep_timer_.cancel();
}

asio::awaitable<void> connection::writer() {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    out_.reset();
    staging_.clear();
    if (int rv = collect_output(session_.get(), staging_, write_batch); rv != 0) {
      local_failure(std::string("HTTP/2: ") + nghttp2_strerror(rv));
      break;
    }
    if (!staging_.empty()) {
      // In pieces of one TLS record, each of which counts as progress: a client that reads,
      // however slowly, moves the idle deadline at least once per 16 KiB (see writing_).
      writing_ = true;
      error_code ec;
      for (std::size_t at = 0; at < staging_.size() && !ec; at += write_piece) {
        const std::size_t n = std::min(write_piece, staging_.size() - at);
        ec = co_await env_.tls->write(asio::buffer(staging_.data() + at, n));
        if (!ec) env_.clock->touch();
      }
      writing_ = false;
      written_.signal();
      if (ec) {
        if (ec != asio::error::operation_aborted) {
          env_.result->ended_by(relay_end::tls_peer);
          env_.result->aborted = true;
          env_.result->error = "writing to the client: " + describe(ec, *env_.tls);
        }
        break;
      }
      env_.result->from_plain += staging_.size();
      continue;
    }
    if (stopping_ ||
        (!nghttp2_session_want_read(session_.get()) && !nghttp2_session_want_write(session_.get())))
      break;
    co_await out_.wait();
  }
  stop();
}

// While a write waits, whether the client took bytes since the last look: the socket's queue of
// bytes not yet acknowledged (SIOCOUTQ) shrank. The kernel reports a socket writable again only
// once half its send buffer is free, megabytes on a fast link, so a client that reads slowly but
// steadily shows no write progress for a long time; its queue shrinks all along.
bool connection::client_took_bytes() {
  int queued = 0;
  if (::ioctl(env_.client_socket->native_handle(), SIOCOUTQ, &queued) != 0) return false;
  const bool took = queued_seen_ >= 0 && queued < queued_seen_;
  queued_seen_ = queued;
  return took;
}

// http.stream_idle_timeout: a stream with no frames either way for that long is answered 408 or
// 504, or reset once its response began (stream_idle). While
// streams are open the connection is not idle (a quiet gRPC stream is not an idle connection),
// unless a write to the client waits and the client takes nothing (writing_). Looks often
// enough for both that and timeouts.idle.
asio::awaitable<void> connection::sweeper() {
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto timeout = env_.cfg->http.stream_idle_timeout;
  steady::duration basis = timeout;
  if (const auto idle = env_.clock->idle; idle.count() > 0 && (basis.count() == 0 || idle < basis))
    basis = idle;
  const auto period = std::clamp<steady::duration>(basis / 8, std::chrono::milliseconds(100),
                                                   std::chrono::seconds(10));
  while (!stopping_) {
    sweep_timer_.expires_after(period);
    co_await sweep_timer_.async_wait(as_tuple(use_awaitable));
    if (stopping_) break;
    if (writing_) {
      if (client_took_bytes()) env_.clock->touch();
    } else {
      queued_seen_ = -1;
      if (!streams_.empty()) env_.clock->touch();
    }
    if (timeout.count() == 0) continue;
    const auto now = steady::now();
    for (auto& [id, s] : streams_)
      if (now - s->last_activity >= timeout) {
        stream_idle(*s, "stream idle timeout (" + config::format_duration(timeout) + ")");
      }
    out_.signal();
  }
}

asio::awaitable<void> connection::loops() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (reader() && writer() && sweeper());
  upstream_->stop();
}

// Killed from outside (drain timeout, reload, revocation, request_headers_timeout): GOAWAY,
// written within a bound.
asio::awaitable<void> connection::goodbye() {
  using namespace asio::experimental::awaitable_operators;
  nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE, last_taken_stream(), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  staging_.clear();
  if (collect_output(session_.get(), staging_, write_batch) != 0 || staging_.empty()) co_return;
  asio::steady_timer deadline(ex_, goaway_grace);
  co_await (env_.tls->write(asio::buffer(staging_)) ||
            deadline.async_wait(as_tuple(use_awaitable)));
}

// Shutdown began: GOAWAY naming the last stream taken, now. nghttp2 then ignores new streams
// and, once the last open one closed, wants neither to read nor to write: the writer ends the
// connection (closed by us: relay_end::local, which a draining session reports as `drain`, an
// aged one as `max_age`).
void connection::drain() {
  if (stopping_) return;
  env_.result->ended_by(relay_end::local);
  nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  out_.signal();
}

// The h2c upstream takes no new stream: the client is told to open a new connection (GOAWAY
// naming the last stream taken) once the streams under way are done, or at once when it opens
// another (refused meanwhile, with REFUSED_STREAM: on_request_head). Waiting lets the responses
// under way arrive before the GOAWAY, which some clients take for the end of everything (the
// Python h2 library refuses any frame after it). The connection then ends, as in drain(), ended
// by the upstream's side.
void connection::upstream_closing() {
  if (stopping_ || upstream_closing_) return;
  upstream_closing_ = true;
  env_.result->ended_by(relay_end::plain_peer);
  if (streams_.empty()) goaway_for_upstream();
}

void connection::goaway_for_upstream() {
  if (goaway_for_upstream_sent_) return;
  goaway_for_upstream_sent_ = true;
  nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  out_.signal();
}

void connection::client_goaway(const nghttp2_goaway& g) {
  // nghttp2 takes no new stream from here on and ends the session once the open ones are done:
  // the client ended the connection, as one that closes without a GOAWAY (curl) does.
  env_.result->ended_by(relay_end::tls_peer);
  if (g.error_code == NGHTTP2_NO_ERROR || env_.result->aborted) return;
  // With an error code (one it blames on mtlsd, or its own), its words are the detail.
  goaway_with_error_ = true;
  env_.result->aborted = true;
  env_.result->error =
      std::string("HTTP/2: the client's GOAWAY ") + nghttp2_http2_strerror(g.error_code);
  if (const auto debug = goaway_debug(g); !debug.empty()) env_.result->error += ": " + debug;
}

// mtlsd's own GOAWAYs say NO_ERROR (drain, upstream gone, killed) or follow a failure already
// recorded (rapid reset, a flood): any other is nghttp2's, for the client's connection error (a
// frame the protocol forbids, a window overrun, HPACK that does not decode), sent before the
// session ends. Before, the connection's line said `error` with no detail (review).
void connection::goaway_sent(const nghttp2_goaway& g) {
  if (g.error_code == NGHTTP2_NO_ERROR || env_.result->aborted) return;
  // nghttp2's own bound on the client's resets (Debian's 1.52 as 1.57: 1,000, refilled at 33 a
  // second) says INTERNAL_ERROR with no debug data, which none of its connection errors does:
  // a rapid reset as mtlsd's own bound judges one (client_reset).
  if (g.error_code == NGHTTP2_INTERNAL_ERROR && g.opaque_data_len == 0 &&
      resets_received_ >= nghttp2_reset_burst) {
    env_.result->rate_limited = true;
    return local_failure("HTTP/2: the client sent " + std::to_string(resets_received_) +
                         " RST_STREAM frames, past nghttp2's bound on resets (rapid reset): "
                         "GOAWAY INTERNAL_ERROR");
  }
  local_failure(std::string("HTTP/2: connection error: GOAWAY ") +
                nghttp2_http2_strerror(g.error_code));
  if (const auto debug = goaway_debug(g); !debug.empty()) env_.result->error += ": " + debug;
  goaway_with_error_ = true;
}

asio::awaitable<void> connection::run() {
  using namespace asio::experimental::awaitable_operators;
  if (!open_session()) {
    local_failure("HTTP/2: could not create a session");
    co_return;
  }
  upstream_ = env_.upstream_h2c
                  ? make_h2c_upstream(*this, *env_.upstream_socket, env_.forwarding)
                  : make_h1_upstream(*this, *env_.upstream_socket, *env_.cfg, env_.forwarding,
                                     env_.upstream_preamble, env_.upstream_connect_failures);
  co_await asio::this_coro::throw_if_cancelled(false);
  struct drain_hook {
    session_control* control;
    ~drain_hook() {
      if (control) control->on_drain({});
    }
  } hook{env_.control};
  if (env_.control) env_.control->on_drain([this] { drain(); });
  co_await (loops() && upstream_->run());
  const auto state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() != asio::cancellation_type::none) {
    co_await asio::this_coro::reset_cancellation_state();
    co_await goodbye();
  } else if (!env_.result->aborted || goaway_with_error_) {
    co_await env_.tls->shutdown_send();  // close_notify, then FIN, as at the end of any relay
    error_code ignored;
    env_.client_socket->shutdown(stream_socket::shutdown_send, ignored);
    // Ended after a GOAWAY (mtlsd's: a drain, the age, an upstream gone; or the client's)
    // with the client's end not yet read: it may still be sending (WINDOW_UPDATEs for the last
    // DATA, an upload, PINGs). Closing with its bytes unread would make the kernel send RST and
    // drop what of ours it had not sent yet, the end of the last response included (seen in CI).
    // The session lingers, as nginx does for HTTP/2 (ngx_http_v2_lingering_close).
    env_.result->tls_peer_sending = !client_done_;
  }
  // Streams still open end with the connection; each is reported once.
  for (auto& [id, s] : streams_) {
    s->closed = true;
    if (s->detail.empty()) s->detail = "connection closed";
    report(*s, NGHTTP2_NO_ERROR);
  }
  streams_.clear();
  co_await asio::this_coro::throw_if_cancelled(true);
}

}  // namespace h2

asio::awaitable<void> serve_h2(h2_environment env) {
  h2::connection c(std::move(env));
  co_await c.run();
}

}  // namespace mtlsd::proxy
