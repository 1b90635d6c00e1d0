#pragma once
// What the revocation service did on its own thread, handed to its owner instead of being logged
// or counted here: the daemon and `mtlsd verify` log and count each outcome
// (daemon/revocation_report.hpp). Verdicts for peers are returned by service::check itself.
#include <cstddef>
#include <ctime>
#include <functional>
#include <string>
#include <variant>

#include "mtlsd/tls/revocation/ocsp.hpp"

namespace mtlsd::tls::revocation {

// An OCSP request for a peer's certificate was answered, or failed (answer.result unavailable,
// answer.detail says why).
struct ocsp_fetched {
  std::string url;
  std::string subject;  // of the certificate asked about
  ocsp_answer answer;
};

// A CRL download from a distribution point: `error` empty when it was cached.
struct crl_fetched {
  std::string url;
  std::string error;
  std::string issuer;  // RFC 2253, when cached
  std::size_t revoked = 0;
  std::time_t this_update = 0;  // when cached
  std::time_t next_update = 0;  // 0: the CRL gives none
  // Cached, but not current: why (dated ahead of this clock, or past its nextUpdate already,
  // with the date), else "". Its revocations stand; it is asked for again with backoff.
  std::string not_current;
  // Dated ahead of this clock beyond the skew: it answers for no certificate it does not revoke,
  // so it is no current CRL of its issuer (mtlsd_crl_next_update_timestamp_seconds leaves it out).
  bool ahead = false;
};

// A distribution point's CRL is no longer held (evicted by the cache bounds, or unused).
struct crl_dropped {
  std::string url;
};

// A refresh of one listener's stapled response: answer.result good or revoked when the response
// is now stapled, anything else when the refresh failed (answer.detail says why).
struct staple_fetched {
  std::string listener;
  std::string url;
  ocsp_answer answer;
  bool first = false;  // the listener's first staple (good), or the first after failures:
                       // worth an info line
};

// A task of the service ended with an exception (a bug: every expected failure is an outcome).
struct task_failed {
  std::string task;
  std::string error;
};

using outcome = std::variant<ocsp_fetched, crl_fetched, crl_dropped, staple_fetched, task_failed>;

// Called on the service's executor. May be empty: outcomes are then dropped.
using outcome_sink = std::function<void(const outcome&)>;

}  // namespace mtlsd::tls::revocation
