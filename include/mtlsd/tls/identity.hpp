#pragma once
// Who a peer certificate says it is: the names allow lists match and logs print.
#include <openssl/x509.h>

#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace mtlsd::tls {

struct peer_identity {
  // The SPIFFE ID: the certificate's one spiffe:// URI SAN, when it is a well-formed SPIFFE ID
  // (config/spiffe_id.hpp); other URI SANs may sit beside it. Else empty, and when some URI SAN
  // has the spiffe:// scheme, `spiffe_id_problem` says why it does not count.
  std::string spiffe_id;
  std::string spiffe_id_problem;
  std::vector<std::string> uri_sans;
  std::vector<std::string> dns_sans;
  std::vector<std::string> email_sans;  // rfc822Name
  std::string subject;                  // RFC 2253
  std::string common_name;
  std::vector<std::string> organizational_units;
  std::string sha256;  // lower-case hex, no colons, of the DER certificate
  std::string serial;  // upper-case hex
  std::string issuer;
  std::time_t not_after = 0;

  // For logs: the SPIFFE ID when there is one (the stable workload name), else the subject.
  const std::string& display() const { return spiffe_id.empty() ? subject : spiffe_id; }
  // What limits.max_connections_per_identity counts by: display(), or, for a certificate that
  // names nobody (no SPIFFE ID and an empty subject, which a critical SAN allows), its
  // fingerprint: such peers would otherwise not be counted at all.
  std::string limit_key() const {
    const std::string& shown = display();
    return shown.empty() ? "sha256:" + sha256 : shown;
  }
};

peer_identity extract_identity(X509* cert);

// Lower-case hex SHA-256 of the DER encoding.
std::string sha256_fingerprint(X509* cert);

// The trust domain of a SPIFFE ID ("example.org" of "spiffe://example.org/ns/x"), or "" when it
// is none. A view into `spiffe_id`.
std::string_view spiffe_trust_domain(std::string_view spiffe_id);

// Why `leaf`'s key usage is not an X.509-SVID leaf's (X509-SVID section 4.3): a keyUsage
// extension with digitalSignature and neither keyCertSign nor cRLSign. "" when it is.
std::string svid_key_usage_problem(X509* leaf);

}  // namespace mtlsd::tls
