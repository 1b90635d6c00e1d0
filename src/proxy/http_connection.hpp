#pragma once
// Private to http_relay.cpp and http_exchange.cpp: one HTTP/1.1 connection as the relay sees
// it. http_relay.cpp holds the loop over requests (read a head, send it upstream, run the
// exchange, keep alive or close); http_exchange.cpp the exchange itself: the request body
// and the response pumped at once (the response alone when there is no body), the answer when
// the idle timeout ends it unanswered, and the tunnel after a 101.
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "http1_io.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::http1 {

// How long a drain waits for a request head begun, or for the connection's first request, as a
// refused client's request is waited for (session_state.hpp's refused_request_wait).
inline constexpr auto drain_head_wait = std::chrono::seconds(1);
// How long mtlsd's answer to timeouts.idle (504, 408) and its close_notify may take: a client
// that does not read holds the connection no longer.
inline constexpr auto idle_answer_bound = std::chrono::seconds(1);

class http_connection {
 public:
  http_connection(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                  http_forwarding forwarding, idle_deadline& clock, relay_result& result,
                  http_request_sink sink, const session_control* control)
      : control_(control),
        tls_(tls),
        tls_socket_(tls_socket),
        plain_(plain),
        forwarding_(std::move(forwarding)),
        sink_(std::move(sink)),
        clock_(clock),
        result_(result),
        client_(tls, tls_socket, result.from_plain),
        upstream_(plain, upstream_watch_),
        from_client_(client_, result.from_tls, clock),
        from_upstream_(upstream_, upstream_bytes_, clock) {
    tls_.join_read_waits(&client_watch_);
  }
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;
  // However the connection ends (returning, or destroyed when cancelled), the exchange in
  // progress is reported.
  ~http_connection() {
    watch_->owner = nullptr;  // a watch's completion may still be queued: it finds no one
    tls_.join_read_waits(nullptr);
    // Cut by the watchdog with a head still coming: that request gets its line and its count
    // too (no response: code class "none").
    if (!current_ && clock_.past_head_by()) {
      begin_unparsed_report(clock_.head_by - clock_.head_limit);
      current_->detail = "request head not complete in time (http.request_headers_timeout)";
    }
    report();
  }

  asio::awaitable<void> run();
  // Shutdown began: no request after the one in progress (its response says Connection:
  // close); a connection waiting for its next request closes now. A head begun (review: a POST
  // half in was dropped with no answer: read, or here unread), or the connection's first request
  // (it may come with the client's Finished, or a moment after it), is waited for up to
  // drain_head_wait, then served.
  void drain() {
    draining_ = true;
    if (!idle_) return;
    if (requests_ == 0 || client_may_send()) return wait_for_head();
    end_head_wait();
  }

 private:
  // The steps of run(), one request at a time; each says how the connection goes on.
  enum class then {
    go_on,       // to the next step (or the next request)
    close_both,  // the connection ends here: close both sides
    stop,        // the connection ended in the step (refused, failed or cancelled)
  };
  // The head's bytes stay at the front of the client's read buffer (`head_size` of them).
  asio::awaitable<then> read_request_head(request_framing& req, std::size_t& head_size);
  // `head` is the request head as it goes upstream (forward_request_head).
  asio::awaitable<then> send_request_head(std::string_view head, bool request_done,
                                          bool send_continue);
  asio::awaitable<then> exchange(request_framing& req, const request_head_verdict& verdict);
  // Whether the client may still be sending as mtlsd closes: bytes of its are buffered here or
  // in OpenSSL, or its socket is readable (nginx's test before its lingering close). Closed
  // over unread bytes, the socket would answer with a reset, which discards the response still
  // queued for the client (a pipelined request behind a "Connection: close" response).
  bool client_may_send() {
    return from_client_.buf.size() > 0 || tls_.has_pending() || !net::nothing_to_read(tls_socket_);
  }
  asio::awaitable<void> end_after(then next) {
    if (next == then::close_both) co_await close_both();
  }
  asio::awaitable<error_code> next_request_head(request_framing& req, std::size_t& head_size,
                                                bool& folded);
  // During a drain: the head awaited gets drain_head_wait to be whole (a timer, started once; a
  // completion handler as the watches are), then end_head_wait ends the wait for it.
  void wait_for_head();
  void end_head_wait() {
    error_code ignored;
    tls_socket_.cancel(ignored);
    plain_.cancel(ignored);
  }
  // The watchdog ended the connection (its coroutine cancelled): timeouts.idle while a request
  // waited for its response is answered (504, 408), bounded by idle_answer_bound, once the
  // caller reset its cancellation state (http_exchange.cpp).
  bool idle_answer_due() const;
  asio::awaitable<void> answer_idle_timeout();
  asio::awaitable<void> answer_and_close(std::string_view answer);
  // While the connection waits for a request head, a watch on the upstream: when it becomes
  // readable (it closed, or misbehaves) the client's read is cancelled. Returns true once the
  // watch is queued, false without one when the upstream is readable already. A completion
  // handler rather than a second coroutine beside the client's read: no parallel group per
  // request. It stays queued into the exchange that follows (http_relay.cpp says why).
  bool watch_upstream();
  void start_upstream_watch();
  // A watch completed (`ec` from it): the upstream spoke if it has something to read.
  void upstream_spoke(std::uint64_t watch, const error_code& ec);
  // While a whole request's response is awaited and relayed nobody reads the client: a watch on
  // its socket (the same kind of handler) notices it leaving, and ends the exchange
  // (http_relay.cpp). The exchange's end disarms it, before anything reads the client again.
  void watch_client();
  void start_client_watch();
  void client_readable(const error_code& ec);
  void client_left();
  // The watch is left queued, not cancelled: the next read of the client joins it
  // (tls_stream::join_read_waits), so the request's event completes both at once, where a cancel
  // and its aborted completion, then a wait of the read's own, cost ~0.5k instructions a request
  // more (the bench's http workload, callgrind). A completion meanwhile finds no exchange to
  // judge (test_http_client_gone.py: a reset between requests).
  void stop_watching_client() { watch_->client_armed = false; }
  asio::awaitable<void> refuse(int status, std::string_view reason, std::string why);
  asio::awaitable<void> send_request_body(request_framing& req);
  asio::awaitable<void> relay_response(const request_head_verdict& verdict);
  // A write to the client in relay_response failed, or the exchange was stopped meanwhile: it
  // ends here, with the cause recorded unless it was a cancellation.
  void client_write_failed(const error_code& ec);
  // Records the upstream's failure — what mtlsd was doing, then `reason` or else the error — tells
  // the client (502) when it still can, and stops the exchange; the caller returns.
  asio::awaitable<void> upstream_failed(const error_code& ec, std::string why,
                                        std::string_view reason = {});
  asio::awaitable<void> tunnel();
  asio::awaitable<void> close_both();
  void fail(std::string why) {
    if (result_.aborted) return;
    result_.aborted = true;
    result_.error = std::move(why);
  }
  // Ends the exchange from inside a pump: cancels the other's waits, if it runs
  // (errors are values; the cause is recorded first).
  void stop_exchange() {
    end_ = true;
    stopped_ = true;
    error_code ignored;
    tls_socket_.cancel(ignored);
    plain_.cancel(ignored);
  }

  // The exchange in progress, for its access line (none before a parsed request head).
  void begin_report(const request_head_view& head) {
    report();
    auto& r = current_.emplace();
    r.method = head.method_text;
    r.path = origin_form(head);
    r.authority = request_authority(head);
    r.stream_id = ++requests_;
    r.started = std::chrono::steady_clock::now();
    r.started_at = std::chrono::system_clock::now();
  }
  // A request refused or cut before its head parsed (malformed, too large, not whole in time):
  // its outcome is all there is to report.
  void begin_unparsed_report(std::chrono::steady_clock::time_point started) {
    report();
    auto& r = current_.emplace();
    r.stream_id = ++requests_;
    r.started = started;
    r.started_at = std::chrono::system_clock::now() -
                   std::chrono::duration_cast<std::chrono::system_clock::duration>(
                       std::chrono::steady_clock::now() - started);
  }
  void report() {
    if (!current_) return;
    if (result_.aborted && current_->status == 0 && current_->detail.empty())
      current_->detail = result_.error;
    if (sink_) sink_(*current_);
    current_.reset();
  }
  // The method of the exchange in progress ("" before a parsed head), for mtlsd's own answers.
  // A view, not a ?: of a std::string and a literal: that temporary inside a coroutine's co_await
  // expression was freed twice by GCC 12 (free(): invalid pointer).
  std::string_view current_method() const {
    return current_ ? std::string_view(current_->method) : std::string_view();
  }
  void set_status(int status) {
    if (current_) current_->status = status;
  }
  // mtlsd answers the exchange in progress itself after its failure (a 400 for a malformed body,
  // a 502 for the upstream): its line gets the status and the failure's why, which report()
  // leaves off a line with a status (review: such lines had an empty detail).
  void set_failure_status(int status) {
    if (!current_) return;
    current_->status = status;
    if (current_->detail.empty()) current_->detail = result_.error;
  }

  const session_control* control_;  // null: no session (tests, fuzzing)
  tls_stream& tls_;
  stream_socket& tls_socket_;
  stream_socket& plain_;
  http_forwarding forwarding_;
  http_request_sink sink_;
  std::optional<http_request_report> current_;
  std::uint64_t requests_ = 0;
  std::uint64_t ignored_bytes_ = 0;  // body bytes nobody reports (no request in progress)
  // Read from the upstream: reported as what reached the client instead (tls_side's count).
  byte_count upstream_bytes_;
  idle_deadline& clock_;
  relay_result& result_;
  tls_side client_;
  // The upstream watch's one wait (watch_upstream), which the response's read joins.
  net::awaitable_shared_edge_wait upstream_watch_;
  // The client's (watch_client), which the next read of the client joins.
  net::awaitable_shared_edge_wait client_watch_;
  plain_side upstream_;
  inbound<tls_side> from_client_;
  inbound<plain_side> from_upstream_;
  // A head buffer's memory goes back once it grew past what a usual head needs.
  static void trim_head(std::string& head) {
    if (head.capacity() > 4096) std::string().swap(head);
  }
  std::string request_head_;   // the head going upstream, edited (a usual head's capacity kept)
  std::string response_head_;  // a response head rewritten for the client (hop-by-hop fields)

  // The upstream watch (watch_upstream): what its completion handler holds, so that it can
  // outlive the connection; `watch` numbers the watches, so a late completion of an earlier one
  // is told apart. On Boost 1.81 the shared wait knows as much itself (one wait at a time, its
  // owner told first); this bookkeeping is what keeps the watch right on any other Boost, where
  // the wait is Asio's own (net/shared_edge_wait.hpp's fallback).
  struct watch_cell {
    http_connection* owner;
    std::uint64_t watch = 0;
    bool client_armed = false;  // an exchange wants the client's watch judged (watch_client)
  };
  std::shared_ptr<watch_cell> watch_ = std::make_shared<watch_cell>(watch_cell{this});
  std::unique_ptr<asio::steady_timer> head_wait_;  // wait_for_head's, once a drain began
  bool watching_ = false;        // a watch is queued (until its completion, aborted or not, runs)
  bool upstream_spoke_ = false;  // it completed: the upstream became readable while idle
  bool drain_track_tried_ = false;  // net::track_read_drain(plain_) called (once)

  // The exchange in progress.
  bool request_done_ = false;      // the request body went upstream completely
  bool http10_client_ = false;     // the request in progress is HTTP/1.0: no 1xx goes to it
  bool response_started_ = false;  // the final response's head reached the client
  bool response_cut_ = false;      // the upstream failed after that: no close_notify at the end
  bool body_malformed_ = false;    // the request body did not parse: a 400 if nothing was sent
  bool client_write_cut_ = false;  // a write to the client did not complete (a 1xx, say)
  bool response_keep_alive_ = true;
  bool upgraded_ = false;
  bool end_ = false;       // close the connection after this exchange
  bool draining_ = false;  // drain(): this exchange is the last
  // Waiting for a request head (nothing of it read while from_client_.buf is empty): a drain,
  // or the upstream speaking (upstream_spoke), ends the wait.
  bool idle_ = false;
  bool stopped_ = false;  // a pump ended the exchange: the other returns at its next step
};

}  // namespace mtlsd::proxy::http1
