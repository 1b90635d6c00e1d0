#include "test_pki.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <fstream>
#include <stdexcept>

namespace mtlsd::test {
namespace {

namespace fs = std::filesystem;

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

// Test setup failures are bugs in the test: fail loudly with OpenSSL's own explanation.
void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("test_pki: " + what + ": " + openssl_errors());
}

struct bio_deleter {
  void operator()(BIO* b) const noexcept { BIO_free_all(b); }
};
using bio_ptr = std::unique_ptr<BIO, bio_deleter>;

bio_ptr mem_bio() {
  bio_ptr b(BIO_new(BIO_s_mem()));
  check(b != nullptr, "BIO_new");
  return b;
}

std::string bio_string(BIO* b) {
  char* p = nullptr;
  long n = BIO_ctrl(b, BIO_CTRL_INFO, 0, &p);  // BIO_get_mem_data without its C cast
  return std::string(p, static_cast<std::size_t>(n));
}

std::uint64_t random_serial() {
  std::uint64_t v = 0;
  check(RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) == 1, "RAND_bytes");
  v &= 0x7fffffffffffffffULL;  // positive, and never zero
  return v == 0 ? 1 : v;
}

void set_time(ASN1_TIME* field, std::time_t t) {
  check(ASN1_TIME_set(field, t) != nullptr, "ASN1_TIME_set");
}

X509_NAME* build_name(const std::string& org, const std::vector<std::string>& ous,
                      const std::string& cn) {
  X509_NAME* name = X509_NAME_new();
  check(name != nullptr, "X509_NAME_new");
  auto add = [&](int nid, const std::string& value) {
    check(X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8,
                                     reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                     0) == 1,
          "X509_NAME_add_entry_by_NID");
  };
  // Most general first, so that the RFC 2253 form reads "CN=...,OU=...,O=...".
  if (!org.empty()) add(NID_organizationName, org);
  for (const auto& ou : ous)
    add(NID_organizationalUnitName, ou);
  if (!cn.empty()) add(NID_commonName, cn);
  return name;
}

// An extension written the way openssl.cnf would write it ("critical,CA:TRUE").
void add_conf_ext(X509* subject, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, subject, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr, "extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
  const int rc = X509_add_ext(subject, ext, -1);
  X509_EXTENSION_free(ext);
  check(rc == 1, "X509_add_ext");
}

void add_subject_alt_names(X509* x, const cert_spec& spec) {
  if (spec.uri_sans.empty() && spec.dns_sans.empty() && spec.ip_sans.empty() &&
      spec.email_sans.empty())
    return;
  GENERAL_NAMES* names = GENERAL_NAMES_new();
  check(names != nullptr, "GENERAL_NAMES_new");
  auto push_string = [&](int type, const std::string& value) {
    ASN1_IA5STRING* s = ASN1_IA5STRING_new();
    check(s != nullptr && ASN1_STRING_set(s, value.data(), static_cast<int>(value.size())) == 1,
          "ASN1_STRING_set");
    GENERAL_NAME* gn = GENERAL_NAME_new();
    check(gn != nullptr, "GENERAL_NAME_new");
    GENERAL_NAME_set0_value(gn, type, s);
    sk_GENERAL_NAME_push(names, gn);
  };
  // Built by hand rather than from "URI:a,DNS:b" text so that values may hold any character.
  for (const auto& u : spec.uri_sans)
    push_string(GEN_URI, u);
  for (const auto& d : spec.dns_sans)
    push_string(GEN_DNS, d);
  for (const auto& e : spec.email_sans)
    push_string(GEN_EMAIL, e);
  for (const auto& ip : spec.ip_sans) {
    ASN1_OCTET_STRING* bytes = a2i_IPADDRESS(ip.c_str());
    check(bytes != nullptr, "a2i_IPADDRESS(" + ip + ")");
    GENERAL_NAME* gn = GENERAL_NAME_new();
    check(gn != nullptr, "GENERAL_NAME_new");
    GENERAL_NAME_set0_value(gn, GEN_IPADD, bytes);
    sk_GENERAL_NAME_push(names, gn);
  }
  const int rc = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT);
  GENERAL_NAMES_free(names);
  check(rc == 1, "X509_add1_ext_i2d(subjectAltName)");
}

void add_revocation_pointers(X509* x, X509* issuer, const std::string& crl_dp,
                             const std::string& ocsp) {
  if (!crl_dp.empty()) add_conf_ext(x, issuer, NID_crl_distribution_points, "URI:" + crl_dp);
  if (!ocsp.empty()) add_conf_ext(x, issuer, NID_info_access, "OCSP;URI:" + ocsp);
}

struct x509_deleter {
  void operator()(X509* x) const noexcept { X509_free(x); }
};
using owned_x509 = std::unique_ptr<X509, x509_deleter>;

// The parts every certificate has: version, serial, validity, names, key, SKID (and AKID when
// there is a distinct issuer).
owned_x509 start_cert(X509_NAME* subject, EVP_PKEY* subject_key, const credential* issuer,
                      std::uint64_t serial, std::time_t not_before, std::time_t not_after) {
  owned_x509 x(X509_new());
  check(x != nullptr, "X509_new");
  check(X509_set_version(x.get(), 2) == 1, "X509_set_version");
  check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(x.get()), serial) == 1, "serial");
  set_time(X509_getm_notBefore(x.get()), not_before);
  set_time(X509_getm_notAfter(x.get()), not_after);
  check(X509_set_subject_name(x.get(), subject) == 1, "X509_set_subject_name");
  check(
      X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer->cert()) : subject) == 1,
      "X509_set_issuer_name");
  check(X509_set_pubkey(x.get(), subject_key) == 1, "X509_set_pubkey");
  add_conf_ext(x.get(), issuer ? issuer->cert() : x.get(), NID_subject_key_identifier, "hash");
  if (issuer) add_conf_ext(x.get(), issuer->cert(), NID_authority_key_identifier, "keyid:always");
  return x;
}

credential finish(owned_x509 x, EVP_PKEY* subject_key, EVP_PKEY* signing_key,
                  const std::string& digest = "") {
  const EVP_MD* md = digest == "sha1" ? EVP_sha1() : EVP_sha256();
  check(X509_sign(x.get(), signing_key, md) > 0, "X509_sign");
  return credential(x.release(), subject_key);
}

credential make_ca(const credential* issuer, const ca_spec& spec) {
  EVP_PKEY* key = make_key(spec.key_type);
  X509_NAME* name = build_name(spec.org, {}, spec.cn);
  auto x = start_cert(name, key, issuer, spec.serial.value_or(random_serial()),
                      spec.not_before.value_or(now() - days(1)),
                      spec.not_after.value_or(now() + days(3650)));
  X509_NAME_free(name);
  std::string bc = "critical,CA:TRUE";
  if (spec.path_length) bc += ",pathlen:" + std::to_string(*spec.path_length);
  add_conf_ext(x.get(), issuer ? issuer->cert() : x.get(), NID_basic_constraints, bc);
  add_conf_ext(x.get(), issuer ? issuer->cert() : x.get(), NID_key_usage,
               "critical,keyCertSign,cRLSign");
  if (!spec.name_constraints.empty())
    add_conf_ext(x.get(), issuer ? issuer->cert() : x.get(), NID_name_constraints,
                 spec.name_constraints);
  if (!spec.extended_key_usage.empty())
    add_conf_ext(x.get(), issuer ? issuer->cert() : x.get(), NID_ext_key_usage,
                 spec.extended_key_usage);
  if (issuer)
    add_revocation_pointers(x.get(), issuer->cert(), spec.crl_distribution_point, spec.ocsp_url);
  return finish(std::move(x), key, issuer ? issuer->key() : key);
}

credential make_end_entity(const credential* issuer, const cert_spec& spec) {
  EVP_PKEY* key = make_key(spec.key_type);
  X509_NAME* name = build_name(spec.org, spec.ous, spec.cn);
  auto x = start_cert(name, key, issuer, spec.serial.value_or(random_serial()),
                      spec.not_before.value_or(now() - hours(1)),
                      spec.not_after.value_or(now() + days(365)));
  X509_NAME_free(name);
  X509* signer = issuer ? issuer->cert() : x.get();
  add_conf_ext(x.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
  add_conf_ext(
      x.get(), signer, NID_key_usage,
      spec.key_usage_bits.empty() ? "critical,digitalSignature" : spec.key_usage_bits.c_str());
  switch (spec.usage) {
    case key_usage::client:
      add_conf_ext(x.get(), signer, NID_ext_key_usage, "clientAuth");
      break;
    case key_usage::server:
      add_conf_ext(x.get(), signer, NID_ext_key_usage, "serverAuth");
      break;
    case key_usage::both:
      add_conf_ext(x.get(), signer, NID_ext_key_usage, "serverAuth,clientAuth");
      break;
    case key_usage::none:
      break;
  }
  add_subject_alt_names(x.get(), spec);
  add_revocation_pointers(x.get(), signer, spec.crl_distribution_point, spec.ocsp_url);
  return finish(std::move(x), key, issuer ? issuer->key() : key, spec.digest);
}

}  // namespace

std::time_t now() {
  return std::time(nullptr);
}

credential::credential(X509* cert, EVP_PKEY* key)
    : cert_(cert, X509_free), key_(key, EVP_PKEY_free) {}

EVP_PKEY* make_key(const std::string& type) {
  EVP_PKEY* key = nullptr;
  if (type.rfind("RSA-", 0) == 0)
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::stoul(type.substr(4)));
  else
    key =
        EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", type.empty() ? "P-256" : type.substr(3).c_str());
  check(key != nullptr, "EVP_PKEY_Q_keygen(" + (type.empty() ? "EC-P-256" : type) + ")");
  return key;
}

credential make_root_ca(const ca_spec& spec) {
  return make_ca(nullptr, spec);
}
credential make_intermediate(const credential& issuer, const ca_spec& spec) {
  return make_ca(&issuer, spec);
}
credential make_leaf(const credential& issuer, const cert_spec& spec) {
  return make_end_entity(&issuer, spec);
}
credential make_self_signed(const cert_spec& spec) {
  return make_end_entity(nullptr, spec);
}

X509_CRL* make_crl(const credential& issuer, const crl_spec& spec) {
  X509_CRL* crl = X509_CRL_new();
  check(crl != nullptr, "X509_CRL_new");
  check(X509_CRL_set_version(crl, 1) == 1, "X509_CRL_set_version");  // v2
  check(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer.cert())) == 1,
        "X509_CRL_set_issuer_name");
  ASN1_TIME* t = ASN1_TIME_new();
  set_time(t, spec.this_update.value_or(now() - hours(1)));
  check(X509_CRL_set1_lastUpdate(crl, t) == 1, "X509_CRL_set1_lastUpdate");
  set_time(t, spec.next_update.value_or(now() + days(7)));
  check(X509_CRL_set1_nextUpdate(crl, t) == 1, "X509_CRL_set1_nextUpdate");
  for (const auto& r : spec.revoked) {
    X509_REVOKED* entry = X509_REVOKED_new();
    ASN1_INTEGER* serial = ASN1_INTEGER_new();
    check(entry != nullptr && serial != nullptr && ASN1_INTEGER_set_uint64(serial, r.serial) == 1,
          "revoked serial");
    set_time(t, r.revoked_at);
    check(X509_REVOKED_set_serialNumber(entry, serial) == 1 &&
              X509_REVOKED_set_revocationDate(entry, t) == 1,
          "X509_REVOKED_set_*");
    ASN1_INTEGER_free(serial);
    if (r.reason >= 0) {
      ASN1_ENUMERATED* code = ASN1_ENUMERATED_new();
      check(code != nullptr && ASN1_ENUMERATED_set(code, r.reason) == 1 &&
                X509_REVOKED_add1_ext_i2d(entry, NID_crl_reason, code, 0, 0) == 1,
            "CRL entry reason");
      ASN1_ENUMERATED_free(code);
    }
    check(X509_CRL_add0_revoked(crl, entry) == 1, "X509_CRL_add0_revoked");
  }
  ASN1_TIME_free(t);
  check(X509_CRL_sort(crl) == 1, "X509_CRL_sort");
  ASN1_INTEGER* number = ASN1_INTEGER_new();
  check(number != nullptr && ASN1_INTEGER_set_uint64(number, spec.crl_number) == 1, "crl number");
  check(X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) == 1, "crlNumber");
  ASN1_INTEGER_free(number);
  if (spec.delta_of) {
    ASN1_INTEGER* base = ASN1_INTEGER_new();
    check(base != nullptr && ASN1_INTEGER_set_uint64(base, *spec.delta_of) == 1 &&
              X509_CRL_add1_ext_i2d(crl, NID_delta_crl, base, 1, 0) == 1,
          "deltaCRLIndicator");
    ASN1_INTEGER_free(base);
  }
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer.cert(), nullptr, nullptr, crl, 0);
  X509_EXTENSION* akid =
      X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always");
  check(akid != nullptr && X509_CRL_add_ext(crl, akid, -1) == 1, "CRL authorityKeyIdentifier");
  X509_EXTENSION_free(akid);
  if (!spec.issuing_distribution_point.empty()) {
    const std::string value = "critical,fullname:URI:" + spec.issuing_distribution_point +
                              (spec.indirect ? ",indirectCRL:TRUE" : "");
    X509_EXTENSION* idp =
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_issuing_distribution_point, value.c_str());
    check(idp != nullptr && X509_CRL_add_ext(crl, idp, -1) == 1, "CRL issuingDistributionPoint");
    X509_EXTENSION_free(idp);
  }
  if (!spec.freshest_crl.empty()) {
    const std::string value = "URI:" + spec.freshest_crl;
    X509_EXTENSION* freshest = X509V3_EXT_conf_nid(nullptr, &ctx, NID_freshest_crl, value.c_str());
    check(freshest != nullptr && X509_CRL_add_ext(crl, freshest, -1) == 1, "CRL freshestCRL");
    X509_EXTENSION_free(freshest);
  }
  check(X509_CRL_sign(crl, issuer.key(), EVP_sha256()) > 0, "X509_CRL_sign");
  return crl;
}

std::uint64_t serial_of(X509* cert) {
  std::uint64_t v = 0;
  check(ASN1_INTEGER_get_uint64(&v, X509_get0_serialNumber(cert)) == 1, "serial");
  return v;
}

std::string to_pem(X509* cert) {
  auto b = mem_bio();
  check(PEM_write_bio_X509(b.get(), cert) == 1, "PEM_write_bio_X509");
  return bio_string(b.get());
}

std::string to_pem(const credential& c) {
  return to_pem(c.cert());
}

std::string to_pem(const std::vector<credential>& chain) {
  std::string out;
  for (const auto& c : chain)
    out += to_pem(c.cert());
  return out;
}

std::string to_pem(X509_CRL* crl) {
  auto b = mem_bio();
  check(PEM_write_bio_X509_CRL(b.get(), crl) == 1, "PEM_write_bio_X509_CRL");
  return bio_string(b.get());
}

std::string to_der(X509* cert) {
  auto b = mem_bio();
  check(i2d_X509_bio(b.get(), cert) == 1, "i2d_X509_bio");
  return bio_string(b.get());
}

std::string to_der(X509_CRL* crl) {
  auto b = mem_bio();
  check(i2d_X509_CRL_bio(b.get(), crl) == 1, "i2d_X509_CRL_bio");
  return bio_string(b.get());
}

std::string key_to_pem(EVP_PKEY* key) {
  auto b = mem_bio();
  check(PEM_write_bio_PrivateKey(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  return bio_string(b.get());
}

std::string key_to_traditional_pem(EVP_PKEY* key) {
  auto b = mem_bio();
  check(PEM_write_bio_PrivateKey_traditional(b.get(), key, nullptr, nullptr, 0, nullptr, nullptr) ==
            1,
        "PEM_write_bio_PrivateKey_traditional");
  return bio_string(b.get());
}

std::string key_to_encrypted_pem(EVP_PKEY* key, const std::string& password) {
  auto b = mem_bio();
  check(PEM_write_bio_PKCS8PrivateKey(b.get(), key, EVP_aes_256_cbc(), password.data(),
                                      static_cast<int>(password.size()), nullptr, nullptr) == 1,
        "PEM_write_bio_PKCS8PrivateKey");
  return bio_string(b.get());
}

std::string to_pkcs12(const credential& leaf, const std::vector<credential>& extra,
                      const std::string& password) {
  STACK_OF(X509)* cas = sk_X509_new_null();
  for (const auto& c : extra)
    sk_X509_push(cas, c.cert());
  // OpenSSL 3 defaults: AES-256-CBC with PBKDF2 and an HMAC-SHA256 MAC (no legacy provider).
  PKCS12* p12 =
      PKCS12_create(password.c_str(), "mtlsd test", leaf.key(), leaf.cert(), cas, 0, 0, 0, 0, 0);
  sk_X509_free(cas);
  check(p12 != nullptr, "PKCS12_create");
  auto b = mem_bio();
  const int rc = i2d_PKCS12_bio(b.get(), p12);
  PKCS12_free(p12);
  check(rc == 1, "i2d_PKCS12_bio");
  return bio_string(b.get());
}

pki_dir::pki_dir() {
  std::string tmpl = (fs::temp_directory_path() / "mtlsd-unit-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("test_pki: mkdtemp failed");
  path_ = tmpl;
}

pki_dir::~pki_dir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string pki_dir::write(const std::string& name, const std::string& content, unsigned mode) {
  const fs::path p = path_ / name;
  fs::create_directories(p.parent_path());
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("test_pki: cannot write " + p.string());
  }
  fs::permissions(p, static_cast<fs::perms>(mode), fs::perm_options::replace);
  return p.string();
}

pki_dir::files pki_dir::write_pair(const std::string& name, const credential& c,
                                   const std::vector<credential>& intermediates) {
  std::string chain = to_pem(c.cert()) + to_pem(intermediates);
  return {write(name + ".crt", chain, 0644), write(name + ".key", key_to_pem(c.key()), 0600)};
}

}  // namespace mtlsd::test
