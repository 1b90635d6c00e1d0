#include "mtlsd/daemon/expiry_monitor.hpp"

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon {
namespace {
constexpr std::time_t day = 24 * 3600;
constexpr std::time_t window = 30 * day;
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
  auto consider = [&](const std::string& listener, const char* role, X509* cert) {
    const std::time_t not_after = tls::not_after_of(cert);
    if (not_after - now >= window) return;
    const std::string key = tls::subject_of(cert) + "|" + tls::serial_of(cert);
    auto it = last_warned_.find(key);
    if (it != last_warned_.end() && now - it->second < day) return;
    last_warned_[key] = now;
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
    for (const auto& chain : l->tls.own_chains)
      for (const auto& c : chain)
        consider(l->cfg.name, own, c.get());
    for (const auto& c : l->tls.trust)
      consider(l->cfg.name, "ca", c.get());
  }
  return warned;
}

}  // namespace mtlsd::daemon
