#include "mtlsd/tls/revocation/service.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "mtlsd/log/log.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/url.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/revocation/cache.hpp"
#include "mtlsd/tls/revocation/crl.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"

namespace mtlsd::tls::revocation {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using steady = std::chrono::steady_clock;
using net::http_fetch;
using net::http_request;
using net::http_result;
using net::http_url;
using net::parse_http_url;
using std::chrono::seconds;

namespace {

// An OCSP answer without nextUpdate says "ask again whenever": keep it this long.
constexpr std::time_t ocsp_default_lifetime = 300;
// After a failed request to a URL, checks answer "unavailable" at once for this long instead of
// each waiting for the same dead responder (the background refresh has its own backoff).
constexpr auto failure_hold_off = std::chrono::seconds(1);
// A distribution point nobody used for this long is no longer refreshed (and is forgotten).
constexpr std::time_t crl_idle_lifetime = 3600;
// Background loops wake at least this often to notice that their slot or entry is gone.
constexpr auto max_sleep = std::chrono::seconds(60);
constexpr std::size_t max_chain_completion = 8;

std::string utc(std::time_t t) {
  char buf[32];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Exponential backoff for background refreshes: 1s, 2s, 4s ... 5 minutes.
std::time_t backoff(int failures) {
  const int exp = std::clamp(failures - 1, 0, 9);
  return std::min<std::time_t>(std::time_t{1} << exp, 300);
}

// Something several coroutines of the service's thread wait for: a timer that never expires
// until finish() moves its expiry into the past (which also completes later waits at once).
struct flight {
  explicit flight(const asio::any_io_executor& ex) : done(ex, steady::time_point::max()) {}
  asio::steady_timer done;
  bool finished = false;
  void finish() {
    finished = true;
    done.expires_at(steady::time_point::min());
  }
  asio::awaitable<void> wait() {
    if (!finished) co_await done.async_wait(as_tuple(use_awaitable));
  }
};

struct ocsp_flight : flight {
  using flight::flight;
  ocsp_answer answer;
};

struct crl_flight : flight {
  using flight::flight;
  std::string error;
};

struct join_flight : flight {
  using flight::flight;
  std::size_t left = 0;
};

struct ocsp_cached {
  ocsp_answer answer;
  std::string url;
  std::time_t fetched = 0;
};

struct crl_cached {
  x509_crl_ptr crl;
  x509_ptr issuer;  // the certificate its signature was verified against
  std::string url;
  std::size_t bytes = 0;
  std::size_t body_hash = 0;
  std::time_t this_update = 0;
  std::time_t next_update = 0;
  std::time_t last_used = 0;
  std::time_t refresh_at = 0;
  std::chrono::milliseconds timeout{2000};
  int failures = 0;
  std::string last_error;
  std::uint64_t generation = 0;  // identifies the refresh loop that owns this URL
};

}  // namespace

struct service::impl : std::enable_shared_from_this<impl> {
  impl(asio::any_io_executor e, metrics::registry* m, service_limits l, bool bg)
      : ex(std::move(e)),
        metrics(m),
        lim(l),
        background(bg),
        ocsp(l.ocsp_entries, 0),
        crls(l.crl_entries, l.crl_total_bytes, [](const crl_cached& c) { return c.bytes; }),
        issuers(l.issuers, 0) {
    crls.on_evict([this](const std::string& url, crl_cached&) { forget_crl_metric(url); });
  }

  asio::any_io_executor ex;
  metrics::registry* metrics;
  service_limits lim;
  bool background;
  bool stopping = false;
  std::vector<std::function<void(event_ptr)>> sinks;
  lru_cache<std::string, ocsp_cached> ocsp;  // by CertID
  std::unordered_map<std::string, std::shared_ptr<ocsp_flight>> ocsp_inflight;
  lru_cache<std::string, crl_cached> crls;  // by URL
  std::unordered_map<std::string, std::shared_ptr<crl_flight>> crl_inflight;
  lru_cache<std::string, x509_ptr> issuers;  // CA certificates by subject name (DER)
  std::unordered_map<std::string, std::pair<steady::time_point, std::string>> failed_urls;
  std::unordered_set<asio::steady_timer*> sleeping;
  std::uint64_t next_generation = 1;

  // --- helpers ----------------------------------------------------------------

  template <class Awaitable>
  void spawn(Awaitable a, const char* what) {
    asio::co_spawn(ex, std::move(a), [what](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex2) {
        log::error("revocation task failed", {{"task", what}, {"error", ex2.what()}});
      }
    });
  }

  asio::awaitable<void> sleep_for(steady::duration d) {
    asio::steady_timer t(ex, std::min<steady::duration>(d, max_sleep));
    sleeping.insert(&t);
    co_await t.async_wait(as_tuple(use_awaitable));
    sleeping.erase(&t);
  }

  void publish(event_ptr e) {
    for (auto& sink : sinks)
      sink(e);
  }

  // Answers "unavailable" at once for a URL that failed a moment ago.
  const std::string* recently_failed(const std::string& url) {
    auto it = failed_urls.find(url);
    if (it == failed_urls.end()) return nullptr;
    if (steady::now() >= it->second.first) {
      failed_urls.erase(it);
      return nullptr;
    }
    return &it->second.second;
  }
  void record_failure(const std::string& url, const std::string& error) {
    if (failed_urls.size() > 1024) failed_urls.clear();
    failed_urls[url] = {steady::now() + failure_hold_off, error};
  }

  void forget_crl_metric(const std::string& url) {
    if (metrics) metrics->set_crl_next_update("crl " + url, {});
  }

  // --- issuers (for resumed sessions) -----------------------------------------

  void learn_issuers(const cert_chain& chain) {
    for (std::size_t i = 1; i < chain.size(); ++i)
      issuers.put(name_der(X509_get_subject_name(chain[i].get())), up_ref(chain[i].get()));
  }

  void complete_chain(cert_chain& chain) {
    while (!chain.empty() && chain.size() < max_chain_completion) {
      X509* top = chain.back().get();
      if (X509_check_issued(top, top) == X509_V_OK) return;  // a self-issued root
      x509_ptr* found = issuers.find(name_der(X509_get_issuer_name(top)));
      if (!found || X509_check_issued(found->get(), top) != X509_V_OK) return;
      EVP_PKEY* key = X509_get0_pubkey(found->get());
      if (!key || X509_verify(top, key) != 1) {
        drain_errors();
        return;
      }
      chain.push_back(up_ref(found->get()));
    }
  }

  // --- OCSP ---------------------------------------------------------------------

  static bool fresh(const ocsp_cached& c, std::time_t now) {
    if (c.answer.next_update) return now < c.answer.next_update;
    return now < c.fetched + ocsp_default_lifetime;
  }

  std::shared_ptr<ocsp_flight> start_ocsp(ocsp_query q, X509* cert, X509* issuer,
                                          const http_url& url, std::chrono::milliseconds timeout) {
    if (auto it = ocsp_inflight.find(q.cert_id); it != ocsp_inflight.end()) return it->second;
    auto f = std::make_shared<ocsp_flight>(ex);
    ocsp_inflight[q.cert_id] = f;
    spawn(
        fetch_ocsp(shared_from_this(), f, std::move(q), up_ref(cert), up_ref(issuer), url, timeout),
        "ocsp request");
    return f;
  }

  // Whatever happens to a fetch (answer, error, exception, cancellation), its flight leaves the
  // in-flight map and every session waiting on it wakes up.
  template <class Map, class Flight>
  struct inflight_guard {
    Map& inflight;
    Flight& flight;
    const std::string& key;
    ~inflight_guard() {
      inflight.erase(key);
      flight.finish();
    }
  };

  static asio::awaitable<void> fetch_ocsp(std::shared_ptr<impl> self,
                                          std::shared_ptr<ocsp_flight> f, ocsp_query q,
                                          x509_ptr cert, x509_ptr issuer, http_url url,
                                          std::chrono::milliseconds timeout) {
    // Template arguments spelled out: clang 14 (the fuzz build) has no CTAD for aggregates.
    inflight_guard<decltype(self->ocsp_inflight), ocsp_flight> guard{self->ocsp_inflight, *f,
                                                                     q.cert_id};
    f->answer.result = status::unavailable;
    f->answer.detail = "internal error";

    http_request req;
    req.post = true;
    req.body = q.der;
    req.content_type = "application/ocsp-request";
    req.accept = "application/ocsp-response";
    req.timeout = timeout;
    req.max_body = self->lim.ocsp_response_bytes;
    req.proxy = net::fetch_proxy();
    http_result res = co_await http_fetch(url, std::move(req));
    ocsp_answer a;
    if (const std::string failure = res.describe_unless(200); !failure.empty()) {
      a.result = status::unavailable;
      a.detail = "no answer from the responder: " + failure;
      self->record_failure(url.text, a.detail);
    } else {
      a = check_ocsp_response(res.body, cert.get(), issuer.get(), q.request.get(),
                              std::time(nullptr));
    }
    log::debug("ocsp answer", {{"url", url.text},
                               {"subject", subject_of(cert.get())},
                               {"status", to_string(a.result)},
                               {"detail", a.detail}});
    if (a.result != status::unavailable) {
      const ocsp_cached* before = self->ocsp.peek(q.cert_id);
      const bool newly_revoked =
          a.result == status::revoked && !(before && before->answer.result == status::revoked);
      self->ocsp.put(q.cert_id, {a, url.text, std::time(nullptr)});
      if (newly_revoked) {
        auto e = std::make_shared<revocation_event>();
        e->issuer = name_der(X509_get_issuer_name(cert.get()));
        e->serials = {serial_der(X509_get0_serialNumber(cert.get()))};
        e->source = "ocsp " + url.text;
        self->publish(std::move(e));
      }
    } else {
      log::warn("OCSP check failed",
                {{"url", url.text}, {"subject", subject_of(cert.get())}, {"error", a.detail}});
    }
    f->answer = std::move(a);
  }

  asio::awaitable<void> lookup_ocsp(answer& out, X509* cert, X509* issuer, const policy& pol) {
    out = {status::unavailable, "ocsp", "internal error"};
    std::string url_text = pol.ocsp_responder;
    if (url_text.empty()) {
      auto urls = ocsp_urls(cert);
      if (!urls.empty()) url_text = urls.front();
    }
    if (url_text.empty()) {
      out.detail = "the certificate names no OCSP responder and ocsp_responder is not set";
      co_return;
    }
    out.source = "ocsp " + url_text;
    auto url = parse_http_url(url_text);
    if (!url) {
      out.detail = "not an http:// URL";
      co_return;
    }
    ocsp_query q = make_ocsp_query(cert, issuer);
    if (q.der.empty()) {
      out.detail = "cannot build an OCSP request: " + drain_errors();
      co_return;
    }
    const std::string id = q.cert_id;
    if (const ocsp_cached* c = ocsp.find(id); c && fresh(*c, std::time(nullptr))) {
      out = {c->answer.result, "ocsp " + c->url, c->answer.detail};
      co_return;
    }
    ocsp_answer a;
    if (const std::string* error = recently_failed(url->text); error && !ocsp_inflight.count(id)) {
      a.result = status::unavailable;
      a.detail = *error;
    } else {
      auto f = start_ocsp(std::move(q), cert, issuer, *url, pol.timeout);
      co_await f->wait();
      a = f->answer;
    }
    if (a.result == status::unavailable) {
      // A revocation does not expire with the response that announced it.
      if (const ocsp_cached* c = ocsp.find(id); c && c->answer.result == status::revoked) {
        out = {status::revoked, "ocsp " + c->url, c->answer.detail};
        co_return;
      }
    }
    out.result = a.result;
    out.detail = a.detail;
  }

  // --- CRLs from distribution points --------------------------------------------

  static std::time_t refresh_time(std::time_t this_update, std::time_t next_update,
                                  std::time_t now) {
    if (!next_update) return now + crl_idle_lifetime;
    const std::time_t lead =
        std::clamp<std::time_t>((next_update - this_update) / 4, 1, crl_idle_lifetime);
    return std::max(next_update - lead, now + 1);
  }

  std::shared_ptr<crl_flight> start_crl(const http_url& url, X509* issuer,
                                        std::chrono::milliseconds timeout) {
    if (auto it = crl_inflight.find(url.text); it != crl_inflight.end()) return it->second;
    auto f = std::make_shared<crl_flight>(ex);
    crl_inflight[url.text] = f;
    spawn(fetch_crl(shared_from_this(), f, url, up_ref(issuer), timeout), "crl download");
    return f;
  }

  static asio::awaitable<void> fetch_crl(std::shared_ptr<impl> self, std::shared_ptr<crl_flight> f,
                                         http_url url, x509_ptr issuer,
                                         std::chrono::milliseconds timeout) {
    inflight_guard<decltype(self->crl_inflight), crl_flight> guard{self->crl_inflight, *f,
                                                                   url.text};
    f->error = "internal error";

    http_request req;
    req.accept = "application/pkix-crl";
    req.timeout = timeout;
    req.max_body = self->lim.crl_bytes;
    req.proxy = net::fetch_proxy();
    http_result res = co_await http_fetch(url, std::move(req));
    const std::time_t now = std::time(nullptr);
    x509_crl_ptr crl;
    std::string error;
    if (const std::string failure = res.describe_unless(200); !failure.empty())
      error = failure;
    else if (!(crl = parse_crl(res.body)))
      error = "the response is not a CRL";
    else
      error = check_crl_issuer(crl.get(), issuer.get());
    crl_cached* old = self->crls.peek(url.text);
    // A stale mirror or cache in front of the distribution point must not roll us back.
    if (error.empty() && old && crl_this_update(crl.get()) < old->this_update)
      error = "the distribution point serves a CRL older than the one already held (" +
              utc(crl_this_update(crl.get())) + " < " + utc(old->this_update) + ")";
    if (!error.empty()) {
      f->error = error;
      self->record_failure(url.text, "fetching the CRL failed: " + error);
      if (old) {
        old->failures++;
        old->last_error = error;
        old->refresh_at = now + backoff(old->failures);
      }
      log::warn("CRL download failed", {{"url", url.text}, {"error", error}});
      co_return;
    }
    crl_cached fresh;
    fresh.url = url.text;
    fresh.bytes = res.body.size();
    fresh.body_hash = std::hash<std::string>{}(res.body);
    fresh.this_update = crl_this_update(crl.get());
    fresh.next_update = crl_next_update(crl.get());
    fresh.timeout = timeout;
    fresh.last_used = old ? old->last_used : now;
    const bool changed = !old || old->body_hash != fresh.body_hash;
    const bool has_loop = old != nullptr;
    fresh.generation = old ? old->generation : self->next_generation++;
    if (fresh.next_update && fresh.next_update <= now) {
      // Published already stale: keep it (it still revokes) but retry with backoff.
      fresh.failures = old ? old->failures + 1 : 1;
      fresh.last_error = "the distribution point serves a CRL past its nextUpdate (" +
                         utc(fresh.next_update) + ")";
      fresh.refresh_at = now + backoff(fresh.failures);
    } else {
      fresh.refresh_at = refresh_time(fresh.this_update, fresh.next_update, now);
    }
    const std::string issuer_text = crl_issuer_text(crl.get());
    std::vector<std::string> serials =
        changed ? revoked_serials(crl.get()) : std::vector<std::string>{};
    const std::string issuer_name = name_der(X509_CRL_get_issuer(crl.get()));
    fresh.crl = std::move(crl);
    fresh.issuer = std::move(issuer);
    const std::uint64_t generation = fresh.generation;
    const std::time_t next_update = fresh.next_update;
    crl_cached* stored = self->crls.put(url.text, std::move(fresh));
    f->error.clear();
    if (!stored) {
      f->error = "CRL larger than the cache allows";
      co_return;
    }
    log::info("CRL downloaded", {{"url", url.text},
                                 {"issuer", issuer_text},
                                 {"revoked", static_cast<std::int64_t>(serials.size())},
                                 {"next_update", next_update ? utc(next_update) : "none"}});
    if (self->metrics && next_update)
      self->metrics->set_crl_next_update("crl " + url.text,
                                         {{issuer_text, static_cast<double>(next_update)}});
    if (changed && !serials.empty()) {
      auto e = std::make_shared<revocation_event>();
      e->issuer = issuer_name;
      e->serials = std::move(serials);
      e->source = "crl " + url.text;
      self->publish(std::move(e));
    }
    if (self->background && !has_loop)
      self->spawn(refresh_loop(self, url, generation), "crl refresh");
  }

  static asio::awaitable<void> refresh_loop(std::shared_ptr<impl> self, http_url url,
                                            std::uint64_t generation) {
    for (;;) {
      crl_cached* c = self->crls.peek(url.text);
      if (self->stopping || !c || c->generation != generation) co_return;
      const std::time_t now = std::time(nullptr);
      if (now - c->last_used > crl_idle_lifetime) {
        self->forget_crl_metric(url.text);
        self->crls.erase(url.text);
        co_return;
      }
      if (now >= c->refresh_at) {
        auto f = self->start_crl(url, c->issuer.get(), c->timeout);
        co_await f->wait();
        continue;
      }
      co_await self->sleep_for(seconds(c->refresh_at - now));
    }
  }

  asio::awaitable<void> lookup_distribution_point(answer& out, X509* cert, X509* issuer,
                                                  const policy& pol, std::time_t at) {
    out = {status::unavailable, "crl", "internal error"};
    const auto urls = crl_urls(cert);
    if (urls.empty()) {
      out.detail = "the certificate names no http:// CRL distribution point";
      co_return;
    }
    for (const auto& url_text : urls) {
      out = {status::unavailable, "crl " + url_text, ""};
      auto url = parse_http_url(url_text);
      if (!url) {
        out.detail = "not an http:// URL";
        continue;
      }
      const std::time_t now = std::time(nullptr);
      crl_cached* c = crls.find(url_text);
      const bool expired = c && c->next_update && now >= c->next_update;
      // Download when there is nothing yet, or when the copy expired and the last attempt is
      // not backing off; otherwise use what there is.
      if (!c || (expired && (c->failures == 0 || now >= c->refresh_at))) {
        if (const std::string* error = recently_failed(url_text);
            error && !crl_inflight.count(url_text) && !c) {
          out.detail = *error;
          continue;
        }
        auto f = start_crl(*url, issuer, pol.timeout);
        co_await f->wait();
        c = crls.find(url_text);
        if (!c) {
          out.detail = "fetching the CRL failed: " + f->error;
          continue;
        }
      }
      if (X509_cmp(c->issuer.get(), issuer) != 0) {
        if (std::string why = check_crl_issuer(c->crl.get(), issuer); !why.empty()) {
          out.detail = why;
          continue;
        }
      }
      c->last_used = now;
      if (std::string why = check_crl_scope(c->crl.get(), cert); !why.empty()) {
        out.detail = why;
        continue;
      }
      const std::time_t when = at ? at : now;
      crl_entry_status e = lookup_crl(c->crl.get(), cert);
      if (e.revoked) {
        out.result = status::revoked;
        out.detail = e.reason;
        co_return;
      }
      if (c->next_update && when > c->next_update + pol.grace_seconds) {
        out.detail = "CRL expired at " + utc(c->next_update) +
                     (c->last_error.empty() ? "" : "; refreshing it failed: " + c->last_error);
        continue;
      }
      if (c->this_update > when + ocsp_skew_seconds) {
        out.detail = "CRL is not valid before " + utc(c->this_update);
        continue;
      }
      out.result = status::good;
      co_return;
    }
  }

  // --- checks -------------------------------------------------------------------

  asio::awaitable<void> run_all(std::vector<asio::awaitable<void>> tasks) {
    if (tasks.empty()) co_return;
    auto join = std::make_shared<join_flight>(ex);
    join->left = tasks.size();
    for (auto& t : tasks)
      asio::co_spawn(ex, std::move(t), [join](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex2) {
            log::error("revocation lookup failed", {{"error", ex2.what()}});
          }
        }
        if (--join->left == 0) join->finish();
      });
    co_await join->wait();
  }

  asio::awaitable<verdict> check(check_request req) {
    auto self = shared_from_this();  // outlives the lookups below even if the service stops
    const policy& pol = req.pol;
    if (req.chain_verified)
      learn_issuers(req.chain);
    else
      complete_chain(req.chain);
    const std::size_t n = req.chain.size();
    std::vector<level> levels(n);
    std::vector<asio::awaitable<void>> lookups;
    for (std::size_t d = 0; d < n; ++d) {
      X509* cert = req.chain[d].get();
      level& l = levels[d];
      l.subject = subject_of(cert);
      if (pol.crl_files && pol.crl_at(d)) {
        // Checked inside the handshake. A resumed session was checked by the full handshake on
        // this same context, whose CRL files cannot change (a reload builds a new context).
        const bool missing = d < 32 && (req.crl_file_unavailable >> d) & 1U;
        l.crl_file = {missing ? status::unavailable : status::good, "crl file",
                      missing ? req.crl_file_note : std::string()};
      }
      X509* issuer = d + 1 < n ? req.chain[d + 1].get() : nullptr;
      if (!issuer) {
        // The top of the chain: a trust anchor, which nothing above can revoke — unless the
        // chain is incomplete (a resumed session whose issuer the service never saw).
        if (req.chain_verified || X509_check_issued(cert, cert) == X509_V_OK) continue;
        const answer no_issuer{status::unavailable, "",
                               "issuer unknown (session resumed after its issuer was forgotten)"};
        if (pol.distribution_points && pol.crl_at(d)) l.distribution_point = no_issuer;
        if (pol.ocsp_at(d)) l.ocsp = no_issuer;
        continue;
      }
      if (pol.distribution_points && pol.crl_at(d))
        lookups.push_back(
            lookup_distribution_point(l.distribution_point, cert, issuer, pol, req.at));
      if (pol.ocsp_at(d)) {
        // Client mode: a verified staple saying "good" is the leaf's OCSP answer already.
        if (d == 0 && req.leaf_stapled_good)
          l.ocsp = {status::good, "stapled ocsp", ""};
        else
          lookups.push_back(lookup_ocsp(l.ocsp, cert, issuer, pol));
      }
    }
    co_await run_all(std::move(lookups));
    co_return decide(levels, pol.soft_fail);
  }

  // --- stapling -----------------------------------------------------------------

  static asio::awaitable<void> staple_loop(std::shared_ptr<impl> self,
                                           std::weak_ptr<staple_slot> weak, x509_ptr cert,
                                           x509_ptr issuer, http_url url,
                                           std::chrono::milliseconds timeout,
                                           std::string listener) {
    int failures = 0;
    bool stapled_once = false;
    while (!self->stopping) {
      std::time_t next = 0;
      {
        auto slot = weak.lock();
        // The listener's runtime is gone, or superseded by a reload (its connections may
        // hold it for long; their handshakes are over).
        if (!slot || slot->retired()) co_return;
        ocsp_query q = make_ocsp_query(cert.get(), issuer.get(), false);
        http_request req;
        req.post = true;
        req.body = q.der;
        req.content_type = "application/ocsp-request";
        req.accept = "application/ocsp-response";
        req.timeout = timeout;
        req.max_body = self->lim.ocsp_response_bytes;
        req.proxy = net::fetch_proxy();
        http_result res = co_await http_fetch(url, std::move(req));
        const std::time_t now = std::time(nullptr);
        ocsp_answer a;
        if (const std::string failure = res.describe_unless(200); failure.empty())
          a = check_ocsp_response(res.body, cert.get(), issuer.get(), nullptr, now);
        else
          a.detail = "no answer from the responder: " + failure;
        if (a.result == status::good || a.result == status::revoked) {
          auto r = std::make_shared<staple_slot::response>();
          r->der = std::move(res.body);
          r->next_update = a.next_update;
          slot->set(std::move(r));
          failures = 0;
          if (a.result == status::revoked)
            log::error("our own certificate is revoked (stapling the OCSP response that says so)",
                       {{"listener", listener}, {"url", url.text}, {"detail", a.detail}});
          else if (!stapled_once)
            log::info("stapling OCSP response",
                      {{"listener", listener},
                       {"url", url.text},
                       {"next_update", a.next_update ? utc(a.next_update) : "none"}});
          stapled_once = true;
          // Refresh halfway to nextUpdate: a responder outage shorter than half the validity
          // never leaves clients without a staple.
          next = a.next_update ? a.this_update + (a.next_update - a.this_update) / 2
                               : now + ocsp_default_lifetime;
          next = std::clamp<std::time_t>(next, now + 1, now + crl_idle_lifetime);
        } else {
          ++failures;
          log::warn("cannot refresh the stapled OCSP response",
                    {{"listener", listener}, {"url", url.text}, {"error", a.detail}});
          auto current = slot->get();
          if (current && current->next_update && current->next_update <= now) slot->set(nullptr);
          next = now + backoff(failures);
        }
      }
      while (!self->stopping && std::time(nullptr) < next) {
        if (auto slot = weak.lock(); !slot || slot->retired()) co_return;
        co_await self->sleep_for(seconds(next - std::time(nullptr)));
      }
    }
  }
};

service::service(asio::any_io_executor ex, metrics::registry* metrics, service_limits limits,
                 bool background)
    : impl_(std::make_shared<impl>(std::move(ex), metrics, limits, background)) {}

service::~service() = default;

asio::any_io_executor service::executor() const {
  return impl_->ex;
}

asio::awaitable<verdict> service::check(check_request req) {
  return impl_->check(std::move(req));
}

void service::subscribe(std::function<void(event_ptr)> sink) {
  asio::post(impl_->ex, [self = impl_, sink = std::move(sink)]() mutable {
    self->sinks.push_back(std::move(sink));
  });
}

void service::staple(std::weak_ptr<staple_slot> slot, x509_ptr cert, x509_ptr issuer,
                     std::string url, std::chrono::milliseconds timeout, std::string listener) {
  auto parsed = parse_http_url(url);
  if (!parsed) {
    log::warn("cannot staple: the OCSP responder is not an http:// URL",
              {{"listener", listener}, {"url", url}});
    return;
  }
  asio::post(impl_->ex, [self = impl_, slot = std::move(slot), cert = std::move(cert),
                         issuer = std::move(issuer), url = std::move(*parsed), timeout,
                         listener = std::move(listener)]() mutable {
    if (self->stopping || !self->background) return;
    self->spawn(impl::staple_loop(self, std::move(slot), std::move(cert), std::move(issuer),
                                  std::move(url), timeout, std::move(listener)),
                "stapling");
  });
}

void service::stop() {
  asio::post(impl_->ex, [self = impl_] {
    self->stopping = true;
    for (auto* t : self->sleeping)
      t->cancel();
  });
}

asio::awaitable<std::optional<verdict>> await_check(service& svc, check_request req) {
  struct state {
    explicit state(const asio::any_io_executor& ex) : wake(ex, steady::time_point::max()) {}
    asio::steady_timer wake;  // on the caller's executor
    std::optional<verdict> result;
  };
  auto caller = co_await asio::this_coro::executor;
  auto st = std::make_shared<state>(caller);
  asio::co_spawn(svc.executor(), svc.check(std::move(req)), [st](std::exception_ptr e, verdict v) {
    // On the service's thread: hand the verdict over on the caller's.
    asio::post(st->wake.get_executor(), [st, e, v = std::move(v)]() mutable {
      if (e) {
        v = {};
        v.refusal = reason::revocation_unavailable;
        v.detail = "internal error in the revocation check";
      }
      st->result = std::move(v);
      st->wake.expires_at(steady::time_point::min());
    });
  });
  if (st->wake.expiry() != steady::time_point::min())
    co_await st->wake.async_wait(as_tuple(use_awaitable));
  co_return std::move(st->result);
}

}  // namespace mtlsd::tls::revocation
