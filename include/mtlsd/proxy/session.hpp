#pragma once
// One connection = one coroutine: handshake (with a deadline) -> decide (verify + allow list) ->
// connect upstream (with a deadline) -> relay -> one access-log line and the metric updates.
// A watchdog (a timer callback) runs beside it and enforces whichever deadline the current phase
// has; `kill()` (drain timeout, revocation) ends it the same way.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <memory>
#include <optional>

#include "mtlsd/proxy/admission.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/session_registry.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::proxy {

// Serves one accepted connection of `listener` to the end. Never throws for network errors.
// `ticket` holds the connection's places in the listener's limits; on a listener with
// accept_proxy_protocol it is still empty (admit_source runs once the header named the client).
// `remote`: the peer's address as accept returned it; without it the socket is asked
// (getpeername). `stop_serving` must be the cancellation slot's signal the returned awaitable
// is spawned with (asio::bind_cancellation_slot), and outlive it: the session's watchdog ends
// the serving side through it (deadlines, drain, kill).
asio::awaitable<void> run_session(stream_socket peer,
                                  std::shared_ptr<const runtime::listener_runtime> listener,
                                  session_registry& registry,
                                  asio::cancellation_signal& stop_serving,
                                  admission_ticket ticket = {},
                                  std::optional<stream_endpoint> remote = std::nullopt);

}  // namespace mtlsd::proxy
