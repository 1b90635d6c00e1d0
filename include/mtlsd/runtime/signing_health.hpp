#pragma once
// Whether a listener's own private key still signs (tls/signing_probe.hpp). A key in a token can
// stop signing while mtlsd runs; every full handshake then fails on our side, and the listener
// is not ready (/readyz) until the key signs again. Workers report; /readyz asks.
#include <atomic>
#include <mutex>
#include <string>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::runtime {

class signing_health {
 public:
  // A full handshake signed with our key. True when that ends a failure (say so, once). One
  // relaxed load when nothing failed, as on nearly every handshake.
  bool signed_ok();
  // A handshake failed while signing with `key` (SSL_get_privatekey), OpenSSL saying `why`.
  // True on the first such failure since the key last signed: log it then, not per connection.
  bool failed(EVP_PKEY* key, std::string why);
  // "" while the key signs; otherwise why not. After a failure it asks the key again (one
  // signature, on the caller's thread): a token that came back makes the listener ready again
  // without waiting for a handshake, which a pod that reads not ready would not get.
  std::string failure();

 private:
  std::atomic<bool> failing_{false};
  std::mutex mu_;
  tls::evp_pkey_ptr key_;  // the key that failed (guarded by mu_)
  std::string why_;        // guarded by mu_
};

}  // namespace mtlsd::runtime
