#include "mtlsd/net/socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cerrno>
#include <cstring>

#include "mtlsd/net/read_drain.hpp"

namespace mtlsd::net {
namespace {

// Whether a unix socket at `ep` is listening: something connects. Only ECONNREFUSED (and no
// file) says nobody does; any other failure is taken as in use.
bool unix_socket_live(const stream_endpoint& ep) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  const int rc = ::connect(fd, ep.data(), static_cast<socklen_t>(ep.size()));
  const int err = errno;
  ::close(fd);
  return rc == 0 || (err != ECONNREFUSED && err != ENOENT);
}

void remove_stale_unix_socket(const stream_endpoint& ep) {
  if (ep.data()->sa_family != AF_UNIX) return;
  std::string path = format_endpoint(ep).substr(5);
  struct stat st {};
  // Only a socket left behind by an earlier run (nothing listens on it); never a live one, nor
  // a regular file someone put there.
  if (!path.empty() && ::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      !unix_socket_live(ep))
    ::unlink(path.c_str());
}

}  // namespace

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
      // An IPv4 client of a dual-stack socket goes by its IPv4 address, as Envoy names it and
      // as X-Forwarded-For, PROXY v2 and the source checks do: one client, one spelling.
      if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        inet_ntop(AF_INET, in6->sin6_addr.s6_addr + 12, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(in6->sin6_port));
      }
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

void set_nodelay(stream_socket& s, const stream_endpoint& either_end) {
  const int family = either_end.data()->sa_family;
  if (family != AF_INET && family != AF_INET6) return;
  int one = 1;
  ::setsockopt(s.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void make_non_blocking(stream_socket& s, error_code& ec) {
  if (!s.non_blocking()) s.non_blocking(true, ec);
}

bool nothing_to_read(stream_socket& s) {
  char byte;
  const ssize_t n = ::recv(s.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const int err = errno;
  note_read(s, 1, n, err);
  return n < 0 && (err == EAGAIN || err == EWOULDBLOCK);
}

std::variant<std::monostate, stream_endpoint> literal_endpoint(const config::address& a) {
  if (a.is_unix()) return stream_endpoint(asio::local::stream_protocol::endpoint(a.path));
  error_code ec;
  auto ip = asio::ip::make_address(a.host, ec);
  if (ec) return std::monostate{};
  return stream_endpoint(asio::ip::tcp::endpoint(ip, a.port));
}

bool address_in_use(const stream_endpoint& ep) {
  if (ep.data()->sa_family == AF_UNIX) return unix_socket_live(ep);
  // A bind without SO_REUSEPORT fails while any socket listens there, ours (REUSEPORT) or
  // another process's; SO_REUSEADDR lets connections in TIME_WAIT on the port not count.
  const int fd = ::socket(ep.data()->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;  // the real bind will say why
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const int rc = ::bind(fd, ep.data(), static_cast<socklen_t>(ep.size()));
  const int err = errno;
  ::close(fd);
  return rc != 0 && err == EADDRINUSE;
}

stream_acceptor open_acceptor(asio::io_context& ioc, const stream_endpoint& ep, bool reuse_port,
                              std::optional<unsigned> unix_mode) {
  remove_stale_unix_socket(ep);
  stream_acceptor acc(ioc);
  acc.open(ep.protocol());
  const int family = ep.data()->sa_family;
  if (family != AF_UNIX) {
    acc.set_option(asio::socket_base::reuse_address(true));
    if (reuse_port) {
      int one = 1;
      if (::setsockopt(acc.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        throw boost::system::system_error(errno, boost::system::system_category(), "SO_REUSEPORT");
    }
  }
  acc.bind(ep);
  // On the path: the descriptor is the socket, not the file bind(2) made for it. Before
  // listen(2), until which a connect is refused, so none comes in under the umask's bits.
  if (family == AF_UNIX && unix_mode) {
    const std::string path = format_endpoint(ep).substr(5);
    if (::chmod(path.c_str(), static_cast<mode_t>(*unix_mode)) != 0)
      throw boost::system::system_error(errno, boost::system::system_category(), "chmod " + path);
  }
  acc.listen(asio::socket_base::max_listen_connections);
  return acc;
}

}  // namespace mtlsd::net
