#pragma once
// Reserving, when a worker starts, the per-socket records Asio's reactor keeps for every socket
// it watches, so that a burst of connections does not leave them scattered through the heap.
//
// Why: Asio never returns these records (epoll_reactor's descriptor_state, a few hundred bytes
// each) to malloc; a closed socket's record waits on a free list for the next socket. Records
// made during a burst sit between that burst's connection memory and keep it from being given
// back when the burst ends (bench/run.sh pending: ~50% of the burst's memory stayed held, glibc's
// malloc_info showing megabytes free in chunks pinned by small live allocations). Made up front,
// they sit together below everything else, and a burst of up to `count` sockets makes none:
// 2,000 silent sockets kept 47% of their growth after closing, now none (same build, count 0
// against 4,096).

#include <boost/asio/io_context.hpp>
#include <cstddef>

namespace mtlsd::net {

// Records for `count` sockets, on `ioc`'s reactor. Costs their memory at once (168 bytes each
// with Boost 1.81: ~0.7 MiB for 4,096). No-op where the Asio version is not the one whose
// reactor internals this relies on (Boost 1.81 on Linux, as net/edge_wait.hpp).
void reserve_reactor_records(boost::asio::io_context& ioc, std::size_t count);

}  // namespace mtlsd::net
