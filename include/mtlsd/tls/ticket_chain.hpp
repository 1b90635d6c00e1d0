#pragma once
// What a server-side ticket carries beside the session OpenSSL writes into it. A resumption
// skips verification, so the facts of the full handshake it stands for travel in the ticket's
// application data, encrypted with it:
// - the earliest notAfter of the verified chain: OpenSSL writes only the leaf into a ticket, and
//   a ticket must resume nothing once any certificate of that chain expired (an intermediate
//   or the anchor too, not only the leaf: review);
// - the depths whose CRL file was missing or stale (admitted under on_unavailable: allow, or
//   left to OCSP or distribution points): a resumption is judged with them as a full handshake
//   would be, not as if the files had answered (review);
// - the intermediates the peer sent (at most max_ticket_chain_bytes; a longer chain is left
//   out): re-judging an open connection after a reload (proxy/session_control) needs the whole
//   chain, or every resumed client of an intermediate CA would look refused by the old trust.
// Server contexts keep no session cache (TLS 1.2 session IDs): only tickets resume, so every
// resumption brings these facts (Go's crypto/tls server, hence ghostunnel, does the same).
#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <optional>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls {

inline constexpr std::size_t max_ticket_chain_bytes = 8 * 1024;

// Server contexts with tickets: each ticket carries the facts above, and one whose chain has a
// certificate past its validity, or that carries no facts, resumes nothing (a full handshake
// follows, which judges the certificates with their alerts).
void keep_peer_chain_in_tickets(SSL_CTX* ctx);

// Whether `cert` is within its validity period now (notBefore < now < notAfter).
bool valid_now(const X509* cert);

struct ticket_facts {
  std::time_t chain_not_after = 0;        // the earliest notAfter of the verified chain
  std::uint32_t crl_unusable_depths = 0;  // bit d: depth d had no usable CRL file (31: deeper)
  cert_chain intermediates;               // what the peer sent beside its leaf
};

// The facts the ticket `ssl` resumed from carries; nullopt for a full handshake (or a ticket
// without them, which keep_peer_chain_in_tickets does not let resume). The intermediates are
// decoded only when asked for.
std::optional<ticket_facts> resumed_ticket_facts(const SSL* ssl, bool with_intermediates = true);

// The intermediates the ticket `ssl` resumed from carries (empty for a full handshake).
cert_chain ticket_intermediates(const SSL* ssl);

// The earliest notAfter of `chain` (std::numeric_limits<std::time_t>::max() when empty).
std::time_t earliest_not_after(STACK_OF(X509) * chain);

}  // namespace mtlsd::tls
