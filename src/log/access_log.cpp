#include "mtlsd/log/access_log.hpp"

#include <atomic>

#include "mtlsd/log/log.hpp"

namespace mtlsd::log {
namespace {
std::atomic<bool> access_enabled{true};
}

void set_access_log_enabled(bool enabled) {
  access_enabled = enabled;
}

bool access_log_enabled() {
  return access_enabled.load(std::memory_order_relaxed);
}

void write_access(const access_record& r) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  // Refusals are info too: they are the access log's reason to exist, and warn-level noise from
  // scanners would drown real warnings.
  const field connect_ms = r.upstream_connect_ms < 0
                               ? field("upstream_connect_ms", null)
                               : field("upstream_connect_ms", r.upstream_connect_ms);
  write_access_line("access", {{"start", r.start},
                               {"conn_id", r.conn_id},
                               {"listener", r.listener},
                               {"client", r.client},
                               {"identity", r.identity},
                               {"tls_version", r.tls_version},
                               {"cipher", r.cipher},
                               {"resumed", r.resumed},
                               {"sni", r.sni},
                               {"alpn", r.alpn},
                               {"upstream", r.upstream},
                               connect_ms,
                               {"peer_subject", r.peer_subject},
                               {"peer_serial", r.peer_serial},
                               {"peer_issuer", r.peer_issuer},
                               {"peer_sha256", r.peer_sha256},
                               {"peer_not_after", r.peer_not_after},
                               {"rx_bytes", r.rx_bytes},
                               {"tx_bytes", r.tx_bytes},
                               {"duration_ms", r.duration_ms},
                               {"result", r.result},
                               {"reason", r.reason},
                               {"termination", r.termination},
                               {"detail", r.detail}});
}

void write_request_access(const access_record& c, const http_request_record& q) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  write_access_line("request", {{"start", q.start},
                                {"conn_id", c.conn_id},
                                {"listener", c.listener},
                                {"client", c.client},
                                {"identity", c.identity},
                                {"tls_version", c.tls_version},
                                {"cipher", c.cipher},
                                {"sni", c.sni},
                                {"alpn", c.alpn},
                                {"upstream", c.upstream},
                                {"peer_subject", c.peer_subject},
                                {"peer_serial", c.peer_serial},
                                {"peer_sha256", c.peer_sha256},
                                {"method", q.method},
                                {"authority", q.authority},
                                {"path", q.path},
                                {"protocol", q.protocol},
                                {"status", q.status},
                                q.grpc_status < 0 ? field("grpc_status", null)
                                                  : field("grpc_status", q.grpc_status),
                                {"req_bytes", q.req_bytes},
                                {"resp_bytes", q.resp_bytes},
                                {"stream_id", q.stream_id},
                                {"duration_ms", q.duration_ms},
                                {"detail", q.detail}});
}

}  // namespace mtlsd::log
