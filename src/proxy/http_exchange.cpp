// One HTTP/1.1 exchange (http_connection.hpp): the request body up and the response down,
// each in its own pump (the request's only when it has a body), mtlsd's answer when the idle
// timeout ends it unanswered, and the byte relay after a 101.
#include "http_connection.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "mtlsd/config/duration.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/session_registry.hpp"

namespace mtlsd::proxy::http1 {

// The request body up and the response down, at once; the connection ends with the exchange
// when it was cancelled, closed, upgraded to a tunnel, or either side said Connection: close.
asio::awaitable<http_connection::then> http_connection::exchange(
    request_framing& req, const request_head_verdict& verdict) {
  using namespace asio::experimental::awaitable_operators;
  // Neither pump throws for network or protocol errors: each records its cause and stops
  // the other (stop_exchange). Only a cancellation by the watchdog (idle timeout, drain)
  // arrives as an exception, from a pump that waited again after it.
  try {
    // A request without a body (the parser stops at the end of the head, so only then is it
    // done here) needs no second pump, and no parallel group to run one.
    if (request_done_) {
      watch_client();
      co_await relay_response(verdict);
    } else {
      co_await (send_request_body(req) && relay_response(verdict));
    }
  } catch (const boost::system::system_error& e) {
    if (!cancelled(e.code())) throw;
  }
  stop_watching_client();
  // The watchdog (idle timeout, drain) cancelled us: any further co_await would throw.
  const auto state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() != asio::cancellation_type::none) {
    // But the answer to timeouts.idle, after a reset: a co_await of a coroutine throws too.
    if (!idle_answer_due()) co_return then::stop;
    co_await asio::this_coro::reset_cancellation_state();
    co_await answer_idle_timeout();
    co_return then::stop;
  }
  if (body_malformed_ && !response_started_ && !client_write_cut_) {
    // The head went up, the body then did not parse (a chunk's framing, say), and no final
    // response reached the client: it is told, as nginx and Envoy tell it, rather than left to
    // read a bare close as a lost connection it may retry on (review). Written only now that
    // neither pump runs, and not after a write the stop cut short (a 1xx: the record would be
    // left half written).
    set_failure_status(400);
    if (auto ec = co_await client_.write(
            simple_response(400, "Bad Request", "Bad Request", current_method())))
      result_.ended_by(relay_end::tls_peer);
  }
  if (end_) {
    // Closed with the client's body bytes unread, the socket would send RST: the session
    // lingers instead (http_serve.cpp).
    result_.tls_peer_sending = !request_done_ || client_may_send();
    co_return then::close_both;
  }
  if (upgraded_) {
    co_await tunnel();
    co_return then::stop;
  }
  // Whoever asked for "Connection: close" (or spoke HTTP/1.0 without keep-alive) ended it.
  if (!verdict.keep_alive || !response_keep_alive_) {
    result_.ended_by(verdict.keep_alive ? relay_end::plain_peer : relay_end::tls_peer);
    result_.tls_peer_sending = client_may_send();
    co_return then::close_both;
  }
  co_return then::go_on;
}

asio::awaitable<void> http_connection::send_request_body(request_framing& req) {
  if (request_done_) co_return;
  auto out = co_await forward_body(from_client_, upstream_, req, 0, stopped_);
  if (stopped_) co_return;
  if (!out.ec) {
    request_done_ = true;
    watch_client();  // the response may still be awaited, and nobody reads the client now
    co_return;
  }
  if (cancelled(out.ec)) co_return;  // by the other pump or the watchdog
  if (!out.reading) {
    // The upstream stopped reading (it may have answered early and closed): let the response
    // side deliver whatever it said; the connection closes after it.
    result_.ended_by(relay_end::plain_peer);
    end_ = true;
    co_return;
  }
  if (out.ec == http::error::partial_message) {
    // The client ended its side inside the body (it gave up on the upload): nothing malformed
    // to answer 400 for, as a review found it was, and the line says what happened.
    result_.ended_by(relay_end::tls_peer);
    fail("the client ended its connection inside the request body");
    co_return stop_exchange();
  }
  body_malformed_ = is_http_error(out.ec);  // answered 400 once both pumps stopped (exchange())
  result_.ended_by(is_http_error(out.ec) ? relay_end::local : relay_end::tls_peer);
  fail((is_http_error(out.ec) ? "malformed request body: " : "reading the request body: ") +
       (req.refusal().empty() ? describe(out.ec, tls_) : std::string(req.refusal())));
  stop_exchange();
}

asio::awaitable<void> http_connection::upstream_failed(const error_code& ec, std::string why,
                                                       std::string_view reason) {
  end_ = true;
  if (cancelled(ec)) co_return;
  result_.ended_by(relay_end::plain_peer);
  if (!reason.empty())
    why.append(": ").append(reason);
  else if (ec)
    why.append(": ").append(ec.message());
  fail("upstream: " + why);
  // Before the response head went out the client can still be told; after it, only the
  // truncated response and the close say it — a close without close_notify (close_both), as
  // nginx closes after an upstream error: with it, a response that runs until the close would
  // look complete.
  if (!response_started_) {
    set_failure_status(502);
    const std::string response =
        simple_response(502, "Bad Gateway", "Bad Gateway", current_method());
    co_await client_.write(response);
  } else {
    response_cut_ = true;
  }
  stop_exchange();
}

// The upstream's bytes go to the client as they came: the parser (response_framing) only finds
// where each response ends. A small response, head and body read together, leaves in one write
// and one TLS record, straight from the read buffer — or, its head written anew (hop-by-hop
// fields, the last response of a drain), from that head with the body bytes appended.
asio::awaitable<void> http_connection::relay_response(const request_head_verdict& verdict) {
  int interim_heads = 0;
  for (;;) {
    // The request pump can end the exchange before this pump first waits (a malformed body
    // already buffered): its cancel then found nothing to cancel, so look before reading.
    if (stopped_) co_return;
    response_framing res;
    res.count_body_in(current_ ? current_->resp_bytes : ignored_bytes_);
    res.header_limit(http_head_limit);
    res.body_limit(boost::none);
    if (verdict.head) res.skip(true);  // a response to HEAD has a length but no body
    std::size_t ready = 0;             // the head's bytes, at the front of the read buffer
    bool folded = false;               // unfolded in place (RFC 9112 5.2 lets a proxy do either)
    auto head_ec = co_await from_upstream_.whole_head(res, ready, folded);
    if (stopped_) co_return;
    if (head_ec)
      co_return co_await upstream_failed(head_ec, "reading the response head", res.refusal());
    const unsigned status = res.status();
    if (auto why = response_head_refusal(res, verdict.upgrade, verdict.upgrade_offer); !why.empty())
      co_return co_await upstream_failed({}, std::string(why));
    const bool interim = status >= 100 && status < 200 && status != 101;
    if (interim && ++interim_heads > http_interim_limit)
      co_return co_await upstream_failed(
          {}, "more than " + std::to_string(http_interim_limit) + " interim (1xx) responses");
    if (interim && http10_client_) {
      // RFC 9110 15.2: an HTTP/1.0 client knows no 1xx, and would take it for the answer.
      from_upstream_.buf.consume(ready);
      continue;
    }
    // RFC 9112 6.1: an HTTP/1.0 client is sent no Transfer-Encoding. A chunked body goes as its
    // data alone, ended by the close, as nginx sends it; another coding could not be said (as
    // to an HTTP/2 client: a 502). A response without a body (to HEAD, 204, 304: the parser is
    // done with its head) only loses the field: nothing to unchunk, and its connection may stay
    // (review: it was closed).
    const bool drop_coding = !interim && http10_client_ && res.transfer_encoded();
    const bool unchunk = drop_coding && !res.is_done();
    if (unchunk && (res.coding_besides_chunked() || !res.chunked()))
      co_return co_await upstream_failed(
          {}, "a transfer coding other than chunked, which an HTTP/1.0 client cannot be sent");
    if (unchunk) res.unchunk();
    if (!interim) {
      response_started_ = true;
      set_status(static_cast<int>(status));
    }
    const bool final_head = !interim && status != 101;
    // Shutdown began: this response is the connection's last, and says so. (An answer that
    // comes before the request body went up is not known to be the last here: an upstream may
    // answer while it reads the body, which then ends before the response; it is told at the
    // response's end, below, as nginx tells it.)
    const bool last = draining_ && final_head && res.keep_alive();
    // An HTTP/1.0 client that asked to keep the connection must hear that it stays, even when
    // the response has no hop-by-hop field to rewrite (review: it was not told, and kept alive).
    const bool tell_http10 = final_head && http10_client_ && verdict.keep_alive && res.keep_alive();
    if (last || tell_http10 || drop_coding || (status != 101 && res.hop_by_hop())) {
      // The head is written anew: the upstream connection's hop-by-hop fields stay on its side
      // (RFC 9110 7.6.1; review: Keep-Alive, Upgrade and the fields Connection named reached
      // the client), and the client hears what mtlsd does with its own connection.
      auto& buf = from_upstream_.buf;
      // An HTTP/1.0 party (the client, or the response's start line, which stays) assumes a
      // close unless told: keep-alive is said when the connection stays open (review).
      const bool stays = verdict.keep_alive && res.keep_alive() && !last && !unchunk;
      const std::string_view connection = interim                                ? ""
                                          : !stays                               ? "close"
                                          : http10_client_ || res.version() < 11 ? "keep-alive"
                                                                                 : "";
      forward_response_head({static_cast<const char*>(buf.data().data()), ready}, connection,
                            response_head_, drop_coding);
      buf.consume(ready);
      ready = 0;
    }
    auto out =
        co_await forward_body(from_upstream_, client_, res, ready, stopped_, &response_head_);
    if (stopped_) co_return;
    if (out.ec && out.reading)
      co_return co_await upstream_failed(out.ec, "reading the response body", res.refusal());
    if (out.ec) co_return client_write_failed(out.ec);
    if (interim) continue;  // 100, 103: the final response follows
    if (status == 101) {
      upgraded_ = true;
      co_return;
    }
    // The client finds an unchunked body's end only at the close.
    response_keep_alive_ = res.keep_alive() && !unchunk;
    // An empty line or two after a response is a common slip, harmless: RFC 9112 2.2 has a
    // server ignore such lines before a request; so do we after a response.
    from_upstream_.drop_empty_lines(/*bare_lf_too=*/true);
    if (const std::size_t extra = from_upstream_.buf.size(); extra > 0) {
      // Bytes past the end of the response (a body sent with a HEAD answer, a miscounted
      // length, a response nobody asked for): read next, they would be taken for the answer
      // to the client's next request. mtlsd never has two requests out on one upstream
      // connection, so they belong to no request: dropped, and the connection ends here.
      from_upstream_.buf.consume(extra);
      result_.ended_by(relay_end::plain_peer);
      fail("upstream: " + std::to_string(extra) +
           " bytes after the end of its response; the connection closes");
      co_return stop_exchange();
    }
    if (!request_done_) {
      // Answered before the whole request body arrived: the rest of that body can no longer be
      // told apart from the next request, so this connection ends after the answer.
      if (current_) current_->detail = "answered before the request body ended";
      result_.ended_by(relay_end::plain_peer);
      co_return stop_exchange();
    }
    co_return;
  }
}

void http_connection::client_write_failed(const error_code& ec) {
  end_ = true;
  client_write_cut_ = true;  // no 400 may follow what was cut (exchange())
  if (cancelled(ec) || stopped_) return;
  result_.ended_by(relay_end::tls_peer);
  fail("writing the response to the client: " + describe(ec, tls_));
  stop_exchange();
}

// The watchdog ended the exchange under way (its verdict cancelled the relay's coroutine). When
// that was timeouts.idle while the request waited for its response, nothing of which reached the
// client (a 1xx whole, at most), the client is told, as nginx's proxy_read_timeout and Envoy's
// timeouts tell it and as an HTTP/2 stream is (http.stream_idle_timeout): 504, or 408 when the
// rest of its own body was awaited (review: it got a bare EOF, and the line status 0). Any other
// end (a kill, a head's deadline, the half-close's) stays as it was: the session closes. The
// relay reads the deadlines the watchdog enforces, as session_report.cpp's name_deadline names
// the end, and owns none: a kill, which the watchdog looks at first, is no idle timeout.
bool http_connection::idle_answer_due() const {
  if (!current_ || response_started_ || client_.cut()) return false;
  if (control_ && control_->killed()) return false;
  return clock_.idle.count() > 0 && idle_deadline::clock::now() >= clock_.deadline &&
         !clock_.past_head_by() && !clock_.past_close_by();
}

// The one thing done after the watchdog's verdict (the caller reset the cancellation state), with
// a bound of its own: the answer and close_notify, then what the client still sends read and
// dropped (closed over unread bytes, the socket would reset the answer away) until it closes.
asio::awaitable<void> http_connection::answer_idle_timeout() {
  using namespace asio::experimental::awaitable_operators;
  const bool client_awaited = !request_done_ && from_client_.waiting;
  const int status = client_awaited ? 408 : 504;
  const std::string_view reason = client_awaited ? "Request Timeout" : "Gateway Timeout";
  current_->status = status;
  current_->detail =
      "idle timeout (" +
      config::format_duration(std::chrono::duration_cast<config::duration>(clock_.idle)) + ")";
  result_.tls_peer_sending = false;  // no lingering close after this one (serve_http)
  const std::string answer = simple_response(status, reason, reason, current_method());
  asio::steady_timer bound(tls_socket_.get_executor(), idle_answer_bound);
  co_await (answer_and_close(answer) || bound.async_wait(as_tuple(use_awaitable)));
}

asio::awaitable<void> http_connection::answer_and_close(std::string_view answer) {
  upstream_.close();
  if (co_await client_.write(answer)) co_return;
  co_await client_.close();
  if (!client_may_send()) co_return;
  for (;;) {
    from_client_.buf.consume(from_client_.buf.size());
    const error_code ec = co_await from_client_.read_more();
    if (ec) co_return;
  }
}

// After a 101: bytes already buffered on either side go first, then the byte relay.
asio::awaitable<void> http_connection::tunnel() {
  result_.tunnel = true;
  if (from_client_.buf.size() > 0) {
    const auto data = from_client_.buf.data();
    if (auto ec = co_await upstream_.write(
            std::string_view(static_cast<const char*>(data.data()), data.size()))) {
      result_.ended_by(relay_end::plain_peer);
      fail("writing to the upstream after the upgrade: " + ec.message());
      co_return;
    }
    from_client_.buf.consume(data.size());
  }
  if (from_upstream_.buf.size() > 0) {
    const auto data = from_upstream_.buf.data();
    if (auto ec = co_await client_.write(
            std::string_view(static_cast<const char*>(data.data()), data.size()))) {
      result_.ended_by(relay_end::tls_peer);
      fail("writing to the client after the upgrade: " + describe(ec, tls_));
      co_return;
    }
    from_upstream_.buf.consume(data.size());
  }
  from_client_.buf = beast::flat_buffer(0);  // the byte relay has buffers of its own
  from_upstream_.buf = beast::flat_buffer(0);
  co_await relay(tls_, tls_socket_, plain_, clock_, result_);
}

}  // namespace mtlsd::proxy::http1
