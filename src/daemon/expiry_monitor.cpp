#include "mtlsd/daemon/expiry_monitor.hpp"

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon {
namespace {
constexpr std::time_t day = 24 * 3600;
}  // namespace

expiry_monitor::expiry_monitor(boost::asio::io_context& ioc, runtime_source current)
    : timer_(ioc), current_(std::move(current)) {}

void expiry_monitor::start() {
  check(std::time(nullptr));
  schedule();
}

void expiry_monitor::schedule() {
  timer_.expires_after(std::chrono::hours(1));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    check(std::time(nullptr));
    schedule();
  });
}

int expiry_monitor::check(std::time_t now) {
  auto rt = current_();
  if (!rt) return 0;
  int warned = 0;
  // Certificates no longer served or trusted are forgotten: with SVIDs rotating hourly the map
  // grew by one entry per rotation for the life of the process (review).
  std::map<std::string, std::time_t> still_warned;
  auto consider = [&](const std::string& listener, const char* role, X509* cert,
                      std::time_t window) {
    const std::time_t not_after = tls::not_after_of(cert);
    if (not_after - now >= window) return;
    const std::string key = tls::subject_of(cert) + "|" + tls::serial_of(cert);
    if (auto it = last_warned_.find(key); it != last_warned_.end() && now - it->second < day) {
      still_warned.insert(*it);
      return;
    }
    still_warned[key] = now;
    ++warned;
    const bool expired = not_after <= now;
    log::warn(expired ? "certificate has expired" : "certificate expires soon",
              {{"listener", listener},
               {"role", role},
               {"subject", tls::subject_of(cert)},
               {"serial", tls::serial_of(cert)},
               {"days_left", static_cast<std::int64_t>((not_after - now) / day)}});
  };
  for (const auto& l : rt->listeners) {
    const char* own = l->cfg.mode == config::listener_mode::server ? "server" : "client";
    // The same windows as `check` and reloads (runtime::warnings): what the SPIFFE Workload API
    // rotates warns only once expired, not on every rotation.
    const auto windows = runtime::expiry_warning_windows(l->cfg);
    for (const auto& chain : l->tls.own_chains)
      for (const auto& c : chain)
        consider(l->cfg.name, own, c.get(), windows.own);
    for (const auto& c : l->tls.trust)
      consider(l->cfg.name, "ca", c.get(), windows.trust);
  }
  last_warned_ = std::move(still_warned);
  return warned;
}

}  // namespace mtlsd::daemon
