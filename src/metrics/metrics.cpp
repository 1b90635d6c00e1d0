#include "mtlsd/metrics/metrics.hpp"

#include <atomic>
#include <cstdint>
#include <tuple>

#include <openssl/crypto.h>

#include <algorithm>

#include "mtlsd/metrics/process_collector.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::metrics {
namespace {

using prometheus::Histogram;

// Handshakes take ~1 ms on loopback and up to seconds across continents or with slow OCSP.
const Histogram::BucketBoundaries handshake_buckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const Histogram::BucketBoundaries connection_buckets = {0.01, 0.1,  1,    10,    60,
                                                        300,  1800, 3600, 21600, 86400};

}  // namespace

namespace {
std::atomic<std::uint64_t> next_registry_id{1};
}  // namespace

// A table, long on purpose: one registration per metric family (name and help as /metrics shows
// them), all in one place so that every family mtlsd exports is found here.
registry::registry()
    : registry_(std::make_shared<prometheus::Registry>()),
      collectable_(std::make_shared<collectables>(
          std::vector<std::shared_ptr<prometheus::Collectable>>{
              registry_, std::make_shared<process_collector>()},
          [this] { drain_histograms(); })),
      id_(next_registry_id++) {
  auto& r = *registry_;
  connections_ = &prometheus::BuildCounter()
                      .Name("mtlsd_connections_total")
                      .Help(
                          "Connections by outcome: accepted (relayed), rejected (refused with a "
                          "reason), error (internal failure).")
                      .Register(r);
  active_ = &prometheus::BuildGauge()
                 .Name("mtlsd_connections_active")
                 .Help("Connections currently open on the listener.")
                 .Register(r);
  handshake_failures_ = &prometheus::BuildCounter()
                             .Name("mtlsd_handshake_failures_total")
                             .Help("Refused connections by rejection reason.")
                             .Register(r);
  connections_closed_ =
      &prometheus::BuildCounter()
           .Name("mtlsd_connections_closed_total")
           .Help(
               "Admitted connections closed by mtlsd because their peer is no longer admitted: "
               "revoked while connected, or refused by the policy of a reload, by reason.")
           .Register(r);
  handshake_duration_ = &prometheus::BuildHistogram()
                             .Name("mtlsd_handshake_duration_seconds")
                             .Help("Time from accept to a completed TLS handshake.")
                             .Register(r);
  connection_duration_ = &prometheus::BuildHistogram()
                              .Name("mtlsd_connection_duration_seconds")
                              .Help("Lifetime of relayed connections.")
                              .Register(r);
  bytes_ = &prometheus::BuildCounter()
                .Name("mtlsd_bytes_total")
                .Help(
                    "Payload bytes relayed, as seen from the accepting side (rx = from the peer "
                    "that connected to mtlsd); added while a connection is open, every 64 KiB "
                    "a direction moves, and the rest when it closes.")
                .Register(r);
  upstream_failures_ = &prometheus::BuildCounter()
                            .Name("mtlsd_upstream_connect_failures_total")
                            .Help("Failed connection attempts to the upstream.")
                            .Register(r);
  resumptions_ = &prometheus::BuildCounter()
                      .Name("mtlsd_tls_session_resumptions_total")
                      .Help("Handshakes that resumed an earlier TLS session.")
                      .Register(r);
  over_limit_ =
      &prometheus::BuildCounter()
           .Name("mtlsd_connections_over_limit_total")
           .Help(
               "Connections closed at once at accept: the listener was at max_connections, or "
               "the file descriptor limit left no room for them.")
           .Register(r);
  accept_errors_ = &prometheus::BuildCounter()
                        .Name("mtlsd_accept_errors_total")
                        .Help("Failed accepts (e.g. out of file descriptors); accepting goes on.")
                        .Register(r);
  internal_errors_ = &prometheus::BuildCounter()
                          .Name("mtlsd_internal_errors_total")
                          .Help("Unexpected exceptions caught at the top of a loop that went on.")
                          .Register(r);
  tls_handshakes_ = &prometheus::BuildCounter()
                         .Name("mtlsd_tls_handshakes_total")
                         .Help("Completed TLS handshakes by protocol version and cipher.")
                         .Register(r);
  cert_expiry_ =
      &prometheus::BuildGauge()
           .Name("mtlsd_certificate_expiry_timestamp_seconds")
           .Help("notAfter of every certificate mtlsd serves or trusts, as a Unix timestamp.")
           .Register(r);
  reloads_ = &prometheus::BuildCounter()
                  .Name("mtlsd_config_reloads_total")
                  .Help("Configuration and certificate reloads by result.")
                  .Register(r);
  last_reload_ = &prometheus::BuildGauge()
                      .Name("mtlsd_config_last_reload_success_timestamp_seconds")
                      .Help("When the running configuration was last loaded successfully.")
                      .Register(r);
  auto& file_checks = prometheus::BuildCounter()
                          .Name("mtlsd_config_file_checks_total")
                          .Help(
                              "Looks at the watched files' content after a file event or poll, "
                              "by whether anything had changed (only changes reload).")
                          .Register(r);
  file_checks_changed_ = &file_checks.Add({{"result", "changed"}});
  file_checks_unchanged_ = &file_checks.Add({{"result", "unchanged"}});
  revocation_checks_ = &prometheus::BuildCounter()
                            .Name("mtlsd_revocation_checks_total")
                            .Help("Revocation decisions by method and result.")
                            .Register(r);
  crl_next_update_ =
      &prometheus::BuildGauge()
           .Name("mtlsd_crl_next_update_timestamp_seconds")
           .Help("nextUpdate of the freshest CRL held for each issuer (files and downloaded).")
           .Register(r);
  upstream_up_ = &prometheus::BuildGauge()
                      .Name("mtlsd_upstream_up")
                      .Help(
                          "1 if the listener's upstream_check last succeeded, 0 if it failed; "
                          "only listeners with a check have a series.")
                      .Register(r);
  http_requests_ = &prometheus::BuildCounter()
                        .Name("mtlsd_http_requests_total")
                        .Help(
                            "HTTP requests served in http: mode, by protocol (HTTP/1.1, HTTP/2) "
                            "and status class (1xx..5xx; none = no response was sent).")
                        .Register(r);
  http_duration_ = &prometheus::BuildHistogram()
                        .Name("mtlsd_http_request_duration_seconds")
                        .Help("Time from an HTTP request's head to the end of its response.")
                        .Register(r);
  build_info_ = &prometheus::BuildGauge()
                     .Name("mtlsd_build_info")
                     .Help("Always 1; labels say which build is running.")
                     .Register(r);
  build_info_->Add({{"version", kVersion}, {"openssl", OpenSSL_version(OPENSSL_VERSION_STRING)}})
      .Set(1);
  reload_success_ = &reloads_->Add({{"result", "success"}});
  reload_failure_ = &reloads_->Add({{"result", "failure"}});
  last_reload_success_ = &last_reload_->Add({});
  last_reload_successful_ =
      &prometheus::BuildGauge()
           .Name("mtlsd_config_last_reload_successful")
           .Help(
               "1 after start and while the last reload of every source (configuration files, "
               "each Workload API socket) succeeded; 0 while one's last reload failed (what it "
               "loaded before is still served).")
           .Register(r)
           .Add({});
  last_reload_successful_->Set(1);  // the daemon only serves a configuration that loaded
  access_log_dropped_ = &prometheus::BuildCounter()
                             .Name("mtlsd_access_log_dropped_total")
                             .Help(
                                 "Access-log lines dropped because their output (stderr, stdout "
                                 "or the file) did not keep up, or lost because a write to it "
                                 "failed (ENOSPC, EPIPE); traffic was not held back.")
                             .Register(r)
                             .Add({});
}

void registry::reload_outcome(const std::string& source, bool succeeded) {
  (succeeded ? reload_success_ : reload_failure_)->Increment();
  if (succeeded)
    failing_reload_sources_.erase(source);
  else
    failing_reload_sources_.insert(source);
  last_reload_successful_->Set(failing_reload_sources_.empty() ? 1 : 0);
}

void registry::forget_reload_source(const std::string& source) {
  failing_reload_sources_.erase(source);
  last_reload_successful_->Set(failing_reload_sources_.empty() ? 1 : 0);
}

prometheus::Counter& registry::internal_errors(const std::string& component) {
  std::lock_guard lock(mutex_);
  return internal_errors_->Add({{"component", component}});
}

std::shared_ptr<listener_metrics> registry::for_listener(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto& slot = listeners_[name];
  if (auto held = slot.lock()) return held;
  // The deleter runs wherever the last holder lets go (control thread or a worker). Under the
  // mutex, and only if no new holder took the name meanwhile: Family::Add() with the same labels
  // returns the existing series, so a holder created after the last one went shares them.
  auto made =
      std::shared_ptr<listener_metrics>(new listener_metrics{}, [this, name](listener_metrics* p) {
        {
          std::lock_guard l(mutex_);
          auto it = listeners_.find(name);
          if (it != listeners_.end() && it->second.expired()) {
            remove_listener_series(*p);
            listeners_.erase(it);
          }
        }
        delete p;
      });
  slot = made;
  auto& m = *made;
  m.name = name;
  m.http_requests_family = http_requests_;
  m.http_duration_family = http_duration_;
  m.accepted = &connections_->Add({{"listener", name}, {"result", "accepted"}});
  m.rejected = &connections_->Add({{"listener", name}, {"result", "rejected"}});
  m.errors = &connections_->Add({{"listener", name}, {"result", "error"}});
  m.active = &active_->Add({{"listener", name}});
  // Every reason exists from the start (at 0) so that rate() and alerts work before the first
  // failure of a kind.
  for (reason r : all_reasons())
    m.failures[static_cast<std::size_t>(r)] =
        &handshake_failures_->Add({{"listener", name}, {"reason", std::string(to_string(r))}});
  for (reason r : all_reasons())
    m.closed[static_cast<std::size_t>(r)] =
        &connections_closed_->Add({{"listener", name}, {"reason", std::string(to_string(r))}});
  m.handshake_duration = std::make_unique<fast_histogram>(
      handshake_buckets, &handshake_duration_->Add({{"listener", name}}, handshake_buckets));
  m.connection_duration = std::make_unique<fast_histogram>(
      connection_buckets, &connection_duration_->Add({{"listener", name}}, connection_buckets));
  m.http_duration = std::make_unique<fast_histogram>(handshake_buckets);
  m.rx_bytes = &bytes_->Add({{"listener", name}, {"direction", "rx"}});
  m.tx_bytes = &bytes_->Add({{"listener", name}, {"direction", "tx"}});
  m.upstream_connect_failures = &upstream_failures_->Add({{"listener", name}});
  m.resumed = &resumptions_->Add({{"listener", name}});
  m.over_limit = &over_limit_->Add({{"listener", name}});
  m.accept_errors = &accept_errors_->Add({{"listener", name}});
  for (auto method : {revocation_method::crl, revocation_method::ocsp})
    for (auto result : {revocation_status::good, revocation_status::revoked,
                        revocation_status::unknown, revocation_status::unavailable})
      m.revocation_checks[static_cast<std::size_t>(method)][static_cast<std::size_t>(result)] =
          &revocation_checks_->Add({{"listener", name},
                                    {"method", std::string(to_string(method))},
                                    {"result", std::string(to_string(result))}});
  return made;
}

void registry::remove_listener_series(const listener_metrics& m) {
  connections_->Remove(m.accepted);
  connections_->Remove(m.rejected);
  connections_->Remove(m.errors);
  active_->Remove(m.active);
  for (auto* c : m.failures)
    handshake_failures_->Remove(c);
  for (auto* c : m.closed)
    connections_closed_->Remove(c);
  handshake_duration_->Remove(m.handshake_duration->target());
  connection_duration_->Remove(m.connection_duration->target());
  bytes_->Remove(m.rx_bytes);
  bytes_->Remove(m.tx_bytes);
  upstream_failures_->Remove(m.upstream_connect_failures);
  resumptions_->Remove(m.resumed);
  over_limit_->Remove(m.over_limit);
  accept_errors_->Remove(m.accept_errors);
  for (const auto& by_method : m.revocation_checks)
    for (auto* c : by_method)
      if (c) revocation_checks_->Remove(c);
  for (const auto& by_protocol : m.http_requests)
    for (const auto& c : by_protocol)
      if (auto* p = c.load()) http_requests_->Remove(p);
  if (auto* h = m.http_duration->target()) http_duration_->Remove(h);
}

void registry::drain_histograms() {
  // Copies taken under the mutex, drained after it: the last reference to a listener's metrics
  // may be dropped here, and its deleter takes the mutex.
  std::vector<std::shared_ptr<listener_metrics>> held;
  {
    std::lock_guard lock(mutex_);
    held.reserve(listeners_.size());
    for (const auto& [name, weak] : listeners_)
      if (auto m = weak.lock()) held.push_back(std::move(m));
  }
  for (const auto& m : held)
    m->drain_histograms();
}

void listener_metrics::count_http_request(bool http2, int status, double seconds) {
  // Family::Add returns the existing series for the same labels, so two workers racing to
  // create one store the same pointer.
  const int cls = status >= 100 && status < 600 ? status / 100 : 0;
  auto& slot = http_requests[http2 ? 1 : 0][static_cast<std::size_t>(cls)];
  auto* counter = slot.load(std::memory_order_acquire);
  if (!counter) {
    static const char* const classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    counter = &http_requests_family->Add({{"listener", name},
                                          {"protocol", http2 ? "HTTP/2" : "HTTP/1.1"},
                                          {"code_class", classes[cls]}});
    slot.store(counter, std::memory_order_release);
  }
  counter->Increment();
  if (!http_duration->target())
    http_duration->set_target(&http_duration_family->Add({{"listener", name}}, handshake_buckets));
  http_duration->observe(seconds);
}

void registry::count_handshake(const std::string& listener, std::string_view version,
                               std::string_view cipher) {
  // Called once per handshake on every worker: Family::Add would take the family mutex and hash
  // every label each time. OpenSSL's version and cipher names are static strings, so a
  // per-thread cache keyed by their addresses (and this registry's id, never reused) finds the
  // counter without a lock after the first handshake of each kind.
  using key = std::tuple<std::uint64_t, std::string, const char*, const char*>;
  thread_local std::map<key, prometheus::Counter*> cache;
  key k{id_, listener, version.data(), cipher.data()};
  auto it = cache.find(k);
  if (it == cache.end()) {
    auto& counter = tls_handshakes_->Add({{"listener", listener},
                                          {"version", std::string(version)},
                                          {"cipher", std::string(cipher)}});
    it = cache.emplace(std::move(k), &counter).first;
  }
  it->second->Increment();
}

void registry::set_certificate_expiry(const std::vector<cert_series>& certs) {
  std::lock_guard lock(mutex_);
  for (auto* g : cert_gauges_)
    cert_expiry_->Remove(g);
  cert_gauges_.clear();
  for (const auto& c : certs) {
    auto& g = cert_expiry_->Add(
        {{"listener", c.listener}, {"role", c.role}, {"subject", c.subject}, {"serial", c.serial}});
    g.Set(c.not_after);
    cert_gauges_.push_back(&g);
  }
}

void registry::set_crl_next_update(const std::string& source,
                                   const std::map<std::string, double>& by_issuer) {
  std::lock_guard lock(mutex_);
  if (by_issuer.empty())
    crl_sources_.erase(source);
  else
    crl_sources_[source] = by_issuer;
  std::map<std::string, double> latest;
  for (const auto& [src, issuers] : crl_sources_)
    for (const auto& [issuer, when] : issuers) {
      auto [it, fresh] = latest.emplace(issuer, when);
      if (!fresh) it->second = std::max(it->second, when);
    }
  for (auto it = crl_gauges_.begin(); it != crl_gauges_.end();) {
    if (!latest.count(it->first)) {
      crl_next_update_->Remove(it->second);
      it = crl_gauges_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [issuer, when] : latest) {
    auto& g = crl_gauges_[issuer];
    if (!g) g = &crl_next_update_->Add({{"issuer", issuer}});
    g->Set(when);
  }
}

}  // namespace mtlsd::metrics
