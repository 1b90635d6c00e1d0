// no_new_privs and an empty capability set. Raw syscalls (no libcap): five calls do not justify a
// library. Capabilities are per thread; sandbox::enter() runs this before any thread starts.
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

#include "mtlsd/daemon/sandbox.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

int last_cap() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int n = CAP_LAST_CAP;
  in >> n;
  return n;
}

}  // namespace

std::string drop_privileges() {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("prctl(PR_SET_NO_NEW_PRIVS)");
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
  // The bounding set limits what an execve() could ever regain. Emptying it needs CAP_SETPCAP,
  // which an unprivileged process lacks; then it stays as it is, which is harmless here:
  // no_new_privs and the seccomp filter (no execve) leave no way to regain anything.
  int kept = 0;
  for (int cap = 0; cap <= last_cap(); ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
    if (errno != EPERM) fail("prctl(PR_CAPBSET_DROP)");
    ++kept;
  }
  // Only when something is held: the shipped systemd unit refuses capset (@privileged, EPERM)
  // and starts us with no capability at all, and an unconditional capset failed the start
  // there (review).
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct held[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, held) != 0) fail("capget");
  const bool none_held = std::all_of(std::begin(held), std::end(held), [](const auto& d) {
    return d.effective == 0 && d.permitted == 0 && d.inheritable == 0;
  });
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (!none_held && ::syscall(SYS_capset, &header, data) != 0) fail("capset");
  if (kept == 0) return {};
  return std::to_string(kept) +
         " capabilities stay in the bounding set (no CAP_SETPCAP to drop them); none is usable";
}

}  // namespace mtlsd::daemon::sandbox
