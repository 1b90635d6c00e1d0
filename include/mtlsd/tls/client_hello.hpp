#pragma once
// What a server learns from a ClientHello before it answers: for certificate selection and for
// the debug line of the handshake's first phase. Valid only inside a client hello callback.
#include <openssl/ssl.h>

#include <string>

namespace mtlsd::tls {

// The host_name of the server_name extension (RFC 6066 §3), lower-cased, anything a host name
// cannot hold shown as '?'; "" when absent or malformed.
std::string client_sni(SSL* ssl);

// The ALPN protocols offered, comma-separated ("h2,http/1.1"); "" when none.
std::string client_alpn_offer(SSL* ssl);

// At log.level debug: one "ClientHello received" line (conn_id, sni, alpn_offered). Nothing,
// and nothing computed, above debug.
void debug_client_hello(SSL* ssl);

// Installs a client hello callback that only does debug_client_hello, for server contexts
// without a certificate selector (which calls it itself).
void observe_client_hello(SSL_CTX* ctx);

}  // namespace mtlsd::tls
