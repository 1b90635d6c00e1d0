#include "mtlsd/daemon/daemon.hpp"

#include <algorithm>
#include <csignal>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <thread>

#include "mtlsd/admin/admin_server.hpp"
#include "mtlsd/daemon/expiry_monitor.hpp"
#include "mtlsd/daemon/fd_limit.hpp"
#include "mtlsd/daemon/file_watcher.hpp"
#include "mtlsd/daemon/memory_trim.hpp"
#include "mtlsd/daemon/sandbox.hpp"
#include "mtlsd/daemon/sd_notify.hpp"
#include "mtlsd/daemon/svid_sources.hpp"
#include "mtlsd/daemon/upstream_checks.hpp"
#include "mtlsd/daemon/watchdog.hpp"
#include "mtlsd/daemon/worker.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/resolver.hpp"
#include "mtlsd/proxy/listener.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/event.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/revocation/service.hpp"
#include "mtlsd/version.hpp"

namespace mtlsd::daemon {
namespace {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;
using slot_ptr = std::shared_ptr<proxy::listener_slot>;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The revocation service on a thread of its own: OCSP requests and CRL downloads never run on a
// worker, and the service's caches are touched by this one thread only. The thread starts with
// the workers, after the sandbox is entered (so that it is inside it); work posted before waits.
class revocation_thread {
 public:
  explicit revocation_thread(metrics::registry& m)
      : work_(asio::make_work_guard(ioc_)), service_(ioc_.get_executor(), &m) {}
  void start() {
    thread_ = std::thread([this] {
      for (;;) {
        try {
          ioc_.run();
          return;
        } catch (const std::exception& e) {
          log::error("revocation service error", {{"error", e.what()}});
        }
      }
    });
  }
  ~revocation_thread() {
    work_.reset();
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }
  tls::revocation::service& service() { return service_; }

 private:
  asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  tls::revocation::service service_;
  std::thread thread_;
};

std::string join(const std::vector<std::string>& v, const char* sep = ",") {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : sep) + x;
  return s;
}

std::int64_t elapsed_ms(steady::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - since).count();
}

// The files a configuration depends on: itself and every file it names.
std::vector<std::string> watched_files(const config::configuration& cfg) {
  std::vector<std::string> out{cfg.file};
  for (const auto& f : cfg.referenced_files())
    if (std::find(out.begin(), out.end(), f.path) == out.end()) out.push_back(f.path);
  return out;
}

file_watcher::options watch_options(const config::configuration& cfg) {
  file_watcher::options o;
  o.inotify = cfg.reload.watch;
  o.poll_interval = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.reload.poll_interval);
  return o;
}

// "inbound:1002->1005" for every listener that kept its name but now serves another certificate.
std::vector<std::string> rotated_certificates(const runtime::runtime& before,
                                              const runtime::runtime& after) {
  std::vector<std::string> out;
  for (const auto& l : after.listeners) {
    auto old = before.find(l->cfg.name);
    if (!old || old->tls.own_chain.empty() || l->tls.own_chain.empty()) continue;
    const auto was = tls::serial_of(old->tls.own_chain.front().get());
    const auto now = tls::serial_of(l->tls.own_chain.front().get());
    if (was != now) out.push_back(l->cfg.name + ":" + was + "->" + now);
  }
  return out;
}

class daemon {
 public:
  explicit daemon(std::string path) : config_path_(std::move(path)), signals_(control_) {}

  int run() {
    std::signal(SIGPIPE, SIG_IGN);  // a peer that vanished must be an EPIPE, not a dead process
    log::setup_default();
    log::set_access_drop_hook([c = &metrics_.access_log_dropped()] { c->Increment(); });
    // Fingerprint the configuration before reading it, so that a write racing with startup is
    // seen as a change rather than lost.
    const std::string config_abs = std::filesystem::absolute(config_path_).lexically_normal();
    watcher_ = std::make_unique<file_watcher>(
        control_, [this](const std::vector<std::string>& changed, std::string_view trigger) {
          on_files_checked(changed, trigger);
        });
    watcher_->watch({config_abs}, {.inotify = false});
    auto loaded = config::load_file(config_path_);
    for (const auto& p : loaded.problems)
      log::write(p.warning ? spdlog::level::warn : spdlog::level::err, p.str());
    if (!loaded.config) {
      log::error("configuration is not usable; not starting", {{"config", config_path_}});
      return 1;
    }
    apply_logging(*loaded.config);
    apply_dns(*loaded.config);
    if (!apply_proxy_environment()) return 1;
    revocation_ = std::make_unique<revocation_thread>(metrics_);
    watcher_->watch(watched_files(*loaded.config), watch_options(*loaded.config));
    std::shared_ptr<const runtime::runtime> rt;
    try {
      rt = runtime::build(*loaded.config, build_options());
    } catch (const config::config_error& e) {
      for (const auto& p : e.problems())
        log::error(p.str());
      log::error("configuration is not usable; not starting", {{"config", config_path_}});
      return 1;
    }
    for (const auto& w : runtime::warnings(*rt))
      log::warn(w.str());

    unsigned n =
        rt->cfg.workers ? rt->cfg.workers : std::max(1u, std::thread::hardware_concurrency());
    // Two descriptors per connection: raise the soft limit before anything is accepted.
    raise_fd_limit(rt->cfg, n);
    for (unsigned i = 0; i < n; ++i)
      workers_.push_back(std::make_unique<worker>(i));
    // recheck_established: revocations the service learns close the sessions they revoke.
    std::vector<worker*> all_workers;
    for (auto& w : workers_)
      all_workers.push_back(w.get());
    revocation_->service().subscribe([all_workers](tls::revocation::event_ptr e) {
      for (auto* w : all_workers)
        w->revoke(e);
    });
    try {
      for (const auto& lr : rt->listeners) {
        auto b = bind(lr);
        start_serving(b);
        slots_[lr->cfg.name] = b.slot;
      }
      if (rt->cfg.admin.listen) start_admin(*rt->cfg.admin.listen);
      // Everything is bound and loaded, and no thread has started yet (each that starts later
      // inherits the sandbox): the one moment to enter it.
      sandbox_ = sandbox::enter(rt->cfg);
    } catch (const std::exception& e) {
      log::error("cannot start", {{"error", e.what()}});
      return 1;
    }
    // From here on no thread waits on stderr or the access-log file (issue 11 #8); start-up
    // lines before this were written directly, while nothing served traffic.
    log::start_async();
    runtime_ = rt;
    metrics_.set_certificate_expiry(runtime::certificate_series(*rt));
    metrics_.set_crl_next_update(runtime::crl_next_updates(*rt));
    metrics_.last_reload_success_time().Set(unix_now());
    warn_insecure(*rt);
    start_stapling(*rt);
    upstream_checks_ = std::make_unique<upstream_checks>(control_, metrics_);
    upstream_checks_->update(rt->cfg);  // probes begin when the control loop runs
    rt.reset();  // runtime_ alone owns it now: a reload that removes a listener frees its series
    revocation_->start();
    for (auto& w : workers_)
      w->start();
    // gRPC starts threads: only now, inside the sandbox.
    svids_->reconcile(runtime_->cfg);

    signals_.add(SIGHUP);
    signals_.add(SIGTERM);
    signals_.add(SIGINT);
    signals_.add(SIGUSR1);  // logrotate: reopen the access-log file
    wait_for_signal();
    expiry_ = std::make_unique<expiry_monitor>(control_, [this] { return runtime_; });
    expiry_->start();
    log::info("ready",
              {{"version", kVersion}, {"workers", static_cast<int>(n)}, {"config", config_path_}});
    notify_ready();
    std::vector<asio::io_context*> loops;
    for (auto& w : workers_)
      loops.push_back(&w->context());
    watchdog_ = std::make_unique<watchdog>(control_, std::move(loops));
    watchdog_->start();
    trimmer_ = std::make_unique<memory_trimmer>(control_, [] { return proxy::active_sessions(); });
    trimmer_->start();

    control_.run();
    svids_->stop();  // joined before the workers they feed are stopped
    for (auto& w : workers_)
      w->stop();
    revocation_.reset();
    log::info("stopped");
    return 0;
  }

 private:
  struct bound_listener {
    slot_ptr slot;
    std::vector<proxy::stream_acceptor> acceptors;  // one per worker (TCP) or one (unix)
  };

  runtime::build_options build_options() {
    runtime::build_options opts;
    opts.registry = &metrics_;
    opts.revocation = &revocation_->service();
    opts.svids = svids_->latest();
    return opts;
  }

  // A new X.509-SVID or bundle: rebuilt and swapped in like a file reload (connections keep the
  // runtime they started with; new ones get the new certificate), but only for the listeners
  // that use this socket, and without reading the configuration again.
  // Called by svid_sources with the new SVID already in latest(); returns why not, or "".
  std::string on_svid(const std::string& socket, const svid_sources::svid_ptr& previous) {
    if (draining_) return {};  // nothing new is served any more; not a failure
    const auto started = steady::now();
    config::configuration affected = runtime_->cfg;
    std::erase_if(affected.listeners, [&](const config::listener& l) {
      return !l.tls.spiffe.enabled || l.tls.spiffe.socket_path != socket;
    });
    std::shared_ptr<const runtime::runtime> built;
    try {
      built = runtime::build(affected, build_options());
    } catch (const config::config_error& e) {
      std::vector<std::string> problems;
      for (const auto& p : e.problems())
        if (!p.warning) problems.push_back(p.str());
      return join(problems, "; ");
    }
    auto next = std::make_shared<runtime::runtime>(*runtime_);
    std::vector<std::string> updated;
    for (auto& lr : next->listeners)
      if (auto fresh = built->find(lr->cfg.name)) {
        lr = fresh;
        if (auto it = slots_.find(fresh->cfg.name); it != slots_.end())
          it->second->current.store(fresh);  // new connections use it from now on
        updated.push_back(fresh->cfg.name);
      }
    const auto rotated = rotated_certificates(*runtime_, *next);
    runtime_ = next;
    for (const auto& w : runtime::warnings(*built))
      log::warn(w.str());
    metrics_.set_certificate_expiry(runtime::certificate_series(*next));
    metrics_.reload_success().Increment();
    metrics_.last_reload_successful().Set(1);
    metrics_.last_reload_success_time().Set(unix_now());
    const auto& now = *svids_->latest().at(socket);
    log::info("reloaded",
              {{"trigger", "spiffe"},
               {"result", "success"},
               {"socket", socket},
               {"spiffe_id", now.spiffe_id},
               {"serial", tls::serial_of(now.svid.chain.front().get())},
               {"previous_serial",
                previous ? tls::serial_of(previous->svid.chain.front().get()) : std::string()},
               {"bundle_cas", static_cast<std::int64_t>(now.bundle.size())},
               {"federated_trust_domains", static_cast<std::int64_t>(now.federated.size())},
               {"listeners_updated", join(updated)},
               {"certificates_rotated", join(rotated)},
               {"duration_ms", elapsed_ms(started)}});
    return {};
  }

  // A listener that serves the same certificate as before starts with the previous runtime's
  // staple. Called before the new runtime is published, so no handshake sees it without one.
  static void inherit_staples(const runtime::runtime& rt, const runtime::runtime& previous) {
    for (const auto& l : rt.listeners) {
      if (!l->tls.staple || l->tls.own_chain.empty()) continue;
      if (auto old = previous.find(l->cfg.name);
          old && old->tls.staple && !old->tls.own_chain.empty() &&
          X509_cmp(old->tls.own_chain.front().get(), l->tls.own_chain.front().get()) == 0)
        l->tls.staple->set(old->tls.staple->get());
    }
  }

  // After a reload published `rt`: the previous runtime's staples are no longer refreshed, even
  // while connections still hold that runtime.
  static void retire_staples(const runtime::runtime& previous) {
    for (const auto& l : previous.listeners)
      if (l->tls.staple) l->tls.staple->retire();
  }

  // revocation.stapling: the service keeps each listener's staple fresh.
  void start_stapling(const runtime::runtime& rt) {
    for (const auto& l : rt.listeners) {
      if (!l->tls.staple || l->tls.own_chain.empty()) continue;
      X509* leaf = l->tls.own_chain.front().get();
      // Our issuer: next in our chain file, else among the CAs we trust.
      X509* issuer = l->tls.own_chain.size() > 1 ? l->tls.own_chain[1].get() : nullptr;
      for (std::size_t i = 0; !issuer && i < l->tls.trust.size(); ++i)
        if (X509_check_issued(l->tls.trust[i].get(), leaf) == X509_V_OK)
          issuer = l->tls.trust[i].get();
      auto urls = tls::revocation::ocsp_urls(leaf);
      std::string url = urls.empty() ? l->cfg.revocation.ocsp_responder : urls.front();
      if (!issuer || url.empty()) {
        log::warn(!issuer ? "revocation.stapling: the issuer of our certificate is not known "
                            "(append it to tls.cert after the leaf); not stapling"
                          : "revocation.stapling: our certificate names no OCSP responder and "
                            "revocation.ocsp_responder is not set; not stapling",
                  {{"listener", l->cfg.name}});
        continue;
      }
      revocation_->service().staple(l->tls.staple, tls::up_ref(leaf), tls::up_ref(issuer), url,
                                    l->revocation.timeout, l->cfg.name);
    }
  }

  // recheck_established: after a reload, the CRL files may revoke peers that are connected.
  void recheck_crl_files(const runtime::runtime& rt) {
    for (const auto& l : rt.listeners) {
      if (!l->revocation.recheck_established || l->tls.crls.empty()) continue;
      for (auto& e : tls::revocation::events_from_crl_files(l->tls.crls, l->cfg.name))
        for (auto& w : workers_)
          w->revoke(e);
    }
  }

  // Read by each thread's resolver when it is first used: set before any worker or the
  // revocation thread resolves a name. Changes need a restart (see reload()).
  static void apply_dns(const config::configuration& cfg) {
    net::resolver_options o;
    for (const auto& server : cfg.dns.servers)
      o.servers.push_back({server.host, server.port});
    net::set_resolver_options(std::move(o));
  }

  // HTTP_PROXY / NO_PROXY and friends for OCSP and CRL fetches, read once: a running process
  // does not see a changed environment, so a change needs a restart.
  static bool apply_proxy_environment() {
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

  void apply_logging(const config::configuration& cfg) {
    log::setup(cfg.log);
    log::set_access_log_enabled(cfg.log.access_log);
  }

  proxy::stream_endpoint resolve_listen(const config::address& a) {
    auto literal = proxy::literal_endpoint(a);
    if (auto* ep = std::get_if<proxy::stream_endpoint>(&literal)) return *ep;
    // A hostname (e.g. localhost): resolved once at bind time, on the control thread.
    asio::ip::tcp::resolver resolver(control_);
    auto results = resolver.resolve(a.host, std::to_string(a.port));
    return proxy::stream_endpoint(results.begin()->endpoint());
  }

  // Binds a listener's sockets on every worker without serving them yet, so that a reload can
  // bind everything it needs first and give up cleanly if any bind fails.
  bound_listener bind(const std::shared_ptr<const runtime::listener_runtime>& lr) {
    bound_listener b;
    b.slot = std::make_shared<proxy::listener_slot>();
    b.slot->name = lr->cfg.name;
    b.slot->current.store(lr);
    try {
      auto ep = resolve_listen(lr->cfg.listen);  // inside: a resolver error is reported here too
      if (lr->cfg.listen.is_unix()) {
        b.acceptors.push_back(proxy::open_acceptor(workers_[0]->context(), ep, false));
      } else {
        for (auto& w : workers_) {
          b.acceptors.push_back(proxy::open_acceptor(w->context(), ep, true));
          // Port 0: the kernel picked a port for the first worker; the others join it.
          ep = b.acceptors.front().local_endpoint();
        }
      }
    } catch (const boost::system::system_error& e) {
      throw std::runtime_error("listener '" + lr->cfg.name + "': cannot listen on " +
                               lr->cfg.listen.str() + ": " + e.code().message());
    }
    b.slot->bound = proxy::format_endpoint(b.acceptors.front().local_endpoint());
    return b;
  }

  void start_serving(bound_listener& b) {
    for (std::size_t i = 0; i < b.acceptors.size(); ++i)
      workers_[i]->serve(b.slot, std::move(b.acceptors[i]));
    const auto lr = b.slot->current.load();
    log::info("listening",
              {{"listener", b.slot->name},
               {"address", b.slot->bound},
               {"mode", lr->cfg.mode == config::listener_mode::server ? "server" : "client"},
               {"upstream", lr->cfg.upstream.str()}});
  }

  void start_admin(const config::address& a) {
    admin_ = std::make_unique<admin::server>(control_, a, metrics_.collectable(),
                                             [this] { return readiness(); });
    admin_->count_errors_in(&metrics_.internal_errors("admin"));
    admin_->start();
    log::info("admin listening", {{"address", admin_->bound_address()}});
  }

  void warn_insecure(const runtime::runtime& rt) {
    for (const auto& l : rt.listeners)
      if (l->cfg.mode == config::listener_mode::client && l->cfg.server_auth.insecure_skip_verify)
        log::warn(
            "server_auth.insecure_skip_verify is ON: the remote's certificate is NOT verified; "
            "anyone on the path can impersonate it",
            {{"listener", l->cfg.name}});
  }

  admin::readiness readiness() const {
    if (draining_) return {false, "draining", {}};
    if (!runtime_) return {false, "starting", {}};
    const std::time_t now = std::time(nullptr);
    for (const auto& l : runtime_->listeners) {
      if (!slots_.count(l->cfg.name))
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
  admin::readiness upstream_readiness() const {
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

  void wait_for_signal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGUSR1)
        log::reopen();
      else if (sig == SIGHUP)
        reload("SIGHUP");
      else
        drain(sig == SIGINT ? "SIGINT" : "SIGTERM");
      wait_for_signal();
    });
  }

  // After every debounced or polled look at the watched files. Most looks find nothing (an
  // unrelated file in the same directory, a touch, an identical rewrite): counted, not reloaded.
  void on_files_checked(const std::vector<std::string>& changed, std::string_view trigger) {
    metrics_.file_checks(!changed.empty()).Increment();
    if (!changed.empty()) reload(std::string(trigger), changed);
  }

  // Runs on the control thread only. Workers never wait for it: they keep serving with the
  // runtime they have until the one atomic store per listener below publishes the new one.
  void reload(const std::string& trigger, std::vector<std::string> changed = {}) {
    if (draining_) return;
    const auto started = steady::now();
    notify_reloading();
    // Baseline the fingerprints before reading anything: a write that lands while we read is
    // then seen as a change and reloaded again, never lost. For SIGHUP this also says what
    // changed.
    for (auto& f : watcher_->rescan())
      if (std::find(changed.begin(), changed.end(), f) == changed.end()) changed.push_back(f);
    const std::string files = join(changed);
    auto fail = [&](const std::string& why) {
      metrics_.reload_failure().Increment();
      metrics_.last_reload_successful().Set(0);
      log::error("reload failed; still serving the previous configuration",
                 {{"trigger", trigger},
                  {"result", "failure"},
                  {"files_changed", files},
                  {"error", why},
                  {"duration_ms", elapsed_ms(started)}});
      notify_ready();
    };
    auto loaded = config::load_file(config_path_);
    if (!loaded.config) {
      // Unparseable: keep watching what we watched (the configuration file is among it).
      std::string why;
      for (const auto& p : loaded.problems)
        if (!p.warning) why += (why.empty() ? "" : "; ") + p.str();
      return fail(why);
    }
    // Watch what the new configuration names even if it turns out unusable: a certificate it
    // names that does not exist yet must trigger the next attempt when it appears.
    watcher_->watch(watched_files(*loaded.config), watch_options(*loaded.config));
    if (auto why = sandbox::check_reload(sandbox_, *loaded.config); !why.empty()) return fail(why);
    std::shared_ptr<const runtime::runtime> next;
    try {
      next = runtime::build(*loaded.config, build_options());
    } catch (const config::config_error& e) {
      std::vector<std::string> problems;
      for (const auto& p : e.problems())
        if (!p.warning) problems.push_back(p.str());
      return fail(join(problems, "; "));
    }

    inherit_staples(*next, *runtime_);  // before any listener can hand out `next`

    // Reconcile listeners: keep the sockets of those whose address did not change (only their
    // runtime is swapped), bind new or moved ones first — all or nothing — then retire the rest.
    std::vector<bound_listener> added;
    std::vector<std::string> kept, started_names, retired;
    try {
      for (const auto& lr : next->listeners) {
        auto it = slots_.find(lr->cfg.name);
        const auto* old = runtime_->find(lr->cfg.name).get();
        if (it != slots_.end() && old && old->cfg.listen == lr->cfg.listen) continue;
        added.push_back(bind(lr));
      }
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    for (const auto& lr : next->listeners) {
      auto it = slots_.find(lr->cfg.name);
      const auto* old = runtime_->find(lr->cfg.name).get();
      if (it != slots_.end() && old && old->cfg.listen == lr->cfg.listen) {
        it->second->current.store(lr);  // new connections use it from now on
        kept.push_back(lr->cfg.name);
      }
    }
    for (auto& [name, slot] : slots_) {
      const auto* now_cfg = next->cfg.find_listener(name);
      bool moved = std::any_of(added.begin(), added.end(),
                               // (clang 14, the fuzz build, cannot capture a binding)
                               [&n = name](const bound_listener& b) { return b.slot->name == n; });
      if (!now_cfg || moved) {
        for (auto& w : workers_)
          w->close_listener(name);
        retired.push_back(name);
      }
    }
    for (const auto& name : retired)
      slots_.erase(name);
    for (auto& b : added) {
      // close_listener() was posted before serve(), so on each worker the old acceptor of a
      // moved listener is closed before the new one is registered under the same name.
      start_serving(b);
      started_names.push_back(b.slot->name);
      slots_[b.slot->name] = b.slot;
    }
    if (next->cfg.workers != runtime_->cfg.workers)
      log::warn("'workers' changed; the new count takes effect after a restart");
    if (next->cfg.dns.servers != runtime_->cfg.dns.servers)
      log::warn("'dns.servers' changed; the new servers take effect after a restart");
    if (next->cfg.admin.listen != runtime_->cfg.admin.listen)
      log::warn("'admin.address' changed; the new address takes effect after a restart");
    apply_logging(next->cfg);
    const auto previous = runtime_;
    const auto rotated = rotated_certificates(*runtime_, *next);
    runtime_ = next;
    upstream_checks_->update(next->cfg);
    retire_staples(*previous);
    start_stapling(*next);
    recheck_crl_files(*next);
    // Open connections whose peers the new policy refuses (a CA removed, a rule tightened...)
    // are closed; the others are untouched.
    for (auto& w : workers_)
      w->rejudge(next);
    for (const auto& w : runtime::warnings(*next))
      log::warn(w.str());
    warn_insecure(*next);
    svids_->reconcile(next->cfg);
    metrics_.set_certificate_expiry(runtime::certificate_series(*next));
    metrics_.set_crl_next_update(runtime::crl_next_updates(*next));
    metrics_.reload_success().Increment();
    metrics_.last_reload_successful().Set(1);
    metrics_.last_reload_success_time().Set(unix_now());
    log::info("reloaded", {{"trigger", trigger},
                           {"result", "success"},
                           {"files_changed", files},
                           {"listeners_updated", join(kept)},
                           {"listeners_started", join(started_names)},
                           {"listeners_stopped", join(retired)},
                           {"certificates_rotated", join(rotated)},
                           {"duration_ms", elapsed_ms(started)}});
    notify_ready();
  }

  void drain(const std::string& trigger) {
    if (draining_) {
      // A second signal: stop waiting for connections to finish.
      log::warn("second stop signal: closing open connections now", {{"signal", trigger}});
      for (auto& w : workers_)
        w->kill_sessions();
      killed_ = true;
      hard_deadline_ = steady::now() + std::chrono::seconds(2);
      return;
    }
    draining_ = true;
    notify_stopping();
    const auto timeout = runtime_->cfg.shutdown.drain_timeout;
    log::info("draining", {{"signal", trigger},
                           {"open_connections", proxy::active_sessions()},
                           {"drain_timeout", config::format_duration(timeout)}});
    for (auto& w : workers_)
      w->close_all_listeners();
    drain_deadline_ = steady::now() + timeout;
    drain_timer_ = std::make_unique<asio::steady_timer>(control_);
    poll_drain();
  }

  void poll_drain() {
    const auto now = steady::now();
    const int open = proxy::active_sessions();
    if (open == 0 || (killed_ && now >= hard_deadline_)) {
      log::info("drained", {{"open_connections", open}});
      if (admin_) admin_->stop();
      upstream_checks_->stop();
      expiry_.reset();
      watcher_.reset();
      signals_.cancel();
      control_.stop();
      return;
    }
    if (!killed_ && now >= drain_deadline_) {
      log::warn("drain timeout reached: closing open connections", {{"open_connections", open}});
      for (auto& w : workers_)
        w->kill_sessions();
      killed_ = true;
      hard_deadline_ = now + std::chrono::seconds(2);
    }
    drain_timer_->expires_after(std::chrono::milliseconds(20));
    drain_timer_->async_wait([this](const boost::system::error_code& ec) {
      if (!ec) poll_drain();
    });
  }

  std::string config_path_;
  asio::io_context control_{1};
  asio::signal_set signals_;
  metrics::registry metrics_;
  std::vector<std::unique_ptr<worker>> workers_;
  // After workers_: joined (and so done posting to workers) before they are destroyed.
  std::unique_ptr<revocation_thread> revocation_;
  std::shared_ptr<const runtime::runtime> runtime_;
  std::map<std::string, slot_ptr> slots_;
  std::unique_ptr<admin::server> admin_;
  std::unique_ptr<expiry_monitor> expiry_;
  std::unique_ptr<upstream_checks> upstream_checks_;
  std::unique_ptr<file_watcher> watcher_;
  std::unique_ptr<watchdog> watchdog_;
  std::unique_ptr<memory_trimmer> trimmer_;
  sandbox::state sandbox_;
  bool draining_ = false;
  bool killed_ = false;
  steady::time_point drain_deadline_{};
  steady::time_point hard_deadline_{};
  std::unique_ptr<asio::steady_timer> drain_timer_;
  // tls.spiffe: the Workload API clients and their latest SVIDs. Last: destroyed (its clients
  // joined) first, while everything their posted updates touch is alive.
  std::unique_ptr<svid_sources> svids_ = std::make_unique<svid_sources>(
      control_, metrics_,
      [this](const std::string& socket, const svid_sources::svid_ptr& previous) {
        return on_svid(socket, previous);
      });
};

}  // namespace

int run(const std::string& config_path) {
  // Bounded, on every way out, and while the metrics the drop hook counts into are alive (it is
  // destroyed before `d`): a log reader that went away must not keep the process from exiting.
  struct final_log_flush {
    ~final_log_flush() { log::finish(std::chrono::seconds(1)); }
  };
  daemon d(config_path);
  final_log_flush flush;
  return d.run();
}

}  // namespace mtlsd::daemon
