#include "sink_output.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mtlsd::log::detail {

int open_append(const std::string& path) {
  // 0640: access lines name clients and identities; the group can be a log shipper.
  // O_NONBLOCK for the open alone: a FIFO that no process reads blocked it, and with it the
  // start (or, on SIGUSR1, the writer thread) until a reader came (review). Now that fails at
  // once, ENXIO; the writes stay blocking (write_all).
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0640);
  if (fd >= 0) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  return fd;
}

std::string open_failure(const std::string& path, int err) {
  if (err == ENXIO) return path + ": a FIFO that no process reads (start its reader first)";
  return path + ": " + std::strerror(err);
}

std::size_t write_all(int fd, std::span<iovec> parts, int& error) {
  error = 0;
  std::size_t wrote = 0;
  while (!parts.empty()) {
    const ssize_t n = ::writev(fd, parts.data(), static_cast<int>(parts.size()));
    if (n >= 0) {
      wrote += static_cast<std::size_t>(n);
      auto left = static_cast<std::size_t>(n);
      while (!parts.empty() && left >= parts.front().iov_len) {  // the parts written whole
        left -= parts.front().iov_len;
        parts = parts.subspan(1);
      }
      if (!parts.empty()) {  // and of the next, what was
        parts.front().iov_base = static_cast<char*>(parts.front().iov_base) + left;
        parts.front().iov_len -= left;
      }
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd pfd{fd, POLLOUT, 0};
      ::poll(&pfd, 1, 100);
      continue;
    }
    error = errno;
    break;  // EPIPE, EBADF, ENOSPC, EFBIG...: the rest of the data is lost
  }
  return wrote;
}

}  // namespace mtlsd::log::detail
