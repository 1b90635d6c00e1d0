#include "mtlsd/tls/identity.hpp"

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "mtlsd/config/spiffe_id.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/tls/openssl.hpp"
#include "mtlsd/util/hex.hpp"

namespace mtlsd::tls {
namespace {

std::string asn1_string(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

std::vector<std::string> name_entries(X509_NAME* name, int nid) {
  std::vector<std::string> out;
  for (int i = X509_NAME_get_index_by_NID(name, nid, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(name, nid, i)) {
    ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    unsigned char* utf8 = nullptr;
    int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len >= 0) out.emplace_back(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
    OPENSSL_free(utf8);
  }
  return out;
}

// The SPIFFE ID among `id`'s URI SANs, or why a spiffe:// one does not count: an upstream that
// normalises paths would read spiffe://td/ns/prod/../../admin as /admin, and with two spiffe://
// URIs it is unclear which one names the workload; a bare trust domain names no workload. Other
// URIs may sit beside it.
void take_spiffe_id(peer_identity& id) {
  const auto is_spiffe = [](const std::string& u) { return u.rfind("spiffe://", 0) == 0; };
  const auto count = std::count_if(id.uri_sans.begin(), id.uri_sans.end(), is_spiffe);
  if (count == 0) return;
  const std::string& uri = *std::find_if(id.uri_sans.begin(), id.uri_sans.end(), is_spiffe);
  if (count > 1) {
    id.spiffe_id_problem = "the certificate has " + std::to_string(count) +
                           " spiffe:// URI SANs; an X.509-SVID has one";
  } else if (std::string why = config::leaf_spiffe_id_problem(uri); !why.empty()) {
    id.spiffe_id_problem = "its spiffe:// URI SAN is no workload's SPIFFE ID: " + why;
  } else {
    id.spiffe_id = uri;
  }
}

}  // namespace

std::string sha256_fingerprint(X509* cert) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md.data(), &len) != 1) return {};
  return util::hex(md.data(), len);
}

namespace {

peer_identity compute_identity(X509* cert) {
  peer_identity id;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    switch (gn->type) {
      case GEN_URI: {
        id.uri_sans.push_back(asn1_string(gn->d.uniformResourceIdentifier));
        break;
      }
      case GEN_DNS:
        id.dns_sans.push_back(asn1_string(gn->d.dNSName));
        break;
      case GEN_EMAIL:
        id.email_sans.push_back(asn1_string(gn->d.rfc822Name));
        break;
      default:
        break;
    }
  }
  GENERAL_NAMES_free(names);
  take_spiffe_id(id);
  X509_NAME* subject = X509_get_subject_name(cert);
  auto cns = name_entries(subject, NID_commonName);
  if (!cns.empty()) id.common_name = cns.back();  // the most specific CN, as X509_check_host does
  id.organizational_units = name_entries(subject, NID_organizationalUnitName);
  id.subject = subject_of(cert);
  id.issuer = issuer_of(cert);
  id.serial = serial_of(cert);
  id.sha256 = sha256_fingerprint(cert);
  id.not_after = not_after_of(cert);
  return id;
}

// extract_identity is a function of the certificate's DER alone, and a worker sees the same
// client certificates again and again (each full handshake verifies one, each resumed
// handshake decodes one from its ticket): the last few answers are kept per thread, keyed by
// the DER (i2d_X509, as X509_digest encodes it for the fingerprint: the body comes from the
// encoding OpenSSL kept when it decoded the certificate). A hit costs an encoding, a compare
// and a copy instead of two X509_NAME_print_ex, a SHA-256 of the DER, the SAN decoding and
// their strings (~80k instructions per handshake under callgrind). Not X509_cmp: on a
// certificate fresh from a ticket it computes OpenSSL's extension cache first (~40k).
struct identity_cache {
  static constexpr std::size_t size = 8;
  static constexpr int max_der = 8192;  // larger certificates are not cached
  struct slot {
    std::string der;
    peer_identity id;
  };
  std::array<slot, size> slots;
  std::size_t next = 0;  // round robin: the oldest entry goes
};
thread_local identity_cache cache;

}  // namespace

peer_identity extract_identity(X509* cert) {
  if (!cert) return {};
  const int len = i2d_X509(cert, nullptr);
  if (len <= 0 || len > identity_cache::max_der) return compute_identity(cert);
  std::array<unsigned char, identity_cache::max_der> buf;
  unsigned char* p = buf.data();
  if (i2d_X509(cert, &p) != len) return compute_identity(cert);
  const std::string_view der(reinterpret_cast<const char*>(buf.data()),
                             static_cast<std::size_t>(len));
  for (const auto& slot : cache.slots)
    if (slot.der == der) return slot.id;
  peer_identity id = compute_identity(cert);
  auto& slot = cache.slots[cache.next];
  cache.next = (cache.next + 1) % identity_cache::size;
  slot.der.assign(der);
  slot.id = id;
  return id;
}

std::string_view spiffe_trust_domain(std::string_view spiffe_id) {
  if (spiffe_id.substr(0, 9) != "spiffe://") return {};
  const std::string_view rest = spiffe_id.substr(9);
  return rest.substr(0, rest.find('/'));
}

std::string svid_key_usage_problem(X509* leaf) {
  if (!(X509_get_extension_flags(leaf) & EXFLAG_KUSAGE))
    return "it has no keyUsage (an X.509-SVID's has digitalSignature)";
  const std::uint32_t ku = X509_get_key_usage(leaf);
  if (!(ku & KU_DIGITAL_SIGNATURE))
    return "its keyUsage lacks digitalSignature (an X.509-SVID's has it)";
  if (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN))
    return "its keyUsage has keyCertSign or cRLSign (an X.509-SVID leaf's has neither)";
  return {};
}

}  // namespace mtlsd::tls
