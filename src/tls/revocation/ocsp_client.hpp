#pragma once
// OCSP over the network: one exchange with a responder (send the request built once, check the
// response), and the client that answers peers' checks from it with a cache and shared requests.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>

#include "flight.hpp"
#include "mtlsd/net/url.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/cache.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/revocation/policy.hpp"
#include "service_state.hpp"

namespace mtlsd::tls::revocation {

struct ocsp_exchange {
  ocsp_answer answer;      // unavailable with the reason when the responder gave no usable answer
  std::string response;    // the DER response as received (what a staple hands clients)
  bool responded = false;  // a 200 response arrived (usable or not): the responder is up
};

// POSTs `query` to `url` and checks the response against `cert`, `issuer` and the query's nonce
// (check_ocsp_response), at the time it arrives.
boost::asio::awaitable<ocsp_exchange> ask_responder(net::http_url url, ocsp_query query,
                                                    x509_ptr cert, x509_ptr issuer,
                                                    std::chrono::milliseconds timeout,
                                                    std::size_t max_response);

// Answers for peers' certificates, cached by CertID until their nextUpdate; concurrent checks of
// one certificate share one request. Every request's outcome is reported (ocsp_fetched).
class ocsp_client : public std::enable_shared_from_this<ocsp_client> {
 public:
  explicit ocsp_client(std::shared_ptr<service_state> state);

  // What the responder (pol.ocsp_responder, else the certificate's AIA) says about `cert`. A
  // revocation stays known after the response that announced it expires.
  boost::asio::awaitable<answer> lookup(x509_ptr cert, x509_ptr issuer, policy pol);

  // Client mode: the remote stapled a verified "good" answer for `cert`, holding until `until`
  // (stapling.hpp). It is the leaf's OCSP answer (source `stapled ocsp`, no request of its own)
  // unless this client knows `cert` revoked, which a good staple does not lift (a remote may
  // staple an old answer it kept): a lasting revocation, or a certificateHold as long as
  // lookup() would answer it without asking. With recheck_established the staple is then
  // watched (watch_staple).
  answer take_stapled_good(const x509_ptr& cert, const x509_ptr& issuer, const policy& pol,
                           std::time_t until);

  // Client mode: the remote stapled a verified "revoked" for `cert` (and was refused). Kept as
  // the responder's own answer would be (keep): lasting but for a certificateHold, so later
  // checks of `cert` (lookup, take_stapled_good) answer it, and published once, so that
  // recheck_established closes the connections to other remotes with `cert` (review: a revoked
  // staple only refused its own handshake).
  void keep_stapled_revocation(const x509_ptr& cert, const x509_ptr& issuer, const ocsp_answer& a,
                               const policy& pol);

 private:
  struct cached {
    ocsp_answer answer;
    std::string url;       // the responder asked (a staple's: the one a refresh asks)
    bool stapled = false;  // from a remote's staple, not from `url`
    std::time_t fetched = 0;
    std::string source() const;       // for verdicts and events: "ocsp URL" or "stapled ocsp"
    bool lasting_revocation() const;  // revoked, not certificateHold
    bool fresh(std::time_t now) const;
    std::time_t fresh_until() const;  // for an answer that is not a lasting revocation
    // For the background refresh (refresh_loop): what to ask again, when it was last needed,
    // and when to try again after a failed refresh.
    x509_ptr cert, issuer;
    std::chrono::milliseconds timeout{0};
    std::time_t last_used = 0;
    bool watched = false;  // asked for by a listener with recheck_established
    int failures = 0;
    std::time_t retry_at = 0;
  };
  struct request_flight : flight {
    using flight::flight;
    ocsp_answer answer;
  };

  // The flight of the request for `query`'s certificate: the one in progress, or a new one.
  std::shared_ptr<request_flight> start(ocsp_query query, const x509_ptr& cert,
                                        const x509_ptr& issuer, const net::http_url& url,
                                        std::chrono::milliseconds timeout);
  static boost::asio::awaitable<void> fetch(std::shared_ptr<ocsp_client> self,
                                            std::shared_ptr<request_flight> f, std::string key,
                                            ocsp_query query, x509_ptr cert, x509_ptr issuer,
                                            net::http_url url, std::chrono::milliseconds timeout);
  // The request in flight a check may join: same certificate, responder and timeout.
  static std::string flight_key(const std::string& cert_id, const net::http_url& url,
                                std::chrono::milliseconds timeout);
  // Caches a usable answer; a newly learnt revocation becomes an event (recheck_established).
  // `stapled`: the answer came from a remote's staple, not from `url`.
  void keep(const std::string& cert_id, const ocsp_answer& a, const x509_ptr& cert,
            const x509_ptr& issuer, const std::string& url, std::chrono::milliseconds timeout,
            bool stapled = false);
  // With recheck_established: a good staple for `cert` (CertID `id`), holding until `until`, is
  // cached and watched as an answer lookup() fetched would be, so the background refresh asks
  // the responder about `cert` once it lapses, and a "revoked" then closes the connections to
  // it (review: nothing was ever asked again, so none was closed). A fresher cached answer
  // stays; no-op without an http:// responder (pol.ocsp_responder, else AIA).
  void watch_staple(const std::string& id, const x509_ptr& cert, const x509_ptr& issuer,
                    const policy& pol, std::time_t until);
  // A failed request for a cached certificate: its refresh backs off.
  void refresh_failed(const std::string& cert_id);
  // Background (the daemon's service): asks again for the cached answers that are due
  // (ocsp_refresh_due), looking when the first is due (every ocsp_refresh_period at most, a
  // second at least).
  // Without it a long-lived connection's peer was never asked about again, and a revocation
  // reached it only through another handshake of the same certificate (review).
  static boost::asio::awaitable<void> refresh_loop(std::shared_ptr<ocsp_client> self);

  // The revocation `id` is known by, if any: a lasting one (revoked_) or one still cached.
  const cached* known_revocation(const std::string& id);

  std::shared_ptr<service_state> state_;
  lru_cache<std::string, cached> cache_;  // by CertID
  // Lasting revocations (not certificateHold), by CertID, kept out of the LRU: answers for
  // other certificates must not evict one, after which a responder's later "unknown" (or no
  // answer, under on_unavailable: allow) would admit a certificate known to be revoked. They
  // are as many as the CA revoked of the certificates peers present; past max_revoked (far
  // beyond any CA's list of a fleet's workloads) new ones stay in the LRU alone.
  std::unordered_map<std::string, cached> revoked_;
  static constexpr std::size_t max_revoked = 100'000;
  std::unordered_map<std::string, std::shared_ptr<request_flight>> inflight_;  // by flight_key
  bool refreshing_ = false;  // refresh_loop started
};

}  // namespace mtlsd::tls::revocation
