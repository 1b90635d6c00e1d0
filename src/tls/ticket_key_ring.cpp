#include "mtlsd/tls/ticket_key_ring.hpp"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cstring>
#include <stdexcept>

namespace mtlsd::tls {
namespace {

// Key material leaves no copy behind (ticket_key_copy says why). Passwords and PINs are
// cleansed the same way (credentials.cpp, pkcs11.cpp).
void wipe(std::optional<ticket_key>& k) {
  if (k) OPENSSL_cleanse(&*k, sizeof *k);
  k.reset();
}

// Made in place: no copy of the new key is left on the stack.
void fresh(std::optional<ticket_key>& slot, ticket_key_ring::time_point now) {
  ticket_key& k = slot.emplace();
  if (RAND_bytes(k.name.data(), 16) != 1 || RAND_bytes(k.aes.data(), 32) != 1 ||
      RAND_bytes(k.hmac.data(), 32) != 1) {
    wipe(slot);
    throw std::runtime_error("RAND_bytes failed for a session-ticket key");
  }
  k.created = now;
}

}  // namespace

ticket_key_copy::~ticket_key_copy() {
  wipe(key);
}

void ticket_key_ring::for_issuing(time_point now, ticket_key_copy& out) {
  std::lock_guard lk(mu_);
  if (!current_ || now - current_->created >= period_) {
    wipe(previous_);
    previous_ = current_;
    wipe(current_);
    fresh(current_, now);
  }
  out.key = *current_;
}

void ticket_key_ring::for_decrypting(const unsigned char* name, time_point now,
                                     ticket_key_copy& out) {
  std::lock_guard lk(mu_);
  for (const auto* k : {&current_, &previous_}) {
    if (!*k || std::memcmp((*k)->name.data(), name, 16) != 0) continue;
    if (now - (*k)->created < 2 * period_) out.key = **k;
    return;
  }
}

}  // namespace mtlsd::tls
