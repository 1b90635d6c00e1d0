#pragma once
// OCSP stapling inside the handshake. Server: hand clients that ask (status_request) the
// response the revocation service keeps fresh for our certificate. Client: ask the remote for
// one and check it when it comes; a remote that staples "revoked" is refused.
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>

#include "mtlsd/config/config.hpp"
#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::tls::revocation {

// The current DER OCSP response for one listener's certificate. Written by the revocation
// service's thread, read by every worker's handshakes: an atomic shared_ptr, no lock.
class staple_slot {
 public:
  struct response {
    std::string der;
    // Served until then: its nextUpdate, or without one thisUpdate +
    // ocsp_max_age_without_next_update (stapler.cpp). 0: no limit (tests).
    std::time_t next_update = 0;
    // Its thisUpdate: the refresh is due halfway from it to next_update, also for the slot of
    // the next runtime, which starts with this response when the certificate stays (stapler.cpp).
    std::time_t this_update = 0;
  };
  std::shared_ptr<const response> get() const { return current_.load(); }
  void set(std::shared_ptr<const response> r) { current_.store(std::move(r)); }

  // The stapler's first fetch for this slot ended (stapled or failed), or it needed none (it
  // started with the response of the runtime before). A reload that rotated our certificate
  // waits for this, bounded, before handshakes can see the slot: they would go unstapled
  // until the responder answers otherwise.
  void first_fetch_done() {
    {
      std::lock_guard lock(first_fetch_mutex_);
      first_fetch_done_ = true;
    }
    first_fetch_cv_.notify_all();
  }
  // Whether first_fetch_done() came before `deadline`.
  bool wait_first_fetch(std::chrono::steady_clock::time_point deadline) const {
    std::unique_lock lock(first_fetch_mutex_);
    return first_fetch_cv_.wait_until(lock, deadline, [this] { return first_fetch_done_; });
  }

  // A reload replaced the runtime that owns this slot: connections still holding that runtime
  // keep it alive, but its staple is no longer refreshed (the new runtime's slot is).
  void retire() { retired_.store(true); }
  bool retired() const { return retired_.load(); }

 private:
  std::atomic<std::shared_ptr<const response>> current_;
  std::atomic<bool> retired_{false};
  mutable std::mutex first_fetch_mutex_;
  mutable std::condition_variable first_fetch_cv_;
  bool first_fetch_done_ = false;  // under first_fetch_mutex_
};

// The stapling of one listener's context (built by tls::build_context): in server mode with
// revocation.stapling, a new slot whose response is served (null otherwise); in client mode,
// asking the remote for its staple and checking it (revocation.require_staple), unless
// server_auth.insecure_skip_verify judges nothing of the remote's.
std::shared_ptr<staple_slot> attach_stapling(SSL_CTX* ctx, const config::listener& l);

// Server contexts: staple `slot`'s response (it must outlive `ctx`). Without a fresh response
// the handshake goes on without a staple.
void serve_staples(SSL_CTX* ctx, const staple_slot* slot);

// Client contexts: request a stapled response and check it after the chain is verified. Needs
// the context's verifier (verify.hpp) to record the verdict. `require`: a remote that staples
// nothing, or nothing that says "good", is refused (revocation_unavailable).
void check_staples(SSL_CTX* ctx, bool require = false);

// Client side: what the remote of `ssl` stapled, with its verified leaf and the issuer the
// staple is checked against (the leaf itself when the chain is that one certificate). Empty
// `response` when it stapled nothing or its chain was not verified. Still there after a
// handshake the staple failed, to hand a stapled "revoked" to the revocation service.
struct remote_staple {
  x509_ptr leaf, issuer;
  std::string response;  // DER, as stapled
};
remote_staple stapled_by_remote(SSL* ssl);

}  // namespace mtlsd::tls::revocation
