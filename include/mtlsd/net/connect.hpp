#pragma once
// Connecting to one of a host name's addresses, Happy Eyeballs style (RFC 8305): for upstream
// connections (proxy/upstream.hpp) and the HTTP client's (revocation fetches, upstream checks).
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "mtlsd/net/fd_gate.hpp"
#include "mtlsd/net/socket.hpp"

namespace mtlsd::net {

// RFC 8305's connection attempt delay: the next address is started when the last attempt
// failed, or when it has neither connected nor failed for this long.
inline constexpr auto connect_attempt_delay = std::chrono::milliseconds(250);
// At most this many attempts in flight: a name with many silent addresses does not take a
// descriptor per 250 ms.
inline constexpr std::size_t max_connect_attempts = 4;

// Connects `sock` (closed on entry) to the first of `addresses` at `port` that accepts: tried in
// the given (the resolver's, RFC 6724) order with IPv6 and IPv4 alternating from the first
// address's family (RFC 8305 section 4), the next started as above; the first to connect is
// moved into `sock` and the others are closed. Returns the last error when every address failed
// (`detail`: "connect to A: error; connect to B: error"). Ends at once when the caller cancels
// (operation_aborted; `detail`: "connect to A [and B...]", the attempts then in flight).
// `extra`, when given, holds one descriptor for each attempt open beside the first (the
// caller's own descriptor covers that one): an attempt it has no room for waits for another to
// end. `connected_to`, when given, is set to the address connected to.
boost::asio::awaitable<error_code> connect_any(
    stream_socket& sock, const std::vector<boost::asio::ip::address>& addresses, std::uint16_t port,
    std::string& detail, fd_gate* extra = nullptr, stream_endpoint* connected_to = nullptr);

}  // namespace mtlsd::net
