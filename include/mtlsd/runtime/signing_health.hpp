#pragma once
// Whether a listener's own private key still signs (tls/signing_probe.hpp). A key in a token can
// stop signing while mtlsd runs; every full handshake then fails on our side, and the listener
// is not ready (/readyz) until the key signs again. Workers report; /readyz asks.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::runtime {

class signing_health {
 public:
  // `probe_interval`: how often failure() asks the key itself, at most.
  explicit signing_health(std::chrono::milliseconds probe_interval = std::chrono::seconds(5))
      : probe_interval_(probe_interval) {}

  // A full handshake signed with `key` (SSL_get_privatekey): ends that key's failure, if it
  // failed. True when that ends the listener's failure, every key that failed having signed
  // since (say so, once); a key that did not fail signing ends nothing. One relaxed load when
  // nothing failed, as on nearly every handshake.
  bool signed_ok(EVP_PKEY* key);
  // Whether a failure stands (one relaxed load): the fast path of a handshake's report.
  bool failing() const { return failing_.load(std::memory_order_relaxed); }
  // A handshake failed while signing with `key`, OpenSSL saying `why`. True on the first such
  // failure since the key last signed: log it then, not per connection.
  bool failed(EVP_PKEY* key, std::string why);
  // "" while every key signs; otherwise why the first that failed does not (and how many do
  // not, when more than one). After a failure it asks the keys again (one signature each, on
  // the caller's thread, without the lock the workers take, at most every probe interval,
  // counted from the last failure too): a token that came back makes the listener ready again
  // without waiting for a handshake, which a pod that reads not ready would not get.
  std::string failure();
  // A reload's new listener: takes over `before`'s failures of the keys among `keys` (the new
  // listener's keys kept from `before`, under the same URI), so that the 503 stays until each
  // signs; the others end (a listener that dropped a key, or names it anew and saw it sign, is
  // not held to it).
  void carry_from(signing_health& before, const std::vector<EVP_PKEY*>& keys);

 private:
  struct failing_key {
    tls::evp_pkey_ptr key;  // null: a failure no key was named for (any signature ends it)
    std::string why;
  };
  // The entry for `key` (EVP_PKEY_eq: its public half), or end(); mu_ held.
  std::vector<failing_key>::iterator find_locked(EVP_PKEY* key);
  void update_locked();            // failing_ follows keys_; mu_ held
  std::string why_locked() const;  // failure()'s text; mu_ held

  const std::chrono::milliseconds probe_interval_;
  std::atomic<bool> failing_{false};
  std::mutex mu_;
  // Guarded by mu_, with the two below. Every key that failed and has not signed since, oldest
  // first (review: only the last was kept, so a second key failing and then signing hid the first
  // one's failure).
  std::vector<failing_key> keys_;
  std::uint64_t generation_ = 0;  // one per failure, so that a late probe clears no newer one
  std::chrono::steady_clock::time_point last_probe_{};
};

}  // namespace mtlsd::runtime
