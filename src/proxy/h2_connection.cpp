// The client's side of an HTTP/2 connection: the nghttp2 server session's handler.
#include "h2_connection_impl.hpp"

#include <boost/beast/core/string.hpp>

#include "grpc_reply.hpp"

#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {

namespace beast = boost::beast;

bool connection::open_session() {
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
       static_cast<std::uint32_t>(env_.cfg->http.max_concurrent_streams)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, http_head_limit},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, NGHTTP2_INITIAL_WINDOW_SIZE}};
  session_ = make_session(session_side::server, *this, settings, 2 * http_head_limit);
  return session_ != nullptr;
}

void connection::begin_headers(const nghttp2_frame& f) {
  if (f.hd.type == NGHTTP2_HEADERS && f.headers.cat == NGHTTP2_HCAT_REQUEST) {
    streams_.emplace(f.hd.stream_id, std::make_shared<stream>(f.hd.stream_id, ex_));
    ++streams_opened_;
  }
}

namespace {
const std::string over_fields_budget = "request fields held by the connection's streams over " +
                                       std::to_string(held_fields_budget) + " bytes decoded";

// mtlsd's own answer on `s` (then connection::respond): `status` with `body` (text/plain), or,
// to a gRPC call, a Trailers-Only response (grpc_reply.hpp) with the status gRPC reads from
// `status` and `reason` as its grpc-message. Its line and count keep `status` (a 502 is a 5xx
// either way: an upstream outage shows in code_class for gRPC callers too) with that grpc_status.
void answer_here(stream& s, int status, std::string_view body, std::string_view reason) {
  s.answered_here = true;
  s.response_body = {};
  s.response_trailers.clear();
  s.response_end = true;
  s.status = status;
  if (s.grpc) {
    s.trailers_only_reply = true;
    s.grpc_status = grpc_status_of_http(status);
    s.response_headers = grpc_reply_fields(s.grpc_status, reason);
    return;
  }
  s.grpc_status = -1;
  s.response_headers = {{"content-type", "text/plain"}};
  s.response_body.append(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
}
}  // namespace

bool connection::header(const nghttp2_frame& f, std::string_view name_in,
                        std::string_view value_in) {
  stream* s = find(f.hd.stream_id);
  if (!s || f.hd.type != NGHTTP2_HEADERS) return true;
  // Counted before anything is copied. Past the limit the stream gets a 431 once its block
  // ends, and nothing more of it is kept. Past twice the limit it is reset at once: HPACK lets
  // one byte name a field already in the table (a 4 KiB one, say), so a block of 144 KiB could
  // decode to gigabytes, each field checked by nghttp2 before this sees it (review: 1.2 µs of
  // CPU per byte received). Reset, the rest of the block is only decoded, never checked.
  // The trailers are a header list of their own, with a limit of their own.
  const bool trailers = f.headers.cat != NGHTTP2_HCAT_REQUEST;
  std::size_t& counted = trailers ? s->trailer_bytes : s->header_bytes;
  const std::size_t field_size = name_in.size() + value_in.size() + 32;  // RFC 9113 6.5.2
  counted += field_size;
  if (counted > 2 * http_head_limit) {
    s->detail =
        "request header list over " + std::to_string(2 * http_head_limit) + " bytes decoded: reset";
    return false;
  }
  if (trailers && counted > http_head_limit) {
    // No 431 can answer them (the request is on its way up): reset, rather than pass on a
    // trailer section cut short as if it were whole.
    s->detail = "request trailers over " + std::to_string(http_head_limit) + " bytes: reset";
    return false;
  }
  if (counted > http_head_limit) s->head_too_large = true;
  // Seen past the limit too: the 431 answers a gRPC call as one.
  if (!trailers && name_in == "content-type") s->grpc = is_grpc_content_type(value_in);
  if (s->head_too_large || s->over_fields_budget) return true;
  if (held_fields_ + field_size > held_fields_budget) {
    s->detail = over_fields_budget + (trailers ? ": trailers reset" : ": refused");
    if (trailers) return false;
    s->over_fields_budget = true;  // refused once its head ends (start)
    return true;
  }
  held_fields_ += field_size;
  s->held_fields += field_size;
  std::string name(name_in);
  std::string value(value_in);
  if (f.headers.cat != NGHTTP2_HCAT_REQUEST) {
    // Trailers pass to an h2c upstream, but none that could pass for what mtlsd tells it.
    if (!is_forwarding_field(name))
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
  return true;
}

void connection::frame_received(const nghttp2_frame& f) {
  if (f.hd.type == NGHTTP2_GOAWAY) return client_goaway(f.goaway);
  if (f.hd.type == NGHTTP2_RST_STREAM) {
    ++resets_received_;
    return client_reset(f.hd.stream_id);
  }
  if (f.hd.type != NGHTTP2_HEADERS && f.hd.type != NGHTTP2_DATA) return;
  stream* s = find(f.hd.stream_id);
  if (!s) return;
  s->touch();
  const bool end = (f.hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (end) s->request_end = true;
  if (f.hd.type == NGHTTP2_HEADERS && f.headers.cat == NGHTTP2_HCAT_REQUEST) {
    last_whole_head_ = s->id;  // new streams come in increasing order (RFC 9113 5.1.1)
    start(*s);
  } else if (end && upstream_)
    upstream_->request_data(*s);
}

void connection::start(stream& s) {
  // The reason, about the client's own request, is its gRPC message too; but a 421's, which may
  // quote the listener's rules.
  auto refuse = [&](int status, std::string why) {
    s.detail = std::move(why);
    answer_here(s, status, std::to_string(status) + "\n",
                status == 421 ? std::string_view("misdirected request") : s.detail);
    respond(s);
  };
  if (s.over_fields_budget) return refuse_stream(s, s.detail);
  if (s.head_too_large)
    return refuse(431,
                  "request header list larger than " + std::to_string(http_head_limit) + " bytes");
  if (s.method == "CONNECT") return refuse(405, "CONNECT is not relayed");
  // nghttp2 wants a :path starting with "/" only when :scheme is http or https: with another
  // scheme, ":path http://other/x" would reach an HTTP/1.1 upstream as an absolute-form target
  // naming another host than :authority (RFC 9113 8.3.1 allows only these forms here).
  if (!beast::iequals(s.scheme, "http") && !beast::iequals(s.scheme, "https"))
    return refuse(400, ":scheme is neither http nor https");
  if (s.path.empty() || (s.path[0] != '/' && !(s.path == "*" && s.method == "OPTIONS")))
    return refuse(400, ":path is neither a path nor * for OPTIONS");
  // The same rules as an HTTP/1.1 request's (judge_request): nghttp2's own checks let "#" into
  // a path and "@", "%" or "," into an authority, which then goes up as Host.
  if (s.path.find('#') != std::string::npos) return refuse(400, "a fragment in :path");
  if (!s.authority.empty() && !valid_authority(s.authority))
    return refuse(400, "an invalid :authority or Host");
  if (auto why = misdirected(env_.forwarding, s.authority); !why.empty())
    return refuse(421, std::move(why));
  // As for HTTP/1.1 clients (http_head.cpp): an expectation mtlsd does not meet is refused, not
  // passed up for the upstream to meet or not behind mtlsd's back.
  bool continue_100 = false;
  for (const auto& [name, value] : s.request_headers)
    if (name == "expect") {
      const auto e = read_expect(value);
      if (e.other) return refuse(417, "an expectation other than 100-continue");
      continue_100 = continue_100 || e.continue_100;
    }
  if (upstream_->broken()) {
    if (upstream_closing_) goaway_for_upstream();  // the client goes on: tell it now
    return refuse_stream(s, "upstream: the h2c connection takes no new stream");
  }
  // ... and 100-continue is met here and not passed up (review: the upstream's 100 was dropped
  // as any 1xx is, and the client waited for it until its own timeout).
  std::erase_if(s.request_headers, [](const auto& h) { return h.first == "expect"; });
  if (continue_100 && !s.request_end) {
    const header_list interim = {{":status", "100"}};
    const auto nv = to_nv(interim);
    nghttp2_submit_headers(session_.get(), NGHTTP2_FLAG_NONE, s.id, nullptr, nv.data(), nv.size(),
                           nullptr);
    out_.signal();
  }
  upstream_->start(streams_.at(s.id));
}

void connection::data_chunk(nghttp2_session* session, std::int32_t id, const std::uint8_t* data,
                            std::size_t len) {
  stream* s = find(id);
  if (!s || s->closed || s->answered_here || s->upload_unwanted) {
    nghttp2_session_consume(session, id, len);  // nobody will take it: both windows, now
    return;
  }
  s->touch();
  s->request_body.append(data, len);
  // Buffered: the connection's window has the bytes back at once, the stream's once the upstream
  // takes them (h2_stream.hpp). A stream waiting for an upstream place then holds only its own.
  nghttp2_session_consume_connection(session, len);
  s->req_bytes += len;
  upstream_->request_data(*s);
}

void connection::stream_closed(nghttp2_session*, std::int32_t id, std::uint32_t code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  stream_ptr s = std::move(it->second);
  streams_.erase(it);
  held_fields_ -= s->held_fields;
  s->closed = true;
  s->request_body = {};  // the connection's window had it back when it came (data_chunk)
  if (upstream_) upstream_->cancel(*s, code);
  report(*s, code);
  if (upstream_closing_ && streams_.empty()) goaway_for_upstream();
}

void connection::client_reset(std::int32_t id) {
  // Called before nghttp2 closes the stream (stream_closed), so it is still there to judge.
  const stream* s = find(id);
  if (rapid_reset_ || !s || s->response_started ||
      steady::now() - s->started >= premature_reset_lifetime)
    return;
  const auto limit = static_cast<std::uint64_t>(env_.cfg->http.max_premature_resets);
  if (++premature_resets_ < limit || limit == 0 || premature_resets_ <= upstream_answered_) return;
  rapid_reset_ = true;
  env_.result->rate_limited = true;
  // GOAWAY naming the last stream taken; nghttp2 takes no new stream from here on, and the
  // reader reads no more (a flood fills the socket: the GOAWAY would wait behind it).
  nghttp2_session_terminate_session(session_.get(), NGHTTP2_ENHANCE_YOUR_CALM);
  local_failure("HTTP/2: " + std::to_string(premature_resets_) + " of the client's " +
                std::to_string(streams_opened_) +
                " streams were reset (by the client, or over its frames) before their "
                "responses began, the upstream answered " +
                std::to_string(upstream_answered_) + " (rapid reset): GOAWAY ENHANCE_YOUR_CALM");
  out_.signal();
}

// RFC 9113 8.1: a server that sent a complete response before the request ended may ask the
// client to stop sending with RST_STREAM(NO_ERROR). mtlsd passes on an upstream's such request
// (it would otherwise wait for body nobody takes, holding flow-control window), and makes it
// itself after answering a request itself (431, 405, 502), as nghttpd does. Only once the
// response's END_STREAM went out: a reset before it would discard the response.
void connection::stop_upload_if_done(stream& s) {
  if (s.closed || s.request_end || !s.response_sent) return;
  if (!s.answered_here && !s.upload_unwanted) return;
  reset_here(s, NGHTTP2_NO_ERROR);
}

void connection::reset_here(stream& s, std::uint32_t code) {
  s.reset_here = true;
  nghttp2_submit_rst_stream(session_.get(), NGHTTP2_FLAG_NONE, s.id, code);
  out_.signal();
}

void connection::upload_unwanted(stream& s) {
  s.upload_unwanted = true;
  // Nobody takes the body any more: what is buffered (the connection's window has it back
  // already) and what still comes (data_chunk) is acknowledged at once.
  if (!s.request_body.empty())
    nghttp2_session_consume_stream(session_.get(), s.id, s.request_body.size());
  s.request_body = {};
  stop_upload_if_done(s);
}

void connection::frame_sent(const nghttp2_frame& f) {
  if (f.hd.type == NGHTTP2_GOAWAY) return goaway_sent(f.goaway);
  // An RST_STREAM mtlsd did not ask for: nghttp2 reset the stream over the client's frames
  // (called before nghttp2 closes the stream, so it is still there to judge).
  if (f.hd.type == NGHTTP2_RST_STREAM) {
    if (const stream* s = find(f.hd.stream_id); s && !s->reset_here) client_reset(s->id);
    return;
  }
  if (f.hd.type != NGHTTP2_HEADERS && f.hd.type != NGHTTP2_DATA) return;
  if (!(f.hd.flags & NGHTTP2_FLAG_END_STREAM)) return;
  stream* s = find(f.hd.stream_id);
  if (!s) return;
  s->response_sent = true;
  stop_upload_if_done(*s);
}

void connection::body_sent(stream& s, std::size_t n) {
  s.resp_bytes += n;
  s.touch();
  upstream_->response_consumed(s, n);
}

void connection::respond(stream& s) {
  if (s.closed || s.response_started) return;
  s.response_started = true;
  if (!s.answered_here) ++upstream_answered_;
  header_list head;
  head.reserve(s.response_headers.size() + 1);
  // A Trailers-Only answer to a gRPC call is a 200 on the wire; s.status is what it stands for.
  head.emplace_back(":status", s.trailers_only_reply ? "200" : std::to_string(s.status));
  for (auto& h : s.response_headers)
    if (!is_hop_by_hop(h.first, h.second)) head.push_back(std::move(h));
  s.response_headers.clear();
  const auto nv = to_nv(head);
  const bool no_body = s.response_end && s.response_body.empty() && s.response_trailers.empty();
  const nghttp2_data_provider body = body_provider(s);
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
  if (s.upstream_done()) return;  // closed, or answered here already (stream_idle)
  if (s.response_end && !s.answered_here) {
    // The whole response is in (the upstream reset its stream or lost its connection after
    // it, with the upload still open): the client gets all of it, then is asked to stop
    // sending, rather than a reset that would discard what is still queued.
    upload_unwanted(s);
    return;
  }
  // The upstream refused the stream (RFC 9113 8.7: REFUSED_STREAM, or a stream above its
  // GOAWAY's last one): it did not process the request, so neither is it answered with a 502
  // (which a client must not retry), but refused as it was.
  if (code == NGHTTP2_REFUSED_STREAM && !s.response_started)
    return refuse_stream(s, std::move(detail));
  if (s.detail.empty()) s.detail = std::move(detail);
  if (!s.response_started) {
    answer_here(s, 502, "Bad Gateway\n", upstream_failure_message(s.detail));
    respond(s);
    return;
  }
  reset_here(s, code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_INTERNAL_ERROR} : code);
}

void connection::stream_idle(stream& s, std::string detail) {
  s.detail = std::move(detail);
  if (s.response_started) {
    s.last_activity = steady::time_point::max() - std::chrono::hours(24 * 365);  // reset once
    return reset_here(s, NGHTTP2_CANCEL);
  }
  // Not answered yet, answered here, as nginx's and Envoy's timeouts are: 408 while the client
  // holds back the rest of its request, 504 while the upstream holds back its answer (or the
  // body it was sent). The upstream side stops now (answered_here: upstream_done). A HEADERS
  // frame alone, which flow control does not hold: a body could wait for good behind a client's
  // zero window, its stream (and so the connection) never idle (review). Should even that not
  // go out, the next timeout resets the stream.
  const bool client_waited_for = !s.request_end && s.request_body.empty();
  if (!client_waited_for && !s.reached_upstream) {
    // It waited for the upstream (a place among max_upstream_connections_per_client, a stream of
    // the h2c upstream's), which never saw it: refused, so that the client may send it again,
    // not a 504 it may not retry.
    s.detail += ": the request never reached the upstream, refused";
    refuse_stream(s, {});
    upstream_->cancel(s, NGHTTP2_CANCEL);  // it leaves the queue (or nghttp2's, reset)
    return;
  }
  const int status = client_waited_for ? 408 : 504;
  upstream_->cancel(s, NGHTTP2_CANCEL);  // first: an h2c upstream's drops the response body
  answer_here(s, status, {}, s.detail);
  s.touch();
  respond(s);
}

void connection::refuse_stream(stream& s, std::string detail) {
  if (s.detail.empty()) s.detail = std::move(detail);
  s.answered_here = true;  // the upstream takes none of its body
  reset_here(s, NGHTTP2_REFUSED_STREAM);
}

void connection::report(stream& s, std::uint32_t code) {
  if (!env_.sink) return;
  http_request_report r;
  r.method = s.method;
  r.authority = s.authority;
  r.path = s.path;
  r.http2 = true;
  r.status = s.response_started ? s.status : 0;
  r.grpc_status = s.response_started ? s.grpc_status : -1;
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
