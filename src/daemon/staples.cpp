// Revocation work that follows the runtime: our own certificates' OCSP staples (kept fresh by
// the revocation service, handed from one runtime to the next) and, after a reload, the CRL
// files' verdicts on connected peers.
#include <openssl/x509v3.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "daemon_state.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/revocation/event.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"

namespace mtlsd::daemon::detail {

namespace {

// How long a reload waits at most for the staples of certificates it rotates, whatever
// ocsp_timeout says: it holds the control thread (the admin server, signals, the watchdog's
// pings, which systemd wants every WatchdogSec/2: 15 s in the shipped unit) meanwhile.
constexpr auto max_staple_wait = std::chrono::seconds(5);
// The revocation thread's turn to start the fetch, beyond the fetch's own ocsp_timeout.
constexpr auto staple_wait_margin = std::chrono::milliseconds(250);

// The listener of `previous` that has `l`'s name and stapled `l`'s leaf, or null.
std::shared_ptr<const runtime::listener_runtime> stapling_same_leaf(
    const runtime::listener_runtime& l, const runtime::runtime& previous) {
  auto old = previous.find(l.cfg.name);
  if (old && old->staple && !old->tls.own_chain.empty() && !l.tls.own_chain.empty() &&
      X509_cmp(old->tls.own_chain.front().get(), l.tls.own_chain.front().get()) == 0)
    return old;
  return nullptr;
}

}  // namespace

// Called before the new runtime is published, so no handshake sees it without a staple. The
// stapler schedules its refresh from the inherited response (stapler.cpp).
void inherit_staples(const runtime::runtime& rt, const runtime::runtime& previous) {
  for (const auto& l : rt.listeners) {
    if (!l->staple || l->tls.own_chain.empty()) continue;
    if (auto old = stapling_same_leaf(*l, previous)) l->staple->set(old->staple->get());
  }
}

// Called after start_stapling and before the new runtime is published: the first handshakes
// with a new leaf (a rotated certificate, a listener the reload adds or that staples now) would
// go unstapled until the responder answered (review: a rotated must-staple certificate,
// indefinitely while the responder is down). Each such fetch is waited for, at most its
// ocsp_timeout (the fetch's own bound, plus staple_wait_margin) and max_staple_wait; past that
// the runtime is published without the staple, which comes when the fetch does.
void await_first_staples(
    const std::vector<std::shared_ptr<const runtime::listener_runtime>>& started,
    const runtime::runtime& previous) {
  const auto began = std::chrono::steady_clock::now();
  for (const auto& l : started) {
    // A leaf that stays starts with its staple; without one, its responder was failing already
    // and its loop backing off: not worth holding every reload for.
    if (stapling_same_leaf(*l, previous)) continue;
    const auto wait = std::min<std::chrono::steady_clock::duration>(
        l->revocation.timeout + staple_wait_margin, max_staple_wait);
    if (!l->staple->wait_first_fetch(began + wait))
      log::warn(
          "reload: no OCSP response for the new certificate yet; handshakes go without a "
          "staple until it comes",
          {{"listener", l->cfg.name},
           {"waited_ms", std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()}});
  }
}

// After a reload published another runtime: `previous`'s staples are no longer refreshed, even
// while connections still hold that runtime.
void retire_staples(const runtime::runtime& previous) {
  for (const auto& l : previous.listeners)
    if (l->staple) l->staple->retire();
}

// revocation.stapling: the service keeps each listener's staple fresh. Returns the listeners
// whose stapling it started.
std::vector<std::shared_ptr<const runtime::listener_runtime>> daemon::start_stapling(
    const runtime::runtime& rt) {
  std::vector<std::shared_ptr<const runtime::listener_runtime>> started;
  for (const auto& l : rt.listeners) {
    if (!l->staple || l->tls.own_chain.empty()) continue;
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
    if (revocation_->service().staple(l->staple, tls::up_ref(leaf), tls::up_ref(issuer), url,
                                      l->revocation.timeout, l->cfg.name))
      started.push_back(l);
    else
      log::warn("cannot staple: the OCSP responder is not an http:// URL",
                {{"listener", l->cfg.name}, {"url", url}});
  }
  return started;
}

// recheck_established: after a reload, the CRL files may revoke peers that are connected. Not
// when a listener's CRLs are the ones it had and rechecked already: a reload for anything else
// (a certificate rotated) spent a tenth of a second per 300,000-entry CRL and listener listing
// serials no connection could newly match, with the admin server waiting on this thread. (The
// recheck matches serials by their issuer's name and key alone, so it also closed, on every
// reload, peers the handshake's CRL check had let through: an intermediate listed under
// crl_scope: leaf, a CRL OpenSSL could not use under on_unavailable: allow. Those now stay until
// the CRLs change.)
void daemon::recheck_crl_files(const runtime::runtime& rt, const runtime::runtime* previous) {
  for (const auto& l : rt.listeners) {
    if (!l->revocation.recheck_established || l->tls.crls.empty()) continue;
    const auto old = previous ? previous->find(l->cfg.name) : nullptr;
    // The same decodes (load_crl_file shares one while the file's bytes stay): the same CRLs.
    if (old && old->revocation.recheck_established && !old->tls.crl_files.empty() &&
        old->tls.crl_files == l->tls.crl_files)
      continue;
    // The CAs a CRL's signature is checked against, for its key: what the handshake builds
    // chains from (a SPIFFE listener's bundles; the system store is not searched).
    std::vector<X509*> cas;
    for (const auto& ca : l->tls.trust)
      cas.push_back(ca.get());
    for (const auto& [domain, bundle] : l->tls.trust_by_domain)
      for (const auto& ca : bundle)
        cas.push_back(ca.get());
    for (auto& e : tls::revocation::events_from_crl_files(l->tls.crls, cas, l->cfg.name))
      for (auto& w : workers_)
        w->revoke(e);
  }
}

}  // namespace mtlsd::daemon::detail
