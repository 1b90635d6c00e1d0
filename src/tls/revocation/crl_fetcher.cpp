#include "crl_fetcher.hpp"

#include <openssl/x509v3.h>

#include <algorithm>
#include <memory>

#include "mtlsd/log/log.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {

namespace asio = boost::asio;
using log::utc;

namespace {

struct asn1_integer_free {
  void operator()(ASN1_INTEGER* i) const { ASN1_INTEGER_free(i); }
};

// Why `fresh` is older than `held` (a rollback a stale mirror or cache would cause), or "": by
// CRL number when both carry one (RFC 5280 5.2.3: a CA's numbers only grow, so its corrected CRL
// after a clock dated ahead is newer though dated earlier, and a stale copy is older whatever its
// dates), else by thisUpdate.
std::string older_than(X509_CRL* fresh, X509_CRL* held) {
  const auto number = [](X509_CRL* crl) {
    return std::unique_ptr<ASN1_INTEGER, asn1_integer_free>(
        static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(crl, NID_crl_number, nullptr, nullptr)));
  };
  const auto text = [](const ASN1_INTEGER* n) {
    char* s = i2s_ASN1_INTEGER(nullptr, n);
    std::string out = s ? s : "?";
    OPENSSL_free(s);
    return out;
  };
  const auto a = number(fresh), b = number(held);
  if (a && b)
    return ASN1_INTEGER_cmp(a.get(), b.get()) < 0
               ? "CRL number " + text(a.get()) + " < " + text(b.get())
               : std::string();
  drain_errors();  // a CRL without the extension leaves nothing; a malformed one might
  return crl_this_update(fresh) < crl_this_update(held)
             ? "thisUpdate " + utc(crl_this_update(fresh)) + " < " + utc(crl_this_update(held))
             : std::string();
}

}  // namespace

crl_fetcher::crl_fetcher(std::shared_ptr<service_state> state)
    : state_(std::move(state)),
      cache_(state_->lim.crl_entries, state_->lim.crl_total_bytes,
             [](const cached& c) { return c.bytes; }) {
  cache_.on_evict([this](const std::string& url, cached&) { state_->report(crl_dropped{url}); });
}

// --- lookups ------------------------------------------------------------------------------

asio::awaitable<answer> crl_fetcher::lookup(x509_ptr cert, x509_ptr issuer, policy pol,
                                            std::time_t at) {
  const auto urls = crl_urls(cert.get());
  if (urls.empty())
    co_return answer{status::unavailable, "crl",
                     "the certificate names no http:// CRL distribution point"};
  // One timeout for the whole lookup, not one per point: points that do not answer, tried in
  // turn, would take the check past the session's backstop (twice the timeout), which refuses
  // even under on_unavailable: allow. A point is tried only within the lookup's first timeout.
  const auto started = std::chrono::steady_clock::now();
  answer out;
  for (const auto& url_text : urls) {
    if (&url_text != &urls.front() && std::chrono::steady_clock::now() - started >= pol.timeout) {
      out.detail += " (the other distribution points were not tried: the lookup's time was up)";
      break;
    }
    out = co_await lookup_at(url_text, cert.get(), issuer.get(), pol, at);
    if (out.result != status::unavailable) break;
  }
  co_return out;
}

asio::awaitable<answer> crl_fetcher::lookup_at(std::string url_text, X509* cert, X509* issuer,
                                               policy pol, std::time_t at) {
  answer out{status::unavailable, "crl " + url_text, ""};
  auto url = net::parse_http_url(url_text);
  if (!url) {
    out.detail = "not an http:// URL";
    co_return out;
  }
  const std::time_t now = std::time(nullptr);
  cached* c = cache_.find(url_text);
  const bool expired = c && ((c->next_update && now >= c->next_update) || c->ahead(now));
  // Download when there is nothing yet, or when the copy expired and the last attempt is not
  // backing off; otherwise use what there is.
  if (!c || (expired && (c->failures == 0 || now >= c->refresh_at))) {
    if (const std::string* error = state_->recently_failed(url_text);
        error && !inflight_.count(flight_key(url_text, pol.timeout)) && !c) {
      out.detail = *error;
      co_return out;
    }
    auto f = start(*url, issuer, pol.timeout);
    co_await f->wait();
    c = cache_.find(url_text);
    if (!c) {
      out.detail = "fetching the CRL failed: " + f->error;
      co_return out;
    }
  }
  if (X509_cmp(c->issuer.get(), issuer) != 0) {
    if (std::string why = check_crl_issuer(c->crl.get(), issuer); !why.empty()) {
      out.detail = why;
      co_return out;
    }
  }
  c->last_used = now;
  co_return judge(*c, cert, pol, at ? at : now);
}

answer crl_fetcher::judge(const cached& c, X509* cert, const policy& pol, std::time_t when) const {
  answer out{status::unavailable, "crl " + c.url, ""};
  if (std::string why = check_crl_scope(c.crl.get(), cert); !why.empty()) {
    out.detail = why;
    return out;
  }
  crl_entry_status e = lookup_crl(c.crl.get(), cert);
  if (e.revoked) {
    out.result = status::revoked;
    out.detail = e.reason;
    return out;
  }
  if (c.next_update && when > c.next_update + pol.grace_seconds) {
    out.detail = "CRL expired at " + utc(c.next_update) +
                 (c.last_error.empty() ? "" : "; refreshing it failed: " + c.last_error);
    return out;
  }
  if (c.this_update > when + revocation_skew_seconds) {
    out.detail = "CRL is not valid before " + utc(c.this_update);
    return out;
  }
  out.result = status::good;
  return out;
}

// --- downloads ----------------------------------------------------------------------------

std::shared_ptr<crl_fetcher::download_flight> crl_fetcher::start(
    const net::http_url& url, X509* issuer, std::chrono::milliseconds timeout) {
  std::string key = flight_key(url.text, timeout);
  if (auto it = inflight_.find(key); it != inflight_.end()) return it->second;
  auto f = std::make_shared<download_flight>(state_->ex);
  f->key = key;
  inflight_[std::move(key)] = f;
  state_->spawn(fetch(shared_from_this(), f, url, up_ref(issuer), timeout), "crl download");
  return f;
}

asio::awaitable<void> crl_fetcher::fetch(std::shared_ptr<crl_fetcher> self,
                                         std::shared_ptr<download_flight> f, net::http_url url,
                                         x509_ptr issuer, std::chrono::milliseconds timeout) {
  inflight_guard<decltype(self->inflight_), download_flight> guard{self->inflight_, *f, f->key};
  f->error = "internal error";
  net::http_request req;
  req.accept = "application/pkix-crl";
  req.timeout = timeout;
  req.max_body = self->state_->lim.crl_bytes;
  req.proxy = net::fetch_proxy();
  net::http_result res = co_await net::http_fetch(url, std::move(req));
  std::string error;
  x509_crl_ptr crl = self->accept(res, issuer.get(), self->cache_.peek(url.text), error);
  if (!crl) {
    f->error = error;
    self->failed(url.text, error);
    co_return;
  }
  f->error = self->keep(url, std::move(crl), res.body, std::move(issuer), timeout);
}

x509_crl_ptr crl_fetcher::accept(const net::http_result& res, X509* issuer, const cached* old,
                                 std::string& error) const {
  x509_crl_ptr crl;
  if (error = res.describe_unless(200); !error.empty()) return nullptr;
  if (!(crl = parse_crl(res.body))) {
    error = "the response is not a CRL";
    return nullptr;
  }
  if (error = check_crl_issuer(crl.get(), issuer); !error.empty()) return nullptr;
  // Lookups from several threads read it once kept: sorted now, as a CRL file is (review: before,
  // it was sorted before its signature was checked, a second of work for 10 MiB of junk).
  sort_revoked(crl.get());
  // A stale mirror or cache in front of the distribution point must not roll us back, nor
  // take away what a CRL dated ahead of this clock revokes; the CA's corrected CRL, numbered
  // after it, replaces that one (review).
  if (const std::string why = old ? older_than(crl.get(), old->crl.get()) : std::string();
      !why.empty()) {
    error = "the distribution point serves a CRL older than the one already held (" + why + ")";
    return nullptr;
  }
  return crl;
}

void crl_fetcher::failed(const std::string& url, const std::string& error) {
  state_->record_failure(url, "fetching the CRL failed: " + error);
  if (cached* old = cache_.peek(url)) {
    old->failures++;
    old->last_error = error;
    old->refresh_at = std::time(nullptr) + backoff(old->failures);
  }
  crl_fetched done;
  done.url = url;
  done.error = error;
  state_->report(done);
}

std::string crl_fetcher::keep(const net::http_url& url, x509_crl_ptr crl, const std::string& body,
                              x509_ptr issuer, std::chrono::milliseconds timeout) {
  const std::time_t now = std::time(nullptr);
  const cached* old = cache_.peek(url.text);
  cached fresh;
  fresh.url = url.text;
  fresh.bytes = crl_memory_bytes(body.size());
  fresh.body_hash = std::hash<std::string>{}(body);
  fresh.this_update = crl_this_update(crl.get());
  fresh.next_update = crl_next_update(crl.get());
  fresh.timeout = timeout;
  fresh.last_used = old ? old->last_used : now;
  const bool changed = !old || old->body_hash != fresh.body_hash;
  const bool has_loop = old != nullptr;
  fresh.generation = old ? old->generation : next_generation_++;
  if (fresh.next_update && fresh.next_update <= now) {
    // Published already stale: keep it (it still revokes) but retry with backoff.
    fresh.failures = old ? old->failures + 1 : 1;
    fresh.last_error =
        "the distribution point serves a CRL past its nextUpdate (" + utc(fresh.next_update) + ")";
    fresh.refresh_at = now + backoff(fresh.failures);
  } else if (fresh.ahead(now)) {
    // Dated ahead of this clock (the CA's runs fast): kept, as its revocations stand, but it says
    // nothing current about the rest (judge) and is asked for again with backoff (lookup_at),
    // where the CA's corrected CRL replaces it (accept). Before, it stayed until this clock
    // caught up.
    fresh.failures = old ? old->failures + 1 : 1;
    fresh.last_error = "the distribution point serves a CRL not valid before " +
                       utc(fresh.this_update) + " (its thisUpdate is ahead of this clock)";
    fresh.refresh_at = now + backoff(fresh.failures);
  } else {
    fresh.refresh_at =
        crl_refresh_time(fresh.this_update, fresh.next_update, now, crl_idle_lifetime);
  }
  crl_fetched done;
  done.url = url.text;
  done.issuer = crl_issuer_text(crl.get());
  done.this_update = fresh.this_update;
  done.next_update = fresh.next_update;
  done.not_current = fresh.last_error;  // set above only for a CRL stale or dated ahead
  done.ahead = fresh.ahead(now);
  std::vector<std::string> serials =
      changed ? revoked_serials(crl.get()) : std::vector<std::string>{};
  done.revoked = serials.size();
  // The event's issuer is the CA the CRL's signature was verified with (accept), by name and
  // key. An indirect CRL makes none: its entries may be other CAs', whose keys it does not name,
  // and judge never takes one (check_crl_scope).
  const bool publishes = changed && !serials.empty() && !indirect_crl(crl.get());
  std::string issuer_name = name_der(X509_CRL_get_issuer(crl.get()));
  const key_hash issuer_key = publishes ? key_hash_of(issuer.get()) : key_hash{};
  fresh.crl = std::move(crl);
  fresh.issuer = std::move(issuer);
  const std::uint64_t generation = fresh.generation;
  if (!cache_.put(url.text, std::move(fresh))) return "CRL larger than the cache allows";
  state_->report(done);
  if (publishes) {
    auto e = std::make_shared<revocation_event>();
    e->issuer = std::move(issuer_name);
    e->issuer_key = issuer_key;
    e->serials = std::move(serials);
    e->source = "crl " + url.text;
    state_->publish(std::move(e));
  }
  if (state_->background && !has_loop)
    state_->spawn(refresh_loop(shared_from_this(), url, generation), "crl refresh");
  return {};
}

asio::awaitable<void> crl_fetcher::refresh_loop(std::shared_ptr<crl_fetcher> self,
                                                net::http_url url, std::uint64_t generation) {
  for (;;) {
    cached* c = self->cache_.peek(url.text);
    if (self->state_->stopping || !c || c->generation != generation) co_return;
    const std::time_t now = std::time(nullptr);
    if (now - c->last_used > crl_idle_lifetime) {
      self->state_->report(crl_dropped{url.text});
      self->cache_.erase(url.text);
      co_return;
    }
    if (now >= c->refresh_at) {
      auto f = self->start(url, c->issuer.get(), c->timeout);
      co_await f->wait();
      continue;
    }
    co_await self->state_->sleep_for(std::chrono::seconds(c->refresh_at - now));
  }
}

}  // namespace mtlsd::tls::revocation
