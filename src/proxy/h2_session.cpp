// The nghttp2 session plumbing both HTTP/2 halves share (h2_session.hpp), and write_signal.
#include "h2_session.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mtlsd::proxy::h2 {
namespace {

session_handler& handler_of(void* user_data) {
  return *static_cast<session_handler*>(user_data);
}

int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  handler_of(self).begin_headers(*f);
  return 0;
}

int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name,
              std::size_t namelen, const std::uint8_t* value, std::size_t valuelen, std::uint8_t,
              void* self) {
  const bool go_on = handler_of(self).header(*f, {reinterpret_cast<const char*>(name), namelen},
                                             {reinterpret_cast<const char*>(value), valuelen});
  return go_on ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  handler_of(self).frame_received(*f);
  return 0;
}

int on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                  std::size_t len, void* self) {
  handler_of(self).data_chunk(session, id, data, len);
  return 0;
}

int on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self) {
  handler_of(self).frame_sent(*f);
  return 0;
}

int on_stream_close(nghttp2_session* session, std::int32_t id, std::uint32_t code, void* self) {
  handler_of(self).stream_closed(session, id, code);
  return 0;
}

// A head or trailers nghttp2 would not send (a header block past max_send_header_block): the
// stream would otherwise wait for them until stream_idle_timeout, its body possibly sent with
// END_STREAM held back for the trailers. nghttp2 closes a stream whose request HEADERS failed
// itself; any other HEADERS, a response's or trailers either way, is reset here.
int on_frame_not_send(nghttp2_session* session, const nghttp2_frame* f, int lib_error, void* self) {
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat != NGHTTP2_HCAT_REQUEST)
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
  handler_of(self).frame_not_sent(*f, lib_error);
  return 0;
}

// Fills one DATA frame from the stream's outgoing body; at its end, EOF (and the trailers in a
// HEADERS frame of their own); with nothing buffered yet, DEFERRED until resume_data.
ssize_t read_body(nghttp2_session* session, std::int32_t id, std::uint8_t* buf, std::size_t length,
                  std::uint32_t* flags, nghttp2_data_source* src, void* self) {
  auto& handler = handler_of(self);
  auto& s = *static_cast<stream*>(src->ptr);
  const outgoing_body body = handler.outgoing(s);
  const std::size_t n = body.bytes.take(buf, length);
  if (n > 0) handler.body_sent(s, n);
  if (body.bytes.empty() && body.end) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!body.trailers.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const auto nv = to_nv(body.trailers);
      // Not submitted, the stream would never end: nghttp2 resets it instead.
      if (nghttp2_submit_trailer(session, id, nv.data(), nv.size()) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    body.deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

// The options both sides share; nullptr when nghttp2 could not make them.
nghttp2_option* session_options(std::size_t max_send_header_block) {
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) return nullptr;
  // WINDOW_UPDATE by hand: the connection's window for what a stream buffered, a stream's for
  // what the other side took (h2_stream.hpp): backpressure per stream.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // gRPC sends grpc-message and metadata values with whitespace at an end (or empty) as
  // they are; RFC 9113 8.2.1 validation would reset those streams (curl and Apache's
  // mod_proxy_http2 turn it off too). CR, LF and NUL are still refused.
  nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(opt, 1);
  if (max_send_header_block != 0)
    nghttp2_option_set_max_send_header_block_length(opt, max_send_header_block);
  return opt;
}

}  // namespace

session_ptr make_session(session_side side, session_handler& handler,
                         std::span<const nghttp2_settings_entry> settings,
                         std::size_t max_send_header_block) {
  nghttp2_session_callbacks* cb = nullptr;
  if (nghttp2_session_callbacks_new(&cb) != 0) return nullptr;
  if (side == session_side::server)
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
  nghttp2_option* opt = session_options(max_send_header_block);
  nghttp2_session* raw = nullptr;
  const int rv = !opt ? -1
                 : side == session_side::server
                     ? nghttp2_session_server_new2(&raw, cb, &handler, opt)
                     : nghttp2_session_client_new2(&raw, cb, &handler, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  if (rv != 0) return nullptr;
  session_ptr session(raw);
  nghttp2_submit_settings(raw, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(raw, NGHTTP2_FLAG_NONE, 0, connection_window);
  return session;
}

nghttp2_data_provider body_provider(stream& s) {
  nghttp2_data_provider provider;
  provider.source.ptr = &s;
  provider.read_callback = read_body;
  return provider;
}

std::vector<nghttp2_nv> to_nv(const header_list& headers) {
  std::vector<nghttp2_nv> out;
  out.reserve(headers.size());
  for (const auto& [name, value] : headers)
    out.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                   reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                   value.size(), NGHTTP2_NV_FLAG_NONE});
  return out;
}

std::string goaway_debug(const nghttp2_goaway& g) {
  if (g.opaque_data_len > 0)
    return std::string(reinterpret_cast<const char*>(g.opaque_data), g.opaque_data_len);
  if (g.error_code == NGHTTP2_COMPRESSION_ERROR)
    return "a header block that does not decode (HPACK)";
  return {};
}

int collect_output(nghttp2_session* session, std::string& out, std::size_t limit) {
  while (out.size() < limit) {
    const std::uint8_t* data = nullptr;
    const auto n = nghttp2_session_mem_send(session, &data);
    if (n < 0) return static_cast<int>(n);
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return 0;
}

asio::awaitable<void> write_signal::wait() {
  if (pending_) co_return;
  co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace mtlsd::proxy::h2
