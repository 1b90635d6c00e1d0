#include "mtlsd/log/log.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>

#include "line.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/sink.hpp"

namespace mtlsd::log {
namespace {

// Per output: ~500 access lines of burst while the reader is slow, at most this much memory.
constexpr std::size_t kQueueBytes = 128 * 1024;

// Set once, never freed: a writer thread left behind by finish() may still hold them, and
// workers read them without a lock.
std::atomic<sink*> events_out{nullptr};  // null: written by the calling thread
std::atomic<sink*> access_out{nullptr};  // null: access lines go with the events
std::atomic<bool> abandoned{false};      // finish() gave up on a stuck output: drop
std::atomic<std::uint64_t> access_dropped{0};
std::atomic<const std::function<void()>*> drop_hook{nullptr};

// log.access_log_path as first applied (later changes wait for a restart).
std::mutex access_mu;
bool access_configured = false;
std::string access_path;  // as configured
bool access_is_file = false;

// The lines one output lost, and what the events still have to say of them (tell_losses): at
// most one warning per output each kNoticeEvery, the first at once, with the lines lost since
// the one before; and a line when the output writes again after a failed write.
constexpr auto kNoticeEvery = std::chrono::seconds(10);
using steady = std::chrono::steady_clock;
struct losses {
  std::string output;                       // as the lines name it; set before its sink exists
  std::atomic<std::uint64_t> untold{0};     // lines lost since the last line about them
  std::atomic<int> error{0};                // the last write error among those (0: none)
  std::atomic<int> failed_with{0};          // the write error of the failure under way
  std::atomic<bool> failing{false};         // its last write failed (its writer's)
  std::atomic<bool> writes_again{false};    // it wrote after failing: a line is due
  std::atomic<bool> asked{false};           // the events' writer is to look (sink::call_at)
  std::atomic<steady::rep> warn_after{0};   // no warning before this (steady ticks)
  std::atomic<steady::rep> again_after{0};  // no "writing again" line before this
};
losses events_losses{.output = "stderr"};
losses access_losses;
thread_local bool telling = false;  // tell_losses pushing: a notice not taken is not a loss

// Has the events' writer look at `l` (tell_losses) when a line about it may go. Any thread;
// never waits on an output.
void ask_to_tell(losses& l) {
  if (l.asked.load(std::memory_order_relaxed) || l.asked.exchange(true)) return;
  sink* events = events_out.load(std::memory_order_acquire);
  if (!events) {
    l.asked = false;  // none (finish() retired it): nobody to tell
    return;
  }
  const auto at = (l.writes_again ? l.again_after : l.warn_after).load();  // as tell() decides
  events->call_at(steady::time_point(steady::duration(at)));
}

void count_drop(losses& l, line_kind kind, int error) {
  if (telling) return;
  l.untold.fetch_add(1, std::memory_order_relaxed);
  if (error) {
    l.error.store(error, std::memory_order_relaxed);
    l.failed_with.store(error, std::memory_order_relaxed);
  }
  if (kind == line_kind::access) {
    access_dropped.fetch_add(1, std::memory_order_relaxed);
    if (const auto* hook = drop_hook.load(std::memory_order_acquire)) (*hook)();
  }
  ask_to_tell(l);
}

// On the output's writer thread, after each batch.
void note_written(losses& l, sink::writer_event e) {
  if (e == sink::writer_event::write_failed) {
    l.failing = true;
  } else if (e == sink::writer_event::wrote && l.failing.load(std::memory_order_relaxed)) {
    l.failing = false;
    l.writes_again = true;
    ask_to_tell(l);
  }
}

// Before start_async() and after a clean finish(): the CLI's way, one line at a time.
void write_now(const std::string& line) {
  static std::mutex mu;
  std::lock_guard lk(mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

// The string of a line this thread's output wrote, for its next line (sink::push).
thread_local std::string spare_line;

void emit(std::string line, line_kind kind) {
  sink* out = kind == line_kind::access ? access_out.load(std::memory_order_acquire) : nullptr;
  if (!out) out = events_out.load(std::memory_order_acquire);
  if (out) {
    out->push(std::move(line), kind, &spare_line);
  } else if (abandoned.load(std::memory_order_relaxed)) {
    count_drop(events_losses, kind, 0);
  } else {
    write_now(line);
  }
}

std::atomic<line_format> current_format{line_format::text};

// Installs the process logger once and only adjusts its level afterwards. setup() runs again
// on every reload while workers are logging through spdlog::default_logger_raw(); replacing the
// default logger then would free it under their feet (a crash seen under load). The logger only
// filters by level: it has no spdlog sink, lines go out through emit().
void install(spdlog::level::level_enum level) {
  static std::once_flag once;
  std::call_once(once,
                 [] { spdlog::set_default_logger(std::make_shared<spdlog::logger>("mtlsd")); });
  spdlog::default_logger_raw()->set_level(level);  // an atomic store
}

std::string make_line(spdlog::level::level_enum level, std::string_view msg, fields f,
                      line_format format = current_format.load(std::memory_order_relaxed)) {
  std::string line = detail::begin_line(std::move(spare_line), format, level, msg);
  append_fields(line, format, f);
  detail::end_line(line, format);
  return line;
}

// What `l` has to say, if its time came: on the events' writer thread (after each batch it wrote,
// and when ask_to_tell's time comes), so a worker never formats or waits for it (review: lost
// access lines went untold until some event was logged).
void tell(losses& l, sink& events) {
  l.asked = false;  // before looking: a loss counted from now asks again
  const bool again = l.writes_again.load();
  if (!again && l.untold.load(std::memory_order_relaxed) == 0) return;
  const auto now = steady::now().time_since_epoch().count();
  if (now < (again ? l.again_after : l.warn_after).load()) return ask_to_tell(l);
  l.writes_again = false;
  const std::uint64_t n = l.untold.exchange(0, std::memory_order_relaxed);
  const int error = l.error.exchange(0, std::memory_order_relaxed);
  if (!spdlog::default_logger_raw()->should_log(spdlog::level::warn)) return;
  // An output that fails (a full disk: ENOSPC) says why, not only that lines were lost (review).
  const int failed = l.failed_with.load(std::memory_order_relaxed);
  std::string line =
      again   ? make_line(spdlog::level::warn, "log output writing again",
                          {{"output", l.output}, {"lines", n}, {"error", std::strerror(failed)}})
      : error ? make_line(spdlog::level::warn, "log lines dropped: writing to an output failed",
                          {{"output", l.output}, {"lines", n}, {"error", std::strerror(error)}})
              : make_line(spdlog::level::warn, "log lines dropped: an output did not keep up",
                          {{"output", l.output}, {"lines", n}});
  telling = true;
  const bool taken = events.push(std::move(line), line_kind::event);
  telling = false;
  if (!taken) {  // the queue is full: its next batch looks again
    l.untold.fetch_add(n, std::memory_order_relaxed);
    if (error) l.error.store(error, std::memory_order_relaxed);
    if (again) l.writes_again = true;
    return;
  }
  (again ? l.again_after : l.warn_after) =
      (steady::now() + kNoticeEvery).time_since_epoch().count();
}

// The events' writer thread's on_written: its own losses and the access output's.
void tell_losses(sink::writer_event e) {
  note_written(events_losses, e);
  sink* events = events_out.load(std::memory_order_acquire);
  if (!events) return;
  tell(events_losses, *events);
  if (access_out.load(std::memory_order_acquire)) tell(access_losses, *events);
}

void open_access_output(std::unique_lock<std::mutex>& lk, bool again = false);
bool async_started = false;  // guarded by access_mu

// Applies log.access_log_path the first time; a later, different value waits for a restart
// (workers push to the output without a lock, so it is never swapped under them).
void configure_access(const std::string& path) {
  std::unique_lock lk(access_mu);
  if (access_configured) {
    if (path == access_path) return;
    const std::string old = access_path;
    lk.unlock();
    warn("'log.access_log_path' changed; the new path takes effect after a restart",
         {{"path", old}});
    return;
  }
  access_configured = true;
  access_path = path;
  // The output (and its writer thread) comes with start_async(): the daemon enters its sandbox
  // first, and only a process with a single thread can.
  if (!async_started) return;
  open_access_output(lk);
}

// Opens log.access_log_path's output. `lk` holds access_mu. `again`: SIGUSR1 after the open
// at start failed (a FIFO whose reader was not running yet): access lines move there now.
void open_access_output(std::unique_lock<std::mutex>& lk, bool again) {
  const std::string path = access_path;
  if (path.empty() || path == "stderr") return;
  access_losses.output = path;  // before the sink: its lines about losses name it
  auto dropped = [](line_kind kind, int error) { count_drop(access_losses, kind, error); };
  auto written = [](sink::writer_event e) { note_written(access_losses, e); };
  if (path == "stdout") {
    access_out.store(sink::for_fd(1, kQueueBytes, dropped, written).release(),
                     std::memory_order_release);
    return;
  }
  try {
    auto reopened = [path](const std::string& error) {
      if (error.empty())
        info("access log reopened", {{"path", path}});
      else
        log::error("cannot reopen the access log; still writing to the previous file",
                   {{"error", error}});
    };
    access_out.store(sink::for_file(path, kQueueBytes, dropped, reopened, written).release(),
                     std::memory_order_release);
    access_is_file = true;
    lk.unlock();
    if (again) info("SIGUSR1: access log opened; access lines go there from now", {{"path", path}});
  } catch (const std::system_error& e) {
    lk.unlock();
    if (again)
      log::error("SIGUSR1: cannot open log.access_log_path; access lines still go to stderr",
                 {{"error", e.what()}});
    else
      log::error("cannot open log.access_log_path; access lines go to stderr",
                 {{"error", e.what()}});
  }
}

}  // namespace

line_format current_line_format() {
  return current_format.load(std::memory_order_relaxed);
}

void setup_default() {
  install(spdlog::level::info);
}

void setup(const settings& options) {
  current_format = options.format;
  install(spdlog::level::from_str(options.level));
  configure_access(options.access_log_path);
}

void start_async() {
  if (events_out.load()) return;
  // fd 2 stays open for the process lifetime; the sink never closes it.
  events_out.store(
      sink::for_fd(
          2, kQueueBytes, [](line_kind kind, int error) { count_drop(events_losses, kind, error); },
          tell_losses)
          .release(),
      std::memory_order_release);
  std::unique_lock lk(access_mu);
  async_started = true;
  if (access_configured) open_access_output(lk);
}

bool finish(std::chrono::milliseconds limit) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + limit;
  auto left = [&] {
    return std::max(std::chrono::milliseconds(0),
                    std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()));
  };
  bool ok = true;
  if (auto* a = access_out.load()) ok = a->stop(left()) && ok;
  if (auto* e = events_out.load()) {
    for (losses* l : {&events_losses, &access_losses}) {  // untold losses: told now, the last
      l->warn_after = l->again_after = 0;
      tell(*l, *e);
    }
    if (e->stop(left())) {
      // stderr reads again: write directly from now on. The stopped sink stays reachable (a
      // thread may still hold the pointer it loaded), which also keeps LeakSanitizer quiet.
      static std::atomic<sink*> retired{nullptr};
      retired.store(events_out.exchange(nullptr));
    } else {
      abandoned = true;
      ok = false;
    }
  }
  // What it counted into may go away after this (the daemon's metrics).
  static std::atomic<const std::function<void()>*> retired_hook{nullptr};  // reachable, as above
  retired_hook.store(drop_hook.exchange(nullptr, std::memory_order_acq_rel));
  return ok;
}

void reopen() {
  std::unique_lock lk(access_mu);
  if (access_is_file) return access_out.load()->reopen();
  // Not open: its open at start failed (review: SIGUSR1 said "names no file" and never tried).
  if (async_started && access_configured && !access_path.empty() && access_path != "stderr" &&
      access_path != "stdout")
    return open_access_output(lk, true);
  lk.unlock();
  info("SIGUSR1: log.access_log_path names no file; nothing to reopen");
}

void set_access_drop_hook(std::function<void()> hook) {
  // Leaked on purpose: a worker may be calling the previous one.
  drop_hook.store(hook ? new std::function<void()>(std::move(hook)) : nullptr,
                  std::memory_order_release);
}

bool enabled(spdlog::level::level_enum level) {
  return spdlog::default_logger_raw()->should_log(level);
}

void write(spdlog::level::level_enum level, std::string_view msg, fields f) {
  if (!spdlog::default_logger_raw()->should_log(level)) return;
  emit(make_line(level, msg, f), line_kind::event);
}

void write_access_line(std::string_view msg, fields f) {
  // log.level filters events only; access_log: true means one line per connection at any
  // level, on stderr as in a file of its own (as nginx's access_log is apart from error_log).
  emit(make_line(spdlog::level::info, msg, f), line_kind::access);
}

std::string begin_access_line(line_format format, std::string_view msg) {
  return detail::begin_line(std::move(spare_line), format, spdlog::level::info, msg);
}

void end_access_line(std::string line, line_format format) {
  detail::end_line(line, format);
  emit(std::move(line), line_kind::access);
}

}  // namespace mtlsd::log
