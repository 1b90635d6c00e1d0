#pragma once
// What a server learns from a ClientHello before it answers: for certificate selection and for
// the debug line of the handshake's first phase. Valid only inside a client hello callback.
#include <openssl/ssl.h>

#include <string>

namespace mtlsd::tls {

// A server name as allow rules judge it: lower-cased, anything a host name cannot hold shown as
// '?', without final dots (the absolute form names the same host).
std::string normalize_server_name(std::string name);

// The host_name of the server_name extension (RFC 6066 §3), normalize_server_name'd; "" when
// absent or malformed.
std::string client_sni(SSL* ssl);

// The ALPN protocols offered, comma-separated ("h2,http/1.1"); "" when none.
std::string client_alpn_offer(SSL* ssl);

// At log.level debug: one "ClientHello received" line (conn_id, sni, alpn_offered). Nothing,
// and nothing computed, above debug.
void debug_client_hello(SSL* ssl);

// Keeps `sni` (client_sni's) in the verify_outcome bound to `ssl`, if any: the name allow rules
// judge. OpenSSL's SSL_get_servername is no substitute: it keeps the name as sent (a final dot
// and upper case included, which the rules' matching would not see as the same name), and has
// none at all on a resumed TLS 1.2 session, whose stored name OpenSSL fills in only for servers
// that set a servername callback.
void record_client_sni(SSL* ssl, std::string sni);

// Installs a client hello callback that only does debug_client_hello and record_client_sni,
// for server contexts without a certificate selector (which calls both itself).
void observe_client_hello(SSL_CTX* ctx);

}  // namespace mtlsd::tls
