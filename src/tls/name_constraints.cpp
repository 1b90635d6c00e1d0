// The name-constraint check of a verified chain, as OpenSSL 3.0's check_name_constraints
// (crypto/x509/x509_vfy.c) does it, for the verify callback (name_constraints.hpp says why).
#include "mtlsd/tls/name_constraints.hpp"

#include <openssl/x509v3.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace mtlsd::tls {
namespace {

struct nc_free {
  void operator()(NAME_CONSTRAINTS* nc) const { NAME_CONSTRAINTS_free(nc); }
};
using nc_ptr = std::unique_ptr<NAME_CONSTRAINTS, nc_free>;

struct names_free {
  void operator()(GENERAL_NAMES* g) const { GENERAL_NAMES_free(g); }
};

bool has_dns_san(X509* x) {
  std::unique_ptr<GENERAL_NAMES, names_free> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i)
    if (sk_GENERAL_NAME_value(names.get(), i)->type == GEN_DNS) return true;
  return false;
}

struct x509_free {
  void operator()(X509* x) const { X509_free(x); }
};

// A certificate naming only `host` (a DNS SAN), for NAME_CONSTRAINTS_check; null if OpenSSL
// cannot make one.
std::unique_ptr<X509, x509_free> naming_only(const char* host) {
  std::unique_ptr<X509, x509_free> x(X509_new());
  std::unique_ptr<GENERAL_NAMES, names_free> names(GENERAL_NAMES_new());
  GENERAL_NAME* dns = GENERAL_NAME_new();
  ASN1_IA5STRING* value = ASN1_IA5STRING_new();
  if (!x || !names || !dns || !value || ASN1_STRING_set(value, host, -1) != 1) {
    GENERAL_NAME_free(dns);
    ASN1_IA5STRING_free(value);
    return nullptr;
  }
  GENERAL_NAME_set0_value(dns, GEN_DNS, value);
  if (sk_GENERAL_NAME_push(names.get(), dns) <= 0) {
    GENERAL_NAME_free(dns);
    return nullptr;
  }
  if (X509_add1_ext_i2d(x.get(), NID_subject_alt_name, names.get(), 0, 0) != 1) return nullptr;
  X509_get_extension_flags(x.get());  // decodes the SAN, which NAME_CONSTRAINTS_check reads
  return x;
}

// Client mode: the host name mtlsd asked for, against each CA's constraints. The certificate's
// own names passed them, but a wildcard among them covers names a CA may be forbidden:
// `excluded DNS:secret.example.org` above `*.example.org` let that certificate stand for the
// excluded host (review). BoringSSL's verifier checks what a wildcard covers the same way.
int host_violation(X509_VERIFY_PARAM* param, const std::vector<nc_ptr>& constraints) {
  const char* host = X509_VERIFY_PARAM_get0_host(param, 0);
  if (!host || !*host) return X509_V_OK;
  std::unique_ptr<X509, x509_free> named;
  for (const nc_ptr& nc : constraints) {
    if (!nc) continue;
    if (!named && !(named = naming_only(host))) return X509_V_ERR_OUT_OF_MEM;
    if (const int rv = NAME_CONSTRAINTS_check(named.get(), nc.get()); rv != X509_V_OK) return rv;
  }
  return X509_V_OK;
}

}  // namespace

int name_constraint_violation(X509_STORE_CTX* ctx, int& depth) {
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(ctx);
  const int n = chain ? sk_X509_num(chain) : 0;
  const unsigned int hostflags = X509_VERIFY_PARAM_get_hostflags(X509_STORE_CTX_get0_param(ctx));
  // Each CA's constraints decoded once per handshake, not once per certificate below it; most
  // chains have none, and then nothing is decoded at all.
  std::vector<nc_ptr> constraints(static_cast<std::size_t>(n));
  for (int j = 1; j < n; ++j)
    constraints[static_cast<std::size_t>(j)].reset(static_cast<NAME_CONSTRAINTS*>(
        X509_get_ext_d2i(sk_X509_value(chain, j), NID_name_constraints, nullptr, nullptr)));
  for (int i = n - 1; i >= 0; --i) {
    X509* x = sk_X509_value(chain, i);
    const std::uint32_t flags = X509_get_extension_flags(x);
    // As OpenSSL: self-issued CA certificates are not subject to the constraints above them.
    // A proxy certificate has rules of its own there: left to OpenSSL's check.
    if ((i != 0 && (flags & EXFLAG_SI)) || (flags & EXFLAG_PROXY)) continue;
    for (int j = n - 1; j > i; --j) {
      const nc_ptr& nc = constraints[static_cast<std::size_t>(j)];
      if (!nc) continue;
      int rv = NAME_CONSTRAINTS_check(x, nc.get());
      // The end entity's common name too when it is used as a host name: when no DNS SAN is
      // there, unless the verify parameters say never (OpenSSL's rule).
      if (rv == X509_V_OK && i == 0 && !(hostflags & X509_CHECK_FLAG_NEVER_CHECK_SUBJECT) &&
          ((hostflags & X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT) || !has_dns_san(x)))
        rv = NAME_CONSTRAINTS_check_CN(x, nc.get());
      if (rv != X509_V_OK) {
        depth = i;
        return rv;
      }
    }
  }
  depth = 0;
  return host_violation(X509_STORE_CTX_get0_param(ctx), constraints);
}

}  // namespace mtlsd::tls
