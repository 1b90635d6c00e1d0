#include "mtlsd/runtime/signing_health.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

#include "mtlsd/tls/signing_probe.hpp"

namespace mtlsd::runtime {

std::vector<signing_health::failing_key>::iterator signing_health::find_locked(EVP_PKEY* key) {
  return std::find_if(keys_.begin(), keys_.end(), [key](const failing_key& f) {
    return f.key && key && EVP_PKEY_eq(f.key.get(), key) == 1;
  });
}

void signing_health::update_locked() {
  failing_.store(!keys_.empty(), std::memory_order_relaxed);
}

bool signing_health::signed_ok(EVP_PKEY* key) {
  if (!failing_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lk(mu_);
  // The same key, even loaded again by a reload (its public half); a failure with no key named
  // ends with any signature.
  auto it = find_locked(key);
  if (it == keys_.end())
    it = std::find_if(keys_.begin(), keys_.end(), [](const failing_key& f) { return !f.key; });
  if (it == keys_.end()) return false;
  keys_.erase(it);
  update_locked();
  return keys_.empty();
}

bool signing_health::failed(EVP_PKEY* key, std::string why) {
  std::lock_guard lk(mu_);
  ++generation_;
  last_probe_ = std::chrono::steady_clock::now();  // the handshake just asked it
  auto it = key ? find_locked(key)
                : std::find_if(keys_.begin(), keys_.end(), [](const auto& f) { return !f.key; });
  if (it != keys_.end()) {
    it->why = std::move(why);
    return false;  // said already
  }
  tls::evp_pkey_ptr held;
  if (key && EVP_PKEY_up_ref(key) == 1) held.reset(key);
  keys_.push_back({std::move(held), std::move(why)});
  update_locked();
  return true;
}

std::string signing_health::failure() {
  if (!failing_.load(std::memory_order_relaxed)) return {};
  std::vector<tls::evp_pkey_ptr> asked;
  std::uint64_t generation = 0;
  {
    std::lock_guard lk(mu_);
    if (keys_.empty()) return {};
    const auto now = std::chrono::steady_clock::now();
    if (now - last_probe_ < probe_interval_) return why_locked();
    last_probe_ = now;
    for (const auto& f : keys_)
      if (f.key && EVP_PKEY_up_ref(f.key.get()) == 1) asked.emplace_back(f.key.get());
    generation = generation_;
  }
  // Outside the lock: a token that hangs holds up this caller, not the workers.
  std::vector<bool> signs;
  for (const auto& k : asked)
    signs.push_back(tls::sign_probe(k.get()).empty());
  std::lock_guard lk(mu_);
  if (generation == generation_)
    for (std::size_t i = 0; i < asked.size(); ++i)
      if (auto it = find_locked(asked[i].get()); signs[i] && it != keys_.end()) keys_.erase(it);
  update_locked();
  return why_locked();
}

std::string signing_health::why_locked() const {
  if (keys_.empty()) return {};
  if (keys_.size() == 1) return keys_.front().why;
  return keys_.front().why + " (and " + std::to_string(keys_.size() - 1) + " more of its keys)";
}

void signing_health::carry_from(signing_health& before, const std::vector<EVP_PKEY*>& keys) {
  if (&before == this || !before.failing_.load(std::memory_order_relaxed)) return;
  std::scoped_lock lk(before.mu_, mu_);
  for (const auto& f : before.keys_) {
    if (!f.key) continue;
    for (EVP_PKEY* k : keys)
      if (k && EVP_PKEY_eq(f.key.get(), k) == 1 && EVP_PKEY_up_ref(k) == 1) {
        // The new listener's handle: what /readyz asks from now on.
        keys_.push_back({tls::evp_pkey_ptr(k), f.why});
        break;
      }
  }
  last_probe_ = before.last_probe_;
  ++generation_;
  update_locked();
}

}  // namespace mtlsd::runtime
