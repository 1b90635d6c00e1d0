#include "mtlsd/tls/ticket_chain.hpp"

#include <string>

namespace mtlsd::tls {
namespace {

// Called as a ticket is made: after a full handshake the peer's chain (without its leaf, on the
// server side) is at hand; after a resumption it is not, and the session keeps the data its own
// ticket brought.
int store_chain(SSL* ssl, void*) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
  if (!chain || sk_X509_num(chain) == 0 || SSL_session_reused(ssl)) return 1;
  std::string der;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    unsigned char* out = nullptr;
    const int n = i2d_X509(sk_X509_value(chain, i), &out);
    if (n > 0) der.append(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    OPENSSL_free(out);
  }
  if (der.size() > max_ticket_chain_bytes) der.clear();
  SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), der.data(), der.size());
  return 1;
}

// OpenSSL's own answer for each outcome of decrypting a ticket (SSL_CTX_set_session_ticket_cb),
// but for a ticket whose client certificate is no longer valid: the session it holds is ignored,
// so the client makes a full handshake, and verification refuses the certificate with its
// alert (`expired`). OpenSSL itself resumes such a session until the ticket's own lifetime ends,
// and a resumption issues a new ticket with a new lifetime: without this, a certificate that
// expired would keep resuming for as long as the client kept coming back (Go's crypto/tls
// refuses the same).
SSL_TICKET_RETURN use_unless_expired(SSL*, SSL_SESSION* session, const unsigned char*, size_t,
                                     SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
      if (X509* peer = session ? SSL_SESSION_get0_peer(session) : nullptr; peer && !valid_now(peer))
        return SSL_TICKET_RETURN_IGNORE_RENEW;
      return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
      return SSL_TICKET_RETURN_ABORT;
  }
}

}  // namespace

bool valid_now(const X509* cert) {
  return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
         X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

void keep_peer_chain_in_tickets(SSL_CTX* ctx) {
  SSL_CTX_set_session_ticket_cb(ctx, store_chain, use_unless_expired, nullptr);
}

cert_chain ticket_intermediates(const SSL* ssl) {
  cert_chain out;
  SSL_SESSION* session = SSL_get0_session(ssl);
  void* data = nullptr;
  size_t len = 0;
  if (!session || !SSL_session_reused(ssl) ||
      SSL_SESSION_get0_ticket_appdata(session, &data, &len) != 1 || !data)
    return out;
  const auto* p = static_cast<const unsigned char*>(data);
  const auto* end = p + len;
  while (p < end) {
    X509* c = d2i_X509(nullptr, &p, static_cast<long>(end - p));
    if (!c) break;
    out.emplace_back(c);
  }
  drain_errors();
  return out;
}

}  // namespace mtlsd::tls
