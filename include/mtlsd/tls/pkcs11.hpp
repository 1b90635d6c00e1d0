#pragma once
// Private keys that stay in a PKCS#11 token (an HSM, SoftHSM, a smart card), named by an RFC 7512
// `pkcs11:` URI where a key file's path would be. Loaded through libp11 (the library under the
// libengine-pkcs11-openssl engine): the EVP_PKEY signs by calling the token; the key itself
// never leaves it.
#include <map>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/pkcs11_uri.hpp"
#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls::pkcs11 {

// The module loaded when neither the URI's module-path= nor $PKCS11_MODULE_PATH names one:
// p11-kit's proxy, which offers every module registered with p11-kit (/usr/share/p11-kit/modules).
inline constexpr const char* default_module = "p11-kit-proxy.so";

// The module a URI resolves to: module-path=, else $PKCS11_MODULE_PATH, else default_module.
std::string module_for(const config::pkcs11_uri& uri);

// What the module for `uri` reads when a key is loaded (at start and at every reload, inside the
// sandbox): the module file; SoftHSM's configuration ($SOFTHSM2_CONF, else
// /etc/softhsm/softhsm2.conf) and its token directory; p11-kit's module registry. Absolute paths,
// files or directories; some may not exist. Other modules' files must be under a directory the
// configuration names, or the sandbox turned off (README, "Keys in an HSM").
std::vector<std::string> paths_to_read(const config::pkcs11_uri& uri);
// What it writes: SoftHSM's token directory, where each login is recorded in the token's
// object file (a wrong PIN too; refused that write, SoftHSM fails every later login).
std::vector<std::string> paths_to_write(const config::pkcs11_uri& uri);

// "" unless loading a module started threads (then which, for the sandbox's error: it must be
// entered while mtlsd has one thread). p11-kit's proxy does when it loads OpenSC.
std::string threads_started();

// Opens the token `key` names (a pkcs11: URI), logs in with the PIN from `pin_file` (or the
// URI's pin-source / pin-value) and returns a handle on the private key. Each module is loaded
// once per process and stays loaded (keys in use by older configurations keep working across
// reloads). Throws config_error naming the key's line (or the PIN file's) and precisely what is
// wrong: no module, no such token, a PIN missing or wrong, no such key. A PIN the token refused
// (wrong, locked, expired, invalid) is remembered by module, token and the PIN's SHA-256, and
// not tried again by this process: the same module, token and PIN fail at once, without a
// login (many tokens lock after three wrong PINs). A changed PIN is tried, unless the token is
// logged in already: then the PIN must be the one it was logged in with (its SHA-256 is
// remembered), or this fails saying a restart is needed to use it (logging in again would log
// out every session signing with the token).
evp_pkey_ptr load_private_key(const config::file_ref& key, const config::file_ref& pin_file);

// `mtlsd verify` judges a peer's certificate and signs nothing: from this call on,
// load_private_key returns the key given here for its URI (the public key of the certificate
// it goes with) and opens no module and no token. A URI not given is loaded as usual.
void stand_in_public_keys(std::map<std::string, evp_pkey_ptr> by_uri);

// The key a pkcs11: URI names, for messages and without its PIN: "the private key labelled 'k'
// on PKCS#11 token token=t".
std::string describe(const std::string& key_uri);

}  // namespace mtlsd::tls::pkcs11
