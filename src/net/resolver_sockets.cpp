// Driving c-ares from the io_context: its sockets watched by the reactor (no thread of its
// own), its retransmissions and timeouts by one timer.
#include <poll.h>

#include "resolver_impl.hpp"

namespace mtlsd::net {

namespace {

// Reads one socket's readiness without blocking: Asio's reactor is edge-triggered, and c-ares
// may leave bytes behind (a TCP answer read in two steps), which no new edge would announce.
bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

}  // namespace

void resolver::impl::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<impl*>(data)->sock_state(fd, readable != 0, writable != 0);
}

void resolver::impl::sock_state(int fd, bool readable, bool writable) {
  auto it = watches.find(fd);
  if (!readable && !writable) {  // c-ares is about to close it
    if (it != watches.end()) {
      it->second->closed = true;
      it->second->d.release();  // pending waits end with operation_aborted
      watches.erase(it);
    }
    return;
  }
  if (it == watches.end()) {
    auto w = std::make_shared<watch>(ioc);
    error_code ec;
    w->d.assign(fd, ec);
    if (ec) return;  // unwatchable: the query ends by c-ares's own timeout
    it = watches.emplace(fd, std::move(w)).first;
  }
  it->second->want_read = readable;
  it->second->want_write = writable;
  arm(it->second, fd);
}

void resolver::impl::arm(const std::shared_ptr<watch>& w, int fd) {
  if (w->want_read && !w->reading) {
    w->reading = true;
    w->d.async_wait(asio::posix::descriptor_base::wait_read, [this, w, fd](error_code ec) {
      w->reading = false;
      if (ec || w->closed || !w->want_read) return;
      ares_process_fd(channel, fd, ARES_SOCKET_BAD);
      for (int i = 0; i < 64 && !w->closed && readable_now(fd); ++i)
        ares_process_fd(channel, fd, ARES_SOCKET_BAD);
      if (!w->closed) arm(w, fd);
      schedule_timeout();
    });
  }
  if (w->want_write && !w->writing) {
    w->writing = true;
    w->d.async_wait(asio::posix::descriptor_base::wait_write, [this, w, fd](error_code ec) {
      w->writing = false;
      if (ec || w->closed || !w->want_write) return;
      ares_process_fd(channel, ARES_SOCKET_BAD, fd);
      if (!w->closed) arm(w, fd);
      schedule_timeout();
    });
  }
}

// One timer for all of c-ares's retransmissions and timeouts.
void resolver::impl::schedule_timeout() {
  if (!channel) return;
  timeval tv{};
  const timeval* t = ares_timeout(channel, nullptr, &tv);
  if (!t) {
    timer.cancel();
    return;
  }
  timer.expires_after(std::chrono::seconds(t->tv_sec) + std::chrono::microseconds(t->tv_usec));
  timer.async_wait([this](error_code ec) {
    if (ec || !channel) return;
    ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    schedule_timeout();
  });
}

}  // namespace mtlsd::net
