#pragma once
// Revocation policy: what a listener checks, and what it makes of the answers. decide() is pure:
// the verdict for one peer from what each source said about each certificate of its chain.
//
// Per certificate, an answer from any configured source is enough (a CRL file, a CRL from a
// distribution point, OCSP): `revoked` from any of them refuses; `good` from one of them while
// the others are unreachable admits. Only a certificate nobody could answer for is
// "unavailable", and on_unavailable decides what that means. A revoked answer always refuses,
// even from a stale CRL (soft-fail still enforces the last CRL it had).
#include <chrono>
#include <cstddef>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/reason.hpp"
#include "mtlsd/tls/revocation/status.hpp"

namespace mtlsd::tls::revocation {

struct policy {
  config::ocsp_mode ocsp = config::ocsp_mode::off;
  std::string ocsp_responder;               // overrides the certificate's AIA
  std::chrono::milliseconds timeout{2000};  // bounds every network request
  bool crl_files = false;                   // checked inside the handshake
  bool distribution_points = false;         // CRLs named in the certificates
  config::crl_scope crl_scope = config::crl_scope::chain;
  bool soft_fail = false;  // on_unavailable: allow
  std::time_t grace_seconds = 0;
  bool recheck_established = true;
  bool stapling = false;

  static policy from(const config::revocation_options& rv);
  bool enabled() const { return crl_files || network(); }
  // OCSP or distribution points: answers are awaited after the handshake.
  bool network() const { return ocsp != config::ocsp_mode::off || distribution_points; }
  bool ocsp_at(std::size_t depth) const {
    return ocsp == config::ocsp_mode::chain || (ocsp == config::ocsp_mode::leaf && depth == 0);
  }
  bool crl_at(std::size_t depth) const {
    return crl_scope == config::crl_scope::chain || depth == 0;
  }
};

// One source's answer about one certificate.
struct answer {
  status result = status::not_checked;
  std::string source;  // "ocsp http://...", "crl http://...", "crl file"
  std::string detail;  // the revocation reason, or why there is no answer
};

// Everything learnt about one certificate of the peer's chain (depth = index).
struct level {
  std::string subject;
  answer crl_file;
  answer distribution_point;
  answer ocsp;
};

struct verdict {
  std::optional<reason> refusal;     // revoked | revocation_unavailable
  std::string detail;                // names the certificate and the source that answered
  std::string source;                // who answered: the revoking source, else the good ones
  status crl = status::not_checked;  // CRL files + distribution points, for the metric
  status ocsp = status::not_checked;
  std::string soft_fail_note;  // admitted under on_unavailable: allow without an answer for...
};

verdict decide(const std::vector<level>& levels, bool soft_fail);

}  // namespace mtlsd::tls::revocation
