#pragma once
// Accepting connections. Each worker has its own acceptor per listener (TCP: SO_REUSEPORT, the
// kernel spreads connections over workers; unix: a dup() each of the one socket, the first
// worker woken takes the connection), nothing is shared on the connection path. What workers do
// share per listener is a listener_slot: the listener's current runtime (swapped on reload) and
// its connection count (for max_connections) and admission counts.
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>

#include "mtlsd/proxy/admission.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/session.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::proxy {

struct listener_slot {
  std::string name;
  std::string bound;  // the address actually bound ("127.0.0.1:40123" for a configured port 0)
  std::atomic<std::shared_ptr<const runtime::listener_runtime>> current;
  // Connections held, for max_connections. Shared, as `admission` is, with the slot a reload
  // makes when it renames or moves the listener: the connections it has still hold places.
  std::shared_ptr<std::atomic<int>> active = std::make_shared<std::atomic<int>>(0);
  // allowed_sources, rate limits and the pending-handshake cap (admission.hpp).
  std::shared_ptr<admission_state> admission = std::make_shared<admission_state>();
  // A reload renamed the listener and handed its acceptors to a slot under the new name: the
  // accept loops of this one end (after admitting a connection already accepted).
  std::atomic<bool> retired{false};
};

// Accepts until the acceptor is closed, or its slot retired. Keeps accepting through errors:
// EMFILE/ENFILE back off briefly (the pending connection stays queued, so retrying at once would
// spin) and resume.
asio::awaitable<void> accept_loop(std::shared_ptr<stream_acceptor> acceptor,
                                  std::shared_ptr<listener_slot> slot, session_registry& registry);

// Admits the connections already waiting in `acceptor`'s queue, without waiting for more, as
// accept_loop would: for an acceptor about to be closed (a reload moved, renamed or removed its
// listener), whose queued connections the kernel would otherwise reset (review: a rename under
// load reset about 1% of the connections made meanwhile). They are served by the listener
// `slot` holds, as every connection accepted before the reload took effect.
void admit_queued(stream_acceptor& acceptor, const std::shared_ptr<listener_slot>& slot,
                  session_registry& registry);

}  // namespace mtlsd::proxy
