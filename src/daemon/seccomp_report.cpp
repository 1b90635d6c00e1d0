// What a system call outside the seccomp policy leaves behind. SCMP_ACT_KILL_PROCESS alone
// ends the process without a word in its own log: the kernel's audit line (`dmesg`) is out of
// reach in most containers, so an operator saw only "exited with signal 31". The filter traps
// instead (SIGSYS, the call not made), and the handler here writes one critical line naming the
// call to stderr, where the other log lines go, then ends the process with SIGSYS as the kill
// would have (a core dump where they are enabled). The kernel writes no audit line for a
// trapped call (it did for the kill): this line replaces it. Logging traps in the kernel too
// (SCMP_FLTATR_CTL_LOG) would log every EACCES and ENOSYS the policy answers as well.
//
// Nothing the handler does may allocate or lock: it may run in any thread, inside malloc.
// System call names are therefore looked up once, before the filter is loaded.
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string_view>

#include "mtlsd/daemon/sandbox.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

// Numbers below this are named (x86_64 has ~460, aarch64 fewer); others print as "unknown".
constexpr int kNamed = 1024;
// Filled once by report_violations and never freed: the handler may read them until the end.
const char* g_names[kNamed] = {};
std::uint32_t g_native_arch = 0;

constexpr std::string_view kMessage =
    "sandbox: a system call outside the seccomp policy was refused; mtlsd ends (a bug in mtlsd's "
    "policy, or code that should not run: please report the call's name)";

// Appends `s` while it fits (one byte is kept back for the newline).
struct line_writer {
  char* p;
  char* end;
  void put(std::string_view s) {
    const auto n = std::min<std::size_t>(s.size(), static_cast<std::size_t>(end - p));
    std::memcpy(p, s.data(), n);
    p += n;
  }
  void put_number(unsigned long v, int base = 10) {
    char digits[24];
    int n = 0;
    do {
      digits[n++] = "0123456789abcdef"[v % static_cast<unsigned>(base)];
      v /= static_cast<unsigned>(base);
    } while (v != 0);
    if (base == 16) put("0x");
    while (n > 0 && p < end)
      *p++ = digits[--n];
  }
};

// Writes all of `line` to stderr, waiting a little (poll: no lock) if someone made it
// non-blocking; gives up when stderr is gone.
void write_stderr(const char* line, std::size_t n) {
  int waits = 0;
  for (std::size_t done = 0; done < n;) {
    const ssize_t w = ::write(2, line + done, n - done);
    if (w > 0) {
      done += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++waits <= 10) {
      pollfd p{2, POLLOUT, 0};
      ::poll(&p, 1, 100);
      continue;
    }
    return;  // stderr is gone: the death below still says SIGSYS
  }
}

// si_code of a seccomp trap (SYS_SECCOMP in the kernel's asm-generic/siginfo.h; glibc's headers
// do not name it).
constexpr int kSysSeccomp = 1;

// A call no build of the policy allows (no such system call): trapped, whatever the filter.
constexpr long kNeverAllowed = 0x3fff;

void on_sigsys(int, siginfo_t* info, void*) {
  // Only seccomp's trap is reported; a SIGSYS sent by someone (kill -SYS) just ends the process.
  if (info->si_code == kSysSeccomp) {
    const int number = info->si_syscall;
    const unsigned arch = info->si_arch;
    const bool native = arch == g_native_arch;
    const char* name = native && number >= 0 && number < kNamed ? g_names[number] : nullptr;
    char ts_buf[32];
    const auto ts = log::format_rfc3339(ts_buf, std::chrono::system_clock::now(), true);
    char line[512];
    write_stderr(line, format_violation(line, ts, number, name, native ? 0 : arch));
  }
  // The end, as SCMP_ACT_KILL_PROCESS would have made it, and never a return: the trapped call
  // was not made, and the code after it would run on with a made-up result. SIGSYS back to its
  // default action, then a call the filter traps, while SIGSYS is still blocked (this handler
  // runs): the kernel forces the signal (unblocked, default action) and the whole process dies
  // of it, with a core dump where enabled. Forced, it ends even PID 1 (mtlsd is in its
  // container image), which ignores a SIGSYS merely sent to it.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGSYS, &dfl, nullptr);
  ::syscall(kNeverAllowed);
  ::syscall(SYS_exit_group, 128 + SIGSYS);  // not reached; were it, still no return
}

}  // namespace

std::size_t format_violation(char (&out)[512], std::string_view ts, int number, const char* name,
                             unsigned arch) {
  line_writer w{out, out + sizeof out - 1};
  const bool json = log::current_line_format() == log::line_format::json;
  const bool foreign = arch != 0;
  const std::string_view shown = name ? std::string_view(name) : std::string_view("unknown");
  // A field as the log writes it: `,"key":value` in JSON (strings quoted), ` key=value` in text.
  auto field = [&](std::string_view key, bool quoted, auto&& write_value) {
    w.put(json ? ",\"" : " ");
    w.put(key);
    w.put(json ? (quoted ? "\":\"" : "\":") : "=");
    write_value();
    if (json && quoted) w.put("\"");
  };
  if (json) {
    w.put("{\"ts\":\"");
    w.put(ts);
    w.put("\",\"level\":\"critical\",\"msg\":\"");
    w.put(kMessage);
    w.put("\"");
  } else {
    w.put(ts);
    w.put(" critical ");
    w.put(kMessage);
  }
  field("syscall", true, [&] { w.put(shown); });
  field("number", false,
        [&] { w.put_number(static_cast<unsigned long>(static_cast<unsigned>(number))); });
  if (foreign) field("arch", true, [&] { w.put_number(arch, 16); });
  if (json) w.put("}");
  *w.p++ = '\n';
  return static_cast<std::size_t>(w.p - out);
}

void report_violations() {
  g_native_arch = seccomp_arch_native();
  for (int nr = 0; nr < kNamed; ++nr)
    if (!g_names[nr]) g_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  struct sigaction sa {};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGSYS, &sa, nullptr);
}

}  // namespace mtlsd::daemon::sandbox
