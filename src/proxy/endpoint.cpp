#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstring>

#include "mtlsd/proxy/endpoint.hpp"

namespace mtlsd::proxy {

std::string format_endpoint(const stream_endpoint& ep) {
  const sockaddr* sa = ep.data();
  char buf[INET6_ADDRSTRLEN] = {};
  switch (sa->sa_family) {
    case AF_INET: {
      auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
      auto* un = reinterpret_cast<const sockaddr_un*>(sa);
      std::size_t max = ep.size() > offsetof(sockaddr_un, sun_path)
                            ? ep.size() - offsetof(sockaddr_un, sun_path)
                            : 0;
      return "unix:" + std::string(un->sun_path, strnlen(un->sun_path, max));
    }
    default:
      return "unknown";
  }
}

std::string local_address(const stream_socket& s) {
  error_code ec;
  auto ep = s.local_endpoint(ec);
  return ec ? std::string() : format_endpoint(ep);
}

std::string remote_address(const stream_socket& s) {
  error_code ec;
  auto ep = s.remote_endpoint(ec);
  return ec ? std::string() : format_endpoint(ep);
}

void set_nodelay(stream_socket& s) {
  int family = s.local_endpoint().data()->sa_family;
  if (family != AF_INET && family != AF_INET6) return;
  int one = 1;
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

std::variant<std::monostate, stream_endpoint> literal_endpoint(const config::address& a) {
  if (a.is_unix()) return stream_endpoint(asio::local::stream_protocol::endpoint(a.path));
  error_code ec;
  auto ip = asio::ip::make_address(a.host, ec);
  if (ec) return std::monostate{};
  return stream_endpoint(asio::ip::tcp::endpoint(ip, a.port));
}

}  // namespace mtlsd::proxy
