#pragma once
// Knowing, without asking the kernel, that a read of a socket now would be wasted: whatever the
// socket holds or will hold (bytes, a FIN, an error) is still to be reported by epoll, so a wait
// queued now (net::async_wait_drained) wakes for it. A reader that knows it waits at once,
// instead of first making a read that fails with EAGAIN, or a peek — system calls per request
// that nginx does not make (bench/profiles/http-syscalls.md, requests-syscalls.md).
//
// What it rests on (Asio's epoll reactor, edge-triggered, one thread per io_context):
// - a read that got fewer bytes than it asked for, or EAGAIN, emptied the socket at that moment;
// - whatever comes after it raises an edge, which epoll reports; each report for the socket sets
//   the reactor's own per-socket "try a read at once" mark (try_speculative_). The read clears
//   the mark (note_read), so a cleared mark says that nothing was reported since;
// - but a FIN that came together with bytes already reported raises no edge of its own. So the
//   socket is registered with EPOLLRDHUP too (track_read_drain), and a read is taken as emptying
//   it only while the last report for it named no FIN, hang-up, error or urgent data. A FIN that
//   came after that report has a report of its own still to come, which sets the mark again.
//   This is nginx's rule (its pending_eof), on Asio's records.
// Not "a read now finds nothing": a FIN (or bytes) still to be reported may be there already.
// So it answers "should I wait?", never "is the socket silent?" (net::nothing_to_read's peek).
// Only Asio's reactor reads the mark besides; it reads it the same way: a cleared mark makes its
// next read wait for an edge instead of trying at once, right for the same reasons.
//
// One case where a short read leaves bytes behind is not covered: a unix socket peer that sends
// file descriptors (SCM_RIGHTS) ends a read early; the rest then waits for its next edge. mtlsd
// never asks an upstream for descriptors; one that sends them stalls only its own connection.
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
// async_wait_drained's precondition holds, and a wait queued now wakes for anything the socket
// holds or will hold. (Not that it is silent now: see the file comment.)
bool known_drained(stream_socket& s);

}  // namespace mtlsd::net
