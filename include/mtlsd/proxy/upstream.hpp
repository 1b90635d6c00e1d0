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
// DNS TTL, so DNS changes are followed without a reload) and tried address by address. The
// caller bounds the time (the session's connect deadline) by cancelling, which ends a pending
// lookup at once. On failure `detail` says what was tried; when cancelled it names the step
// that did not finish: "DNS lookup of HOST" or "connect to IP:PORT" (of a host name's addresses);
// empty for a literal address. `resolved_at`, when given, is set when a host name's lookup
// succeeded (for the debug line of the resolve step); untouched for a literal address.
// `connected_to`, when given, is set to the address connected to (no getpeername needed).
asio::awaitable<error_code> connect_upstream(
    stream_socket& sock, const config::address& to, std::string& detail,
    std::chrono::steady_clock::time_point* resolved_at = nullptr,
    stream_endpoint* connected_to = nullptr);

// EMFILE / ENFILE (and ENOBUFS / ENOMEM from socket()): a failure of ours, not the upstream's.
inline bool out_of_descriptors(const error_code& ec) {
  return ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
         ec == asio::error::no_memory ||
         (ec.category() == boost::system::system_category() && ec.value() == ENFILE);
}

}  // namespace mtlsd::proxy
