// One mTLS client connection of mtlsd_loadgen: TCP + TLS 1.3 + a minimal HTTP/1.1 response
// reader, the tickets it keeps (mode resumed), and the socket helpers the modes share.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "loadgen_options.hpp"

namespace loadgen {

// What connections add up over the whole run (loadgen.cpp opens and closes the window).
struct connection_counters {
  std::atomic<std::uint64_t> handshakes{0};  // completed handshakes (any time)
  std::atomic<std::uint64_t> resumed{0};     // handshakes the server resumed (any time)
  std::atomic<std::uint64_t> tickets{0};     // session tickets received (any time)
  std::atomic<std::uint64_t> body_bytes{0};  // response body bytes while counting_body
  std::atomic<bool> counting_body{false};    // the measured window is open
};
extern connection_counters g_counters;

// Where a connection keeps the tickets it receives (mode resumed); other modes have none and
// drop every ticket, so their handshakes are all full ones.
struct ticket_slot {
  ticket_slot() = default;
  ticket_slot(const ticket_slot&) = delete;
  ticket_slot& operator=(const ticket_slot&) = delete;
  ~ticket_slot() {
    SSL_SESSION_free(latest);
    for (SSL_SESSION* s : pool)
      SSL_SESSION_free(s);
  }
  SSL_SESSION* latest = nullptr;   // the newest ticket: the next handshake resumes with it
  std::vector<SSL_SESSION*> pool;  // --hup-pid: tickets issued before the signal, kept unused
};

// SSL_CTX_sess_set_new_cb: counts the ticket, keeps it in the connection's ticket_slot if any.
int on_new_session(SSL* ssl, SSL_SESSION* session);

// "op: reason" for a failed SSL call (clears OpenSSL's error queue).
std::string ssl_error_text(SSL* ssl, int ret, const char* op);

// "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" for a connected socket: the destination and the
// source port are the socket's own, the source address is the one the caller plays.
std::string proxy_v1_header(int fd, const std::string& src, int dport);

bool send_all(int fd, const std::string& data);

// SO_RCVTIMEO and SO_SNDTIMEO.
void set_timeouts(int fd, double seconds);

class connection {
 public:
  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { close(); }

  // proxy_src: when not empty, a PROXY v1 header naming that source precedes the ClientHello.
  // slot: when not null, resume with slot->latest (or `resume_with`, when given) and keep the
  // tickets the server sends in the slot.
  bool open(SSL_CTX* ctx, const options& o, const sockaddr_in& addr, std::string& err,
            const std::string& proxy_src = {}, ticket_slot* slot = nullptr,
            SSL_SESSION* resume_with = nullptr) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      err = std::string("socket: ") + std::strerror(errno);
      return false;
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_timeouts(fd_, o.timeout);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      err = std::string("connect: ") + std::strerror(errno);
      return false;
    }
    if (!proxy_src.empty() && !send_all(fd_, proxy_v1_header(fd_, proxy_src, o.port))) {
      err = std::string("PROXY header: ") + std::strerror(errno);
      return false;
    }
    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd_) != 1) {
      err = "SSL_new failed";
      return false;
    }
    // SSL_set_tlsext_host_name() is a macro with a C cast; call what it expands to.
    SSL_ctrl(ssl_, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(o.server_name.c_str()));
    SSL_set1_host(ssl_, o.server_name.c_str());
    if (slot != nullptr) {
      SSL_set_app_data(ssl_, slot);
      SSL_SESSION* session = resume_with != nullptr ? resume_with : slot->latest;
      if (session != nullptr) SSL_set_session(ssl_, session);
    }
    errno = 0;
    const int r = SSL_connect(ssl_);
    if (r != 1) {
      err = ssl_error_text(ssl_, r, "handshake");
      const long v = SSL_get_verify_result(ssl_);
      if (v != X509_V_OK) err += std::string(" (") + X509_verify_cert_error_string(v) + ")";
      return false;
    }
    g_counters.handshakes.fetch_add(1, std::memory_order_relaxed);
    if (SSL_session_reused(ssl_) == 1) g_counters.resumed.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  bool resumed() const { return ssl_ != nullptr && SSL_session_reused(ssl_) == 1; }

  int fd() const { return fd_; }

  // Idle mode holds thousands of connections: the 64 KiB read buffer is not needed any more.
  void drop_buffer() {
    buf_.clear();
    buf_.shrink_to_fit();
    have_ = 0;
  }

  bool write_all(const std::string& data, std::string& err) {
    std::size_t done = 0;
    while (done < data.size()) {
      std::size_t n = 0;
      errno = 0;
      const int r = SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n);
      if (r != 1) {
        err = ssl_error_text(ssl_, r, "write");
        return false;
      }
      done += n;
    }
    return true;
  }

  // Reads one response with a Content-Length body; body bytes read while the window is open are
  // added to g_counters.body_bytes as they arrive (so long downloads count in the right window).
  bool read_response(std::string& err) {
    std::size_t header_end = std::string::npos;
    while ((header_end = find_header_end()) == std::string::npos) {
      if (have_ == buf_.size()) {
        err = "response headers too large";
        return false;
      }
      if (!fill(err, "read headers")) return false;
    }
    const std::string_view head(buf_.data(), header_end);
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/" || head.substr(9, 3) != "200") {
      err = "unexpected status: " + std::string(head.substr(0, head.find('\r')));
      return false;
    }
    std::uint64_t length = 0;
    bool have_length = false;
    std::size_t pos = 0;
    while ((pos = head.find("\r\n", pos)) != std::string_view::npos) {
      pos += 2;
      constexpr std::string_view name = "content-length:";
      if (head.size() - pos < name.size()) break;
      bool match = true;
      for (std::size_t i = 0; i < name.size() && match; ++i) {
        match = std::tolower(static_cast<unsigned char>(head[pos + i])) == name[i];
      }
      if (match) {
        length = std::strtoull(head.data() + pos + name.size(), nullptr, 10);
        have_length = true;
        break;
      }
    }
    if (!have_length) {
      err = "response without Content-Length";
      return false;
    }
    const std::size_t body_start = header_end + 4;
    const std::size_t in_buf = std::min<std::uint64_t>(have_ - body_start, length);
    std::uint64_t remaining = length - in_buf;
    count_body(in_buf);
    consume(body_start + in_buf);
    while (remaining > 0) {
      std::size_t n = 0;
      errno = 0;
      const std::size_t want = std::min<std::uint64_t>(remaining, buf_.size());
      const int r = SSL_read_ex(ssl_, buf_.data(), want, &n);
      if (r != 1) {
        err = ssl_error_text(ssl_, r, "read body");
        return false;
      }
      remaining -= n;
      count_body(n);
    }
    return true;
  }

  // After "Connection: close": the server must close. Anything but a timeout counts as closed.
  bool await_close(std::string& err) {
    for (;;) {
      std::size_t n = 0;
      errno = 0;
      const int r = SSL_read_ex(ssl_, buf_.data(), buf_.size(), &n);
      if (r == 1) continue;  // unexpected trailing data: drain it
      const int e = SSL_get_error(ssl_, r);
      if (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        err = "timeout waiting for the server to close";
        ERR_clear_error();
        return false;
      }
      ERR_clear_error();
      return true;
    }
  }

  void close() {
    if (ssl_ != nullptr) {
      if (SSL_is_init_finished(ssl_) == 1) SSL_shutdown(ssl_);  // one close_notify, no wait
      SSL_free(ssl_);
      ssl_ = nullptr;
      ERR_clear_error();
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    have_ = 0;
  }

 private:
  std::size_t find_header_end() const {
    const std::string_view v(buf_.data(), have_);
    return v.find("\r\n\r\n");
  }

  bool fill(std::string& err, const char* what) {
    std::size_t n = 0;
    errno = 0;
    const int r = SSL_read_ex(ssl_, buf_.data() + have_, buf_.size() - have_, &n);
    if (r != 1) {
      err = ssl_error_text(ssl_, r, what);
      return false;
    }
    have_ += n;
    return true;
  }

  void consume(std::size_t n) {
    std::memmove(buf_.data(), buf_.data() + n, have_ - n);
    have_ -= n;
  }

  static void count_body(std::uint64_t n) {
    if (n > 0 && g_counters.counting_body.load(std::memory_order_relaxed)) {
      g_counters.body_bytes.fetch_add(n, std::memory_order_relaxed);
    }
  }

  int fd_ = -1;
  SSL* ssl_ = nullptr;
  std::vector<char> buf_ = std::vector<char>(64 * 1024);
  std::size_t have_ = 0;
};

}  // namespace loadgen
