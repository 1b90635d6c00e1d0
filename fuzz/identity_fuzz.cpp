// Identity extraction and the allow list on arbitrary DER certificates: what mtlsd reads out of
// a client's certificate (SANs, subject, fingerprint, CDP and OCSP URLs) and how the allow list
// judges it. Must never crash; an identity must be admitted by a list naming its own values.
#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <variant>

#include "fuzz_support.hpp"
#include "mtlsd/config/spiffe_id.hpp"
#include "mtlsd/tls/identity.hpp"
#include "mtlsd/tls/peer_policy.hpp"
#include "mtlsd/tls/revocation/crl.hpp"
#include "mtlsd/tls/revocation/ocsp.hpp"

using namespace mtlsd;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const unsigned char* p = data;
  tls::x509_ptr cert(d2i_X509(nullptr, &p, static_cast<long>(size)));
  if (!cert) return 0;
  const tls::peer_identity id = tls::extract_identity(cert.get());
  fuzz::check(id.sha256 == tls::sha256_fingerprint(cert.get()), "one fingerprint");
  fuzz::check(id.sha256.size() == 64, "a SHA-256 fingerprint is 64 hex digits");
  (void)id.display();
  // A SPIFFE ID that counts is well-formed: nothing an upstream could normalise or read twice.
  if (!id.spiffe_id.empty()) {
    fuzz::check(config::leaf_spiffe_id_problem(id.spiffe_id).empty(),
                "the SPIFFE ID is well-formed and names a workload");
    const std::string after_scheme = id.spiffe_id.substr(9);
    const std::size_t slash = after_scheme.find('/');
    const std::string path = slash == std::string::npos ? "" : after_scheme.substr(slash) + "/";
    fuzz::check(after_scheme.find_first_of("%?#@:") == std::string::npos &&
                    path.find("/./") == std::string::npos &&
                    path.find("/../") == std::string::npos && path.find("//") == std::string::npos,
                "no percent-encoding, query, user, port, dot segment or empty segment");
    fuzz::check(id.spiffe_id_problem.empty(), "a SPIFFE ID or a problem, not both");
  }
  (void)tls::revocation::crl_urls(cert.get());
  (void)tls::revocation::ocsp_urls(cert.get());

  config::allow_list nothing;
  fuzz::check(tls::evaluate(nothing, id).allowed, "an empty allow list admits");

  // A list that names none of the peer's values refuses it.
  config::allow_list other;
  other.spiffe_ids = {"spiffe://fuzz.invalid/nobody"};
  other.dns_sans = {"nobody.fuzz.invalid"};
  other.common_names = {"\x01nobody"};
  const auto refused = tls::evaluate(other, id);
  if (!refused.allowed) fuzz::check(!refused.detail.empty(), "a refusal says why");

  // A list naming the peer's own values admits it.
  config::allow_list own;
  if (!id.spiffe_id.empty()) own.spiffe_ids.push_back(id.spiffe_id);
  own.uri_sans = id.uri_sans;
  own.dns_sans = id.dns_sans;
  if (!id.common_name.empty()) own.common_names.push_back(id.common_name);
  own.organizational_units = id.organizational_units;
  own.sha256_fingerprints.push_back(id.sha256);
  fuzz::check(tls::evaluate(own, id).allowed, "a list naming the peer's own values admits it");

  // Rules: the peer's own fingerprint AND a source range admits it from inside the range only;
  // the same fingerprint under `not:` refuses it, and the refusal names the closest rule.
  config::allow_list rules;
  config::allow_rule pinned;
  pinned.match.sha256_fingerprints.push_back(id.sha256);
  pinned.match.source_cidrs.push_back(std::get<config::cidr>(config::parse_cidr("10.0.0.0/8")));
  config::allow_rule excluded;
  excluded.exclude.sha256_fingerprints.push_back(id.sha256);
  rules.rules.push_back(pinned);
  rules.rules.push_back(excluded);
  const auto inside = config::parse_ip("10.1.2.3"), outside = config::parse_ip("192.0.2.1");
  const auto in = tls::evaluate(rules, id, {&*inside, ""});
  fuzz::check(in.allowed && in.match.rule == 0, "a rule of the peer's own values admits it");
  const auto out = tls::evaluate(rules, id, {&*outside, ""});
  fuzz::check(!out.allowed && out.detail.find("closest: rules[") != std::string::npos,
              "a rule refusal names the closest rule");

  // The matchers with patterns made of the peer's own names.
  for (const auto& u : id.uri_sans) {
    (void)tls::match_spiffe_id(u, id.spiffe_id);
    (void)tls::match_spiffe_id(u + "/*", id.spiffe_id);
  }
  for (const auto& d : id.dns_sans) {
    fuzz::check(d.empty() || d.find('*') != std::string::npos || tls::match_dns_name(d, d),
                "a DNS name matches itself");
    (void)tls::match_dns_name("*." + d, d);
  }
  return 0;
}
