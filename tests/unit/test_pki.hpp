#pragma once
// A small in-memory PKI for unit tests, on the OpenSSL 3 API: EC P-256 keys, a root CA,
// intermediates, leaf certificates with chosen names, SANs, EKUs and validity windows, CRLs,
// encrypted keys and PKCS#12 bundles, plus a temporary directory to write them to as files.
//
//   mtlsd::test::pki_dir dir;
//   auto root = mtlsd::test::make_root_ca({.cn = "Test Root"});
//   auto leaf = mtlsd::test::make_leaf(root, {.cn = "alice", .uri_sans = {"spiffe://td/alice"}});
//   std::string cert_path = dir.write("alice.crt", mtlsd::test::to_pem(leaf));  // or write_pair
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mtlsd::test {

// Seconds, for validity windows relative to now: `now() - days(2)`.
constexpr std::time_t hours(long n) {
  return static_cast<std::time_t>(n) * 3600;
}
constexpr std::time_t days(long n) {
  return hours(n) * 24;
}
std::time_t now();

// A certificate and its private key. Copies share the same OpenSSL objects (reference counted).
class credential {
 public:
  credential() = default;
  credential(X509* cert, EVP_PKEY* key);  // takes ownership of both

  X509* cert() const { return cert_.get(); }
  EVP_PKEY* key() const { return key_.get(); }
  explicit operator bool() const { return cert_ != nullptr; }

 private:
  std::shared_ptr<X509> cert_;
  std::shared_ptr<EVP_PKEY> key_;
};

enum class key_usage {
  client,  // EKU clientAuth
  server,  // EKU serverAuth
  both,    // EKU serverAuth, clientAuth
  none,    // no EKU extension at all (any purpose)
};

// Specs are meant for designated initializers: make_leaf(root, {.cn = "a", .usage = ...}).
// Every member has a default member initializer, which keeps GCC 12's
// -Wmissing-field-initializers quiet about the members a test leaves out.
struct cert_spec {
  std::string cn{};
  std::vector<std::string> ous{};
  std::string org = "mtlsd tests";
  std::vector<std::string> uri_sans{};  // e.g. spiffe://example.org/ns/app
  std::vector<std::string> dns_sans{};
  std::vector<std::string> ip_sans{};  // "127.0.0.1", "::1"
  key_usage usage = key_usage::client;
  std::optional<std::time_t> not_before{};  // default: now - 1h
  std::optional<std::time_t> not_after{};   // default: now + 365 days
  std::optional<std::uint64_t> serial{};    // default: a fresh random 63-bit serial
  std::string crl_distribution_point{};     // URI, e.g. http://127.0.0.1:1234/ca.crl
  std::string ocsp_url{};                   // AIA OCSP responder URI
  std::vector<std::string> email_sans{};    // rfc822Name
  std::string key_type{};                   // "" = EC P-256; "RSA-1024", "RSA-2048", "EC-P-192"
  std::string digest{};                     // issuer's signature digest; "" = sha256, or "sha1"
  std::string key_usage_bits{};             // keyUsage; "" = "critical,digitalSignature"
};

struct ca_spec {
  std::string cn{};
  std::string org = "mtlsd tests";
  std::optional<int> path_length{};         // basicConstraints pathlen
  std::optional<std::time_t> not_before{};  // default: now - 1 day
  std::optional<std::time_t> not_after{};   // default: now + 10 years
  std::optional<std::uint64_t> serial{};
  std::string crl_distribution_point{};
  std::string ocsp_url{};
  std::string name_constraints{};  // openssl.cnf syntax, e.g. "critical,permitted;DNS:.example.org"
  std::string key_type{};          // "" = EC P-256; as make_key
  std::string extended_key_usage{};  // openssl.cnf syntax, e.g. "serverAuth"; "" = none
};

// A fresh EC P-256 key, or `type` ("RSA-1024", "RSA-2048", "EC-P-192", "EC-P-384").
EVP_PKEY* make_key(const std::string& type = "");

// A self-signed root CA.
credential make_root_ca(const ca_spec& spec);
// An intermediate CA signed by `issuer`.
credential make_intermediate(const credential& issuer, const ca_spec& spec);
// An end-entity certificate signed by `issuer`.
credential make_leaf(const credential& issuer, const cert_spec& spec);
// A self-signed end-entity certificate (no CA).
credential make_self_signed(const cert_spec& spec);

struct revoked_entry {
  std::uint64_t serial{};
  std::time_t revoked_at{};
  int reason = -1;  // a CRLReason code (CRL_REASON_CERTIFICATE_HOLD, ...); -1 = none
};

struct crl_spec {
  std::vector<revoked_entry> revoked{};
  std::optional<std::time_t> this_update{};  // default: now - 1h
  std::optional<std::time_t> next_update{};  // default: now + 7 days
  std::uint64_t crl_number = 1;
  // An Issuing Distribution Point naming this URI (a partitioned CRL's scope); "" = none.
  std::string issuing_distribution_point{};
  bool indirect = false;  // with issuing_distribution_point: an indirect CRL (indirectCRL TRUE)
  // A delta CRL of the base CRL with this number (deltaCRLIndicator); none when unset.
  std::optional<std::uint64_t> delta_of{};
  // A base CRL's Freshest CRL extension naming where its deltas are (this URI); "" = none.
  std::string freshest_crl{};
};

// A CRL signed by `issuer`. Free with X509_CRL_free (or wrap in tls::x509_crl_ptr).
X509_CRL* make_crl(const credential& issuer, const crl_spec& spec);

std::uint64_t serial_of(X509* cert);

// Encodings.
std::string to_pem(X509* cert);
std::string to_pem(const credential& c);                   // the certificate only
std::string to_pem(const std::vector<credential>& chain);  // certificates only, in order
std::string to_pem(X509_CRL* crl);
std::string to_der(X509* cert);
std::string to_der(X509_CRL* crl);
std::string key_to_pem(EVP_PKEY* key);              // unencrypted PKCS#8 (BEGIN PRIVATE KEY)
std::string key_to_traditional_pem(EVP_PKEY* key);  // BEGIN EC PRIVATE KEY
std::string key_to_encrypted_pem(EVP_PKEY* key,
                                 const std::string& password);  // PKCS#8, AES-256-CBC
// DER PKCS#12 holding `leaf`'s key and certificate and `extra` certificates.
std::string to_pkcs12(const credential& leaf, const std::vector<credential>& extra,
                      const std::string& password);

// A temporary directory, removed with everything in it when the object goes away.
class pki_dir {
 public:
  pki_dir();
  ~pki_dir();
  pki_dir(const pki_dir&) = delete;
  pki_dir& operator=(const pki_dir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // Writes `content` to path()/name with permissions `mode`; returns the absolute path.
  std::string write(const std::string& name, const std::string& content, unsigned mode = 0600);
  // Writes cert and key as name.crt (the chain: cert, then `intermediates`) and name.key.
  struct files {
    std::string cert;
    std::string key;
  };
  files write_pair(const std::string& name, const credential& c,
                   const std::vector<credential>& intermediates = {});

 private:
  std::filesystem::path path_;
};

}  // namespace mtlsd::test
