// h2c towards the upstream: one nghttp2 client session over the plain upstream connection,
// carrying every stream of one client connection. Headers, DATA, trailers and RST_STREAM pass
// through per stream; each side's flow control is acknowledged only as the other side takes the
// bytes (h2_stream.hpp).
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <unordered_map>

#include "h2_stream.hpp"

namespace mtlsd::proxy::h2 {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

constexpr std::size_t write_batch = 64 * 1024;
constexpr std::int32_t connection_window = 1 << 20;

class h2c_upstream final : public upstream {
 public:
  h2c_upstream(downstream& down, stream_socket& sock, const http_forwarding& fwd)
      : down_(down), sock_(sock), forwarding_(fwd), out_(sock.get_executor()) {}

  bool open_session();
  void start(stream_ptr s) override;
  void request_data(stream& s) override {
    if (s.upstream_id >= 0 && s.request_deferred) {
      s.request_deferred = false;
      nghttp2_session_resume_data(session_.get(), s.upstream_id);
    }
    out_.signal();
  }
  void response_consumed(stream& s, std::size_t n) override {
    // Also after the upstream's stream closed: the connection's window still counts it.
    nghttp2_session_consume(session_.get(), s.upstream_id, n);
    out_.signal();
  }
  void cancel(stream& s, std::uint32_t code) override;
  asio::awaitable<void> run() override;
  void stop() override {
    stopped_ = true;
    out_.signal();
    error_code ignored;
    sock_.cancel(ignored);
  }
  bool broken() const override { return broken_; }

 private:
  asio::awaitable<void> reader();
  asio::awaitable<void> writer();
  void lose_connection(const std::string& why);
  stream* find(std::int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  static int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, std::uint8_t, std::int32_t id,
                           const std::uint8_t* data, std::size_t len, void* self);
  static int on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t code, void* self);
  static ssize_t read_request(nghttp2_session*, std::int32_t id, std::uint8_t* buf,
                              std::size_t length, std::uint32_t* flags, nghttp2_data_source* src,
                              void* self);

  downstream& down_;
  stream_socket& sock_;
  const http_forwarding& forwarding_;
  session_ptr session_;
  std::unordered_map<std::int32_t, stream_ptr> streams_;  // by the upstream's stream id
  write_signal out_;
  std::array<std::uint8_t, 16 * 1024> read_buffer_;
  std::string staging_;
  bool stopped_ = false;
  bool broken_ = false;
};

bool h2c_upstream::open_session() {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return false;
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // response_consumed acknowledges
  // gRPC sends grpc-message and metadata values with whitespace at an end (or empty) as
  // they are; RFC 9113 8.2.1 validation would reset those streams (curl and Apache's
  // mod_proxy_http2 turn it off too). CR, LF and NUL are still refused.
  nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(opt, 1);
  nghttp2_session* raw = nullptr;
  const int rv = nghttp2_session_client_new2(&raw, cb, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return false;
  session_.reset(raw);
  const nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(raw, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(raw, NGHTTP2_FLAG_NONE, 0, connection_window);
  return true;
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
  apply_forwarding(fields, forwarding_);
  for (auto& h : fields)
    head.push_back(std::move(h));
  const auto nv = to_nv(head);
  const bool no_body = s->request_end && s->request_body.empty() && s->request_trailers.empty();
  nghttp2_data_provider body;
  body.source.ptr = s.get();
  body.read_callback = read_request;
  const std::int32_t id = nghttp2_submit_request(session_.get(), nullptr, nv.data(), nv.size(),
                                                 no_body ? nullptr : &body, nullptr);
  if (id < 0) {
    down_.fail(*s, NGHTTP2_INTERNAL_ERROR,
               std::string("upstream: submitting the request: ") + nghttp2_strerror(id));
    return;
  }
  s->upstream_id = id;
  streams_.emplace(id, std::move(s));
  out_.signal();
}

ssize_t h2c_upstream::read_request(nghttp2_session* session, std::int32_t id, std::uint8_t* buf,
                                   std::size_t length, std::uint32_t* flags,
                                   nghttp2_data_source* src, void* self) {
  auto& u = *static_cast<h2c_upstream*>(self);
  auto& s = *static_cast<stream*>(src->ptr);
  const std::size_t n = s.request_body.take(buf, length);
  if (n > 0) {
    s.touch();
    u.down_.request_consumed(s, n);
  }
  if (s.request_body.empty() && s.request_end) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!s.request_trailers.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const auto nv = to_nv(s.request_trailers);
      nghttp2_submit_trailer(session, id, nv.data(), nv.size());
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    s.request_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void h2c_upstream::cancel(stream& s, std::uint32_t code) {
  // Response bytes the client will never take still count against the connection's window.
  if (s.upstream_id >= 0 && !s.response_body.empty())
    nghttp2_session_consume(session_.get(), s.upstream_id, s.response_body.size());
  s.response_body = {};
  if (s.upstream_id < 0 || !streams_.count(s.upstream_id)) return;
  // The client reset its stream, or its stream ended before the upstream's: pass it on.
  nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.upstream_id,
                            code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_CANCEL} : code);
  out_.signal();
}

int h2c_upstream::on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n,
                            std::size_t nlen, const std::uint8_t* v, std::size_t vlen, std::uint8_t,
                            void* self) {
  auto& u = *static_cast<h2c_upstream*>(self);
  stream* s = u.find(f->hd.stream_id);
  if (!s || f->hd.type != NGHTTP2_HEADERS) return 0;
  std::string_view name(reinterpret_cast<const char*>(n), nlen);
  std::string value(reinterpret_cast<const char*>(v), vlen);
  // Until a final (non-1xx) status arrived, fields belong to a response head; after, to the
  // trailers.
  const bool final_head_seen = s->status >= 200;
  if (final_head_seen && f->headers.cat != NGHTTP2_HCAT_RESPONSE) {
    s->response_trailers.emplace_back(std::string(name), std::move(value));
  } else if (name == ":status") {
    int status = 0;
    std::from_chars(value.data(), value.data() + value.size(), status);
    s->status = status;
    s->response_headers.clear();
  } else if (!is_hop_by_hop(name, value)) {
    s->response_headers.emplace_back(std::string(name), std::move(value));
  }
  return 0;
}

int h2c_upstream::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto& u = *static_cast<h2c_upstream*>(self);
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  stream* s = u.find(f->hd.stream_id);
  if (!s || s->closed) return 0;
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (f->hd.type == NGHTTP2_HEADERS && !s->response_started) {
    if (s->status < 200) {  // 100, 103: the final head follows; not passed on
      s->status = 0;
      s->response_headers.clear();
      return 0;
    }
    if (end) s->response_end = true;
    u.down_.respond(*s);
    return 0;
  }
  if (end) {
    s->response_end = true;
    u.down_.response_data(*s);
  }
  return 0;
}

int h2c_upstream::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                                const std::uint8_t* data, std::size_t len, void* self) {
  auto& u = *static_cast<h2c_upstream*>(self);
  stream* s = u.find(id);
  if (!s || s->closed) {
    nghttp2_session_consume(session, id, len);
    return 0;
  }
  s->response_body.append(data, len);
  u.down_.response_data(*s);
  return 0;
}

int h2c_upstream::on_stream_close(nghttp2_session*, std::int32_t id, std::uint32_t code,
                                  void* self) {
  auto& u = *static_cast<h2c_upstream*>(self);
  auto it = u.streams_.find(id);
  if (it == u.streams_.end()) return 0;
  stream_ptr s = std::move(it->second);
  u.streams_.erase(it);
  if (s->closed) return 0;
  if (code != NGHTTP2_NO_ERROR || !s->response_end)
    u.down_.fail(*s, code,
                 std::string("upstream reset the stream: ") + nghttp2_http2_strerror(code));
  return 0;
}

void h2c_upstream::lose_connection(const std::string& why) {
  broken_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams)
    if (!s->closed) down_.fail(*s, NGHTTP2_INTERNAL_ERROR, "upstream: " + why);
}

asio::awaitable<void> h2c_upstream::reader() {
  co_await asio::this_coro::throw_if_cancelled(false);
  while (!stopped_) {
    auto [ec, n] =
        co_await sock_.async_read_some(asio::buffer(read_buffer_), as_tuple(use_awaitable));
    if (stopped_) break;
    if (ec) {
      lose_connection(ec == asio::error::eof ? std::string("the h2c connection closed")
                                             : "reading: " + ec.message());
      break;
    }
    const auto rv = nghttp2_session_mem_recv(session_.get(), read_buffer_.data(), n);
    out_.signal();
    if (rv < 0) {
      lose_connection(std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(rv)));
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
      co_await out_.wait();
      continue;
    }
    auto [ec, n] =
        co_await asio::async_write(sock_, asio::buffer(staging_), as_tuple(use_awaitable));
    if (ec) {
      if (!stopped_) lose_connection("writing: " + ec.message());
      break;
    }
  }
  error_code ignored;
  sock_.cancel(ignored);  // the reader stops too
}

asio::awaitable<void> h2c_upstream::run() {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await (reader() && writer());
  error_code ignored;
  sock_.shutdown(stream_socket::shutdown_send, ignored);
}

}  // namespace

std::unique_ptr<upstream> make_h2c_upstream(downstream& down, stream_socket& sock,
                                            const http_forwarding& forwarding) {
  auto u = std::make_unique<h2c_upstream>(down, sock, forwarding);
  if (!u->open_session()) throw std::runtime_error("nghttp2: could not create a client session");
  return u;
}

}  // namespace mtlsd::proxy::h2
