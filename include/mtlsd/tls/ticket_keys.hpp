#pragma once
// TLS session-ticket keys for every server context of the process. Workers are threads of one
// process and a reload builds new SSL_CTXs, so one process-wide ring makes a ticket that any
// worker issued resume on any other, before and after a reload. Keys rotate on a schedule: a
// key issues tickets for one period and still decrypts them for one more (then the ticket is
// renewed under the current key); older tickets mean a full handshake.
//
// A reload may change what a session's verification rested on (CA files, CRLs, client_auth):
// bind_session_context() makes the session id context a digest of those, so OpenSSL refuses to
// resume a session made under other trust (a full handshake, verified anew) — the allow list,
// the validity and stale CRLs are judged again on every resumption anyway
// (session_judge.cpp, judge_verified_peer).
#include <openssl/ssl.h>

#include <chrono>
#include <string>

namespace mtlsd::tls {

// How long one key issues tickets (it decrypts for twice as long).
inline constexpr std::chrono::seconds ticket_key_period{3600};

// Makes `ctx` encrypt and decrypt its tickets with the process-wide ring.
void use_shared_ticket_keys(SSL_CTX* ctx);

// Sets `ctx`'s session id context to a digest of `listener_name` and of the verification
// inputs already installed in `ctx`: trust store contents (anchors and CRLs), verify mode,
// depth and flags, and `binding` (verifier::trust_binding: which trust domain's bundle holds
// each anchor, which the store's contents do not say).
void bind_session_context(SSL_CTX* ctx, const std::string& listener_name,
                          const std::string& binding = {});

}  // namespace mtlsd::tls
