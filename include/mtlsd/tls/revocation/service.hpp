#pragma once
// The revocation service: every revocation answer that needs the network comes from here — OCSP
// for peers, CRLs from distribution points, OCSP for our own certificate (stapling). It runs on
// an executor of its own (a dedicated thread in the daemon, a local io_context in `mtlsd
// verify`), so workers never block on it and its caches need no locks. Sessions hand it a
// request and await the verdict with await_check(), which resumes them on their own worker.
//
// Bounds: every request is limited by the listener's ocsp_timeout and by a response size;
// caches are LRU-bounded in entries (and bytes for CRLs); concurrent checks of one certificate
// share one OCSP request, concurrent uses of one distribution point share one download.
// OCSP answers are kept until their nextUpdate; CRLs until nextUpdate, refreshed ahead of it in
// the background (with backoff on failure) while peers still use them.
//
// The service writes no log line and no metric: checks return verdicts, and everything else it
// does is handed to its owner as an outcome (outcome.hpp) to log and count.
//
// Parts, along the data flow (src/tls/revocation/): ocsp_client (one exchange with a responder,
// cache, shared requests), crl_fetcher (downloads, cache, background refresh), chain_completion
// (issuers for resumed sessions), stapler (our own certificate's response), service_state (what
// they share); service.cpp composes them into check().
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/event.hpp"
#include "mtlsd/tls/revocation/outcome.hpp"
#include "mtlsd/tls/revocation/policy.hpp"
#include "mtlsd/tls/revocation/stapling.hpp"

namespace mtlsd::tls::revocation {

struct check_request {
  cert_chain chain;  // leaf first, then its issuers
  // The top of `chain` is its trust anchor, which nothing above can revoke and which is not
  // checked: a full handshake's verified chain, or a resumed session's rebuilt up to its anchor
  // from its ticket's intermediates and the trust bundle (proxy/session_resumed.hpp), a
  // partial-chain anchor (an issuing CA trusted alone) included. False when the chain stops short
  // of its anchor (a resumed session whose anchor is not in the listener's bundle: the system
  // store; a chain too long for its ticket): the service completes it from the CA certificates
  // of the chains it saw verified, up to a self-issued root; a top it cannot complete has an
  // unknown issuer.
  bool ends_at_anchor = true;
  policy pol;
  std::uint32_t crl_file_unavailable = 0;  // bit d: the handshake had no usable CRL at depth d
  std::string crl_file_note;               // what OpenSSL said about it
  std::time_t at = 0;                      // validation time for CRLs (`verify --at`); 0 = now
  // Client mode: the remote stapled a verified, current "good" OCSP response for the leaf,
  // which then needs no OCSP request of its own (a revocation the service knows of still
  // refuses it).
  bool leaf_stapled_good = false;
};

struct service_limits {
  std::size_t ocsp_entries = 10000;
  std::size_t ocsp_response_bytes = 64 * 1024;
  std::size_t crl_entries = 64;
  std::size_t crl_bytes = 10 * 1024 * 1024;  // one CRL's download
  // Every cached CRL together, in memory (crl_memory_bytes): a 10 MiB CRL of small entries
  // takes ~100 MiB once parsed.
  std::size_t crl_total_bytes = 256 * 1024 * 1024;
  std::size_t issuers = 1024;
};

class service {
 public:
  // `background`: refresh CRLs ahead of expiry and keep staples fresh (the daemon); off for
  // one-shot use (`mtlsd verify`). `report` receives every outcome on `ex` (may be empty).
  service(boost::asio::any_io_executor ex, outcome_sink report, service_limits limits = {},
          bool background = true);
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  boost::asio::any_io_executor executor() const;

  // Run on executor() only (see await_check). Never throws for network or certificate problems.
  boost::asio::awaitable<verdict> check(check_request req);

  // Thread-safe. `sink` runs on the service's executor for each revocation learnt from a newly
  // fetched CRL or OCSP answer (recheck_established).
  void subscribe(std::function<void(event_ptr)> sink);

  // Thread-safe. Keeps `slot` filled with a verified OCSP response for `cert` (issued by
  // `issuer`) from `url`, refreshed halfway to its nextUpdate, for as long as the slot lives and
  // is not retired (staple_slot::retire, on reload). False (and nothing started) when `url` is
  // not an http:// URL.
  bool staple(std::weak_ptr<staple_slot> slot, x509_ptr cert, x509_ptr issuer,
              const std::string& url, std::chrono::milliseconds timeout, std::string listener);

  // Thread-safe. Client mode: a remote stapled `response`, a "revoked" for its certificate
  // `leaf` (issued by `issuer`; the leaf itself when self-issued), and was refused. Once
  // verified again, it is kept as a revocation the responder answered is (lasting but for a
  // certificateHold: every later OCSP check of `leaf`, a good staple's too, answers it) and
  // published as an event, as a fresh OCSP "revoked" is. `pol`: the listener's (a
  // certificateHold's refresh asks its responder).
  void learn_stapled_revocation(x509_ptr leaf, x509_ptr issuer, std::string response, policy pol);

  // Thread-safe. Ends background refreshes; checks in flight complete with what they have.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

// Runs svc.check(req) on the service's executor and resumes the caller on its own. When the
// caller is cancelled first (its session was killed), returns nullopt at once and the check runs
// on without it (another session may share its requests).
boost::asio::awaitable<std::optional<verdict>> await_check(service& svc, check_request req);

}  // namespace mtlsd::tls::revocation
