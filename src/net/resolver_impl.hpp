#pragma once
// Private to resolver*.cpp: the state of one io_context's resolver. resolver.cpp has the
// public face (options, errors, resolve()) and the channel's setup; resolver_queries.cpp the
// cache and the queries with their waiters; resolver_sockets.cpp drives c-ares's sockets and
// timeouts from the io_context's reactor.
#include <ares.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mtlsd/net/resolver.hpp"

namespace mtlsd::net {

namespace asio = boost::asio;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

// A c-ares status as an error_code of dns_category().
error_code make_error(int status);

struct resolver::impl {
  struct query;

  // One caller waiting for a query's answer, type-erased so that any completion handler fits.
  struct waiter {
    virtual ~waiter() = default;
    // Posts the handler with `r`. `in_slot` = called from the waiter's own cancellation
    // handler, which must not be destroyed while it runs (so the slot is left alone).
    virtual void complete(resolve_result r, bool in_slot) = 0;
    query* q = nullptr;
    std::list<std::unique_ptr<waiter>>::iterator self;
  };

  struct query {
    impl* owner = nullptr;
    std::string host;
    std::list<std::unique_ptr<waiter>> waiters;
  };

  // A c-ares socket as the reactor sees it. c-ares owns the descriptor: it is released (never
  // closed) here when c-ares says it is done with it.
  struct watch {
    explicit watch(asio::io_context& ioc) : d(ioc) {}
    asio::posix::stream_descriptor d;
    bool want_read = false, want_write = false;
    bool reading = false, writing = false;
    bool closed = false;
  };

  struct cache_entry {
    error_code ec;
    std::vector<asio::ip::address> addresses;
    steady::time_point expires;
  };

  explicit impl(asio::io_context& c);
  ~impl() { stop(); }
  void stop();

  // --- the cache (resolver_queries.cpp) ---------------------------------------------------
  std::optional<resolve_result> lookup(const std::string& key);
  void store(const std::string& key, const resolve_result& r, int status, std::chrono::seconds ttl);

  // --- queries (resolver_queries.cpp) -----------------------------------------------------
  void start(std::string key, std::unique_ptr<waiter> w);
  static void attach(query& q, std::unique_ptr<waiter> w);
  void cancel(waiter* w);
  void reap_soon();
  static void on_answer(void* arg, int status, int timeouts, ares_addrinfo* res);
  template <class Handler>
  class waiter_for;  // resolver.cpp

  // --- sockets and timeouts (resolver_sockets.cpp) ----------------------------------------
  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  void sock_state(int fd, bool readable, bool writable);
  void arm(const std::shared_ptr<watch>& w, int fd);
  void schedule_timeout();

  asio::io_context& ioc;
  const resolver_options opts;
  ares_channel channel = nullptr;
  error_code init_error;
  bool stopped = false;
  bool reap_posted = false;
  asio::steady_timer timer;
  std::unordered_map<int, std::shared_ptr<watch>> watches;
  std::unordered_map<std::string, std::unique_ptr<query>> inflight;
  std::unordered_map<std::string, cache_entry> cache;
  std::size_t started = 0;
};

}  // namespace mtlsd::net
