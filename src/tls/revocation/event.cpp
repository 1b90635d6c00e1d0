#include "mtlsd/tls/revocation/event.hpp"

#include <algorithm>
#include <iterator>
#include <map>

#include "mtlsd/tls/revocation/crl.hpp"

namespace mtlsd::tls::revocation {

std::vector<peer_cert_id> peer_cert_ids(const std::vector<X509*>& chain) {
  std::vector<peer_cert_id> out;
  out.reserve(chain.size());
  for (X509* c : chain)
    out.push_back({name_der(X509_get_issuer_name(c)), serial_der(X509_get0_serialNumber(c))});
  return out;
}

int revoked_depth(const revocation_event& e, const std::vector<peer_cert_id>& chain) {
  for (std::size_t i = 0; i < chain.size(); ++i)
    if (chain[i].issuer == e.issuer &&
        std::binary_search(e.serials.begin(), e.serials.end(), chain[i].serial))
      return static_cast<int>(i);
  return -1;
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

}  // namespace

std::vector<event_ptr> events_from_crl_files(const std::vector<x509_crl_ptr>& crls,
                                             const std::string& listener) {
  // Per issuer, what the handshake would refuse: what its base CRLs revoke, and what every delta
  // revokes. Where OpenSSL applies the newest delta to a base (applies_to), that delta's
  // removeFromCRL lifts the base's hold too (review: a released hold still closed the peer's
  // connection on the next reload). Where it does not, a delta's entries still count: closing a
  // connection the handshake would admit is the safe side of a disagreement.
  std::map<std::string, std::vector<std::string>> by_issuer;
  std::map<std::string, X509_CRL*> newest_delta, newest_base;
  for (const auto& crl : crls) {
    const std::string issuer = name_der(X509_CRL_get_issuer(crl.get()));
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
    e->issuer = issuer;
    e->serials = std::move(serials);
    e->listener = listener;
    e->source = "crl file";
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace mtlsd::tls::revocation
