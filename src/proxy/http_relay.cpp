#include "mtlsd/proxy/http_relay.hpp"

#include "http1_io.hpp"
#include "mtlsd/proxy/http_head.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mtlsd::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;

using namespace http1;  // the sides, write_ready, stream_body (http1_io.hpp)

class http_connection {
 public:
  http_connection(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                  http_forwarding forwarding, idle_deadline& clock, relay_result& result,
                  http_request_sink sink)
      : tls_(tls),
        tls_socket_(tls_socket),
        plain_(plain),
        forwarding_(std::move(forwarding)),
        sink_(std::move(sink)),
        clock_(clock),
        result_(result),
        client_(tls, tls_socket),
        upstream_(plain),
        from_client_(client_, result.from_tls, clock),
        from_upstream_(upstream_, result.from_plain, clock) {}
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;
  // However the connection ends (returning, or destroyed when cancelled), the exchange in
  // progress is reported.
  ~http_connection() { report(); }

  asio::awaitable<void> run();
  // Shutdown began: no request after the one in progress (its response says Connection:
  // close); a connection waiting for its next request closes now.
  void drain() {
    draining_ = true;
    error_code ignored;
    if (!idle_) return;
    tls_socket_.cancel(ignored);
    plain_.cancel(ignored);
  }

 private:
  using request_parser = http::request_parser<http::buffer_body>;
  using response_parser = http::response_parser<http::buffer_body>;

  asio::awaitable<error_code> next_request_head(request_parser& req);
  asio::awaitable<error_code> upstream_readable() {
    auto [ec] = co_await plain_.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    co_return ec;
  }
  asio::awaitable<void> refuse(int status, std::string_view reason, std::string why);
  asio::awaitable<void> send_request_body(request_parser& req,
                                          http::serializer<true, http::buffer_body>& sr);
  asio::awaitable<void> relay_response(bool head, bool upgrade);
  // Records the upstream's failure, tells the client (502) when it still can, and stops the
  // exchange; the caller returns.
  asio::awaitable<void> upstream_failed(const error_code& ec, std::string why);
  asio::awaitable<void> tunnel();
  asio::awaitable<void> close_both();
  void fail(std::string why) {
    if (result_.aborted) return;
    result_.aborted = true;
    result_.error = std::move(why);
  }
  // Ends the exchange from inside one of the two concurrent pumps: cancels the other's waits
  // (errors are values; the cause is recorded first).
  void stop_exchange() {
    end_ = true;
    stopped_ = true;
    error_code ignored;
    tls_socket_.cancel(ignored);
    plain_.cancel(ignored);
  }

  // The exchange in progress, for its access line (none before a parsed request head).
  void begin_report(const http_request_head& msg) {
    report();
    auto& r = current_.emplace();
    r.method = std::string(msg.method_string());
    r.path = std::string(msg.target());
    r.authority = std::string(msg[boost::beast::http::field::host]);
    r.stream_id = ++requests_;
    r.started = std::chrono::steady_clock::now();
    r.started_at = std::chrono::system_clock::now();
  }
  void report() {
    if (!current_) return;
    if (result_.aborted && current_->status == 0) current_->detail = result_.error;
    if (sink_) sink_(*current_);
    current_.reset();
  }
  void set_status(int status) {
    if (current_) current_->status = status;
  }

  tls_stream& tls_;
  stream_socket& tls_socket_;
  stream_socket& plain_;
  http_forwarding forwarding_;
  http_request_sink sink_;
  std::optional<http_request_report> current_;
  std::uint64_t requests_ = 0;
  std::uint64_t ignored_bytes_ = 0;  // body bytes nobody reports (no request in progress)
  idle_deadline& clock_;
  relay_result& result_;
  tls_side client_;
  plain_side upstream_;
  inbound<tls_side> from_client_;
  inbound<plain_side> from_upstream_;
  std::array<char, http_body_chunk> request_chunk_;
  std::array<char, http_body_chunk> response_chunk_;
  std::vector<asio::const_buffer> request_scratch_, response_scratch_;

  // The exchange in progress.
  bool request_done_ = false;      // the request body went upstream completely
  bool response_started_ = false;  // the final response's head reached the client
  bool response_keep_alive_ = true;
  bool upgraded_ = false;
  bool end_ = false;       // close the connection after this exchange
  bool draining_ = false;  // drain(): this exchange is the last
  bool idle_ = false;      // waiting for a request head with nothing of it read
  bool stopped_ = false;   // a pump ended the exchange: the other returns at its next step
};

asio::awaitable<void> http_connection::close_both() {
  upstream_.close();
  co_await client_.close();
}

asio::awaitable<void> http_connection::refuse(int status, std::string_view reason,
                                              std::string why) {
  result_.ended_by(relay_end::local);
  fail(std::move(why));
  set_status(status);
  const std::string response = simple_response(status, reason, reason);
  if (!co_await client_.write(response)) co_await close_both();
}

// Between requests the upstream has nothing to say: if it becomes readable, it closed its end of
// the keep-alive connection (or misbehaves), and the connection ends here — HTTP clients retry
// an idempotent request on a fresh connection, but not one answered by a 502.
asio::awaitable<error_code> http_connection::next_request_head(request_parser& req) {
  using namespace asio::experimental::awaitable_operators;
  if (from_client_.buf.size() > 0 || from_upstream_.buf.size() > 0)
    co_return co_await from_client_.head(req);
  auto r = co_await (from_client_.head(req) || upstream_readable());
  if (r.index() == 0) co_return std::get<0>(r);
  const error_code ec = std::get<1>(r);
  if (cancelled(ec)) co_return ec;
  result_.ended_by(relay_end::plain_peer);
  end_ = true;
  co_return error_code{};
}

asio::awaitable<void> http_connection::send_request_body(
    request_parser& req, http::serializer<true, http::buffer_body>& sr) {
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

asio::awaitable<void> http_connection::run() {
  using namespace asio::experimental::awaitable_operators;
  for (;;) {
    request_parser req;
    req.header_limit(http_head_limit);
    req.body_limit(boost::none);  // streamed: no limit to enforce on memory
    if (draining_) {
      result_.ended_by(relay_end::local);
      co_return co_await close_both();
    }
    idle_ = from_client_.buf.size() == 0 && from_upstream_.buf.size() == 0;
    const error_code ec = co_await next_request_head(req);
    idle_ = false;
    if (cancelled(ec)) {
      // drain() woke an idle connection; else the watchdog cancelled us (then stop here).
      const auto state = co_await asio::this_coro::cancellation_state;
      if (!draining_ || state.cancelled() != asio::cancellation_type::none) co_return;
      result_.ended_by(relay_end::local);
      co_return co_await close_both();
    }
    if (end_) co_return co_await close_both();  // upstream closed while idle
    if (ec == http::error::end_of_stream) {
      result_.ended_by(relay_end::tls_peer);
      co_return co_await close_both();
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow)
      co_return co_await refuse(
          431, "Request Header Fields Too Large",
          "request head larger than " + std::to_string(http_head_limit) + " bytes");
    if (is_http_error(ec))
      co_return co_await refuse(400, "Bad Request", "malformed request: " + ec.message());
    if (ec) {
      result_.ended_by(relay_end::tls_peer);
      co_return fail("reading the request: " + ec.message());
    }

    auto& msg = req.get();
    begin_report(msg);
    auto verdict = prepare_request_head(msg, req.chunked(), req.is_done(), forwarding_.xfcc);
    if (verdict.status != 0)
      co_return co_await refuse(verdict.status, verdict.reason, std::move(verdict.why));
    apply_forwarding(msg, forwarding_);
    const bool head = verdict.head;
    const bool upgrade = verdict.upgrade;
    const bool keep_alive = verdict.keep_alive;
    const bool send_continue = verdict.send_continue;

    http::serializer<true, http::buffer_body> sr{msg};
    sr.split(true);
    request_done_ = req.is_done();
    stopped_ = false;
    response_started_ = false;
    response_keep_alive_ = true;
    upgraded_ = false;
    if (auto wec = co_await write_ready(upstream_, sr, request_scratch_, true)) {
      if (cancelled(wec)) co_return;
      result_.ended_by(relay_end::plain_peer);  // first: refuse() would name mtlsd
      co_return co_await refuse(502, "Bad Gateway",
                                "upstream: writing the request: " + wec.message());
    }
    if (send_continue) {
      if (auto wec = co_await client_.write(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"))) {
        result_.ended_by(relay_end::tls_peer);
        co_return fail("writing 100 Continue: " + wec.message());
      }
    }

    // Neither pump throws for network or protocol errors: each records its cause and stops
    // the other (stop_exchange). Only a cancellation by the watchdog (idle timeout, drain)
    // arrives as an exception, from a pump that waited again after it.
    try {
      co_await (send_request_body(req, sr) && relay_response(head, upgrade));
    } catch (const boost::system::system_error& e) {
      if (!cancelled(e.code())) throw;
    }
    // The watchdog (idle timeout, drain) cancelled us: any further co_await would throw.
    const auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) co_return;
    if (end_) co_return co_await close_both();
    if (upgraded_) co_return co_await tunnel();
    // Whoever asked for "Connection: close" (or spoke HTTP/1.0 without keep-alive) ended it.
    if (!keep_alive || !response_keep_alive_) {
      result_.ended_by(keep_alive ? relay_end::plain_peer : relay_end::tls_peer);
      co_return co_await close_both();
    }
    report();
    if (draining_) continue;  // closes at the top of the loop
    from_client_.trim();
    from_upstream_.trim();
  }
}

}  // namespace

asio::awaitable<void> http_relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                 http_forwarding forwarding, idle_deadline& clock,
                                 relay_result& result, http_request_sink sink,
                                 session_control* control) {
  clock.touch();
  http_connection c(tls, tls_socket, plain, std::move(forwarding), clock, result, std::move(sink));
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
