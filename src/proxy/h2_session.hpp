#pragma once
// Private to h2_*.cpp: the nghttp2 session plumbing both HTTP/2 halves share — the client's
// side (h2_connection*.cpp, a server session over TLS) and the h2c upstream (h2_upstream.cpp, a
// client session over plain TCP). Each half implements session_handler; make_session wires
// nghttp2's C callbacks to it, and body_provider feeds one direction of a stream's body into
// DATA frames, trailers and all.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "h2_stream.hpp"

namespace mtlsd::proxy::h2 {

constexpr std::size_t write_batch = 64 * 1024;  // bytes of frames gathered per write
// Connection-level receive window: what all streams together may have in flight towards us.
// Given back as soon as a stream buffered the bytes (h2_stream.hpp), it holds nothing for long:
// large, so that it limits no stream's throughput; memory is bounded by the stream windows.
constexpr std::int32_t connection_window = 1 << 20;

// nghttp2 sessions are freed by nghttp2_session_del.
struct session_deleter {
  void operator()(nghttp2_session* s) const { nghttp2_session_del(s); }
};
using session_ptr = std::unique_ptr<nghttp2_session, session_deleter>;

// One direction of a stream's body as DATA frames take it: the bytes, whether more will come,
// the trailers sent after it, and the flag set while nghttp2 waits for more (resume_data).
struct outgoing_body {
  byte_queue& bytes;
  const bool& end;
  const header_list& trailers;
  bool& deferred;
};

// What one session's callbacks call (nghttp2's user_data is the handler). None of them fails
// the session: nghttp2 gets 0 back (a nonzero value would be its fatal error), or, from header()
// refusing a stream, NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE, which resets that stream alone.
class session_handler {
 public:
  virtual ~session_handler() = default;
  // A HEADERS frame begins, before its first field (server sessions only: requests open streams).
  virtual void begin_headers(const nghttp2_frame&) {}
  // One field of a header block. False: reset the stream (RST_STREAM INTERNAL_ERROR); nghttp2
  // then decodes the rest of the block only to keep its HPACK table, without calling back.
  virtual bool header(const nghttp2_frame& f, std::string_view name, std::string_view value) = 0;
  virtual void frame_received(const nghttp2_frame& f) = 0;
  virtual void data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                          std::size_t len) = 0;
  virtual void stream_closed(nghttp2_session* session, std::int32_t id, std::uint32_t code) = 0;
  // A frame went out (after nghttp2 wrote it to its output buffer).
  virtual void frame_sent(const nghttp2_frame&) {}
  // A frame nghttp2 would not send (`lib_error`: why, an NGHTTP2_ERR_*), before it closes the
  // stream when that was a request's HEADERS.
  virtual void frame_not_sent(const nghttp2_frame&, int /*lib_error*/) {}
  // The body this side sends on `s`, and the accounting once `n` bytes of it went into a frame.
  virtual outgoing_body outgoing(stream& s) = 0;
  virtual void body_sent(stream& s, std::size_t n) = 0;
};

enum class session_side { server, client };

// A session of `side` whose callbacks call `handler`, with the options both halves share
// (flow control acknowledged by hand, gRPC's whitespace accepted), `settings` submitted and
// the connection window opened to connection_window; null when nghttp2 could not make one.
// `max_send_header_block`: the largest header block this side sends (0: nghttp2's default).
session_ptr make_session(session_side side, session_handler& handler,
                         std::span<const nghttp2_settings_entry> settings,
                         std::size_t max_send_header_block = 0);

// The data provider that sends handler.outgoing(s) on the stream (the session's handler).
nghttp2_data_provider body_provider(stream& s);

// Header fields as nghttp2 takes them (pointing into `headers`, which must outlive the call).
std::vector<nghttp2_nv> to_nv(const header_list& headers);

// What a GOAWAY's debug data says, for a failure's detail: the text nghttp2 put there, or
// for a COMPRESSION_ERROR without any (nghttp2 gives none), that a header block did not decode;
// "" otherwise.
std::string goaway_debug(const nghttp2_goaway& g);

// Appends what `session` has to send to `out`, up to about `limit` bytes: 0, or nghttp2's
// (fatal) error.
int collect_output(nghttp2_session* session, std::string& out, std::size_t limit);

}  // namespace mtlsd::proxy::h2
