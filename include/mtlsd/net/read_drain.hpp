#pragma once
// Knowing, without asking the kernel, that a socket holds nothing to read: no bytes, no FIN, no
// error. A reader that knows it waits for the next edge at once (net::async_wait_drained)
// instead of making a read that would fail with EAGAIN, or a peek, first — the two system calls
// per HTTP request by which mtlsd made more than nginx (bench/profiles/http-syscalls.md).
//
// What it rests on (Asio's epoll reactor, edge-triggered, one thread per io_context):
// - a read that got fewer bytes than it asked for, or EAGAIN, emptied the socket at that moment;
// - whatever comes after it raises an edge, which epoll reports; each report for the socket sets
//   the reactor's own per-socket "try a read at once" mark (try_speculative_). The read clears
//   the mark (note_read), so a cleared mark says that nothing was reported since;
// - but a FIN that came together with the last bytes raises no edge of its own. So the socket is
//   registered with EPOLLRDHUP too (track_read_drain), and a read is taken as emptying it only
//   while the last report for it named no FIN, hang-up or error. A FIN reported later sets the
//   mark again. This is nginx's rule (its pending_eof), on Asio's records.
// Only Asio's reactor reads that mark after a clear; it reads it the same way: a cleared mark
// makes its next read wait for an edge instead of trying at once, which is right for the same
// reasons.
//
// Asio's reactor internals differ between versions: like net/edge_wait.hpp, this relies on
// Boost 1.81's (Debian 12) and elsewhere never knows (known_drained is false): a Boost upgrade
// costs the system calls, never a hang.
#include <sys/types.h>

#include <cstddef>

#include "mtlsd/net/socket.hpp"

namespace mtlsd::net {

// Adds EPOLLRDHUP to the socket's epoll registration (one epoll_ctl, once per socket). Until
// then, and where this returns false, known_drained is false.
bool track_read_drain(stream_socket& s);

// To be called right after every read of a tracked socket, before anything that could yield to
// the event loop: `asked` bytes asked for, `got` the read's result (negative on error) and `err`
// its errno. A short read or EAGAIN marks the socket emptied.
void note_read(stream_socket& s, std::size_t asked, ssize_t got, int err);

// The socket is tracked, its last read emptied it, and epoll has reported nothing for it since:
// a read now would find nothing, and async_wait_drained's precondition holds.
bool known_drained(stream_socket& s);

}  // namespace mtlsd::net
