// Entering the sandbox and checking reloads against it. The pieces live in privileges.cpp,
// landlock.cpp and seccomp_policy.cpp; this file decides what the file-system view is.
#include "mtlsd/daemon/sandbox.hpp"

#include <openssl/conf.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "mtlsd/config/pkcs11_uri.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/thread_count.hpp"
#include "mtlsd/tls/pkcs11.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

namespace fs = std::filesystem;

void add_unique(std::vector<std::string>& v, std::string s) {
  if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(std::move(s));
}

// Follows symlinks as far as they exist; the path itself when that fails.
fs::path canonical_or_self(const fs::path& p) {
  std::error_code ec;
  auto c = fs::weakly_canonical(p, ec);
  return ec ? p.lexically_normal() : c;
}

// What the PKCS#11 modules behind the configuration's pkcs11: keys read (or, with `writes`,
// write) when a key is loaded (at start and at a reload, inside the sandbox): module, its
// configuration, its token directory.
std::vector<fs::path> pkcs11_paths(const config::configuration& cfg, bool writes = false) {
  std::vector<fs::path> out;
  auto add = [&](const config::file_ref& key) {
    config::pkcs11_uri uri;
    if (!config::is_pkcs11_uri(key.path) || !config::parse_pkcs11_uri(key.path, uri).empty())
      return;
    // A module file that is not there: loading the key says so ("not found"); what it would
    // read or write is no question for the sandbox (review: a reload was told it needed a
    // restart, which would not mend it).
    const std::string module = tls::pkcs11::module_for(uri);
    std::error_code ec;
    if (module.find('/') != std::string::npos && !fs::exists(module, ec)) return;
    for (auto& p : writes ? tls::pkcs11::paths_to_write(uri) : tls::pkcs11::paths_to_read(uri))
      if (std::find(out.begin(), out.end(), fs::path(p)) == out.end()) out.emplace_back(p);
  };
  for (const auto& l : cfg.listeners) {
    add(l.tls.key);
    for (const auto& e : l.tls.certificates)
      add(e.key);
  }
  return out;
}

fs::path resolve(const config::configuration& cfg, const std::string& p) {
  fs::path path(p);
  if (path.is_relative()) path = fs::path(cfg.file).parent_path() / path;
  return path.lexically_normal();
}

// Every file the configuration names, absolute.
std::vector<fs::path> named_files(const config::configuration& cfg) {
  std::vector<fs::path> out{fs::path(cfg.file)};
  // (pkcs11: keys are no files; the PIN files their URIs name are among these.)
  for (const auto& f : cfg.referenced_files())
    out.push_back(resolve(cfg, f.path));
  return out;
}

bool beneath(const fs::path& p, const fs::path& root) {
  auto r = root.begin();
  auto i = p.begin();
  for (; r != root.end(); ++r, ++i)
    if (i == p.end() || *i != *r) return false;
  return true;
}

bool under_any(const fs::path& p, const std::vector<fs::path>& roots) {
  return std::any_of(roots.begin(), roots.end(), [&](const fs::path& r) { return beneath(p, r); });
}

// A path's device and inode, {0, 0} when it does not exist (what Landlock holds a rule by).
std::pair<std::uint64_t, std::uint64_t> id_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return {0, 0};
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// With Landlock: "" when a read root above `real` is still the directory it was at start-up;
// otherwise one that was replaced since (renamed over, or removed and created again), whose
// files Landlock no longer lets mtlsd read, though the path is the same.
std::string replaced_root(const state& s, const fs::path& real) {
  if (s.landlock_abi <= 0) return {};
  std::string replaced;
  for (std::size_t i = 0; i < s.read_roots.size() && i < s.read_root_ids.size(); ++i) {
    if (!beneath(real, s.read_roots[i])) continue;
    if (id_of(s.read_roots[i]) == s.read_root_ids[i]) return {};
    replaced = s.read_roots[i].string();
  }
  return replaced;
}

std::vector<fs::path> canonical_all(const std::vector<std::string>& v) {
  std::vector<fs::path> out;
  for (const auto& s : v)
    out.push_back(canonical_or_self(s));
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "" : ",") + x;
  return s;
}

std::string scope_names(std::uint64_t scopes) {
  std::vector<std::string> names;
  if (scopes & kScopeSignal) names.emplace_back("signal");
  if (scopes & kScopeAbstractUnixSocket) names.emplace_back("abstract_unix_socket");
  return join(names);
}

}  // namespace

paths paths_for(const config::configuration& cfg) {
  paths p;
  for (const auto& f : named_files(cfg)) {
    // As written (a Kubernetes secret directory, whose `..data` link a rotation swaps) and where
    // it leads now (a file that is a symlink into another directory).
    add_unique(p.read, f.parent_path().string());
    add_unique(p.read, canonical_or_self(f).parent_path().string());
  }
  // Exactly these (a module's token directory, not its parent).
  for (const auto& f : pkcs11_paths(cfg)) {
    add_unique(p.read, f.string());
    add_unique(p.read, canonical_or_self(f).string());
  }
  // SoftHSM's token directory: a login writes the token's object file (see paths_to_write).
  for (const auto& f : pkcs11_paths(cfg, true)) {
    add_unique(p.write_dirs, f.string());
    add_unique(p.write_dirs, canonical_or_self(f).string());
  }
  // The one file mtlsd itself writes after start-up: the access log. Its directory (exactly that
  // one, absolute, as written and where a symlinked log file leads) lets a rotated file be
  // re-created on SIGUSR1.
  if (!cfg.log.access_log_path.empty() && cfg.log.access_log_path != "stdout") {
    const fs::path log_file = fs::absolute(resolve(cfg, cfg.log.access_log_path));
    add_unique(p.write_dirs, log_file.parent_path().lexically_normal().string());
    add_unique(p.write_dirs, canonical_or_self(log_file).parent_path().string());
  }
  for (const auto& l : cfg.listeners)
    if (l.listen.is_unix())
      add_unique(p.sockets, fs::absolute(l.listen.path).lexically_normal().parent_path().string());
  // A unix admin.address: its socket file is removed when mtlsd exits (admin_server.cpp).
  if (cfg.admin.listen && cfg.admin.listen->is_unix())
    add_unique(p.sockets,
               fs::absolute(cfg.admin.listen->path).lexically_normal().parent_path().string());
  // (tls.spiffe: nothing. Connecting to the Workload API's socket is no Landlock right, and a
  // read rule on its directory opened all beneath it: with unix:/run/agent.sock, all of /run.)
  return p;
}

seccomp_options seccomp_options_for(const config::configuration& cfg) {
  seccomp_options o;
  o.write_files = (!cfg.log.access_log_path.empty() && cfg.log.access_log_path != "stdout") ||
                  !pkcs11_paths(cfg, true).empty();
  o.unix_socket_files = std::any_of(cfg.listeners.begin(), cfg.listeners.end(),
                                    [](const config::listener& l) { return l.listen.is_unix(); }) ||
                        (cfg.admin.listen && cfg.admin.listen->is_unix());
  return o;
}

paths system_paths() {
  paths p;
  // getaddrinfo (and c-ares): resolver and NSS configuration, NSS modules it dlopens.
  for (const char* f : {"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
                        "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/ld.so.cache",
                        "/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"})
    add_unique(p.read, f);
  // Local time for log timestamps.
  add_unique(p.read, "/etc/localtime");
  add_unique(p.read, "/usr/share/zoneinfo");
  // OpenSSL: its configuration file and default trust store (a client listener without
  // server_auth.ca may rely on it), wherever this build of OpenSSL looks for them. Not all of
  // OPENSSLDIR: /etc/ssl/private holds other services' keys (review: a reload could serve one).
  if (char* cnf = CONF_get1_default_config_file()) {
    add_unique(p.read, cnf);
    OPENSSL_free(cnf);
  }
  // Debian's certificate directory holds links into these (ca-certificates), public CAs only.
  add_unique(p.read, "/usr/share/ca-certificates");
  add_unique(p.read, "/usr/local/share/ca-certificates");
  // A certificate directory setting is a ':'-separated list (review: "a:b" was one path, which
  // does not exist, so neither directory could be read inside the sandbox).
  const auto add_dirs = [&p](std::string_view list) {
    while (!list.empty()) {
      const auto colon = list.find(':');
      if (colon != 0) add_unique(p.read, std::string(list.substr(0, colon)));
      if (colon == std::string_view::npos) break;
      list.remove_prefix(colon + 1);
    }
  };
  add_dirs(X509_get_default_cert_dir());
  add_unique(p.read, X509_get_default_cert_file());
  if (const char* v = std::getenv(X509_get_default_cert_dir_env())) add_dirs(v);
  if (const char* v = std::getenv(X509_get_default_cert_file_env())) add_unique(p.read, v);
  // Our own /proc entries (thread names, sanitizer runtimes' maps) and CPU topology. The
  // overcommit mode: glibc reads it when it first trims a thread's arena, and took it for
  // non-strict when refused (review). (Rules below /proc are pinned: landlock.cpp.)
  add_unique(p.read, canonical_or_self("/proc/self").string());
  add_unique(p.read, "/proc/sys/vm/overcommit_memory");
  add_unique(p.read, "/sys/devices/system/cpu");
  add_unique(p.read, "/dev/urandom");
  add_unique(p.read, "/dev/random");
  add_unique(p.read, "/dev/null");
  // Our own executable (sanitizer runtimes symbolize reports from it).
  add_unique(p.read, canonical_or_self("/proc/self/exe").string());
  return p;
}

state enter(const config::configuration& cfg) {
  state s;
  if (!cfg.sandbox) {
    log::warn(
        "sandbox is off (sandbox: false): no seccomp filter, no Landlock, capabilities and "
        "privileges kept");
    return s;
  }
  if (int n = thread_count(); n > 1) {
    if (auto note = tls::pkcs11::threads_started(); !note.empty())
      throw std::runtime_error(
          "sandbox: " + note +
          ", and the sandbox can only be entered while mtlsd runs one thread: load the token's "
          "own module (module-path= in the key's URI, or $PKCS11_MODULE_PATH) instead, or set "
          "sandbox: false");
    throw std::logic_error("sandbox: entered with " + std::to_string(n) +
                           " threads running; it must be entered before any thread starts");
  }
  paths p = paths_for(cfg);
  const std::string config_dirs = join(p.read);
  for (const auto& r : system_paths().read)
    add_unique(p.read, r);
  std::string why;
  s.landlock_abi = landlock_abi(&why);
  s.read_roots = canonical_all(p.read);
  for (const auto& r : s.read_roots)
    s.read_root_ids.push_back(id_of(r));
  s.socket_roots = canonical_all(p.sockets);
  s.write_roots = canonical_all(p.write_dirs);
  s.write_files = seccomp_options_for(cfg).write_files;

  const std::string note = drop_privileges();
  const std::uint64_t scopes = landlock_scopes(s.landlock_abi, std::getenv("NOTIFY_SOCKET"));
  if (s.landlock_abi > 0) {
    landlock_restrict(s.landlock_abi, p);
  } else {
    log::warn(
        "sandbox: Landlock is not available; which files may be read is not restricted, and "
        "seccomp limits writes only to opening files for writing when an access log file is "
        "configured",
        {{"reason", why}});
  }
  const int calls = install_seccomp(seccomp_options_for(cfg));
  s.active = true;
  log::info("sandbox on", {{"no_new_privs", true},
                           {"capabilities", "none"},
                           {"seccomp_syscalls", calls},
                           {"landlock_abi", s.landlock_abi},
                           {"landlock_scopes", scope_names(scopes)},
                           {"readable_dirs", config_dirs},
                           {"writable_dirs", join(p.write_dirs)},
                           {"socket_dirs", join(p.sockets)}});
  if (!note.empty()) log::info("sandbox: " + note);
  if (s.landlock_abi >= 6 && !(scopes & kScopeAbstractUnixSocket))
    log::info(
        "sandbox: abstract unix sockets are not scoped (only signals are): NOTIFY_SOCKET is "
        "an abstract address, to which sd_notify sends");
  // Landlock (ABI <= 7) does not govern connect() to a path socket, and servers that trust
  // their peer's uid 0 (systemd's private socket, D-Bus, docker.sock) would take such a
  // connection as root's (review).
  if (::geteuid() == 0)
    log::warn(
        "sandbox: mtlsd runs as root (uid 0), and the sandbox cannot keep it from connecting to "
        "unix sockets that only root may use (systemd's, D-Bus, docker.sock), whose servers "
        "trust uid 0; run mtlsd as an unprivileged user, as the shipped systemd unit and "
        "container image do");
  return s;
}

std::string check_reload(const state& s, const config::configuration& next) {
  if (next.sandbox != s.active)
    log::warn(std::string("'sandbox' changed to ") + (next.sandbox ? "true" : "false") +
              "; it takes effect after a restart");
  if (!s.active) return {};
  for (const auto& f : named_files(next)) {
    const auto real = canonical_or_self(f);
    if (!under_any(real, s.read_roots))
      return "sandbox: " + f.string() +
             (real != f ? " (-> " + real.string() + ")" : std::string()) +
             " is outside the directories the sandbox lets mtlsd read (those the configuration "
             "named at start-up); this change needs a restart";
    if (const auto dir = replaced_root(s, real); !dir.empty())
      return "sandbox: " + f.string() + " is in " + dir +
             ", which is not the directory it was when mtlsd started (replaced since: renamed "
             "over, or removed and created again; or created since), and the sandbox lets "
             "mtlsd read only what was there then; this change needs a restart";
  }
  for (const auto& f : pkcs11_paths(next)) {
    const auto real = canonical_or_self(f);
    // Missing altogether: loading the key says so ("PKCS#11 module ... not found"), which a
    // restart would not mend (review: this said it needed one).
    std::error_code ec;
    if (!fs::exists(real, ec)) continue;
    if (!under_any(real, s.read_roots))
      return "sandbox: the PKCS#11 module of a pkcs11: key needs " + f.string() +
             ", which the sandbox does not let mtlsd read (the keys at start-up did not need "
             "it); this change needs a restart";
  }
  for (const auto& f : pkcs11_paths(next, true)) {
    const auto real = canonical_or_self(f);
    if (!s.write_files || !under_any(real, s.write_roots))
      return "sandbox: the PKCS#11 module of a pkcs11: key writes to " + f.string() +
             ", which the sandbox does not let mtlsd write to (the keys at start-up did not "
             "need it); this change needs a restart";
  }
  for (const auto& l : next.listeners)
    if (l.listen.is_unix()) {
      const auto dir = canonical_or_self(fs::absolute(l.listen.path).parent_path());
      if (!under_any(dir, s.socket_roots))
        return "sandbox: listener '" + l.name + "' would create the unix socket " + l.listen.path +
               " in a directory the sandbox does not let mtlsd create sockets in (only those of "
               "the unix listeners at start-up); this change needs a restart";
    }
  return {};
}

}  // namespace mtlsd::daemon::sandbox
