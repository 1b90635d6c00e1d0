#pragma once
// What HTTP mode adds to every request it forwards, whatever the protocol on either side:
// X-Forwarded-Client-Cert (xfcc.hpp), X-Forwarded-For (the client's address appended) and
// X-Forwarded-Proto ("https", replacing the client's), and the per-request report that becomes
// an access-log line and the mtlsd_http_* metrics.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::proxy {

// The allow rules a connection's requests are held to (http_forwarding::rules): those it is
// judged by now, which a reload that keeps the connection changes (its re-judging admitted the
// peer by the new ones: session_control::judged_by).
class request_host_rules {
 public:
  // Whether they hold each request to a host: they judge the SNI (allow_list::judges_sni).
  virtual bool hold_host() = 0;
  // Their refusal of the client asking for `host` in the SNI's place; "" when they admit it.
  virtual std::string judge_host(std::string_view host) = 0;

 protected:
  ~request_host_rules() = default;
};

struct http_forwarding {
  xfcc_policy xfcc;
  std::string client_ip;  // appended to X-Forwarded-For ("" = not known: unix socket, "unknown")
  bool x_forwarded_for = false;    // http.x_forwarded_for: append
  bool x_forwarded_proto = false;  // http.x_forwarded_proto: set
  // The client's SNI ("" = none). When `rules` hold requests to a host, every request must be
  // for that one (authority_is_host), or it gets 421 Misdirected Request, as nginx answers a
  // Host that differs from the SNI when it verifies client certificates. Otherwise a client
  // admitted for one name could ask for another that the same upstream serves. Without an SNI
  // (a rule's `not: {sni: ...}` admitted it), each request's host is judged by `rules` in the
  // SNI's place.
  std::string server_name;
  // Asked per request (null: no check); outlives the relay.
  request_host_rules* rules = nullptr;
};

// The 421's reason for a request for `authority` on a connection with policy `f` whose rules hold
// requests to a host: not its server_name, or, without one, refused by its rules' judge_host;
// "" when the request may go up.
std::string misdirected(const http_forwarding& f, std::string_view authority);

// Lower-case name, value: the HTTP/2 form of a header field.
using header_field = std::pair<std::string, std::string>;
using header_list = std::vector<header_field>;

// An HTTP/1.1 response head (a whole head, unfolded) as it goes to the client, into `out`:
// without the hop-by-hop fields of the upstream's connection (RFC 9110 7.6.1: Connection and
// the fields it names, Keep-Alive, Proxy-Connection, TE, Upgrade; not for a 101, whose Upgrade
// and Connection the client needs), then `Connection: <connection>` unless it is empty.
// `unchunked`: without Transfer-Encoding too, for an HTTP/1.0 client (a body that goes without
// its chunk framing, framing_base::unchunk, or no body at all).
void forward_response_head(std::string_view head, std::string_view connection, std::string& out,
                           bool unchunked = false);

// Rewrites `headers` (lower-case names, pseudo-headers excluded) as `f` says.
void apply_forwarding(header_list& headers, const http_forwarding& f);
// The same for an HTTP/1.1 request head: `head`'s bytes (a whole head, unfolded, parsed into
// `seen`) copied into `out` with the client's X-Forwarded-* lines that `f` replaces left out and
// ours added, and without `Expect: 100-continue` (the relay answers it).
void forward_request_head(std::string_view head, const request_head_view& seen,
                          const http_forwarding& f, std::string& out);

// Connection-specific fields (RFC 9113 8.2.2, RFC 9110 7.6.1): never forwarded between
// protocols. `te` is one of them except for the value "trailers" (gRPC sends it).
bool is_hop_by_hop(std::string_view lower_name, std::string_view value);

// Whether a field may travel in a trailer section (RFC 9110 6.5.1: none that a recipient needs
// before the content): not a connection-specific one (is_hop_by_hop's, and TE whatever its
// value), nor Content-Length, Host or Expect, which frame, route or condition the message. `name`
// in any case, `_` read as `-` (same_field_name). One rule for every trailer mtlsd writes anew:
// an HTTP/1.1 or HTTP/2 client's going up, an HTTP/1.1 upstream's going to an HTTP/2 client.
bool kept_in_trailers(std::string_view name);
// The same for a client's request trailers, which also never carry a field named like one mtlsd
// tells the upstream (is_forwarding_field: X-Forwarded-Client-Cert, -For, -Proto).
bool kept_in_request_trailers(std::string_view name);

// One finished request, as the relay saw it.
struct http_request_report {
  std::string method, authority, path;
  bool http2 = false;
  // 0: no response was sent. mtlsd's Trailers-Only answer to a gRPC call: the HTTP status it
  // stands for (502...), not the 200 on the wire.
  int status = 0;
  int grpc_status = -1;  // HTTP/2: the upstream's grpc-status, or mtlsd's own; -1: none came
  std::uint64_t req_bytes = 0, resp_bytes = 0;
  std::int64_t stream_id = 0;
  std::chrono::steady_clock::time_point started;
  std::chrono::system_clock::time_point started_at;
  std::string detail;
};
using http_request_sink = std::function<void(const http_request_report&)>;

}  // namespace mtlsd::proxy
