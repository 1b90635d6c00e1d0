// /readyz: whether this process should get traffic, and why not.
#include <ctime>

#include "daemon_state.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon::detail {

admin::readiness daemon::readiness() const {
  if (draining_) return {false, "draining", {}};
  if (!runtime_) return {false, "starting", {}};
  const std::time_t now = std::time(nullptr);
  for (const auto& l : runtime_->listeners) {
    if (!listeners_.is_bound(l->cfg.name))
      return {false, "listener " + l->cfg.name + " is not bound", {}};
    if (l->cfg.tls.spiffe.enabled && !l->svid) {
      const auto& sp = l->cfg.tls.spiffe;
      const auto why = svids_->last_error(sp.socket_path);
      return {false,
              "listener " + l->cfg.name +
                  ": waiting for the first X.509-SVID from the SPIFFE Workload API at unix:" +
                  sp.socket_path + (why.empty() ? std::string() : " (" + why + ")"),
              {}};
    }
    if (!l->tls.own_chain.empty() && tls::not_after_of(l->tls.own_chain.front().get()) < now)
      return {false,
              "listener " + l->cfg.name + ": certificate " +
                  tls::subject_of(l->tls.own_chain.front().get()) + " has expired",
              {}};
  }
  return upstream_readiness();
}

// listeners[].upstream_check: not ready only when EVERY check fails (one healthy upstream
// still serves traffic); a check that has not answered yet does not fail. Each listener's
// state is listed in the body either way.
admin::readiness daemon::upstream_readiness() const {
  admin::readiness r{true, {}, {}};
  if (!upstream_checks_) return r;
  const auto all = upstream_checks_->statuses();
  bool every_one_down = !all.empty();
  for (const auto& s : all) {
    every_one_down = every_one_down && s.state == upstream_checks::health::down;
    r.details += "upstream " + s.listener + " (" + s.upstream + "): " + to_string(s.state);
    if (!s.detail.empty()) r.details += ": " + s.detail;
    r.details += "\n";
  }
  if (every_one_down) {
    r.ready = false;
    r.why = all.size() == 1 ? "the upstream check fails" : "every upstream check fails";
  }
  return r;
}

}  // namespace mtlsd::daemon::detail
