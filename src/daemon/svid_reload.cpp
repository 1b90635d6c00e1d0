// A new X.509-SVID (or bundle) from a SPIFFE Workload API socket, swapped into the listeners
// that use it, and the listeners a reload moved to another socket, which wait for its first
// SVID while they serve as before. Runs on the control thread only.
//
// An SVID update never reads a file: it is applied on top of what the last successful file
// reload built (runtime/svid_graft.hpp), so a CA or CRL file that a file reload refused holds
// up no rotation, and no file change that a reload refused goes live with an SVID. File reloads
// and SVID updates are independent, and both build with the latest of the other's.
#include <algorithm>
#include <utility>

#include "daemon_state.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon::detail {
namespace {

bool uses(const config::listener& l, const std::string& socket) {
  return l.tls.spiffe.enabled && l.tls.spiffe.socket_path == socket;
}

// Whether `l` serves a certificate (or, in client mode, connects): a listener of CA and key files
// does, one of tls.spiffe once an SVID arrived.
bool serves(const runtime::listener_runtime& l) {
  return !l.cfg.tls.spiffe.enabled || l.svid;
}

// The entry of `v` (a configuration's listeners, or a runtime's) named `name` becomes `by`.
template <typename T, typename NameOf>
void replace_named(std::vector<T>& v, const std::string& name, const T& by, NameOf name_of) {
  for (auto& e : v)
    if (name_of(e) == name) e = by;
}

const std::string& config_name(const config::listener& l) {
  return l.name;
}
const std::string& runtime_name(const std::shared_ptr<const runtime::listener_runtime>& l) {
  return l->cfg.name;
}

}  // namespace

// A listener that serves now and that the reload leaves without a certificate (another socket,
// or tls.spiffe in place of files) would fail every handshake until that socket answers, and
// with a wrong path for good. It keeps serving as it is instead, until the socket's first SVID
// (as Envoy keeps a listener until its replacement is warm). One new to the reload, or that
// serves nothing now either, is served as at start (not ready until its SVID); so is one the
// reload also moves to another address, which is bound there at once.
std::map<std::string, waiting_listener> daemon::hold_back_waiting(runtime::runtime& next) const {
  std::map<std::string, waiting_listener> out;
  for (auto& lr : next.listeners) {
    if (serves(*lr)) continue;
    const auto old = runtime_->find(lr->cfg.name);
    if (!old || !serves(*old) || !(old->cfg.listen == lr->cfg.listen)) continue;
    const auto before = waiting_.find(lr->cfg.name);
    const bool same_wait =
        before != waiting_.end() && uses(before->second.built->cfg, lr->cfg.tls.spiffe.socket_path);
    out[lr->cfg.name] = {lr, same_wait ? before->second.since : steady::now()};
    replace_named(next.cfg.listeners, lr->cfg.name, old->cfg, config_name);
    lr = old;
  }
  return out;
}

void daemon::reconcile_svid_sources() {
  config::configuration wanted = runtime_->cfg;
  for (const auto& [name, w] : waiting_)
    wanted.listeners.push_back(w.built->cfg);
  svids_->reconcile(wanted);
}

// A new X.509-SVID or bundle: swapped in like a file reload (connections keep the runtime they
// started with, unless the new trust refuses their peer; new ones get the new certificate), but
// only for the listeners that use this socket — those serving, and those waiting for it — and
// without reading the configuration or any file again.
// Called by svid_sources with the new SVID already in latest(); returns why not, or "".
std::string daemon::on_svid(const std::string& socket, const svid_sources::svid_ptr& previous) {
  if (draining_) {
    log_ignored_while_draining("spiffe");
    return {};
  }
  const auto started = steady::now();
  config::configuration affected = runtime_->cfg;
  affected.listeners.clear();
  runtime::runtime from;  // what each is built on (build_options::files_from)
  for (const auto& lr : runtime_->listeners)
    if (uses(lr->cfg, socket)) {
      affected.listeners.push_back(lr->cfg);
      from.listeners.push_back(lr);
    }
  for (const auto& [name, w] : waiting_)
    if (uses(w.built->cfg, socket)) {
      affected.listeners.push_back(w.built->cfg);
      from.listeners.push_back(w.built);
    }
  auto opts = build_options();
  opts.files_from = &from;
  runtime_ptr built;
  try {
    built = runtime::build(affected, opts);
  } catch (const config::config_error& e) {
    return errors_of(e);
  }
  auto next = std::make_shared<runtime::runtime>(*runtime_);
  next->generation = built->generation;
  std::vector<std::string> updated;
  std::vector<std::pair<std::string, steady::time_point>> applied;  // waited, and since when
  for (const auto& fresh : built->listeners) {
    const std::string& name = fresh->cfg.name;
    if (auto w = waiting_.find(name); w != waiting_.end() && uses(w->second.built->cfg, socket)) {
      replace_named(next->cfg.listeners, name, fresh->cfg, config_name);
      applied.emplace_back(name, w->second.since);
      waiting_.erase(w);
    }
    replace_named(next->listeners, name, fresh, runtime_name);
    listeners_.publish(fresh);  // new connections use it from now on
    updated.push_back(name);
  }
  const auto rotated = rotated_certificates(*runtime_, *next);
  const auto served = std::exchange(runtime_, next);
  // A bundle that no longer trusts a peer's CA (a federated trust domain withdrawn) closes its
  // open connections, as a file reload that removes a CA does; so do the rules a waiting
  // listener's reload brought, now that they apply.
  rejudge_all(workers_, served, next);
  for (const auto& w : runtime::warnings(*built))
    log::warn(w.str());
  metrics_.set_certificate_expiry(runtime::certificate_series(*next));
  metrics_.reload_outcome(svid_sources::reload_source(socket), true);
  metrics_.last_reload_success_time().Set(unix_now());
  const auto& now = *svids_->latest().at(socket);
  const std::string serial = tls::serial_of(now.svid.chain.front().get());
  for (const auto& [name, since] : applied)
    log::info("listener waited for its new SPIFFE Workload API socket: it now serves as reloaded",
              {{"listener", name},
               {"socket", "unix:" + socket},
               {"serial", serial},
               {"waited_ms", elapsed_ms(since)}});
  log::info("reloaded",
            {{"trigger", "spiffe"},
             {"result", "success"},
             {"socket", socket},
             {"spiffe_id", now.spiffe_id},
             {"serial", serial},
             {"previous_serial",
              previous ? tls::serial_of(previous->svid.chain.front().get()) : std::string()},
             {"bundle_cas", static_cast<std::int64_t>(now.bundle.size())},
             {"federated_trust_domains", static_cast<std::int64_t>(now.federated.size())},
             {"listeners_updated", join(updated)},
             {"certificates_rotated", join(rotated)},
             {"duration_ms", elapsed_ms(started)}});
  if (!applied.empty()) {
    // What the waiting listeners' reload changed beside their socket follows them now.
    for (const auto& [name, since] : applied)
      if (const auto old = served->find(name); old && old->staple) old->staple->retire();
    upstream_checks_->update(next->cfg);
    recheck_crl_files(*next, served.get());
    metrics_.set_crl_next_update(runtime::crl_next_updates(*next));
    reconcile_svid_sources();  // the socket they left, when nothing else uses it, is let go
  }
  return {};
}

}  // namespace mtlsd::daemon::detail
