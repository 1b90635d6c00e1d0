#include "mtlsd/runtime/signing_health.hpp"

#include <openssl/evp.h>

#include <utility>

#include "mtlsd/tls/signing_probe.hpp"

namespace mtlsd::runtime {

void signing_health::clear_locked() {
  failing_.store(false, std::memory_order_relaxed);
  key_.reset();
  why_.clear();
}

bool signing_health::signed_ok(EVP_PKEY* key) {
  if (!failing_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lk(mu_);
  if (!failing_.load(std::memory_order_relaxed)) return false;
  // The same key, even loaded again by a reload: its public half.
  if (key_ && (!key || EVP_PKEY_eq(key_.get(), key) != 1)) return false;
  clear_locked();
  return true;
}

bool signing_health::failed(EVP_PKEY* key, std::string why) {
  std::lock_guard lk(mu_);
  if (key && EVP_PKEY_up_ref(key) == 1) key_.reset(key);
  why_ = std::move(why);
  ++generation_;
  last_probe_ = std::chrono::steady_clock::now();  // the handshake just asked it
  return !failing_.exchange(true, std::memory_order_relaxed);
}

std::string signing_health::failure() {
  if (!failing_.load(std::memory_order_relaxed)) return {};
  tls::evp_pkey_ptr key;
  std::uint64_t generation = 0;
  {
    std::lock_guard lk(mu_);
    if (!failing_.load(std::memory_order_relaxed)) return {};
    const auto now = std::chrono::steady_clock::now();
    if (!key_ || now - last_probe_ < probe_interval_) return why_;
    last_probe_ = now;
    if (EVP_PKEY_up_ref(key_.get()) == 1) key.reset(key_.get());
    generation = generation_;
  }
  // Outside the lock: a token that hangs holds up this caller, not the workers.
  const bool signs = key && tls::sign_probe(key.get()).empty();
  std::lock_guard lk(mu_);
  if (!failing_.load(std::memory_order_relaxed)) return {};
  if (!signs || generation != generation_) return why_;
  clear_locked();
  return {};
}

void signing_health::carry_from(signing_health& before, const std::vector<EVP_PKEY*>& keys) {
  if (&before == this || !before.failing_.load(std::memory_order_relaxed)) return;
  std::scoped_lock lk(before.mu_, mu_);
  if (!before.failing_.load(std::memory_order_relaxed) || !before.key_) return;
  for (EVP_PKEY* k : keys)
    if (k && EVP_PKEY_eq(before.key_.get(), k) == 1) {
      // The new listener's handle: what /readyz asks from now on.
      if (EVP_PKEY_up_ref(k) != 1) return;
      key_.reset(k);
      why_ = before.why_;
      last_probe_ = before.last_probe_;
      ++generation_;
      failing_.store(true, std::memory_order_relaxed);
      return;
    }
}

}  // namespace mtlsd::runtime
