// Sockets that never finish a handshake (see loadgen_pending.hpp).
#include "loadgen_pending.hpp"

#include <openssl/bio.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace loadgen {

std::string client_hello_bytes(SSL_CTX* ctx, const std::string& server_name) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr) return {};
  BIO* rbio = BIO_new(BIO_s_mem());  // nothing ever arrives: the handshake stops after the hello
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);  // the SSL owns both from here
  SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
           const_cast<char*>(server_name.c_str()));
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants to read: the ClientHello is in wbio
  std::string out;
  char* data = nullptr;
  const long n = BIO_get_mem_data(wbio, &data);
  if (n > 0) out.assign(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  return out;
}

int open_pending(const sockaddr_in& addr, const std::string& prefix) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  if (!prefix.empty() && ::send(fd, prefix.data(), prefix.size(), MSG_NOSIGNAL) !=
                             static_cast<ssize_t>(prefix.size())) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool still_open(int fd) {
  char b = 0;
  const ssize_t r = ::recv(fd, &b, 1, MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

bool still_open_peek(int fd) {
  char b = 0;
  const ssize_t r = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r == 0) return false;                                   // the server closed it (FIN)
  if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK;  // nothing waiting, or a reset
  pollfd p{};
  p.fd = fd;
  p.events = POLLRDHUP;
  return ::poll(&p, 1, 0) == 0;  // data waiting: closed when a FIN (or an error) follows it
}

}  // namespace loadgen
