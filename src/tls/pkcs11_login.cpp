#include "pkcs11_login.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "mtlsd/tls/credentials.hpp"
#include "mtlsd/util/hex.hpp"

namespace mtlsd::tls::pkcs11 {
namespace {

// PKCS#11 return values we explain (pkcs11.h, CKR_*); libp11 puts them in the OpenSSL error
// queue as the reason of its errors.
constexpr unsigned long kGeneralError = 0x05;
constexpr unsigned long kPinIncorrect = 0xA0;
constexpr unsigned long kPinInvalid = 0xA1;
constexpr unsigned long kPinLenRange = 0xA2;
constexpr unsigned long kPinExpired = 0xA3;
constexpr unsigned long kPinLocked = 0xA4;

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

// One token of one module: the module's path and the token's manufacturer, model, serial number
// and label.
std::string token_key(const std::string& module, const PKCS11_TOKEN& t) {
  auto field = [](const char* v) { return std::string(v ? v : "") + '\n'; };
  return module + '\n' + field(t.manufacturer) + field(t.model) + field(t.serialnr) +
         field(t.label);
}

// The PIN's SHA-256 in hex: what is kept of a PIN after it was used.
std::string pin_digest(const std::string& pin) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(pin.data(), pin.size(), md, &n, EVP_sha256(), nullptr) != 1) n = 0;
  return util::hex(md, n);
}

// PINs a token refused, by token_key and the PIN's digest, each with the token's reason: tried
// once per process, since many tokens lock after three wrong PINs (review: each listener of a
// build, each later reload and each `verify` spent one more).
std::map<std::string, unsigned long>& refused_pins() {
  static auto* m = new std::map<std::string, unsigned long>;
  return *m;
}

// The PIN each token was logged in with, by token_key: its digest and where it came from.
struct login_record {
  std::string digest;
  std::string from;
};
std::map<std::string, login_record>& logged_in_with() {
  static auto* m = new std::map<std::string, login_record>;
  return *m;
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

// Why a login may fail with CKR_GENERAL_ERROR: the token could not write its own files. SoftHSM
// records each login in the token's files, and once such a write failed (a read-only token
// directory: systemd's ProtectSystem= without ReadWritePaths=) takes the token for broken and
// fails every later login of the process (review: a reload after a wrong PIN said only
// "General Error").
std::string general_error_hint(const std::string& module) {
  const std::string dir = softhsm_tokens_of(module);
  if (dir.empty())
    return "; the token may be unable to write its files (a read-only token directory: "
           "systemd's ProtectSystem= without ReadWritePaths= for it)";
  std::string here;
  if (::access(dir.c_str(), W_OK) != 0)
    here = " (mtlsd cannot write to it: " + std::string(std::strerror(errno)) + ")";
  return "; the token may be unable to write its files: SoftHSM records each login in its token "
         "directory " +
         dir + here +
         ", and once that failed (a read-only directory: systemd's ProtectSystem= without "
         "ReadWritePaths=" +
         dir + ") fails every login until mtlsd restarts";
}

}  // namespace

void log_in(const std::string& module, PKCS11_SLOT* slot, const config::pkcs11_uri& uri,
            const config::file_ref& key, const config::file_ref& pin_file) {
  if (!slot->token->loginRequired) return;
  const std::string label = slot->token->label ? slot->token->label : "";
  const std::string token = token_key(module, *slot->token);
  int state = 0;
  const bool logged_in = PKCS11_is_logged_in(slot, 0, &state) == 0 && state == 1;
  const auto earlier = logged_in_with().find(token);
  // Logged in, but not with a PIN of ours (none is recorded): nothing to compare it with.
  if (logged_in && earlier == logged_in_with().end()) return;
  const bool pin_given = !pin_file.empty() || !uri.pin_source.empty() || !uri.pin_value.empty();
  // A key that names no PIN may use a token another key logged in to.
  if (logged_in && !pin_given) return;
  // Where the PIN came from, for the messages about it.
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
  const std::string digest = pin_digest(pin);
  if (logged_in) {
    // The token takes no other PIN now (review: a reload took a wrong PIN written to
    // key_pin_file without looking at it, and the next start failed on it). From another
    // source, it may be another key's of the same configuration, which no restart would mend.
    const bool same_source = earlier->second.from == from;
    if (digest != earlier->second.digest)
      fail(where, "the PIN for PKCS#11 token '" + label + "' (from " + from +
                      ") differs from the one the token was logged in with" +
                      (same_source ? "; restart mtlsd to use it"
                                   : " (from " + earlier->second.from +
                                         "); give all its keys that PIN, or restart mtlsd to use "
                                         "the new one") +
                      " (the token cannot be logged in again with a new PIN without logging out "
                      "every session that is signing)");
    return;
  }
  const std::string refusal = token + digest;
  if (auto it = refused_pins().find(refusal); it != refused_pins().end())
    fail(where, pin_refusal(it->second, label, from) +
                    "; the token refused this PIN before, so it is not tried again until the "
                    "PIN changes (tokens lock after a few wrong PINs)");
  ERR_clear_error();
  if (PKCS11_login(slot, 0, pin.c_str()) == 0) {
    logged_in_with()[token] = {digest, from};
    return;
  }
  const unsigned long reason = static_cast<unsigned long>(ERR_GET_REASON(ERR_peek_last_error()));
  const std::string why = drain_errors();
  if (auto refused = pin_refusal(reason, label, from); !refused.empty()) {
    // A locked token refuses the right PIN too, and spends no try doing so: after the security
    // officer unlocks it, that PIN must be tried again (review).
    if (reason != kPinLocked) refused_pins().emplace(refusal, reason);
    fail(where, refused);
  }
  fail(where, "cannot log in to PKCS#11 token '" + label + "' (PIN from " + from +
                  "): " + (why.empty() ? std::string("unknown error") : why) +
                  (reason == kGeneralError ? general_error_hint(module) : std::string()));
}

}  // namespace mtlsd::tls::pkcs11
