// One mTLS client connection of mtlsd_loadgen (see loadgen_connection.hpp).
#include "loadgen_connection.hpp"

#include <arpa/inet.h>
#include <sys/time.h>

#include <cmath>

namespace loadgen {

connection_counters g_counters;

int on_new_session(SSL* ssl, SSL_SESSION* session) {
  g_counters.tickets.fetch_add(1, std::memory_order_relaxed);
  auto* slot = static_cast<ticket_slot*>(SSL_get_app_data(ssl));
  if (slot == nullptr) return 0;  // not kept
  SSL_SESSION_free(slot->latest);
  slot->latest = session;
  return 1;  // the slot owns the reference now
}

std::string ssl_error_text(SSL* ssl, int ret, const char* op) {
  const int e = SSL_get_error(ssl, ret);
  std::string s = std::string(op) + ": ";
  const unsigned long code = ERR_get_error();
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    s += buf;
  } else if (e == SSL_ERROR_SYSCALL) {
    s += errno == 0 ? std::string("unexpected EOF") : std::string(std::strerror(errno));
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    s += "closed by peer";
  } else {
    s += "SSL error " + std::to_string(e);
  }
  ERR_clear_error();
  return s;
}

std::string proxy_v1_header(int fd, const std::string& src, int dport) {
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len);
  return "PROXY TCP4 " + src + " 127.0.0.1 " + std::to_string(ntohs(local.sin_port)) + " " +
         std::to_string(dport) + "\r\n";
}

bool send_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

void set_timeouts(int fd, double seconds) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - std::floor(seconds)) * 1e6);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

}  // namespace loadgen
