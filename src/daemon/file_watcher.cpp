#include "mtlsd/daemon/file_watcher.hpp"

#include <openssl/evp.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "mtlsd/log/log.hpp"
#include "mtlsd/util/hex.hpp"
#include "mtlsd/util/regular_file.hpp"

namespace mtlsd::daemon {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

// Everything that can change what a path resolves to or what it contains. Reads (IN_ACCESS,
// IN_OPEN, IN_CLOSE_NOWRITE) are left out: our own re-reads must not wake us up again.
constexpr std::uint32_t watch_mask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE |
                                     IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF |
                                     IN_MOVE_SELF | IN_ONLYDIR;

constexpr int max_symlink_hops = 16;

void collect(const fs::path& path, int hops, std::map<std::string, std::set<std::string>>& out) {
  if (hops > max_symlink_hops) return;  // a loop: the file cannot be opened anyway
  fs::path prefix = path.root_path();
  const fs::path rel = path.relative_path();
  for (auto it = rel.begin(); it != rel.end(); ++it) {
    const fs::path parent = prefix;
    prefix /= *it;
    struct stat st {};
    if (::lstat(prefix.c_str(), &st) != 0) {
      // Not there yet: its nearest existing ancestor tells us when it appears.
      out[parent.string()].insert(it->string());
      return;
    }
    if (S_ISLNK(st.st_mode)) {
      // A rename of the link itself (Kubernetes' `..data`) changes what the path means.
      out[parent.string()].insert(it->string());
      std::error_code ec;
      fs::path target = fs::read_symlink(prefix, ec);
      if (ec) return;
      fs::path next = target.is_absolute() ? target : parent / target;
      for (auto rest = std::next(it); rest != rel.end(); ++rest)
        next /= *rest;
      collect(next.lexically_normal(), hops + 1, out);
      return;
    }
  }
  out[path.parent_path().string()].insert(path.filename().string());
}

}  // namespace

std::string content_fingerprint(const std::string& path) {
  const util::opened_file f = util::open_regular_file(path);
  if (f.fd < 0) {
    if (f.error == ENOENT || f.error == ENOTDIR) return "missing";
    // Out of descriptors or memory for a moment says nothing about the file (a spurious
    // reload, then another once it is readable again): looked at again later.
    if (f.error == EMFILE || f.error == ENFILE || f.error == ENOMEM || f.error == EINTR)
      return std::string(transient_fingerprint) + f.why;
    return "unreadable: " + f.why;
  }
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1) {
    ::close(f.fd);
    return "unhashable";
  }
  std::array<char, 64 * 1024> buf;
  for (;;) {
    const ssize_t n = ::read(f.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(f.fd);
      return "unreadable: read error";
    }
    if (n == 0) break;
    EVP_DigestUpdate(md.get(), buf.data(), static_cast<size_t>(n));
  }
  ::close(f.fd);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(md.get(), digest, &len);
  return util::hex(digest, len);
}

std::map<std::string, std::set<std::string>> watch_points(const std::string& path) {
  std::map<std::string, std::set<std::string>> out;
  fs::path p = fs::path(path).lexically_normal();
  if (p.is_relative()) p = fs::absolute(p).lexically_normal();
  collect(p, 0, out);
  return out;
}

file_watcher::file_watcher(asio::io_context& ioc, check_handler on_check)
    : ioc_(ioc), on_check_(std::move(on_check)), debounce_timer_(ioc), poll_timer_(ioc) {}

file_watcher::~file_watcher() {
  *alive_ = false;
  close_inotify();
}

void file_watcher::watch(const std::vector<std::string>& files, const options& opts) {
  std::map<std::string, std::string> next;
  for (const auto& f : files) {
    auto it = baseline_.find(f);
    next[f] = it != baseline_.end() ? it->second : content_fingerprint(f);
  }
  baseline_ = std::move(next);
  opts_ = opts;

  if (opts_.inotify && !fd_) open_inotify();
  if (!opts_.inotify && fd_) close_inotify();
  if (fd_) resync_watches();
  if (opts_.poll_interval != polling_) start_polling();
}

std::vector<std::string> file_watcher::rescan() {
  std::vector<std::string> changed;
  bool look_again = false;
  for (auto& [path, fingerprint] : baseline_) {
    std::string now = content_fingerprint(path);
    if (now.starts_with(transient_fingerprint)) {
      look_again = true;  // keeps the fingerprint it had
      continue;
    }
    if (now != fingerprint) {
      changed.push_back(path);
      fingerprint = std::move(now);
    }
  }
  if (look_again) schedule_check(false);
  return changed;
}

std::vector<std::string> file_watcher::watched_directories() const {
  std::vector<std::string> out;
  for (const auto& [dir, wd] : wd_by_dir_)
    out.push_back(dir);
  return out;
}

void file_watcher::open_inotify() {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    log::warn(
        "cannot watch files (inotify unavailable); reload with SIGHUP or set "
        "reload.poll_interval",
        {{"error", std::strerror(errno)}});
    return;
  }
  fd_ = std::make_unique<asio::posix::stream_descriptor>(ioc_, fd);
  read_events();
}

void file_watcher::close_inotify() {
  if (!fd_) return;
  boost::system::error_code ignored;
  fd_->close(ignored);  // drops every watch with it
  fd_.reset();
  wd_by_dir_.clear();
  names_by_wd_.clear();
}

void file_watcher::read_events() {
  fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                  [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
                    auto a = alive.lock();
                    if (ec || !a || !*a || !fd_) return;
                    handle_events();
                    if (fd_) read_events();
                  });
}

void file_watcher::handle_events() {
  alignas(inotify_event) std::array<char, 16 * 1024> buf;
  for (;;) {
    const ssize_t n = ::read(fd_->native_handle(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // EAGAIN: drained
    std::size_t off = 0;
    while (off + sizeof(inotify_event) <= static_cast<std::size_t>(n)) {
      inotify_event ev;
      std::memcpy(&ev, buf.data() + off, sizeof ev);
      const char* name_start = buf.data() + off + sizeof(inotify_event);
      std::string_view name(name_start, ev.len ? ::strnlen(name_start, ev.len) : 0);
      on_event(ev.wd, name, ev.mask);
      off += sizeof(inotify_event) + ev.len;
    }
  }
}

void file_watcher::on_event(int wd, std::string_view name, unsigned mask) {
  if (mask & IN_Q_OVERFLOW) {
    // Events were lost: anything may have changed.
    resync_needed_ = true;
    schedule_check(true);
    return;
  }
  // The directory went away (or was unmounted), or was renamed: a watch follows the directory,
  // not its path, so after `mv certs certs.old && mv certs.new certs` it would watch certs.old
  // and never see a change in the new certs again (review). Drop it and re-arm on the next check,
  // which watches what the path names now.
  if (mask & (IN_IGNORED | IN_MOVE_SELF)) {
    if (mask & IN_MOVE_SELF) ::inotify_rm_watch(fd_->native_handle(), wd);
    for (auto it = wd_by_dir_.begin(); it != wd_by_dir_.end();) {
      if (it->second == wd)
        it = wd_by_dir_.erase(it);
      else
        ++it;
    }
    names_by_wd_.erase(wd);
    std::erase_if(writing_, [wd](const auto& w) { return w.first == wd; });
    resync_needed_ = true;
    schedule_check(true);
    return;
  }
  bool relevant = name.empty();  // an event on the directory itself
  if (!relevant) {
    auto it = names_by_wd_.find(wd);
    relevant = it != names_by_wd_.end() && it->second.count(std::string(name));
  }
  if (relevant && (mask & (IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM)))
    resync_needed_ = true;  // a path component appeared, vanished or now points elsewhere
  if (relevant && !name.empty()) {
    // Modified and not closed yet: a writer is probably mid-way (`>` and editors that write in
    // place truncate first, then write). Its close, or the file going, ends that.
    if (mask & (IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM))
      writing_.erase({wd, std::string(name)});
    else if (mask & IN_MODIFY)
      writing_.emplace(wd, std::string(name));
  }
  // A neighbour's content changing (a log file written next to the config: mtlsd's own access
  // log there cost a re-hash of every tracked file, CRLs included, several times a second; a
  // review) says nothing about our files: every name on their paths is tracked, so only
  // entries appearing, going or moving can matter.
  constexpr unsigned entry_changes = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM;
  if (!relevant && !(mask & entry_changes)) return;
  // Any other event schedules a check (the content hash decides), but only events about our
  // files push the check back, so a chatty neighbour cannot postpone a reload forever.
  schedule_check(relevant);
}

void file_watcher::schedule_check(bool relevant) {
  const auto now = steady::now();
  if (!check_pending_) {
    check_pending_ = true;
    first_event_ = now;
    check_at_ = now + opts_.debounce;
    wait_debounce();
  } else if (relevant) {
    check_at_ = std::min(now + opts_.debounce, first_event_ + opts_.max_delay);
  }
}

void file_watcher::wait_debounce() {
  // The deadline may move later while we wait; rather than cancel and re-arm on every event,
  // the handler re-arms itself until the (latest) deadline has passed.
  debounce_timer_.expires_at(check_at_);
  debounce_timer_.async_wait(
      [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
        auto a = alive.lock();
        if (ec || !a || !*a) return;
        const auto now = steady::now();
        if (now < check_at_) return wait_debounce();
        // A tracked file still open for writing would be read half-written (a reload failure
        // logged for nothing, then the real reload at its close): wait for the close, but
        // never past max_delay — a writer may keep the file open for good.
        const auto latest = first_event_ + opts_.max_delay;
        if (!writing_.empty() && now < latest) {
          check_at_ = std::min(now + opts_.debounce, latest);
          return wait_debounce();
        }
        writing_.clear();  // events lost or a writer that stays: do not hold the next check
        check_pending_ = false;
        check("file_change");
      });
}

void file_watcher::start_polling() {
  polling_ = opts_.poll_interval;
  poll_timer_.cancel();
  if (polling_.count() <= 0) return;
  poll_timer_.expires_after(polling_);
  poll_timer_.async_wait(
      [this, alive = std::weak_ptr<bool>(alive_)](const boost::system::error_code& ec) {
        auto a = alive.lock();
        if (ec || !a || !*a) return;
        start_polling();  // schedule the next round first: the check may call watch()
        // A file held for writing has a debounced check waiting for its close: that one reads
        // it, whole.
        if (!writing_.empty() && check_pending_) return;
        check("poll");  // and nothing below may touch `this` after it
      });
}

void file_watcher::check(std::string_view trigger) {
  if (fd_ && resync_needed_) resync_watches();
  auto changed = rescan();
  try {
    on_check_(changed, trigger);
  } catch (const std::exception& e) {
    log::error("reload after a file change failed unexpectedly", {{"error", e.what()}});
  }
}

void file_watcher::resync_watches() {
  resync_needed_ = false;
  std::map<std::string, std::set<std::string>> want;
  for (const auto& [path, fp] : baseline_)
    for (auto& [dir, names] : watch_points(path))
      want[dir].insert(names.begin(), names.end());

  // Drop directories nobody needs any more (a removed listener's certificate directory, the
  // previous Kubernetes `..TIMESTAMP` directory).
  for (auto it = wd_by_dir_.begin(); it != wd_by_dir_.end();) {
    if (want.count(it->first)) {
      ++it;
      continue;
    }
    const int wd = it->second;
    it = wd_by_dir_.erase(it);
    const bool shared = std::any_of(wd_by_dir_.begin(), wd_by_dir_.end(),
                                    [wd](const auto& e) { return e.second == wd; });
    if (!shared) {
      ::inotify_rm_watch(fd_->native_handle(), wd);
      names_by_wd_.erase(wd);
    }
  }
  for (const auto& [dir, names] : want) {
    if (!wd_by_dir_.count(dir)) {
      const int wd = ::inotify_add_watch(fd_->native_handle(), dir.c_str(), watch_mask);
      if (wd < 0) {
        const int err = errno;
        // ENOENT: the directory vanished since we looked; try again shortly.
        if (err == ENOENT) {
          resync_needed_ = true;
          schedule_check(false);
        } else if (warned_dirs_.insert(dir).second) {
          log::warn("cannot watch directory; changes in it are seen only on SIGHUP or by polling",
                    {{"directory", dir}, {"error", std::strerror(err)}});
        }
        continue;
      }
      wd_by_dir_[dir] = wd;
    }
  }
  // Two paths can be one directory (bind mounts): one wd, the union of the names.
  names_by_wd_.clear();
  for (const auto& [dir, wd] : wd_by_dir_)
    names_by_wd_[wd].insert(want[dir].begin(), want[dir].end());
}

}  // namespace mtlsd::daemon
