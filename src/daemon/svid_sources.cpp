#include "mtlsd/daemon/svid_sources.hpp"

#include <boost/asio/post.hpp>

#include <set>

#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {

svid_sources::svid_sources(boost::asio::io_context& control, metrics::registry& metrics,
                           apply_fn apply)
    : control_(control), metrics_(metrics), apply_(std::move(apply)) {}

svid_sources::~svid_sources() {
  stop();
}

void svid_sources::stop() {
  clients_.clear();
}

std::string svid_sources::last_error(const std::string& socket) const {
  auto it = errors_.find(socket);
  return it == errors_.end() ? std::string() : it->second;
}

void svid_sources::reconcile(const config::configuration& cfg) {
  std::set<std::string> wanted;
  for (const auto& l : cfg.listeners)
    if (l.tls.spiffe.enabled) wanted.insert(l.tls.spiffe.socket_path);
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    svids_.erase(it->first);
    errors_.erase(it->first);
    refused_.erase(it->first);
    log::info("SPIFFE Workload API client stopped", {{"socket", it->first}});
    it = clients_.erase(it);
  }
  for (const auto& socket : wanted) {
    if (clients_.count(socket)) continue;
    spiffe::workload_client::callbacks cb;
    // On the client's thread: parse there (OpenSSL only), then hand the result to the control
    // thread, which alone touches the maps and the runtime.
    cb.on_update = [this, socket](tls::spiffe::raw_x509_svid raw) {
      svid_ptr svid;
      std::string why;
      try {
        svid = tls::spiffe::parse(raw);
      } catch (const std::exception& e) {
        why = e.what();
      }
      boost::asio::post(control_, [this, socket, svid, why] {
        if (svid)
          on_update(socket, svid);
        else
          on_error(socket, "the X.509-SVID update is unusable: " + why, true);
      });
    };
    cb.on_error = [this, socket](const std::string& why) {
      boost::asio::post(control_, [this, socket, why] { on_error(socket, why, false); });
    };
    auto client = std::make_unique<spiffe::workload_client>(socket, std::move(cb));
    client->start();
    log::info("SPIFFE Workload API client started", {{"socket", socket}});
    clients_[socket] = std::move(client);
  }
}

void svid_sources::on_update(const std::string& socket, svid_ptr svid) {
  if (!clients_.count(socket)) return;  // posted before the client was stopped
  auto it = svids_.find(socket);
  const svid_ptr previous = it == svids_.end() ? nullptr : it->second;
  errors_.erase(socket);
  // An agent whose stream ends after each message sends the same update again and again: only
  // a change rebuilds the listeners (and re-judges their connections).
  if (previous && previous->digest == svid->digest) {
    // After a refused update, the agent sending the one served again settles it: what it wants
    // is what serves, and the failure no longer stands.
    if (refused_.erase(socket)) {
      metrics_.last_reload_successful().Set(1);
      log::info("X.509-SVID update refused before is superseded: the agent sends the one served",
                {{"trigger", "spiffe"}, {"socket", socket}});
    } else {
      log::debug("X.509-SVID update unchanged; nothing to do", {{"socket", socket}});
    }
    return;
  }
  svids_[socket] = std::move(svid);
  if (auto why = apply_(socket, previous); !why.empty()) {
    if (previous)
      svids_[socket] = previous;
    else
      svids_.erase(socket);
    on_error(socket, why, true);
  } else {
    refused_.erase(socket);
  }
}

// The stream failed (the last SVID keeps serving until it expires; /readyz shows `why` while
// there is none), or the agent sent something unusable (a failed reload).
void svid_sources::on_error(const std::string& socket, const std::string& why, bool refused) {
  if (!clients_.count(socket)) return;
  errors_[socket] = why;
  const bool have = svids_.count(socket) > 0;
  if (refused) {
    refused_.insert(socket);
    metrics_.reload_failure().Increment();
    metrics_.last_reload_successful().Set(0);
    log::error(have ? "X.509-SVID update refused; still serving the previous one"
                    : "X.509-SVID update refused; no certificate to serve yet",
               {{"trigger", "spiffe"}, {"result", "failure"}, {"socket", socket}, {"error", why}});
  } else {
    log::warn("SPIFFE Workload API unavailable; the last X.509-SVID keeps serving until it expires",
              {{"socket", socket}, {"error", why}, {"have_svid", have}});
  }
}

}  // namespace mtlsd::daemon
