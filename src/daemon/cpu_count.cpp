#include "mtlsd/daemon/cpu_count.hpp"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace mtlsd::daemon {
namespace {

std::optional<std::uint64_t> number(std::string_view s) {
  std::uint64_t n = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return n;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  return s;
}

std::optional<std::string> read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The CPUs in this thread's affinity mask (the process's: no thread has been started yet);
// 0 when it cannot be read. The mask is grown until the kernel's fits (hosts past 1024 CPUs).
unsigned affinity_cpus() {
  for (int size = 1024; size <= (1 << 20); size *= 2) {
    cpu_set_t* set = CPU_ALLOC(size);
    if (!set) return 0;
    const std::size_t bytes = CPU_ALLOC_SIZE(size);
    const int rc = ::sched_getaffinity(0, bytes, set);
    const int n = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
    const int err = errno;
    CPU_FREE(set);
    if (rc == 0) return static_cast<unsigned>(n);
    if (err != EINVAL) return 0;
  }
  return 0;
}

// Normalised, without a trailing "/" ("/sys/fs/cgroup/" is "/sys/fs/cgroup").
std::filesystem::path normal(const std::filesystem::path& p) {
  auto n = p.lexically_normal();
  if (!n.has_filename() && n != n.root_path()) n = n.parent_path();
  return n;
}

}  // namespace

std::optional<unsigned> parse_cpu_max(std::string_view text) {
  text = trimmed(text);
  const auto space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const auto quota = number(text.substr(0, space));  // "max": not a number, no limit
  const auto period = number(trimmed(text.substr(space + 1)));
  if (!quota || !period || *period == 0) return std::nullopt;
  const std::uint64_t cpus = (*quota + *period - 1) / *period;
  return static_cast<unsigned>(std::clamp<std::uint64_t>(cpus, 1, 1u << 20));
}

std::string_view cgroup_v2_path(std::string_view text) {
  while (!text.empty()) {
    const auto eol = text.find('\n');
    const auto line = text.substr(0, eol);
    if (line.starts_with("0::")) return trimmed(line.substr(3));
    if (eol == std::string_view::npos) break;
    text.remove_prefix(eol + 1);
  }
  return {};
}

std::optional<unsigned> cgroup_cpu_limit(const std::filesystem::path& root, std::string_view path) {
  const auto top = normal(root);
  auto dir = normal(top / std::filesystem::path(path).relative_path());
  // A path that leads out of `root` (".."): nothing there is this process's cgroup.
  if (std::mismatch(top.begin(), top.end(), dir.begin(), dir.end()).first != top.end())
    return std::nullopt;
  std::optional<unsigned> tightest;
  // From the process's cgroup up to the root: a parent's limit binds its children too.
  for (;;) {
    if (auto text = read_file(dir / "cpu.max"))
      if (auto limit = parse_cpu_max(*text); limit && (!tightest || *limit < *tightest))
        tightest = limit;
    if (dir == top) return tightest;
    dir = dir.parent_path();
  }
}

cpu_count count_cpus() {
  cpu_count c;
  c.online = std::thread::hardware_concurrency();
  c.allowed = affinity_cpus();
  if (auto text = read_file("/proc/self/cgroup"))
    if (const auto path = cgroup_v2_path(*text); !path.empty())
      c.quota = cgroup_cpu_limit("/sys/fs/cgroup", path);
  unsigned n = c.allowed ? c.allowed : c.online;
  if (c.quota) n = std::min(n, *c.quota);
  c.usable = std::max(1u, n);
  return c;
}

}  // namespace mtlsd::daemon
