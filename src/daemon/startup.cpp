// Starting the daemon: the first configuration, the threads, the listeners, the sandbox, then
// the control loop until a drain stops it.
#include <malloc.h>

#include <csignal>
#include <ctime>
#include <filesystem>

#include "daemon_state.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/daemon/cpu_count.hpp"
#include "mtlsd/daemon/daemon.hpp"
#include "mtlsd/daemon/fd_limit.hpp"
#include "mtlsd/daemon/sd_notify.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/tls/record_buffers.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::daemon {
namespace detail {
namespace {

// Read by each thread's resolver when it is first used: set before any worker or the
// revocation thread resolves a name. Changes need a restart (a reload says so).
void apply_dns(const config::configuration& cfg) {
  net::resolver_options o;
  for (const auto& server : cfg.dns.servers)
    o.servers.push_back({server.host, server.port});
  net::set_resolver_options(std::move(o));
}

// HTTP_PROXY / NO_PROXY and friends for OCSP and CRL fetches, read once: a running process
// does not see a changed environment, so a change needs a restart.
bool apply_proxy_environment() {
  net::proxy_settings p;
  try {
    p = net::proxy_from_environment();
  } catch (const std::exception& e) {
    log::error("cannot use the proxy environment; not starting", {{"error", e.what()}});
    return false;
  }
  if (p.http)
    log::info("OCSP and CRL fetches go through an HTTP proxy", {{"proxy", p.http->authority()},
                                                                {"from", p.http_variable},
                                                                {"no_proxy", join(p.no_proxy)}});
  else if (p.https)
    log::warn(p.https_variable +
                  " is set, but it applies to https:// URLs and OCSP/CRL URLs are http://: "
                  "set HTTP_PROXY (or http_proxy) to send revocation fetches through a proxy",
              {{"proxy", p.https->authority()}});
  net::set_fetch_proxy(std::move(p));
  return true;
}

}  // namespace

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : sep) + x;
  return s;
}

std::int64_t elapsed_ms(steady::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - since).count();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void warn_insecure(const runtime::runtime& rt) {
  for (const auto& l : rt.listeners)
    if (l->cfg.mode == config::listener_mode::client && l->cfg.server_auth.insecure_skip_verify)
      log::warn(
          "server_auth.insecure_skip_verify is ON: the remote's certificate is NOT verified; "
          "anyone on the path can impersonate it",
          {{"listener", l->cfg.name}});
}

int daemon::run() {
#if defined(__SANITIZE_THREAD__)
  // GCC 12's ThreadSanitizer makes a thread's signal state at its first intercepted blocking
  // call, without an atomic swap: a signal arriving while this thread makes it (at the control
  // loop's first epoll_wait, right after READY=1) is recorded in a copy that is then lost, and
  // the daemon never sees that SIGTERM (review: test_shutdown hung once in CI). One blocking
  // call now, before any signal handler or thread exists, makes it early.
  const timespec none{0, 0};
  nanosleep(&none, nullptr);
#endif
  // Reload and logrotate signals are taken from the start, and wait until the control loop runs:
  // one sent during start-up is neither lost (ignored) nor the end of the process (their default
  // action). SIGTERM and SIGINT keep their default until the daemon is live (below): a start-up
  // that hangs (a token that never answers) can still be ended. A configuration written during
  // startup is not lost either: the file watcher fingerprints it before it is read (load_first).
  signals_.add(SIGHUP);
  signals_.add(SIGUSR1);  // logrotate: reopen the access-log file
  auto rt = load_first();
  if (!rt) return 1;
  // Asked once, before the sandbox (which hides /sys): the CPUs this process may use, not those
  // the host has (review: under `taskset -c 0` workers: 0 started 2 workers; in a container
  // limited to one CPU on a 64-core node, 64).
  const cpu_count cpus = count_cpus();
  started_with_.auto_workers = cpus.usable;
  const unsigned n = rt->cfg.workers ? rt->cfg.workers : started_with_.auto_workers;
  started_with_.workers = n;
  if (!rt->cfg.workers)
    log::info("workers: 0 starts one per CPU this process may use",
              {{"workers", static_cast<int>(n)},
               {"cpus_online", static_cast<int>(cpus.online)},
               {"cpus_allowed", static_cast<int>(cpus.allowed)},
               cpus.quota ? log::field("cgroup_cpu_limit", static_cast<int>(*cpus.quota))
                          : log::field("cgroup_cpu_limit", log::null_value{})});
  // Two descriptors per connection: raise the soft limit before anything is accepted. A limit
  // that leaves none for connections would have mtlsd say it is ready and refuse every client
  // (review): that is a start-up error.
  if (const fd_budget fds = raise_fd_limit(rt->cfg, n); fds.soft != 0 && fds.for_connections < 2) {
    log::error(
        "the file descriptor limit leaves no room for a connection; raise it (ulimit -n, "
        "systemd's LimitNOFILE=, the container runtime's nofile)",
        {{"limit", fds.soft},
         {"hard_limit", fds.hard},
         {"overhead", fd_overhead(rt->cfg, n)},
         {"needed", fds.needed}});
    return 1;
  }
  // One worker: every thread allocates from malloc's main arena. A worker thread on an arena of
  // its own pays glibc's non-main-arena steps on each of the ~4,000 malloc/free pairs of a full
  // handshake (~45k instructions, callgrind). The other threads (the access-log writer, admin,
  // revocation fetches) allocate far less than a worker, and the log writer's frees of the
  // worker's lines lock the worker's arena whichever it is. Before any worker starts: a thread
  // keeps the arena its first malloc picked. Not measured for contention beyond the bench.
  if (n == 1) mallopt(M_ARENA_MAX, 1);
  start_workers(n);
  if (!open_and_enter_sandbox(*rt)) return 1;
  go_live(std::move(rt));

  signals_.add(SIGTERM);
  signals_.add(SIGINT);
  wait_for_signal();
  expiry_ = std::make_unique<expiry_monitor>(control_, [this] { return runtime_; });
  expiry_->start();
  log::info("ready",
            {{"version", kVersion}, {"workers", static_cast<int>(n)}, {"config", config_path_}});
  notify_ready();
  if (!tls::record_buffers::installed())
    log::debug("OpenSSL's record buffers are not recycled: OpenSSL allocated before main");
  std::vector<asio::io_context*> loops;
  for (auto& w : workers_)
    loops.push_back(&w->context());
  watchdog_ = std::make_unique<watchdog>(control_, std::move(loops));
  watchdog_->start();
  trimmer_ = std::make_unique<memory_trimmer>(control_, [this] { return open_sessions_.count(); });
  trimmer_->start();

  control_.run();
  // Nothing reads signals_ any more. It gives the default actions back as it goes: SIGTERM and
  // SIGINT keep theirs, so that an exit that hangs in the joins below (a worker stuck in a
  // token's call) can still be ended (review: they were written to a pipe nobody read); a late
  // reload or logrotate signal must not turn a clean exit into a death by signal (a few
  // microseconds between the two remain).
  boost::system::error_code ignored;
  signals_.clear(ignored);
  for (const int sig : {SIGHUP, SIGUSR1})
    std::signal(sig, SIG_IGN);
  svids_->stop();  // joined before the workers they feed are stopped
  for (auto& w : workers_)
    w->stop();
  revocation_.reset();
  log::info("stopped");
  return 0;
}

// The first configuration, read and built; null (the reasons logged) when it is not usable.
runtime_ptr daemon::load_first() {
  std::signal(SIGPIPE, SIG_IGN);  // a peer that vanished must be an EPIPE, not a dead process
  log::setup_default();
  log::set_access_drop_hook([c = &metrics_.access_log_dropped()] { c->Increment(); });
  // Resolved once, now: a relative --config is kept as the absolute path it names at start, so
  // that every reload reads the same file even once the working directory has changed or gone
  // (review: a reload then threw out of the control loop and ended the process). Relative paths
  // in the configuration are resolved against its directory as before (config::load_file).
  std::error_code ec;
  if (auto abs = std::filesystem::absolute(config_path_, ec); !ec)
    config_path_ = abs.lexically_normal().string();  // else load_file says what is wrong
  // Fingerprint the configuration before reading it, so that a write racing with startup is
  // seen as a change rather than lost.
  watcher_ = std::make_unique<file_watcher>(
      control_, [this](const std::vector<std::string>& changed, std::string_view trigger) {
        on_files_checked(changed, trigger);
      });
  watcher_->watch({config_path_}, {.inotify = false});
  auto loaded = config::load_file(config_path_);
  for (const auto& p : loaded.problems)
    log::write(p.warning ? spdlog::level::warn : spdlog::level::err, p.str());
  if (!loaded.config) {
    log::error("configuration is not usable; not starting", {{"config", config_path_}});
    return nullptr;
  }
  apply_logging(*loaded.config);
  apply_dns(*loaded.config);
  if (!apply_proxy_environment()) return nullptr;
  revocation_ = std::make_unique<revocation_thread>(metrics_);
  watcher_->watch(watched_files(*loaded.config), watch_options(*loaded.config));
  runtime_ptr rt;
  try {
    rt = runtime::build(*loaded.config, build_options());
  } catch (const config::config_error& e) {
    for (const auto& p : e.problems())
      log::error(p.str());
    log::error("configuration is not usable; not starting", {{"config", config_path_}});
    return nullptr;
  }
  for (const auto& w : runtime::warnings(*rt))
    log::warn(w.str());
  return rt;
}

// The workers, not started yet (a thread started now would not be inside the sandbox).
void daemon::start_workers(unsigned n) {
  for (unsigned i = 0; i < n; ++i)
    workers_.push_back(std::make_unique<worker>(i, open_sessions_));
  // recheck_established: revocations the service learns close the sessions they revoke.
  std::vector<worker*> all_workers;
  for (auto& w : workers_)
    all_workers.push_back(w.get());
  revocation_->service().subscribe([all_workers](tls::revocation::event_ptr e) {
    for (auto* w : all_workers)
      w->revoke(e);
  });
}

// Binds every listener and the admin server, then enters the sandbox. False (logged) when
// something cannot be bound or the sandbox cannot be entered.
bool daemon::open_and_enter_sandbox(const runtime::runtime& rt) {
  try {
    listeners_.open_all(rt);
    if (rt.cfg.admin.listen) start_admin(*rt.cfg.admin.listen);
    // Everything is bound and loaded, and no thread has started yet (each that starts later
    // inherits the sandbox): the one moment to enter it.
    sandbox_ = sandbox::enter(rt.cfg);
  } catch (const std::exception& e) {
    log::error("cannot start", {{"error", e.what()}});
    return false;
  }
  return true;
}

// Publishes the first runtime and starts every thread. `rt` is released here: runtime_ alone
// owns it, so that a reload that removes a listener frees its series.
void daemon::go_live(runtime_ptr rt) {
  // From here on no thread waits on stderr or the access-log file; start-up lines before this
  // were written directly, while nothing served traffic.
  log::start_async();
  runtime_ = rt;
  started_with_.dns_servers = rt->cfg.dns.servers;
  started_with_.admin = rt->cfg.admin.listen;
  metrics_.set_certificate_expiry(runtime::certificate_series(*rt));
  metrics_.set_crl_next_update(runtime::crl_next_updates(*rt));
  metrics_.last_reload_success_time().Set(unix_now());
  warn_insecure(*rt);
  start_stapling(*rt);
  upstream_checks_ = std::make_unique<upstream_checks>(control_, metrics_);
  upstream_checks_->update(rt->cfg);  // probes begin when the control loop runs
  rt.reset();
  revocation_->start();
  for (auto& w : workers_)
    w->start();
  // gRPC starts threads: only now, inside the sandbox.
  svids_->reconcile(runtime_->cfg);
}

runtime::build_options daemon::build_options() {
  runtime::build_options opts;
  opts.registry = &metrics_;
  opts.revocation = &revocation_->service();
  opts.svids = svids_->latest();
  opts.serving = runtime_.get();  // null at start-up: nothing serves yet
  return opts;
}

void daemon::apply_logging(const config::configuration& cfg) {
  log::setup({cfg.log.level, cfg.log.format, cfg.log.access_log_path});
  log::set_access_log_enabled(cfg.log.access_log);
}

void daemon::start_admin(const config::address& a) {
  admin_ = std::make_unique<admin::server>(
      control_, a, metrics_.collectable(),
      [this](admin::readiness_checks checks) { return readiness(checks); });
  admin_->count_errors_in(&metrics_.internal_errors("admin"));
  admin_->start();
  log::info("admin listening", {{"address", admin_->bound_address()}});
}

}  // namespace detail

int run(const std::string& config_path) {
  // Bounded, on every way out, and while the metrics the drop hook counts into are alive (it is
  // destroyed before `d`): a log reader that went away must not keep the process from exiting.
  struct final_log_flush {
    ~final_log_flush() { log::finish(std::chrono::seconds(1)); }
  };
  detail::daemon d(config_path);
  final_log_flush flush;
  return d.run();
}

}  // namespace mtlsd::daemon
