#pragma once
// CRLs from distribution points (RFC 5280 §4.2.1.13): downloaded when a peer's certificate names
// one, cached by URL, refreshed in the background ahead of their nextUpdate (with backoff on
// failure) while peers still use them, and forgotten when nobody has for an hour. Concurrent
// uses of one distribution point share one download.
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "flight.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/cache.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"
#include "mtlsd/tls/revocation/policy.hpp"
#include "service_state.hpp"

namespace mtlsd::tls::revocation {

class crl_fetcher : public std::enable_shared_from_this<crl_fetcher> {
 public:
  explicit crl_fetcher(std::shared_ptr<service_state> state);

  // What the CRLs of `cert`'s distribution points say about it, at time `at` (0 = now): the
  // first point that gives an answer answers.
  boost::asio::awaitable<answer> lookup(x509_ptr cert, x509_ptr issuer, policy pol, std::time_t at);

 private:
  struct cached {
    x509_crl_ptr crl;
    x509_ptr issuer;  // the certificate its signature was verified against
    std::string url;
    std::size_t bytes = 0;  // what it holds in memory (crl_memory_bytes), not its DER size
    std::size_t body_hash = 0;
    std::time_t this_update = 0;
    std::time_t next_update = 0;
    std::time_t last_used = 0;
    std::time_t refresh_at = 0;
    std::chrono::milliseconds timeout{2000};
    int failures = 0;
    std::string last_error;
    std::uint64_t generation = 0;  // identifies the refresh loop that owns this URL
    // Dated ahead of this clock beyond the skew: its revocations stand, nothing else is current.
    bool ahead(std::time_t now) const { return this_update > now + revocation_skew_seconds; }
  };
  struct download_flight : flight {
    using flight::flight;
    std::string key;    // in inflight_
    std::string error;  // empty once the CRL is cached
  };

  // One distribution point's answer for `cert`, or why it has none (a detail starting "").
  boost::asio::awaitable<answer> lookup_at(std::string url_text, X509* cert, X509* issuer,
                                           policy pol, std::time_t at);
  // What a cached CRL says about `cert` at `when` (its issuer already matched).
  answer judge(const cached& c, X509* cert, const policy& pol, std::time_t when) const;

  // The flight of the download of `url` within `timeout`: the one in progress, or a new one.
  // Keyed by both, as OCSP requests are: a listener never waits on a download another
  // listener's longer timeout bounds (review: the shorter one's session deadline passed, which
  // refuses even under on_unavailable: allow).
  std::shared_ptr<download_flight> start(const net::http_url& url, X509* issuer,
                                         std::chrono::milliseconds timeout);
  static std::string flight_key(const std::string& url, std::chrono::milliseconds timeout) {
    return url + '\n' + std::to_string(timeout.count());
  }
  static boost::asio::awaitable<void> fetch(std::shared_ptr<crl_fetcher> self,
                                            std::shared_ptr<download_flight> f, net::http_url url,
                                            x509_ptr issuer, std::chrono::milliseconds timeout);
  // The CRL in `res` when it is a complete CRL `issuer` signed, not older than the one held;
  // otherwise null and `error` says why.
  x509_crl_ptr accept(const net::http_result& res, X509* issuer, const cached* old,
                      std::string& error) const;
  // A failed download: later checks wait a moment, the refresh backs off, the outcome is told.
  void failed(const std::string& url, const std::string& error);
  // Caches a downloaded CRL; "" or why it was not kept. Publishes the revocations of a changed
  // CRL (recheck_established) and starts the URL's refresh loop the first time.
  std::string keep(const net::http_url& url, x509_crl_ptr crl, const std::string& body,
                   x509_ptr issuer, std::chrono::milliseconds timeout);
  static boost::asio::awaitable<void> refresh_loop(std::shared_ptr<crl_fetcher> self,
                                                   net::http_url url, std::uint64_t generation);

  std::shared_ptr<service_state> state_;
  lru_cache<std::string, cached> cache_;                                        // by URL
  std::unordered_map<std::string, std::shared_ptr<download_flight>> inflight_;  // flight_key
  std::uint64_t next_generation_ = 1;
};

}  // namespace mtlsd::tls::revocation
