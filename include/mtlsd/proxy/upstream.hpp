#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/error.hpp>
#include <cerrno>
#include <chrono>
#include <string>

#include "mtlsd/config/address.hpp"
#include "mtlsd/proxy/endpoint.hpp"

namespace mtlsd::proxy {

// Connects `sock` (closed on entry) to the upstream: a unix socket, an IP literal, or a hostname
// resolved by the worker's resolver (net/resolver.hpp: asynchronous, cancellable, cached for the
// DNS TTL, so DNS changes are followed without a reload). A host name's addresses are tried
// Happy Eyeballs style (RFC 8305): families alternating, the next address started when the last
// attempt failed or after 250 ms without an answer, at most 4 at once, the first to connect
// kept. The caller bounds the time (the session's connect deadline) by cancelling, which ends a
// pending lookup or the attempts at once. On failure `detail` says what was tried; when cancelled
// it names the step that did not finish: "DNS lookup of HOST" or "connect to IP:PORT [and
// IP:PORT...]" (of a host name's addresses); empty for a literal address. `resolved_at`, when
// given, is set when a host name's lookup succeeded (for the debug line of the resolve step);
// untouched for a literal address. `connected_to`, when given, is set to the address connected
// to (no getpeername needed).
asio::awaitable<error_code> connect_upstream(
    stream_socket& sock, const config::address& to, std::string& detail,
    std::chrono::steady_clock::time_point* resolved_at = nullptr,
    stream_endpoint* connected_to = nullptr);

// connect_upstream bounded by `limit` (timeouts.connect) on its own, for connections opened
// outside a session's connect phase (an HTTP/2 client's further upstream connections). Past it:
// asio::error::timed_out, `detail` naming the step that did not finish. Cancelling the caller
// ends it too (operation_aborted).
asio::awaitable<error_code> connect_upstream_within(stream_socket& sock, const config::address& to,
                                                    std::chrono::milliseconds limit,
                                                    std::string& detail);

// EMFILE / ENFILE (and ENOBUFS / ENOMEM from socket()): a failure of ours, not the upstream's.
inline bool out_of_descriptors(const error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory ||
         (ec.category() == boost::system::system_category() && ec.value() == ENFILE);
}

}  // namespace mtlsd::proxy
