#include "mtlsd/tls/revocation/crl.hpp"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>

#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/credentials.hpp"

namespace mtlsd::tls::revocation {
namespace {

std::vector<std::string> uris_of(const GENERAL_NAMES* names) {
  std::vector<std::string> out;
  for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, j);
    if (gn->type != GEN_URI) continue;
    const ASN1_IA5STRING* uri = gn->d.uniformResourceIdentifier;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                     static_cast<std::size_t>(ASN1_STRING_length(uri)));
  }
  return out;
}

// RFC 5280 6.3.3 (b)(2)(i): a CRL whose Issuing Distribution Point names a distribution point
// speaks only for certificates that name it too. A CA that partitions its CRLs signs every
// partition, and each is complete for its own scope only: taken for another certificate, a
// partition that does not list it would read as "not revoked".
bool names_a_point_of(const ISSUING_DIST_POINT* idp, X509* cert) {
  if (!idp->distpoint) return true;             // the CA's whole scope
  if (idp->distpoint->type != 0) return false;  // a relative name: not supported
  const auto scope = uris_of(idp->distpoint->name.fullname);
  auto* points = static_cast<STACK_OF(DIST_POINT)*>(
      X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr));
  bool found = false;
  for (int i = 0; points && !found && i < sk_DIST_POINT_num(points); ++i) {
    const DIST_POINT* dp = sk_DIST_POINT_value(points, i);
    if (!dp->distpoint || dp->distpoint->type != 0) continue;
    for (const auto& u : uris_of(dp->distpoint->name.fullname))
      found = found || std::find(scope.begin(), scope.end(), u) != scope.end();
  }
  sk_DIST_POINT_pop_free(points, DIST_POINT_free);
  return found;
}

}  // namespace

std::vector<std::string> crl_urls(X509* cert) {
  std::vector<std::string> out;
  auto* points = static_cast<STACK_OF(DIST_POINT)*>(
      X509_get_ext_d2i(cert, NID_crl_distribution_points, nullptr, nullptr));
  for (int i = 0; points && i < sk_DIST_POINT_num(points); ++i) {
    DIST_POINT* dp = sk_DIST_POINT_value(points, i);
    // A point with a CRL issuer names an indirect CRL; a point limited to some reasons does not
    // give a complete answer. Neither is supported: skip rather than misread them.
    if (!dp->distpoint || dp->distpoint->type != 0 || dp->CRLissuer || dp->reasons) continue;
    for (auto& url : uris_of(dp->distpoint->name.fullname))
      if (url.rfind("http://", 0) == 0) out.push_back(std::move(url));
  }
  sk_DIST_POINT_pop_free(points, DIST_POINT_free);
  drain_errors();
  return out;
}

x509_crl_ptr parse_crl(std::string_view data) {
  bio_ptr bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
  X509_CRL* crl = nullptr;
  if (data.find("-----BEGIN X509 CRL-----") != std::string_view::npos)
    crl = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr);
  else
    crl = d2i_X509_CRL_bio(bio.get(), nullptr);
  drain_errors();
  return x509_crl_ptr(crl);
}

namespace {

// RFC 5280 5.2 and 5.3: a CRL carrying a critical extension, or an entry carrying one, that the
// user does not process must not be used. Processed are those OpenSSL processes (it refuses a
// CRL file with any other: X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION): the issuing
// distribution point, delta CRL indicator and authority key identifier, and an entry's
// certificate issuer.
bool has_unhandled_critical_extension(const X509_CRL* crl) {
  for (int i = 0; i < X509_CRL_get_ext_count(crl); ++i) {
    X509_EXTENSION* ext = X509_CRL_get_ext(crl, i);
    const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
    if (X509_EXTENSION_get_critical(ext) && nid != NID_issuing_distribution_point &&
        nid != NID_delta_crl && nid != NID_authority_key_identifier)
      return true;
  }
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(const_cast<X509_CRL*>(crl));
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    const X509_REVOKED* r = sk_X509_REVOKED_value(entries, i);
    for (int j = 0; j < X509_REVOKED_get_ext_count(r); ++j) {
      X509_EXTENSION* ext = X509_REVOKED_get_ext(r, j);
      if (X509_EXTENSION_get_critical(ext) &&
          OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_certificate_issuer)
        return true;
    }
  }
  return false;
}

}  // namespace

std::string check_crl_issuer(X509_CRL* crl, X509* issuer) {
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(issuer)) != 0)
    return "CRL issuer does not match the certificate's issuer";
  if ((X509_get_extension_flags(issuer) & EXFLAG_KUSAGE) &&
      !(X509_get_key_usage(issuer) & KU_CRL_SIGN))
    return "the issuer may not sign CRLs (no cRLSign key usage)";
  EVP_PKEY* key = X509_get0_pubkey(issuer);
  if (!key || X509_CRL_verify(crl, key) != 1) {
    drain_errors();
    return "CRL signature does not verify against the issuer";
  }
  if (X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0)
    return "a delta CRL where a complete CRL was expected";
  if (has_unhandled_critical_extension(crl))
    return "the CRL has a critical extension mtlsd does not process (RFC 5280 5.2: not used)";
  return {};
}

std::string check_crl_scope(X509_CRL* crl, X509* cert) {
  int crit = 0;
  auto* idp = static_cast<ISSUING_DIST_POINT*>(
      X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, nullptr));
  drain_errors();
  if (!idp) return {};
  std::string why;
  // A CRL limited to some reasons, or listing other CAs' certificates, is not a complete
  // answer for anyone; one limited to end-entity or CA certificates is for those only.
  if (idp->onlysomereasons || idp->indirectCRL > 0 || idp->onlyattr > 0)
    why = "a partitioned or indirect CRL (issuing distribution point), which is not supported";
  else if (idp->onlyuser > 0 && X509_check_ca(cert))
    why = "the CRL covers end-entity certificates only";
  else if (idp->onlyCA > 0 && !X509_check_ca(cert))
    why = "the CRL covers CA certificates only";
  else if (!names_a_point_of(idp, cert))
    why =
        "the CRL's issuing distribution point is none of the certificate's distribution points "
        "(a partition for other certificates)";
  ISSUING_DIST_POINT_free(idp);
  return why;
}

crl_entry_status lookup_crl(X509_CRL* crl, X509* cert) {
  crl_entry_status out;
  X509_REVOKED* entry = nullptr;
  // 1 = listed; 2 = listed as removeFromCRL (a delta's "no longer on hold"): not revoked.
  if (X509_CRL_get0_by_cert(crl, &entry, cert) != 1 || !entry) return out;
  out.revoked = true;
  out.revoked_at = asn1_time_to_unix(X509_REVOKED_get0_revocationDate(entry));
  int crit = 0;
  if (auto* code = static_cast<ASN1_ENUMERATED*>(
          X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, &crit, nullptr))) {
    out.reason = OCSP_crl_reason_str(ASN1_ENUMERATED_get(code));
    ASN1_ENUMERATED_free(code);
  }
  drain_errors();
  return out;
}

std::time_t crl_this_update(const X509_CRL* crl) {
  return asn1_time_to_unix(X509_CRL_get0_lastUpdate(crl));
}

std::time_t crl_next_update(const X509_CRL* crl) {
  return asn1_time_to_unix(X509_CRL_get0_nextUpdate(crl));
}

std::time_t crl_refresh_time(std::time_t this_update, std::time_t next_update, std::time_t now,
                             std::time_t longest_lead) {
  if (!next_update) return now + longest_lead;
  const std::time_t lead =
      std::clamp<std::time_t>((next_update - this_update) / 4, 1, longest_lead);
  const std::time_t step = std::clamp<std::time_t>(lead / 8, 1, 60);
  return std::max(next_update - lead, now + step);
}

std::string crl_issuer_text(const X509_CRL* crl) {
  return name_of(X509_CRL_get_issuer(crl));  // as the CRL-file series and the logs spell it
}

std::string name_der(const X509_NAME* name) {
  unsigned char* buf = nullptr;
  const int len = i2d_X509_NAME(name, &buf);
  if (len <= 0) return {};
  std::string out(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(len));
  OPENSSL_free(buf);
  return out;
}

std::string serial_der(const ASN1_INTEGER* serial) {
  if (!serial) return {};
  std::string out(reinterpret_cast<const char*>(ASN1_STRING_get0_data(serial)),
                  static_cast<std::size_t>(ASN1_STRING_length(serial)));
  // The sign lives in the type, not the octets: keep them apart (serials are positive anyway).
  if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) out.insert(0, 1, '-');
  return out;
}

std::size_t crl_memory_bytes(std::size_t der_bytes) {
  // Measured with OpenSSL 3.0 (CrlMemory.*): decoded and sorted, a CRL held 7.8 times its DER
  // with bare entries (~200 bytes each) and 8.1 times with a reason code on each (~400 bytes):
  // every entry is an X509_REVOKED, a serial and a date as ASN1_STRINGs and a stack slot.
  constexpr std::size_t der_multiple = 9;
  return der_bytes * der_multiple;
}

std::vector<std::string> revoked_serials(X509_CRL* crl) {
  std::vector<std::string> out;
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl);
  for (int i = 0; entries && i < sk_X509_REVOKED_num(entries); ++i) {
    X509_REVOKED* entry = sk_X509_REVOKED_value(entries, i);
    int crit = 0;
    auto* code = static_cast<ASN1_ENUMERATED*>(
        X509_REVOKED_get_ext_d2i(entry, NID_crl_reason, &crit, nullptr));
    const bool removed = code && ASN1_ENUMERATED_get(code) == CRL_REASON_REMOVE_FROM_CRL;
    ASN1_ENUMERATED_free(code);
    if (!removed) out.push_back(serial_der(X509_REVOKED_get0_serialNumber(entry)));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  drain_errors();
  return out;
}

namespace {

// Whether a CRL with this nextUpdate is past it and crl_grace, as the handshake judges it:
// OpenSSL calls it expired from the second of its nextUpdate on, and verifier::within_grace
// enforces it for `grace_seconds` more (none at 0: review, a resumption was admitted during
// the second a full handshake was refused).
bool stale_at(std::time_t next, std::time_t grace_seconds, std::time_t now) {
  if (next == 0 || now < next) return false;
  return grace_seconds <= 0 || now - next > grace_seconds;
}

}  // namespace

bool any_crl_stale(const std::vector<x509_crl_ptr>& crls, std::time_t grace_seconds,
                   std::time_t now) {
  return std::any_of(crls.begin(), crls.end(), [&](const x509_crl_ptr& crl) {
    const std::time_t next = crl_next_update(crl.get());
    return stale_at(next, grace_seconds, now);
  });
}

std::vector<X509*> rebuilt_chain::with_anchor() const {
  std::vector<X509*> out = below_anchor;
  if (anchor) out.push_back(anchor);
  return out;
}

namespace {

// Whether `crl` (named for the issuer of path[depth]) is that certificate's CRL as OpenSSL 3.0
// finds it (crl_akid_check): its authority key id matches the certificate's issuer, or a
// certificate further up the same path that bears the CRL issuer's name (a re-keyed CA's link
// certificate). Another key's CRL under the same name matches neither, and OpenSSL ignores it.
// A CRL without an authority key id matches, as in OpenSSL; so does any CRL when the path does
// not know the issuer. `path`'s extensions are decoded already (X509_check_akid compares with
// the key id OpenSSL caches then, and passes when none is cached yet).
bool crl_of(const X509_CRL* crl, const std::vector<X509*>& path, std::size_t depth) {
  if (depth + 1 >= path.size()) return true;
  auto* akid = static_cast<AUTHORITY_KEYID*>(
      X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, nullptr, nullptr));
  bool match = X509_check_akid(path[depth + 1], akid) == X509_V_OK;
  for (std::size_t up = depth + 2; !match && up < path.size(); ++up)
    match = X509_NAME_cmp(X509_get_subject_name(path[up]), X509_CRL_get_issuer(crl)) == 0 &&
            X509_check_akid(path[up], akid) == X509_V_OK;
  AUTHORITY_KEYID_free(akid);
  return match;
}

}  // namespace

std::string stale_crl_file(const std::vector<x509_crl_ptr>& crls, const rebuilt_chain& chain,
                           bool whole_chain, std::time_t grace_seconds, std::time_t now,
                           std::uint32_t* depths) {
  std::string first;
  const std::vector<X509*> path = chain.with_anchor();
  for (X509* c : path)
    X509_get_extension_flags(c);  // decoded once, for crl_of's key id comparisons
  const auto& certs = chain.below_anchor;
  for (std::size_t depth = 0; depth < certs.size() && (whole_chain || depth == 0); ++depth) {
    X509* cert = certs[depth];
    // The freshest complete CRL of its issuer: the one a full handshake would have found
    // current. One without nextUpdate is current for good, as OpenSSL has it.
    // A current delta keeps an expired base in force too (X509_V_FLAG_USE_DELTAS).
    bool found = false, current = false;
    for (const auto& crl : crls) {
      if (X509_NAME_cmp(X509_CRL_get_issuer(crl.get()), X509_get_issuer_name(cert)) != 0 ||
          !crl_of(crl.get(), path, depth))
        continue;
      found = found || X509_CRL_get_ext_by_NID(crl.get(), NID_delta_crl, -1) < 0;
      const std::time_t next = crl_next_update(crl.get());
      current = current || !stale_at(next, grace_seconds, now);
    }
    drain_errors();  // a malformed authority key id leaves its decoding error queued
    if (!found || current) continue;
    if (first.empty())
      first = std::string(X509_verify_cert_error_string(X509_V_ERR_CRL_HAS_EXPIRED)) + " (depth " +
              std::to_string(depth) + ": " + subject_of(cert) + ") (crl file)";
    if (!depths) break;
    *depths |= depth < 31 ? (1U << depth) : (1U << 31);
  }
  return first;
}

rebuilt_chain chain_to_anchor(X509* leaf, const std::vector<X509*>& intermediates,
                              const cert_chain& trust) {
  std::vector<X509*> trust_certs;
  for (const auto& t : trust)
    trust_certs.push_back(t.get());
  rebuilt_chain out;
  auto& chain = out.below_anchor;
  chain.push_back(leaf);
  // An issuer of `cert` in `pool` that the chain (and `also`) does not hold yet: OpenSSL never
  // takes a certificate twice, so a pair of CAs that cross-sign each other ends the walk.
  auto issuer_in = [&](X509* cert, const std::vector<X509*>& pool, X509* also) -> X509* {
    for (X509* candidate : pool)
      if (candidate != also && std::find(chain.begin(), chain.end(), candidate) == chain.end() &&
          X509_check_issued(candidate, cert) == X509_V_OK)
        return candidate;
    return nullptr;
  };
  auto in_trust = [&](X509* c) {
    return std::any_of(trust_certs.begin(), trust_certs.end(),
                       [&](X509* t) { return X509_cmp(t, c) == 0; });
  };
  // The trust store first, as OpenSSL 3.0 looks (X509_V_FLAG_TRUSTED_FIRST): a cross-signed CA
  // the peer sent is not the chain OpenSSL verified when the bundle holds the CA itself.
  for (X509* cur = leaf; chain.size() < 32;) {
    X509* issuer = issuer_in(cur, trust_certs, nullptr);
    if (!issuer) issuer = issuer_in(cur, intermediates, nullptr);
    if (!issuer) break;  // the walk ends without an anchor
    // A root, or a CA of the bundle whose own issuer the bundle does not hold: a partial-chain
    // anchor.
    if (X509_check_issued(issuer, issuer) == X509_V_OK ||
        (in_trust(issuer) && !issuer_in(issuer, trust_certs, issuer))) {
      out.anchor = issuer;
      break;
    }
    chain.push_back(issuer);
    cur = issuer;
  }
  return out;
}

}  // namespace mtlsd::tls::revocation
