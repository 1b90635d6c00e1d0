#include "mtlsd/log/access_log.hpp"

#include <atomic>
#include <string>

#include "mtlsd/log/log.hpp"

namespace mtlsd::log {
namespace {
std::atomic<bool> access_enabled{true};

// `v`, or its first access_field_limit bytes (not splitting a UTF-8 sequence) and how much was
// cut, kept in `storage`.
std::string_view capped(std::string_view v, std::string& storage) {
  if (v.size() <= access_field_limit) return v;
  std::size_t keep = access_field_limit;  // back over at most 3 continuation bytes (log.cpp)
  while (keep > access_field_limit - 3 && (static_cast<unsigned char>(v[keep]) & 0xC0) == 0x80)
    --keep;
  storage.assign(v.substr(0, keep));
  storage += "...(" + std::to_string(v.size() - keep) + " more bytes)";
  return storage;
}

// The connection's fields a peer controls (its certificate, the address a PROXY header names,
// the detail that quotes them, the server name a client asked for: recorded before OpenSSL
// refuses one longer than a host name can be, review: 15,000 bytes), as both kinds of line
// write them.
struct peer_fields {
  std::string cut[7];
  std::string_view client, identity, subject, issuer, serial, detail, sni;
  peer_fields(const access_record& r, std::string_view raw_detail)
      : client(capped(r.client, cut[0])),
        identity(capped(r.identity, cut[1])),
        subject(capped(r.peer_subject, cut[2])),
        issuer(capped(r.peer_issuer, cut[3])),
        serial(capped(r.peer_serial, cut[4])),
        detail(capped(raw_detail, cut[5])),
        sni(capped(r.sni, cut[6])) {}
};
}  // namespace

void set_access_log_enabled(bool enabled) {
  access_enabled = enabled;
}

bool access_log_enabled() {
  return access_enabled.load(std::memory_order_relaxed);
}

void write_access(const access_record& r) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  const peer_fields p(r, r.detail);  // capped: access_field_limit
  // Refusals are info too: they are the access log's reason to exist, and warn-level noise from
  // scanners would drown real warnings.
  const field connect_ms = r.upstream_connect_ms < 0
                               ? field("upstream_connect_ms", null)
                               : field("upstream_connect_ms", r.upstream_connect_ms);
  write_access_line("access", {{"start", r.start},
                               {"conn_id", r.conn_id},
                               {"listener", r.listener},
                               {"client", p.client},
                               {"identity", p.identity},
                               {"tls_version", r.tls_version},
                               {"cipher", r.cipher},
                               {"resumed", r.resumed},
                               {"sni", p.sni},
                               {"alpn", r.alpn},
                               {"upstream", r.upstream},
                               connect_ms,
                               {"peer_subject", p.subject},
                               {"peer_serial", p.serial},
                               {"peer_issuer", p.issuer},
                               {"peer_sha256", r.peer_sha256},
                               {"peer_not_after", r.peer_not_after},
                               {"rx_bytes", r.rx_bytes},
                               {"tx_bytes", r.tx_bytes},
                               {"duration_ms", r.duration_ms},
                               {"result", r.result},
                               {"reason", r.reason},
                               {"termination", r.termination},
                               {"detail", p.detail}});
}

void write_request_access(const access_record& c, const http_request_record& q) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  const peer_fields p(c, q.detail);  // capped: access_field_limit, and the request's own too
  const field connect_ms = c.upstream_connect_ms < 0
                               ? field("upstream_connect_ms", null)
                               : field("upstream_connect_ms", c.upstream_connect_ms);
  std::string cut[3];
  const std::string_view method = capped(q.method, cut[0]);
  const std::string_view authority = capped(q.authority, cut[1]);
  const std::string_view path = capped(q.path, cut[2]);
  write_access_line("request", {{"start", q.start},
                                {"conn_id", c.conn_id},
                                {"listener", c.listener},
                                {"client", p.client},
                                {"identity", p.identity},
                                {"tls_version", c.tls_version},
                                {"cipher", c.cipher},
                                {"resumed", c.resumed},
                                {"sni", p.sni},
                                {"alpn", c.alpn},
                                {"upstream", c.upstream},
                                connect_ms,
                                {"peer_subject", p.subject},
                                {"peer_serial", p.serial},
                                {"peer_issuer", p.issuer},
                                {"peer_sha256", c.peer_sha256},
                                {"peer_not_after", c.peer_not_after},
                                {"method", method},
                                {"authority", authority},
                                {"path", path},
                                {"protocol", q.protocol},
                                {"status", q.status},
                                q.grpc_status < 0 ? field("grpc_status", null)
                                                  : field("grpc_status", q.grpc_status),
                                {"req_bytes", q.req_bytes},
                                {"resp_bytes", q.resp_bytes},
                                {"stream_id", q.stream_id},
                                {"duration_ms", q.duration_ms},
                                {"detail", p.detail}});
}

}  // namespace mtlsd::log
