// HTTP mode after admission: which protocol the client negotiated decides the relay (ALPN h2:
// h2_connection.hpp; else HTTP/1.1: http_relay.hpp), and every request it finishes becomes a
// "request" access line and the mtlsd_http_* metrics, with the connection's fields.
#include <openssl/ssl.h>

#include <memory>

#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/proxy/h2_connection.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy::detail {
namespace {

// The connection's fields of a request line, as write_access_line fills them when the
// connection ends, but without consuming anything of the session. `not_after` holds the text of
// the peer's notAfter.
void fill_request_connection(const session& s, log::access_record& c, char (&not_after)[32]) {
  fill_connection(s, c);
  c.client = s.client;
  if (s.peer_identity) {
    c.peer_subject = s.peer_identity->subject;
    c.peer_serial = s.peer_identity->serial;
    c.peer_issuer = s.peer_identity->issuer;
    c.peer_sha256 = s.peer_identity->sha256;
    if (s.peer_identity->not_after != 0)
      c.peer_not_after = log::format_rfc3339(not_after, s.peer_identity->not_after);
  }
}

// The request's line: its own fields and the connection's. With a `cache` (serve_http's: made
// at the first line, so that a connection that logs none holds none), the connection's fields
// are rendered once (per log.format) rather than on every request. What it holds is settled
// before serve_http and never changes after: the listener (a reload's re-judging changes the
// runtime that judges the session, not the session's own), the client (accept, PROXY header),
// the TLS fields, SNI and ALPN (the handshake) and the peer's identity (refuse_after_handshake,
// the one step that takes it away, comes before). upstream and upstream_connect_ms, the
// upstream connection's, are compared on every line and rendered again when they changed.
void write_request_line(const session& s, const http_request_report& r,
                        std::unique_ptr<log::request_line_cache>* cache) {
  if (!log::access_log_enabled()) return;  // `access_log: false`: no record to build per request
  log::http_request_record q;
  q.start = r.started_at;
  q.method = r.method;
  q.authority = r.authority;
  q.path = r.path;
  q.protocol = r.http2 ? "HTTP/2" : "HTTP/1.1";
  q.status = r.status;
  q.grpc_status = r.grpc_status;
  q.req_bytes = r.req_bytes;
  q.resp_bytes = r.resp_bytes;
  q.stream_id = r.stream_id;
  q.duration_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - r.started).count();
  q.detail = r.detail;
  char not_after[32];
  if (!cache) {
    log::access_record c;
    fill_request_connection(s, c, not_after);
    return log::write_request_access(c, q);
  }
  if (!*cache) *cache = std::make_unique<log::request_line_cache>();
  log::request_line_cache& fields = **cache;
  if (const auto format = log::current_line_format(); !fields.holds(format)) {
    log::access_record c;
    fill_request_connection(s, c, not_after);
    fields.render(format, c);
  }
  log::write_request_access(fields, s.upstream_address, s.upstream_connect_ms, q);
}

void count_http_request(const session& s, const http_request_report& r) {
  if (auto* m = s.listener->metrics)
    m->count_http_request(r.http2, r.status,
                          std::chrono::duration<double>(steady::now() - r.started).count());
}

// The rules each request's host is held to (http_forwarding::rules): the allow list of the
// listener runtime the session is judged by now, its own or the one a reload's re-judging last
// kept it by (session_control::judged_by), so that a reload that keeps the connection holds its
// next request to the new rules, as a new connection's, and one that then removes its listener
// leaves them. Read again only once a reload re-judged the worker's sessions since: per request,
// one comparison; no allocation, no reference count touched.
class host_rules final : public request_host_rules {
 public:
  explicit host_rules(const session& s) : s_(s) { read(s_.control.rejudged_with()); }

  bool hold_host() override {
    const auto* last = s_.control.rejudged_with();
    if (last && (*last)->generation != seen_) read(last);
    return holds_;
  }
  std::string judge_host(std::string_view host) override {
    const tls::peer_context ctx{s_.source ? &*s_.source : nullptr, host};
    auto d = tls::evaluate(*allow_, *s_.peer_identity, ctx);
    return d.allowed ? std::string() : std::move(d.detail);
  }

 private:
  void read(const std::shared_ptr<const runtime::runtime>* last) {
    if (last) seen_ = (*last)->generation;  // unique to each published runtime
    // Held here too: the session may end its registration (and its judged_by) first.
    held_ = s_.control.judged_by();
    allow_ = &(held_ ? *held_ : *s_.listener).tls.peer_verifier->allow();
    // Without an SNI the rules judge each host in its place, by the peer's certificate.
    holds_ = allow_->judges_sni() && (!s_.sni.empty() || s_.peer_identity);
  }

  const session& s_;
  std::shared_ptr<const runtime::listener_runtime> held_;  // null: the session's own
  std::uint64_t seen_ = 0;  // the generation of the re-judging runtime read
  const config::allow_list* allow_ = nullptr;
  bool holds_ = false;
};

}  // namespace

void report_http_request(const session& s, const http_request_report& r) {
  write_request_line(s, r, nullptr);  // a refusal's answers: a line or two, nothing to reuse
  count_http_request(s, r);
}

bool speaks_h2(const config::listener& cfg, SSL* ssl) {
  // No ALPN (a client that sent none) means HTTP/1.1, unless the listener speaks h2 only.
  const std::string_view alpn = alpn_of(ssl);
  return alpn == "h2" || (alpn.empty() && !cfg.http.offers("http/1.1"));
}

asio::awaitable<void> serve_http(session& s, tls_stream& tls) {
  const auto& cfg = s.listener->cfg;
  http_forwarding fwd;
  fwd.xfcc = make_xfcc_policy(cfg.http, tls.native(), s.peer_identity ? &*s.peer_identity : nullptr,
                              s.listener->tls.own_uri_sans);
  if (s.source) fwd.client_ip = s.source->str();
  fwd.x_forwarded_for = cfg.http.x_forwarded_for;
  fwd.x_forwarded_proto = cfg.http.x_forwarded_proto;
  fwd.server_name = s.sni;
  host_rules rules(s);  // outlives both relays: they end before serve_http does
  fwd.rules = &rules;
  // Like host_rules, outlives both relays, which report every request through `sink`.
  std::unique_ptr<log::request_line_cache> line_cache;
  http_request_sink sink = [&s, &line_cache](const http_request_report& r) {
    write_request_line(s, r, &line_cache);
    count_http_request(s, r);
  };
  const bool h2 = speaks_h2(cfg, tls.native());
  s.clock.head_limit = cfg.http.request_headers_timeout;
  if (!h2) {
    co_await http_relay(tls, s.peer, s.upstream, std::move(fwd), s.clock, s.relayed,
                        std::move(sink), &s.control);
    if (s.relayed.tls_peer_sending) co_await close_lingering(s);
    co_return;
  }
  // An HTTP/1.1 upstream gets one connection per stream in flight: each starts with the
  // session's PROXY header, as the first did.
  std::string preamble = cfg.proxy_protocol == config::proxy_protocol_mode::v2
                             ? build_proxy_v2_header(proxy_info(s, tls.native()))
                             : std::string();
  h2_environment env{
      &tls,
      &s.peer,
      &s.upstream,
      &cfg,
      std::move(fwd),
      std::move(sink),
      &s.clock,
      &s.relayed,
      cfg.http.upstream_protocol != config::http_upstream_protocol::http1,
      &s.control,
      std::move(preamble),
      s.listener->metrics ? s.listener->metrics->upstream_connect_failures : nullptr};
  co_await serve_h2(std::move(env));
  if (s.relayed.tls_peer_sending) co_await close_lingering(s);
}

}  // namespace mtlsd::proxy::detail
