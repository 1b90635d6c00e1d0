// /readyz: whether this process should get traffic, and why not.
#include <ctime>
#include <string>
#include <vector>

#include "daemon_state.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon::detail {

admin::readiness daemon::readiness() const {
  if (draining_) return {false, "draining", {}};
  if (!runtime_) return {false, "starting", {}};
  const std::time_t now = std::time(nullptr);
  std::string invalid_details;  // certificates out of their validity on listeners still served
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
    // Every certificate served (tls.certificates has one per entry, the first of them in
    // own_chain too): not ready when none is within its validity; one that is not is named in
    // the body while another still serves.
    std::vector<const tls::cert_chain*> served;
    for (const auto& c : l->tls.own_chains)
      if (!c.empty()) served.push_back(&c);
    if (served.empty() && !l->tls.own_chain.empty()) served.push_back(&l->tls.own_chain);
    std::size_t invalid = 0;
    std::string why;
    for (const auto* c : served) {
      X509* leaf = c->front().get();
      const char* problem = tls::not_after_of(leaf) < now    ? "has expired"
                            : tls::not_before_of(leaf) > now ? "is not valid yet"
                                                             : nullptr;
      if (!problem) continue;
      ++invalid;
      const std::string line =
          "listener " + l->cfg.name + ": certificate " + tls::subject_of(leaf) + " " + problem;
      if (why.empty()) why = line;
      invalid_details += line + "\n";
    }
    if (!served.empty() && invalid == served.size()) return {false, why, {}};
    if (const auto failure = l->signing->failure(); !failure.empty())
      return {false, "listener " + l->cfg.name + ": our private key does not sign: " + failure, {}};
  }
  auto r = upstream_readiness();
  r.details = invalid_details + r.details;
  return r;
}

// listeners[].upstream_check: not ready only when EVERY listener's check fails (one healthy
// upstream still serves traffic, and a listener without a check is taken to serve: review, one
// failing check beside an unchecked listener took the whole pod out of its Service); a check
// that has not answered yet does not fail. Each checked listener's state is listed in the body
// either way.
admin::readiness daemon::upstream_readiness() const {
  admin::readiness r{true, {}, {}};
  if (!upstream_checks_) return r;
  const auto all = upstream_checks_->statuses();
  bool every_one_down = !all.empty() && runtime_ && all.size() >= runtime_->listeners.size();
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
