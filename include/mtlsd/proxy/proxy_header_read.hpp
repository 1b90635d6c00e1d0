#pragma once
// Reading an inbound PROXY header off a socket without consuming a byte of what follows it
// (the TLS ClientHello): exact reads for v2 (its length is in its first 16 bytes), and for v1
// a peek for the CRLF, taking only what is known to be header. No deadline of its own: the
// session's watchdog bounds it (timeouts.handshake) by cancelling it.
#include <boost/asio/awaitable.hpp>
#include <utility>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/proxy_header.hpp"

namespace mtlsd::proxy {

// The header (complete, or invalid with the reason, including the peer closing), or the read
// error that stopped it (operation_aborted when the watchdog cancelled it).
asio::awaitable<std::pair<error_code, inbound_proxy_header>> read_proxy_header(stream_socket& sock);

}  // namespace mtlsd::proxy
