#include "mtlsd/net/resolver.hpp"

#include <ares.h>

#include <algorithm>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "resolver_impl.hpp"

namespace mtlsd::net {

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

std::string cache_key(std::string host) {
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return host;
}

}  // namespace

error_code make_error(int status) {
  return {status, dns_category()};
}

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

resolver::impl::impl(asio::io_context& c) : ioc(c), opts(current_resolver_options()), timer(c) {
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

void resolver::impl::stop() {
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

// Completes a waiter through its handler's executor, and ends the wait early when its
// cancellation slot is signalled (`(resolve || timer)`, a session's kill).
template <class Handler>
class resolver::impl::waiter_for final : public waiter {
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
    asio::post(
        ex, [h = std::move(handler_), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
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

std::size_t resolver::queries_started() const {
  return impl_->started;
}

asio::awaitable<resolve_result> resolve(std::string host) {
  auto ex = co_await asio::this_coro::executor;
  co_return co_await resolver::of(ex).resolve(std::move(host));
}

}  // namespace mtlsd::net
