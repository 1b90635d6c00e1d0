#pragma once
// What the SPIFFE Workload API hands a workload (FetchX509SVID), parsed into OpenSSL objects:
// our X.509-SVID with its key, our trust domain's bundle and the federated bundles. Plain data
// with no gRPC or protobuf in sight: the client (src/spiffe/) fills `raw_x509_svid` from the wire,
// and tls/context.cpp builds a listener's SSL_CTX from an `x509_context`.
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls::spiffe {

// One X509SVID message plus the response's federated bundles, as bytes (DER).
struct raw_x509_svid {
  std::string spiffe_id;
  std::string x509_svid;                                 // DER certificates, leaf first
  std::string x509_svid_key;                             // DER PKCS#8, unencrypted
  std::string bundle;                                    // DER certificates of our trust domain
  std::map<std::string, std::string> federated_bundles;  // trust domain (as sent) -> DER
};

struct x509_context {
  std::string spiffe_id;     // spiffe://td/path
  std::string trust_domain;  // td
  key_pair svid;             // leaf first, then intermediates; the key matches the leaf
  cert_chain bundle;         // our trust domain's CAs
  std::map<std::string, cert_chain> federated;  // bare trust domain name -> its CAs
  // Federated bundles that did not parse or hold a non-CA: bare trust domain name -> why. Absent
  // from `federated`.
  std::map<std::string, std::string> unusable_federated;
  // Federated bundles sent empty: bare trust domain names. Absent from `federated`, as a bundle
  // not sent is (nothing of that domain is trusted), but said so in the warning (review: an
  // empty bundle counted as one and drew no word while its peers got unknown_ca).
  std::set<std::string> empty_federated;
  std::time_t not_before = 0;  // the latest of the SVID chain's: an update may come before it
  // SHA-256 of the update as sent: equal for an agent's repeat of what is already served
  // (a stream that restarts resends it), which then changes nothing.
  std::string digest;
};

// Parses and checks one update: the certificates and key decode, the key matches the leaf, the
// leaf is not a CA and carries exactly `spiffe_id` as its URI SAN, our bundle is not empty and
// holds CAs only, and the SVID chains to it, valid now or when it becomes valid (an SVID whose
// notBefore is still to come passes: the caller decides). Throws std::runtime_error saying what
// is wrong (the agent sent something we cannot serve). A federated bundle that is undecodable or
// holds a non-CA lands in `unusable_federated` instead, an empty one in `empty_federated`.
std::shared_ptr<const x509_context> parse(const raw_x509_svid& raw);

// The CAs a listener trusts, each with the trust domain whose bundle holds it: our bundle plus
// the bundles of `trust_domains` (bare names; our own may be listed too). Names with no bundle
// in `ctx` are appended to `missing`.
std::vector<spiffe_anchor> trusted_anchors(const x509_context& ctx,
                                           const std::vector<std::string>& trust_domains,
                                           std::vector<std::string>* missing = nullptr);

// The same CAs without their trust domains (the trust store).
cert_chain trusted_cas(const x509_context& ctx, const std::vector<std::string>& trust_domains,
                       std::vector<std::string>* missing = nullptr);

// "example.org" for "spiffe://example.org/ns/x" or "spiffe://example.org"; "" when not a SPIFFE ID.
std::string trust_domain_of(const std::string& spiffe_id);

}  // namespace mtlsd::tls::spiffe
