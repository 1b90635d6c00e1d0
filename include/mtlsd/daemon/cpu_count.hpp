#pragma once
// How many CPUs this process may use, for `workers: 0` (one event loop each): the CPUs of its
// affinity mask (taskset, a cpuset: what the kernel lets it run on), capped by the CPU bandwidth
// limit of its cgroup v2 and of each cgroup above it (cpu.max: a container's CPU limit, rounded
// up), at least 1: the two sources Go (GOMAXPROCS, since 1.25) reads too.
// std::thread::hardware_concurrency() counts the CPUs online: a container limited to one CPU on
// a 64-core node started 64 workers.
// Read at start, before the sandbox (which hides /sys).
#include <filesystem>
#include <optional>
#include <string_view>

namespace mtlsd::daemon {

struct cpu_count {
  unsigned online = 0;            // the CPUs the host has online
  unsigned allowed = 0;           // in the affinity mask
  std::optional<unsigned> quota;  // ceil(quota / period) of the tightest cpu.max; none: "max"
  unsigned usable = 1;            // min(allowed, quota), at least 1
};

// One cpu.max ("$MAX $PERIOD", e.g. "150000 100000"): ceil(MAX / PERIOD), at least 1; none for
// "max" (no limit) or text that is not two such numbers.
std::optional<unsigned> parse_cpu_max(std::string_view text);

// The cgroup v2 path in /proc/self/cgroup's text (its "0::PATH" line); empty when it has none.
std::string_view cgroup_v2_path(std::string_view proc_self_cgroup);

// The tightest limit of the cpu.max files from `root`/`path` up to `root`; none when no file
// there limits (or none can be read).
std::optional<unsigned> cgroup_cpu_limit(const std::filesystem::path& root, std::string_view path);

// This process's count, read now (sched_getaffinity, /proc/self/cgroup, /sys/fs/cgroup).
cpu_count count_cpus();

}  // namespace mtlsd::daemon
