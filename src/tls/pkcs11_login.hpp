#pragma once
// Logging in to a PKCS#11 token, for pkcs11.cpp (internal to src/tls): where the PIN comes from,
// the PINs a token refused, and the PIN each token was logged in with. Called with pkcs11.cpp's
// lock held.
#include <libp11.h>

#include <string>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::tls::pkcs11 {

// Throws config_error: `what`, at `where`.
[[noreturn]] void fail(const config::source_location& where, const std::string& what);

// SoftHSM's token directory (directories.tokendir of $SOFTHSM2_CONF, else of
// /etc/softhsm/softhsm2.conf) when `module` may be SoftHSM (itself, or p11-kit's proxy); else "".
std::string softhsm_tokens_of(const std::string& module);

// Logs in to the token in `slot` of `module` with the PIN the key names (key_pin_file, else the
// URI's pin-source= or pin-value=), unless the token needs no login. A token this process logged
// in to already is not logged in again: its PIN must be the one it was logged in with (compared
// by SHA-256), or this fails, as logging in anew would first log out every session signing with
// it. Throws config_error at the PIN file's line (else the key's) saying what is wrong.
void log_in(const std::string& module, PKCS11_SLOT* slot, const config::pkcs11_uri& uri,
            const config::file_ref& key, const config::file_ref& pin_file);

}  // namespace mtlsd::tls::pkcs11
