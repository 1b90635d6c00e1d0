#include "mtlsd/net/resolver.hpp"

#include <ares.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace mtlsd::net {

namespace asio = boost::asio;
using boost::system::error_code;
using steady = std::chrono::steady_clock;

namespace {

std::mutex options_mutex;

resolver_options& global_options() {
  static resolver_options options;
  return options;
}

// Boost's error_category has a protected non-virtual destructor by design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class dns_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "dns"; }
  std::string message(int ev) const override { return ares_strerror(ev); }
};
#pragma GCC diagnostic pop

error_code make_error(int status) {
  return {status, dns_category()};
}

// A definitive "this name has no address": worth remembering for a moment. Timeouts, refusals
// and server failures are not: the very next lookup may succeed.
bool negative_answer(int status) {
  return status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_ENONAME ||
         status == ARES_EBADNAME;
}

std::string cache_key(std::string host) {
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return host;
}

// Reads one socket's readiness without blocking: Asio's reactor is edge-triggered, and c-ares
// may leave bytes behind (a TCP answer read in two steps), which no new edge would announce.
bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

}  // namespace

const boost::system::error_category& dns_category() {
  static const dns_error_category category;
  return category;
}

void set_resolver_options(resolver_options o) {
  std::lock_guard lock(options_mutex);
  global_options() = std::move(o);
}

resolver_options current_resolver_options() {
  std::lock_guard lock(options_mutex);
  return global_options();
}

asio::execution_context::id resolver::id;

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

  explicit impl(asio::io_context& c) : ioc(c), opts(current_resolver_options()), timer(c) {
    static const int library = ares_library_init(ARES_LIB_INIT_ALL);
    if (library != ARES_SUCCESS) {
      init_error = make_error(library);
      return;
    }
    ares_options o{};
    o.sock_state_cb = &impl::on_sock_state;
    o.sock_state_cb_data = this;
    o.timeout = static_cast<int>(opts.attempt_timeout.count());
    o.tries = std::max(1, opts.attempts);
    const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    if (int st = ares_init_options(&channel, &o, mask); st != ARES_SUCCESS) {
      channel = nullptr;
      init_error = make_error(st);
      return;
    }
    if (!opts.servers.empty()) {
      std::string csv;
      for (const auto& s : opts.servers) {
        if (!csv.empty()) csv += ',';
        const bool v6 = s.ip.find(':') != std::string::npos;
        csv += (v6 ? "[" + s.ip + "]" : s.ip) + ":" + std::to_string(s.port);
      }
      if (int st = ares_set_servers_ports_csv(channel, csv.c_str()); st != ARES_SUCCESS) {
        ares_destroy(channel);
        channel = nullptr;
        init_error = make_error(st);
      }
    }
  }

  ~impl() { stop(); }

  void stop() {
    if (stopped) return;
    stopped = true;
    timer.cancel();
    // Callbacks run with ARES_EDESTRUCTION (ignored) and every socket is reported closed.
    if (channel) ares_destroy(channel);
    channel = nullptr;
    init_error = make_error(ARES_EDESTRUCTION);
    for (auto& [fd, w] : watches) {
      w->closed = true;
      w->d.release();
    }
    watches.clear();
    // Handlers of waiters still pending are destroyed, not called (as Asio does for pending
    // operations when a context shuts down). Moved out first: destroying one may reenter.
    auto doomed = std::move(inflight);
    inflight.clear();
    doomed.clear();
  }

  // --- the cache ---------------------------------------------------------------------------

  std::optional<resolve_result> lookup(const std::string& key) {
    auto it = cache.find(key);
    if (it == cache.end()) return std::nullopt;
    if (it->second.expires <= steady::now()) {
      cache.erase(it);
      return std::nullopt;
    }
    resolve_result r;
    r.ec = it->second.ec;
    r.addresses = it->second.addresses;
    r.from_cache = true;
    return r;
  }

  void store(const std::string& key, const resolve_result& r, int status,
             std::chrono::seconds ttl) {
    if (status == ARES_SUCCESS)
      ttl = std::clamp(ttl, opts.min_ttl, std::max(opts.min_ttl, opts.max_ttl));
    else if (negative_answer(status))
      ttl = opts.negative_ttl;
    else
      return;  // a failure to get an answer says nothing about the name
    if (ttl <= std::chrono::seconds::zero() || opts.max_cache_entries == 0) return;
    const auto now = steady::now();
    if (cache.size() >= opts.max_cache_entries && !cache.count(key)) {
      std::erase_if(cache, [&](const auto& e) { return e.second.expires <= now; });
      if (cache.size() >= opts.max_cache_entries) cache.erase(cache.begin());
    }
    cache[key] = cache_entry{r.ec, r.addresses, now + ttl};
  }

  // --- queries -----------------------------------------------------------------------------

  void start(std::string key, std::unique_ptr<waiter> w) {
    auto it = inflight.find(key);
    if (it != inflight.end()) {  // the same name is already being looked up: share its answer
      attach(*it->second, std::move(w));
      return;
    }
    auto q = std::make_unique<query>();
    q->owner = this;
    q->host = key;
    query* raw = q.get();
    inflight.emplace(key, std::move(q));
    attach(*raw, std::move(w));
    ++started;
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    // May answer at once (from /etc/hosts, or a malformed name): `raw` may be gone after this.
    ares_getaddrinfo(channel, key.c_str(), nullptr, &hints, &impl::on_answer, raw);
    schedule_timeout();
  }

  static void attach(query& q, std::unique_ptr<waiter> w) {
    waiter* p = w.get();
    q.waiters.push_back(std::move(w));
    p->q = &q;
    p->self = std::prev(q.waiters.end());
  }

  // From a waiter's cancellation slot: it leaves at once. The query runs on for its other
  // waiters (c-ares cannot cancel a single query); see reap_soon() for when nobody is left.
  void cancel(waiter* w) {
    std::unique_ptr<waiter> mine = std::move(*w->self);
    w->q->waiters.erase(w->self);
    resolve_result r;
    r.ec = asio::error::operation_aborted;
    mine->complete(std::move(r), true);
    reap_soon();
  }

  // When nobody waits for any query any more, all of them are cancelled: a query nobody awaits
  // must not keep its io_context busy (a drain, `mtlsd verify` finishing) for c-ares's retry
  // cycle. Posted: c-ares must not be cancelled from inside one of its own callbacks.
  void reap_soon() {
    if (reap_posted || inflight.empty()) return;
    reap_posted = true;
    asio::post(ioc, [this] {
      reap_posted = false;
      if (!channel || inflight.empty()) return;
      for (const auto& [name, q] : inflight)
        if (!q->waiters.empty()) return;
      ares_cancel(channel);  // ARES_ECANCELLED for each: not cached, no one to tell
      schedule_timeout();
    });
  }

  // Completes a waiter through its handler's executor, and ends the wait early when its
  // cancellation slot is signalled (`(resolve || timer)`, a session's kill).
  template <class Handler>
  class waiter_for final : public waiter {
   public:
    waiter_for(Handler h, impl& owner)
        : handler_(std::move(h)),
          slot_(asio::get_associated_cancellation_slot(handler_)),
          fallback_(owner.ioc.get_executor()) {
      if (slot_.is_connected()) slot_.template emplace<canceller>(&owner, this);
    }

    ~waiter_for() override {
      if (slot_.is_connected()) slot_.clear();
    }

    void complete(resolve_result r, bool in_slot) override {
      if (in_slot) slot_ = {};  // leave the running cancellation handler alone
      if (slot_.is_connected()) slot_.clear();
      slot_ = {};
      auto ex = asio::get_associated_executor(handler_, fallback_);
      asio::post(ex, [h = std::move(handler_), r = std::move(r)]() mutable {
        std::move(h)(std::move(r));
      });
    }

   private:
    struct canceller {
      // A constructor, not an aggregate: the slot builds it with parentheses, which clang 14
      // (the fuzz build) does not allow for aggregates.
      canceller(impl* o, waiter* wt) : owner(o), w(wt) {}
      impl* owner;
      waiter* w;
      void operator()(asio::cancellation_type type) {
        if (type == asio::cancellation_type::none || !w) return;
        owner->cancel(std::exchange(w, nullptr));
      }
    };

    Handler handler_;
    asio::cancellation_slot slot_;
    asio::io_context::executor_type fallback_;
  };

  static void on_answer(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
    std::unique_ptr<ares_addrinfo, void (*)(ares_addrinfo*)> owned(res, &ares_freeaddrinfo);
    if (status == ARES_EDESTRUCTION) return;  // stop(): the waiters go with the query
    auto* q = static_cast<query*>(arg);
    impl& self = *q->owner;
    resolve_result r;
    int ttl = std::numeric_limits<int>::max();
    if (status == ARES_SUCCESS && res) {
      for (const ares_addrinfo_node* n = res->nodes; n; n = n->ai_next) {
        asio::ip::address a;
        if (n->ai_family == AF_INET && n->ai_addr) {
          const auto* in = reinterpret_cast<const sockaddr_in*>(n->ai_addr);
          asio::ip::address_v4::bytes_type b;
          std::memcpy(b.data(), &in->sin_addr, b.size());
          a = asio::ip::address_v4(b);
        } else if (n->ai_family == AF_INET6 && n->ai_addr) {
          const auto* in6 = reinterpret_cast<const sockaddr_in6*>(n->ai_addr);
          asio::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &in6->sin6_addr, b.size());
          a = asio::ip::address_v6(b, in6->sin6_scope_id);
        } else {
          continue;
        }
        if (std::find(r.addresses.begin(), r.addresses.end(), a) == r.addresses.end())
          r.addresses.push_back(a);
        ttl = std::min(ttl, n->ai_ttl);
      }
      for (const ares_addrinfo_cname* c = res->cnames; c; c = c->next)
        ttl = std::min(ttl, c->ttl);
    }
    if (status == ARES_SUCCESS && r.addresses.empty()) status = ARES_ENODATA;
    if (status != ARES_SUCCESS) {
      r.ec = make_error(status);
      r.addresses.clear();
      ttl = 0;
    }
    self.store(q->host, r, status, std::chrono::seconds(std::max(ttl, 0)));
    auto node = self.inflight.extract(q->host);  // keeps the query alive until the end
    if (node.empty()) return;
    auto waiters = std::move(node.mapped()->waiters);
    for (auto& w : waiters)
      w->complete(r, false);
    self.reap_soon();  // other queries may have been left by all their waiters
  }

  // --- sockets and timeouts ----------------------------------------------------------------

  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
    static_cast<impl*>(data)->sock_state(fd, readable != 0, writable != 0);
  }

  void sock_state(int fd, bool readable, bool writable) {
    auto it = watches.find(fd);
    if (!readable && !writable) {  // c-ares is about to close it
      if (it != watches.end()) {
        it->second->closed = true;
        it->second->d.release();  // pending waits end with operation_aborted
        watches.erase(it);
      }
      return;
    }
    if (it == watches.end()) {
      auto w = std::make_shared<watch>(ioc);
      error_code ec;
      w->d.assign(fd, ec);
      if (ec) return;  // unwatchable: the query ends by c-ares's own timeout
      it = watches.emplace(fd, std::move(w)).first;
    }
    it->second->want_read = readable;
    it->second->want_write = writable;
    arm(it->second, fd);
  }

  void arm(const std::shared_ptr<watch>& w, int fd) {
    if (w->want_read && !w->reading) {
      w->reading = true;
      w->d.async_wait(asio::posix::descriptor_base::wait_read, [this, w, fd](error_code ec) {
        w->reading = false;
        if (ec || w->closed || !w->want_read) return;
        ares_process_fd(channel, fd, ARES_SOCKET_BAD);
        for (int i = 0; i < 64 && !w->closed && readable_now(fd); ++i)
          ares_process_fd(channel, fd, ARES_SOCKET_BAD);
        if (!w->closed) arm(w, fd);
        schedule_timeout();
      });
    }
    if (w->want_write && !w->writing) {
      w->writing = true;
      w->d.async_wait(asio::posix::descriptor_base::wait_write, [this, w, fd](error_code ec) {
        w->writing = false;
        if (ec || w->closed || !w->want_write) return;
        ares_process_fd(channel, ARES_SOCKET_BAD, fd);
        if (!w->closed) arm(w, fd);
        schedule_timeout();
      });
    }
  }

  // One timer for all of c-ares's retransmissions and timeouts.
  void schedule_timeout() {
    if (!channel) return;
    timeval tv{};
    const timeval* t = ares_timeout(channel, nullptr, &tv);
    if (!t) {
      timer.cancel();
      return;
    }
    timer.expires_after(std::chrono::seconds(t->tv_sec) + std::chrono::microseconds(t->tv_usec));
    timer.async_wait([this](error_code ec) {
      if (ec || !channel) return;
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      schedule_timeout();
    });
  }

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

resolver::resolver(asio::io_context& ioc)
    : asio::execution_context::service(ioc), impl_(std::make_unique<impl>(ioc)) {}

resolver::~resolver() = default;

void resolver::shutdown() {
  impl_->stop();
}

resolver& resolver::of(const asio::any_io_executor& ex) {
  using io_executor = asio::io_context::executor_type;
  if (const auto* e = ex.target<io_executor>()) return asio::use_service<resolver>(e->context());
  if (const auto* e = ex.target<asio::strand<io_executor>>())
    return asio::use_service<resolver>(e->get_inner_executor().context());
  throw std::logic_error("net::resolver runs on an io_context only");
}

asio::awaitable<resolve_result> resolver::resolve(std::string host) {
  std::string name = cache_key(std::move(host));
  if (!impl_->channel) {
    resolve_result r;
    r.ec = impl_->init_error;
    co_return r;
  }
  if (auto hit = impl_->lookup(name)) co_return std::move(*hit);
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(resolve_result)>(
      [this, &name](auto handler) {
        using handler_type = decltype(handler);
        impl_->start(std::move(name),
                     std::make_unique<impl::waiter_for<handler_type>>(std::move(handler), *impl_));
      },
      asio::use_awaitable);
}

std::size_t resolver::cache_size() const {
  return impl_->cache.size();
}

std::size_t resolver::queries_started() const {
  return impl_->started;
}

asio::awaitable<resolve_result> resolve(std::string host) {
  auto ex = co_await asio::this_coro::executor;
  co_return co_await resolver::of(ex).resolve(std::move(host));
}

}  // namespace mtlsd::net
