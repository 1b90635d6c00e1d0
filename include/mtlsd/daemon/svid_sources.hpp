#pragma once
// tls.spiffe on the daemon's side: one SPIFFE Workload API client per agent socket that any
// listener names, and the latest usable X.509-SVID (with bundles) each has delivered. Owned by the
// daemon and used on its control thread only: updates arrive on the clients' threads, are parsed
// there, and are posted to the control thread, which stores them and asks the daemon to swap
// them in (`apply`). The last SVID is kept when the stream fails, so it serves until it expires.
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "mtlsd/config/config.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/spiffe/workload_client.hpp"
#include "mtlsd/tls/spiffe/x509_context.hpp"

namespace mtlsd::daemon {

class svid_sources {
 public:
  using svid_ptr = std::shared_ptr<const tls::spiffe::x509_context>;
  // Called on the control thread once latest() holds the new SVID for `socket`: rebuilds and
  // publishes what uses it. Returns "" on success, otherwise why (then the previous SVID is
  // restored and the update counts as a failed reload).
  using apply_fn = std::function<std::string(const std::string& socket, const svid_ptr& previous)>;

  svid_sources(boost::asio::io_context& control, metrics::registry& metrics, apply_fn apply);
  ~svid_sources();  // stops (cancels and joins) every client
  svid_sources(const svid_sources&) = delete;
  svid_sources& operator=(const svid_sources&) = delete;

  // Starts clients for sockets `cfg` names that have none, stops those it no longer names (and
  // forgets their SVIDs). gRPC starts threads: call only after sandbox::enter.
  void reconcile(const config::configuration& cfg);
  // Stops every client (before the workers they feed are stopped).
  void stop();

  // By socket path: what runtime::build_options::svids takes.
  const std::map<std::string, svid_ptr>& latest() const { return svids_; }
  // Why the stream for `socket` is down or its last update was refused; "" when fine.
  std::string last_error(const std::string& socket) const;

  // The socket's name among the sources of reloads (metrics::registry::reload_outcome).
  static std::string reload_source(const std::string& socket) { return "spiffe:" + socket; }

 private:
  enum class failure { refused, denied, unavailable };
  // An update that came before its SVID's notBefore: applied when that time comes (or dropped
  // for a later update, or when one is refused).
  struct held_update {
    svid_ptr svid;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };

  void on_update(const std::string& socket, svid_ptr svid);
  void on_error(const std::string& socket, const std::string& why, failure kind);
  // Serves `svid` now, or holds it until it is valid.
  void admit(const std::string& socket, svid_ptr svid);
  // Whether `svid` waits for its notBefore instead (then held_ has it).
  bool hold_until_valid(const std::string& socket, const svid_ptr& svid, const svid_ptr& previous);
  // Arms `h`'s timer for its notBefore (an hour at most at a time), then admits it.
  void wait_for_hold(const std::string& socket, held_update& h);
  void apply(const std::string& socket, svid_ptr svid, const svid_ptr& previous);

  boost::asio::io_context& control_;
  metrics::registry& metrics_;
  apply_fn apply_;
  std::map<std::string, svid_ptr> svids_;
  std::map<std::string, std::string> errors_;
  std::set<std::string> refused_;  // sockets whose last update was refused
  // The trust domains (bare) the listeners of each socket trust beside their own: a federated
  // bundle that does not parse refuses an update only when one of them needs it.
  std::map<std::string, std::set<std::string>> trust_domains_;
  std::map<std::string, held_update> held_;
  // Tells a hold's timer handler, queued before this was destroyed, that it is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  // Last: destroyed (so joined) first; the clients post to control_.
  std::map<std::string, std::unique_ptr<spiffe::workload_client>> clients_;
};

}  // namespace mtlsd::daemon
