// OpenSSL's verdicts in mtlsd's rejection vocabulary (reason.hpp): what a certificate
// verification error or a failed handshake means for the access log and the metrics; and a
// verdict of mtlsd's own that OpenSSL's verification does not make (tls_key_problem).
#include <arpa/inet.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {

// A table written as a switch (one case per OpenSSL error, grouped by reason): long, and kept
// whole so that every error's reason is found in one place.
reason reason_from_x509_error(int err) {
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
      return reason::expired;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return reason::not_yet_valid;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY:
    // Below the security level: a signature from a key or digest that can be forged (RSA-1024,
    // P-192, SHA-1) proves nothing, so it is a bad signature, whether or not the math checks out.
    case X509_V_ERR_EE_KEY_TOO_SMALL:
    case X509_V_ERR_CA_KEY_TOO_SMALL:
    case X509_V_ERR_CA_MD_TOO_WEAK:
    case X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM:
      return reason::bad_signature;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_INVALID_NON_CA:
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
    // Strict (RFC 5280) key usage and basicConstraints rules.
    case X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA:
    case X509_V_ERR_CA_CERT_MISSING_KEY_USAGE:
    case X509_V_ERR_CA_BCONS_NOT_CRITICAL:
    case X509_V_ERR_PATHLEN_INVALID_FOR_NON_CA:
    case X509_V_ERR_PATHLEN_WITHOUT_KU_KEY_CERT_SIGN:
      return reason::bad_key_usage;
    case X509_V_ERR_PERMITTED_VIOLATION:
    case X509_V_ERR_EXCLUDED_VIOLATION:
    case X509_V_ERR_SUBTREE_MINMAX:
    case X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE:
    case X509_V_ERR_UNSUPPORTED_CONSTRAINT_SYNTAX:
    case X509_V_ERR_UNSUPPORTED_NAME_SYNTAX:
      return reason::name_constraints;
    // The rest of the strict profile: the certificate itself is malformed, whoever issued it.
    case X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER:
    case X509_V_ERR_MISSING_SUBJECT_KEY_IDENTIFIER:
    case X509_V_ERR_AUTHORITY_KEY_IDENTIFIER_CRITICAL:
    case X509_V_ERR_SUBJECT_KEY_IDENTIFIER_CRITICAL:
    case X509_V_ERR_ISSUER_NAME_EMPTY:
    case X509_V_ERR_SUBJECT_NAME_EMPTY:
    case X509_V_ERR_EMPTY_SUBJECT_ALT_NAME:
    case X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL:
    case X509_V_ERR_EXTENSIONS_REQUIRE_VERSION_3:
    case X509_V_ERR_SIGNATURE_ALGORITHM_MISMATCH:
    case X509_V_ERR_SIGNATURE_ALGORITHM_INCONSISTENCY:
    case X509_V_ERR_EC_KEY_EXPLICIT_PARAMS:
    case X509_V_ERR_INVALID_EXTENSION:
    case X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION:
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
    // Certificate policies: a malformed policy extension, or a chain that cannot satisfy a
    // requireExplicitPolicy constraint. Not reached while policies go unchecked
    // (X509_V_FLAG_POLICY_CHECK is kept off on purpose: README); mapped should that
    // change.
    case X509_V_ERR_INVALID_POLICY_EXTENSION:
    case X509_V_ERR_NO_EXPLICIT_POLICY:
      return reason::bad_certificate;
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
      return reason::chain_too_long;
    case X509_V_ERR_CERT_REVOKED:
      return reason::revoked;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    // A CRL with malformed dates, whose path cannot be validated, or whose issuer may not sign
    // CRLs (no cRLSign): as if there were none — on_unavailable and deferral decide.
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
    // A CRL (or entry) with a critical extension OpenSSL does not process: RFC 5280 forbids
    // using it, so as if there were none (review: it read as unknown_ca, past on_unavailable).
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
      return reason::revocation_unavailable;
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return reason::not_authorized;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
      return reason::hostname_mismatch;
    default:
      // Untrusted root, missing issuer, self-signed leaf...: the chain does not lead to a CA
      // we trust.
      return reason::unknown_ca;
  }
}

namespace {

// How many of a certificate's names a mismatch's detail shows, and how much of each: enough to
// see what it was issued for, bounded for a log line.
constexpr std::size_t kNamesShown = 6;
constexpr std::size_t kNameChars = 80;

// One name as a log line may carry it: control and non-ASCII bytes as '?', a long one cut short.
std::string shown_name(const char* data, std::size_t len) {
  std::string s;
  for (std::size_t i = 0; i < len && s.size() < kNameChars; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    s += c < 0x20 || c > 0x7e ? '?' : static_cast<char>(c);
  }
  if (len > kNameChars) s.replace(kNameChars - 3, std::string::npos, "...");
  return s;
}

// "DNS:x", "IP:x" or "URI:x"; "" for the other kinds (e-mail, directory names...), which no
// host name check reads.
std::string san_text(const GENERAL_NAME* n) {
  auto ia5 = [](const ASN1_IA5STRING* v) {
    return shown_name(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                      static_cast<std::size_t>(ASN1_STRING_length(v)));
  };
  switch (n->type) {
    case GEN_DNS:
      return "DNS:" + ia5(n->d.dNSName);
    case GEN_URI:
      return "URI:" + ia5(n->d.uniformResourceIdentifier);
    case GEN_IPADD: {
      const int len = ASN1_STRING_length(n->d.iPAddress);
      char buf[INET6_ADDRSTRLEN] = "";
      if ((len != 4 && len != 16) ||
          !inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(n->d.iPAddress), buf,
                     sizeof buf))
        return "IP:(malformed)";
      return std::string("IP:") + buf;
    }
    default:
      return {};
  }
}

}  // namespace

std::string name_mismatch_detail(X509_STORE_CTX* store_ctx, int err) {
  if (err != X509_V_ERR_HOSTNAME_MISMATCH && err != X509_V_ERR_IP_ADDRESS_MISMATCH) return {};
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(store_ctx);
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  if (!param || !leaf) return {};
  std::string expected;
  if (err == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    if (char* ip = X509_VERIFY_PARAM_get1_ip_asc(param)) {
      expected = ip;
      OPENSSL_free(ip);
    }
  } else {
    for (int i = 0; const char* host = X509_VERIFY_PARAM_get0_host(param, i); ++i)
      expected += (i == 0 ? "" : " or ") + shown_name(host, std::strlen(host));
  }
  std::unique_ptr<GENERAL_NAMES, void (*)(GENERAL_NAMES*)> sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, nullptr, nullptr)),
      GENERAL_NAMES_free);
  std::string names;
  std::size_t count = 0;
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const std::string name = san_text(sk_GENERAL_NAME_value(sans.get(), i));
    if (name.empty()) continue;
    if (++count <= kNamesShown) names += (names.empty() ? "" : ", ") + name;
  }
  if (count > kNamesShown) names += " and " + std::to_string(count - kNamesShown) + " more";
  if (names.empty()) {
    // The subject's CN is never read as a host name (context.cpp), but shows whose certificate
    // this is.
    const std::string subject = subject_of(leaf);
    names = "no DNS, IP or URI names" + (subject.empty() ? "" : " (subject " + subject + ")");
  }
  return std::string(X509_verify_cert_error_string(err)) + ": expected " + expected +
         "; certificate has " + names;
}

std::optional<reason> reason_from_ssl_failure(int ssl_reason) {
  switch (ssl_reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
      return reason::no_client_cert;
    // CertificateVerify (or, from a server, ServerKeyExchange) signed with a key other than the
    // certificate's: the peer does not hold the key of the certificate it presented.
    case SSL_R_BAD_SIGNATURE:
      return reason::bad_signature;
    default:
      return std::nullopt;
  }
}

namespace {

// A TLS group name as SSL_CTX_set1_groups_list takes it ("P-256", "secp256r1", "prime256v1",
// "brainpoolP256r1", "X25519"...) as a NID.
int group_nid(const std::string& name) {
  if (name == "secp256r1") return NID_X9_62_prime256v1;
  const int nid = EC_curve_nist2nid(name.c_str());
  return nid != NID_undef ? nid : OBJ_sn2nid(name.c_str());
}

bool tls13_curve(int nid) {
  return nid == NID_X9_62_prime256v1 || nid == NID_secp384r1 || nid == NID_secp521r1;
}

}  // namespace

tls_signers signers_of(int min_version, int max_version, const std::string& groups) {
  tls_signers s;
  s.tls12 = min_version <= TLS1_2_VERSION;
  s.tls13 = max_version == 0 || max_version >= TLS1_3_VERSION;
  s.groups = groups;
  for (std::size_t at = 0; at <= groups.size();) {
    std::size_t end = groups.find(':', at);
    if (end == std::string::npos) end = groups.size();
    if (const int nid = group_nid(groups.substr(at, end - at)); nid != NID_undef)
      s.group_nids.push_back(nid);
    at = end + 1;
  }
  return s;
}

std::string tls_key_problem(X509* leaf, const tls_signers& s) {
  EVP_PKEY* key = X509_get0_pubkey(leaf);
  if (!key) return "its public key does not decode";
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
    case EVP_PKEY_ED25519:
    case EVP_PKEY_ED448:
      return {};
    case EVP_PKEY_DSA:  // TLS 1.2's CertificateVerify takes DSA (OpenSSL 3.0 admits it)
      if (s.tls12) return {};
      return "a DSA key, which TLS 1.3 cannot sign with";
    case EVP_PKEY_EC:
      break;
    default: {
      const char* type = EVP_PKEY_get0_type_name(key);
      return std::string("a ") + (type ? type : "unknown") +
             " key; TLS signs with RSA, RSA-PSS, ECDSA, Ed25519 and Ed448 keys, and TLS 1.2 with "
             "DSA keys too";
    }
  }
  char group[64] = "";
  std::size_t len = 0;
  if (EVP_PKEY_get_group_name(key, group, sizeof group, &len) != 1 || len == 0)
    return "an EC key without a named curve";
  int nid = OBJ_sn2nid(group);
  if (nid == NID_undef) nid = EC_curve_nist2nid(group);
  // TLS 1.3 ties each ECDSA scheme to a curve (P-256, P-384, P-521), whatever the groups; TLS
  // 1.2's take any curve both sides list (RFC 8422, RFC 7027), and OpenSSL's
  // tls1_check_group_id wants it among our groups, those three included.
  if (s.tls13 && tls13_curve(nid)) return {};
  if (s.tls12 && nid != NID_undef &&
      std::find(s.group_nids.begin(), s.group_nids.end(), nid) != s.group_nids.end())
    return {};
  const char* nist = nid == NID_undef ? nullptr : EC_curve_nid2nist(nid);
  std::string why = std::string("an EC key on ") +
                    (nist ? std::string(nist) + " (" + group + ")" : group) +
                    ", which this listener's TLS versions and curves cannot sign with (";
  if (s.tls13) why += "TLS 1.3: P-256, P-384, P-521";
  if (s.tls13 && s.tls12) why += "; ";
  if (s.tls12) why += "TLS 1.2: the curves in tls.curves, " + s.groups;
  return why + ")";
}

}  // namespace mtlsd::tls
