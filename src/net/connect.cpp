#include "mtlsd/net/connect.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <memory>
#include <optional>

namespace mtlsd::net {
namespace {

using asio::as_tuple;
using asio::use_awaitable;
using steady = std::chrono::steady_clock;

std::vector<stream_endpoint> attempt_order(const std::vector<asio::ip::address>& addresses,
                                           std::uint16_t port) {
  std::vector<asio::ip::address> first, other;
  for (const auto& a : addresses)
    (a.is_v6() == addresses.front().is_v6() ? first : other).push_back(a);
  std::vector<stream_endpoint> order;
  for (std::size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
    if (i < first.size()) order.emplace_back(asio::ip::tcp::endpoint(first[i], port));
    if (i < other.size()) order.emplace_back(asio::ip::tcp::endpoint(other[i], port));
  }
  return order;
}

// The attempts at one name's addresses. Shared with each attempt's coroutine: the race may end
// (won, lost or cancelled) while attempts it closed are still completing.
struct connect_race {
  struct attempt {
    stream_endpoint to;
    std::unique_ptr<stream_socket> sock;  // once started
    std::optional<error_code> result;     // once ended
    bool seen = false;                    // its end taken into account by the race
  };
  explicit connect_race(const asio::any_io_executor& ex) : wake(ex) {}
  std::vector<attempt> attempts;  // never resized once attempts run: they hold indexes
  asio::steady_timer wake;        // cancelled by each attempt that ends
};

asio::awaitable<void> run_attempt(std::shared_ptr<connect_race> race, std::size_t i) {
  auto& a = race->attempts[i];
  error_code ec;
  a.sock->open(a.to.protocol(), ec);
  if (!ec) make_non_blocking(*a.sock, ec);
  if (!ec) std::tie(ec) = co_await a.sock->async_connect(a.to, as_tuple(use_awaitable));
  if (!ec) set_nodelay(*a.sock, a.to);
  a.result = ec;
  race->wake.cancel();
}

// "connect to A" / "connect to A and B": the attempts still in flight.
std::string in_flight(const connect_race& race) {
  std::string out;
  for (const auto& a : race.attempts)
    if (a.sock && !a.result) out += (out.empty() ? "connect to " : " and ") + format_endpoint(a.to);
  return out;
}

// The descriptors of the race's open attempts past the first, held in `extra`: the caller's own
// descriptor covers one open attempt, so held_ == max(open - 1, 0) at every step.
class extra_descriptors {
 public:
  explicit extra_descriptors(fd_gate* gate) : gate_(gate) {}
  ~extra_descriptors() {
    if (gate_) gate_->give_back(held_);
  }
  extra_descriptors(const extra_descriptors&) = delete;
  extra_descriptors& operator=(const extra_descriptors&) = delete;
  // Room for one more open attempt beside `open` others.
  bool take(std::size_t open) {
    if (open == 0 || !gate_) return true;
    if (!gate_->take(1)) return false;
    ++held_;
    return true;
  }
  // An attempt closed, `open` are left: one descriptor back unless held_ <= max(open - 1, 0).
  void closed(std::size_t open) {
    if (gate_ && static_cast<std::size_t>(held_) + 1 > std::max<std::size_t>(open, 1)) {
      gate_->give_back(1);
      --held_;
    }
  }

 private:
  fd_gate* gate_;
  std::int64_t held_ = 0;
};

}  // namespace

// Long (~75 lines) on purpose: one loop over the race's state — take the attempts that ended,
// start the next when its time has come, else wait for either — reads best in one piece.
asio::awaitable<error_code> connect_any(stream_socket& sock,
                                        const std::vector<asio::ip::address>& addresses,
                                        std::uint16_t port, std::string& detail, fd_gate* extra,
                                        stream_endpoint* connected_to) {
  // One address (a Kubernetes Service name, most upstreams): nothing to race, so no shared
  // state, spawned attempt or timer per connection. The caller's cancellation reaches the
  // connect itself.
  if (addresses.size() == 1) {
    const stream_endpoint to(asio::ip::tcp::endpoint(addresses.front(), port));
    error_code ec;
    if (sock.is_open()) sock.close(ec);
    sock.open(to.protocol(), ec);
    if (!ec) make_non_blocking(sock, ec);
    if (!ec) std::tie(ec) = co_await sock.async_connect(to, as_tuple(use_awaitable));
    if (!ec) {
      set_nodelay(sock, to);
      if (connected_to) *connected_to = to;
    } else {
      detail = "connect to " + format_endpoint(to) +
               (ec == asio::error::operation_aborted ? "" : ": " + ec.message());
    }
    co_return ec;
  }
  auto race = std::make_shared<connect_race>(sock.get_executor());
  for (auto& ep : attempt_order(addresses, port))
    race->attempts.push_back({std::move(ep), nullptr, std::nullopt});
  const std::size_t n = race->attempts.size();
  extra_descriptors descriptors(extra);
  std::size_t started = 0, open = 0;
  auto next_start = steady::now();
  bool no_room = false;  // the last start found no descriptor: waits for an attempt to end
  error_code last = asio::error::host_not_found;
  const std::size_t none = n;  // close_all_but(none): every attempt
  const auto close_all_but = [&](std::size_t keep) {
    for (std::size_t i = 0; i < started; ++i)
      if (auto& a = race->attempts[i]; i != keep && a.sock) {
        error_code ignored;
        a.sock->close(ignored);
      }
  };
  for (;;) {
    for (std::size_t i = 0; i < started; ++i) {
      auto& a = race->attempts[i];
      if (!a.result || a.seen) continue;
      a.seen = true;
      if (!*a.result) {
        close_all_but(i);
        sock = std::move(*a.sock);
        if (connected_to) *connected_to = a.to;
        co_return error_code{};
      }
      error_code ignored;
      a.sock->close(ignored);
      descriptors.closed(--open);
      no_room = false;
      last = *a.result;
      detail += (detail.empty() ? "" : "; ") +
                ("connect to " + format_endpoint(a.to) + ": " + last.message());
      next_start = steady::now();  // a failure starts the next attempt at once
    }
    const bool may_start = started < n && open < max_connect_attempts && !no_room;
    if (may_start && (open == 0 || steady::now() >= next_start)) {
      if (!descriptors.take(open)) {
        no_room = true;
        continue;
      }
      race->attempts[started].sock = std::make_unique<stream_socket>(sock.get_executor());
      // An attempt cannot throw but for an allocation failure, which then counts as its error.
      asio::co_spawn(sock.get_executor(), run_attempt(race, started),
                     [race, i = started](const std::exception_ptr& e) {
                       if (!e) return;
                       if (!race->attempts[i].result)
                         race->attempts[i].result = asio::error::no_memory;
                       race->wake.cancel();
                     });
      ++started;
      ++open;
      next_start = steady::now() + connect_attempt_delay;
      continue;
    }
    if (open == 0) co_return last;  // every address tried, and each failed
    race->wake.expires_at(may_start ? next_start : steady::time_point::max());
    co_await race->wake.async_wait(as_tuple(use_awaitable));
    auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) {
      // The caller's deadline or kill: the steps that did not finish are what it names (none,
      // when the last one ended in the same turn: a connect that won then is given up too).
      detail = in_flight(*race);
      close_all_but(none);
      co_return asio::error::operation_aborted;
    }
  }
}

}  // namespace mtlsd::net
