#include "mtlsd/proxy/admission.hpp"

#include <netinet/in.h>

#include <cstring>
#include <utility>

namespace mtlsd::proxy {
namespace {

// A map key for an address: 17 bytes, family first. A unix-socket peer has none: one key for all.
std::string source_key(const std::optional<config::ip_address>& a) {
  if (!a) return std::string();
  std::string k(1 + (a->v6 ? 16 : 4), '\0');
  k[0] = a->v6 ? '6' : '4';
  for (std::size_t i = 1; i < k.size(); ++i)
    k[i] = static_cast<char>(a->bytes[i - 1]);
  return k;
}

}  // namespace

std::optional<config::ip_address> ip_of(const sockaddr* sa) {
  config::ip_address a;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(a.bytes.data(), &in->sin_addr, 4);
    return a;
  }
  if (sa->sa_family != AF_INET6) return std::nullopt;
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {  // a dual-stack socket's IPv4 client
    std::memcpy(a.bytes.data(), in6->sin6_addr.s6_addr + 12, 4);
    return a;
  }
  a.v6 = true;
  std::memcpy(a.bytes.data(), in6->sin6_addr.s6_addr, 16);
  return a;
}

bool admission_state::take_token(const config::limit_options& l,
                                 std::chrono::steady_clock::time_point now) {
  if (l.connections_per_second <= 0) return true;
  const std::int64_t interval = 1'000'000'000LL / l.connections_per_second;  // ns per token
  const std::int64_t tolerance = interval * l.bucket_size();
  const std::int64_t t =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  std::int64_t tat = tat_ns_.load(std::memory_order_relaxed);
  for (;;) {
    // Emptied under other settings (a reload raised the rate or lowered the burst), the bucket
    // is empty under these, not overdrawn: it refills at the new rate from now. Left overdrawn,
    // a raised limit refused every connection for up to the old burst / rate (review: 29 s).
    if (tat - t > tolerance) {
      if (tat_ns_.compare_exchange_weak(tat, t + tolerance, std::memory_order_relaxed))
        tat = t + tolerance;
      continue;
    }
    const std::int64_t next = std::max(tat, t) + interval;
    if (next - t > tolerance) return false;  // the bucket is empty
    if (tat_ns_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return true;
  }
}

bool admission_state::counts::acquire(const std::string& key, int max) {
  std::lock_guard lock(mu);
  int& n = by_key[key];
  if (n >= max) {
    if (n == 0) by_key.erase(key);
    return false;
  }
  ++n;
  return true;
}

void admission_state::counts::release(const std::string& key) {
  std::lock_guard lock(mu);
  auto it = by_key.find(key);
  if (it != by_key.end() && --it->second <= 0) by_key.erase(it);
}

std::size_t admission_state::counts::size() const {
  std::lock_guard lock(mu);
  return by_key.size();
}

std::size_t admission_state::sources_tracked() const {
  return sources_.size();
}
std::size_t admission_state::identities_tracked() const {
  return identities_.size();
}

admission_ticket& admission_ticket::operator=(admission_ticket&& o) noexcept {
  if (this == &o) return *this;
  release();
  state_ = std::move(o.state_);
  pending_ = std::exchange(o.pending_, false);
  source_key_ = std::exchange(o.source_key_, std::nullopt);
  identity_key_ = std::exchange(o.identity_key_, std::nullopt);
  return *this;
}

void admission_ticket::release() {
  if (!state_) return;
  end_handshake();
  if (source_key_) state_->sources_.release(*source_key_);
  if (identity_key_) state_->identities_.release(*identity_key_);
  source_key_.reset();
  identity_key_.reset();
}

std::optional<admission_refusal> source_refusal(const config::listener& cfg,
                                                const config::ip_address* source) {
  if (cfg.allowed_sources.empty() || (source && config::any_contains(cfg.allowed_sources, *source)))
    return std::nullopt;
  return admission_refusal{reason::source_not_allowed,
                           (source ? source->str() : std::string("a peer without an IP address")) +
                               " is not in allowed_sources"};
}

std::optional<admission_refusal> admission_ticket::admit_source(
    const config::listener& cfg, const std::optional<config::ip_address>& source) {
  if (!state_) return std::nullopt;
  if (auto refused = source_refusal(cfg, source ? &*source : nullptr)) return refused;
  const auto& lim = cfg.limits;
  if (!state_->take_token(lim, std::chrono::steady_clock::now()))
    return admission_refusal{reason::rate_limited,
                             "connections_per_second (" +
                                 std::to_string(lim.connections_per_second) + ", burst " +
                                 std::to_string(lim.bucket_size()) + ") exceeded"};
  if (lim.max_connections_per_source > 0) {
    std::string key = source_key(source);
    if (!state_->sources_.acquire(key, lim.max_connections_per_source))
      return admission_refusal{reason::rate_limited,
                               "max_connections_per_source (" +
                                   std::to_string(lim.max_connections_per_source) +
                                   ") reached for " + (source ? source->str() : "unix peers")};
    source_key_ = std::move(key);
  }
  return admit_pending(cfg);
}

std::optional<admission_refusal> admission_ticket::admit_pending(const config::listener& cfg) {
  if (!state_ || pending_) return std::nullopt;
  const int cap = cfg.limits.pending_cap(cfg.max_connections);
  if (state_->pending_.fetch_add(1) >= cap) {
    state_->pending_.fetch_sub(1);
    return admission_refusal{
        reason::over_capacity,
        "max_pending_handshakes (" + std::to_string(cap) + ") connections are in their handshake"};
  }
  pending_ = true;
  return std::nullopt;
}

void admission_ticket::end_handshake() {
  if (pending_ && state_) state_->pending_.fetch_sub(1);
  pending_ = false;
}

std::optional<admission_refusal> admission_ticket::admit_identity(const config::listener& cfg,
                                                                  const std::string& identity) {
  const int max = cfg.limits.max_connections_per_identity;
  if (!state_ || max <= 0 || identity.empty() || identity_key_) return std::nullopt;
  if (!state_->identities_.acquire(identity, max))
    return admission_refusal{
        reason::rate_limited,
        "max_connections_per_identity (" + std::to_string(max) + ") reached for " + identity};
  identity_key_ = identity;
  return std::nullopt;
}

}  // namespace mtlsd::proxy
