#pragma once
// One line per connection, written when it ends (log.access_log).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "mtlsd/log/line_format.hpp"

namespace mtlsd::log {

// What a peer controls (its certificate's subject, issuer and serial, the detail that quotes
// them, the SNI it sent, an HTTP request's method, authority and path) is cut at this many bytes,
// with how many more there were: a line longer than the log's queue is dropped whole
// (log/sink.cpp), so one large subject could otherwise keep its own refusal out of the log, and
// fill the disk fast.
inline constexpr std::size_t access_field_limit = 1024;

// Every field is written on every line (empty, or null in JSON for upstream_connect_ms, when
// unknown), so that a line's shape never depends on how far the connection got. The views point
// into the session's frame or its SSL: the line is formatted before write_access returns.
struct access_record {
  std::uint64_t conn_id = 0;  // unique per process; debug lines of the connection carry it too
  std::string_view start;     // when it was accepted, RFC 3339 with milliseconds, UTC
  std::string_view listener;
  std::string client;    // peer address as seen by the accepting socket
  std::string identity;  // SPIFFE ID, else the certificate subject; empty unless verified
  std::string_view tls_version;
  std::string_view cipher;
  std::string_view sni;       // server mode: what the client asked for; client mode: what we sent
  std::string_view alpn;      // the negotiated protocol
  std::string_view upstream;  // the address actually connected to (resolved)
  std::int64_t upstream_connect_ms = -1;  // -1: no connect attempted (null)
  // The peer's leaf certificate, when one was received (also for refused peers).
  std::string_view peer_subject;
  std::string_view peer_serial;
  std::string_view peer_issuer;
  std::string_view peer_sha256;     // of the DER leaf, lower-case hex
  std::string_view peer_not_after;  // RFC 3339
  std::uint64_t rx_bytes = 0;       // from the accepting side's peer
  std::uint64_t tx_bytes = 0;       // to the accepting side's peer
  std::int64_t duration_ms = 0;
  std::string_view result;       // accepted | rejected | error
  std::string_view reason;       // a rejection reason, or empty
  std::string_view termination;  // mtlsd/termination.hpp
  std::string detail;            // human explanation for a refusal or error
  bool resumed = false;
};

void set_access_log_enabled(bool enabled);
// Whether lines are written: a caller can skip building a record nobody reads.
bool access_log_enabled();
void write_access(const access_record& r);

// HTTP mode: one request on a connection (an HTTP/1.1 exchange or an HTTP/2 stream).
struct http_request_record {
  std::string_view method;
  std::string_view authority;    // :authority, else Host
  std::string_view path;         // :path, or the request target
  std::string_view protocol;     // "HTTP/1.1" | "HTTP/2"
  int status = 0;                // 0: no response was sent (reset, refused, upstream failed)
  int grpc_status = -1;          // gRPC's status from the upstream's trailers; -1: none (null)
  std::uint64_t req_bytes = 0;   // request body bytes received from the client
  std::uint64_t resp_bytes = 0;  // response body bytes sent to the client
  std::int64_t stream_id = 0;    // HTTP/2 stream id; HTTP/1.1: the request's ordinal (1, 2...)
  std::int64_t duration_ms = 0;
  // When the request head arrived (written RFC 3339 with milliseconds).
  std::chrono::system_clock::time_point start;
  std::string_view detail;  // why it failed, when it did
};

// One line with msg "request" per request: the request's fields and its connection's (`conn`:
// who, TLS, upstream, peer certificate — the per-connection line's fields up to
// peer_not_after). The connection's own "access" line still follows when it ends. Renders the
// connection's fields for this line alone (a request_line_cache of its own): for a connection
// with a line or two (a refusal's answers).
void write_request_access(const access_record& conn, const http_request_record& req);

// The connection's fields of its "request" lines, conn_id .. peer_not_after, rendered once
// (capped and escaped) and copied into each line: rendering them on every request was most of
// the line's cost (review: 13.4k of a request's 37.7k user-space instructions). upstream and
// upstream_connect_ms are the upstream connection's, of which an HTTP connection may have
// several: each line gives them, and they are rendered again when they changed.
class request_line_cache {
 public:
  // Whether it holds the fields as a line of `format` writes them (log.format: a reload may
  // change it during a connection).
  bool holds(line_format format) const { return rendered_ && format_ == format; }
  // Renders `conn`'s fields, as its request lines and its own access line have them, in
  // `format`. The views of `conn` need to live only during the call.
  void render(line_format format, const access_record& conn);
  // Renders upstream and upstream_connect_ms again, unless they are those it holds.
  void set_upstream(std::string_view upstream, std::int64_t upstream_connect_ms);

  line_format format() const { return format_; }
  std::string_view text() const { return text_; }

 private:
  std::string text_;                                 // conn_id .. peer_not_after
  std::size_t upstream_at_ = 0, upstream_size_ = 0;  // where upstream's fields are in text_
  std::string upstream_;                             // as rendered there
  std::int64_t upstream_connect_ms_ = -1;
  line_format format_ = line_format::text;
  bool rendered_ = false;
};

// write_request_access with the connection's fields from `conn` (which holds() them in the
// format the line is to have: the line is written in conn.format()), and its upstream ones as
// the connection has them now.
void write_request_access(request_line_cache& conn, std::string_view upstream,
                          std::int64_t upstream_connect_ms, const http_request_record& req);

// The lines both write, without the timestamp (as format_line), for tests: a cache rendered
// once and kept across requests and upstream changes must make the line a fresh rendering
// makes.
std::string format_request_line(line_format format, const access_record& conn,
                                const http_request_record& req);
std::string format_request_line(request_line_cache& conn, std::string_view upstream,
                                std::int64_t upstream_connect_ms, const http_request_record& req);

// mtlsd_access_log_dropped_total: `hook` runs once for every access line dropped because its
// output was too slow (or lost on a write error), on the thread that saw it. Set it before
// workers start; log stays a leaf, so the daemon passes the metric in.
void set_access_drop_hook(std::function<void()> hook);

}  // namespace mtlsd::log
