// h2c towards the upstream: one nghttp2 client session over the plain upstream connection,
// carrying every stream of one client connection. Headers, DATA, trailers and RST_STREAM pass
// through per stream; each stream's flow control is acknowledged only as the other side takes
// the bytes, the connection's as soon as a stream buffered them (h2_stream.hpp).
#include "h2_upstream_impl.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mtlsd::proxy::h2 {

using asio::as_tuple;
using asio::use_awaitable;

bool h2c_upstream::open_session() {
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, http_head_limit}};  // advisory: header() enforces
  // A client's head of up to http_head_limit, plus XFCC and X-Forwarded-* (64 KiB failed it).
  session_ = make_session(session_side::client, *this, settings, 2 * http_head_limit);
  return session_ != nullptr;
}

void h2c_upstream::start(stream_ptr s) {
  header_list head;
  head.reserve(s->request_headers.size() + 8);
  head.emplace_back(":method", s->method);
  head.emplace_back(":scheme", "http");  // what the upstream connection is
  head.emplace_back(":authority", s->authority);
  head.emplace_back(":path", s->path);
  header_list fields;
  fields.reserve(s->request_headers.size() + 3);
  for (auto& h : s->request_headers)
    if (!is_hop_by_hop(h.first, h.second)) fields.push_back(std::move(h));
  s->request_headers.clear();
  down_.request_fields_taken(*s);
  apply_forwarding(fields, forwarding_);
  for (auto& h : fields)
    head.push_back(std::move(h));
  const auto nv = to_nv(head);
  // Charged only when nghttp2 will hold it back: the upstream's concurrency limit is reached by
  // the streams it has, open or waiting (cancelled ones included, until nghttp2 closes them).
  // Below it, the head leaves on the writer's next turn, and a burst of streams in one read is
  // bounded by http.max_concurrent_streams (review of this bound: charging every head refused
  // bursts of gRPC streams to an upstream with room for them).
  std::size_t charge = 0;
  if (streams_.size() >= nghttp2_session_get_remote_settings(
                             session_.get(), NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)) {
    for (const auto& [name, value] : head)
      charge += name.size() + value.size() + 32;
    charge = std::max(charge, queued_head_charge);
  }
  if (charge > 0 && queued_bytes_ + charge > queued_heads_budget) {
    down_.fail(*s, NGHTTP2_REFUSED_STREAM,
               "upstream: the requests waiting for a stream of the h2c upstream (its concurrency "
               "limit) hold too much; refused, the client may retry");
    return;
  }
  const bool no_body = s->request_end && s->request_body.empty() && s->request_trailers.empty();
  const nghttp2_data_provider body = body_provider(*s);
  const std::int32_t id = nghttp2_submit_request(session_.get(), nullptr, nv.data(), nv.size(),
                                                 no_body ? nullptr : &body, nullptr);
  if (id < 0) {
    down_.fail(*s, NGHTTP2_INTERNAL_ERROR,
               std::string("upstream: submitting the request: ") + nghttp2_strerror(id));
    return;
  }
  s->upstream_id = id;
  s->upstream_queued_bytes = charge;
  queued_bytes_ += charge;
  streams_.emplace(id, std::move(s));
  out_.signal();
}

void h2c_upstream::cancel(stream& s, std::uint32_t code) {
  // Response bytes the client will never take: the connection's window has them back already
  // (data_chunk), and the upstream's stream, if still open, is reset below.
  s.response_body = {};
  if (s.upstream_id < 0 || !streams_.count(s.upstream_id)) return;
  // The client reset its stream, or its stream ended before the upstream's: pass it on.
  nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.upstream_id,
                            code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_CANCEL} : code);
  out_.signal();
}

bool h2c_upstream::header(const nghttp2_frame& f, std::string_view name,
                          std::string_view value_in) {
  stream* s = find(f.hd.stream_id);
  if (!s || f.hd.type != NGHTTP2_HEADERS || s->upstream_done()) return true;
  // Counted before anything is copied, per header list (each head, 1xx or final, and the
  // trailers): HPACK lets one byte from the upstream name a field already in its table (a 4 KiB
  // one, say), so one 16 KiB frame could decode to 64 MB. Past the limit the upstream's stream
  // is reset and the client's gets a 502 (or, its response begun, a reset).
  if (name == ":status") {  // the first field of every head
    s->upstream_head_bytes = 0;
    // nghttp2 checks three digits and holds back 1xx; 000-099 it takes for a final head, which
    // this side would take for an interim one and never pass on (the client's stream then had
    // no answer until stream_idle_timeout: h2_upstream_fuzz). No status at all (RFC 9110 15);
    // nor is 600-999, which the HTTP/1.1 paths refuse too (response_status_refusal).
    if (value_in.empty() || value_in[0] == '0' || value_in[0] > '5') {
      s->detail = "upstream: response status " + std::string(value_in) + " is not a status";
      return false;  // reset, as a head over the limit
    }
    if (!value_in.empty() && value_in[0] == '1' &&
        ++s->upstream_interim_heads > http_interim_limit) {
      s->detail =
          "upstream: more than " + std::to_string(http_interim_limit) + " interim (1xx) responses";
      return false;  // reset, as a head over the limit
    }
  }
  std::size_t& counted =
      s->final_head_received ? s->upstream_trailer_bytes : s->upstream_head_bytes;
  counted += name.size() + value_in.size() + 32;  // RFC 9113 6.5.2's accounting
  if (counted > http_head_limit) {
    s->detail = std::string("upstream: response ") +
                (s->final_head_received ? "trailers" : "header list") + " over " +
                std::to_string(http_head_limit) + " bytes";
    return false;
  }
  std::string value(value_in);
  // For the access line: an RPC's outcome rides in its trailers (or, with no message sent, in
  // a Trailers-Only response head) while :status says 200 either way.
  if (name == "grpc-status") s->grpc_status = parse_grpc_status(value);
  // A HEADERS frame after the final head's carries the trailers. Not told by the frame's
  // category: nghttp2 gives the final head HCAT_HEADERS too when a 1xx came before it.
  if (s->final_head_received) {
    s->response_trailers.emplace_back(std::string(name), std::move(value));
  } else if (name == ":status") {
    int status = 0;
    std::from_chars(value.data(), value.data() + value.size(), status);
    s->status = status;
    s->response_headers.clear();
  } else if (!is_hop_by_hop(name, value)) {
    s->response_headers.emplace_back(std::string(name), std::move(value));
  }
  return true;
}

void h2c_upstream::frame_received(const nghttp2_frame& f) {
  // The upstream is going away (a restart, a maximum connection age): streams above the last
  // one it names are closed by nghttp2 with REFUSED_STREAM, new ones are not sent to it, and
  // the client is asked to reconnect.
  if (f.hd.type == NGHTTP2_GOAWAY) {
    goaway_received_ = true;
    down_.upstream_closing();
    return;
  }
  if (f.hd.type != NGHTTP2_HEADERS && f.hd.type != NGHTTP2_DATA) return;
  stream* s = find(f.hd.stream_id);
  if (!s || s->upstream_done()) return;
  const bool end = (f.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f.hd.type == NGHTTP2_HEADERS && !s->final_head_received) {
    if (s->status < 200) {  // 100, 103: the final head follows; not passed on
      s->status = 0;
      s->response_headers.clear();
      return;
    }
    s->final_head_received = true;
    if (end) s->response_end = true;
    down_.respond(*s);
    return;
  }
  if (end) {
    s->response_end = true;
    down_.response_data(*s);
  }
}

void h2c_upstream::data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                              std::size_t len) {
  stream* s = find(id);
  if (!s || s->upstream_done()) {
    nghttp2_session_consume(session, id, len);  // nobody will take it: both windows, now
    return;
  }
  s->response_body.append(data, len);
  // Buffered: the connection's window has the bytes back at once, so that a stream whose client
  // does not read holds only its own window (review: 16 unread downloads held the whole 1 MiB
  // and every other stream of the connection waited); the stream's when the client takes them.
  nghttp2_session_consume_connection(session, len);
  down_.response_data(*s);
}

void h2c_upstream::stream_closed(nghttp2_session*, std::int32_t id, std::uint32_t code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  stream_ptr s = std::move(it->second);
  streams_.erase(it);
  release_queued(*s);
  const auto unsent = unsent_heads_.extract(id);
  if (s->upstream_done()) return;
  if (!unsent.empty())  // never reached the upstream: a 502 of ours, not a retryable refusal
    down_.fail(*s, NGHTTP2_INTERNAL_ERROR,
               "upstream: the request head was not sent: " + unsent.mapped());
  else if (code != NGHTTP2_NO_ERROR || !s->response_end)  // or nghttp2 ended it after its GOAWAY
    down_.fail(*s, code,
               !connection_error_.empty()
                   ? "upstream: " + connection_error_
                   : std::string("upstream reset the stream: ") + nghttp2_http2_strerror(code));
  else if (!s->request_end)  // answered in full before the upload ended (RFC 9113 8.1)
    down_.upload_unwanted(*s);
}

void h2c_upstream::lose_connection(const std::string& why) {
  if (lost_) return;
  lost_ = broken_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  queued_bytes_ = 0;
  // Whether the upstream processed these is unknown (unlike streams above a GOAWAY's last
  // one): a 502, not a refusal a client would retry.
  for (auto& [id, s] : streams)
    if (!s->closed) down_.fail(*s, NGHTTP2_INTERNAL_ERROR, "upstream: " + why);
  down_.upstream_closing();
}

// mtlsd's side never says GOAWAY itself: nghttp2 does, to end the connection for the upstream's
// error (a PUSH_PROMISE, push being off; a header block HPACK cannot decode; a window overrun).
// It takes nothing more from the upstream, and once the GOAWAY is written out the connection is
// lost (session_over), as a closed one is. Its debug data, when there is one, says what the
// upstream did; it is nghttp2's own text (the error_callback2 of nghttp2 1.52 is not called for
// these).
void h2c_upstream::goaway_sent(const nghttp2_goaway& g) {
  if (!connection_error_.empty()) return;
  connection_error_ = std::string("HTTP/2 protocol error by the upstream (GOAWAY ") +
                      nghttp2_http2_strerror(g.error_code) + " sent)";
  if (const auto debug = goaway_debug(g); !debug.empty()) connection_error_ += ": " + debug;
}

asio::awaitable<void> h2c_upstream::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  while (!stopped_) {
    auto [ec, n] =
        co_await sock_.async_read_some(asio::buffer(read_buffer_), as_tuple(use_awaitable));
    if (stopped_ || lost_) break;
    if (ec) {
      // After a failed write, the end of what the upstream had sent (the writer's shutdown
      // below): the write's error is the reason.
      lose_connection(loss_reason(ec == asio::error::eof ? std::string("the h2c connection closed")
                                                         : "reading: " + ec.message()));
      break;
    }
    const auto rv = nghttp2_session_mem_recv(session_.get(), read_buffer_.data(), n);
    out_.signal();
    if (rv < 0) {
      lose_connection(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
      break;
    }
    // The upstream's GOAWAY with no stream left open, or nghttp2's for a connection error, once
    // the writer took it (until then the session still wants to write; the writer ends it).
    if (session_over()) {
      lose_connection(loss_reason("the h2c connection is over (GOAWAY)"));
      break;
    }
  }
  out_.signal();
}

asio::awaitable<void> h2c_upstream::writer() {
  co_await asio::this_coro::throw_if_cancelled(false);
  while (!stopped_ && !broken_) {
    out_.reset();
    staging_.clear();
    if (int rv = collect_output(session_.get(), staging_, write_batch); rv != 0) {
      lose_connection(std::string("HTTP/2: ") + nghttp2_strerror(rv));
      break;
    }
    if (staging_.empty()) {
      // nghttp2 wrote its GOAWAY for the upstream's connection error: before, nothing said so,
      // and the streams under way waited for stream_idle_timeout (a 504), the client's new ones
      // were refused with no GOAWAY to it, and the connection stayed open (review).
      if (session_over()) {
        lose_connection(loss_reason("the h2c connection is over (GOAWAY)"));
        break;
      }
      co_await out_.wait();
      continue;
    }
    auto [ec, n] =
        co_await asio::async_write(sock_, asio::buffer(staging_), as_tuple(use_awaitable));
    if (ec) {
      if (!stopped_) {
        write_failed_ = "writing: " + ec.message();
        broken_ = true;            // no new stream for this connection,
        down_.upstream_closing();  // and the client told so (GOAWAY), as lose_connection does
      }
      break;
    }
  }
  error_code ignored;
  if (write_failed_.empty()) {
    sock_.cancel(ignored);  // the reader stops too
  } else {
    // An upstream that answered in full and then closed (a request body it did not want) makes
    // the write fail, and that can come before the reader has taken the answer's last frames off
    // the socket: failing the streams now reset a whole response (INTERNAL_ERROR, which the
    // client takes as discarding it; seen once in a CI run).
    // The reader reads what the socket holds, then ends: after SHUT_RD a read that finds no
    // queued bytes returns the end instead of waiting, on TCP and unix sockets alike.
    sock_.shutdown(stream_socket::shutdown_receive, ignored);
  }
}

asio::awaitable<void> h2c_upstream::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (reader() && writer());
  error_code ignored;
  sock_.shutdown(stream_socket::shutdown_send, ignored);
}

std::unique_ptr<upstream> make_h2c_upstream(downstream& down, stream_socket& sock,
                                            const http_forwarding& forwarding) {
  auto u = std::make_unique<h2c_upstream>(down, sock, forwarding);
  if (!u->open_session()) throw std::runtime_error("nghttp2: could not create a client session");
  return u;
}

}  // namespace mtlsd::proxy::h2
