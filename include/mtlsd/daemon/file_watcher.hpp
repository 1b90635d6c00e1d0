#pragma once
// Notices when the configuration file or any file it names changes content, for hot reload.
//
// Watches *directories*, never files: a watch on a file dies when the file is replaced by a
// rename (editors, `mv`, cert-manager) or when a Kubernetes Secret volume swaps its `..data`
// symlink (the kubelet never touches `tls.crt` itself, so nothing by that name shows up in a
// directory watch either). For each file the watcher follows the path component by component:
// every symlink on the way is watched in its directory under its own name, then followed, so the
// `..data` rename counts as an event for `tls.crt`. A component that does not exist yet is
// watched in its nearest existing ancestor, and the watches are re-armed after every event batch
// so the watcher walks down as directories appear.
//
// An event only schedules a check; the check re-hashes the content of every tracked file and
// reports only those whose content really changed. So events in a busy directory (/etc) never
// cause a reload, and a `touch` or an identical rewrite does not either. A file that is not
// tracked being written (a log next to the config) schedules no check at all. Checks are debounced:
// a burst (a certificate and its key landing milliseconds apart, the kubelet's half-dozen renames)
// yields one check after it settles, and a tracked file that was modified and not closed yet
// (written in place: truncated, then written) holds the check until its close, up to max_delay, so
// it is not read half-written.
//
// `poll_interval > 0` adds a timer that runs the same check, for filesystems where inotify does
// not report changes (NFS, some FUSE and overlay setups) or when inotify is unavailable.
//
// Everything runs on one io_context (the daemon's control thread) and is not thread-safe.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mtlsd::daemon {

// What a file's content looked like at one moment: a SHA-256 of the bytes, or a marker for
// "missing" / "unreadable (errno)" / "not a regular file" (never read: a FIFO would block), so
// that a file appearing or vanishing counts as a change; or, when the process is out of
// descriptors or memory, transient_fingerprint and why: no answer, to be asked again.
inline constexpr std::string_view transient_fingerprint = "not now: ";
std::string content_fingerprint(const std::string& path);

// Directories to watch so that any change to `path` (absolute) produces an event, each with the
// entry names in it that concern `path`. Follows symlinks (up to 16 hops); stops at the first
// missing component and names it in its nearest existing ancestor.
std::map<std::string, std::set<std::string>> watch_points(const std::string& path);

class file_watcher {
 public:
  struct options {
    bool inotify = true;                         // reload.watch
    std::chrono::milliseconds poll_interval{0};  // reload.poll_interval; 0 = no polling
    std::chrono::milliseconds debounce{150};     // quiet time after the last relevant event
    std::chrono::milliseconds max_delay{1000};   // a check never waits longer than this
  };
  // Called after every check with the files whose content changed (often none) and what
  // triggered it ("file_change" or "poll"). It may call watch() and rescan().
  using check_handler =
      std::function<void(const std::vector<std::string>& changed, std::string_view trigger)>;

  file_watcher(boost::asio::io_context& ioc, check_handler on_check);
  ~file_watcher();
  file_watcher(const file_watcher&) = delete;
  file_watcher& operator=(const file_watcher&) = delete;

  // Sets the files to track (absolute paths) and how. A file already tracked keeps the
  // fingerprint it had, so a change that lands while a reload is reading files is still seen
  // afterwards; a newly tracked file is fingerprinted now — call this before reading the files.
  void watch(const std::vector<std::string>& files, const options& opts);

  // Re-fingerprints every tracked file, makes that the new baseline and returns the files whose
  // content changed since the previous baseline.
  std::vector<std::string> rescan();

  // The directories currently under an inotify watch (for logs and tests).
  std::vector<std::string> watched_directories() const;
  bool inotify_active() const { return fd_ != nullptr; }

 private:
  void open_inotify();
  void close_inotify();
  void read_events();
  void handle_events();
  void on_event(int wd, std::string_view name, unsigned mask);
  void schedule_check(bool relevant);
  void wait_debounce();
  void start_polling();
  void check(std::string_view trigger);
  void resync_watches();

  boost::asio::io_context& ioc_;
  check_handler on_check_;
  options opts_;
  std::map<std::string, std::string> baseline_;  // path -> fingerprint

  std::unique_ptr<boost::asio::posix::stream_descriptor> fd_;
  std::map<std::string, int> wd_by_dir_;
  std::map<int, std::set<std::string>> names_by_wd_;  // entries whose events concern us
  std::set<std::string> warned_dirs_;                 // add_watch failures already logged
  bool resync_needed_ = false;
  // Tracked entries (watch, name) modified and not closed since: a check waits for them.
  std::set<std::pair<int, std::string>> writing_;

  boost::asio::steady_timer debounce_timer_;
  bool check_pending_ = false;
  std::chrono::steady_clock::time_point first_event_{};
  std::chrono::steady_clock::time_point check_at_{};

  boost::asio::steady_timer poll_timer_;
  std::chrono::milliseconds polling_{0};  // the interval the poll timer runs at; 0 = stopped

  // Handlers check this before touching `this`: cancelled waits still run after destruction.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace mtlsd::daemon
