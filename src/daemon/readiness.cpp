// /readyz: whether this process should get traffic, and why not.
#include <ctime>
#include <string>
#include <vector>

#include "daemon_state.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon::detail {

namespace {

// "" when every certificate of `chain` (leaf first) is within its validity at `now`; else the
// first one that is not, named as `mtlsd check` names it, with the leaf it serves.
std::string served_chain_problem(const tls::cert_chain& chain, std::time_t now) {
  for (std::size_t i = 0; i < chain.size(); ++i) {
    X509* c = chain[i].get();
    const char* problem = tls::not_after_of(c) < now    ? "has expired"
                          : tls::not_before_of(c) > now ? "is not valid yet"
                                                        : nullptr;
    if (!problem) continue;
    if (i == 0) return "certificate " + tls::subject_of(c) + " " + problem;
    return "intermediate " + tls::subject_of(c) + " " + problem + " (in the chain of certificate " +
           tls::subject_of(chain.front().get()) + ")";
  }
  return {};
}

}  // namespace

admin::readiness daemon::readiness(admin::readiness_checks checks) const {
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
    // Every chain served (tls.certificates has one per entry, the first of them in own_chain
    // too): not ready when none is usable; one that is not is named in the body while another
    // still serves. A chain is usable only while every certificate in it is within its validity,
    // its intermediates too: clients refuse a chain through an expired intermediate as they do
    // an expired leaf (review: 200 while every client failed), and `mtlsd check` refuses it.
    std::vector<const tls::cert_chain*> served;
    for (const auto& c : l->tls.own_chains)
      if (!c.empty()) served.push_back(&c);
    if (served.empty() && !l->tls.own_chain.empty()) served.push_back(&l->tls.own_chain);
    std::size_t invalid = 0;
    std::string why;
    for (const auto* c : served) {
      std::string line = served_chain_problem(*c, now);
      if (line.empty()) continue;
      ++invalid;
      line = "listener " + l->cfg.name + ": " + line;
      if (why.empty()) why = line;
      invalid_details += line + "\n";
    }
    if (!served.empty() && invalid == served.size()) return {false, why, {}};
    if (const auto failure = l->signing->failure(); !failure.empty())
      return {false, "listener " + l->cfg.name + ": our private key does not sign: " + failure, {}};
  }
  // /readyz?exclude=upstream: a native sidecar's startupProbe, which must pass before the kubelet
  // starts the app its upstream checks reach (review: with /readyz the pod never started).
  if (checks == admin::readiness_checks::all_but_upstream) return {true, {}, invalid_details};
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
