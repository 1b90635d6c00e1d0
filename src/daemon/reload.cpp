// Reloading: a new configuration (SIGHUP, or a watched file changed) is built into a whole new
// runtime next to the running one, then published (a new X.509-SVID: svid_reload.cpp). Runs on
// the control thread only. Workers never wait for it: they keep serving with the runtime they
// have until the one atomic store per listener publishes the new one, and each connection keeps
// the runtime it started with.
#include <algorithm>
#include <utility>

#include "daemon_state.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/daemon/sd_notify.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::daemon::detail {

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

namespace {

// A listener's certificates in the order configured: each tls.certificates entry's, or the one
// of tls.cert (own_chains is empty then).
std::vector<const tls::cert_chain*> own_chains_of(const runtime::listener_runtime& l) {
  std::vector<const tls::cert_chain*> out;
  for (const auto& c : l.tls.own_chains)
    out.push_back(&c);
  if (out.empty()) out.push_back(&l.tls.own_chain);
  return out;
}

}  // namespace

// Every entry, position by position (review: only the first of tls.certificates was compared,
// so rotating another entry's certificate logged none).
std::vector<std::string> rotated_certificates(const runtime::runtime& before,
                                              const runtime::runtime& after) {
  std::vector<std::string> out;
  for (const auto& l : after.listeners) {
    auto old = before.find(l->cfg.name);
    if (!old) continue;
    const auto was_chains = own_chains_of(*old);
    const auto now_chains = own_chains_of(*l);
    for (std::size_t i = 0; i < was_chains.size() && i < now_chains.size(); ++i) {
      if (was_chains[i]->empty() || now_chains[i]->empty()) continue;
      const auto was = tls::serial_of(was_chains[i]->front().get());
      const auto now = tls::serial_of(now_chains[i]->front().get());
      if (was != now) out.push_back(l->cfg.name + ":" + was + "->" + now);
    }
  }
  return out;
}

namespace {

// The configuration files' name among the sources of reloads (metrics::registry::reload_outcome).
const std::string config_reload_source = "config";

// What a reload cannot change in a running process: said, and left as it runs.
void warn_restart_needed(const config::configuration& next, const restart_only_settings& running) {
  if ((next.workers ? next.workers : running.auto_workers) != running.workers)
    log::warn("'workers' changed; the new count takes effect after a restart");
  if (next.dns.servers != running.dns_servers)
    log::warn("'dns.servers' changed; the new servers take effect after a restart");
  if (next.admin.listen != running.admin)
    log::warn("'admin.address' changed; the new address takes effect after a restart");
}

}  // namespace

std::string errors_of(const config::config_error& e) {
  std::vector<std::string> problems;
  for (const auto& p : e.problems())
    if (!p.warning) problems.push_back(p.str());
  return join(problems, "; ");
}

// After every debounced or polled look at the watched files. Most looks find nothing (an
// unrelated file in the same directory, a touch, an identical rewrite): counted, not reloaded.
void daemon::on_files_checked(const std::vector<std::string>& changed, std::string_view trigger) {
  metrics_.file_checks(!changed.empty()).Increment();
  if (!changed.empty()) reload(std::string(trigger), changed);
}

namespace {

// The listener runtimes of `rt` that `other` does not hold.
runtime::runtime only_in(const runtime::runtime& rt, const runtime::runtime& other) {
  runtime::runtime out;
  for (const auto& l : rt.listeners)
    if (std::find(other.listeners.begin(), other.listeners.end(), l) == other.listeners.end())
      out.listeners.push_back(l);
  return out;
}

}  // namespace

// A reload asked for while draining: nothing new is served any more. Said, not counted as a
// failure (review: dropped without a word).
void log_ignored_while_draining(std::string_view trigger) {
  log::info("reload ignored", {{"trigger", trigger}, {"why", "draining"}});
}

// Every worker re-judges its open connections by `next` once told `previous`, the runtime
// served until now, by which it tells a listener the reload renamed from one it moved onto the
// address of a listener it removed (session_registry.cpp). A registry told a runtime it knows
// ignores it: only the first reload's costs a look at each session, which it admits as before.
void rejudge_all(const std::vector<std::unique_ptr<worker>>& workers,
                 const std::shared_ptr<const runtime::runtime>& previous,
                 const std::shared_ptr<const runtime::runtime>& next) {
  for (const auto& w : workers) {
    w->rejudge(previous);
    w->rejudge(next);
  }
}

// Every trigger (SIGHUP, a file change, a poll) comes through here, and every way out of it is
// counted, logged and followed by READY=1: an unexpected exception too (review: one from the
// configuration's path ended the process on SIGHUP, and on a file change went uncounted, with
// no READY=1 after RELOADING=1).
void daemon::reload(const std::string& trigger, std::vector<std::string> changed) {
  if (draining_) return log_ignored_while_draining(trigger);
  const auto started = steady::now();
  notify_reloading();
  std::string files;
  std::shared_ptr<runtime::runtime> next;
  auto fail = [&](const std::string& why) {
    // The stapling started for `next`'s listeners ends: they will never serve.
    if (next) retire_staples(only_in(*next, *runtime_));
    metrics_.reload_outcome(config_reload_source, false);
    log::error("reload failed; still serving the previous configuration",
               {{"trigger", trigger},
                {"result", "failure"},
                {"files_changed", files},
                {"error", why},
                {"duration_ms", elapsed_ms(started)}});
    notify_ready();
  };
  bool swapped = false;  // listeners_.swap_in ran: the listeners serve `next`
  try {
    // Baseline the fingerprints before reading anything: a write that lands while we read is
    // then seen as a change and reloaded again, never lost. For SIGHUP this also says what
    // changed.
    for (auto& f : watcher_->rescan())
      if (std::find(changed.begin(), changed.end(), f) == changed.end()) changed.push_back(f);
    files = join(changed);
    std::string why;
    config::diagnostics config_warnings;
    const runtime_ptr built = load_next(why, config_warnings);
    if (!built) return fail(why);
    next = std::make_shared<runtime::runtime>(*built);
    auto waiting = hold_back_waiting(*next);

    inherit_staples(*next, *runtime_);  // before any listener can hand out `next`
    // Before any listener can hand out `next` either: a certificate this reload rotates gets
    // its first staple fetched meanwhile, and waited for below.
    const auto stapling = start_stapling(only_in(*next, *runtime_));

    // Reconcile listeners: keep the sockets of those whose address did not change (only their
    // runtime is swapped), bind new or moved ones first — all or nothing — then retire the rest.
    std::vector<listener_set::bound_listener> added;
    try {
      added = listeners_.bind_changed(*next, *runtime_);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    await_first_staples(stapling, *runtime_);
    auto changes = listeners_.swap_in(std::move(added), *next, *runtime_);
    swapped = true;
    warn_restart_needed(next->cfg, started_with_);
    const auto rotated = rotated_certificates(*runtime_, *next);
    waiting_ = std::move(waiting);  // latest configuration wins: an earlier reload's wait ends
    publish(next);                  // applies the new log settings first: the warnings follow them
    for (const auto& w : config_warnings)
      log::warn(w.str());
    std::vector<std::string> waits;
    for (const auto& [name, w] : waiting_) {
      std::erase(changes.kept, name);  // still as before the reload
      waits.push_back(name);
      log::warn(
          "listener waits for the first X.509-SVID from its new SPIFFE Workload API socket; "
          "until then it serves as before this reload",
          {{"listener", name}, {"socket", "unix:" + w.built->cfg.tls.spiffe.socket_path}});
    }
    log::info("reloaded", {{"trigger", trigger},
                           {"result", "success"},
                           {"files_changed", files},
                           {"listeners_updated", join(changes.kept)},
                           {"listeners_started", join(changes.started)},
                           {"listeners_stopped", join(changes.stopped)},
                           {"listeners_waiting", join(waits)},
                           {"certificates_rotated", join(rotated)},
                           {"duration_ms", elapsed_ms(started)}});
    notify_ready();
  } catch (const std::exception& e) {
    if (!swapped) return fail(std::string("unexpected error: ") + e.what());
    // The listeners serve `next` since swap_in: make it the runtime if that did not happen yet
    // (publish counts the outcome as soon as it is; review: counted nowhere, or said to be
    // failed while the new configuration served).
    if (runtime_ != next) {
      try {
        publish(next);
      } catch (const std::exception&) {  // the error below says what went wrong first
      }
    }
    log::error("reloaded, but an unexpected error followed", {{"trigger", trigger},
                                                              {"result", "success"},
                                                              {"files_changed", files},
                                                              {"error", e.what()}});
    notify_ready();
  }
}

// The configuration as the files now say, built; null with `why` when it is not usable.
runtime_ptr daemon::load_next(std::string& why, config::diagnostics& warnings) {
  auto loaded = config::load_file(config_path_, {.reload = true});
  for (const auto& p : loaded.problems)
    if (p.warning) warnings.push_back(p);
  if (!loaded.config) {
    // Unparseable: keep watching what we watched (the configuration file is among it).
    for (const auto& p : loaded.problems)
      if (!p.warning) why += (why.empty() ? "" : "; ") + p.str();
    return nullptr;
  }
  // Watch what the new configuration names even if it turns out unusable: a certificate it
  // names that does not exist yet must trigger the next attempt when it appears.
  watcher_->watch(watched_files(*loaded.config), watch_options(*loaded.config));
  why = sandbox::check_reload(sandbox_, *loaded.config);
  if (!why.empty()) return nullptr;
  try {
    return runtime::build(*loaded.config, build_options());
  } catch (const config::config_error& e) {
    why = errors_of(e);
    return nullptr;
  }
}

// `next` becomes the runtime: everything that follows the runtime follows it, and open
// connections its policy refuses are closed.
void daemon::publish(const runtime_ptr& next) {
  apply_logging(next->cfg);
  const auto previous = runtime_;
  runtime_ = next;
  // Counted now: `next` serves, whatever of what follows fails (reload's catch).
  metrics_.reload_outcome(config_reload_source, true);
  metrics_.last_reload_success_time().Set(unix_now());
  upstream_checks_->update(next->cfg);
  // A listener held back (hold_back_waiting) keeps its runtime, and its staple's refresh.
  retire_staples(only_in(*previous, *next));  // reload started `next`'s
  recheck_crl_files(*next, previous.get());
  // Open connections whose peers the new policy refuses (a CA removed, a rule tightened...)
  // are closed; the others are untouched.
  rejudge_all(workers_, previous, next);
  for (const auto& w : runtime::warnings(*next))
    log::warn(w.str());
  warn_insecure(*next);
  reconcile_svid_sources();
  metrics_.set_certificate_expiry(runtime::certificate_series(*next));
  metrics_.set_crl_next_update(runtime::crl_next_updates(*next));
}

}  // namespace mtlsd::daemon::detail
