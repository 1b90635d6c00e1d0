#include "mtlsd/runtime/key_permissions.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <set>
#include <tuple>

namespace mtlsd::runtime {

std::optional<std::string> key_exposure(mode_t mode, gid_t gid, const std::vector<gid_t>& groups) {
  if (mode & S_IRWXO) return "is accessible by others";
  const bool own_group = std::find(groups.begin(), groups.end(), gid) != groups.end();
  if ((mode & S_IRWXG) && !own_group)
    return "is accessible by group " + std::to_string(gid) + ", which mtlsd is not in";
  return std::nullopt;
}

std::vector<gid_t> own_groups() {
  std::vector<gid_t> out{::getegid()};
  const int n = ::getgroups(0, nullptr);
  if (n > 0) {
    std::vector<gid_t> more(static_cast<std::size_t>(n));
    const int got = ::getgroups(n, more.data());
    if (got > 0) out.insert(out.end(), more.begin(), more.begin() + got);
  }
  return out;
}

std::optional<config::diagnostic> key_permission_warning_once(const config::file_ref& key,
                                                              std::string_view what) {
  struct stat st {};
  if (key.empty() || ::stat(key.path.c_str(), &st) != 0) return std::nullopt;
  auto why = key_exposure(st.st_mode, st.st_gid, own_groups());
  if (!why) return std::nullopt;
  // Start-up and every reload ask again; say it once per file and state, not at every reload.
  static std::mutex mutex;
  static std::set<std::tuple<std::string, mode_t, gid_t>> told;
  {
    std::lock_guard lock(mutex);
    if (!told.emplace(key.path, st.st_mode & 07777, st.st_gid).second) return std::nullopt;
  }
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return config::diagnostic{key.where,
                            key.path + ": " + std::string(what) + " " + *why + " (mode " + mode +
                                "); chmod 600 it, or 640 with a group mtlsd runs in",
                            true};
}

}  // namespace mtlsd::runtime
