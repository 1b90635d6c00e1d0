#include "mtlsd/metrics/process_collector.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace mtlsd::metrics {
namespace {

// The fields of /proc/self/stat we use (proc(5) numbering).
struct stat_fields {
  bool ok = false;
  double utime_ticks = 0, stime_ticks = 0;  // 14, 15
  double threads = 0;                       // 20
  double start_ticks = 0;                   // 22: since boot
  double vsize = 0;                         // 23: bytes
  double rss_pages = 0;                     // 24
};

stat_fields read_stat() {
  stat_fields f;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return f;
  // Field 2 is "(comm)" and comm may contain spaces or ')': fields after it start after the last
  // ')'. What follows is field 3 (state).
  const auto close = line.rfind(')');
  if (close == std::string::npos) return f;
  std::istringstream rest(line.substr(close + 1));
  std::string tok;
  for (int field = 3; rest >> tok && field <= 24; ++field) {
    const double v = std::strtod(tok.c_str(), nullptr);
    switch (field) {
      case 14:
        f.utime_ticks = v;
        break;
      case 15:
        f.stime_ticks = v;
        break;
      case 20:
        f.threads = v;
        break;
      case 22:
        f.start_ticks = v;
        break;
      case 23:
        f.vsize = v;
        break;
      case 24:
        f.rss_pages = v;
        f.ok = true;
        break;
      default:
        break;
    }
  }
  return f;
}

double boot_time() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Entries of /proc/self/fd other than . and .. (the directory's own descriptor included, as
// client_golang counts it).
double open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  double n = 0;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

prometheus::MetricFamily family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter)
    m.counter.value = value;
  else
    m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

process_collector::process_collector() {
  const auto stat = read_stat();
  const double btime = boot_time();
  const long ticks = ::sysconf(_SC_CLK_TCK);
  start_time_ = stat.ok && btime > 0 && ticks > 0
                    ? btime + stat.start_ticks / static_cast<double>(ticks)
                    : unix_now();
}

std::vector<prometheus::MetricFamily> process_collector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  out.push_back(family("process_start_time_seconds",
                       "Start time of the process since unix epoch in seconds.", MetricType::Gauge,
                       start_time_));
  const auto stat = read_stat();
  if (stat.ok) {
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    out.push_back(family("process_cpu_seconds_total",
                         "Total user and system CPU time spent in seconds.", MetricType::Counter,
                         (stat.utime_ticks + stat.stime_ticks) / ticks));
    out.push_back(family("process_resident_memory_bytes", "Resident memory size in bytes.",
                         MetricType::Gauge, stat.rss_pages * page));
    out.push_back(family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                         MetricType::Gauge, stat.vsize));
    out.push_back(family("process_threads", "Number of OS threads in the process.",
                         MetricType::Gauge, stat.threads));
  }
  if (const double fds = open_fds(); fds >= 0)
    out.push_back(
        family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, fds));
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
    out.push_back(family("process_max_fds", "Maximum number of open file descriptors.",
                         MetricType::Gauge, static_cast<double>(lim.rlim_cur)));
  return out;
}

std::vector<prometheus::MetricFamily> collectables::Collect() const {
  if (before_) before_();
  std::vector<prometheus::MetricFamily> out;
  for (const auto& p : parts_) {
    auto more = p->Collect();
    out.insert(out.end(), std::make_move_iterator(more.begin()),
               std::make_move_iterator(more.end()));
  }
  return out;
}

}  // namespace mtlsd::metrics
