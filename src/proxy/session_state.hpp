#pragma once
// Private to the proxy's connection code (session*.cpp, and listener.cpp, http_serve.cpp and the
// refusals that answer for a session): what one connection knows and how it ended. session.cpp runs
// the phases in order, session_watchdog.cpp the watchdog beside them; session_judge.cpp holds the
// steps between handshake and upstream, session_upstream.cpp the upstream side; session_report.cpp
// turns the end into one access-log line and the metric updates; session_trace.cpp writes the debug
// lines.
#include <atomic>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/proxy/admission.hpp"
#include "mtlsd/proxy/fd_gate.hpp"
#include "mtlsd/proxy/proxy_protocol.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/session.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/termination.hpp"
#include "mtlsd/tls/identity.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::log {
struct access_record;
}
namespace mtlsd::proxy {
struct http_request_report;
}

namespace mtlsd::proxy::detail {

using steady = std::chrono::steady_clock;

// How long a TLS handshake already running when shutdown begins gets to finish (session.cpp).
inline constexpr auto drain_handshake_grace = std::chrono::seconds(1);

// Unique per process (all workers): the access line's conn_id, and every debug line of the
// connection carries it. One relaxed increment per connection.
inline std::uint64_t new_conn_id() {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

enum class phase { proxy_header, handshake, revocation, connect, relay, closing };

// How a session ended: the watchdog's verdict when it ended the session (the serving side is
// then cancelled at once), else how the serving side returned or threw.
struct outcome {
  enum class kind {
    completed,  // the serving side returned: admitted and relayed to the end, or refused
    deadline,   // the current phase's deadline passed (phase says which)
    killed,     // session_control::kill(): drain timeout, revocation
    failed,     // an internal error (an exception): result=error
  };
  kind how = kind::completed;
  std::string error;  // failed: what went wrong
};

// Everything one connection knows, on the heap, owned by the session's coroutine (no
// shared_from_this; session.cpp's `run`, or the watchdog's last completion when that coroutine
// ended with one pending: `orphaned`): whoever must reach it from outside goes through
// `control`, registered with the worker. Some members own heap memory of their own (strings, the
// peer's identity, the TLS object).
struct session {
  session(stream_socket p, std::shared_ptr<const runtime::listener_runtime> l)
      : listener(std::move(l)),
        peer(std::move(p)),
        upstream(peer.get_executor()),
        watchdog_timer(peer.get_executor()),
        start(steady::now()),
        started_at(std::chrono::system_clock::now()),
        conn_id(new_conn_id()) {
    clock.watchdog = &watchdog_timer;
  }

  std::shared_ptr<const runtime::listener_runtime> listener;
  stream_socket peer;        // the accepting side's peer
  stream_socket upstream;    // where we connect to
  std::string upstream_key;  // client mode: the session cache's key (outlives the SSL)
  // The TLS side (on `peer` in server mode, on `upstream` in client mode). In the frame rather
  // than in serve_*() so that a session killed from outside can still send close_notify.
  std::optional<tls_stream> tls;
  asio::steady_timer watchdog_timer;
  // The watchdog (session_watchdog.cpp), a callback on watchdog_timer: `stop_serving` is bound
  // to the serving coroutine's cancellation slot (run_session's caller owns it);
  // `watchdog_verdict` is how the watchdog ended the session, when it did; `watchdog_waits` the
  // timer wait in flight (0 or 1: its completion reads the session, which waits for it);
  // `serving_over`: the serving side ended, the watchdog stops.
  asio::cancellation_signal* stop_serving = nullptr;
  std::optional<outcome> watchdog_verdict;
  int watchdog_waits = 0;
  bool serving_over = false;
  // The coroutine ended by an exception after start_watchdog with a watchdog completion still
  // to run: that completion deletes the session (session.cpp's keep_for_watchdog).
  bool orphaned = false;
  session_control control;
  steady::time_point start;
  std::chrono::system_clock::time_point started_at;  // the access line's `start`
  std::uint64_t conn_id;

  phase current = phase::handshake;
  config::duration phase_timeout{};  // the current phase's deadline, for the log
  idle_deadline clock;               // the watchdog's deadline, for every phase

  admission_ticket ticket;  // places held in the listener's limits (admission.hpp)
  // Descriptors taken from the process's budget beyond the 2 every connection took at accept
  // (an HTTP/2 client of an HTTP/1.1 upstream, fd_gate.hpp); given back when the session ends.
  struct extra_fds {
    std::int64_t n = 0;
    ~extra_fds() {
      if (n > 0) connection_fds().give_back(n);
    }
  } held_fds;
  // accept_proxy_protocol: the client and our address as the PROXY header named them; null
  // without such a header (off the heap: most connections have none, and every connection's
  // frame would otherwise hold these 256 bytes for its whole life).
  struct proxied_addresses {
    sockaddr_storage source{};
    sockaddr_storage destination{};
  };
  std::unique_ptr<proxied_addresses> proxied;
  // timeouts.max_connection_age: when the relay is to be closed gracefully; max = never.
  steady::time_point age_limit = steady::time_point::max();
  bool aged = false;  // it was: closed gracefully (close_for_age)
  // When linger_close last read a byte from the client (the drain's end on acknowledgement
  // waits for the client to be quiet too).
  steady::time_point lingered_read{};

  std::string connect_step;  // what connect_upstream was doing when cancelled ("DNS lookup of X")
  // The socket's peer, read once at accept (getpeername is a system call per use).
  stream_endpoint remote;
  std::string client;
  // The peer's IP address, for allow rules on source_cidrs (none on a unix socket).
  std::optional<config::ip_address> source;
  std::optional<reason> refusal;
  std::string detail;
  // The verified peer, when it had a cert, unless it was refused after all (then it moves to
  // unverified_peer): the access line's `identity`.
  std::optional<tls::peer_identity> peer_identity;
  // The leaf of a peer that is not, or no longer, a verified identity: refused (in the handshake
  // or after it), or a remote let through unjudged by server_auth.insecure_skip_verify. Only the
  // access line's peer_* fields name it. On the heap for the same reason as `proxied` (a refused
  // connection ends at once, an admitted one may live for days; insecure_skip_verify is rare).
  std::unique_ptr<tls::peer_identity> unverified_peer;
  std::string upstream_address;           // the address connected to (resolved)
  std::int64_t upstream_connect_ms = -1;  // -1: no connect attempted
  // Set by whatever ends the session for a reason of its own (rate_limited...); otherwise
  // finish() names the termination from the outcome.
  std::optional<termination> ended_by;
  // Shutdown began during the TLS handshake: its deadline is now drain_handshake_grace away.
  bool handshake_cut_by_drain = false;
  const char* tls_version = "";
  const char* cipher = "";
  // Server side: the client's SNI as allow rules judge it (tls::client_sni: lower case, no
  // final dot; kept on a resumed TLS 1.2 session too); client side: the name sent. "" = none.
  std::string sni;
  bool resumed = false;
  bool admitted = false;
  relay_result relayed;

  // A new phase with its own deadline, counted from now. The watchdog is woken so that a deadline
  // shorter than the previous phase's holds too.
  void enter(phase p, config::duration timeout) {
    current = p;
    phase_timeout = timeout;
    clock.idle = {};
    clock.close_by = steady::time_point::max();
    clock.half_closed = false;
    clock.deadline = steady::now() + timeout;
    age_limit = steady::time_point::max();
    watchdog_timer.cancel();
  }
  // The relay phase: only the idle timeout (and, after a half-close, timeouts.half_close) bound
  // it; 0 = no idle timeout.
  void enter_relay(config::duration idle, config::duration half_close,
                   config::duration max_age = {}) {
    if (max_age.count() > 0) age_limit = start + max_age;
    current = phase::relay;
    phase_timeout = idle;
    clock.idle = idle;
    clock.half_close = half_close;
    clock.close_by = steady::time_point::max();
    clock.deadline = steady::time_point::max();
    clock.touch();
    watchdog_timer.cancel();
  }
  void refuse(reason r, std::string why) {
    if (refusal) return;  // the first reason is the true one
    refusal = r;
    detail = std::move(why);
  }
};

// The name an SSL sends or received in its SNI, as OpenSSL keeps it ("" when none). Sessions
// use session::sni, which a resumed TLS 1.2 session does not lose.
std::string_view sni_of(SSL* ssl);
// The protocol ALPN chose, "" when none.
std::string_view alpn_of(SSL* ssl);
// The connection's fields of an access line (who, TLS, upstream); views into `s` and its SSL.
void fill_connection(const session& s, log::access_record& rec);

// session_trace.cpp: the debug lines, one per phase, each with the conn_id. Each returns at once
// (computing nothing) above log.level debug.
void trace_accepted(const session& s);
void trace_client_hello_sent(const session& s, SSL* ssl);
void trace_handshake_failed(const session& s, bool judged_by_verify_callback);
void trace_handshake_done(const session& s);
void trace_judged(const session& s, bool admitted);
void trace_connect(const session& s, steady::time_point begin, steady::time_point resolved,
                   const error_code& ec, const std::string& why);
void trace_relay_start(const session& s);
void trace_closed(const session& s, termination ended, std::uint64_t rx, std::uint64_t tx,
                  std::int64_t duration_ms);

// session_watchdog.cpp. start_watchdog: from now the phases' deadlines, max_connection_age and
// kill() end the serving side (cancelled through stop_serving, the verdict in
// watchdog_verdict). stop_watchdog: the serving side ended; returns once no completion of the
// watchdog's is left to run (the session may then go).
void start_watchdog(session& s);
asio::awaitable<void> stop_watchdog(session& s);

// session_linger.cpp: FIN, then what the client still sends is read and discarded until it
// closes, `bound` passes (the closing phase's deadline) or, with `quiet`, it sends nothing for
// that long; only then does the session close the socket.
asio::awaitable<void> linger_close(session& s, config::duration bound = std::chrono::seconds(1),
                                   config::duration quiet = {});
// After an HTTP answer the client may not have waited for (its request body still coming), or
// an HTTP/2 connection mtlsd ended: linger_close for up to timeouts.half_close, 5 s quiet; a
// drain ends it once the client acknowledged everything sent.
asio::awaitable<void> close_lingering(session& s);

// session_judge.cpp: between the handshake and the upstream. The awaitables return false when
// the peer must go no further (the refusal is recorded) or the watchdog cancelled the step.
void record_tls_details(session& s, SSL* ssl);
void record_failed_handshake(session& s, tls::verify_outcome& vo, SSL* ssl);
// A tls.spiffe listener before its first X.509-SVID: the refusal's detail in both modes.
inline constexpr const char* no_svid_yet_detail =
    "no X.509-SVID from the SPIFFE Workload API yet: no certificate of ours to present (see "
    "/readyz)";
void classify_handshake_failure(session& s, const tls::verify_outcome& vo, const tls_stream& tls,
                                const error_code& ec);
asio::awaitable<bool> judge_verified_peer(session& s, tls_stream& tls, tls::verify_outcome& vo,
                                          bool network_revocation, bool recheck);
asio::awaitable<bool> admit_identity(session& s, tls_stream& tls);
// An HTTP/2 client of an HTTP/1.1 upstream: the descriptors of its upstream connections, taken
// before any upstream connection is made. False: refused as over_capacity (recorded).
asio::awaitable<bool> admit_upstream_fds(session& s, tls_stream& tls);
asio::awaitable<bool> accept_proxy_header(session& s);

// session_upstream.cpp: the upstream side.
// How the connect phase ended: connected; refused (recorded and counted, see refuse_connect);
// or cut by the watchdog (connect_step says how far it got, see finish()).
enum class connect_end { connected, refused, cut };
asio::awaitable<connect_end> connect_phase(session& s);
// Why a connect that did not finish within timeouts.connect failed: the step still running
// (connect_step, e.g. "DNS lookup of X") when there was one.
std::string connect_timeout_detail(const session& s);
proxy_v2_info proxy_info(const session& s, SSL* ssl);
// The PROXY v2 header to the upstream; false when that failed (refused and counted).
asio::awaitable<bool> send_proxy_header(session& s, SSL* ssl);

// http_serve.cpp: HTTP mode once the peer is admitted and the upstream connected.
asio::awaitable<void> serve_http(session& s, tls_stream& tls);
// A request's "request" access line and its mtlsd_http_* metrics, with the connection's fields:
// what serve_http's sink does, and what a refusal after the handshake reports of its answers.
void report_http_request(const session& s, const http_request_report& r);
// Whether the client of an http: listener speaks HTTP/2: it chose h2 by ALPN, or sent no ALPN
// to a listener that speaks h2 only.
bool speaks_h2(const config::listener& cfg, SSL* ssl);
// http_refusal.cpp, h2_refusal.cpp: what the client of an http: listener refused after its
// handshake is told, where any other client gets only close_notify: an HTTP answer.
struct http_answer {
  int status;
  std::string_view status_text;  // HTTP/1.1's reason phrase
  // The GOAWAY's error code (RFC 9113 7, nghttp2's NGHTTP2_*) for an HTTP/2 client.
  std::uint32_t goaway_code;
  std::string_view why;  // the body, and the GOAWAY's debug data
};
// mtlsd itself out of descriptors: 503, and NO_ERROR (it may try again elsewhere).
inline constexpr http_answer over_capacity_answer{503, "Service Unavailable", 0, "over capacity"};
// How long a refused client's request is waited for before the answer goes (HTTP/1.1), or once
// our SETTINGS went out (HTTP/2). Clients send it right after their Finished (curl), with their
// preface (nghttp, browsers) or one round trip later, on our SETTINGS (gRPC).
inline constexpr auto refused_request_wait = std::chrono::seconds(1);
// An HTTP/1.1 client gets the answer as a response with Connection: close, as from nginx, once
// its request came (waited for up to refused_request_wait; answered all the same, but no request
// reported, when none came). An HTTP/2 client gets the server's SETTINGS, then the requests read
// with its first one (waited for as long) get the answer as their response, then GOAWAY names
// the last of them (0 when none came). True when
// something was written: the caller then closes by lingering, so that the request the client
// may have sent meanwhile, unread, does not turn the close into a reset before it reads it.
// False when `s` is not an http: listener (nothing written).
asio::awaitable<bool> answer_refused(session& s, tls_stream& tls, const http_answer& a);
// `answered`: the requests that got the answer (head, body bytes, start), for their report.
asio::awaitable<void> answer_h2_refused(session& s, tls_stream& tls, const http_answer& a,
                                        std::vector<http_request_report>& answered);
// Its upstream could not be connected (connect_phase refused, the reason recorded): 502, as from
// nginx, or over_capacity_answer when mtlsd ran out of descriptors; an HTTP/2 client gets
// NO_ERROR (it may try again).
asio::awaitable<bool> answer_connect_refused(session& s, tls_stream& tls);

// session_report.cpp: counting and logging.
void count_revocation(session& s, const tls::verify_outcome& vo);
// The warning for a peer admitted under on_unavailable: allow without a usable CRL.
void warn_admitted_without_crl(const session& s, std::string_view detail);
void count_verdict(session& s, const tls::revocation::verdict& v);
void observe_handshake(session& s);
// Names the end of `s` from `o`, updates the metrics and writes the access-log line.
void finish(session& s, const outcome& o);

}  // namespace mtlsd::proxy::detail
