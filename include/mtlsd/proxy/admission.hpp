#pragma once
// Admission limits of one listener, shared by all its workers (held by the listener_slot, so
// they outlive reloads; the limits themselves are read from the current configuration at each
// decision). The order of checks is the README's: allowed_sources, connections_per_second,
// max_connections_per_source, max_pending_handshakes — and after the handshake,
// max_connections_per_identity.
//
// Cost: the rate limit is one atomic bucket (GCRA, "generic cell rate algorithm": a single
// 64-bit theoretical arrival time advanced by compare-and-swap — exact across workers, no lock,
// nothing split). The pending count is one atomic. Counts per source and per identity sit in a
// map under a mutex, touched only when that limit is on, twice per connection; an entry is
// erased when its count returns to zero, so the maps hold only live connections.
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "mtlsd/config/config.hpp"
#include "mtlsd/reason.hpp"

namespace mtlsd::proxy {

struct admission_refusal {
  reason why;
  std::string detail;
};

class admission_state {
 public:
  // connections_per_second / burst: true when the connection may go on.
  bool take_token(const config::limit_options& l, std::chrono::steady_clock::time_point now);

  std::size_t sources_tracked() const;
  std::size_t identities_tracked() const;
  int pending() const { return pending_.load(); }

 private:
  friend class admission_ticket;
  struct counts {
    mutable std::mutex mu;
    std::unordered_map<std::string, int> by_key;
    bool acquire(const std::string& key, int max);
    void release(const std::string& key);
    std::size_t size() const;
  };
  std::atomic<std::int64_t> tat_ns_{0};  // GCRA: when the bucket will be full again
  std::atomic<int> pending_{0};
  counts sources_;
  counts identities_;
};

// What one connection holds of its listener's limits: given back when it is destroyed (or, for
// the pending place, at end_handshake()). Movable, not copyable.
class admission_ticket {
 public:
  admission_ticket() = default;
  explicit admission_ticket(std::shared_ptr<admission_state> state) : state_(std::move(state)) {}
  admission_ticket(admission_ticket&& o) noexcept { *this = std::move(o); }
  admission_ticket& operator=(admission_ticket&& o) noexcept;
  admission_ticket(const admission_ticket&) = delete;
  admission_ticket& operator=(const admission_ticket&) = delete;
  ~admission_ticket() { release(); }

  // The checks before the handshake for a client at `source` (nullopt: a unix-socket peer,
  // which has no address). On success the ticket holds a per-source place (when that limit is
  // on) and a pending-handshake place.
  std::optional<admission_refusal> admit_source(const config::listener& cfg,
                                                const std::optional<config::ip_address>& source);
  // max_pending_handshakes alone (admit_source takes it too, unless held already): taken at
  // accept when the client's address is still to come in a PROXY header, so that sockets
  // silent before their header count as pending as much as those silent before a ClientHello.
  std::optional<admission_refusal> admit_pending(const config::listener& cfg);
  // The handshake is over (either way): the pending place is free again.
  void end_handshake();
  // max_connections_per_identity, after the handshake. `identity`: peer_identity::limit_key.
  std::optional<admission_refusal> admit_identity(const config::listener& cfg,
                                                  const std::string& identity);

 private:
  void release();
  std::shared_ptr<admission_state> state_;
  bool pending_ = false;
  std::optional<std::string> source_key_;
  std::optional<std::string> identity_key_;
};

// The IP address in a socket address (AF_INET / AF_INET6), else nullopt.
std::optional<config::ip_address> ip_of(const sockaddr* sa);

// allowed_sources of `cfg` for a peer at `source` (null: a unix-socket peer, which has no
// address): nullopt when it may connect, else the refusal. The accept asks (admit_source), and
// a reload asks again of every open connection (session_control::rejudge): the same words.
std::optional<admission_refusal> source_refusal(const config::listener& cfg,
                                                const config::ip_address* source);

}  // namespace mtlsd::proxy
