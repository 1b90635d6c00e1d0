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

void write_access(const access_record& r) {
  if (!access_enabled.load(std::memory_order_relaxed)) return;
  // Refusals are info too: they are the access log's reason to exist, and warn-level noise from
  // scanners would drown real warnings.
  write_access_line("access", {{"listener", r.listener},
                               {"client", r.client},
                               {"identity", r.identity},
                               {"tls_version", r.tls_version},
                               {"cipher", r.cipher},
                               {"resumed", r.resumed},
                               {"rx_bytes", r.rx_bytes},
                               {"tx_bytes", r.tx_bytes},
                               {"duration_ms", r.duration_ms},
                               {"result", r.result},
                               {"reason", r.reason},
                               {"detail", r.detail}});
}

}  // namespace mtlsd::log
