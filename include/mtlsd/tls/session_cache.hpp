#pragma once
// Client-mode TLS session resumption: the newest resumable session each upstream address gave
// us, shared by every worker of one listener runtime (so the second connection to a remote
// skips the full handshake whichever worker makes it).
//
// Bound to one runtime snapshot, never carried across a reload: a resumed session is not
// re-verified, so a session established under the old trust store or allow list must not be
// offered under a new one. Nor past a certificate of the remote's chain, or the nextUpdate of
// the "good" OCSP response its full handshake accepted stapled (a resumption carries no staple,
// so the next full handshake must see the remote's current one). Bounded: at most `max_entries`
// upstream addresses (a hostname upstream that resolves to many addresses); the least recently
// stored one is dropped first.
//
// TLS 1.3 tickets arrive after the handshake, inside a later SSL_read: OpenSSL's new-session
// callback stores them whenever they come, so the relay's reads are what fill the cache.
#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

namespace mtlsd::tls {

class client_session_cache {
 public:
  explicit client_session_cache(std::size_t max_entries = 64);
  ~client_session_cache();
  client_session_cache(const client_session_cache&) = delete;
  client_session_cache& operator=(const client_session_cache&) = delete;

  // Makes `ctx` hand every new client session to this cache (and keep none itself). The cache
  // must outlive the context and every SSL made from it.
  void attach(SSL_CTX* ctx);

  // Per connection, before the handshake: sessions this SSL receives are stored under `*key`
  // (the connected upstream address), and the session stored under it, if any and not expired,
  // is offered for resumption. `*key` must outlive `ssl`.
  void prepare(SSL* ssl, const std::string* key);
  // A connection refused after its handshake (a revocation check, a resumed session judged
  // again): the session it made or resumed is not offered again, so the remote meets a full
  // handshake next time (review: a TLS 1.2 remote refused by the OCSP check resumed next). No-op
  // for an SSL whose context has no cache.
  static void forget(SSL* ssl);

  std::size_t size() const;

 private:
  struct entry {
    SSL_SESSION* session = nullptr;  // owned: one reference
    std::uint64_t stored = 0;        // insertion counter, for eviction
  };
  static int on_new_session(SSL* ssl, SSL_SESSION* session);
  void store(const std::string& key, SSL_SESSION* session);  // takes the reference

  const std::size_t max_entries_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, entry> entries_;
  std::uint64_t counter_ = 0;
};

}  // namespace mtlsd::tls
