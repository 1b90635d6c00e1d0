#include "mtlsd/proxy/tls_stream.hpp"

#include <openssl/err.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <utility>

#include "mtlsd/net/edge_wait.hpp"
#include "mtlsd/net/read_drain.hpp"
#include "mtlsd/net/shared_edge_wait.hpp"

namespace mtlsd::proxy {

using asio::as_tuple;
using asio::use_awaitable;

namespace {

// boost::system::error_category's destructor is not virtual by design (categories are static
// singletons, never deleted through a base pointer), which -Wnon-virtual-dtor flags.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class tls_protocol_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mtlsd.tls"; }
  std::string message(int) const override { return "TLS protocol error"; }
};
#pragma GCC diagnostic pop

}  // namespace

error_code tls_protocol_error() {
  static const tls_protocol_category category;
  return error_code(1, category);
}

std::string describe(const error_code& ec, const tls_stream& tls) {
  if (tls.truncated() && ec == asio::error::connection_aborted) return tls.failure_detail();
  if (ec == tls_protocol_error() && !tls.failure_detail().empty())
    return ec.message() + " (" + tls.failure_detail() + ")";
  return ec.message();
}

namespace {

// The socket's receive low-water mark: readiness (epoll) is reported only once this many bytes
// are queued — or the peer closed or failed. TCP honours it; other sockets ignore it.
bool set_receive_low_water(int fd, std::size_t bytes) {
  const int v = static_cast<int>(bytes);
  return ::setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v) == 0;
}

// What one peek at a connection's first bytes tells: `got` (as recv returns it; errno in
// `err`), the first byte (the record type) and the record's length with its 5-byte header
// (`need`; 5 while the header is not whole). `whole`: all of it is in. The header and what
// follows are peeked together, so how much of the record is in comes with it (a ClientHello is
// usually well under 2 KiB) without a second system call (FIONREAD) — in a plain function, so
// that the 2 KiB buffer stays off the frame of the coroutine every waiting connection holds.
struct record_peek {
  ssize_t got = 0;
  int err = 0;
  unsigned char type = 0;
  std::size_t need = 0;
  bool whole = false;
};

record_peek peek_first_record(int fd) {
  constexpr std::size_t header_size = 5;
  unsigned char bytes[2048];
  record_peek r;
  r.got = ::recv(fd, bytes, sizeof bytes, MSG_PEEK | MSG_DONTWAIT);
  r.err = errno;
  if (r.got <= 0) return r;
  const auto got = static_cast<std::size_t>(r.got);
  r.type = bytes[0];
  r.need =
      got < header_size ? header_size : header_size + ((std::size_t{bytes[3]} << 8) | bytes[4]);
  int available = 0;  // a record longer than the peek
  r.whole = got >= r.need || (got == sizeof bytes && ::ioctl(fd, FIONREAD, &available) == 0 &&
                              static_cast<std::size_t>(available) >= r.need);
  return r;
}

}  // namespace

asio::awaitable<error_code> wait_for_first_record(stream_socket& sock) {
  // A record header: type (22 = handshake), version (2 bytes), length (2 bytes).
  constexpr std::size_t header_size = 5;
  constexpr std::size_t max_record = header_size + 16384 + 2048;  // TLSCiphertext's bound
  const int fd = static_cast<int>(sock.native_handle());
  // Part of the record is in: the kernel wakes us when the rest is (SO_RCVLOWAT), not at every
  // segment, and never spins on the bytes already there. Put back before OpenSSL reads.
  std::size_t low_water = 1;
  struct restore {
    int fd;
    std::size_t& low_water;
    ~restore() {
      if (low_water != 1) set_receive_low_water(fd, 1);
    }
  } restore_low_water{fd, low_water};
  // Looked at before any wait: a client usually sends its ClientHello with or right after the
  // connection, so it is often whole in the buffer at accept; waiting first would cost a trip
  // through the event loop and Asio's epoll_ctl for data that is already there.
  enum class then { look, wait, wait_drained } next = then::look;
  bool stale_wake_allowed = false;  // see the end of the loop
  for (;;) {
    if (next != then::look) {
      // After EAGAIN, with no yield since, the wait needs no epoll_ctl (net/edge_wait.hpp);
      // after a partial record the bytes are there and Asio's wait must re-arm epoll.
      auto [ec] = next == then::wait_drained
                      ? co_await net::async_wait_drained(sock, stream_socket::wait_read,
                                                         as_tuple(use_awaitable))
                      : co_await sock.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
      if (ec) co_return ec;
    }
    const record_peek peek = peek_first_record(fd);
    if (peek.got <= 0) {
      if (peek.got < 0 && (peek.err == EAGAIN || peek.err == EWOULDBLOCK)) {
        next = then::wait_drained;
        continue;
      }
      if (peek.got < 0 && peek.err == EINTR) {
        next = then::look;
        continue;
      }
      co_return error_code{};  // EOF or an error: the handshake meets it and names it
    }
    next = then::wait;
    if (peek.type != 22) co_return error_code{};  // not TLS: OpenSSL says what is wrong
    const std::size_t need = peek.need;
    if (need > max_record || peek.whole) co_return error_code{};
    // Woken below the mark already set. Once, that may be an event from before the mark: the
    // part that came before this function looked (then nothing waited for it, and epoll still
    // holds its edge). Again: the peer closed or failed (or the socket ignores the mark) — the
    // handshake takes over, as it would have without this wait. Bounded: two wakes at most.
    if (need <= low_water) {
      if (!stale_wake_allowed) co_return error_code{};
      stale_wake_allowed = false;
      continue;
    }
    if (!set_receive_low_water(fd, need)) co_return error_code{};
    low_water = need;
    stale_wake_allowed = true;
  }
}

// OpenSSL's socket BIO with its read replaced by tls_stream::read_socket; everything else (its
// write, its controls, its flags for retries) is the socket BIO's own. Not a callback on a plain
// socket BIO, as before: OpenSSL calls a BIO's callback before and after each of its controls
// too, ~13 of them a request (flush, kTLS and pending queries): 30 calls and ~1.4k instructions
// of a ~19.8k-instruction keep-alive request (bench/run.sh --instructions requests).
BIO_METHOD* tls_stream::socket_method() {
  static BIO_METHOD* const method = [] {
    const BIO_METHOD* socket = BIO_s_socket();
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "mtlsd socket");
    if (!m || !BIO_meth_set_write(m, BIO_meth_get_write(socket)) ||
        !BIO_meth_set_read(m, &tls_stream::read_socket) ||
        !BIO_meth_set_puts(m, BIO_meth_get_puts(socket)) ||
        !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(socket)) ||
        !BIO_meth_set_create(m, BIO_meth_get_create(socket)) ||
        !BIO_meth_set_destroy(m, BIO_meth_get_destroy(socket)))
      throw std::runtime_error("cannot build the socket BIO method: " + tls::drain_errors());
    return m;
  }();
  return method;
}

tls_stream::tls_stream(stream_socket& sock, SSL_CTX* ctx, bool server)
    : sock_(sock), ssl_(SSL_new(ctx)) {
  if (!ssl_) throw std::runtime_error("SSL_new failed: " + tls::drain_errors());
  error_code ec;
  net::make_non_blocking(sock_, ec);
  if (ec) throw boost::system::system_error(ec, "making the socket non-blocking");
  // One socket BIO, both directions, as SSL_set_fd builds it, less its ktls_enable (the TCP_ULP
  // "tls" kernel TLS needs): Debian 12's OpenSSL has no kTLS, and mtlsd does not turn it on.
  BIO* bio = BIO_new(socket_method());
  if (!bio) throw std::runtime_error("BIO_new failed: " + tls::drain_errors());
  BIO_set_fd(bio, static_cast<int>(sock_.native_handle()), BIO_NOCLOSE);
  BIO_set_callback_arg(bio, reinterpret_cast<char*>(this));  // read_socket's, no callback
  SSL_set_bio(ssl_.get(), bio, bio);
  if (server)
    SSL_set_accept_state(ssl_.get());
  else
    SSL_set_connect_state(ssl_.get());
}

// One attempt of an SSL_*_ex operation, never waiting. `op(n)` returns OpenSSL's return value
// and stores the byte count in n.
template <class Op>
tls_stream::attempt tls_stream::step(Op op) {
  // SSL_get_error() reads the queue (through ERR_peek_error): a stale entry would mislead it.
  // Peeked first because clearing walks every slot of the queue even when it is empty: about
  // 500 instructions, twice per HTTP request (callgrind), where the peek costs a few dozen.
  if (ERR_peek_error() != 0) ERR_clear_error();
  errno = 0;  // ...and SSL_ERROR_SYSCALL reads errno
  std::size_t n = 0;
  const int rc = op(n);
  if (rc > 0) return {error_code{}, n, want::nothing};
  switch (SSL_get_error(ssl_.get(), rc)) {
    case SSL_ERROR_WANT_READ:
      return {error_code(asio::error::would_block), 0, want::read};
    case SSL_ERROR_WANT_WRITE:
      return {error_code(asio::error::would_block), 0, want::write};
    case SSL_ERROR_ZERO_RETURN:
      if (cursor_.inside_record()) return cut_short();
      return {error_code(asio::error::eof), 0, want::nothing};
    case SSL_ERROR_SYSCALL: {
      const int e = errno;
      failure_detail_ = tls::drain_errors();
      if (e == 0)
        return cursor_.inside_record() ? cut_short()
                                       : attempt{error_code(asio::error::eof), 0, want::nothing};
      if (failure_detail_.empty()) failure_detail_ = std::strerror(e);
      return {error_code(e, boost::system::system_category()), 0, want::nothing};
    }
    default:
      failure_reason_ = ERR_GET_REASON(ERR_peek_error());
      failure_detail_ = tls::drain_errors();
      return {tls_protocol_error(), 0, want::nothing};
  }
}

int tls_stream::read_socket(BIO* bio, char* out, int size) {
  static const auto socket_read = BIO_meth_get_read(BIO_s_socket());
  const int got = socket_read(bio, out, size);
  const int err = errno;  // SSL_get_error reads it after us
  auto* self = reinterpret_cast<tls_stream*>(BIO_get_callback_arg(bio));
  if (got > 0) {
    self->cursor_.feed(reinterpret_cast<const unsigned char*>(out), static_cast<std::size_t>(got));
    self->received_ += static_cast<std::size_t>(got);
  }
  net::note_read(self->sock_, static_cast<std::size_t>(size), got > 0 ? got : (got < 0 ? -1 : 0),
                 err);
  errno = err;
  return got;
}

void tls_stream::record_cursor::feed(const unsigned char* p, std::size_t n) {
  while (n > 0 && !off) {
    if (body_left > 0) {
      const std::size_t take = std::min(n, body_left);
      body_left -= take;
      p += take;
      n -= take;
      continue;
    }
    // A record header: type, version (2 bytes), length (2 bytes). An SSLv2-format ClientHello
    // (high bit set in its first byte) is no record.
    if (header_seen == 0 && (*p & 0x80)) {
      off = true;
      return;
    }
    if (header_seen == 3) length_high = *p;
    if (header_seen == 4) body_left = (std::size_t{length_high} << 8) | *p;
    header_seen = header_seen == 4 ? 0 : header_seen + 1;
    ++p;
    --n;
  }
}

tls_stream::attempt tls_stream::cut_short() {
  truncated_ = true;
  failure_detail_ = "the peer's TCP connection ended inside a TLS record (truncated)";
  return {error_code(asio::error::connection_aborted), 0, want::nothing};
}

// Runs an SSL_*_ex operation until it completes, waiting for socket readiness whenever OpenSSL
// asks for it (or returning would_block where the caller does its own waiting).
template <class Op>
asio::awaitable<std::pair<error_code, std::size_t>> tls_stream::drive(Op op, bool wait_for_input,
                                                                      bool wait_for_output,
                                                                      bool wait_if_drained) {
  bool waited = false;
  if (wait_if_drained) {
    // Nothing buffered here, and the socket known drained (net/read_drain.hpp): whatever it
    // holds or will hold is still to be reported, so the wait wakes for it, where a read now
    // would almost always fail with EAGAIN (an HTTP client's next request, after the response).
    // Tracked from the connection's first read on (one epoll_ctl, tried once).
    if (!std::exchange(drain_track_tried_, true)) {
      net::track_read_drain(sock_);
    } else if (!has_pending() && net::known_drained(sock_)) {
      waited = true;
      auto [ec] = read_watch_ && read_watch_->joinable()
                      ? co_await read_watch_->async_join(as_tuple(use_awaitable))
                      : co_await net::async_wait_drained(sock_, stream_socket::wait_read,
                                                         as_tuple(use_awaitable));
      if (ec) co_return std::pair{ec, std::size_t{0}};
    }
  }
  for (;;) {
    const attempt a = step(op);
    if (a.wants == want::nothing) {
      if (wait_if_drained) {  // read_some: its turn (see its declaration)
        if (waited) {
          reads_in_a_row_ = 0;
        } else if (++reads_in_a_row_ >= reads_per_turn) {
          reads_in_a_row_ = 0;
          co_await asio::post(sock_.get_executor(), use_awaitable);
        }
      }
      co_return std::pair{a.ec, a.n};
    }
    if (!(a.wants == want::read ? wait_for_input : wait_for_output))
      co_return std::pair{a.ec, std::size_t{0}};
    // OpenSSL asks to wait only after its read or write on the socket would block.
    waited = true;
    const bool join = a.wants == want::read && read_watch_ && read_watch_->joinable();
    auto [ec] =
        join ? co_await read_watch_->async_join(as_tuple(use_awaitable))
             : co_await net::async_wait_drained(
                   sock_,
                   a.wants == want::read ? stream_socket::wait_read : stream_socket::wait_write,
                   as_tuple(use_awaitable));
    if (ec) co_return std::pair{ec, std::size_t{0}};
  }
}

tls_stream::attempt tls_stream::read_now(asio::mutable_buffer buf) {
  return step(
      [this, buf](std::size_t& n) { return SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n); });
}

tls_stream::attempt tls_stream::write_now(asio::const_buffer buf) {
  return step([this, buf](std::size_t& written) {
    return SSL_write_ex(ssl_.get(), buf.data(), buf.size(), &written);
  });
}

asio::awaitable<error_code> tls_stream::handshake() {
  auto [ec, n] = co_await drive([this](std::size_t&) { return SSL_do_handshake(ssl_.get()); });
  co_return ec;
}

asio::awaitable<std::pair<error_code, std::size_t>> tls_stream::read_some(
    asio::mutable_buffer buf) {
  return drive(
      [this, buf](std::size_t& n) { return SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n); },
      true, true, true);
}

asio::awaitable<std::pair<error_code, std::size_t>> tls_stream::try_read_some(
    asio::mutable_buffer buf) {
  return drive(
      [this, buf](std::size_t& n) { return SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n); },
      false);
}

asio::awaitable<error_code> tls_stream::write(asio::const_buffer buf) {
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE, SSL_write_ex succeeds only once everything is written
  // and must be retried with the same arguments after WANT_WRITE — which drive() does.
  auto [ec, n] = co_await drive([this, buf](std::size_t& written) {
    return SSL_write_ex(ssl_.get(), buf.data(), buf.size(), &written);
  });
  co_return ec;
}

asio::awaitable<error_code> tls_stream::try_write(asio::const_buffer buf) {
  auto [ec, n] = co_await drive(
      [this, buf](std::size_t& written) {
        return SSL_write_ex(ssl_.get(), buf.data(), buf.size(), &written);
      },
      true, false);
  co_return ec;
}

asio::awaitable<error_code> tls_stream::shutdown_send() {
  if (SSL_get_shutdown(ssl_.get()) & SSL_SENT_SHUTDOWN) co_return error_code{};
  // SSL_shutdown returns 0 once our close_notify is out and the peer's has not arrived yet —
  // exactly the half-close we want, so 0 counts as done.
  auto [ec, n] = co_await drive([this](std::size_t&) {
    int rc = SSL_shutdown(ssl_.get());
    return rc >= 0 ? 1 : rc;
  });
  co_return ec;
}

}  // namespace mtlsd::proxy
