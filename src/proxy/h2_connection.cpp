// The client's side of an HTTP/2 connection: an nghttp2 server session over the TLS stream.
#include "mtlsd/proxy/h2_connection.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <unordered_map>

#include "h2_stream.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy {
namespace {

using namespace h2;
using asio::as_tuple;
using asio::use_awaitable;

constexpr std::size_t write_batch = 64 * 1024;  // bytes of frames gathered per TLS write
// Connection-level receive window: what all streams together may have in flight towards us.
constexpr std::int32_t connection_window = 1 << 20;
constexpr auto goaway_grace = std::chrono::seconds(1);  // bound on the GOAWAY's write when killed

class h2_connection final : public downstream {
 public:
  explicit h2_connection(h2_environment env)
      : env_(std::move(env)),
        ex_(env_.client_socket->get_executor()),
        out_(ex_),
        sweep_timer_(ex_, steady::time_point::max()) {}

  asio::awaitable<void> run();

  // downstream
  void respond(stream& s) override;
  void response_data(stream& s) override;
  void request_consumed(stream& s, std::size_t n) override {
    nghttp2_session_consume(session_.get(), s.id, n);
    out_.signal();
  }
  void fail(stream& s, std::uint32_t code, std::string detail) override;

 private:
  bool open_session();
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  asio::awaitable<void> sweeper();
  asio::awaitable<void> loops();
  asio::awaitable<void> goodbye();
  void stop() {
    stopping_ = true;
    out_.signal();
    sweep_timer_.cancel();
    error_code ignored;
    env_.client_socket->cancel(ignored);
  }
  stream* find(std::int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }
  void start(stream& s);
  void report(stream& s, std::uint32_t code);
  void local_failure(std::string why) {
    env_.result->ended_by(relay_end::local);
    if (env_.result->aborted) return;
    env_.result->aborted = true;
    env_.result->error = std::move(why);
  }

  // nghttp2 callbacks (user_data = this).
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t len, void* self);
  static int on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t code, void* self);
  static ssize_t read_response(nghttp2_session*, std::int32_t id, std::uint8_t* buf,
                               std::size_t length, std::uint32_t* flags, nghttp2_data_source* src,
                               void* self);

  h2_environment env_;
  asio::any_io_executor ex_;
  session_ptr session_;
  std::unique_ptr<upstream> upstream_;
  std::unordered_map<std::int32_t, stream_ptr> streams_;
  write_signal out_;
  asio::steady_timer sweep_timer_;
  std::array<std::uint8_t, 16 * 1024> read_buffer_;
  std::string staging_;
  bool stopping_ = false;
};

bool h2_connection::open_session() {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // WINDOW_UPDATE only for what the upstream took (request_consumed): backpressure.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // gRPC sends grpc-message and metadata values with whitespace at an end (or empty) as
  // they are; RFC 9113 8.2.1 validation would reset those streams (curl and Apache's
  // mod_proxy_http2 turn it off too). CR, LF and NUL are still refused.
  nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(opt, 1);
  nghttp2_option_set_max_send_header_block_length(opt, 2 * http_head_limit);
  nghttp2_session* raw = nullptr;
  const int rv = nghttp2_session_server_new2(&raw, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return false;
  session_.reset(raw);
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
       static_cast<std::uint32_t>(env_.cfg->http.max_concurrent_streams)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, http_head_limit},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, NGHTTP2_INITIAL_WINDOW_SIZE}};
  nghttp2_submit_settings(raw, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(raw, NGHTTP2_FLAG_NONE, 0, connection_window);
  return true;
}

int h2_connection::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    c.streams_.emplace(f->hd.stream_id, std::make_shared<stream>(f->hd.stream_id, c.ex_));
  return 0;
}

int h2_connection::on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n,
                             std::size_t nlen, const std::uint8_t* v, std::size_t vlen,
                             std::uint8_t, void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  stream* s = c.find(f->hd.stream_id);
  if (!s || f->hd.type != NGHTTP2_HEADERS) return 0;
  std::string name(reinterpret_cast<const char*>(n), nlen);
  std::string value(reinterpret_cast<const char*>(v), vlen);
  s->header_bytes += nlen + vlen + 32;  // RFC 9113 6.5.2's accounting
  if (s->header_bytes > http_head_limit) {
    s->head_too_large = true;
    return 0;
  }
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST) {
    s->request_trailers.emplace_back(std::move(name), std::move(value));
  } else if (name == ":method") {
    s->method = std::move(value);
  } else if (name == ":scheme") {
    s->scheme = std::move(value);
  } else if (name == ":authority") {
    s->authority = std::move(value);
  } else if (name == ":path") {
    s->path = std::move(value);
  } else if (name == "host") {
    if (s->authority.empty()) s->authority = value;
  } else {
    s->request_headers.emplace_back(std::move(name), std::move(value));
  }
  return 0;
}

int h2_connection::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  stream* s = c.find(f->hd.stream_id);
  if (!s) return 0;
  s->touch();
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (end) s->request_end = true;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    c.start(*s);
  else if (end && c.upstream_)
    c.upstream_->request_data(*s);
  return 0;
}

void h2_connection::start(stream& s) {
  auto refuse = [&](int status, std::string why) {
    s.detail = std::move(why);
    s.answered_here = true;
    s.status = status;
    s.response_headers = {{"content-type", "text/plain"}};
    const std::string text = std::to_string(status) + "\n";
    s.response_body.append(reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    s.response_end = true;
    respond(s);
  };
  if (s.head_too_large)
    return refuse(431,
                  "request header list larger than " + std::to_string(http_head_limit) + " bytes");
  if (s.method == "CONNECT") return refuse(405, "CONNECT is not relayed");
  if (upstream_->broken()) return refuse(502, "upstream: the h2c connection is gone");
  upstream_->start(streams_.at(s.id));
}

int h2_connection::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                                 const std::uint8_t* data, std::size_t len, void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  stream* s = c.find(id);
  if (!s || s->closed || s->answered_here) {
    nghttp2_session_consume(session, id, len);  // nobody will take it: acknowledge now
    return 0;
  }
  s->touch();
  s->request_body.append(data, len);
  s->req_bytes += len;
  c.upstream_->request_data(*s);
  return 0;
}

int h2_connection::on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t code,
                                   void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  auto it = c.streams_.find(id);
  if (it == c.streams_.end()) return 0;
  stream_ptr s = std::move(it->second);
  c.streams_.erase(it);
  s->closed = true;
  // Body the upstream never took still counts against the connection's window.
  if (!s->request_body.empty()) nghttp2_session_consume(session, id, s->request_body.size());
  s->request_body = {};
  if (c.upstream_) c.upstream_->cancel(*s, code);
  c.report(*s, code);
  return 0;
}

ssize_t h2_connection::read_response(nghttp2_session* session, std::int32_t id, std::uint8_t* buf,
                                     std::size_t length, std::uint32_t* flags,
                                     nghttp2_data_source* src, void* self) {
  auto& c = *static_cast<h2_connection*>(self);
  auto& s = *static_cast<stream*>(src->ptr);
  const std::size_t n = s.response_body.take(buf, length);
  if (n > 0) {
    s.resp_bytes += n;
    s.touch();
    c.upstream_->response_consumed(s, n);
  }
  if (s.response_body.empty() && s.response_end) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!s.response_trailers.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const auto nv = to_nv(s.response_trailers);
      nghttp2_submit_trailer(session, id, nv.data(), nv.size());
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    s.response_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void h2_connection::respond(stream& s) {
  if (s.closed || s.response_started) return;
  s.response_started = true;
  header_list head;
  head.reserve(s.response_headers.size() + 1);
  head.emplace_back(":status", std::to_string(s.status));
  for (auto& h : s.response_headers)
    if (!is_hop_by_hop(h.first, h.second)) head.push_back(std::move(h));
  s.response_headers.clear();
  const auto nv = to_nv(head);
  const bool no_body = s.response_end && s.response_body.empty() && s.response_trailers.empty();
  nghttp2_data_provider body;
  body.source.ptr = &s;
  body.read_callback = read_response;
  nghttp2_submit_response(session_.get(), s.id, nv.data(), nv.size(), no_body ? nullptr : &body);
  out_.signal();
}

void h2_connection::response_data(stream& s) {
  s.touch();
  if (s.response_started && s.response_deferred && !s.closed) {
    s.response_deferred = false;
    nghttp2_session_resume_data(session_.get(), s.id);
  }
  out_.signal();
}

void h2_connection::fail(stream& s, std::uint32_t code, std::string detail) {
  if (s.closed) return;
  if (s.detail.empty()) s.detail = std::move(detail);
  if (!s.response_started) {
    s.answered_here = true;
    s.status = 502;
    s.response_headers = {{"content-type", "text/plain"}};
    s.response_body = {};
    s.response_body.append(reinterpret_cast<const std::uint8_t*>("Bad Gateway\n"), 12);
    s.response_trailers.clear();
    s.response_end = true;
    respond(s);
    return;
  }
  nghttp2_submit_rst_stream(
      session_.get(), NGHTTP2_FLAG_NONE, s.id,
      code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_INTERNAL_ERROR} : code);
  out_.signal();
}

void h2_connection::report(stream& s, std::uint32_t code) {
  if (!env_.sink) return;
  http_request_report r;
  r.method = s.method;
  r.authority = s.authority;
  r.path = s.path;
  r.http2 = true;
  r.status = s.response_started ? s.status : 0;
  r.req_bytes = s.req_bytes;
  r.resp_bytes = s.resp_bytes;
  r.stream_id = s.id;
  r.started = s.started;
  r.started_at = s.started_at;
  r.detail = std::move(s.detail);
  if (code != NGHTTP2_NO_ERROR && r.detail.empty())
    r.detail = std::string("stream reset: ") + nghttp2_http2_strerror(code);
  env_.sink(r);
}

asio::awaitable<void> h2_connection::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    auto [ec, n] = co_await env_.tls->read_some(asio::buffer(read_buffer_));
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        env_.result->ended_by(relay_end::tls_peer);
        if (ec != asio::error::eof) {
          env_.result->aborted = true;
          env_.result->error = "reading from the client: " + describe(ec, *env_.tls);
        }
      }
      break;
    }
    env_.result->from_tls += n;
    env_.clock->touch();
    const auto rv = nghttp2_session_mem_recv(session_.get(), read_buffer_.data(), n);
    out_.signal();
    if (rv < 0) {  // nghttp2 queued a GOAWAY saying why, when it could
      local_failure(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
      break;
    }
    if (!nghttp2_session_want_read(session_.get()) || stopping_) break;
  }
  stopping_ = true;
  out_.signal();
  sweep_timer_.cancel();
}

asio::awaitable<void> h2_connection::writer() {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    out_.reset();
    staging_.clear();
    if (int rv = collect_output(session_.get(), staging_, write_batch); rv != 0) {
      local_failure(std::string("HTTP/2: ") + nghttp2_strerror(rv));
      break;
    }
    if (!staging_.empty()) {
      if (auto ec = co_await env_.tls->write(asio::buffer(staging_))) {
        if (ec != asio::error::operation_aborted) {
          env_.result->ended_by(relay_end::tls_peer);
          env_.result->aborted = true;
          env_.result->error = "writing to the client: " + describe(ec, *env_.tls);
        }
        break;
      }
      env_.result->from_plain += staging_.size();
      env_.clock->touch();
      continue;
    }
    if (stopping_ ||
        (!nghttp2_session_want_read(session_.get()) && !nghttp2_session_want_write(session_.get())))
      break;
    co_await out_.wait();
  }
  stop();
}

// http.stream_idle_timeout: a stream with no frames either way for that long is reset. While
// streams are open the connection is not idle (a quiet gRPC stream is not an idle connection).
asio::awaitable<void> h2_connection::sweeper() {
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto timeout = env_.cfg->http.stream_idle_timeout;
  const auto period = std::clamp<steady::duration>(timeout / 8, std::chrono::milliseconds(100),
                                                   std::chrono::seconds(10));
  while (!stopping_) {
    sweep_timer_.expires_after(period);
    co_await sweep_timer_.async_wait(as_tuple(use_awaitable));
    if (stopping_) break;
    if (!streams_.empty()) env_.clock->touch();
    if (timeout.count() == 0) continue;
    const auto now = steady::now();
    for (auto& [id, s] : streams_)
      if (now - s->last_activity >= timeout) {
        s->detail = "stream idle timeout (" + config::format_duration(timeout) + ")";
        s->last_activity = steady::time_point::max() - std::chrono::hours(24 * 365);  // reset once
        nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      }
    out_.signal();
  }
}

asio::awaitable<void> h2_connection::loops() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (reader() && writer() && sweeper());
  upstream_->stop();
}

// Killed from outside (drain timeout, reload, revocation): GOAWAY, written within a bound.
asio::awaitable<void> h2_connection::goodbye() {
  using namespace asio::experimental::awaitable_operators;
  nghttp2_submit_goaway(session_.get(), NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_.get()), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  staging_.clear();
  if (collect_output(session_.get(), staging_, write_batch) != 0 || staging_.empty()) co_return;
  asio::steady_timer deadline(ex_, goaway_grace);
  co_await (env_.tls->write(asio::buffer(staging_)) ||
            deadline.async_wait(as_tuple(use_awaitable)));
}

asio::awaitable<void> h2_connection::run() {
  using namespace asio::experimental::awaitable_operators;
  if (!open_session()) {
    local_failure("HTTP/2: could not create a session");
    co_return;
  }
  upstream_ = env_.upstream_h2c
                  ? make_h2c_upstream(*this, *env_.upstream_socket, env_.forwarding)
                  : make_h1_upstream(*this, *env_.upstream_socket, *env_.cfg, env_.forwarding);
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (loops() && upstream_->run());
  const auto state = co_await asio::this_coro::cancellation_state;
  if (state.cancelled() != asio::cancellation_type::none) {
    co_await asio::this_coro::reset_cancellation_state();
    co_await goodbye();
  } else if (!env_.result->aborted) {
    co_await env_.tls->shutdown_send();  // close_notify, then FIN, as at the end of any relay
    error_code ignored;
    env_.client_socket->shutdown(stream_socket::shutdown_send, ignored);
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

}  // namespace

asio::awaitable<void> serve_h2(h2_environment env) {
  h2_connection c(std::move(env));
  co_await c.run();
}

}  // namespace mtlsd::proxy
