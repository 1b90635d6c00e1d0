// Sockets that hold a place in a server without finishing a TLS handshake (mtlsd_loadgen modes
// pending and flood): silent ones, and ones that sent half a ClientHello.
#pragma once

#include <netinet/in.h>
#include <openssl/ssl.h>

#include <string>

namespace loadgen {

// The bytes of the ClientHello a client made from `ctx` sends first (to send a part of it).
// Empty when OpenSSL cannot make one.
std::string client_hello_bytes(SSL_CTX* ctx, const std::string& server_name);

// Connects to addr, sends `prefix` (may be empty) and nothing more; -1 on failure.
int open_pending(const sockaddr_in& addr, const std::string& prefix);

// Whether the server still keeps fd open (it has neither closed nor reset it, nor sent a byte).
bool still_open(int fd);

// Whether the server still keeps the connection fd open, without taking a byte from it (an mTLS
// connection held idle): a byte waiting is looked past, to the FIN or reset behind it (a server
// closing an idle TLS connection may send its close_notify first).
bool still_open_peek(int fd);

}  // namespace loadgen
