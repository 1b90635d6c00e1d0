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

// OpenSSL's own answer for each outcome of decrypting a ticket (SSL_CTX_set_session_ticket_cb):
// setting the callback pair only to carry the data must not change which tickets resume.
SSL_TICKET_RETURN use_as_openssl_would(SSL*, SSL_SESSION*, const unsigned char*, size_t,
                                       SSL_TICKET_STATUS status, void*) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
      return SSL_TICKET_RETURN_USE;
    case SSL_TICKET_SUCCESS_RENEW:
      return SSL_TICKET_RETURN_USE_RENEW;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
      return SSL_TICKET_RETURN_ABORT;
  }
}

}  // namespace

void keep_peer_chain_in_tickets(SSL_CTX* ctx) {
  SSL_CTX_set_session_ticket_cb(ctx, store_chain, use_as_openssl_would, nullptr);
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
