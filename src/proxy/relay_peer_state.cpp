// detail::peer_state (relay.hpp): the byte relay's look at a socket's peer without reading.
#include <poll.h>

#include "mtlsd/proxy/relay.hpp"

namespace mtlsd::proxy {

namespace detail {

// How the peer of `sock` stands, without reading: reset, FIN, or still there. A reset leaves a
// socket error (POLLERR). POLLHUP alone is no reset: it also follows a clean FIN once this side
// has shut down its own sending (it passed the other side's end on), and what the peer sent
// before its FIN must still go on.
peer_end peer_state(stream_socket& sock) {
  pollfd p{sock.native_handle(), POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return peer_end::none;
  if (p.revents & (POLLERR | POLLNVAL)) return peer_end::reset;
  if (p.revents & (POLLRDHUP | POLLHUP)) return peer_end::fin;
  return peer_end::none;
}

}  // namespace detail

}  // namespace mtlsd::proxy
