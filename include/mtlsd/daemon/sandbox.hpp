#pragma once
// The sandbox mtlsd enters after start-up (listeners bound, files loaded), before any thread
// starts: no_new_privs, no capabilities, a seccomp filter that kills the process on any system
// call outside the policy (src/daemon/seccomp_policy.cpp), and, where the kernel has it,
// Landlock limiting file access to the directories the configuration names (read-only) plus the
// few system files the resolver and OpenSSL read. Threads created afterwards inherit all of it.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mtlsd/config/config.hpp"

namespace mtlsd::daemon::sandbox {

// The file-system view a process needs. Entries are absolute paths; directories cover what is
// beneath them (so a Kubernetes `..data` swap inside a named directory stays covered).
struct paths {
  std::vector<std::string> read;  // read-only, files or directories
  // Directories (never their parents) in which files may be created, opened for writing and
  // truncated, but nothing removed or made other than regular files: the access log's
  // directory, so that a rotated log can be re-created on SIGUSR1; SoftHSM's token directory,
  // where a login is recorded.
  std::vector<std::string> write_dirs;
  // Directories where unix listener sockets are (re)created. (Connecting to a unix socket, such as
  // the SPIFFE Workload API's, needs no rule: it is no Landlock file right.)
  std::vector<std::string> sockets;
};

// What a configuration names: the directory of the configuration file and of every file it
// references (both as written and after following symlinks), unix listener directories. The
// directory of the access log file, when one is configured, and SoftHSM's token directory are
// in `write_dirs`.
paths paths_for(const config::configuration& cfg);

// Files the process itself reads at run time whatever the configuration: resolver configuration,
// shared libraries (NSS modules getaddrinfo loads), OpenSSL's configuration and default trust
// store, /proc/self, /dev/urandom, /dev/null.
paths system_paths();

struct state {
  bool active = false;                            // false: `sandbox: false`
  int landlock_abi = 0;                           // 0: Landlock not enforced (kernel without it)
  std::vector<std::filesystem::path> read_roots;  // canonical, from paths_for() at start-up
  // Each read root's device and inode at start-up ({0, 0}: it did not exist): Landlock's rules
  // hold those directories, not their paths.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> read_root_ids;
  std::vector<std::filesystem::path> socket_roots;  // canonical
  std::vector<std::filesystem::path> write_roots;   // canonical, paths_for().write_dirs
  bool write_files = false;                         // seccomp_options::write_files at start-up
};

// Enters the sandbox for `cfg` (or logs that it is off). Must run while the calling thread is the
// only one: capabilities and Landlock apply to the calling thread and the threads it creates
// later. Throws std::runtime_error when it cannot (the daemon then does not start).
state enter(const config::configuration& cfg);

// For a reload inside the sandbox: "" when `next` only names files the sandbox lets us read (and
// unix listeners where it lets us create sockets); otherwise an error that says the change needs
// a restart. Logs a warning when `sandbox` itself changed (that also takes a restart).
std::string check_reload(const state& s, const config::configuration& next);

// Building blocks, one file each.
// Landlock ABI version of the running kernel; 0 when absent or disabled (errno in `why`).
int landlock_abi(std::string* why = nullptr);
// Landlock scopes (ABI 6; the kernel's LANDLOCK_SCOPE_* values): what the process may not reach
// outside its own Landlock domain.
inline constexpr std::uint64_t kScopeAbstractUnixSocket = 1ULL << 0;  // connect/send to abstract
inline constexpr std::uint64_t kScopeSignal = 1ULL << 1;  // signals, F_SETOWN's SIGIO included
// The scopes for `abi` (none below 6): signals always; abstract unix sockets unless
// `notify_socket` (NOTIFY_SOCKET, may be null) is an abstract address, which sd_notify sends to.
std::uint64_t landlock_scopes(int abi, const char* notify_socket);
// Restricts the calling thread (and threads it creates later) to `p`, and to
// landlock_scopes(abi, $NOTIFY_SOCKET). Paths that do not exist are skipped. Throws
// std::runtime_error on failure.
void landlock_restrict(int abi, const paths& p);
// What the seccomp policy lets through beyond the fixed list, from the configuration at start-up.
// It matters most on kernels without Landlock, where seccomp is all that limits file writes.
struct seccomp_options {
  // open()/openat() for writing (O_WRONLY, O_RDWR, O_CREAT, O_TRUNC): only when an access log
  // file or a SoftHSM key is configured; otherwise such an open fails with EACCES (a visible
  // error, not a kill).
  bool write_files = false;
  // unlink(), rename() and chmod() (and their *at forms): only when there are unix listeners or
  // a unix admin.address (a listener bound on reload removes its stale socket, or is renamed
  // over the path of the one it replaces, and is given its unix_socket_mode; the admin socket is
  // removed at exit). A reload cannot add a unix listener in a new directory without a restart.
  bool unix_socket_files = false;
};
seccomp_options seccomp_options_for(const config::configuration& cfg);
// Loads the seccomp policy for all threads; a system call outside it kills the process, after
// one critical log line naming the call (report_violations). Returns the number of system calls
// allowed. Throws std::runtime_error on failure.
int install_seccomp(const seccomp_options& opts);
// Makes a system call that traps (SCMP_ACT_TRAP) write one critical log line to stderr naming
// it, then end the process with SIGSYS, as SCMP_ACT_KILL_PROCESS would have. Called by
// install_seccomp before it loads the filter; seccomp_report.cpp.
void report_violations();
// The line report_violations writes for system call `number` (`name`; null: unknown) of `arch`
// (0: the native architecture, else its AUDIT_ARCH value), in the current log.format; `ts` its
// time. Formatted without allocation, as a signal handler must.
// Returns the length written into `out` (at most its size, ending with a newline).
std::size_t format_violation(char (&out)[512], std::string_view ts, int number, const char* name,
                             unsigned arch);
// PR_SET_NO_NEW_PRIVS, then empties the ambient, bounding (where we may), inheritable, permitted
// and effective capability sets. Returns a note when the bounding set could not be emptied.
std::string drop_privileges();

}  // namespace mtlsd::daemon::sandbox
