#pragma once
// The HTTP/1.1 relay's I/O pieces (http_relay.cpp): each side of the connection (the TLS
// client, the plain upstream), the inbound bytes with the read of a whole head, and the loop
// that forwards a body as it came. Internal to src/proxy; only http_connection.hpp and
// http_refusal.cpp (for its simple_response) include it.
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <cerrno>
#include <string>
#include <tuple>

#include "mtlsd/net/edge_wait.hpp"
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/net/shared_edge_wait.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::http1 {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;

// Read buffers hold at most one message head plus one body chunk of look-ahead.
constexpr std::size_t read_buffer_limit = http_head_limit + http_body_chunk;

inline bool is_http_error(const error_code& ec) {
  return &ec.category() == &http::make_error_code(http::error::need_more).category();
}

inline bool cancelled(const error_code& ec) {
  return ec == asio::error::operation_aborted;
}

// The TLS client's side of the connection. `sent` counts what reached the client (the access
// log's tx_bytes): the upstream's bytes and mtlsd's own answers (a 400, a 100 Continue) alike.
class tls_side {
 public:
  tls_side(tls_stream& tls, stream_socket& sock, byte_count& sent)
      : tls_(tls), sock_(sock), sent_(sent) {}

  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    return tls_.read_some(b);
  }
  // One TLS write per call (a response head and the body bytes behind it leave together).
  asio::awaitable<error_code> write(std::string_view s) {
    cut_ = true;
    const error_code ec = co_await tls_.write(asio::buffer(s.data(), s.size()));
    if (ec) co_return ec;
    cut_ = false;
    sent_ += s.size();
    co_return ec;
  }
  // A write began and did not complete (failed, or cancelled midway, a record perhaps half
  // written): nothing may follow it on the stream.
  bool cut() const { return cut_; }
  // close_notify, then FIN.
  asio::awaitable<void> close() {
    co_await tls_.shutdown_send();
    error_code ignored;
    sock_.shutdown(stream_socket::shutdown_send, ignored);
  }

 private:
  tls_stream& tls_;
  stream_socket& sock_;
  byte_count& sent_;
  bool cut_ = false;
};

// The upstream's side: a plain socket.
class plain_side {
 public:
  // `watch`: the connection's watch on the idle upstream (http_relay.cpp), which a wait here
  // joins while it is queued.
  plain_side(stream_socket& sock, net::awaitable_shared_edge_wait& watch)
      : sock_(sock), watch_(watch) {}

  // A recv of our own rather than Asio's read, so that net::note_read follows it at once (a
  // read's completion runs only after the reactor may have polled again). Known drained
  // (net/read_drain.hpp: the last response read emptied it, or the watch's look found it so, and
  // nothing was reported since), it waits for the edge first, rather than trying a read that
  // cannot succeed yet (the request has only just gone up). The watch, left queued when the
  // request came, is joined rather than queued behind: one completion for both, not two
  // (net/shared_edge_wait.hpp).
  // Takes turns as tls_stream::read_some does: an upstream that keeps the socket full (a body,
  // a flood of 1xx heads) does not hold the worker.
  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    bool wait = net::known_drained(sock_);
    if (wait) {
      reads_in_a_row_ = 0;
    } else if (++reads_in_a_row_ >= tls_stream::reads_per_turn) {
      reads_in_a_row_ = 0;
      co_await asio::post(sock_.get_executor(), use_awaitable);
    }
    for (;;) {
      if (wait) {
        auto [wec] = watch_.queued()
                         ? co_await watch_.async_join(as_tuple(use_awaitable))
                         : co_await net::async_wait_drained(sock_, stream_socket::wait_read,
                                                            as_tuple(use_awaitable));
        if (wec) co_return std::tuple{wec, std::size_t{0}};
      }
      const ssize_t n = ::recv(sock_.native_handle(), b.data(), b.size(), MSG_DONTWAIT);
      const int err = errno;
      net::note_read(sock_, b.size(), n, err);
      if (n > 0) co_return std::tuple{error_code{}, static_cast<std::size_t>(n)};
      if (n == 0) co_return std::tuple{error_code(asio::error::eof), std::size_t{0}};
      if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
        co_return std::tuple{error_code(err, boost::system::system_category()), std::size_t{0}};
      wait = err != EINTR;  // empty now, and no yield since: the edge-wait's precondition
      reads_in_a_row_ = 0;
    }
  }
  // A whole write. Tried at once first: the socket almost always has room for a request head,
  // and a send that succeeds inside Asio's async_write is still queued as a completion: a trip
  // through the scheduler and Asio's operation and frame, ~1k instructions per request
  // (callgrind). Only what the socket did not take waits for room.
  // A send of our own (MSG_DONTWAIT | MSG_NOSIGNAL): it never blocks, whatever the socket's
  // mode, and raises no SIGPIPE.
  asio::awaitable<error_code> write(std::string_view s) {
    ssize_t n;
    do {
      n = ::send(sock_.native_handle(), s.data(), s.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(s.size())) co_return error_code{};
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      co_return error_code(errno, boost::system::system_category());
    s.remove_prefix(n < 0 ? 0 : static_cast<std::size_t>(n));
    auto [wec, written] = co_await asio::async_write(sock_, asio::buffer(s.data(), s.size()),
                                                     as_tuple(use_awaitable));
    co_return wec;
  }
  void close() {
    error_code ignored;
    sock_.shutdown(stream_socket::shutdown_send, ignored);
  }

 private:
  stream_socket& sock_;
  net::awaitable_shared_edge_wait& watch_;
  int reads_in_a_row_ = 0;  // reads since the last wait or turn
};

// One side's incoming bytes: a bounded read buffer and the parse step that fills it.
template <class Side>
struct inbound {
  inbound(Side& s, byte_count& c, idle_deadline& k) : side(s), counter(c), clock(k) {}

  Side& side;
  byte_count& counter;  // bytes read from this side
  idle_deadline& clock;
  beast::flat_buffer buf{read_buffer_limit};
  // How much the next read asks for at least. It doubles while reads fill what they asked for,
  // up to 64 KiB: small requests keep a small buffer, a large body streams in large reads (and
  // large TLS records) instead of the 512 bytes beast::read_size settles at when every read is
  // consumed whole.
  std::size_t read_want = min_read;
  // A read of this side waits, or did not complete (cancelled, failed): the connection waited
  // for this side when the watchdog ended it (the answer to the idle timeout, http_exchange.cpp).
  bool waiting = false;

  // One read into the buffer: counted, and the idle clock told. EOF is asio::error::eof.
  asio::awaitable<error_code> read_more() {
    const std::size_t size =
        std::min(buf.max_size() - buf.size(), std::max(buf.capacity() - buf.size(), read_want));
    if (size == 0) co_return http::error::buffer_overflow;
    waiting = true;
    auto [ec, n] = co_await side.read_some(buf.prepare(size));
    if (ec) co_return ec;
    waiting = false;
    buf.commit(n);
    if (n == size && read_want < max_read) read_want *= 2;
    counter += n;
    clock.touch();
    co_return error_code{};
  }

  // Reads until a whole head is buffered, unfolds it (unfold_head; `folded` says whether there
  // was an obs-fold), then parses it in one put, so that its bytes stay at the front of the
  // buffer (`size` of them) to be forwarded as they came, and every value the parser reports
  // points into them. Returns end_of_stream at EOF before any byte, partial_message at EOF
  // inside a head, header_limit when none ends within http_head_limit. A request head not
  // whole after the read that brought its first bytes runs against the clock's head deadline
  // (idle_deadline::start_head) until this returns.
  template <bool isRequest>
  asio::awaitable<error_code> whole_head(http::basic_parser<isRequest>& p, std::size_t& size,
                                         bool& folded) {
    struct head_clock {
      idle_deadline* clock;  // null: a response head, which has no deadline of its own
      bool whole = false;
      ~head_clock() {
        if (clock) clock->end_head(whole);
      }
    } timed{isRequest ? &clock : nullptr};
    std::size_t searched = 0;  // no end of head before this offset
    for (;;) {
      if constexpr (isRequest) {
        // RFC 9112 2.2: empty lines before a request line are ignored (some clients end a body
        // with an extra CRLF), as nginx and Envoy do. They start the head's clock: a client
        // sending only those keeps the connection no longer than a slow head.
        if (drop_empty_lines() && timed.clock) {
          searched = 0;
          clock.start_head();
        }
      }
      char* const at = static_cast<char*>(buf.data().data());
      const std::string_view have(at, buf.size());
      const auto end = have.find("\r\n\r\n", searched);
      if (end != std::string_view::npos && end + 4 <= http_head_limit) {
        timed.whole = true;
        folded = unfold_head({at, end + 4});
        error_code ec;
        size = p.put(buf.data(), ec);
        // The empty line ends every head Beast accepts: need_more would be a parser surprise.
        co_return ec == http::error::need_more ? http::error::partial_message : ec;
      }
      if (end != std::string_view::npos || have.size() >= http_head_limit)
        co_return http::error::header_limit;
      // All of it is head so far: a line ending in a bare LF is refused now, as the parser
      // would, rather than once the peer gives up.
      for (auto lf = have.find('\n', searched); lf != std::string_view::npos;
           lf = have.find('\n', lf + 1))
        if (lf == 0 || have[lf - 1] != '\r') co_return http::error::bad_line_ending;
      searched = have.size() < 3 ? 0 : have.size() - 3;
      if (timed.clock && !have.empty()) clock.start_head();
      if (auto rec = co_await read_more()) {
        if (rec != asio::error::eof) co_return rec;
        co_return buf.size() == 0 ? http::error::end_of_stream : http::error::partial_message;
      }
    }
  }

  // Consumes the empty lines at the front of the buffer: CRLF pairs (a lone CR stays: its LF
  // may follow, and a bare LF is refused as in any request head), or, `bare_lf_too`, any run of
  // CR and LF (after a response, where "ok\n" past a Content-Length of 2 is a common slip).
  // Returns whether there were any.
  bool drop_empty_lines(bool bare_lf_too = false) {
    const std::string_view have(static_cast<const char*>(buf.data().data()), buf.size());
    std::size_t lead = 0;
    if (bare_lf_too)
      lead = std::min(have.find_first_not_of("\r\n"), have.size());
    else
      while (have.size() >= lead + 2 && have[lead] == '\r' && have[lead + 1] == '\n')
        lead += 2;
    buf.consume(lead);
    return lead > 0;
  }

  // Gives a large head's or body's memory back once it is gone (keep-alive connections live
  // long); reads start small again.
  void trim() {
    if (buf.size() > 0 || buf.capacity() <= 2 * http_body_chunk) return;
    buf.shrink_to_fit();
    read_want = min_read;
  }

  static constexpr std::size_t min_read = 512, max_read = 64 * 1024;
};

// Where a body transfer stopped: reading from the source (or its framing was malformed) or
// writing to the sink.
struct body_outcome {
  error_code ec;
  bool reading = false;
};

// Forwards a message body from `in` to `out` as it came, framing included: parse what is
// buffered, write what the parser claims, read more. A chunked body whose parser rewrites its
// framing (framing_base::rewrite_chunks) leaves as rewritten instead. The first `ready` bytes of
// `in`'s buffer are parsed already (a response head that leaves with its body: one write, one TLS
// record for a small response). Memory: the read buffer only (and a rewritten chunked body's copy
// of what one put consumed, until it is written). Once `stopped` (the other pump ended
// the exchange) it returns operation_aborted at its next step, and starts no wait. `head`, when not
// empty, is a head written anew (a response's, without hop-by-hop fields): it goes first, in the
// same write as the body bytes already here (one TLS record for a small response still).
template <class In, class Out, bool isRequest>
asio::awaitable<body_outcome> forward_body(inbound<In>& in, Out& out,
                                           proxy::detail::framing_base<isRequest>& p,
                                           std::size_t ready, const bool& stopped,
                                           std::string* head = nullptr) {
  auto& buf = in.buf;
  p.eager(true);  // one put walks every piece buffered, not just the next chunk's line
  for (;;) {
    error_code bad;  // malformed framing: the bytes before it still go, to show where it broke
    if (!p.is_done() && ready < buf.size())
      ready += p.put_body({static_cast<const char*>(buf.data().data()) + ready, buf.size() - ready},
                          bad);
    if (ready > 0 || (head && !head->empty())) {
      const std::string_view here =
          p.rewrites_body() ? std::string_view(p.rewritten())
                            : std::string_view(static_cast<const char*>(buf.data().data()), ready);
      error_code ec;
      if (head && !head->empty()) {
        head->append(here);
        ec = co_await out.write(*head);
        head->clear();
      } else if (!here.empty()) {  // a rewritten body may have no bytes yet (a chunk's header)
        ec = co_await out.write(here);
      }
      buf.consume(ready);
      ready = 0;
      p.rewritten().clear();
      if (ec) co_return body_outcome{ec, false};
      if (stopped) co_return body_outcome{asio::error::operation_aborted, false};
    }
    if (bad) co_return body_outcome{bad, true};
    if (p.is_done()) co_return body_outcome{};
    if (stopped) co_return body_outcome{asio::error::operation_aborted, true};  // before a wait
    auto ec = co_await in.read_more();
    if (stopped) co_return body_outcome{asio::error::operation_aborted, true};
    if (ec == asio::error::eof) p.put_eof(ec);  // fine for a body that ends with the close
    if (ec) co_return body_outcome{ec, true};
  }
}

// mtlsd's own answer: `text` and a newline as a text/plain body, then the close. To a HEAD
// request (`method`) the head alone, with the Content-Length a GET would have had (RFC 9110
// 9.3.2): a body there would be read as the start of the next response (http1_relay_fuzz).
inline std::string simple_response(int status, std::string_view reason, std::string_view text,
                                   std::string_view method = {}) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out.append(reason);
  out += "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(text.size() + 1) +
         "\r\nConnection: close\r\n\r\n";
  if (method == "HEAD") return out;
  out.append(text);
  return out + "\n";
}

}  // namespace mtlsd::proxy::http1
