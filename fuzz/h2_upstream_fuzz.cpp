// The h2c upstream side (h2_upstream.cpp): mtlsd's nghttp2 client session over the plain
// upstream connection, which reads the upstream's frames and turns them (header, frame_received,
// data_chunk, stream_closed) into responses on the streams of a downstream. Driven as in
// production, over a socket pair: three requests are started on it (stream 1: GET, ended;
// stream 3: POST with a body, ended; stream 5: POST whose body stays open), then a peer on the
// same io_context plays the upstream server: it writes the input, in pieces so that frames split
// across reads, reads and discards what mtlsd writes, and closes. The downstream is an in-memory
// fake that records what the upstream side tells it and, as a client would, takes response bytes
// (response_consumed) so that flow control runs, and closes a stream once its response is in.
// Properties: no memory error; run() returns once the peer closed (no hang: libFuzzer's
// -timeout); a stream gets at most one response head (never after fail(), nor after the client
// closed it), with a status of 200-999 (1xx heads are not passed on), within http_interim_limit
// interim heads and http_head_limit bytes, lower-case names, no pseudo-header and no
// connection-specific field; no body or end before the head; the body only grows while the
// response has not ended, and one that ended has its content-length's bytes; grpc_status at
// most three characters; trailers within http_head_limit, lower-case, no connection-specific
// field; at most one fail(), with a reason; no more request body taken than given;
// upstream_closing() only once broken(); and, once the connection ended, every stream the upstream
// took (and the client did not close) answered in full or failed.
//
// Input: byte 0: bits 0-2 the peer's write size (whole, 1, 2, 7, 9, 64, 1000 or 16393 bytes at a
// time, but at most 64 writes: each costs a turn of both sides); bit 3: the client
// takes response bytes (else never: windows fill); bit 4: stream 3's request carries trailers; bits
// 5-7: one event (none; the client resets stream 1, 3 with CANCEL, or 5 with NO_ERROR; stream 5's
// body goes on and ends; 100 KB more of it, not ended; a stream 7 starts; stop()). Byte 1: the
// event happens after that many calls of the upstream side to the downstream (0: before the peer
// writes). The rest: what the upstream server sends (a server's SETTINGS first, as a real one does,
// then frames for streams 1, 3, 5).
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fuzz_support.hpp"
#include "h2_stream.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "piecewise_peer.hpp"

using namespace mtlsd;
namespace asio = boost::asio;
namespace h2 = mtlsd::proxy::h2;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

enum class event : std::uint8_t {
  none,
  reset_1,
  reset_3,
  close_5,
  end_body_5,
  more_body_5,
  start_7,
  stop,
};

struct input {
  std::size_t piece = 0;  // 0: the whole input at once
  bool consume = false;
  bool request_trailers = false;
  event what = event::none;
  unsigned when = 0;
  std::string_view bytes;
};

// What the upstream side told the downstream about one stream.
struct record {
  int responds = 0;
  int fails = 0;
  bool fields_taken = false;
  bool client_closed = false;       // the fake client closed (reset) it
  bool ended = false;               // response_end was seen
  std::uint64_t body_taken = 0;     // response bytes the client took
  std::uint64_t body_seen = 0;      // response bytes appended by the upstream side so far
  std::uint64_t request_given = 0;  // request body put on the stream
  std::uint64_t request_taken = 0;  // ... and taken by the upstream side
  std::optional<std::uint64_t> content_length;  // the response head's, for a body that has one
};

bool is_lower(std::string_view name) {
  return std::none_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

void check_fields(const proxy::header_list& fields, const char* what_size) {
  std::size_t bytes = 0;
  for (const auto& [name, value] : fields) {
    fuzz::check(!name.empty() && is_lower(name), "a field name passed on is lower-case");
    fuzz::check(name[0] != ':', "no pseudo-header besides :status is passed on");
    fuzz::check(!proxy::is_hop_by_hop(name, value), "no connection-specific field is passed on");
    bytes += name.size() + value.size() + 32;
  }
  fuzz::check(bytes <= proxy::http_head_limit, what_size);
}

// The client's connection, in memory: the h2::downstream the upstream side answers to. It does
// what h2_connection.cpp does with each call as far as the upstream side can see it (a 502 taken
// over by fail(), response bytes taken and acknowledged, the stream closed once answered).
class fake_downstream final : public h2::downstream {
 public:
  fake_downstream(asio::io_context& io, const input& in) : io_(io), in_(in) {}

  void attach(h2::upstream& up) { up_ = &up; }

  h2::stream_ptr add(std::int32_t id, std::string method, std::string path, std::string body,
                     bool end) {
    auto s = std::make_shared<h2::stream>(id, io_.get_executor());
    s->method = std::move(method);
    s->scheme = "https";
    s->authority = "api.example.org";
    s->path = std::move(path);
    s->request_headers = {{"user-agent", "fuzz/1"},
                          {"accept", "*/*"},
                          {"x-forwarded-for", "198.51.100.7"},
                          {"te", "trailers"},
                          {"keep-alive", "timeout=5"}};  // hop-by-hop: dropped
    s->request_body.append(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
    s->request_end = end;
    records_[s.get()].request_given = body.size();
    streams_.push_back(s);
    return s;
  }

  // As the connection does: a new stream goes up unless the upstream takes none.
  void start(const h2::stream_ptr& s) {
    if (up_->broken()) return;
    started_.push_back(s.get());
    up_->start(s);
  }

  void respond(h2::stream& s) override {
    record& r = seen(s);
    fuzz::check(r.fails == 0, "no response head after fail()");
    fuzz::check(r.responds == 0 && !s.response_started, "at most one response head a stream");
    fuzz::check(!s.closed, "no response head for a stream the client closed");
    fuzz::check(s.final_head_received, "a response head passed on is the final one");
    fuzz::check(s.status >= 200 && s.status <= 999, "a response head's status is 200-999");
    fuzz::check(s.upstream_interim_heads <= proxy::http_interim_limit,
                "at most http_interim_limit interim heads before the final one");
    fuzz::check(s.response_body.empty() && r.body_seen == 0, "no response body before its head");
    // Its :status counts too (RFC 9113 6.5.2's accounting, as header() does).
    proxy::header_list counted = s.response_headers;
    counted.emplace_back("xstatus", "200");  // as long as ":status"
    check_fields(counted, "a response head is within http_head_limit");
    for (const auto& [name, value] : s.response_headers)
      if (name == "content-length" && s.status != 204 && s.status != 304) {
        std::uint64_t n = 0;
        std::from_chars(value.data(), value.data() + value.size(), n);
        r.content_length = n;
      }
    fuzz::check(s.grpc_status >= -99 && s.grpc_status <= 999,
                "grpc_status is a number of at most three characters (or -1)");
    ++r.responds;
    s.response_started = true;
    s.response_headers.clear();  // the connection moves them into its HEADERS frame
    if (s.response_end) r.ended = true;
    schedule_take();
  }

  void response_data(h2::stream& s) override {
    record& r = seen(s);
    fuzz::check(!s.closed, "no response data for a stream the client closed");
    fuzz::check(r.responds == 1, "no response body, trailers or end before the head");
    const std::uint64_t total = r.body_taken + s.response_body.size();
    fuzz::check(total >= r.body_seen, "a response body never shrinks");
    fuzz::check(!r.ended || total == r.body_seen, "a response body does not grow after its end");
    fuzz::check(!r.ended || s.response_end, "a response's end stays");
    r.body_seen = total;
    if (s.response_end) {
      r.ended = true;
      // nghttp2 checks DATA against content-length (RFC 9113 8.1.1): the client gets as much.
      fuzz::check(!r.content_length || *r.content_length == total,
                  "a response that ended has its content-length's bytes");
      fuzz::check(s.grpc_status >= -99 && s.grpc_status <= 999,
                  "grpc_status is a number of at most three characters (or -1)");
      // nghttp2 refuses connection-specific fields and upper-case names in trailers too.
      check_fields(s.response_trailers, "response trailers are within http_head_limit");
    }
    schedule_take();
  }

  void request_consumed(h2::stream& s, std::size_t n) override {
    record& r = seen(s);
    r.request_taken += n;
    fuzz::check(r.request_taken <= r.request_given, "no more request body taken than given");
  }

  void request_fields_taken(h2::stream& s) override {
    record& r = seen(s);
    fuzz::check(!r.fields_taken, "a request's fields are taken once");
    fuzz::check(s.request_headers.empty(), "fields taken are gone from the stream");
    r.fields_taken = true;
  }

  void fail(h2::stream& s, std::uint32_t, std::string detail) override {
    record& r = seen(s);
    fuzz::check(!s.closed, "no fail() for a stream the client closed");
    fuzz::check(r.fails == 0, "at most one fail() a stream");
    fuzz::check(!detail.empty(), "fail() says why");
    ++r.fails;
    if (s.response_end && !s.answered_here) return;  // the whole response is in: kept
    if (!s.response_started) {                       // a 502 of mtlsd's own
      s.answered_here = true;
      s.response_started = true;
      s.response_body = {};
      s.response_body.append(reinterpret_cast<const std::uint8_t*>("Bad Gateway\n"), 12);
      s.response_trailers.clear();
      s.response_end = true;
      schedule_take();
      return;
    }
    // A response under way: the client's stream is reset.
    post_close(s, NGHTTP2_INTERNAL_ERROR);
  }

  void upload_unwanted(h2::stream& s) override {
    record& r = seen(s);
    fuzz::check(r.responds == 1 && s.response_end && !s.request_end,
                "upload_unwanted() only after a whole response, with the upload open");
    s.upload_unwanted = true;
    schedule_take();
  }

  void upstream_closing() override {
    seen_call();
    fuzz::check(up_->broken(), "upstream_closing() only once the upstream takes no new stream");
  }

  // More request body from the client (and maybe its end), as connection::data_chunk does.
  void give_body(h2::stream& s, std::size_t n, bool end) {
    if (s.closed) return;
    const std::string body(n, 'b');
    s.request_body.append(reinterpret_cast<const std::uint8_t*>(body.data()), body.size());
    records_[&s].request_given += n;
    if (end) s.request_end = true;
    up_->request_data(s);
  }

  // The client resets (or ends) its stream: as connection::stream_closed does.
  void close(h2::stream& s, std::uint32_t code) {
    if (s.closed) return;
    s.closed = true;
    records_[&s].client_closed = true;
    s.request_body = {};
    up_->cancel(s, code);
  }

  // Once the connection ended: every stream the upstream side took is answered or failed.
  void check_all_answered() {
    for (const h2::stream* s : started_) {
      const record& r = records_[s];
      if (r.client_closed && r.responds == 0 && r.fails == 0) continue;
      fuzz::check(r.fails == 1 || (r.responds == 1 && s->response_end),
                  "every stream taken is answered in full or failed once the connection ended");
    }
  }

  std::vector<h2::stream_ptr>& streams() { return streams_; }
  std::function<void()> on_event;  // run (posted) after the in_.when-th call

 private:
  record& seen(h2::stream& s) {
    seen_call();
    return records_[&s];
  }

  void seen_call() {
    if (++calls_ == in_.when && on_event) asio::post(io_, on_event);
  }

  void post_close(h2::stream& s, std::uint32_t code) {
    asio::post(io_, [this, &s, code] { close(s, code); });
  }

  // The client takes response bytes, after the upstream side's callback returned (the
  // connection takes them on its own session's turn, never from within the upstream's).
  void schedule_take() {
    if (!in_.consume || take_pending_) return;
    take_pending_ = true;
    asio::post(io_, [this] {
      take_pending_ = false;
      for (auto& s : streams_)
        take(*s);
    });
  }

  void take(h2::stream& s) {
    record& r = records_[&s];
    if (s.closed) return;
    if (const std::size_t n = s.response_body.size(); n > 0) {
      s.response_body = {};
      r.body_taken += n;
      up_->response_consumed(s, n);
    }
    // The response is out: the client's stream closes once its request ended too (or the
    // connection asks it to stop sending, upload_unwanted).
    if (s.response_started && s.response_end && (s.request_end || s.upload_unwanted))
      close(s, NGHTTP2_NO_ERROR);
  }

  asio::io_context& io_;
  const input& in_;
  h2::upstream* up_ = nullptr;
  std::vector<h2::stream_ptr> streams_;
  std::vector<const h2::stream*> started_;
  std::unordered_map<const h2::stream*, record> records_;
  unsigned calls_ = 0;
  bool take_pending_ = false;
};

void run_one(const input& in) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
  asio::io_context io;
  const asio::generic::stream_protocol unix_stream(AF_UNIX, SOCK_STREAM);
  proxy::stream_socket ours(io, unix_stream, fds[0]), theirs(io, unix_stream, fds[1]);
  proxy::http_forwarding forwarding;
  forwarding.client_ip = "192.0.2.1";
  forwarding.x_forwarded_for = true;
  forwarding.x_forwarded_proto = true;
  fake_downstream down(io, in);
  const auto up = h2::make_h2c_upstream(down, ours, forwarding);
  down.attach(*up);

  const auto get = down.add(1, "GET", "/v1/items?x=1", "", true);
  const auto post =
      down.add(3, "POST", "/pkg.Service/Method", std::string("\0\0\0\0\5hello", 10), true);
  if (in.request_trailers) post->request_trailers = {{"x-checksum", "abc"}};
  const auto upload = down.add(5, "POST", "/upload", std::string(1000, 'u'), false);
  bool stopped = false;
  down.on_event = [&] {
    switch (in.what) {
      case event::none:
        break;
      case event::reset_1:
        down.close(*get, NGHTTP2_CANCEL);
        break;
      case event::reset_3:
        down.close(*post, NGHTTP2_CANCEL);
        break;
      case event::close_5:
        down.close(*upload, NGHTTP2_NO_ERROR);
        break;
      case event::end_body_5:
        down.give_body(*upload, 10, true);
        break;
      case event::more_body_5:
        down.give_body(*upload, 100 * 1000, false);
        break;
      case event::start_7:
        down.start(down.add(7, "GET", "/late", "", true));
        break;
      case event::stop:
        stopped = true;
        up->stop();
        break;
    }
  };
  for (const auto& s : {get, post, upload})
    down.start(s);
  if (in.when == 0) down.on_event();

  bool run_returned = false;
  asio::co_spawn(io, up->run(), [&](std::exception_ptr e) {
    fuzz::check(!e, "the h2c upstream's run() throws nothing");
    run_returned = true;
    up->stop();  // as the connection does once its own loops end
    boost::system::error_code ignored;
    ours.close(ignored);  // a peer still writing gets an error, as from a closed connection
  });
  asio::co_spawn(io, fuzz::write_in_pieces(theirs, in.bytes, in.piece), asio::detached);
  asio::co_spawn(io, fuzz::drain_until_closed(theirs), asio::detached);
  io.run();
  fuzz::check(run_returned, "run() returns once the peer closed");
  if (!stopped) down.check_all_answered();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  std::signal(SIGPIPE, SIG_IGN);  // the peer may write after mtlsd closed
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  static constexpr std::size_t pieces[] = {0, 1, 2, 7, 9, 64, 1000, 16393};
  constexpr std::size_t max_writes = 64;
  input in;
  in.piece = pieces[data[0] & 7];
  if (in.piece != 0) in.piece = std::max(in.piece, size / max_writes + 1);
  in.consume = (data[0] & 8) != 0;
  in.request_trailers = (data[0] & 16) != 0;
  in.what = static_cast<event>(data[0] >> 5);
  in.when = data[1];
  in.bytes = std::string_view(reinterpret_cast<const char*>(data) + 2, size - 2);
  run_one(in);
  return 0;
}
