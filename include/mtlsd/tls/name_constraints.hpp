#pragma once
#include <openssl/x509_vfy.h>

#include <string>
#include <string_view>

namespace mtlsd::tls {

// OpenSSL 3.0's name-constraint check of the chain `ctx` verified, run early: X509_V_OK, or the
// error OpenSSL would raise for it, with `depth` set to the certificate at fault.
//
// Why: OpenSSL checks name constraints only after the verify callback's last call (depth 0, the
// chain otherwise valid), where mtlsd judges the allow list. A peer the allow list refuses was
// logged as not_authorized although its CA had no right to issue it at all (review): the real
// reason is name_constraints. The same public functions OpenSSL uses (NAME_CONSTRAINTS_check and
// _check_CN) on the same certificates; OpenSSL's own check still runs afterwards. One check more
// than OpenSSL's: in client mode the host name asked for must be within every CA's constraints
// too, since a wildcard certificate covers names its own SANs do not spell out. And one more:
// below a CA with URI constraints (permitted or excluded), every URI SAN's host must be what
// OpenSSL compares (uri_host_problem); if not, X509_V_ERR_UNSUPPORTED_NAME_SYNTAX, with `why`
// naming the URI and the CA (otherwise `why` is left empty).
int name_constraint_violation(X509_STORE_CTX* ctx, int& depth, std::string& why);

// Why OpenSSL 3.0's URI name-constraint check would not judge `uri`'s real host, or "" when it
// would. OpenSSL takes the host as what follows "scheme://" up to the next ':' (anywhere), else
// the next '/': `spiffe://example.org:1@evil.org/x` passed `permitted URI:example.org`, though
// its host (RFC 3986) is evil.org. Strict, on purpose: a valid scheme, then an authority (up to
// '/', '?', '#' or the end) without userinfo ('@'), a host of RFC 3986 reg-name characters (no
// IP literal '[...]', no percent-encoding), an optional port of digits, and OpenSSL's host the
// same as that one (no ':' after a port-less authority, no '?' or '#' right after the host).
std::string uri_host_problem(std::string_view uri);

}  // namespace mtlsd::tls
