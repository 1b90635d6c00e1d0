#pragma once
// OCSP (RFC 6960) as pure functions on OpenSSL objects: where to ask, what to send, and what a
// response proves. No I/O here: the revocation service sends the bytes; client-mode stapling
// checks a response the remote handed over inside the handshake.
#include <openssl/ocsp.h>

#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/tls/revocation/status.hpp"

namespace mtlsd::tls::revocation {

using ocsp_request_ptr = std::unique_ptr<OCSP_REQUEST, openssl_deleter<OCSP_REQUEST_free>>;

// An OCSP answer without nextUpdate says "ask again whenever": mtlsd (and its stapler) keep it
// this long. Short, as such a responder asks to be asked often; long enough that a busy
// listener does not ask at every handshake.
inline constexpr std::time_t ocsp_default_lifetime = 300;
// A response without nextUpdate says newer information is always available (RFC 6960
// 4.2.2.1): it is taken while its thisUpdate is at most this old — the time mtlsd keeps such a
// response, plus the clock skew (tls/asn1_time.hpp). Older, it proves nothing about now: a
// revoked certificate's old "good" answer, replayed or stapled, would otherwise pass forever.
inline constexpr std::time_t ocsp_max_age_without_next_update =
    ocsp_default_lifetime + revocation_skew_seconds;

// The http:// responder URLs named in `cert`'s Authority Information Access extension.
std::vector<std::string> ocsp_urls(X509* cert);

struct ocsp_query {
  std::string der;           // the encoded OCSPRequest, for the POST body
  std::string cert_id;       // DER of the CertID: names the certificate in caches
  ocsp_request_ptr request;  // kept to check the nonce in the response
};

// A request for `cert`'s status (SHA-1 CertID, as responders expect), with a random nonce.
ocsp_query make_ocsp_query(X509* cert, X509* issuer, bool nonce = true);

struct ocsp_answer {
  status result = status::unavailable;
  std::time_t this_update = 0;
  std::time_t next_update = 0;  // 0: the responder gave none
  std::time_t revoked_at = 0;
  std::string detail;  // revocation reason, or why the response is unusable
  // The responder answered tryLater or internalError: about itself, not about the certificate
  // (other unsuccessful statuses are about the request).
  bool declined = false;
};

// What a DER OCSPResponse proves about `cert` (issued by `issuer`): it must be a successful
// response and nothing more (no bytes after its DER), signed by `issuer` itself or by a
// responder certificate `issuer` issued with the OCSPSigning EKU, echo the nonce of `request`
// when it echoes one at all (a different nonce is a replay), name `cert`, and be current at
// `now` within revocation_skew_seconds (without nextUpdate: thisUpdate within
// ocsp_max_age_without_next_update; with one, not before its thisUpdate). Anything less is
// `unavailable` with the reason in `detail`. `request` may be null (stapled responses).
ocsp_answer check_ocsp_response(std::string_view der, X509* cert, X509* issuer,
                                OCSP_REQUEST* request, std::time_t now);

// A peer's answer past its nextUpdate is asked for again in the background while its
// certificate was seen in a handshake within this long, so that a connection open longer learns
// of a revocation (recheck_established).
inline constexpr std::time_t ocsp_refresh_idle_lifetime = 24 * 3600;

// What the background refresh knows of one cached answer.
struct ocsp_refresh_facts {
  bool watched = false;             // a listener with recheck_established asked for it
  std::time_t last_used = 0;        // the last handshake that looked it up
  std::time_t not_after = 0;        // the certificate's
  bool lasting_revocation = false;  // revoked, not certificateHold: known for good
  std::time_t fresh_until = 0;      // the answer holds until then
  std::time_t retry_at = 0;         // after a failed refresh, not before then (backoff)
};

// When the background refresh asks the responder about it again (a time at or before `now`: at
// once), or nullopt for never: not watched, not seen within ocsp_refresh_idle_lifetime, its
// certificate expired (it no longer connects; its open connections end with
// timeouts.max_connection_age, as in nginx and Envoy), or a lasting revocation.
std::optional<std::time_t> ocsp_refresh_due(const ocsp_refresh_facts& f, std::time_t now);

}  // namespace mtlsd::tls::revocation
