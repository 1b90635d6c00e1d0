#include "mtlsd/tls/session_cache.hpp"

#include <algorithm>
#include <cstdint>
#include <ctime>

#include "mtlsd/tls/staple_lapse.hpp"
#include "mtlsd/tls/ticket_chain.hpp"
#include "mtlsd/tls/verify.hpp"

namespace mtlsd::tls {
namespace {

// ex_data slots: SSL_CTX -> cache, SSL -> the upstream key of that connection, SSL_SESSION ->
// the earliest notAfter of the remote's verified chain, or the lapse of the "good" OCSP
// response it stapled when that comes first (the value itself, not a pointer: OpenSSL copies
// it into the session a resumption's new ticket makes).
struct indexes {
  int ctx_cache = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  int ssl_key = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  int session_not_after = SSL_SESSION_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
};

const indexes& idx() {
  static const indexes i;
  return i;
}

// Past its lifetime, or holding a remote certificate past its validity, or made by a
// handshake whose verified chain holds one (an intermediate, the anchor: review), or whose
// remote stapled a "good" OCSP response now past its nextUpdate (review: a remote that now
// staples "revoked" was resumed for as long as the app kept connecting): resuming it would
// skip the check a full handshake makes of the remote's certificates (Go's client drops
// expired chains' sessions too).
bool expired(const SSL_SESSION* s, std::time_t now) {
  if (SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s) <= now) return true;
  const auto chain_not_after =
      reinterpret_cast<std::intptr_t>(SSL_SESSION_get_ex_data(s, idx().session_not_after));
  if (chain_not_after != 0 && chain_not_after <= now) return true;
  const X509* peer = SSL_SESSION_get0_peer(const_cast<SSL_SESSION*>(s));
  return peer && !valid_now(peer);
}

}  // namespace

client_session_cache::client_session_cache(std::size_t max_entries)
    : max_entries_(std::max<std::size_t>(1, max_entries)) {}

client_session_cache::~client_session_cache() {
  for (auto& [key, e] : entries_)
    SSL_SESSION_free(e.session);
}

void client_session_cache::attach(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, idx().ctx_cache, this);
  // CLIENT: call the new-session callback; NO_INTERNAL_STORE: OpenSSL's own cache would only
  // grow (a client never looks sessions up in it).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &client_session_cache::on_new_session);
}

void client_session_cache::prepare(SSL* ssl, const std::string* key) {
  SSL_set_ex_data(ssl, idx().ssl_key, const_cast<std::string*>(key));
  std::lock_guard lock(mutex_);
  auto it = entries_.find(*key);
  if (it == entries_.end()) return;
  if (expired(it->second.session, std::time(nullptr))) {
    SSL_SESSION_free(it->second.session);
    entries_.erase(it);
    return;
  }
  // SSL_set_session takes its own reference; the entry keeps ours, so concurrent connections
  // can resume the same session (OpenSSL copies it before changing anything).
  SSL_set_session(ssl, it->second.session);
}

void client_session_cache::forget(SSL* ssl) {
  auto* cache = static_cast<client_session_cache*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), idx().ctx_cache));
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, idx().ssl_key));
  SSL_SESSION* mine = SSL_get0_session(ssl);
  if (!cache || !key || !mine) return;
  std::lock_guard lock(cache->mutex_);
  auto it = cache->entries_.find(*key);
  // Only this connection's session: another connection may have stored a newer one since.
  if (it == cache->entries_.end() || it->second.session != mine) return;
  SSL_SESSION_free(it->second.session);
  cache->entries_.erase(it);
}

std::size_t client_session_cache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

int client_session_cache::on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* cache = static_cast<client_session_cache*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), idx().ctx_cache));
  const auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, idx().ssl_key));
  if (!cache || !key || !SSL_SESSION_is_resumable(session)) return 0;  // not kept
  // A handshake that found a CRL file missing or stale (admitted under on_unavailable: allow,
  // or left to OCSP or distribution points) leaves no session: a resumption would skip that
  // judgement (the client cache keeps no such facts, unlike a server's tickets).
  if (const verify_outcome* vo = verifier::outcome_of(ssl); vo && vo->crl_unusable_depths) return 0;
  // A resumption's new session holds the value its own session had.
  if (!SSL_session_reused(ssl))
    if (STACK_OF(X509)* chain = SSL_get0_verified_chain(ssl)) {
      std::time_t until = earliest_not_after(chain);
      if (const std::time_t staple = stapled_good_until(sk_X509_value(chain, 0)))
        until = std::min(until, staple);
      SSL_SESSION_set_ex_data(
          session, idx().session_not_after,
          reinterpret_cast<void*>(static_cast<std::intptr_t>(std::max<std::time_t>(1, until))));
    }
  cache->store(*key, session);
  return 1;  // we keep the reference OpenSSL handed us
}

void client_session_cache::store(const std::string& key, SSL_SESSION* session) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    SSL_SESSION_free(it->second.session);
    it->second = {session, ++counter_};
    return;
  }
  if (entries_.size() >= max_entries_) {
    auto oldest = std::min_element(
        entries_.begin(), entries_.end(),
        [](const auto& a, const auto& b) { return a.second.stored < b.second.stored; });
    SSL_SESSION_free(oldest->second.session);
    entries_.erase(oldest);
  }
  entries_.emplace(key, entry{session, ++counter_});
}

}  // namespace mtlsd::tls
