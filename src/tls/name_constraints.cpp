// The name-constraint check of a verified chain, as OpenSSL 3.0's check_name_constraints
// (crypto/x509/x509_vfy.c) does it, for the verify callback (name_constraints.hpp says why).
#include "mtlsd/tls/name_constraints.hpp"

#include <openssl/x509v3.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "mtlsd/tls/credentials.hpp"

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

bool has_uri_subtree(const NAME_CONSTRAINTS* nc) {
  for (const STACK_OF(GENERAL_SUBTREE) * trees : {nc->permittedSubtrees, nc->excludedSubtrees})
    for (int i = 0; trees && i < sk_GENERAL_SUBTREE_num(trees); ++i)
      if (sk_GENERAL_SUBTREE_value(trees, i)->base->type == GEN_URI) return true;
  return false;
}

// `s` for a message: bytes outside printable ASCII as \xNN (a URI SAN is any IA5String).
std::string printable(std::string_view s) {
  std::string out;
  for (const char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(c));
      out += hex;
    }
  }
  return out;
}

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
// RFC 3986 reg-name without pct-encoded: unreserved and sub-delims.
bool is_reg_name_char(char c) {
  return is_alpha(c) || is_digit(c) ||
         std::string_view("-._~!$&'()*+,;=").find(c) != std::string_view::npos;
}

// uri_host_problem for the URI SANs of `x`, under `ca`'s URI constraints: X509_V_OK, or
// X509_V_ERR_UNSUPPORTED_NAME_SYNTAX with `why`.
int uri_sans_violation(X509* x, X509* ca, std::string& why) {
  std::unique_ptr<GENERAL_NAMES, names_free> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type != GEN_URI) continue;
    const std::string_view uri(
        reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier)),
        static_cast<std::size_t>(ASN1_STRING_length(gn->d.uniformResourceIdentifier)));
    if (std::string problem = uri_host_problem(uri); !problem.empty()) {
      why = "URI SAN '" + printable(uri) + "' " + problem + ": the URI name constraints of " +
            subject_of(ca) + " would not judge its real host";
      return X509_V_ERR_UNSUPPORTED_NAME_SYNTAX;
    }
  }
  return X509_V_OK;
}

}  // namespace

std::string uri_host_problem(std::string_view uri) {
  const auto colon = uri.find(':');
  if (colon == std::string_view::npos || uri.substr(colon, 3) != "://") return "has no scheme://";
  if (colon == 0 || !is_alpha(uri[0])) return "has no valid scheme";
  for (const char c : uri.substr(0, colon))
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.')
      return "has no valid scheme";
  const std::string_view rest = uri.substr(colon + 3);
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) return "has a userinfo ('@')";
  if (!authority.empty() && authority.front() == '[')
    return "has an IP literal ('[...]') for a host";
  const auto port_at = authority.find(':');
  const std::string_view host = authority.substr(0, port_at);
  if (host.empty()) return "has no host";
  // The same DNS host as without the dot, which OpenSSL's comparison would not see as such.
  if (host.back() == '.') return "has a host ending in '.'";
  for (const char c : host) {
    if (c == '%') return "has a percent-encoded host";
    if (!is_reg_name_char(c)) return "has a host with '" + printable({&c, 1}) + "' in it";
  }
  if (port_at != std::string_view::npos)
    for (const char c : authority.substr(port_at + 1))
      if (!is_digit(c)) return "has a port that is not a number";
  // OpenSSL's nc_uri: up to the first ':' of the rest, else its first '/'.
  auto compared_end = rest.find(':');
  if (compared_end == std::string_view::npos) compared_end = rest.find('/');
  const std::string_view compared = rest.substr(0, compared_end);
  if (compared != host)
    return "has the host '" + printable(host) + "', but OpenSSL's check compares '" +
           printable(compared) + "'";
  return {};
}

int name_constraint_violation(X509_STORE_CTX* ctx, int& depth, std::string& why) {
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
      if (rv == X509_V_OK && has_uri_subtree(nc.get()))
        rv = uri_sans_violation(x, sk_X509_value(chain, j), why);
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
