#pragma once
// Loading certificates, keys, PKCS#12 bundles, CA bundles and CRLs from files. Every failure is a
// config_error naming the file and the line of the configuration that named it.
#include <cstddef>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

// Our own identity: leaf first, then intermediates, and the matching private key.
struct key_pair {
  cert_chain chain;
  evp_pkey_ptr key;
};

// Reads a small secret file (a password); trailing newlines are not part of the secret.
std::string read_secret_file(const config::file_ref& f);

// PEM, leaf first. Throws config_error when the file is missing, empty or not PEM.
cert_chain load_cert_chain(const config::file_ref& f);

// PEM (PKCS#8 or traditional, encrypted or not) or DER. `password` may be empty.
evp_pkey_ptr load_private_key(const config::file_ref& f, const std::string& password);

// cert+key or pkcs12, per the tls options; verifies the key matches the leaf.
key_pair load_key_pair(const config::key_source& k);  // `tls:` or one tls.certificates entry

// All certificates in one or more PEM bundles.
cert_chain load_ca_bundles(const std::vector<config::file_ref>& files);

// The most read of one CRL file, as of one CRL download (revocation::service_limits::crl_bytes,
// which a static_assert in revocation/service.cpp keeps equal).
inline constexpr std::size_t max_crl_file_bytes = 10 * 1024 * 1024;

// PEM or DER CRLs (a file may hold several PEM CRLs).
std::vector<x509_crl_ptr> load_crls(const config::file_ref& f);

// A CRL file as decoded, shared: every listener naming the file shares one decode, and a reload
// reuses it while the file's bytes stay the same (SHA-256). A 300,000-entry CRL takes ~0.1 s
// and ~60 MB to decode; four listeners naming one decoded it four times, at start and on every
// reload, with the admin server waiting on the control thread (review).
struct crl_file {
  std::vector<x509_crl_ptr> crls;  // as load_crls decodes them; never changed once made
};
// The decode of `f`'s bytes: made now, or the one a listener of this build or of the runtime
// serving holds (it lives while one holds it). Throws as load_crls does. Thread-safe.
std::shared_ptr<const crl_file> load_crl_file(const config::file_ref& f);

// Why strict path validation (apply_validation_policy, verify.hpp: X509_V_FLAG_X509_STRICT)
// refuses every chain that `ca`, a trusted CA certificate, issues; "" when it does not, or when
// `ca` looks like an end entity pinned as its own anchor (no CA:TRUE, or subjectAltNames: no
// chain goes through it). RFC 5280 asks a CA certificate for version 3, a critical
// basicConstraints, a keyUsage with keyCertSign and a subjectKeyIdentifier; `openssl req -x509`
// makes one without keyUsage unless told (-addext).
std::string strict_ca_problem(const X509* ca);

// Why no peer at all is admitted through `ca`, a trusted certificate, in handshakes judging
// clients (`judges_clients`) or servers: an extension that does not decode, a key below the
// handshakes' security level, or an extended key usage without the side's purpose (OpenSSL
// applies a trust anchor's own EKU); "" when none of these holds (review: `check` said valid).
std::string unusable_anchor_problem(const X509* ca, bool judges_clients);

// For messages and metrics. Names are RFC 2253 ("CN=x,O=y").
std::string name_of(const X509_NAME* name);
std::string subject_of(const X509* cert);
std::string issuer_of(const X509* cert);
std::string serial_of(const X509* cert);  // upper-case hex, like `openssl x509 -serial`
std::time_t not_after_of(const X509* cert);
std::time_t not_before_of(const X509* cert);

}  // namespace mtlsd::tls
