#pragma once
// Private to the daemon's own files: the one object that owns everything the control thread
// runs, and the helpers those files share. startup.cpp starts it and runs the control loop;
// reload.cpp swaps in a new configuration, svid_reload.cpp a new SVID; staples.cpp keeps stapling
// and CRL rechecks in step with the runtime; readiness.cpp answers /readyz; drain.cpp handles the
// signals and stops it. The sockets served live in listener_set, the threads in worker and
// revocation_thread.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/admin/admin_server.hpp"
#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/daemon/expiry_monitor.hpp"
#include "mtlsd/daemon/file_watcher.hpp"
#include "mtlsd/daemon/listener_set.hpp"
#include "mtlsd/daemon/memory_trim.hpp"
#include "mtlsd/daemon/revocation_thread.hpp"
#include "mtlsd/daemon/sandbox.hpp"
#include "mtlsd/daemon/svid_sources.hpp"
#include "mtlsd/daemon/upstream_checks.hpp"
#include "mtlsd/daemon/watchdog.hpp"
#include "mtlsd/daemon/worker.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/proxy/open_sessions.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::daemon::detail {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;
using runtime_ptr = std::shared_ptr<const runtime::runtime>;

// The settings only a restart applies, as the process started with them: a reload that changes
// one is warned of, and so is every later one until it is set back (review: a reload setting
// workers back to the running count still warned).
struct restart_only_settings {
  unsigned workers = 0;       // running
  unsigned auto_workers = 0;  // what workers: 0 (the CPUs this process may use) came to at start
  std::vector<config::address> dns_servers;
  std::optional<config::address> admin;
};

// See daemon::waiting_.
struct waiting_listener {
  std::shared_ptr<const runtime::listener_runtime> built;
  steady::time_point since;
};

class daemon {
 public:
  explicit daemon(std::string path) : config_path_(std::move(path)), signals_(control_) {}
  // Starts everything, runs the control loop until drained, stops the threads. Returns the
  // process exit code.
  int run();

 private:
  // startup.cpp
  runtime_ptr load_first();
  bool open_and_enter_sandbox(const runtime::runtime& rt);
  void go_live(runtime_ptr rt);
  void start_workers(unsigned n);
  runtime::build_options build_options();
  void apply_logging(const config::configuration& cfg);
  void start_admin(const config::address& a);

  // reload.cpp (on_svid and what follows it: svid_reload.cpp)
  void on_files_checked(const std::vector<std::string>& changed, std::string_view trigger);
  void reload(const std::string& trigger, std::vector<std::string> changed = {});
  // The configuration's warnings (config::reader::warning) go to `warnings`, to be logged once
  // the reload is published.
  runtime_ptr load_next(std::string& why, config::diagnostics& warnings);
  void publish(const runtime_ptr& next);
  std::string on_svid(const std::string& socket, const svid_sources::svid_ptr& previous);
  // The listeners of `next` that would serve no certificate until their new Workload API socket
  // answers: `next` gets back the ones serving now (configuration and runtime), and they are
  // returned, by name, to wait in waiting_.
  std::map<std::string, waiting_listener> hold_back_waiting(runtime::runtime& next) const;
  // The Workload API clients: those the runtime's listeners and the waiting ones name.
  void reconcile_svid_sources();

  // staples.cpp
  std::vector<std::shared_ptr<const runtime::listener_runtime>> start_stapling(
      const runtime::runtime& rt);
  void recheck_crl_files(const runtime::runtime& rt, const runtime::runtime* previous);

  // readiness.cpp
  admin::readiness readiness(admin::readiness_checks checks) const;
  admin::readiness upstream_readiness() const;

  // drain.cpp
  void wait_for_signal();
  void drain(const std::string& trigger);
  void kill_open_sessions();
  void wait_for_drain();
  void stop_control_loop(int open);

  std::string config_path_;
  asio::io_context control_{1};
  asio::signal_set signals_;
  metrics::registry metrics_;
  // Before workers_: their sessions count themselves in it while the workers live.
  proxy::open_sessions open_sessions_;
  std::vector<std::unique_ptr<worker>> workers_;
  // After workers_: joined (and so done posting to workers) before they are destroyed.
  std::unique_ptr<revocation_thread> revocation_;
  runtime_ptr runtime_;
  // A listener a reload moved to another Workload API socket (or from files to tls.spiffe)
  // while it served: built from that reload's configuration, without a certificate, it waits
  // here for that socket's first X.509-SVID while runtime_ keeps the listener as it was (as
  // Envoy warms a listener); on_svid swaps it in. By name; the next reload replaces them all.
  std::map<std::string, waiting_listener> waiting_;
  listener_set listeners_{control_, workers_};
  std::unique_ptr<admin::server> admin_;
  std::unique_ptr<expiry_monitor> expiry_;
  std::unique_ptr<upstream_checks> upstream_checks_;
  std::unique_ptr<file_watcher> watcher_;
  std::unique_ptr<watchdog> watchdog_;
  std::unique_ptr<memory_trimmer> trimmer_;
  sandbox::state sandbox_;
  restart_only_settings started_with_;
  bool draining_ = false;
  bool killed_ = false;  // open sessions were told to close (drain timeout, a second signal)
  steady::time_point drain_deadline_{};
  steady::time_point hard_deadline_{};
  // Expires at the drain's next deadline; cancelled early when the last session ends.
  asio::steady_timer drain_timer_{control_};
  // tls.spiffe: the Workload API clients and their latest SVIDs. Last: destroyed (its clients
  // joined) first, while everything their posted updates touch is alive.
  std::unique_ptr<svid_sources> svids_ = std::make_unique<svid_sources>(
      control_, metrics_,
      [this](const std::string& socket, const svid_sources::svid_ptr& previous) {
        return on_svid(socket, previous);
      });
};

// reload.cpp: the files a configuration depends on (itself and every file it names), and how
// to watch them.
std::vector<std::string> watched_files(const config::configuration& cfg);
file_watcher::options watch_options(const config::configuration& cfg);
// reload.cpp, for svid_reload.cpp too: the errors (not the warnings) of a configuration that
// does not build, as one line; ...
std::string errors_of(const config::config_error& e);
// ... the line of a reload asked for while draining; ...
void log_ignored_while_draining(std::string_view trigger);
// ... every worker re-judges its open connections by `next`, once told `previous`.
void rejudge_all(const std::vector<std::unique_ptr<worker>>& workers,
                 const std::shared_ptr<const runtime::runtime>& previous,
                 const std::shared_ptr<const runtime::runtime>& next);

// startup.cpp
std::string join(const std::vector<std::string>& v, const char* sep = ",");
std::int64_t elapsed_ms(steady::time_point since);
double unix_now();
void warn_insecure(const runtime::runtime& rt);
// "inbound:1002->1005" for every certificate a listener that kept its name now serves in place of
// another (tls.certificates: entry by entry, in order).
std::vector<std::string> rotated_certificates(const runtime::runtime& before,
                                              const runtime::runtime& after);
// staples.cpp: a listener that serves the same certificate as before starts with the previous
// runtime's staple; the previous runtime's staples are no longer refreshed.
void inherit_staples(const runtime::runtime& rt, const runtime::runtime& previous);
void retire_staples(const runtime::runtime& previous);
// staples.cpp: the first fetch of each of `started` whose leaf `previous` did not staple is
// waited for, bounded, before the runtime is published.
void await_first_staples(
    const std::vector<std::shared_ptr<const runtime::listener_runtime>>& started,
    const runtime::runtime& previous);

}  // namespace mtlsd::daemon::detail
