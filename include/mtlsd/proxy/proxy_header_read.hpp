#pragma once
// Reading an inbound PROXY header off a socket without consuming a byte of what follows it
// (the TLS ClientHello): for v2, what has arrived, never past the length its first 16 bytes
// give, held in a buffer that grows with the bytes that came (not with the length announced);
// for v1, a peek for the line's first LF, taking only what is known to be header. Judged after
// every read, so the verdict does not depend on how the bytes were split (fuzzed:
// fuzz/proxy_header_fuzz.cpp). No deadline of its own: the session's watchdog bounds it
// (timeouts.handshake) by cancelling it.
#include <boost/asio/awaitable.hpp>
#include <utility>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/proxy_header.hpp"

namespace mtlsd::proxy {

// The header (complete, or invalid with the reason, including the peer closing), or the read
// error that stopped it (operation_aborted when the watchdog cancelled it).
asio::awaitable<std::pair<error_code, inbound_proxy_header>> read_proxy_header(stream_socket& sock);

}  // namespace mtlsd::proxy
