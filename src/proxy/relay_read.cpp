// detail::read_records (relay.hpp): the byte relay's reads from the TLS peer, record after record
// into one buffer, as nginx's ngx_ssl_recv keeps calling SSL_read until its buffer is full.
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/proxy/relay.hpp"

namespace mtlsd::proxy::detail {

gathered read_records(tls_stream& tls, stream_socket& sock, asio::mutable_buffer buf,
                      std::uint64_t received_until) {
  gathered got;
  auto* const start = static_cast<char*>(buf.data());
  for (;;) {
    const auto a = tls.read_now(asio::buffer(start + got.n, buf.size() - got.n));
    if (a.ec) {
      got.ec = a.ec;
      got.wants = a.wants;
      return got;
    }
    got.n += a.n;
    if (got.n == buf.size()) return got;
    // A read of what OpenSSL holds costs no system call. One of the socket is made only where
    // the relay made it before gathering (it read again unless the socket was known drained),
    // and not past the turn's bytes: records of a few bytes each would otherwise be read and
    // decrypted by the thousand before the worker's other connections got their turn.
    if (!tls.has_pending() && (net::known_drained(sock) || tls.received() >= received_until))
      return got;
  }
}

}  // namespace mtlsd::proxy::detail
