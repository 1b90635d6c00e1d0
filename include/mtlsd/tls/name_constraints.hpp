#pragma once
#include <openssl/x509_vfy.h>

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
// too, since a wildcard certificate covers names its own SANs do not spell out.
int name_constraint_violation(X509_STORE_CTX* ctx, int& depth);

}  // namespace mtlsd::tls
