#include "mtlsd/tls/credentials.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "mtlsd/config/pkcs11_uri.hpp"
#include "mtlsd/config/print.hpp"
#include "mtlsd/tls/asn1_time.hpp"
#include "mtlsd/tls/pkcs11.hpp"
#include "mtlsd/util/regular_file.hpp"

namespace mtlsd::tls {
namespace {

// A key pasted where its file's path belongs must not be echoed into logs by our errors, nor the
// PIN a pkcs11: URI may carry (pin-value=).
std::string shown(const std::string& path) {
  if (path.find("-----BEGIN") != std::string::npos || path.find('\n') != std::string::npos)
    return "<a PEM block where a file path belongs; not shown>";
  return config::is_pkcs11_uri(path) ? config::redact(path) : path;
}

[[noreturn]] void fail(const config::file_ref& f, const std::string& what) {
  throw config::config_error({{f.where, (f.empty() ? "" : shown(f.path) + ": ") + what, false}});
}

// Wipes a string holding key material or a password when it goes out of scope.
struct cleanse_on_exit {
  std::string& s;
  ~cleanse_on_exit() { OPENSSL_cleanse(s.data(), s.size()); }
};

// Reads a whole file, at most `cap` bytes (README: file size caps), into one buffer: no stream
// buffer or reallocation leaves copies of a key or password in freed memory (callers cleanse
// it). `key`: the key naming a secret file (password, PIN: trailing newlines are dropped).
std::string read_file(const config::file_ref& f, const char* kind, std::size_t cap = 16 << 20,
                      const char* key = nullptr) {
  const util::opened_file file = util::open_regular_file(f.path);
  if (file.fd < 0)  // a secret's path may be the secret, pasted: its key is named instead
    fail(key ? config::file_ref{"", f.where} : f,
         key ? std::string(key) + ": cannot read the " + kind + " (" + file.why +
                   "); its path is not shown, as it may be a pasted secret"
             : std::string("cannot read ") + kind + ": " + file.why);
  struct stat st {};
  std::string s;
  const bool too_large = ::fstat(file.fd, &st) == 0 && st.st_size > static_cast<off_t>(cap);
  if (!too_large && st.st_size > 0) s.resize(static_cast<std::size_t>(st.st_size));  // else grown
  std::size_t got = 0;
  auto give_up = [&](const std::string& why) {
    ::close(file.fd);
    OPENSSL_cleanse(s.data(), s.size());
    fail(f, why);
  };
  for (;;) {
    if (too_large || got > cap)
      give_up(std::string(kind) + " is larger than " + std::to_string(cap >> 20) +
              " MiB, the most mtlsd reads of one; refused");
    if (got == s.size()) {
      // Larger than stat said (written to while read): grow, cleansing the old buffer.
      std::string bigger(std::min(s.size() * 2 + 4096, cap + 1), '\0');
      std::memcpy(bigger.data(), s.data(), got);
      OPENSSL_cleanse(s.data(), s.size());
      s.swap(bigger);
    }
    const ssize_t n = ::read(file.fd, s.data() + got, s.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) give_up(std::string("cannot read ") + kind + ": " + std::strerror(errno));
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(file.fd);
  s.resize(got);
  const std::string_view what(kind);
  if (s.empty())
    fail(f, std::string(what) + (what.ends_with(" file") ? " is empty" : " file is empty"));
  while (key && !s.empty() && (s.back() == '\n' || s.back() == '\r'))
    s.pop_back();  // not part of a secret; shrinks in place, leaving no copy behind
  return s;
}

bio_ptr memory_bio(const std::string& data) {
  return bio_ptr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

bool looks_like_pem(const std::string& data) {
  return data.find("-----BEGIN ") != std::string::npos;
}

// Supplies the configured password to OpenSSL, and never lets OpenSSL prompt on a terminal
// (its default when no callback is given).
struct password_source {
  const std::string* password;
  bool asked = false;
};

int password_cb(char* buf, int size, int /*rwflag*/, void* u) {
  auto* src = static_cast<password_source*>(u);
  src->asked = true;
  if (src->password->empty()) return 0;
  int n = static_cast<int>(
      std::min<std::size_t>(src->password->size(), static_cast<std::size_t>(size)));
  std::memcpy(buf, src->password->data(), static_cast<std::size_t>(n));
  return n;
}

// After PEM blocks were read until the reader stopped: whether it stopped at the end of the
// file (no further "-----BEGIN"), the one stop that is not a failure. A damaged block (bad
// base64, a missing END line, a body that does not decode) stops it too, and everything after
// would be dropped without a word (review: a CA bundle lost its later CAs, a CRL file its later
// CRLs, so a revoked peer was admitted): the caller fails then, with the queued errors.
bool stopped_at_end_of_pem() {
  const unsigned long e = ERR_peek_last_error();
  if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
    return false;
  ERR_clear_error();
  return true;
}

}  // namespace

std::string read_secret_file(const config::file_ref& f) {  // pkcs11.cpp's
  return read_file(f, "PIN file", 16 << 20, "key_pin_file (or the key's pin-source)");
}

cert_chain load_cert_chain(const config::file_ref& f) {
  std::string data = read_file(f, "certificate");
  cert_chain chain;
  auto bio = memory_bio(data);
  if (looks_like_pem(data)) {
    while (X509* c = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
      chain.emplace_back(c);
    if (!stopped_at_end_of_pem())
      fail(f, "damaged PEM block after " + std::to_string(chain.size()) +
                  " certificate(s): " + drain_errors());
  } else if (X509* c = d2i_X509_bio(bio.get(), nullptr)) {
    chain.emplace_back(c);
  }
  if (chain.empty()) {
    std::string why = drain_errors();
    fail(f, "no certificate found (expected PEM '-----BEGIN CERTIFICATE-----' or DER)" +
                (why.empty() ? std::string() : ": " + why));
  }
  return chain;
}

evp_pkey_ptr load_private_key(const config::file_ref& f, const std::string& password) {
  std::string data = read_file(f, "private key");
  cleanse_on_exit wipe{data};
  auto bio = memory_bio(data);
  password_source src{&password};
  EVP_PKEY* key = nullptr;
  if (looks_like_pem(data)) {
    key = PEM_read_bio_PrivateKey(bio.get(), nullptr, password_cb, &src);
  } else {
    key = d2i_PrivateKey_bio(bio.get(), nullptr);
    if (!key) {
      // DER may be an EncryptedPrivateKeyInfo (PKCS#8), which d2i_PrivateKey_bio does not
      // decrypt (review: "PEM or DER, possibly encrypted" held for PEM only).
      ERR_clear_error();
      BIO_reset(bio.get());
      key = d2i_PKCS8PrivateKey_bio(bio.get(), nullptr, password_cb, &src);
    }
  }
  if (!key) {
    std::string why = drain_errors();
    if (src.asked && password.empty())
      fail(f, "private key is encrypted: set key_password_file (or pkcs12_password_file)");
    if (src.asked) fail(f, "cannot decrypt private key: wrong password? (" + why + ")");
    fail(f, "no private key found (expected PEM or DER; PKCS#8 or traditional)" +
                (why.empty() ? std::string() : ": " + why));
  }
  return evp_pkey_ptr(key);
}

key_pair load_key_pair(const config::key_source& tls) {
  key_pair kp;
  if (!tls.pkcs12.empty()) {
    std::string data = read_file(tls.pkcs12, "PKCS#12 bundle");
    cleanse_on_exit wipe_data{data};
    // Initialised in place (no temporary left holding a short password), wiped on every exit.
    std::string password = tls.pkcs12_password_file.empty()
                               ? std::string()
                               : read_file(tls.pkcs12_password_file, "password file", 16 << 20,
                                           "pkcs12_password_file");
    cleanse_on_exit wipe_password{password};
    auto bio = memory_bio(data);
    std::unique_ptr<PKCS12, openssl_deleter<PKCS12_free>> p12(d2i_PKCS12_bio(bio.get(), nullptr));
    if (!p12) fail(tls.pkcs12, "not a PKCS#12 bundle: " + drain_errors());
    EVP_PKEY* key = nullptr;
    X509* leaf = nullptr;
    STACK_OF(X509)* extra = nullptr;
    if (PKCS12_parse(p12.get(), password.c_str(), &key, &leaf, &extra) != 1) {
      std::string why = drain_errors();
      fail(tls.pkcs12,
           (password.empty() ? "cannot open PKCS#12 bundle (is pkcs12_password_file set?): "
                             : "cannot open PKCS#12 bundle (wrong password?): ") +
               why);
    }
    kp.key.reset(key);
    if (!leaf) fail(tls.pkcs12, "PKCS#12 bundle holds no certificate");
    kp.chain.emplace_back(leaf);
    for (int i = 0; extra && i < sk_X509_num(extra); ++i)
      kp.chain.emplace_back(sk_X509_value(extra, i));
    sk_X509_free(extra);  // the certificates now belong to kp.chain
    if (!kp.key) fail(tls.pkcs12, "PKCS#12 bundle holds no private key");
    if (X509_check_private_key(kp.chain.front().get(), kp.key.get()) != 1) {
      drain_errors();
      fail(tls.pkcs12, "the private key in the PKCS#12 bundle does not match its certificate");
    }
    return kp;
  }
  kp.chain = load_cert_chain(tls.cert);
  if (config::is_pkcs11_uri(tls.key.path)) {
    kp.key = pkcs11::load_private_key(tls.key, tls.key_pin_file);
  } else {
    std::string password =
        tls.key_password_file.empty()
            ? std::string()
            : read_file(tls.key_password_file, "password file", 16 << 20, "key_password_file");
    cleanse_on_exit wipe_password{password};
    kp.key = load_private_key(tls.key, password);
  }
  if (X509_check_private_key(kp.chain.front().get(), kp.key.get()) != 1) {
    drain_errors();
    // The key may be right and the file's order wrong (an intermediate first): say so, rather
    // than send the operator after the key pair (review).
    for (std::size_t i = 1; i < kp.chain.size(); ++i)
      if (X509_check_private_key(kp.chain[i].get(), kp.key.get()) == 1)
        throw config::config_error(
            {{tls.cert.where,
              shown(tls.cert.path) + ": chain is out of order: the private key in " +
                  shown(tls.key.path) + " belongs to certificate " + std::to_string(i + 1) + " (" +
                  subject_of(kp.chain[i].get()) + "), not to the first (" +
                  subject_of(kp.chain.front().get()) + ") (put the leaf first, then each issuer)",
              false}});
    drain_errors();
    throw config::config_error(
        {{tls.key.where,
          shown(tls.key.path) + ": private key does not match the certificate in " +
              shown(tls.cert.path) + " (" + subject_of(kp.chain.front().get()) + ")",
          false}});
  }
  return kp;
}

cert_chain load_ca_bundles(const std::vector<config::file_ref>& files) {
  cert_chain all;
  for (const auto& f : files) {
    auto chain = load_cert_chain(f);
    for (auto& c : chain)
      all.push_back(std::move(c));
  }
  return all;
}

namespace {

std::vector<x509_crl_ptr> decode_crls(const config::file_ref& f, const std::string& data) {
  std::vector<x509_crl_ptr> out;
  auto bio = memory_bio(data);
  if (looks_like_pem(data)) {
    while (X509_CRL* c = PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr))
      out.emplace_back(c);
    if (!stopped_at_end_of_pem())
      fail(f,
           "damaged PEM block after " + std::to_string(out.size()) + " CRL(s): " + drain_errors());
  } else if (X509_CRL* c = d2i_X509_CRL_bio(bio.get(), nullptr)) {
    out.emplace_back(c);
  }
  if (out.empty()) {
    // A PEM file of other blocks (a certificate) leaves OpenSSL no error to add (review).
    const std::string why = drain_errors();
    fail(f, "no CRL found (expected PEM '-----BEGIN X509 CRL-----' or DER)" +
                (why.empty() ? std::string() : ": " + why));
  }
  for (const auto& crl : out)
    sort_revoked(crl.get());
  return out;
}

}  // namespace

std::vector<x509_crl_ptr> load_crls(const config::file_ref& f) {
  return decode_crls(f, read_file(f, "CRL", max_crl_file_bytes));
}

std::shared_ptr<const crl_file> load_crl_file(const config::file_ref& f) {
  struct decoded {
    std::string sha256;
    std::weak_ptr<const crl_file> file;
  };
  static std::mutex mu;
  static std::map<std::string, decoded> by_path;
  const std::string data = read_file(f, "CRL", max_crl_file_bytes);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    drain_errors();
    auto own = std::make_shared<crl_file>();  // no digest to know it by: not shared
    own->crls = decode_crls(f, data);
    return own;
  }
  const std::string sha256(reinterpret_cast<const char*>(md), len);
  {
    std::lock_guard lock(mu);
    std::erase_if(by_path, [](const auto& e) { return e.second.file.expired(); });
    if (auto it = by_path.find(f.path); it != by_path.end() && it->second.sha256 == sha256)
      if (auto shared = it->second.file.lock()) return shared;
  }
  // Decoded outside the lock: another file's decode need not wait for this one.
  auto fresh = std::make_shared<crl_file>();
  fresh->crls = decode_crls(f, data);
  std::lock_guard lock(mu);
  by_path[f.path] = {sha256, fresh};
  return fresh;
}

std::string name_of(const X509_NAME* name) {
  bio_ptr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* p = nullptr;
  long n = BIO_get_mem_data(bio.get(), &p);
  return std::string(p, static_cast<std::size_t>(n));
}

std::string subject_of(const X509* cert) {
  return name_of(X509_get_subject_name(cert));
}

std::string issuer_of(const X509* cert) {
  return name_of(X509_get_issuer_name(cert));
}

std::string serial_of(const X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  std::unique_ptr<BIGNUM, openssl_deleter<BN_free>> bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return {};
  char* hex = BN_bn2hex(bn.get());
  std::string out = hex ? hex : "";
  OPENSSL_free(hex);
  return out;
}

std::time_t not_after_of(const X509* cert) {
  return asn1_time_to_unix(X509_get0_notAfter(cert));
}
std::time_t not_before_of(const X509* cert) {
  return asn1_time_to_unix(X509_get0_notBefore(cert));
}

std::string unusable_anchor_problem(const X509* ca, bool judges_clients) {
  X509* x = const_cast<X509*>(ca);  // as in strict_ca_problem: for the extension cache
  const std::uint32_t flags = X509_get_extension_flags(x);
  if (flags & EXFLAG_INVALID) return "one of its extensions does not decode";
  if (EVP_PKEY* key = X509_get0_pubkey(x); key && EVP_PKEY_get_security_bits(key) < 112)
    return "its key is too weak (" + std::to_string(EVP_PKEY_get_security_bits(key)) +
           " bits of security; security level 2 asks for 112: RSA 2048, EC P-256)";
  const std::uint32_t needed = judges_clients ? XKU_SSL_CLIENT : XKU_SSL_SERVER;
  if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(x) & needed))
    return std::string("its extended key usage does not include ") +
           (judges_clients ? "clientAuth" : "serverAuth");
  return "";
}

std::string strict_ca_problem(const X509* ca) {
  // X509_get_extension_flags caches the extensions; it takes a non-const pointer for that only.
  X509* x = const_cast<X509*>(ca);
  const std::uint32_t flags = X509_get_extension_flags(x);
  // A certificate with names is an end entity pinned as its own anchor (`openssl req -x509`
  // marks even those CA:TRUE): the peer presents it, no chain goes through it, strict checks
  // do not apply. A CA certificate names no host, address or SPIFFE ID.
  if (X509_get_ext_by_NID(x, NID_subject_alt_name, -1) >= 0) return "";
  if (flags & EXFLAG_V1) return "it is a version 1 certificate, without extensions";
  if (!(flags & EXFLAG_CA)) return "";
  if (!(flags & EXFLAG_KUSAGE)) return "it has no keyUsage extension";
  if (!(X509_get_key_usage(x) & KU_KEY_CERT_SIGN))
    return "its keyUsage does not include keyCertSign";
  if (!(flags & EXFLAG_BCONS_CRITICAL)) return "its basicConstraints is not marked critical";
  if (!X509_get0_subject_key_id(x)) return "it has no subjectKeyIdentifier extension";
  return "";
}

}  // namespace mtlsd::tls
