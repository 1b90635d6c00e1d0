#pragma once
// Opening a file that must be a regular one (credentials, CA bundles, CRLs, the configuration):
// a FIFO or device put in its place would block the read forever — on the control thread, which
// also answers signals, reloads and the admin server — so it is refused before any read.
// One-shot commands (`check`, `verify`) read each file once in the foreground, where a pipe is
// what the user meant (`helm template ... | mtlsd check --config /dev/stdin`): they allow
// streams (allow_streams), and then a FIFO or character device is read, blocking.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

namespace mtlsd::util {

struct opened_file {
  int fd = -1;      // open for reading (the caller closes it), or -1
  int error = 0;    // errno of the failure, 0 when the path is not a regular file
  std::string why;  // what failed, for messages: strerror, or "not a regular file"
};

// Set once by a one-shot command before it reads anything; never by the daemon.
inline std::atomic<bool>& streams_allowed() {
  static std::atomic<bool> allowed{false};
  return allowed;
}
inline void allow_streams() {
  streams_allowed().store(true);
}

inline opened_file open_regular_file(const std::string& path) {
  opened_file out;
  // O_NONBLOCK: opening a FIFO with no writer would block already; reads of a regular file
  // ignore it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    out.error = errno;
    out.why = std::strerror(out.error);
    return out;
  }
  struct stat st {};
  const bool ok = ::fstat(fd, &st) == 0;
  const bool stream = ok && (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode));
  if (stream && streams_allowed().load()) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);  // read it as it comes
  } else if (!ok || !S_ISREG(st.st_mode)) {
    out.why = "not a regular file";
    ::close(fd);
    return out;
  }
  out.fd = fd;
  return out;
}

}  // namespace mtlsd::util
