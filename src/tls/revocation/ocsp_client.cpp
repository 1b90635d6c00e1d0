#include "ocsp_client.hpp"

#include <algorithm>

#include "mtlsd/net/http_client.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {

namespace asio = boost::asio;

asio::awaitable<ocsp_exchange> ask_responder(net::http_url url, ocsp_query query, x509_ptr cert,
                                             x509_ptr issuer, std::chrono::milliseconds timeout,
                                             std::size_t max_response) {
  net::http_request req;
  req.post = true;
  req.body = std::move(query.der);
  req.content_type = "application/ocsp-request";
  req.accept = "application/ocsp-response";
  req.timeout = timeout;
  req.max_body = max_response;
  req.proxy = net::fetch_proxy();
  net::http_result res = co_await net::http_fetch(url, std::move(req));
  ocsp_exchange out;
  if (const std::string failure = res.describe_unless(200); !failure.empty()) {
    out.answer.result = status::unavailable;
    out.answer.detail = "no answer from the responder: " + failure;
    co_return out;
  }
  out.responded = true;
  out.answer = check_ocsp_response(res.body, cert.get(), issuer.get(), query.request.get(),
                                   std::time(nullptr));
  out.response = std::move(res.body);
  co_return out;
}

bool ocsp_client::cached::lasting_revocation() const {
  return answer.result == status::revoked && answer.detail != "certificateHold";
}

std::string ocsp_client::cached::source() const {
  return stapled ? "stapled ocsp" : "ocsp " + url;
}

bool ocsp_client::cached::fresh(std::time_t now) const {
  // A revocation does not expire (ocsp.cpp), but for a certificateHold: asked again, the
  // responder would only say it again, one request per handshake of the revoked peer.
  return lasting_revocation() || now < fresh_until();
}

std::time_t ocsp_client::cached::fresh_until() const {
  if (answer.next_update) {
    // Already past its nextUpdate when it came (taken within revocation_skew_seconds: a responder
    // late with pre-signed answers, or a replay): kept a little while, not asked for again at every
    // handshake (review), and never past what check_ocsp_response takes.
    if (fetched >= answer.next_update)
      return std::min<std::time_t>(fetched + ocsp_lapsed_answer_hold,
                                   answer.next_update + revocation_skew_seconds);
    return answer.next_update;
  }
  // Without nextUpdate an answer is taken only while its thisUpdate is recent (ocsp.cpp), and
  // kept no longer than that either, not ocsp_default_lifetime past the fetch.
  return std::min<std::time_t>(fetched + ocsp_default_lifetime,
                               answer.this_update + ocsp_max_age_without_next_update);
}

ocsp_client::ocsp_client(std::shared_ptr<service_state> state)
    : state_(std::move(state)), cache_(state_->lim.ocsp_entries, 0) {}

std::shared_ptr<ocsp_client::request_flight> ocsp_client::start(ocsp_query query,
                                                                const x509_ptr& cert,
                                                                const x509_ptr& issuer,
                                                                const net::http_url& url,
                                                                std::chrono::milliseconds timeout) {
  // Shared only by checks that would have asked the same: a listener with another responder
  // or timeout must not wait on a request made for another listener's settings.
  std::string key = flight_key(query.cert_id, url, timeout);
  if (auto it = inflight_.find(key); it != inflight_.end()) return it->second;
  auto f = std::make_shared<request_flight>(state_->ex);
  inflight_[key] = f;
  state_->spawn(fetch(shared_from_this(), f, std::move(key), std::move(query), up_ref(cert.get()),
                      up_ref(issuer.get()), url, timeout),
                "ocsp request");
  return f;
}

std::string ocsp_client::flight_key(const std::string& cert_id, const net::http_url& url,
                                    std::chrono::milliseconds timeout) {
  return cert_id + '\n' + url.text + '\n' + std::to_string(timeout.count());
}

asio::awaitable<void> ocsp_client::fetch(std::shared_ptr<ocsp_client> self,
                                         std::shared_ptr<request_flight> f, std::string key,
                                         ocsp_query query, x509_ptr cert, x509_ptr issuer,
                                         net::http_url url, std::chrono::milliseconds timeout) {
  const std::string cert_id = query.cert_id;
  // Template arguments spelled out: clang 14 (the fuzz build) has no CTAD for aggregates.
  inflight_guard<decltype(self->inflight_), request_flight> guard{self->inflight_, *f, key};
  f->answer.result = status::unavailable;
  f->answer.detail = "internal error";
  ocsp_exchange x =
      co_await ask_responder(url, std::move(query), up_ref(cert.get()), up_ref(issuer.get()),
                             timeout, self->state_->lim.ocsp_response_bytes);
  // Failures are held off for a moment, so that each connection does not ask again: a responder
  // that did not answer or declined (tryLater) for every certificate, an unusable answer (stale,
  // not covering the certificate) for this certificate.
  if (!x.responded || x.answer.declined)
    self->state_->record_failure(url.text, x.answer.detail);
  else if (x.answer.result == status::unavailable)
    self->state_->record_failure(cert_id, x.answer.detail);
  else
    self->keep(cert_id, x.answer, cert, issuer, url.text, timeout);
  if (x.answer.result == status::unavailable || x.answer.declined) self->refresh_failed(cert_id);
  self->state_->report(ocsp_fetched{url.text, subject_of(cert.get()), x.answer});
  f->answer = std::move(x.answer);
}

void ocsp_client::refresh_failed(const std::string& cert_id) {
  if (cached* c = cache_.peek(cert_id)) {
    c->failures++;
    c->retry_at = std::time(nullptr) + backoff(c->failures);
  }
}

asio::awaitable<void> ocsp_client::refresh_loop(std::shared_ptr<ocsp_client> self) {
  std::time_t wait = 1;  // the first answer kept has just started this
  while (!self->state_->stopping) {
    co_await self->state_->sleep_for(std::chrono::seconds(wait));
    if (self->state_->stopping) break;
    const std::time_t now = std::time(nullptr);
    wait = ocsp_refresh_period.count();
    struct ask {
      x509_ptr cert, issuer;
      std::string url;
      std::chrono::milliseconds timeout;
    };
    std::vector<ask> asks;
    self->cache_.for_each([&](const std::string&, cached& c) {
      const std::optional<std::time_t> due =
          ocsp_refresh_due({.watched = c.watched && c.cert,
                            .last_used = c.last_used,
                            .not_after = c.cert ? not_after_of(c.cert.get()) : 0,
                            .lasting_revocation = c.lasting_revocation(),
                            .fresh_until = c.fresh_until(),
                            .retry_at = c.retry_at},
                           now);
      if (!due) return;
      if (*due > now) {
        wait = std::min(wait, *due - now);
        return;
      }
      // A few at a time: answers signed in one batch lapse together, and each request takes a
      // descriptor from the process's small reserve (daemon/fd_limit.cpp). The rest wait a
      // second.
      if (asks.size() >= ocsp_refreshes_per_pass) {
        wait = 1;
        return;
      }
      asks.push_back({up_ref(c.cert.get()), up_ref(c.issuer.get()), c.url, c.timeout});
    });
    // Those asked for now were left out of `wait`: look again once they have surely ended
    // (their timeout), for a failure's backoff or an answer due again within the period.
    for (const auto& a : asks)
      wait = std::min<std::time_t>(wait,
                                   std::chrono::ceil<std::chrono::seconds>(a.timeout).count() + 1);
    wait = std::max<std::time_t>(wait, 1);
    for (auto& a : asks) {
      auto url = net::parse_http_url(a.url);
      ocsp_query q = make_ocsp_query(a.cert.get(), a.issuer.get());
      if (!url || q.der.empty()) continue;
      // Not awaited: each runs as a check's request would (shared with one in flight), and
      // keep() publishes a revocation it learns.
      self->start(std::move(q), a.cert, a.issuer, *url, a.timeout);
    }
  }
}

void ocsp_client::keep(const std::string& cert_id, const ocsp_answer& a, const x509_ptr& cert,
                       const x509_ptr& issuer, const std::string& url,
                       std::chrono::milliseconds timeout, bool stapled) {
  // Known for good: lookup() no longer asks about it, but a request already in flight may
  // still answer, and has nothing to add.
  if (revoked_.count(cert_id)) return;
  const cached* before = cache_.peek(cert_id);
  // A revocation stands: a later "unknown" (or "good") does not replace it, unless it was a
  // certificateHold, the one revocation a CA may take back.
  if (before && before->answer.result == status::revoked && a.result != status::revoked &&
      before->answer.detail != "certificateHold")
    return;
  const bool newly_revoked =
      a.result == status::revoked && !(before && before->answer.result == status::revoked);
  const std::time_t now = std::time(nullptr);
  cached fresh;
  fresh.answer = a;
  fresh.url = url;
  fresh.stapled = stapled;
  fresh.fetched = now;
  fresh.cert = up_ref(cert.get());
  fresh.issuer = up_ref(issuer.get());
  fresh.timeout = timeout;
  // A background refresh's answer does not make the certificate look used (nor watched).
  fresh.last_used = before ? before->last_used : now;
  fresh.watched = before && before->watched;
  cache_.put(cert_id, std::move(fresh));
  if (a.result == status::revoked && a.detail != "certificateHold" && revoked_.size() < max_revoked)
    if (auto [it, added] = revoked_.try_emplace(cert_id); added) {
      it->second.answer = a;
      it->second.url = url;
      it->second.stapled = stapled;
      it->second.fetched = now;
    }
  if (state_->background && !refreshing_) {
    refreshing_ = true;
    state_->spawn(refresh_loop(shared_from_this()), "ocsp refresh");
  }
  if (!newly_revoked) return;
  auto e = std::make_shared<revocation_event>();
  // The CertID named this issuer's key: another CA with the same name, whose certificates may
  // have the same serials, is not revoked by it.
  e->issuer = name_der(X509_get_issuer_name(cert.get()));
  e->issuer_key = key_hash_of(issuer.get());
  e->serials = {serial_der(X509_get0_serialNumber(cert.get()))};
  e->source = stapled ? "stapled ocsp" : "ocsp " + url;
  state_->publish(std::move(e));
}

const ocsp_client::cached* ocsp_client::known_revocation(const std::string& id) {
  if (auto it = revoked_.find(id); it != revoked_.end()) return &it->second;
  const cached* c = cache_.find(id);
  return c && c->answer.result == status::revoked ? c : nullptr;
}

namespace {

// Where lookup() asks about `cert`: pol.ocsp_responder, else the certificate's first AIA URL.
std::string responder_for(X509* cert, const policy& pol) {
  if (!pol.ocsp_responder.empty()) return pol.ocsp_responder;
  auto urls = ocsp_urls(cert);
  return urls.empty() ? std::string() : urls.front();
}

}  // namespace

void ocsp_client::watch_staple(const std::string& id, const x509_ptr& cert, const x509_ptr& issuer,
                               const policy& pol, std::time_t until) {
  auto url = net::parse_http_url(responder_for(cert.get(), pol));
  if (!url) return;
  const std::time_t now = std::time(nullptr);
  if (const cached* c = cache_.find(id); !c || !c->fresh(now)) {
    ocsp_answer a;
    a.result = status::good;
    a.this_update = now;
    a.next_update = std::max<std::time_t>(1, until);
    keep(id, a, cert, issuer, url->text, pol.timeout, true);  // starts the refresh loop
  }
  if (cached* c = cache_.peek(id)) {
    c->watched = true;
    c->last_used = now;
  }
}

answer ocsp_client::take_stapled_good(const x509_ptr& cert, const x509_ptr& issuer,
                                      const policy& pol, std::time_t until) {
  const std::string id = make_ocsp_query(cert.get(), issuer.get(), false).cert_id;
  if (id.empty()) return {status::good, "stapled ocsp", ""};
  // As lookup() answers: a lasting revocation always, a certificateHold while it is fresh (a
  // good answer newer than a lapsed hold lifts it there too).
  if (const cached* c = known_revocation(id);
      c && (c->lasting_revocation() || c->fresh(std::time(nullptr))))
    return {status::revoked, c->source(), c->answer.detail};
  if (pol.recheck_established && until) watch_staple(id, cert, issuer, pol, until);
  return {status::good, "stapled ocsp", ""};
}

void ocsp_client::keep_stapled_revocation(const x509_ptr& cert, const x509_ptr& issuer,
                                          const ocsp_answer& a, const policy& pol) {
  if (a.result != status::revoked) return;
  const std::string id = make_ocsp_query(cert.get(), issuer.get(), false).cert_id;
  if (id.empty()) return;
  // The responder a refresh would ask (a certificateHold is asked about again, as a fetched one
  // is); none is needed to keep a lasting revocation.
  const auto url = net::parse_http_url(responder_for(cert.get(), pol));
  keep(id, a, cert, issuer, url ? url->text : std::string(), pol.timeout, true);
}

asio::awaitable<answer> ocsp_client::lookup(x509_ptr cert, x509_ptr issuer, policy pol) {
  answer out{status::unavailable, "ocsp", "internal error"};
  const std::string url_text = responder_for(cert.get(), pol);
  if (url_text.empty()) {
    out.detail = "the certificate names no OCSP responder and ocsp_responder is not set";
    co_return out;
  }
  out.source = "ocsp " + url_text;
  auto url = net::parse_http_url(url_text);
  if (!url) {
    out.detail = "not an http:// URL";
    co_return out;
  }
  ocsp_query q = make_ocsp_query(cert.get(), issuer.get());
  if (q.der.empty()) {
    out.detail = "cannot build an OCSP request: " + drain_errors();
    co_return out;
  }
  const std::string id = q.cert_id;
  if (auto it = revoked_.find(id); it != revoked_.end())
    co_return answer{status::revoked, it->second.source(), it->second.answer.detail};
  if (cached* c = cache_.find(id)) {
    c->last_used = std::time(nullptr);
    c->watched = c->watched || pol.recheck_established;
    if (c->fresh(c->last_used)) co_return answer{c->answer.result, c->source(), c->answer.detail};
  }
  ocsp_answer a;
  const std::string* error = state_->recently_failed(url->text);
  if (!error) error = state_->recently_failed(id);
  if (error && !inflight_.count(flight_key(id, *url, pol.timeout))) {
    a.result = status::unavailable;
    a.detail = *error;
  } else {
    auto f = start(std::move(q), cert, issuer, *url, pol.timeout);
    co_await f->wait();
    a = f->answer;
    if (cached* c = cache_.peek(id); c && pol.recheck_established) c->watched = true;
  }
  if (a.result != status::revoked) {
    // A revocation does not expire with the response that announced it, nor give way to a later
    // "unknown" (keep() does not store that over it); a certificateHold may be lifted.
    if (const cached* c = known_revocation(id);
        c && (a.result == status::unavailable || c->answer.detail != "certificateHold"))
      co_return answer{status::revoked, c->source(), c->answer.detail};
  }
  out.result = a.result;
  out.detail = a.detail;
  co_return out;
}

}  // namespace mtlsd::tls::revocation
