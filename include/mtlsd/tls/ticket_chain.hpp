#pragma once
// A resumed session has its peer's leaf but not the intermediates it sent: OpenSSL writes only
// the leaf into a ticket. Re-judging an open connection after a reload (proxy/session_control)
// needs the whole chain, or every resumed client of an intermediate CA would look refused by
// the old trust too and be kept. So the intermediates travel in the ticket's application data,
// encrypted with it (at most max_ticket_chain_bytes; a longer chain is left out).
#include <openssl/ssl.h>

#include <cstddef>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

inline constexpr std::size_t max_ticket_chain_bytes = 8 * 1024;

// Server contexts with tickets: each ticket carries the intermediates the client sent, and a
// ticket whose client certificate is past its validity resumes nothing (a full handshake
// follows, which refuses the certificate with its alert).
void keep_peer_chain_in_tickets(SSL_CTX* ctx);

// Whether `cert` is within its validity period now (notBefore < now < notAfter).
bool valid_now(const X509* cert);

// The intermediates the ticket `ssl` resumed from carries (empty for a full handshake).
cert_chain ticket_intermediates(const SSL* ssl);

}  // namespace mtlsd::tls
