// Landlock: limits which files the process may open, after start-up. The kernel headers of the
// build machine may be older than the kernel we run on, so the ABI is asked at run time and the
// access rights are spelled out here (they are stable kernel ABI).
#include <fcntl.h>
#include <linux/landlock.h>
#include <linux/magic.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "mtlsd/daemon/sandbox.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

// File-system access rights by the ABI that introduced them.
constexpr std::uint64_t kExecute = 1ULL << 0, kWriteFile = 1ULL << 1, kReadFile = 1ULL << 2,
                        kReadDir = 1ULL << 3, kRemoveFile = 1ULL << 5, kMakeReg = 1ULL << 8,
                        kMakeSock = 1ULL << 9;
constexpr std::uint64_t kAbi1All = (1ULL << 13) - 1;  // EXECUTE .. MAKE_SYM
constexpr std::uint64_t kRefer = 1ULL << 13;          // ABI 2
constexpr std::uint64_t kTruncate = 1ULL << 14;       // ABI 3
constexpr std::uint64_t kIoctlDev = 1ULL << 15;       // ABI 5
// Rights that make sense on a file (not a directory) in a rule.
constexpr std::uint64_t kFileRights = kExecute | kWriteFile | kReadFile | kTruncate | kIoctlDev;

// Our own copies of the kernel structures: the build machine's header may lack fields (Debian
// 12's has no `scoped`). A larger ruleset_attr with zero tail is accepted by every kernel version.
struct ruleset_attr {
  std::uint64_t handled_access_fs;
  std::uint64_t handled_access_net;  // not handled: upstreams and OCSP need the network
  std::uint64_t scoped;              // ABI 6: kScope* (sandbox.hpp)
};
struct path_beneath_attr {
  std::uint64_t allowed_access;
  std::int32_t parent_fd;
} __attribute__((packed));

constexpr unsigned kVersionFlag = 1U << 0;  // LANDLOCK_CREATE_RULESET_VERSION
constexpr int kRulePathBeneath = 1;         // LANDLOCK_RULE_PATH_BENEATH

long create_ruleset(const ruleset_attr* attr, std::size_t size, unsigned flags) {
  return ::syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

std::uint64_t handled_for(int abi) {
  std::uint64_t h = kAbi1All;
  if (abi >= 2) h |= kRefer;
  if (abi >= 3) h |= kTruncate;
  if (abi >= 5) h |= kIoctlDev;
  return h;
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// Adds one rule; a path that does not exist is skipped (e.g. /lib64 on some systems).
void add_rule(int ruleset, const std::string& path, std::uint64_t rights, std::uint64_t handled) {
  fd_guard fd{::open(path.c_str(), O_PATH | O_CLOEXEC)};
  if (fd.fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return;
    throw std::runtime_error("landlock: cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0)
    throw std::runtime_error("landlock: cannot stat " + path + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) rights &= kFileRights;
  path_beneath_attr attr{rights & handled, fd.fd};
  if (attr.allowed_access == 0) return;
  if (::syscall(SYS_landlock_add_rule, ruleset, kRulePathBeneath, &attr, 0) != 0)
    throw std::runtime_error("landlock: cannot add a rule for " + path + ": " +
                             std::strerror(errno));
  // A rule names an inode. procfs and sysfs make a new one for a path whose dentry was evicted
  // (memory pressure, a cache drop), and the rule would no longer apply: every open below it
  // then failed (review: /proc/self/stat and /proc/self/fd, so the process metrics, vanished for
  // good). Their descriptor stays open for the life of the process, which pins the dentry.
  struct statfs fs {};
  if (::fstatfs(fd.fd, &fs) == 0 && (fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC))
    fd.fd = -1;
}

}  // namespace

int landlock_abi(std::string* why) {
  const long abi = create_ruleset(nullptr, 0, kVersionFlag);
  if (abi < 0) {
    if (why)
      *why = errno == ENOSYS ? "this kernel has no Landlock"
             : errno == EOPNOTSUPP
                 ? "Landlock is disabled on this kernel (boot with lsm=...,landlock)"
                 : std::string("landlock_create_ruleset: ") + std::strerror(errno);
    return 0;
  }
  return static_cast<int>(abi);
}

std::uint64_t landlock_scopes(int abi, const char* notify_socket) {
  if (abi < 6) return 0;
  // sd_notify (readiness, reloads, the watchdog) sends a datagram to NOTIFY_SOCKET from a new
  // socket each time, which this scope would refuse for an abstract address ("@..."; systemd
  // gives a path).
  if (notify_socket && notify_socket[0] == '@') return kScopeSignal;
  return kScopeSignal | kScopeAbstractUnixSocket;
}

void landlock_restrict(int abi, const paths& p) {
  const std::uint64_t handled = handled_for(abi);
  const ruleset_attr attr{handled, 0, landlock_scopes(abi, std::getenv("NOTIFY_SOCKET"))};
  const long rs = create_ruleset(&attr, sizeof attr, 0);
  if (rs < 0) throw std::runtime_error(std::string("landlock: ") + std::strerror(errno));
  fd_guard ruleset{static_cast<int>(rs)};
  for (const auto& r : p.read)
    add_rule(ruleset.fd, r, kReadFile | kReadDir, handled);
  // The access log's directory, exactly: write, truncate and create regular files there (a
  // rotated log is re-created). No removing, no directories, nothing above it.
  for (const auto& w : p.write_dirs)
    add_rule(ruleset.fd, w, kReadFile | kWriteFile | kTruncate | kMakeReg, handled);
  for (const auto& s : p.sockets)
    add_rule(ruleset.fd, s, kMakeSock | kRemoveFile, handled);
  // Required by the kernel without CAP_SYS_ADMIN; drop_privileges() has set it already.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    throw std::runtime_error(std::string("no_new_privs: ") + std::strerror(errno));
  if (::syscall(SYS_landlock_restrict_self, ruleset.fd, 0) != 0)
    throw std::runtime_error(std::string("landlock_restrict_self: ") + std::strerror(errno));
}

}  // namespace mtlsd::daemon::sandbox
