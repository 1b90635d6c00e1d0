#pragma once
// Every metric family, declared once, as handles injected where they are used (no global
// registry to reach into, so a test builds its own). Per-listener handles are looked up once when
// a listener's runtime is built, so the connection path never walks prometheus-cpp's family maps
// or takes their mutex. Counters and gauges are atomics; histograms are observed through
// fast_histogram (atomic buckets moved into prometheus-cpp's histograms at scrape time), since
// prometheus-cpp 1.1's own Histogram takes a mutex per observation.
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "mtlsd/metrics/fast_histogram.hpp"
#include "mtlsd/reason.hpp"
#include "mtlsd/revocation_status.hpp"

namespace mtlsd::metrics {

// Sizes of the revocation_checks table, indexed by the enums' values (not_checked's row stays
// null: it is never counted).
inline constexpr std::size_t revocation_method_count = 2;
inline constexpr std::size_t revocation_status_count = 5;
static_assert(static_cast<std::size_t>(revocation_method::ocsp) + 1 == revocation_method_count);
static_assert(static_cast<std::size_t>(revocation_status::unavailable) + 1 ==
              revocation_status_count);

struct listener_metrics {
  prometheus::Counter* accepted;
  prometheus::Counter* rejected;
  prometheus::Counter* errors;
  prometheus::Gauge* active;
  std::array<prometheus::Counter*, reason_count> failures;  // indexed by reason
  std::unique_ptr<fast_histogram> handshake_duration;
  std::unique_ptr<fast_histogram> connection_duration;
  prometheus::Counter* rx_bytes;
  prometheus::Counter* tx_bytes;
  prometheus::Counter* upstream_connect_failures;
  prometheus::Counter* resumed;
  prometheus::Counter* over_limit;
  prometheus::Counter* accept_errors;  // accept() failed (EMFILE...) or the accept loop threw
  // mtlsd_revocation_checks_total, one series per method and answer (not_checked has none):
  // counted through revocation_check().
  std::array<std::array<prometheus::Counter*, revocation_status_count>, revocation_method_count>
      revocation_checks;

  // mtlsd_connections_closed_total: admitted connections mtlsd closed because their peer is
  // no longer admitted (revoked while connected, or refused by a reloaded policy), by reason.
  std::array<prometheus::Counter*, reason_count> closed;

  // HTTP mode (created at a listener's first request, so TCP listeners show no such series):
  // mtlsd_http_requests_total{listener,protocol,code_class} by [protocol][class] (protocol
  // HTTP/1.1=0 HTTP/2=1; class 1xx..5xx = 1..5, 0 = "none": no response was sent) and
  // mtlsd_http_request_duration_seconds{listener}.
  std::string name;
  prometheus::Family<prometheus::Counter>* http_requests_family = nullptr;
  prometheus::Family<prometheus::Histogram>* http_duration_family = nullptr;
  std::array<std::array<std::atomic<prometheus::Counter*>, 6>, 2> http_requests{};
  std::unique_ptr<fast_histogram> http_duration;  // its series (target) made at first use
  void count_http_request(bool http2, int status, double seconds);

  // Moves the histograms' observations into their series (at scrape time).
  void drain_histograms() {
    handshake_duration->drain();
    connection_duration->drain();
    http_duration->drain();
  }

  prometheus::Counter& failure(reason r) { return *failures[static_cast<std::size_t>(r)]; }
  prometheus::Counter& closed_for(reason r) { return *closed[static_cast<std::size_t>(r)]; }
  // Counts one revocation decision by `method`; a source that did not apply (not_checked)
  // counts nothing.
  void revocation_check(revocation_method method, revocation_status result) {
    if (result == revocation_status::not_checked) return;
    revocation_checks[static_cast<std::size_t>(method)][static_cast<std::size_t>(result)]
        ->Increment();
  }
};

class registry {
 public:
  registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // A listener's series, shared by every runtime that has the listener (a reload that keeps it
  // keeps its counters). When the last holder goes (a reload removed the listener and its last
  // connection closed), its series are removed from /metrics. The registry must outlive every
  // holder (the daemon declares it before its runtimes and workers).
  std::shared_ptr<listener_metrics> for_listener(const std::string& name);

  // The whole scrape: this registry's families and the process_* metrics (process_collector).
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  // Counts a negotiated protocol/cipher for `mtlsd_tls_handshakes_total`, once per completed
  // handshake. Lock-free after the first handshake of each kind on a thread (per-thread cache).
  void count_handshake(const std::string& listener, std::string_view version,
                       std::string_view cipher);

  // mtlsd_internal_errors_total{component}: exceptions that reached the top of a loop that must
  // keep running (the admin server; a worker's accept loop counts its own in accept_errors and
  // connections_total{result="error"}). Created on first use.
  prometheus::Counter& internal_errors(const std::string& component);

  prometheus::Gauge& last_reload_success_time() { return *last_reload_success_; }
  // A reload's outcome, for mtlsd_config_last_reload_successful: 1 after start and while the
  // last reload of every source succeeded, 0 while one's last reload failed (like Prometheus's
  // prometheus_config_last_reload_successful), so an alert on it holds until that source
  // reloads successfully. Sources reload independently — the configuration files and each
  // Workload API socket (`source`: "config", "spiffe:PATH") — so one's success does not hide
  // another's standing failure (review: an SVID rotation cleared a failed file reload). Also
  // counts mtlsd_config_reloads_total. Control thread only.
  void reload_outcome(const std::string& source, bool succeeded);
  // A source no longer reloads (a Workload API socket no listener names any more).
  void forget_reload_source(const std::string& source);
  // mtlsd_access_log_dropped_total (incremented through log::set_access_drop_hook).
  prometheus::Counter& access_log_dropped() { return *access_log_dropped_; }
  // mtlsd_config_file_checks_total{result="changed|unchanged"}: looks at the watched files
  // after an event or poll; only "changed" ones lead to a reload.
  prometheus::Counter& file_checks(bool changed) {
    return changed ? *file_checks_changed_ : *file_checks_unchanged_;
  }

  // Replaces every certificate-expiry series (called after each successful runtime build).
  struct cert_series {
    std::string listener, role, subject, serial;
    double not_after;
  };
  void set_certificate_expiry(const std::vector<cert_series>& certs);

  // mtlsd_crl_next_update_timestamp_seconds{issuer}. Each owner of CRLs sets its own series
  // under a `source` key ("files" for every listener's crl_files, replaced on each reload;
  // "crl URL" for a CRL fetched from a distribution point; an empty map removes the source). An
  // issuer's gauge is the latest nextUpdate over every source: the freshest CRL mtlsd holds for
  // it, so the gauge passes time() only when no CRL of that issuer is current.
  void set_crl_next_update(const std::string& source,
                           const std::map<std::string, double>& by_issuer);
  // The CRL files' series (source "files").
  void set_crl_next_update(const std::map<std::string, double>& by_issuer) {
    set_crl_next_update("files", by_issuer);
  }

  // mtlsd_upstream_up{listener}: 1 when the listener's upstream_check last succeeded, 0 when it
  // failed. Only listeners with a check have a series (from their first result on); the
  // checker (daemon/upstream_checks.hpp) adds and removes them.
  prometheus::Family<prometheus::Gauge>& upstream_up() { return *upstream_up_; }

 private:
  void remove_listener_series(const listener_metrics& m);
  void drain_histograms();  // every listener's, before a scrape

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<prometheus::Collectable> collectable_;
  prometheus::Family<prometheus::Counter>* connections_;
  prometheus::Family<prometheus::Gauge>* active_;
  prometheus::Family<prometheus::Counter>* handshake_failures_;
  prometheus::Family<prometheus::Counter>* connections_closed_;
  prometheus::Family<prometheus::Histogram>* handshake_duration_;
  prometheus::Family<prometheus::Histogram>* connection_duration_;
  prometheus::Family<prometheus::Counter>* bytes_;
  prometheus::Family<prometheus::Counter>* upstream_failures_;
  prometheus::Family<prometheus::Counter>* resumptions_;
  prometheus::Family<prometheus::Counter>* over_limit_;
  prometheus::Family<prometheus::Counter>* accept_errors_;
  prometheus::Family<prometheus::Counter>* internal_errors_;
  prometheus::Family<prometheus::Counter>* tls_handshakes_;
  prometheus::Family<prometheus::Gauge>* cert_expiry_;
  prometheus::Family<prometheus::Counter>* reloads_;
  prometheus::Family<prometheus::Gauge>* last_reload_;
  prometheus::Family<prometheus::Counter>* revocation_checks_;
  prometheus::Family<prometheus::Gauge>* crl_next_update_;
  prometheus::Family<prometheus::Gauge>* upstream_up_;
  prometheus::Family<prometheus::Gauge>* build_info_;
  prometheus::Family<prometheus::Counter>* http_requests_;
  prometheus::Family<prometheus::Histogram>* http_duration_;
  prometheus::Counter* reload_success_;
  prometheus::Counter* reload_failure_;
  prometheus::Gauge* last_reload_success_;
  prometheus::Gauge* last_reload_successful_;
  std::set<std::string> failing_reload_sources_;
  prometheus::Counter* access_log_dropped_;
  prometheus::Counter* file_checks_changed_;
  prometheus::Counter* file_checks_unchanged_;

  std::uint64_t id_;  // keys per-thread caches; unique for the process lifetime
  std::mutex mutex_;
  std::map<std::string, std::weak_ptr<listener_metrics>> listeners_;
  std::vector<prometheus::Gauge*> cert_gauges_;
  std::map<std::string, std::map<std::string, double>> crl_sources_;  // source -> issuer -> time
  std::map<std::string, prometheus::Gauge*> crl_gauges_;              // by issuer
};

}  // namespace mtlsd::metrics
