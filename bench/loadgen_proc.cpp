// /proc sampling for mtlsd_loadgen (see loadgen_proc.hpp).
#include "loadgen_proc.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>

namespace loadgen {
namespace {

struct proc_info {
  pid_t ppid = 0;
  std::uint64_t ticks = 0;  // utime + stime
};

bool read_proc(pid_t pid, proc_info& out) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  const auto close = line.rfind(')');  // the command name may contain spaces and parentheses
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> fields;
  std::string tok;
  while (rest >> tok && fields.size() < 13)
    fields.push_back(tok);
  if (fields.size() < 13) return false;
  // fields[0] is field 3 (state): ppid = field 4, utime = field 14, stime = field 15.
  out.ppid = static_cast<pid_t>(std::stol(fields[1]));
  out.ticks = std::stoull(fields[11]) + std::stoull(fields[12]);
  return true;
}

// The value (in kB) of the first line of `file` that starts with `key`, 0 when there is none.
std::uint64_t kib_field(const std::string& file, std::string_view key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stoull(line.substr(key.size()));
  }
  return 0;
}

}  // namespace

std::vector<pid_t> process_tree(const std::vector<pid_t>& roots) {
  std::map<pid_t, std::vector<pid_t>> children;
  if (DIR* d = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      proc_info pi;
      if (read_proc(static_cast<pid_t>(pid), pi)) {
        children[pi.ppid].push_back(static_cast<pid_t>(pid));
      }
    }
    ::closedir(d);
  }
  std::vector<pid_t> out;
  std::vector<pid_t> todo = roots;
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    if (std::find(out.begin(), out.end(), p) != out.end()) continue;
    out.push_back(p);
    const auto it = children.find(p);
    if (it != children.end()) todo.insert(todo.end(), it->second.begin(), it->second.end());
  }
  return out;
}

// Each process's CPU clock (nanoseconds, every thread, living or ended) where the kernel lets us
// read it; /proc's utime + stime (10 ms ticks) otherwise. The ticks alone made a 2-second window
// of ~0.2 CPU-seconds uncertain by ~5%, more than the costs some rows compare.
double tree_cpu_seconds(const std::vector<pid_t>& roots) {
  static const long hz = ::sysconf(_SC_CLK_TCK);
  double seconds = 0;
  for (const pid_t p : process_tree(roots)) {
    clockid_t clock{};
    timespec t{};
    if (::clock_getcpuclockid(p, &clock) == 0 && ::clock_gettime(clock, &t) == 0) {
      seconds += static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
      continue;
    }
    proc_info pi;
    if (read_proc(p, pi)) seconds += static_cast<double>(pi.ticks) / static_cast<double>(hz);
  }
  return seconds;
}

std::uint64_t tree_rss_kib(const std::vector<pid_t>& roots) {
  std::uint64_t kib = 0;
  for (const pid_t p : process_tree(roots)) {
    kib += kib_field("/proc/" + std::to_string(p) + "/status", "VmRSS:");
  }
  return kib;
}

std::uint64_t tree_pss_kib(const std::vector<pid_t>& roots) {
  std::uint64_t kib = 0;
  for (const pid_t p : process_tree(roots)) {
    kib += kib_field("/proc/" + std::to_string(p) + "/smaps_rollup", "Pss:");
  }
  return kib;
}

double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  const auto tv = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

}  // namespace loadgen
