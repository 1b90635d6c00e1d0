// The client's side of an HTTP/2 connection: the nghttp2 server session's callbacks.
#include "h2_connection_impl.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {

bool connection::open_session() {
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

int connection::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto& c = *static_cast<connection*>(self);
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    c.streams_.emplace(f->hd.stream_id, std::make_shared<stream>(f->hd.stream_id, c.ex_));
  return 0;
}

int connection::on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* n,
                          std::size_t nlen, const std::uint8_t* v, std::size_t vlen, std::uint8_t,
                          void* self) {
  auto& c = *static_cast<connection*>(self);
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

int connection::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto& c = *static_cast<connection*>(self);
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

void connection::start(stream& s) {
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

int connection::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id,
                              const std::uint8_t* data, std::size_t len, void* self) {
  auto& c = *static_cast<connection*>(self);
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

int connection::on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t code,
                                void* self) {
  auto& c = *static_cast<connection*>(self);
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

ssize_t connection::read_response(nghttp2_session* session, std::int32_t id, std::uint8_t* buf,
                                  std::size_t length, std::uint32_t* flags,
                                  nghttp2_data_source* src, void* self) {
  auto& c = *static_cast<connection*>(self);
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

void connection::respond(stream& s) {
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

void connection::response_data(stream& s) {
  s.touch();
  if (s.response_started && s.response_deferred && !s.closed) {
    s.response_deferred = false;
    nghttp2_session_resume_data(session_.get(), s.id);
  }
  out_.signal();
}

void connection::fail(stream& s, std::uint32_t code, std::string detail) {
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

void connection::report(stream& s, std::uint32_t code) {
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

}  // namespace mtlsd::proxy::h2
