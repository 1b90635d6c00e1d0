#pragma once
// Stream sockets and listening sockets, for every part that accepts or connects (the connection
// path, the admin listener). One generic stream socket type serves TCP (v4/v6) and unix sockets
// alike, so sessions, relays and listeners are written once.
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/socket_base.hpp>
#include <optional>
#include <string>
#include <variant>

#include "mtlsd/config/address.hpp"

namespace mtlsd::net {

namespace asio = boost::asio;
using error_code = boost::system::error_code;
using stream_socket = asio::generic::stream_protocol::socket;
using stream_endpoint = asio::generic::stream_protocol::endpoint;
using stream_acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

// "127.0.0.1:5555", "[::1]:5555", "unix:/path" (or "unix:" for an unnamed peer).
std::string format_endpoint(const stream_endpoint& ep);

// Disables Nagle on TCP sockets (a no-op on unix sockets): a proxy must not add latency to
// small writes. `either_end`: an endpoint of this connection the caller already holds (its
// family tells TCP from unix without asking the kernel: one getsockname per connection less).
void set_nodelay(stream_socket& s, const stream_endpoint& either_end);

// Puts the socket in non-blocking mode once, as the first thing done with it: mtlsd reads and
// writes its sockets directly, waiting only on EAGAIN. Asio's non_blocking(true) makes an
// ioctl at every call, and Asio makes one of its own at a socket's first wait unless that was
// done first: two per socket where one does (a profile of the handshake path's system calls).
void make_non_blocking(stream_socket& s, error_code& ec);

// Whether the socket has nothing to read: no bytes and no close or error (one non-blocking
// peek; an EAGAIN is told to net::note_read). A kept-alive upstream connection that is not silent
// before a request goes out closed, or sent what no request asked for.
bool nothing_to_read(stream_socket& s);

// The endpoint for a literal address: an IP literal or a unix path. Hostnames need resolving
// and return nullopt-like monostate.
std::variant<std::monostate, stream_endpoint> literal_endpoint(const config::address& a);

// Whether something already listens at `ep`: a TCP address some socket (ours too) is bound
// to, port 0 never; a unix socket that accepts a connection. Listeners bind with SO_REUSEPORT
// (one socket per worker, and a reload's new socket beside the old), so binding alone would
// not tell: another listener or another process on the same port would share its connections.
bool address_in_use(const stream_endpoint& ep);

// A listening socket for `ep` on `ioc`. With `reuse_port`, several workers can bind the same
// address. Removes a stale unix socket file first (one nothing listens on). A unix socket's file
// gets the permission bits `unix_mode` when given (else what the umask leaves) before the socket
// listens, so no connection comes in under other bits. Throws boost::system::system_error.
stream_acceptor open_acceptor(asio::io_context& ioc, const stream_endpoint& ep, bool reuse_port,
                              std::optional<unsigned> unix_mode = std::nullopt);

}  // namespace mtlsd::net
