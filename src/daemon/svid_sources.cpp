#include "mtlsd/daemon/svid_sources.hpp"

#include <openssl/crypto.h>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <ctime>
#include <memory>
#include <set>
#include <utility>

#include "mtlsd/daemon/latest_mailbox.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"

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
  trust_domains_.clear();
  for (const auto& l : cfg.listeners)
    if (l.tls.spiffe.enabled) {
      wanted.insert(l.tls.spiffe.socket_path);
      auto& domains = trust_domains_[l.tls.spiffe.socket_path];
      domains.insert(l.tls.spiffe.trust_domains.begin(), l.tls.spiffe.trust_domains.end());
    }
  for (auto it = clients_.begin(); it != clients_.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    svids_.erase(it->first);
    errors_.erase(it->first);
    refused_.erase(it->first);
    held_.erase(it->first);
    trust_domains_.erase(it->first);
    metrics_.forget_reload_source(reload_source(it->first));
    log::info("SPIFFE Workload API client stopped", {{"socket", it->first}});
    it = clients_.erase(it);
  }
  for (const auto& socket : wanted) {
    if (clients_.count(socket)) continue;
    spiffe::workload_client::callbacks cb;
    // On the client's thread: parse there (OpenSSL only), then hand the result to the control
    // thread, which alone touches the maps and the runtime. Through a mailbox that keeps the
    // newest only (daemon/latest_mailbox.hpp): one delivery queued at a time, however fast the
    // agent streams.
    using parsed = std::pair<svid_ptr, std::string>;  // the SVID, or why it is unusable
    using failed = std::pair<std::string, bool>;      // why, denied
    auto box = std::make_shared<latest_mailbox<parsed, failed>>();
    auto deliver = [this, socket, box] {
      auto news = box->take();
      auto apply_update = [&] {
        if (!news.update) return;
        if (news.update->first)
          on_update(socket, news.update->first);
        else
          on_error(socket, "the X.509-SVID update is unusable: " + news.update->second,
                   failure::refused);
      };
      auto apply_error = [&] {
        if (news.error)
          on_error(socket, news.error->first,
                   news.error->second ? failure::denied : failure::unavailable);
      };
      if (news.error_first) apply_error();
      apply_update();
      if (!news.error_first) apply_error();
    };
    cb.on_update = [this, box, deliver](tls::spiffe::raw_x509_svid raw) {
      svid_ptr svid;
      std::string why;
      try {
        svid = tls::spiffe::parse(raw);
      } catch (const std::exception& e) {
        why = e.what();
      }
      // The key's DER, decoded now: wiped, as a key file's buffer is (tls/credentials.cpp).
      OPENSSL_cleanse(raw.x509_svid_key.data(), raw.x509_svid_key.size());
      if (box->put_update({std::move(svid), std::move(why)})) boost::asio::post(control_, deliver);
    };
    cb.on_error = [this, box, deliver](const std::string& why, bool denied) {
      if (box->put_error({why, denied})) boost::asio::post(control_, deliver);
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
    held_.erase(socket);  // what the agent wants now is what serves
    // After a refused update, the agent sending the one served again settles it: what it wants
    // is what serves, and the failure no longer stands.
    if (refused_.erase(socket)) {
      metrics_.forget_reload_source(reload_source(socket));
      log::info("X.509-SVID update refused before is superseded: the agent sends the one served",
                {{"trigger", "spiffe"}, {"socket", socket}});
    } else {
      log::debug("X.509-SVID update unchanged; nothing to do", {{"socket", socket}});
    }
    return;
  }
  if (auto h = held_.find(socket); h != held_.end() && h->second.svid->digest == svid->digest) {
    log::debug("X.509-SVID update unchanged; still held until it is valid", {{"socket", socket}});
    return;
  }
  held_.erase(socket);  // a later update replaces one held
  // A federated bundle that does not parse refuses the update only when a listener trusts its
  // domain (review: one no listener used kept our own rotation out).
  std::string needed, unused;
  for (const auto& [td, why] : svid->unusable_federated) {
    std::string& list = trust_domains_[socket].count(td) ? needed : unused;
    list += (list.empty() ? "" : "; ") + why;
  }
  if (!needed.empty())
    return on_error(socket, "the X.509-SVID update is unusable: " + needed, failure::refused);
  if (!unused.empty())
    log::warn("X.509-SVID update: federated bundles no listener trusts are unusable and ignored",
              {{"socket", socket}, {"error", unused}});
  admit(socket, std::move(svid));
}

void svid_sources::admit(const std::string& socket, svid_ptr svid) {
  auto it = svids_.find(socket);
  const svid_ptr previous = it == svids_.end() ? nullptr : it->second;
  if (hold_until_valid(socket, svid, previous)) return;
  apply(socket, std::move(svid), previous);
}

// SPIRE backdates an SVID's notBefore by a few seconds; one still to come means the clocks of
// the agent's server and this host disagree by more. Such an update waits until it is valid:
// the SVID served keeps serving meanwhile, and with none (or one that expires first) nothing
// valid is served, as a listener never serves a certificate not valid yet by this host's clock
// (runtime::build refuses it, and peers sharing this clock would refuse it too).
bool svid_sources::hold_until_valid(const std::string& socket, const svid_ptr& svid,
                                    const svid_ptr& previous) {
  const std::time_t now = std::time(nullptr);
  if (svid->not_before <= now) return false;
  const bool previous_valid =
      previous && tls::not_after_of(previous->svid.chain.front().get()) > now;
  auto& h = held_[socket];
  h.svid = svid;
  h.timer = std::make_unique<boost::asio::steady_timer>(control_);
  wait_for_hold(socket, h);
  const std::string until = log::utc(svid->not_before);
  // What /readyz says while nothing else is served.
  errors_[socket] = "an X.509-SVID update waits for its notBefore, " + until;
  log::warn(std::string("X.509-SVID update is not valid yet; ") +
                (previous_valid ? "the previous one keeps serving until it is"
                                : "nothing valid is served until it is") +
                " (clock skew between this host and the SPIFFE server?)",
            {{"socket", socket},
             {"serial", tls::serial_of(svid->svid.chain.front().get())},
             {"not_before", until},
             {"in_seconds", static_cast<std::int64_t>(svid->not_before - now)}});
  return true;
}

// Waits at most an hour at a time: a notBefore centuries ahead (under a CA valid until 9999)
// would overflow the steady clock's nanoseconds and fire at once, again and again (review).
void svid_sources::wait_for_hold(const std::string& socket, held_update& h) {
  const std::time_t left = h.svid->not_before - std::time(nullptr);
  h.timer->expires_after(std::chrono::seconds(std::clamp<std::time_t>(left, 0, 3600)));
  h.timer->async_wait([this, alive = std::weak_ptr<bool>(alive_), socket,
                       digest = h.svid->digest](const boost::system::error_code& ec) {
    if (ec || !alive.lock()) return;  // replaced, dropped, or this is gone
    auto found = held_.find(socket);
    if (found == held_.end() || found->second.svid->digest != digest) return;
    if (found->second.svid->not_before > std::time(nullptr))
      return wait_for_hold(socket, found->second);
    const svid_ptr due = found->second.svid;
    held_.erase(found);
    admit(socket, due);
  });
}

void svid_sources::apply(const std::string& socket, svid_ptr svid, const svid_ptr& previous) {
  svids_[socket] = std::move(svid);
  if (auto why = apply_(socket, previous); !why.empty()) {
    if (previous)
      svids_[socket] = previous;
    else
      svids_.erase(socket);
    on_error(socket, why, failure::refused);
  } else {
    refused_.erase(socket);
    errors_.erase(socket);
  }
}

// The stream failed or the agent gives us no identity (the last SVID keeps serving until it
// expires; /readyz shows `why` while there is none), or the agent sent something unusable (a
// failed reload).
void svid_sources::on_error(const std::string& socket, const std::string& why, failure kind) {
  if (!clients_.count(socket)) return;
  errors_[socket] = why;
  const bool have = svids_.count(socket) > 0;
  if (kind == failure::refused) {
    held_.erase(socket);  // the agent's latest update is this one, not one held before
    refused_.insert(socket);
    metrics_.reload_outcome(reload_source(socket), false);
    log::error(have ? "X.509-SVID update refused; still serving the previous one"
                    : "X.509-SVID update refused; no certificate to serve yet",
               {{"trigger", "spiffe"}, {"result", "failure"}, {"socket", socket}, {"error", why}});
    return;
  }
  // Kept on PERMISSION_DENIED too, as go-spiffe's sources keep it: a registration entry
  // deleted by mistake does not take the workload down before its SVID expires.
  const std::string then = have ? "; the last X.509-SVID keeps serving until it expires"
                                : "; no X.509-SVID to serve yet";
  log::warn((kind == failure::denied ? "SPIFFE Workload API gives this workload no X.509-SVID"
                                     : "SPIFFE Workload API unavailable") +
                then,
            {{"socket", socket}, {"error", why}, {"have_svid", have}});
}

}  // namespace mtlsd::daemon
