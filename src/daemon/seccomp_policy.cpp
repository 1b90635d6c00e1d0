// The seccomp policy: every system call mtlsd makes after start-up, grouped by who needs it. Any
// other call is not made, and ends the whole process after one critical log line naming it
// (SCMP_ACT_TRAP and seccomp_report.cpp).
// Adding a call here is the fix when a new code path needs one; the integration suite (dev and ASan
// builds) runs every path under this filter.
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "mtlsd/daemon/sandbox.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

// Allowed with any arguments. Names (not numbers) so that one table serves every architecture;
// a name the architecture does not have (e.g. `open` on aarch64) is skipped.
// clang-format off
constexpr const char* kAllowed[] = {
    // Memory: glibc malloc, thread stacks, OpenSSL, Asio buffers.
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
    // Threads and synchronisation: std::thread, std::mutex/condition_variable, the Asio
    // scheduler, glibc's per-thread set-up (clone itself is filtered below).
    "futex", "set_robust_list", "get_robust_list", "rseq", "sched_yield", "sched_getaffinity",
    "gettid", "getpid", "set_tid_address", "exit", "exit_group", "restart_syscall", "nanosleep",
    "clock_nanosleep",
    // Clocks: timers, log timestamps, certificate expiry (vDSO usually, the syscalls as fallback).
    "clock_gettime", "clock_getres", "gettimeofday", "time",
    // Randomness: OpenSSL's DRBG seeding.
    "getrandom",
    // Files: reload re-reads the configuration, certificates, keys, CAs and CRLs; the watcher
    // fingerprints them; getaddrinfo reads /etc/resolv.conf and /etc/hosts and dlopens NSS
    // modules; std::filesystem::absolute needs getcwd. Landlock says *which* files; open and
    // openat are filtered by their flags below, and so is fcntl by its command.
    "close", "read", "pread64", "readv", "lseek", "fstat", "stat", "lstat",
    "newfstatat", "statx", "statfs", "fstatfs", "getdents64", "readlink", "readlinkat", "access",
    "faccessat", "faccessat2", "dup", "dup3", "getcwd",
    // Output: spdlog to stderr/stdout, the access log file. ftruncate: SoftHSM rewrites its token
    // file at each login, which a reload naming a token not logged in yet makes (review: the
    // daemon was killed); only a descriptor opened for writing can be truncated, and opens for
    // writing are filtered below.
    "write", "writev", "pwrite64", "fsync", "fdatasync", "ftruncate",
    // Asio's reactor: epoll, eventfd and timerfd (pipe2 as its fallback interrupter); getaddrinfo
    // and libsystemd poll.
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime", "pipe2", "poll", "ppoll",
    "select", "pselect6",
    // The file watcher (reload.watch).
    "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
    // Sockets (socket() itself is filtered by family below): accepting peers, binding listeners a
    // reload adds, upstream connects (TCP and unix), OCSP and CRL fetches, the admin endpoint,
    // DNS (getaddrinfo, c-ares: sendmmsg for parallel A/AAAA queries), sd_notify (sendmsg on a
    // unix datagram socket).
    "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "setsockopt",
    "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    // Signals: Asio's signal_set (SIGHUP, SIGTERM, SIGINT), SIGPIPE ignored, abort()'s unblocking.
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    // Identity and limits queried by OpenSSL, NSS and libsystemd; getgroups by the key-permission
    // check on reload (is a key's group one mtlsd runs in).
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getppid", "uname",
    "sysinfo", "getrlimit", "getrusage", "getgroups",
    // The SPIFFE Workload API client (tls.spiffe): gRPC reads its threads' scheduling policy
    // (pthread_getschedparam) when it starts them. Reads only.
    "sched_getparam", "sched_getscheduler",
};
// clang-format on

#ifdef MTLSD_SANITIZER_BUILD
// ASan/UBSan/LSan runtimes only: LeakSanitizer stops the world at exit with a ptrace()ing helper
// task (clone without CLONE_THREAD, prctl(PR_SET_PTRACER), waitpid, kill), lists our threads in
// /proc/PID/task (with the old getdents on x86_64), reads /proc/self/maps, and adjusts limits.
// Never in a release build.
// clang-format off
constexpr const char* kSanitizerOnly[] = {
    "ptrace",    "getdents",         "wait4",   "waitid",         "kill",
    "tkill",     "tgkill",           "clone",   "prctl",          "prlimit64",
    "setrlimit", "process_vm_readv", "mincore",
    // (sched_getparam and sched_getscheduler, which they use too, are in kAllowed for gRPC.)
};
// clang-format on
#endif

using ctx_ptr = std::unique_ptr<void, void (*)(scmp_filter_ctx)>;

[[noreturn]] void fail(const std::string& what, int rc) {
  throw std::runtime_error("seccomp: " + what + ": " + std::strerror(-rc));
}

// Allows `name` when argument `arg` equals one of `values` (several rules are OR-ed).
int allow_if(scmp_filter_ctx ctx, const char* name, unsigned arg,
             std::initializer_list<scmp_datum_t> values) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return 0;
  for (auto v : values) {
    const scmp_arg_cmp cmp{arg, SCMP_CMP_EQ, v, 0};
    if (int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp); rc < 0)
      fail(std::string("rule for ") + name, rc);
  }
  return 1;
}

int allow(scmp_filter_ctx ctx, const char* name) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return 0;
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0); rc < 0)
    fail(std::string("rule for ") + name, rc);
  return 1;
}

// Allows `name` when all of `cmps` hold (one rule: the comparisons are AND-ed).
int allow_all_of(scmp_filter_ctx ctx, const char* name, std::initializer_list<scmp_arg_cmp> cmps) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return 0;
  if (int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(cmps.size()),
                                      cmps.begin());
      rc < 0)
    fail(std::string("rule for ") + name, rc);
  return 1;
}

// open(flags = arg 1), openat(flags = arg 2): read-only opens always; opens for writing only
// when `write` (an access log file is configured), otherwise they fail with EACCES.
int allow_opens(scmp_filter_ctx ctx, bool write) {
  int n = 0;
  for (auto [name, arg] : {std::pair{"open", 1U}, std::pair{"openat", 2U}}) {
    if (write) {
      n += allow(ctx, name);
      continue;
    }
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;
    constexpr scmp_datum_t kWriting = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
    n += allow_all_of(ctx, name, {scmp_arg_cmp{arg, SCMP_CMP_MASKED_EQ, kWriting, 0}});
    for (scmp_datum_t bit : {scmp_datum_t{O_WRONLY}, scmp_datum_t{O_RDWR}, scmp_datum_t{O_CREAT},
                             scmp_datum_t{O_TRUNC}}) {
      const scmp_arg_cmp cmp{arg, SCMP_CMP_MASKED_EQ, bit, bit};
      if (int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EACCES), nr, 1, &cmp); rc < 0)
        fail(std::string("rule for ") + name, rc);
    }
  }
  return n;
}

// fcntl() (fcntl64 on 32-bit architectures): only the commands used. Close-on-exec and status
// flags (glibc's fdopen and opendir, gRPC, c-ares, OpenSSL, spdlog), F_DUPFD_CLOEXEC
// (libsystemd's sd_notify), record locks (SoftHSM's token files; lockf, the sqlite-like
// locking of other PKCS#11 modules; the OFD kind too). Not F_SETOWN, F_SETSIG, F_SETLEASE or
// F_NOTIFY, nor F_SETFL with O_ASYNC: with those a descriptor's events send a signal to any
// process of our user, a kill() the filter refuses (review: a SIGKILL through a pipe).
int allow_fcntl(scmp_filter_ctx ctx) {
  int n = 0;
  for (const char* name : {"fcntl", "fcntl64"}) {
    if (seccomp_syscall_resolve_name(name) < 0) continue;  // not on this architecture
    n += allow_if(ctx, name, 1,
                  {F_GETFD, F_SETFD, F_GETFL, F_DUPFD_CLOEXEC, F_GETLK, F_SETLK, F_SETLKW,
                   F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW});
#if F_GETLK64 != F_GETLK  // 32-bit architectures: the locks with 64-bit offsets too
    allow_if(ctx, name, 1, {F_GETLK64, F_SETLK64, F_SETLKW64});
#endif
    allow_all_of(ctx, name,
                 {scmp_arg_cmp{1, SCMP_CMP_EQ, F_SETFL, 0},
                  scmp_arg_cmp{2, SCMP_CMP_MASKED_EQ, O_ASYNC, 0}});
  }
  return n;
}

}  // namespace

int install_seccomp(const seccomp_options& opts) {
  ctx_ptr ctx(seccomp_init(SCMP_ACT_TRAP), seccomp_release);
  if (!ctx) throw std::runtime_error("seccomp: cannot initialise a filter");
  // A call of another architecture (int 0x80 on x86_64) too: libseccomp's default for those
  // kills only the calling thread, and a process missing a worker thread runs on broken.
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP); rc < 0)
    fail("action for other architectures", rc);
  // All threads (there should be one; this makes sure).
  if (int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1); rc < 0)
    fail("thread synchronisation", rc);
  int n = 0;
  for (const char* name : kAllowed)
    n += allow(ctx.get(), name);

  n += allow_opens(ctx.get(), opts.write_files);
  n += allow_fcntl(ctx.get());
  // A unix listener bound on reload removes its stale socket file (net/socket.cpp), or binds
  // beside a path a running listener serves and is renamed over it (daemon/listener_set.cpp),
  // and is given its unix_socket_mode (chmod; glibc's chmod is fchmodat on some architectures);
  // with no unix listener at start-up a reload cannot add one without a restart (check_reload),
  // so nothing removes, renames or chmods files. A unix admin.address's socket file is removed
  // at exit (admin_server.cpp): that needs unlink too.
  if (opts.unix_socket_files) {
    n += allow(ctx.get(), "unlink");
    n += allow(ctx.get(), "unlinkat");
    n += allow(ctx.get(), "rename");
    n += allow(ctx.get(), "renameat");
    n += allow(ctx.get(), "renameat2");
    n += allow(ctx.get(), "chmod");
    n += allow(ctx.get(), "fchmodat");
  }

  // socket(): the families mtlsd uses: TCP over IPv4/IPv6, unix (upstreams, sd_notify), and
  // netlink for routing information only: getaddrinfo's AI_ADDRCONFIG and if_nameindex ask the
  // kernel over NETLINK_ROUTE which addresses are configured (glibc's __netlink_open).
  n += allow_if(ctx.get(), "socket", 0, {AF_INET, AF_INET6, AF_UNIX});
  n += allow_all_of(ctx.get(), "socket",
                    {scmp_arg_cmp{0, SCMP_CMP_EQ, AF_NETLINK, 0},
                     scmp_arg_cmp{2, SCMP_CMP_EQ, NETLINK_ROUTE, 0}});
  // ioctl(): non-blocking mode and readable-byte counts (Asio), isatty() (spdlog's colour
  // check), interface index/name of IPv6 scope ids (if_nametoindex/if_indextoname), a socket's
  // unacknowledged bytes (SIOCOUTQ: an HTTP/2 client's progress while a write waits).
  n += allow_if(ctx.get(), "ioctl", 1,
                {FIONBIO, FIONREAD, FIOCLEX, FIONCLEX, TCGETS, TIOCGWINSZ, SIOCGIFINDEX,
                 SIOCGIFNAME, SIOCOUTQ});
  // prlimit64(): reading limits only (new_limit == NULL).
  n += allow_if(ctx.get(), "prlimit64", 2, {0});
  // tgkill(): to ourselves only (abort(), raise()).
  n += allow_if(ctx.get(), "tgkill", 0, {static_cast<scmp_datum_t>(::getpid())});
  // prctl(): thread names and reads; nothing that changes privileges.
  n += allow_if(ctx.get(), "prctl", 0, {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_SET_VMA});
  // Threads only: clone() must carry CLONE_THREAD (no new processes). glibc tries clone3()
  // first, whose flags a filter cannot see; ENOSYS makes it fall back to clone().
  {
    const int nr = seccomp_syscall_resolve_name("clone");
    const scmp_arg_cmp thread{0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD};
    if (int rc = seccomp_rule_add_array(ctx.get(), SCMP_ACT_ALLOW, nr, 1, &thread); rc < 0)
      fail("rule for clone", rc);
    ++n;
    const int nr3 = seccomp_syscall_resolve_name("clone3");
    if (nr3 != __NR_SCMP_ERROR)
      if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), nr3, 0); rc < 0)
        fail("rule for clone3", rc);
  }
#ifdef MTLSD_SANITIZER_BUILD
  for (const char* name : kSanitizerOnly)
    n += allow(ctx.get(), name);
#endif
  report_violations();  // before the filter: from then on a trap must find the handler
  if (int rc = seccomp_load(ctx.get()); rc < 0) fail("cannot load the filter", rc);
  return n;
}

}  // namespace mtlsd::daemon::sandbox
