#pragma once
// Opening a file that must be a regular one (credentials, CA bundles, CRLs, the configuration):
// a FIFO or device put in its place would block the read forever — on the control thread, which
// also answers signals, reloads and the admin server — so it is refused before any read.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace mtlsd::util {

struct opened_file {
  int fd = -1;      // open for reading (the caller closes it), or -1
  int error = 0;    // errno of the failure, 0 when the path is not a regular file
  std::string why;  // what failed, for messages: strerror, or "not a regular file"
};

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
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    out.why = "not a regular file";
    ::close(fd);
    return out;
  }
  out.fd = fd;
  return out;
}

}  // namespace mtlsd::util
