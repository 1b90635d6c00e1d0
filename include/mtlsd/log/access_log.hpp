#pragma once
// One line per connection, written when it ends (log.access_log).
#include <cstdint>
#include <functional>
#include <string>

namespace mtlsd::log {

struct access_record {
  std::string_view listener;
  std::string client;    // peer address as seen by the accepting socket
  std::string identity;  // SPIFFE ID, else the certificate subject; empty without a certificate
  std::string_view tls_version;
  std::string_view cipher;
  std::uint64_t rx_bytes = 0;  // from the accepting side's peer
  std::uint64_t tx_bytes = 0;  // to the accepting side's peer
  std::int64_t duration_ms = 0;
  std::string_view result;  // accepted | rejected | error
  std::string_view reason;  // a rejection reason, or empty
  std::string detail;       // human explanation for a refusal or error
  bool resumed = false;
};

void set_access_log_enabled(bool enabled);
void write_access(const access_record& r);

// mtlsd_access_log_dropped_total: `hook` runs once for every access line dropped because its
// output was too slow (or lost on a write error), on the thread that saw it. Set it before
// workers start; log stays a leaf, so the daemon passes the metric in.
void set_access_drop_hook(std::function<void()> hook);
std::uint64_t access_lines_dropped();

}  // namespace mtlsd::log
