// One HTTP/1.1 exchange (http_connection.hpp): the request body up and the response down,
// each in its own pump (the request's only when it has a body), and the byte relay after a 101.
#include "http_connection.hpp"

namespace mtlsd::proxy::http1 {

asio::awaitable<void> http_connection::send_request_body(request_parser& req,
                                                         request_serializer& sr) {
  if (request_done_) co_return;
  auto out =
      co_await stream_body(from_client_, upstream_, req, sr, request_chunk_, request_scratch_,
                           current_ ? current_->req_bytes : ignored_bytes_);
  if (stopped_) co_return;
  if (!out.ec) {
    request_done_ = true;
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
  result_.ended_by(is_http_error(out.ec) ? relay_end::local : relay_end::tls_peer);
  fail((is_http_error(out.ec) ? "malformed request body: " : "reading the request body: ") +
       out.ec.message());
  stop_exchange();
}

asio::awaitable<void> http_connection::upstream_failed(const error_code& ec, std::string why) {
  end_ = true;
  if (cancelled(ec)) co_return;
  result_.ended_by(relay_end::plain_peer);
  fail("upstream: " + why + (ec ? ": " + ec.message() : std::string()));
  // Before the response head went out the client can still be told; after it, only the
  // truncated response and the close say it.
  if (!response_started_) {
    set_status(502);
    const std::string response = simple_response(502, "Bad Gateway", "Bad Gateway");
    co_await client_.write(response);
  }
  stop_exchange();
}

asio::awaitable<void> http_connection::relay_response(bool head, bool upgrade) {
  for (;;) {
    response_parser res;
    res.header_limit(http_head_limit);
    res.body_limit(boost::none);
    if (head) res.skip(true);  // a response to HEAD has a length but no body
    auto head_ec = co_await from_upstream_.head(res);
    if (stopped_) co_return;
    if (head_ec) co_return co_await upstream_failed(head_ec, "reading the response head");
    auto& msg = res.get();
    const unsigned status = msg.result_int();
    if (auto why = prepare_response_head(msg, upgrade); !why.empty())
      co_return co_await upstream_failed({}, std::move(why));
    if (draining_ && status != 101) msg.keep_alive(false);

    http::serializer<false, http::buffer_body> sr{msg};
    sr.split(true);
    const bool interim = status >= 100 && status < 200 && status != 101;
    if (!interim) {
      response_started_ = true;
      set_status(static_cast<int>(status));
    }
    // The whole body already read (a small response comes in one segment with its head): head
    // and body leave together (tls_side::hold).
    const auto length = res.content_length();
    const bool body_buffered = !interim && status != 101 && !res.is_done() && length &&
                               from_upstream_.buf.size() >= *length &&
                               *length <= response_chunk_.size();
    if (body_buffered) client_.hold();
    struct drop_on_exit {  // every early return below: nothing stays held for the next write
      tls_side& side;
      ~drop_on_exit() { side.drop_held(); }
    } held_guard{client_};
    if (auto ec = co_await write_ready(client_, sr, response_scratch_, true); ec || stopped_) {
      end_ = true;
      if (cancelled(ec) || stopped_) co_return;
      result_.ended_by(relay_end::tls_peer);
      fail("writing the response to the client: " + ec.message());
      co_return stop_exchange();
    }
    if (interim) continue;  // 100, 103: the final response follows
    if (status == 101) {
      upgraded_ = true;
      co_return;
    }
    if (!res.is_done()) {
      auto out =
          co_await stream_body(from_upstream_, client_, res, sr, response_chunk_, response_scratch_,
                               current_ ? current_->resp_bytes : ignored_bytes_);
      if (stopped_) co_return;
      if (out.ec && out.reading)
        co_return co_await upstream_failed(out.ec, "reading the response body");
      if (out.ec) {
        end_ = true;
        if (cancelled(out.ec)) co_return;
        result_.ended_by(relay_end::tls_peer);
        fail("writing the response to the client: " + out.ec.message());
        co_return stop_exchange();
      }
    }
    if (auto ec = co_await client_.release(); ec || stopped_) {
      end_ = true;
      if (cancelled(ec) || stopped_) co_return;
      result_.ended_by(relay_end::tls_peer);
      fail("writing the response to the client: " + ec.message());
      co_return stop_exchange();
    }
    response_keep_alive_ = res.keep_alive();
    if (!request_done_) {
      // Answered before the whole request body arrived: the rest of that body can no longer be
      // told apart from the next request, so this connection ends after the answer.
      result_.ended_by(relay_end::plain_peer);
      co_return stop_exchange();
    }
    co_return;
  }
}

// After a 101: bytes already buffered on either side go first, then the byte relay.
asio::awaitable<void> http_connection::tunnel() {
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
      fail("writing to the client after the upgrade: " + ec.message());
      co_return;
    }
    from_upstream_.buf.consume(data.size());
  }
  from_client_.buf = beast::flat_buffer(0);  // the byte relay has buffers of its own
  from_upstream_.buf = beast::flat_buffer(0);
  co_await relay(tls_, tls_socket_, plain_, clock_, result_);
}

}  // namespace mtlsd::proxy::http1
