// HTTP/1.1 towards the upstream for HTTP/2 clients: each stream is one exchange on an upstream
// connection of its own (HTTP/1.1 cannot multiplex), taken from the connections idle after
// earlier exchanges of the same client connection, or newly connected; at most
// http.max_upstream_connections_per_client at once, the others waiting their turn. The request is
// translated from the HTTP/2 fields (chunked when its length is unknown); the response is parsed
// by Beast, its body streamed back through a bounded buffer, a chunked body's trailers becoming
// the stream's trailers.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "h2_h1_request.hpp"
#include "h2_h1_response.hpp"
#include "h2_stream.hpp"
#include "mtlsd/net/http_body_reader.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/h2_connection.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "mtlsd/proxy/upstream.hpp"

namespace mtlsd::proxy::h2 {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;

constexpr std::size_t response_buffer_limit = 64 * 1024;  // per stream, not yet sent to the client

class h1_upstream final : public upstream {
 public:
  h1_upstream(downstream& down, stream_socket& first, const config::listener& cfg,
              const http_forwarding& fwd, const std::string& preamble,
              prometheus::Counter* connect_failures)
      : down_(down),
        cfg_(cfg),
        forwarding_(fwd),
        preamble_(preamble),
        connect_failures_(connect_failures),
        ex_(first.get_executor()),
        done_(ex_) {
    idle_.push_back(std::make_unique<stream_socket>(std::move(first)));
  }

  void start(stream_ptr s) override {
    ++active_;
    // Detached: exchange() catches what its stream's work throws (see run()).
    asio::co_spawn(ex_, exchange(std::move(s)), asio::detached);
  }
  void request_data(stream& s) override { s.wake.cancel(); }
  void response_consumed(stream& s, std::size_t) override { s.wake.cancel(); }
  // The client's stream ended: an exchange still running stops, its connection not reused.
  void cancel(stream& s, std::uint32_t) override {
    s.wake.cancel();
    if (auto it = busy_.find(&s); it != busy_.end()) {
      error_code ignored;
      it->second->cancel(ignored);
    }
    if (auto it = connecting_.find(&s); it != connecting_.end())
      it->second->emit(asio::cancellation_type::terminal);
  }
  asio::awaitable<void> run() override {
    co_await asio::this_coro::throw_if_cancelled(false);
    while (!stopped_ || active_ > 0) {
      done_.reset();
      if (stopped_ && active_ == 0) break;
      co_await done_.wait();
    }
    // An exchange failed with an exception: the connection ends with it, an internal error
    // counted and logged as a session's is (design rule 2), not a stream left unanswered.
    if (failed_) std::rethrow_exception(failed_);
  }
  void stop() override {
    stopped_ = true;
    // Every exchange in progress is woken, the waiters too (and wait() checks stopped_ first).
    for (auto& [s, sock] : busy_) {
      error_code ignored;
      sock->cancel(ignored);
      s->wake.cancel();
    }
    for (auto& [s, connecting] : connecting_)
      connecting->emit(asio::cancellation_type::terminal);
    for (auto* s : waiting_)
      s->wake.cancel();
    done_.signal();
  }

 private:
  // Runs serve_stream; an exception escaping it stops the connection (run() rethrows it).
  asio::awaitable<void> exchange(stream_ptr s);
  asio::awaitable<void> serve_stream(const stream_ptr& s);
  asio::awaitable<bool> send_body(stream& s, stream_socket& sock, bool chunked);
  asio::awaitable<bool> read_response(stream& s, stream_socket& sock, bool& keep_alive);
  void stop_upload(stream& s, stream_socket& sock);
  // The upstream failed: a 502, or RST_STREAM once answering. Not after stop(): its cancellation
  // is no upstream failure, and the client's connection is ending (the client left, or the drain
  // cut it): run()'s end reports the stream (status 0, as after the client's RST_STREAM).
  void fail(stream& s, std::string why) {
    if (!stopped_) down_.fail(s, NGHTTP2_INTERNAL_ERROR, std::move(why));
  }
  std::size_t in_use_max() const {
    return static_cast<std::size_t>(cfg_.http.max_upstream_connections_per_client);
  }
  // A place is free and a stream waits for it: that stream looks again.
  void wake_next_queued() {
    if (in_use_ < in_use_max() && !queued_.empty()) queued_.front()->wake.cancel();
  }
  // Waits for s.wake; false when the exchange must end (client gone, connection stopping: also
  // when that came first). Two waits of a stream may be pending (send_body, read_response): each
  // has its own entry, so the one that resumes first does not unregister the other.
  asio::awaitable<bool> wait(stream& s) {
    if (s.upstream_done() || stopped_) co_return false;  // a wake now would come too late
    const auto entry = waiting_.insert(&s);
    co_await s.wake.async_wait(as_tuple(use_awaitable));
    waiting_.erase(entry);
    co_return !s.upstream_done() && !stopped_;
  }

  downstream& down_;
  const config::listener& cfg_;
  const http_forwarding& forwarding_;
  const std::string& preamble_;            // sent first on each connection opened here (PROXY v2)
  prometheus::Counter* connect_failures_;  // may be null
  asio::any_io_executor ex_;
  write_signal done_;  // an exchange ended
  std::vector<std::unique_ptr<stream_socket>> idle_;
  std::map<stream*, stream_socket*> busy_;  // exchanges in progress and their connections
  std::map<stream*, asio::cancellation_signal*> connecting_;  // ends an exchange's connect
  std::multiset<stream*> waiting_;
  std::deque<stream*> queued_;  // streams waiting for a place (in_use_max)
  std::size_t in_use_ = 0;      // exchanges holding (or connecting) an upstream connection
  int active_ = 0;
  bool stopped_ = false;
  std::exception_ptr failed_;  // the first exception an exchange ended with
};

asio::awaitable<bool> h1_upstream::send_body(stream& s, stream_socket& sock, bool chunked) {
  std::vector<std::uint8_t> piece(http_body_chunk);
  for (;;) {
    if (s.upstream_done() || stopped_ || s.upload_unwanted) co_return false;
    if (!s.request_body.empty()) {
      const std::size_t n = s.request_body.take(piece.data(), piece.size());
      std::string framed;
      if (chunked) {
        char size[20];
        framed = std::string(
            size, static_cast<std::size_t>(std::snprintf(size, sizeof size, "%zx\r\n", n)));
      }
      framed.append(reinterpret_cast<const char*>(piece.data()), n);
      if (chunked) framed += "\r\n";
      auto [ec, w] =
          co_await asio::async_write(sock, asio::buffer(framed), as_tuple(use_awaitable));
      // Acknowledged to the client whether the write went through or not: taken out of
      // request_body, these bytes are in no buffer stream_closed or upload_unwanted would
      // credit, and a connection's window that loses them for good stalls every later upload
      // on it (review: after ~140 early answers to 60 KB uploads).
      down_.request_consumed(s, n);
      if (ec) co_return false;
      continue;
    }
    if (s.request_end) {
      if (chunked) {
        const std::string last = last_chunk(s.request_trailers);
        auto [ec, w] =
            co_await asio::async_write(sock, asio::buffer(last), as_tuple(use_awaitable));
        if (ec) co_return false;
      }
      co_return true;
    }
    if (!co_await wait(s)) co_return false;
  }
}

asio::awaitable<bool> h1_upstream::read_response(stream& s, stream_socket& sock, bool& keep_alive) {
  beast::flat_buffer buf(http_head_limit + http_body_chunk);
  // Beast reads as much as the buffer has room for, at least 512 bytes; a buffer consumed whole
  // each time never grows past that, so a body came in 512-byte reads (2,048 recv for 1 MiB).
  buf.reserve(http_body_chunk);
  std::optional<http::response_parser<http::buffer_body>> p;
  for (int interim_heads = 0;; ++interim_heads) {  // 1xx heads are not passed on
    // stop() or a reset cancelled only the operations under way: a read begun after would hang.
    if (s.upstream_done() || stopped_) co_return false;
    if (interim_heads > http_interim_limit) {
      fail(s, "upstream: more than " + std::to_string(http_interim_limit) +
                  " interim (1xx) responses");
      co_return false;
    }
    p.emplace();
    p->header_limit(http_head_limit);
    p->body_limit(boost::none);
    if (s.method == "HEAD") p->skip(true);
    auto [ec, n] = co_await http::async_read_header(sock, buf, *p, as_tuple(use_awaitable));
    if (ec) {
      fail(s, "upstream: reading the response head: " + ec.message());
      co_return false;
    }
    const unsigned status = p->get().result_int();
    if (const auto why = refused_status_for_http2(status); !why.empty()) {
      fail(s, "upstream: " + std::string(why));
      co_return false;
    }
    if (status >= 200) break;
  }
  if (s.upstream_done() || stopped_) co_return false;  // answered here meanwhile (idle)
  auto& msg = p->get();
  if (const auto why = unframable_for_http2(msg); !why.empty()) {
    fail(s, "upstream: " + std::string(why));
    co_return false;
  }
  s.status = static_cast<int>(msg.result_int());
  std::set<std::string> named_by_connection;
  const auto length = p->content_length();
  take_response_head(msg, s.status, length ? std::optional<std::uint64_t>(*length) : std::nullopt,
                     named_by_connection, s.response_headers);
  keep_alive = p->keep_alive();
  static_cast<http::fields&>(msg).clear();  // taken: what the parser adds now is the trailers
  if (p->is_done()) s.response_end = true;
  down_.respond(s);
  std::vector<std::uint8_t> piece(http_body_chunk);
  net::http_body_reader body(*p, buf);
  while (!p->is_done()) {
    while (s.response_body.size() >= response_buffer_limit)
      if (!co_await wait(s)) co_return false;
    if (s.upstream_done() || stopped_) co_return false;
    msg.body().data = piece.data();
    msg.body().size = piece.size();
    if (const auto ec = co_await body.read_some(sock)) {
      fail(s, "upstream: reading the response body: " + ec.message());
      co_return false;
    }
    if (s.upstream_done() || stopped_) co_return false;
    const std::size_t got = piece.size() - msg.body().size;
    if (got > 0) s.response_body.append(piece.data(), got);
    if (p->is_done()) {
      if (!take_trailers(msg, named_by_connection, s.response_trailers)) {
        fail(s, "upstream: response trailers larger than " + std::to_string(http_head_limit) +
                    " bytes");
        co_return false;
      }
      s.response_end = true;
    }
    down_.response_data(s);
  }
  // Bytes past the end of the response (a second one nobody asked for, a body with a HEAD
  // answer) would be read as the answer to whichever stream used this connection next.
  if (buf.size() > 0) keep_alive = false;
  if (!s.request_end) stop_upload(s, sock);
  co_return true;
}

// Answered in full before the request body ended (an early 413): the client is asked to stop
// sending once the response is out (RST_STREAM(NO_ERROR), RFC 9113 8.1), and send_body stops
// now, in a wait or in a write the upstream may never read. The connection, with part of a
// request on it, is not pooled (send_body returns false).
void h1_upstream::stop_upload(stream& s, stream_socket& sock) {
  down_.upload_unwanted(s);
  s.wake.cancel();
  error_code ignored;
  sock.cancel(ignored);  // the response is read: only send_body's write can be pending
}

asio::awaitable<void> h1_upstream::exchange(stream_ptr s) {
  struct finished {
    h1_upstream& u;
    ~finished() {
      --u.active_;
      u.done_.signal();
    }
  } guard{*this};
  try {
    co_await serve_stream(s);
  } catch (...) {
    // Network errors are error codes: this is a bug. Caught while active_ counts this exchange,
    // so `this` is alive (a co_spawn completion handler could run after run() returned).
    if (!failed_) failed_ = std::current_exception();
    stop();
  }
}

asio::awaitable<void> h1_upstream::serve_stream(const stream_ptr& s) {
  using namespace asio::experimental::awaitable_operators;
  // Started from nghttp2's callback, inside the read that brought the request's HEADERS: the
  // exchange begins on the next turn, once the rest of that read is processed, so a RST_STREAM
  // right behind the HEADERS (rapid reset, CVE-2023-44487) finds the stream closed before any
  // upstream connection is made for it.
  co_await asio::post(ex_, use_awaitable);
  // Strictly in order: a stream takes a place only from the front of the queue. It stays queued
  // while it waits (a wake for its request's DATA changes nothing), and one that leaves without
  // a place (reset, or the connection stopping) hands the turn on, as a place given back does:
  // a wake sent to a stream that was already leaving is never lost.
  queued_.push_back(s.get());
  for (;;) {
    if (s->upstream_done() || stopped_) {
      std::erase(queued_, s.get());
      wake_next_queued();
      co_return;
    }
    if (in_use_ < in_use_max() && queued_.front() == s.get()) break;
    co_await wait(*s);
  }
  queued_.pop_front();
  struct in_use {  // the place among in_use_max(); given back, the next in line is woken
    h1_upstream& u;
    explicit in_use(h1_upstream& up) : u(up) { ++u.in_use_; }
    ~in_use() {
      --u.in_use_;
      u.wake_next_queued();
    }
  } place{*this};
  std::unique_ptr<stream_socket> sock;
  bool opened_here = false;  // a new connection: the upstream has not heard the preamble yet
  while (!idle_.empty() && !sock) {
    sock = std::move(idle_.back());
    idle_.pop_back();
    // Pooled connections are not watched: one that closed, or spoke unasked, since its last
    // response is dropped here, not handed this request (a 502 or another stream's bytes).
    if (!net::nothing_to_read(*sock)) sock.reset();
  }
  if (!sock) {
    sock = std::make_unique<stream_socket>(ex_);
    std::string why;
    // Bounded by timeouts.connect as the session's first connection is (that one by the
    // session's watchdog), and ended at once by the stream's reset or stop().
    asio::cancellation_signal stop_connect;
    connecting_[s.get()] = &stop_connect;
    struct forget_connect {  // however the connect ends, an exception included
      std::map<stream*, asio::cancellation_signal*>& connecting;
      stream* s;
      ~forget_connect() { connecting.erase(s); }
    } forget{connecting_, s.get()};
    auto ec = co_await asio::co_spawn(
        ex_, connect_upstream_within(*sock, cfg_.upstream, cfg_.timeouts.connect, why),
        asio::bind_cancellation_slot(stop_connect.slot(), asio::use_awaitable));
    if (ec) {
      // Counted as the session's first connect is (session_upstream.cpp's refuse_connect): an
      // upstream that went away while HTTP/2 clients keep their connections fails only here.
      // A connect the client's reset or close cancelled failed nothing.
      if (connect_failures_ && !out_of_descriptors(ec) && ec != asio::error::operation_aborted)
        connect_failures_->Increment();
      // `why` already holds the error's message, when there is one.
      fail(*s, "upstream: " + (why.empty() ? ec.message() : why));
      co_return;
    }
    opened_here = true;
  }
  if (s->upstream_done() || stopped_) co_return;
  busy_[s.get()] = sock.get();
  s->reached_upstream = true;  // from its head's first byte on, the upstream may process it
  bool chunked = false;
  // One write: the PROXY header (review: only the session's first connection had one, so an
  // upstream requiring it refused the others) and the request head.
  std::string head = request_head(*s, forwarding_, chunked);
  down_.request_fields_taken(*s);
  if (opened_here) head.insert(0, preamble_);
  auto [wec, w] = co_await asio::async_write(*sock, asio::buffer(head), as_tuple(use_awaitable));
  bool keep_alive = false, sent = false, received = false;
  if (wec) {
    fail(*s, "upstream: writing the request: " + wec.message());
  } else {
    auto [a, b] = co_await (send_body(*s, *sock, chunked) && read_response(*s, *sock, keep_alive));
    sent = a;
    received = b;
  }
  busy_.erase(s.get());
  // A failed read_response told the client already (502, or RST_STREAM once answering).
  // Reused only after a complete, keep-alive exchange whose request went out whole.
  if (sent && received && keep_alive && !stopped_ &&
      idle_.size() < h1_upstreams_idle_kept(cfg_.http))
    idle_.push_back(std::move(sock));
}

}  // namespace

std::unique_ptr<upstream> make_h1_upstream(downstream& down, stream_socket& first,
                                           const config::listener& cfg,
                                           const http_forwarding& forwarding,
                                           const std::string& preamble,
                                           prometheus::Counter* connect_failures) {
  return std::make_unique<h1_upstream>(down, first, cfg, forwarding, preamble, connect_failures);
}

}  // namespace mtlsd::proxy::h2
