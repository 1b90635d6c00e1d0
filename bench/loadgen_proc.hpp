// /proc sampling for mtlsd_loadgen: CPU seconds and memory of a process tree (a server and all
// its descendants, e.g. nginx's master and workers).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

namespace loadgen {

// The given processes and all their descendants.
std::vector<pid_t> process_tree(const std::vector<pid_t>& roots);

// utime + stime of the whole tree, in seconds (10 ms ticks).
double tree_cpu_seconds(const std::vector<pid_t>& roots);

// VmRSS summed over the tree, KiB. Pages shared between processes count once per process.
std::uint64_t tree_rss_kib(const std::vector<pid_t>& roots);

// Pss (from /proc/PID/smaps_rollup) summed over the tree, KiB: a page shared by n processes
// counts 1/n in each, so the sum is the tree's real share of memory (nginx's workers share the
// master's pages; summing their RSS would count those pages once per worker).
std::uint64_t tree_pss_kib(const std::vector<pid_t>& roots);

// The load generator's own CPU seconds (all its threads).
double self_cpu_seconds();

}  // namespace loadgen
