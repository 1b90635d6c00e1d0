#include "mtlsd/tls/revocation/event.hpp"

#include <algorithm>
#include <iterator>
#include <map>
#include <utility>

#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {

namespace {

// Fetched once: EVP_sha256() makes OpenSSL 3.0 fetch the implementation again at every digest,
// which doubled the cost of hashing a key (0.97 against 0.47 us for an EC P-256 key).
const EVP_MD* fetched_sha256() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

}  // namespace

key_hash key_hash_of(X509* ca) {
  key_hash out{};
  unsigned int len = 0;
  if (!ca || !fetched_sha256() || X509_pubkey_digest(ca, fetched_sha256(), out.data(), &len) != 1 ||
      len != out.size()) {
    drain_errors();
    return key_hash{};
  }
  return out;
}

std::vector<peer_cert_id> peer_cert_ids(const std::vector<X509*>& chain) {
  std::vector<peer_cert_id> out;
  out.reserve(chain.size());
  // The last key hashed: a self-signed anchor is the issuer of the certificate below it and of
  // itself, and is hashed once.
  X509* hashed = nullptr;
  key_hash hashed_key{};
  for (std::size_t i = 0; i < chain.size(); ++i) {
    X509* c = chain[i];
    X509* issuer = i + 1 < chain.size()                        ? chain[i + 1]
                   : (X509_get_extension_flags(c) & EXFLAG_SS) ? c
                                                               : nullptr;
    if (issuer && issuer != hashed) {
      hashed = issuer;
      hashed_key = key_hash_of(issuer);
    }
    out.push_back({name_der(X509_get_issuer_name(c)), issuer ? hashed_key : key_hash{},
                   serial_der(X509_get0_serialNumber(c))});
  }
  return out;
}

int revoked_depth(const revocation_event& e, const std::vector<peer_cert_id>& chain) {
  // An event whose key is not known (a CRL file no trusted CA signed) matches by name, as
  // before keys were compared; any other only a certificate of its key, so a certificate whose
  // issuer's key is not known (an anchor that is not self-signed) only such an event.
  const bool any_key = e.issuer_key == key_hash{};
  for (std::size_t i = 0; i < chain.size(); ++i)
    if (chain[i].issuer == e.issuer && (any_key || chain[i].issuer_key == e.issuer_key) &&
        std::binary_search(e.serials.begin(), e.serials.end(), chain[i].serial))
      return static_cast<int>(i);
  return -1;
}

bool indirect_crl(X509_CRL* crl) {
  auto* idp = static_cast<ISSUING_DIST_POINT*>(
      X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, nullptr, nullptr));
  const bool indirect = idp && idp->indirectCRL > 0;
  ISSUING_DIST_POINT_free(idp);
  drain_errors();
  return indirect;
}

namespace {

bool is_delta(X509_CRL* crl) {
  return X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0;
}

// The entries a delta CRL lifts (reason removeFromCRL: a certificateHold released).
std::vector<std::string> removed_serials(X509_CRL* crl) {
  std::vector<std::string> out;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl);
  for (int i = 0; entries && i < sk_X509_REVOKED_num(entries); ++i) {
    X509_REVOKED* entry = sk_X509_REVOKED_value(entries, i);
    auto* code = static_cast<ASN1_ENUMERATED*>(
        X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, nullptr, nullptr));
    if (code && ASN1_ENUMERATED_get(code) == CRL_REASON_REMOVE_FROM_CRL)
      out.push_back(serial_der(X509_REVOKED_get0_serialNumber(entry)));
    ASN1_ENUMERATED_free(code);
  }
  drain_errors();
  return out;
}

// Whether `a`'s CRL number is above `b`'s (a CRL without one counts as the lowest).
bool newer(X509_CRL* a, X509_CRL* b) {
  auto* na = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(a, NID_crl_number, nullptr, nullptr));
  auto* nb = static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(b, NID_crl_number, nullptr, nullptr));
  const bool above = na && (!nb || ASN1_INTEGER_cmp(na, nb) > 0);
  ASN1_INTEGER_free(na);
  ASN1_INTEGER_free(nb);
  drain_errors();
  return above;
}

// Whether OpenSSL applies `delta` to `base` when it verifies against both (crl_files): the
// base names where deltas are (Freshest CRL; a certificate naming them counts too, which an
// issuer-wide event cannot see), and the delta follows that base (its base number at most the
// base's CRL number, its own above it).
bool applies_to(X509_CRL* delta, X509_CRL* base) {
  if (X509_CRL_get_ext_by_NID(base, NID_freshest_crl, -1) < 0) return false;
  auto* base_of =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(delta, NID_delta_crl, nullptr, nullptr));
  auto* base_number =
      static_cast<ASN1_INTEGER*>(X509_CRL_get_ext_d2i(base, NID_crl_number, nullptr, nullptr));
  const bool follows =
      base_of && base_number && ASN1_INTEGER_cmp(base_of, base_number) <= 0 && newer(delta, base);
  ASN1_INTEGER_free(base_of);
  ASN1_INTEGER_free(base_number);
  drain_errors();
  return follows;
}

// The key that verified `crl`, as the handshake verifies it: that of a CA of `cas` with its
// issuer's name whose key its signature verifies with (a CA re-keyed under its name has a CRL
// per key). Zero when none does: the CRL of an intermediate the peers send, which this listener
// does not hold; its event then matches by name, as before keys were compared.
key_hash signer_key(X509_CRL* crl, const std::vector<X509*>& cas) {
  const X509_NAME* name = X509_CRL_get_issuer(crl);
  for (X509* ca : cas) {
    if (X509_NAME_cmp(X509_get_subject_name(ca), name) != 0) continue;
    EVP_PKEY* key = X509_get0_pubkey(ca);
    if (key && X509_CRL_verify(crl, key) == 1) return key_hash_of(ca);
  }
  drain_errors();
  return key_hash{};
}

}  // namespace

std::vector<event_ptr> events_from_crl_files(const std::vector<x509_crl_ptr>& crls,
                                             const std::vector<X509*>& cas,
                                             const std::string& listener) {
  // Per issuer (name and key), what the handshake would refuse: what its base CRLs revoke, and
  // what every delta revokes. Where OpenSSL applies the newest delta to a base (applies_to), that
  // delta's removeFromCRL lifts the base's hold too (review: a released hold still closed the
  // peer's connection on the next reload). Where it does not, a delta's entries still count:
  // closing a connection the handshake would admit is the safe side of a disagreement. OpenSSL
  // pairs a delta with a base of the same key too (their authority key ids must match).
  using issuer_id = std::pair<std::string, key_hash>;
  std::map<issuer_id, std::vector<std::string>> by_issuer;
  std::map<issuer_id, X509_CRL*> newest_delta, newest_base;
  for (const auto& crl : crls) {
    if (indirect_crl(crl.get())) continue;  // OpenSSL skips it (indirect_crl)
    const issuer_id issuer{name_der(X509_CRL_get_issuer(crl.get())), signer_key(crl.get(), cas)};
    auto& newest = is_delta(crl.get()) ? newest_delta : newest_base;
    if (X509_CRL*& n = newest[issuer]; !n || newer(crl.get(), n)) n = crl.get();
    auto serials = revoked_serials(crl.get());
    auto& all = by_issuer[issuer];
    all.insert(all.end(), serials.begin(), serials.end());
  }
  for (const auto& [issuer, delta] : newest_delta) {
    const auto base = newest_base.find(issuer);
    if (base == newest_base.end() || !applies_to(delta, base->second)) continue;
    auto& all = by_issuer[issuer];
    std::sort(all.begin(), all.end());
    auto lifted = removed_serials(delta);
    std::sort(lifted.begin(), lifted.end());
    std::vector<std::string> kept;
    std::set_difference(all.begin(), all.end(), lifted.begin(), lifted.end(),
                        std::back_inserter(kept));
    all = std::move(kept);
  }
  std::vector<event_ptr> out;
  for (auto& [issuer, serials] : by_issuer) {
    if (serials.empty()) continue;
    std::sort(serials.begin(), serials.end());
    serials.erase(std::unique(serials.begin(), serials.end()), serials.end());
    auto e = std::make_shared<revocation_event>();
    e->issuer = issuer.first;
    e->issuer_key = issuer.second;
    e->serials = std::move(serials);
    e->listener = listener;
    e->source = "crl file";
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace mtlsd::tls::revocation
