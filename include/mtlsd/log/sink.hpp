#pragma once
// A log output that never makes the logging thread wait on I/O (issue 11 #8: a stderr pipe
// nobody reads froze every worker). Lines go into a bounded FIFO under a short lock; one writer
// thread per output drains it with blocking writes, in batches: woken by a first line, it
// gathers for up to 10 ms (less when the queue fills or someone flushes), so a steady trickle
// of lines costs one wake-up and one write per batch. When the output is slower than the lines
// come, push() drops the line and reports it, instead of waiting. After each batch the writer
// says how its writes went (on_written), so that the owner can tell of losses and of an output
// that writes again; call_at() wakes the writer for that owner at a set time without a line.
//
// The FIFO is shared by every producer, so lines from one thread keep their order (and lines of
// different threads keep the order in which they were pushed).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace mtlsd::log {

enum class line_kind : std::uint8_t { event, access };

class sink {
 public:
  // Called (from any thread) for each line pushed into a full queue (`error` 0), or lost on a
  // write error (`error`: its errno, e.g. ENOSPC).
  using drop_handler = std::function<void(line_kind, int error)>;
  // Called on the writer thread after a reopen: empty = done, else why it failed (the old file
  // is kept then).
  using reopen_handler = std::function<void(const std::string& error)>;
  // Called on the writer thread after each batch of lines: `wrote` (all went out) or
  // `write_failed` (a write failed: on_drop was told of each line lost); and `timer` when a time
  // asked with call_at() came (nothing written then).
  enum class writer_event : std::uint8_t { wrote, write_failed, timer };
  using written_handler = std::function<void(writer_event)>;

  // Writes to `fd`, which stays the caller's (stderr, stdout, a pipe in tests).
  static std::unique_ptr<sink> for_fd(int fd, std::size_t max_bytes, drop_handler on_drop = {},
                                      written_handler on_written = {});
  // Appends to the file `path` (created 0640). Throws std::system_error when it cannot be
  // opened.
  static std::unique_ptr<sink> for_file(const std::string& path, std::size_t max_bytes,
                                        drop_handler on_drop = {}, reopen_handler on_reopen = {},
                                        written_handler on_written = {});

  sink(const sink&) = delete;
  sink& operator=(const sink&) = delete;
  // Stops the writer after it has written what is queued; waits for it (use stop() to bound
  // the wait on an output that does not read).
  ~sink();

  // `line` must end with '\n'. Never waits on the output: false when the line was dropped.
  // With `spare`: the string of a line already written, if the sink kept one, is moved there
  // (empty, its capacity kept) for the caller's next line, which then allocates nothing.
  bool push(std::string line, line_kind kind, std::string* spare = nullptr);

  // A file sink: closes and opens the path again once the lines pushed before this call are
  // written (logrotate renames the file, then signals). No effect on an fd sink.
  void reopen();

  // Has the writer call on_written(timer) at `t` (at once if it passed), lines or not. Never
  // waits on the output; the earliest time asked and not yet come wins. Ignored once stopping.
  void call_at(std::chrono::steady_clock::time_point t);

  // Waits up to `limit` until every line pushed before the call is written (or lost).
  bool flush(std::chrono::milliseconds limit);

  // Bounded final flush: waits up to `limit` for the queue to be written, then stops the
  // writer. If the output is stuck the writer thread is left behind (it owns its state and
  // touches nothing else) and later pushes are dropped. True when everything was written.
  bool stop(std::chrono::milliseconds limit);

  std::uint64_t dropped() const;  // lines dropped or lost, every kind

 private:
  struct state;
  explicit sink(std::shared_ptr<state> s);
  std::shared_ptr<state> state_;
  std::thread writer_;
};

}  // namespace mtlsd::log
