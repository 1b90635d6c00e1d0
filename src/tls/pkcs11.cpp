#include "mtlsd/tls/pkcs11.hpp"

#include <libp11.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include "mtlsd/thread_count.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/util/hex.hpp"

namespace mtlsd::tls::pkcs11 {
namespace {

// PKCS#11 return values we explain (pkcs11.h, CKR_*); libp11 puts them in the OpenSSL error
// queue as the reason of its errors.
constexpr unsigned long kPinIncorrect = 0xA0;
constexpr unsigned long kPinInvalid = 0xA1;
constexpr unsigned long kPinLenRange = 0xA2;
constexpr unsigned long kPinExpired = 0xA3;
constexpr unsigned long kPinLocked = 0xA4;

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

[[noreturn]] void fail(const config::source_location& where, const std::string& what) {
  throw config::config_error({{where, what, false}});
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
                                       : ""));
  if (found.size() > 1)
    fail(key.where, std::to_string(found.size()) + " PKCS#11 tokens match " + describe_token(uri) +
                        " in module " + path + " (" + quoted_list(seen) +
                        "): name one with token= or serial=");
  return found.front();
}

// Wipes a string holding a PIN when it goes out of scope.
struct cleanse_on_exit {
  std::string& s;
  ~cleanse_on_exit() { OPENSSL_cleanse(s.data(), s.capacity()); }
};

// Copies `secret` into `pin` and wipes the argument: moving a short string copies its
// characters rather than stealing a buffer, and would leave them in the temporary (review: a
// PIN of up to 15 characters stayed on the stack, against "one buffer, wiped").
void take_secret(std::string& pin, std::string secret) {
  pin.assign(secret);
  OPENSSL_cleanse(secret.data(), secret.capacity());
}

// PINs a token refused, by module, token and the PIN's SHA-256, each with the token's reason:
// tried once per process, since many tokens lock after three wrong PINs (review: each listener
// of a build, each later reload and each `verify` spent one more).
std::map<std::string, unsigned long>& refused_pins() {
  static auto* m = new std::map<std::string, unsigned long>;
  return *m;
}

std::string refusal_key(const std::string& module, const PKCS11_TOKEN& t, const std::string& pin) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(pin.data(), pin.size(), md, &n, EVP_sha256(), nullptr) != 1) n = 0;
  auto field = [](const char* v) { return std::string(v ? v : "") + '\n'; };
  return module + '\n' + field(t.manufacturer) + field(t.model) + field(t.serialnr) +
         field(t.label) + util::hex(md, n);
}

// What a PIN the token refused means; "" for a failure that is not about the PIN.
std::string pin_refusal(unsigned long reason, const std::string& label, const std::string& from) {
  switch (reason) {
    case kPinIncorrect:
      return "wrong PIN for PKCS#11 token '" + label + "' (CKR_PIN_INCORRECT; from " + from + ")";
    case kPinInvalid:
    case kPinLenRange:
      return "the PIN for PKCS#11 token '" + label +
             "' is not a valid PIN for it (wrong length or characters; from " + from + ")";
    case kPinLocked:
      return "the PIN of PKCS#11 token '" + label +
             "' is locked (CKR_PIN_LOCKED): too many wrong PINs; unlock it with the security "
             "officer's PIN";
    case kPinExpired:
      return "the PIN of PKCS#11 token '" + label + "' has expired (CKR_PIN_EXPIRED)";
    default:
      return {};
  }
}

void login(const std::string& module, PKCS11_SLOT* slot, const config::pkcs11_uri& uri,
           const config::file_ref& key, const config::file_ref& pin_file) {
  const std::string label = slot->token->label ? slot->token->label : "";
  int logged_in = 0;
  if (!slot->token->loginRequired ||
      (PKCS11_is_logged_in(slot, 0, &logged_in) == 0 && logged_in == 1))
    return;
  // Where the PIN came from, for the message that says it is wrong.
  config::source_location where = key.where;
  std::string from;
  std::string pin;
  cleanse_on_exit wipe{pin};
  if (!pin_file.empty()) {
    take_secret(pin, read_secret_file(pin_file));
    where = pin_file.where;
    from = "key_pin_file " + pin_file.path;
  } else if (!uri.pin_source.empty()) {
    take_secret(pin, read_secret_file({uri.pin_source, key.where}));
    from = "pin-source " + uri.pin_source;
  } else if (!uri.pin_value.empty()) {
    pin.assign(uri.pin_value);
    from = "the URI's pin-value";
  } else {
    fail(key.where, "PKCS#11 token '" + label +
                        "' needs a PIN: set key_pin_file, or pin-source=file:/path in the URI");
  }
  const std::string refusal = refusal_key(module, *slot->token, pin);
  if (auto it = refused_pins().find(refusal); it != refused_pins().end())
    fail(where, pin_refusal(it->second, label, from) +
                    "; the token refused this PIN before, so it is not tried again until the "
                    "PIN changes (tokens lock after a few wrong PINs)");
  ERR_clear_error();
  if (PKCS11_login(slot, 0, pin.c_str()) == 0) return;
  const unsigned long reason = static_cast<unsigned long>(ERR_GET_REASON(ERR_peek_last_error()));
  const std::string why = drain_errors();
  if (auto refused = pin_refusal(reason, label, from); !refused.empty()) {
    // A locked token refuses the right PIN too, and spends no try doing so: after the security
    // officer unlocks it, that PIN must be tried again (review).
    if (reason != kPinLocked) refused_pins().emplace(refusal, reason);
    fail(where, refused);
  }
  fail(where, "cannot log in to PKCS#11 token '" + label + "' (PIN from " + from +
                  "): " + (why.empty() ? std::string("unknown error") : why));
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
  login(path, slot, uri, key, pin_file);
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
