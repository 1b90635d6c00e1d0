#pragma once
// Loopback sockets and TLS contexts for the in-process pipeline tests (session_test,
// http_relay_test): one definition each, so that the two files can share a unity batch.
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "mtlsd/proxy/endpoint.hpp"

namespace mtlsd::test {

struct ssl_ctx_deleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, ssl_ctx_deleter>;

// 127.0.0.1:port; port 0: any free one (bind).
inline proxy::stream_endpoint loopback(unsigned short port = 0) {
  return proxy::stream_endpoint(
      boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
}

// Closes with SO_LINGER 0: the kernel sends RST instead of FIN.
inline void reset_close(proxy::stream_socket& s) {
  ::linger l{1, 0};
  ::setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  proxy::error_code ignored;
  s.close(ignored);
}

}  // namespace mtlsd::test
