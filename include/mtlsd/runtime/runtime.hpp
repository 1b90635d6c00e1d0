#pragma once
// The runtime snapshot: configuration plus everything built from it (TLS contexts, trust stores,
// allow lists, metric handles). Immutable once built and shared by std::shared_ptr<const ...>:
// a reload builds a whole new one off the connection path and publishes it; each connection
// keeps the listener_runtime it started with, so old contexts live exactly as long as their
// connections. A reload does not swap the rules under a connection: it judges each admitted
// peer by the new ones and closes those they refuse (session_control::rejudge); only HTTP
// mode's per-request Host check then reads the new rules (session_control::judged_by).
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/runtime/signing_health.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/revocation/policy.hpp"
#include "mtlsd/tls/revocation/stapling.hpp"
#include "mtlsd/tls/spiffe/x509_context.hpp"

namespace mtlsd::tls::revocation {
class service;
}

namespace mtlsd::runtime {

struct listener_runtime {
  config::listener cfg;
  std::uint64_t generation = 0;  // the build that made it (runtime::generation)
  // revocation.stapling: the response served to clients, kept fresh by the revocation service
  // (which holds it weakly). Declared before `tls` so that it outlives the context's callback.
  std::shared_ptr<tls::revocation::staple_slot> staple;
  tls::tls_context tls;
  metrics::listener_metrics* metrics = nullptr;  // never null in a daemon; null in `check`
  // Keeps `metrics` (and its series on /metrics) alive while this runtime is in use.
  std::shared_ptr<metrics::listener_metrics> metrics_holder;
  metrics::registry* registry = nullptr;
  tls::revocation::policy revocation;
  // Answers that need the network (OCSP, distribution points), and what client mode learns
  // from a stapled "revoked"; process-wide, outlives every runtime. Null in `check`, and in
  // server mode wherever the policy needs no network and no staple.
  tls::revocation::service* revocation_service = nullptr;
  // tls.spiffe: the X.509-SVID and bundles `tls` was built from; null before the first arrived.
  std::shared_ptr<const tls::spiffe::x509_context> svid;
  // Whether our private key still signs (a key in a token can stop); workers report, /readyz
  // asks. Shared, not const: the runtime is.
  std::shared_ptr<signing_health> signing = std::make_shared<signing_health>();
};

struct runtime {
  config::configuration cfg;
  // Larger for every build (0: not built by build()); a copy that swaps in some listeners of a
  // later build takes that build's. Tells an older runtime from a newer one across workers.
  std::uint64_t generation = 0;
  std::vector<std::shared_ptr<const listener_runtime>> listeners;

  std::shared_ptr<const listener_runtime> find(std::string_view name) const;
};

struct build_options {
  metrics::registry* registry = nullptr;           // where listeners get their metric handles
  tls::revocation::service* revocation = nullptr;  // for listeners with OCSP / distribution points
  std::time_t now = 0;                             // 0 = the current time
  // `mtlsd verify` judges a peer's certificate, not ours: it skips our own validity checks.
  bool check_own_validity = true;
  // tls.spiffe: the latest update from each Workload API, by socket path (config
  // spiffe_options::socket_path). A listener whose socket has none yet is built without a
  // certificate (it is not ready until one arrives).
  std::map<std::string, std::shared_ptr<const tls::spiffe::x509_context>> svids;
  // On a reload: the runtime serving now. A certificate of ours outside its validity that this
  // runtime already serves on the same listener does not stop the build (warnings() names it):
  // refusing would change nothing about what peers see, but would keep every other change —
  // a new CRL, a removed CA, a tightened rule — from taking effect until it is renewed.
  const runtime* serving = nullptr;
  // An X.509-SVID update: each listener is built from the one of its name here (serving, or
  // built by a reload and waiting for its first SVID) with its socket's SVID swapped in, and
  // its files are not read again (runtime/svid_graft.hpp).
  const runtime* files_from = nullptr;
};

// Builds every listener. Throws config::config_error listing every problem of every listener
// (not just the first) — the same checks `mtlsd check` runs: files load, keys match their
// certificates, chains are in order, our own certificates are within their validity period.
std::shared_ptr<const runtime> build(const config::configuration& cfg,
                                     const build_options& opts = {});

// Warnings that do not stop a runtime from working: certificates expiring within 30 days, ours
// already expired or not yet valid that a reload let through (build_options::serving),
// private keys readable by others or by a group this process is not in (once per file and
// mode in a process: see key_permissions.hpp).
config::diagnostics warnings(const runtime& rt, std::time_t now = 0);

// How far ahead of a certificate's notAfter to warn of it (logs and `check`): 30 days, except
// for what the SPIFFE Workload API rotates by itself (a listener's SVID; its trusted CAs when
// they come from bundles), which only warns once expired: an SVID lives hours, and "expires in
// 0 days" on every rotation would be noise.
struct expiry_windows {
  std::time_t own;
  std::time_t trust;
};
expiry_windows expiry_warning_windows(const config::listener& l);

// nextUpdate of every CRL a runtime holds, by issuer (the latest when several), for the gauge.
std::map<std::string, double> crl_next_updates(const runtime& rt);

// Every certificate a runtime serves or trusts, for the expiry gauges.
std::vector<metrics::registry::cert_series> certificate_series(const runtime& rt);

}  // namespace mtlsd::runtime
