#pragma once
// Asynchronous DNS for everything that connects out (upstreams, OCSP responders, CRL
// distribution points). Asio's own resolver runs getaddrinfo on one private thread: it cannot
// be cancelled or bounded, and concurrent lookups queue behind each other, so a DNS outage
// would hold every connect for the system resolver's full retry cycle. This one is c-ares,
// driven by the calling io_context itself (its sockets watched by the reactor, its timeouts
// by a timer): no thread, lookups run concurrently, and a lookup awaited inside
// `(resolve(...) || timer)` or cancelled through Asio's per-operation cancellation returns at
// once. Answers are cached for their DNS TTL (clamped); "no such name" is cached briefly.
//
// One resolver (and cache) per execution context, created on first use: a worker's sessions
// share their worker's resolver, the revocation thread has its own. Single-threaded: use it
// only from the thread that runs its io_context (mtlsd runs each io_context on one thread).
//
// Depends on nothing else in mtlsd: tls/ and proxy/ use it, it uses neither.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mtlsd::net {

struct dns_server {
  std::string ip;  // an IP literal, without brackets
  std::uint16_t port = 53;
};

struct resolver_options {
  std::vector<dns_server> servers;  // empty = the system configuration (/etc/resolv.conf)
  // c-ares retries a silent server with a doubling timeout: 2 s + 4 s here. This bounds a
  // lookup nobody waits for any more (its waiters were cancelled); callers bound their own wait.
  std::chrono::milliseconds attempt_timeout{2000};
  int attempts = 2;
  std::chrono::seconds min_ttl{1};       // floor: also what /etc/hosts answers (TTL 0) get
  std::chrono::seconds max_ttl{300};     // cap: a long TTL must not pin a moved service for hours
  std::chrono::seconds negative_ttl{2};  // "no such name" / "no address": a short pause only
  std::size_t max_cache_entries = 1024;
};

// Options for resolvers created from now on (the daemon sets them once at start, before any
// worker resolves; `dns.servers` changes need a restart). Thread-safe.
void set_resolver_options(resolver_options o);
resolver_options current_resolver_options();

// The error category of c-ares status codes (messages from ares_strerror).
const boost::system::error_category& dns_category();

struct resolve_result {
  boost::system::error_code ec;  // dns_category, or asio::error::operation_aborted
  std::vector<boost::asio::ip::address> addresses;  // when !ec; never empty then
  bool from_cache = false;
};

class resolver final : public boost::asio::execution_context::service {
 public:
  using key_type = resolver;
  static boost::asio::execution_context::id id;

  explicit resolver(boost::asio::io_context& ioc);  // through asio::use_service
  ~resolver() override;
  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;

  // The resolver of the execution context that runs `ex` (created on first use).
  static resolver& of(const boost::asio::any_io_executor& ex);

  // Resolves a host name (IP literals are the caller's business) to its IPv4 and IPv6
  // addresses, from the cache when fresh. Must be awaited on this resolver's io_context.
  // Cancellable (per-operation cancellation): returns operation_aborted at once. Concurrent
  // lookups of one name share one query, which runs on while anyone waits for it (its answer
  // still fills the cache); once no lookup at all is awaited, pending queries are dropped so
  // that nothing keeps the io_context busy.
  boost::asio::awaitable<resolve_result> resolve(std::string host);

  // For tests and diagnostics.
  std::size_t queries_started() const;  // lookups that went to c-ares (cache misses)

 private:
  void shutdown() override;
  struct impl;
  std::unique_ptr<impl> impl_;
};

// resolver::of(executor of the calling coroutine).resolve(host).
boost::asio::awaitable<resolve_result> resolve(std::string host);

}  // namespace mtlsd::net
