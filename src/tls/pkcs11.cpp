#include "mtlsd/tls/pkcs11.hpp"

#include <libp11.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include "mtlsd/thread_count.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/util/hex.hpp"
#include "pkcs11_login.hpp"

namespace mtlsd::tls::pkcs11 {
namespace {

// One loaded module and the slots libp11 knows in it. Never unloaded: keys handed out hold
// pointers into these structures, and an older runtime may still sign with them.
struct module {
  PKCS11_CTX* ctx = nullptr;
  PKCS11_SLOT* slots = nullptr;
  unsigned int count = 0;
};

std::mutex& lock() {
  static std::mutex m;
  return m;
}

// Modules that started threads when loaded (e.g. p11-kit's proxy loading OpenSC, whose GLib
// starts one): the sandbox cannot be entered after that, and should say why.
std::string& threads_note() {
  static auto* s = new std::string;
  return *s;
}

std::map<std::string, module>& modules() {
  static auto* m = new std::map<std::string, module>;  // lives as long as the keys do
  return *m;
}

// Keys `mtlsd verify` uses in place of the token's, by URI (stand_in_public_keys).
std::map<std::string, evp_pkey_ptr>& stand_ins() {
  static auto* m = new std::map<std::string, evp_pkey_ptr>;
  return *m;
}

// Sorted: modules list objects in no fixed order, and a message should not change between runs.
std::string quoted_list(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  std::string s;
  for (const auto& x : v)
    s += (s.empty() ? "'" : ", '") + x + "'";
  return s.empty() ? "none" : s;
}

// The token attributes as the user wrote them, for messages.
std::string describe_token(const config::pkcs11_uri& u) {
  std::string s;
  auto add = [&](const char* name, const std::string& v) {
    if (!v.empty()) s += std::string(s.empty() ? "" : ";") + name + "=" + v;
  };
  add("token", u.token);
  add("serial", u.serial);
  add("manufacturer", u.manufacturer);
  add("model", u.model);
  return s.empty() ? "any token" : s;
}

std::string describe_key(const config::pkcs11_uri& u) {
  std::string s;
  if (!u.object.empty()) s += "labelled '" + u.object + "'";
  if (u.has_id) s += std::string(s.empty() ? "" : " and ") + "with id " + util::hex(u.id);
  return s;
}

bool matches(const config::pkcs11_uri& u, const PKCS11_TOKEN& t) {
  auto same = [](const std::string& want, const char* have) {
    return want.empty() || (have && want == have);
  };
  return same(u.token, t.label) && same(u.serial, t.serialnr) &&
         same(u.manufacturer, t.manufacturer) && same(u.model, t.model);
}

module& open_module(const std::string& path, const config::file_ref& key) {
  auto& all = modules();
  if (auto it = all.find(path); it != all.end()) return it->second;
  if (path.find('/') != std::string::npos && ::access(path.c_str(), R_OK) != 0)
    fail(key.where, "PKCS#11 module " + path +
                        " not found or not readable (name it with module-path= in the URI or "
                        "$PKCS11_MODULE_PATH)");
  module m;
  m.ctx = PKCS11_CTX_new();
  if (!m.ctx) fail(key.where, "cannot set up libp11: " + drain_errors());
  ERR_clear_error();
  const int threads_before = thread_count();
  const int loaded = PKCS11_CTX_load(m.ctx, path.c_str());
  if (const int started = thread_count() - threads_before; started > 0)
    threads_note() += (threads_note().empty() ? "" : "; ") + std::string("PKCS#11 module ") + path +
                      " started " + std::to_string(started) + " thread(s) when loaded";
  if (loaded != 0) {
    std::string why = drain_errors();
    PKCS11_CTX_free(m.ctx);
    fail(key.where, "cannot load PKCS#11 module " + path +
                        (why.empty() ? std::string(" (is it a PKCS#11 module?)") : ": " + why) +
                        "; name the module with module-path= in the URI or $PKCS11_MODULE_PATH");
  }
  return all.emplace(path, m).first->second;
}

// The first of SoftHSM's token directory `dir`, its tokens' directories and their files that
// this process cannot read; "" when it reads them all. A token whose files it cannot read is not
// listed at all.
std::string first_unreadable(const std::string& dir) {
  namespace fs = std::filesystem;
  // Refused (EACCES) only: a missing token directory is no permission problem.
  auto refused = [](const fs::path& p, int mode) {
    return ::access(p.c_str(), mode) != 0 && errno == EACCES;
  };
  if (refused(dir, R_OK | X_OK)) return dir;
  std::error_code ec;
  for (fs::directory_iterator token(dir, ec), end; !ec && token != end; token.increment(ec)) {
    std::error_code kind;
    if (!token->is_directory(kind)) continue;
    if (refused(token->path(), R_OK | X_OK)) return token->path().string();
    std::error_code inner;
    for (fs::directory_iterator file(token->path(), inner); !inner && file != end;
         file.increment(inner))
      if (refused(file->path(), R_OK)) return file->path().string();
  }
  return {};
}

// Why a module may list no token that matches: it lists none whose files mtlsd's user cannot
// read (review: SoftHSM's token files are root's, mode 0600, and under a systemd DynamicUser the
// message said "initialised tokens there: none", not why).
std::string unlisted_token_hint(const std::string& module) {
  const std::string uid = std::to_string(::getuid());
  const std::string dir = softhsm_tokens_of(module);
  if (!dir.empty())
    if (const std::string blocked = first_unreadable(dir); !blocked.empty())
      return "; mtlsd's user (uid " + uid + ") cannot read " + blocked +
             ", and SoftHSM lists no token whose files it cannot read: make its token directory "
             "and files readable to that user (e.g. by a group it runs in)";
  return "; a token whose files mtlsd's user (uid " + uid + ") cannot read is not listed" +
         (dir.empty() ? std::string() : " (SoftHSM's token directory: " + dir + ")");
}

PKCS11_SLOT* find_token(module& m, const std::string& path, const config::pkcs11_uri& uri,
                        const config::file_ref& key) {
  // The slot list is read once per module. libp11 0.4.12's PKCS11_update_slots, which would
  // refresh it, indexes the old list wrongly (a crash) and frees the token structures that keys
  // handed out earlier point into; so a token that appears after the first load needs a restart.
  const bool listed_before = m.slots != nullptr;
  if (!listed_before && PKCS11_enumerate_slots(m.ctx, &m.slots, &m.count) != 0)
    fail(key.where, "PKCS#11 module " + path + ": cannot list its slots: " + drain_errors());
  std::vector<PKCS11_SLOT*> found;
  std::vector<std::string> seen;
  for (unsigned int i = 0; i < m.count; ++i) {
    PKCS11_SLOT* s = m.slots + i;
    if (!s->token || !s->token->initialized) continue;
    seen.emplace_back(s->token->label ? s->token->label : "");
    if (matches(uri, *s->token)) found.push_back(s);
  }
  if (found.empty())
    fail(key.where, "no PKCS#11 token matches " + describe_token(uri) + " in module " + path +
                        " (initialised tokens there: " + quoted_list(seen) + ")" +
                        (listed_before ? "; the module's tokens were listed when it was first "
                                         "loaded: a token added since needs a restart"
                                       : "") +
                        unlisted_token_hint(path));
  if (found.size() > 1)
    fail(key.where, std::to_string(found.size()) + " PKCS#11 tokens match " + describe_token(uri) +
                        " in module " + path + " (" + quoted_list(seen) +
                        "): name one with token= or serial=");
  return found.front();
}

PKCS11_KEY* find_key(PKCS11_SLOT* slot, const config::pkcs11_uri& uri,
                     const config::file_ref& key) {
  const std::string label = slot->token->label ? slot->token->label : "";
  PKCS11_KEY* keys = nullptr;
  unsigned int n = 0;
  if (PKCS11_enumerate_keys(slot->token, &keys, &n) != 0)
    fail(key.where,
         "cannot list the private keys on PKCS#11 token '" + label + "': " + drain_errors());
  std::vector<PKCS11_KEY*> found;
  std::vector<std::string> seen;
  for (unsigned int i = 0; i < n; ++i) {
    PKCS11_KEY* k = keys + i;
    const std::string k_label = k->label ? k->label : "";
    const std::string k_id(reinterpret_cast<const char*>(k->id), k->id ? k->id_len : 0);
    seen.push_back(k_label.empty() ? "id " + util::hex(k_id) : k_label);
    if ((uri.object.empty() || uri.object == k_label) && (!uri.has_id || uri.id == k_id))
      found.push_back(k);
  }
  if (found.empty())
    fail(key.where, "no private key " + describe_key(uri) + " on PKCS#11 token '" + label +
                        "' (private keys there: " + quoted_list(seen) + ")");
  if (found.size() > 1)
    fail(key.where, std::to_string(found.size()) + " private keys " + describe_key(uri) +
                        " on PKCS#11 token '" + label + "': add id= to the URI to pick one");
  return found.front();
}

}  // namespace

std::string threads_started() {
  std::lock_guard guard(lock());
  return threads_note();
}

std::string module_for(const config::pkcs11_uri& uri) {
  if (!uri.module_path.empty()) return uri.module_path;
  if (const char* env = std::getenv("PKCS11_MODULE_PATH"); env && *env) return env;
  return default_module;
}

namespace {

bool loads_softhsm(const std::string& module) {
  return module.find("softhsm") != std::string::npos || module.find("p11-kit") != std::string::npos;
}

std::string softhsm_conf() {
  const char* env = std::getenv("SOFTHSM2_CONF");
  return env && *env ? env : "/etc/softhsm/softhsm2.conf";
}

// The directories.tokendir its configuration names; "" when none (or not absolute).
std::string softhsm_token_dir(const std::string& conf) {
  std::ifstream in(conf);
  for (std::string line; std::getline(in, line);) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string v) {
      const auto b = v.find_first_not_of(" \t\r");
      const auto e = v.find_last_not_of(" \t\r");
      return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
    };
    if (trim(line.substr(0, eq)) == "directories.tokendir") {
      std::string dir = trim(line.substr(eq + 1));
      while (dir.size() > 1 && dir.back() == '/')
        dir.pop_back();
      if (!dir.empty() && dir.front() == '/') return dir;
    }
  }
  return {};
}

}  // namespace

void fail(const config::source_location& where, const std::string& what) {
  throw config::config_error({{where, what, false}});
}

std::string softhsm_tokens_of(const std::string& module) {
  return loads_softhsm(module) ? softhsm_token_dir(softhsm_conf()) : std::string();
}

std::vector<std::string> paths_to_read(const config::pkcs11_uri& uri) {
  const std::string module = module_for(uri);
  std::vector<std::string> out;
  if (module.find('/') != std::string::npos) out.push_back(module);
  // p11-kit's proxy reads its module registry and configuration when it loads.
  if (module.find("p11-kit") != std::string::npos) {
    out.emplace_back("/etc/pkcs11");
    out.emplace_back("/usr/share/p11-kit");
  }
  // SoftHSM (directly, or through the proxy): its configuration file names the token directory,
  // whose object files it re-reads on each login and key search.
  if (loads_softhsm(module)) {
    const std::string conf = softhsm_conf();
    out.push_back(conf);
    if (auto dir = softhsm_token_dir(conf); !dir.empty()) out.push_back(std::move(dir));
  }
  return out;
}

std::vector<std::string> paths_to_write(const config::pkcs11_uri& uri) {
  // SoftHSM records each login (a wrong PIN included) in the token's object file; refused that
  // write, it takes the token for broken and fails every later login until a restart. Through
  // p11-kit's proxy only when SoftHSM is registered with it (review: any token behind the proxy
  // made SoftHSM's directory writable on a host that merely had its configuration file).
  const std::string module = module_for(uri);
  if (!loads_softhsm(module)) return {};
  if (module.find("softhsm") == std::string::npos) {
    std::error_code ec;
    if (!std::filesystem::exists("/usr/share/p11-kit/modules/softhsm2.module", ec) &&
        !std::filesystem::exists("/etc/pkcs11/modules/softhsm2.module", ec))
      return {};
  }
  if (auto dir = softhsm_token_dir(softhsm_conf()); !dir.empty()) return {dir};
  return {};
}

void stand_in_public_keys(std::map<std::string, evp_pkey_ptr> by_uri) {
  std::lock_guard guard(lock());
  stand_ins() = std::move(by_uri);
}

evp_pkey_ptr load_private_key(const config::file_ref& key, const config::file_ref& pin_file) {
  config::pkcs11_uri uri;
  if (auto why = config::parse_pkcs11_uri(key.path, uri); !why.empty())
    fail(key.where, "not a usable PKCS#11 URI: " + why);
  const std::string path = module_for(uri);
  std::lock_guard guard(lock());
  if (auto it = stand_ins().find(key.path); it != stand_ins().end()) {
    EVP_PKEY_up_ref(it->second.get());
    return evp_pkey_ptr(it->second.get());
  }
  module& m = open_module(path, key);
  PKCS11_SLOT* slot = find_token(m, path, uri, key);
  log_in(path, slot, uri, key, pin_file);
  PKCS11_KEY* k = find_key(slot, uri, key);
  EVP_PKEY* pkey = PKCS11_get_private_key(k);
  if (!pkey)
    fail(key.where, "cannot use the private key " + describe_key(uri) + " on PKCS#11 token '" +
                        std::string(slot->token->label ? slot->token->label : "") +
                        "': " + drain_errors());
  return evp_pkey_ptr(pkey);
}

std::string describe(const std::string& key_uri) {
  config::pkcs11_uri uri;
  if (!config::parse_pkcs11_uri(key_uri, uri).empty()) return "the PKCS#11 key";
  return "the private key " + describe_key(uri) + " on PKCS#11 token " + describe_token(uri);
}

}  // namespace mtlsd::tls::pkcs11
