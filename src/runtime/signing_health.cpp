#include "mtlsd/runtime/signing_health.hpp"

#include <utility>

#include "mtlsd/tls/signing_probe.hpp"

namespace mtlsd::runtime {

bool signing_health::signed_ok() {
  if (!failing_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lk(mu_);
  if (!failing_.exchange(false, std::memory_order_relaxed)) return false;
  key_.reset();
  why_.clear();
  return true;
}

bool signing_health::failed(EVP_PKEY* key, std::string why) {
  std::lock_guard lk(mu_);
  if (key && EVP_PKEY_up_ref(key) == 1) key_.reset(key);
  why_ = std::move(why);
  return !failing_.exchange(true, std::memory_order_relaxed);
}

std::string signing_health::failure() {
  if (!failing_.load(std::memory_order_relaxed)) return {};
  std::lock_guard lk(mu_);
  if (!failing_.load(std::memory_order_relaxed)) return {};
  // Asked again; a worker that sees the key sign meanwhile clears the failure too.
  if (key_ && tls::sign_probe(key_.get()).empty()) {
    failing_.store(false, std::memory_order_relaxed);
    key_.reset();
    why_.clear();
    return {};
  }
  return why_;
}

}  // namespace mtlsd::runtime
