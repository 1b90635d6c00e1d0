#include "mtlsd/log/log.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>

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

// Drops of every kind not yet told about in the events (see report_drops), and the last write
// error among them (0: an output only did not keep up).
std::atomic<std::uint64_t> unreported_drops{0};
std::atomic<int> unreported_write_error{0};

void count_drop(line_kind kind, int error) {
  unreported_drops.fetch_add(1, std::memory_order_relaxed);
  if (error) unreported_write_error.store(error, std::memory_order_relaxed);
  if (kind != line_kind::access) return;
  access_dropped.fetch_add(1, std::memory_order_relaxed);
  if (const auto* hook = drop_hook.load(std::memory_order_acquire)) (*hook)();
}

// Before start_async() and after a clean finish(): the CLI's way, one line at a time.
void write_now(const std::string& line) {
  static std::mutex mu;
  std::lock_guard lk(mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void report_drops(sink& events);

void emit(std::string line, line_kind kind) {
  sink* out = kind == line_kind::access ? access_out.load(std::memory_order_acquire) : nullptr;
  sink* events = events_out.load(std::memory_order_acquire);
  if (!out) out = events;
  if (out) {
    // Once the events output takes lines again, it says how many were lost before.
    if (out->push(std::move(line), kind) && out == events &&
        unreported_drops.load(std::memory_order_relaxed) != 0)
      report_drops(*events);
  } else if (abandoned.load(std::memory_order_relaxed)) {
    count_drop(kind, 0);
  } else {
    write_now(line);
  }
}

std::atomic<line_format> current_format{line_format::text};

std::string_view level_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

// A value needs quotes in text mode when it is empty or has spaces, quotes, '=', control
// characters or anything not ASCII (then append_json_escaped checks its UTF-8).
bool needs_quotes(std::string_view s) {
  if (s.empty()) return true;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || u < 0x20 || u >= 0x7f) return true;
  }
  return false;
}

// `v`, or its first field_value_limit bytes (not splitting a UTF-8 sequence) and how many more
// there were, kept in `storage`.
std::string_view cut_to_limit(std::string_view v, std::string& storage) {
  if (v.size() <= field_value_limit) return v;
  // Back over at most 3 continuation bytes (a UTF-8 sequence has at most 4 bytes): invalid
  // UTF-8, a run of them a peer may send, must not cut the value to nothing.
  std::size_t keep = field_value_limit;
  while (keep > field_value_limit - 3 && (static_cast<unsigned char>(v[keep]) & 0xC0) == 0x80)
    --keep;
  storage.assign(v.substr(0, keep));
  storage += "...(" + std::to_string(v.size() - keep) + " more bytes)";
  return storage;
}

void append_value(std::string& out, const field& f, bool json) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string_view>) {
          std::string storage;
          const std::string_view text = cut_to_limit(v, storage);
          if (json || needs_quotes(text)) {
            out += '"';
            append_json_escaped(out, text);
            out += '"';
          } else {
            out += text;
          }
        } else if constexpr (std::is_same_v<T, null_value>) {
          out += json ? "null" : "\"\"";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          if (!std::isfinite(v)) {  // JSON has no inf/nan; text keeps the line parseable too
            out += json ? "null" : (std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf"));
            return;
          }
          char buf[32];
          auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
          out.append(buf, ec == std::errc{} ? p : buf);
        } else {
          out += std::to_string(v);
        }
      },
      f.value);
}

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

// The line's body (format_line) after the level; `out` already holds what goes before.
void append_body(std::string& out, line_format format, spdlog::level::level_enum level,
                 std::string_view msg, fields f);

// One allocation per line: sized from the longest line this thread made so far (an access
// line is ~600 bytes), so the appends below rarely reallocate.
std::string make_line(spdlog::level::level_enum level, std::string_view msg, fields f) {
  thread_local std::size_t longest = 256;
  const auto format = current_format.load(std::memory_order_relaxed);
  char ts_buf[32];
  const std::string_view ts = format_rfc3339(ts_buf, std::chrono::system_clock::now(), true);
  std::string line;
  line.reserve(longest);
  if (format == line_format::json) {
    line += "{\"ts\":\"";
    line += ts;
    line += "\",";
    append_body(line, format, level, msg, f);
    line += "}\n";
  } else {
    line += ts;
    line += ' ';
    append_body(line, format, level, msg, f);
    line += '\n';
  }
  longest = std::clamp(line.size(), longest, std::size_t{4096});
  return line;
}

void report_drops(sink& events) {
  const std::uint64_t n = unreported_drops.exchange(0, std::memory_order_relaxed);
  if (n == 0 || !spdlog::default_logger_raw()->should_log(spdlog::level::warn)) return;
  // An output that fails (a full disk: ENOSPC) says why, not only that lines were lost (review).
  const int error = unreported_write_error.exchange(0, std::memory_order_relaxed);
  std::string notice =
      error ? make_line(spdlog::level::warn, "log lines dropped: writing to an output failed",
                        {{"lines", n}, {"error", std::strerror(error)}})
            : make_line(spdlog::level::warn, "log lines dropped: an output did not keep up",
                        {{"lines", n}});
  // Not taken either: keep the count for the next time (count_drop added one for the notice).
  if (!events.push(std::move(notice), line_kind::event))
    unreported_drops.fetch_add(n - 1, std::memory_order_relaxed);
}

void open_access_output(std::unique_lock<std::mutex>& lk);
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

// Opens log.access_log_path's output. `lk` holds access_mu.
void open_access_output(std::unique_lock<std::mutex>& lk) {
  const std::string path = access_path;
  if (path.empty() || path == "stderr") return;
  if (path == "stdout") {
    access_out.store(sink::for_fd(1, kQueueBytes, count_drop).release(), std::memory_order_release);
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
    access_out.store(sink::for_file(path, kQueueBytes, count_drop, reopened).release(),
                     std::memory_order_release);
    access_is_file = true;
  } catch (const std::system_error& e) {
    lk.unlock();
    log::error("cannot open log.access_log_path; access lines go to stderr", {{"error", e.what()}});
  }
}

}  // namespace

std::string format_line(line_format format, spdlog::level::level_enum level, std::string_view msg,
                        fields f) {
  std::string out;
  out.reserve(128);
  append_body(out, format, level, msg, f);
  return out;
}

namespace {

void append_body(std::string& out, line_format format, spdlog::level::level_enum level,
                 std::string_view msg, fields f) {
  if (format == line_format::json) {
    out += "\"level\":\"";
    out += level_name(level);
    out += "\",\"msg\":\"";
    append_json_escaped(out, msg);
    out += '"';
    for (const auto& x : f) {
      out += ",\"";
      append_json_escaped(out, x.key);
      out += "\":";
      append_value(out, x, true);
    }
    return;
  }
  out += level_name(level);
  out += ' ';
  // One event, one line, and nothing a terminal would act on (CR, ESC...).
  for (char c : msg)
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  for (const auto& x : f) {
    out += ' ';
    out += x.key;
    out += '=';
    append_value(out, x, false);
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
  events_out.store(sink::for_fd(2, kQueueBytes, count_drop).release(), std::memory_order_release);
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
  if (!access_is_file) {
    lk.unlock();
    info("SIGUSR1: log.access_log_path names no file; nothing to reopen");
    return;
  }
  access_out.load()->reopen();
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

}  // namespace mtlsd::log
