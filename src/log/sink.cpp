#include "mtlsd/log/sink.hpp"

#include "sink_output.hpp"

#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace mtlsd::log {

namespace {

// Under load a line rarely comes alone: once woken, the writer waits this long for more before
// writing, so a line per connection costs one wake-up and one writev() per batch instead of per
// line (measured on the bench VM: ~33 us of CPU per lone line, mostly the context switch and
// the write). An access line reaches its output at most this much later; an event line (rare,
// and what an operator or a test watching the log waits for), flush(), stop() and a queue
// filling up cut the wait short.
constexpr auto kGather = std::chrono::milliseconds(10);

// The most parts one writev takes (IOV_MAX, as Linux has it).
constexpr std::size_t kMaxParts = 1024;

// The largest string kept to be handed back (push's `spare`): an access line takes ~600 bytes.
constexpr std::size_t kSpareLine = 4096;

}  // namespace

struct sink::state {
  struct entry {
    std::string line;  // empty for a reopen marker
    line_kind kind = line_kind::event;
    bool reopen = false;
  };

  using steady = std::chrono::steady_clock;

  state(int output, bool owned, std::string file, std::size_t max, drop_handler d, reopen_handler r,
        written_handler w)
      : fd(output),
        owns_fd(owned),
        path(std::move(file)),
        max_bytes(max),
        on_drop(std::move(d)),
        on_reopen(std::move(r)),
        on_written(std::move(w)) {}
  state(const state&) = delete;
  state& operator=(const state&) = delete;
  ~state() {
    if (owns_fd && fd >= 0) ::close(fd);
  }

  // Only the writer thread touches these four after construction.
  int fd;
  bool owns_fd;
  std::string path;
  bool mid_line = false;  // the last write stopped inside a line

  const std::size_t max_bytes;
  // A quarter of the bound: past it the writer stops gathering, so a burst is written well
  // before the queue is full and lines are dropped.
  const std::size_t urgent_bytes = max_bytes / 4;
  const drop_handler on_drop;
  const reopen_handler on_reopen;
  const written_handler on_written;

  std::mutex mu;
  std::condition_variable wake;     // the writer waits for lines
  std::condition_variable written;  // flush() waits for the writer
  std::vector<entry> queue;
  std::size_t queued_bytes = 0;   // queued or being written: the bound covers both
  std::uint64_t pushed = 0;       // entries accepted
  std::uint64_t done = 0;         // entries written or lost
  bool closed = false;            // stop() began: refuse new lines
  bool stopping = false;          // the writer returns once the queue is empty
  int flushers = 0;               // flush() calls waiting: write now, do not gather
  std::size_t queued_events = 0;  // event lines and reopen markers queued: write now
  // The strings of lines written, emptied, for push() to hand back: a line then costs no
  // allocation (in the worker) and no free (here), ~400 instructions of a ~2,500-instruction
  // access line. Their capacity stays within a half of max_bytes (a burst's worth of lines).
  std::vector<std::string> spares;
  std::size_t spare_bytes = 0;
  steady::time_point due = steady::time_point::max();  // call_at(): on_written(timer) then
  std::atomic<std::uint64_t> dropped{0};

  void drop(line_kind kind, int error = 0) {
    dropped.fetch_add(1, std::memory_order_relaxed);
    if (on_drop) on_drop(kind, error);
  }

  void do_reopen() {
    if (path.empty()) return;
    const int fresh = detail::open_append(path);
    if (fresh < 0) {
      if (on_reopen) on_reopen(detail::open_failure(path, errno));
      return;  // keep writing to the old file rather than lose lines
    }
    if (owns_fd && fd >= 0) ::close(fd);
    fd = fresh;
    owns_fd = true;
    mid_line = false;  // a new file
    if (on_reopen) on_reopen({});
  }

  // Writes `parts` (`lead` bytes, then batch[first, end)'s lines, `size` bytes in all): the
  // lines written whole count as written, the others as dropped, and one cut in the middle is
  // remembered. False when a write failed.
  bool write_lines(std::span<iovec> parts, std::size_t size, std::size_t lead,
                   const std::vector<entry>& batch, std::size_t first, std::size_t end) {
    int error = 0;
    const std::size_t wrote = detail::write_all(fd, parts, error);
    if (wrote == size) {
      mid_line = false;
      return true;
    }
    std::size_t line_end = lead;
    bool at_boundary = lead == 0 ? wrote == 0 : false;
    for (std::size_t j = first; j < end; ++j) {
      if (wrote == line_end) at_boundary = true;
      line_end += batch[j].line.size();
      if (line_end > wrote) drop(batch[j].kind, error);
    }
    mid_line = !at_boundary;
    return false;
  }

  // Keeps the strings of `batch` as spares while there is room. Guarded by mu.
  void keep_spares(std::vector<entry>& batch) {
    for (auto& e : batch) {
      const std::size_t capacity = e.line.capacity();
      if (capacity > kSpareLine) continue;  // a long line's: a usual one would waste it
      if (capacity <= std::string().capacity()) continue;  // in the string itself: nothing to keep
      if (spare_bytes + capacity > max_bytes / 2) return;
      e.line.clear();
      spares.push_back(std::move(e.line));
      spare_bytes += capacity;
    }
  }

  // Guarded by mu.
  bool must_write_now() const {
    return stopping || closed || flushers > 0 || queued_events > 0 || queued_bytes >= urgent_bytes;
  }

  // Waits for lines (then gathers, see kGather) or for the time call_at() asked; true when that
  // time came. Leaves the lines to write in `batch`. Guarded by mu (`lk`).
  bool wait_for_work(std::unique_lock<std::mutex>& lk, std::vector<entry>& batch) {
    bool timer = false;
    while (queue.empty() && !stopping) {
      if (due == steady::time_point::max()) {
        wake.wait(lk);
      } else if (steady::now() >= due) {
        timer = true;
        break;
      } else {
        wake.wait_until(lk, due);
      }
    }
    if (!queue.empty()) {
      wake.wait_for(lk, kGather, [&] { return must_write_now(); });
      batch.swap(queue);
      queued_events = 0;
    }
    if (due != steady::time_point::max() && (timer || steady::now() >= due)) {
      due = steady::time_point::max();
      timer = true;
    }
    return timer;
  }

  static void run(const std::shared_ptr<state>& s) {
    std::vector<entry> batch;
    std::vector<iovec> parts;
    static const char newline = '\n';
    for (;;) {
      bool timer = false;
      {
        std::unique_lock lk(s->mu);
        timer = s->wait_for_work(lk, batch);
        if (batch.empty() && !timer) return;  // stopping, and nothing left
      }
      if (timer && s->on_written) s->on_written(writer_event::timer);
      if (batch.empty()) continue;
      bool wrote_any = false, failed = false;
      std::size_t bytes = 0;
      std::size_t i = 0;
      while (i < batch.size()) {
        // One writev per run of lines (up to 64 KiB), not one write per line, straight from the
        // lines' strings: copied into one buffer first, they cost the writer ~230 instructions
        // a line (callgrind, the bench's http_accesslog).
        parts.clear();
        const std::size_t first = i;
        // A write that failed in the middle of a line left it unended: the next starts with a
        // newline, so that line is not glued to the next one (review: one invalid JSON line).
        const std::size_t lead = s->mid_line ? 1 : 0;
        if (lead) parts.push_back({const_cast<char*>(&newline), 1});
        std::size_t size = lead;
        while (i < batch.size() && !batch[i].reopen && size < 65536 && parts.size() < kMaxParts) {
          std::string& line = batch[i++].line;
          parts.push_back({line.data(), line.size()});
          size += line.size();
        }
        bytes += size - lead;
        if (size > lead) {
          wrote_any = true;
          if (!s->write_lines(parts, size, lead, batch, first, i)) failed = true;
        }
        if (i < batch.size() && batch[i].reopen) {
          s->do_reopen();
          ++i;
        }
      }
      {
        std::lock_guard lk(s->mu);
        s->queued_bytes -= bytes;
        s->done += batch.size();
        s->keep_spares(batch);
      }
      s->written.notify_all();
      batch.clear();
      if (wrote_any && s->on_written)
        s->on_written(failed ? writer_event::write_failed : writer_event::wrote);
    }
  }
};

sink::sink(std::shared_ptr<state> s) : state_(std::move(s)) {
  writer_ = std::thread([s = state_] { state::run(s); });
}

std::unique_ptr<sink> sink::for_fd(int fd, std::size_t max_bytes, drop_handler on_drop,
                                   written_handler on_written) {
  return std::unique_ptr<sink>(new sink(std::make_shared<state>(
      fd, false, std::string(), max_bytes, std::move(on_drop), nullptr, std::move(on_written))));
}

std::unique_ptr<sink> sink::for_file(const std::string& path, std::size_t max_bytes,
                                     drop_handler on_drop, reopen_handler on_reopen,
                                     written_handler on_written) {
  const int fd = detail::open_append(path);
  if (fd < 0) {
    const int err = errno;
    if (err == ENXIO)
      throw std::system_error(err, std::generic_category(), detail::open_failure(path, err));
    throw std::system_error(err, std::generic_category(), path);
  }
  return std::unique_ptr<sink>(new sink(std::make_shared<state>(
      fd, true, path, max_bytes, std::move(on_drop), std::move(on_reopen), std::move(on_written))));
}

sink::~sink() {
  if (!writer_.joinable()) return;
  {
    std::lock_guard lk(state_->mu);
    state_->stopping = true;
  }
  state_->wake.notify_one();
  writer_.join();
}

bool sink::push(std::string line, line_kind kind, std::string* spare) {
  const std::size_t size = line.size();
  bool accepted = false;
  bool wake = false;
  {
    std::lock_guard lk(state_->mu);
    if (!state_->closed && state_->queued_bytes + size <= state_->max_bytes) {
      // The writer waits for a first line, then gathers access lines until the queue grows
      // past urgent_bytes: waking it for another access line is a wasted syscall. An event
      // line ends the gathering.
      const std::size_t before = state_->queued_bytes;
      wake = state_->queue.empty() || kind == line_kind::event ||
             (before < state_->urgent_bytes && before + size >= state_->urgent_bytes);
      if (kind == line_kind::event) ++state_->queued_events;
      state_->queue.push_back({std::move(line), kind, false});
      state_->queued_bytes += size;
      ++state_->pushed;
      accepted = true;
    }
    if (spare && !state_->spares.empty()) {
      *spare = std::move(state_->spares.back());
      state_->spares.pop_back();
      state_->spare_bytes -= spare->capacity();
    }
  }
  if (!accepted) {
    state_->drop(kind);
    return false;
  }
  if (wake) state_->wake.notify_one();
  return true;
}

void sink::reopen() {
  {
    std::lock_guard lk(state_->mu);
    if (state_->closed) return;
    state_->queue.push_back({std::string(), line_kind::event, true});
    ++state_->queued_events;
    ++state_->pushed;
  }
  state_->wake.notify_one();
}

void sink::call_at(std::chrono::steady_clock::time_point t) {
  {
    std::lock_guard lk(state_->mu);
    if (state_->closed || t >= state_->due) return;
    state_->due = t;
  }
  state_->wake.notify_one();
}

bool sink::flush(std::chrono::milliseconds limit) {
  std::unique_lock lk(state_->mu);
  const std::uint64_t target = state_->pushed;
  if (state_->done >= target) return true;
  ++state_->flushers;  // the writer stops gathering
  lk.unlock();
  state_->wake.notify_one();
  lk.lock();
  const bool all = state_->written.wait_for(lk, limit, [&] { return state_->done >= target; });
  --state_->flushers;
  return all;
}

bool sink::stop(std::chrono::milliseconds limit) {
  if (!writer_.joinable()) return true;
  {
    std::lock_guard lk(state_->mu);
    state_->closed = true;
  }
  const bool all_written = flush(limit);
  {
    std::lock_guard lk(state_->mu);
    state_->stopping = true;
  }
  state_->wake.notify_one();
  if (all_written)
    writer_.join();
  else
    writer_.detach();  // blocked in writev(): it holds its own reference to the state
  return all_written;
}

std::uint64_t sink::dropped() const {
  return state_->dropped.load(std::memory_order_relaxed);
}

}  // namespace mtlsd::log
