#include "mtlsd/proxy/listener.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>

#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/proxy/fd_gate.hpp"
#include "mtlsd/termination.hpp"
#include "mtlsd/util/exception.hpp"
#include "session_state.hpp"

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// A connection refused at accept, before any TLS work: no alert is possible before a
// handshake, so it is closed, logged and counted with its reason.
void refuse_at_accept(stream_socket& sock, const stream_endpoint& remote, const listener_slot& slot,
                      const runtime::listener_runtime& listener, reason why, std::string detail) {
  if (auto* m = listener.metrics) {
    m->rejected->Increment();
    m->failure(why).Increment();
  }
  log::access_record rec;
  char start[32];
  rec.conn_id = detail::new_conn_id();
  rec.start = log::format_rfc3339(start, std::chrono::system_clock::now(), true);
  rec.listener = slot.name;
  rec.client = format_endpoint(remote);
  rec.result = "rejected";
  rec.reason = to_string(why);
  rec.termination =
      to_string(why == reason::rate_limited ? termination::rate_limited : termination::refused);
  rec.detail = std::move(detail);
  log::write_access(rec);
  error_code ignored;
  sock.close(ignored);
}

// Starts a session for an accepted connection, or refuses it: over max_connections, and (on a
// listener without accept_proxy_protocol, where the socket's address is the client's) by the
// admission checks; with accept_proxy_protocol, a peer outside trusted_sources.
// `remote`: the peer's address, from accept itself (no getpeername).
void admit(stream_socket sock, const stream_endpoint& remote,
           const std::shared_ptr<listener_slot>& slot, session_registry& registry,
           const asio::any_io_executor& ex) {
  auto listener = slot->current.load();
  auto* m = listener->metrics;
  const auto& cfg = listener->cfg;
  if (slot->active->fetch_add(1) >= cfg.max_connections) {
    // Refuse at once rather than queue: a client that waits forever is worse than one that
    // retries elsewhere.
    slot->active->fetch_sub(1);
    if (m) m->over_limit->Increment();
    refuse_at_accept(sock, remote, *slot, *listener, reason::over_capacity,
                     "max_connections (" + std::to_string(cfg.max_connections) + ") reached");
    return;
  }
  struct active_guard {  // given back unless a session takes the place over
    listener_slot* s;
    ~active_guard() {
      if (s) s->active->fetch_sub(1);
    }
  } place{slot.get()};
  // Descriptors for what the connection will hold, before it holds them: past the budget
  // accept() would fail with EMFILE, leaving clients waiting in the backlog and the admin
  // server without a descriptor. Its socket and its upstream's; an HTTP/2 client of an HTTP/1.1
  // upstream takes the rest once ALPN has said h2 (http_serve.cpp).
  const std::int64_t fds = fds_at_accept;
  if (!connection_fds().take(fds)) {
    if (m) m->over_limit->Increment();
    return refuse_at_accept(sock, remote, *slot, *listener, reason::over_capacity,
                            "the file descriptor limit leaves room for no more connections (" +
                                std::to_string(connection_fds().budget()) +
                                " descriptors for connections, " + std::to_string(fds) +
                                " each on this listener)");
  }
  struct fd_guard {  // given back unless a session takes them over
    std::int64_t n;
    ~fd_guard() {
      if (n) connection_fds().give_back(n);
    }
  } held{fds};
  const auto source = ip_of(remote.data());
  admission_ticket ticket(slot->admission);
  if (cfg.accept_proxy_protocol.enabled) {
    const auto& trusted = cfg.accept_proxy_protocol.trusted_sources;
    if (!trusted.empty() && (!source || !config::any_contains(trusted, *source)))
      return refuse_at_accept(sock, remote, *slot, *listener, reason::protocol_error,
                              "PROXY header expected from trusted_sources only; " +
                                  (source ? source->str() : std::string("this peer")) +
                                  " is not one of them");
    // The source checks wait for the header (accept_proxy_header); the pending cap cannot.
    if (auto no = ticket.admit_pending(cfg))
      return refuse_at_accept(sock, remote, *slot, *listener, no->why, std::move(no->detail));
  } else if (auto no = ticket.admit_source(cfg, source)) {
    return refuse_at_accept(sock, remote, *slot, *listener, no->why, std::move(no->detail));
  }
  // The session's frame is allocated here, while the guards above still give its place and
  // descriptors back should that fail (bad_alloc, caught by the accept loop): nothing that
  // only the session's end undoes is counted before it exists.
  // The session's watchdog cancels its serving side through this signal; the completion
  // handler owns it, so it outlives the coroutine bound to it.
  auto stop_serving = std::make_unique<asio::cancellation_signal>();
  auto task =
      run_session(std::move(sock), listener, registry, *stop_serving, std::move(ticket), remote);
  place.s = nullptr;
  held.n = 0;
  open_sessions* counted = registry.counted();
  if (counted) counted->opened();
  if (m) m->active->Increment();
  auto give_back = [slot, m, counted] {
    slot->active->fetch_sub(1);
    connection_fds().give_back(fds_at_accept);
    if (counted) counted->closed();
    if (m) m->active->Decrement();
  };
  try {
    const asio::cancellation_slot stop_slot = stop_serving->slot();
    auto on_end = [give_back, m, name = slot->name,
                   stop = std::move(stop_serving)](std::exception_ptr e) {
      give_back();
      // Sessions catch their own errors; anything reaching here is a bug to see.
      if (e) {
        if (m) m->errors->Increment();
        try {  // nothing may escape into the worker's event loop, not even a failed log line
          log::error("session escaped with an exception",
                     {{"listener", name}, {"error", util::message_of(e)}});
        } catch (...) {
        }
      }
    };
    asio::co_spawn(ex, std::move(task), asio::bind_cancellation_slot(stop_slot, std::move(on_end)));
  } catch (...) {
    give_back();  // never started: its end will not come to give the place back
    throw;
  }
}

// Accepting after a failure: out of descriptors, the pending connection stays queued and would
// fail again at once, so wait long enough not to spin; anything else, briefly.
constexpr auto emfile_backoff = std::chrono::milliseconds(100);
constexpr auto error_backoff = std::chrono::milliseconds(5);

void count_accept_error(const listener_slot& slot) {
  if (auto lr = slot.current.load(); lr && lr->metrics) lr->metrics->accept_errors->Increment();
}

// admit(), which nothing is expected to make throw; if it does (a bug, bad_alloc), that
// connection is dropped, the failure logged and counted, and accepting goes on.
void admit_or_count(stream_socket sock, const stream_endpoint& remote,
                    const std::shared_ptr<listener_slot>& slot, session_registry& registry,
                    const asio::any_io_executor& ex) {
  try {
    admit(std::move(sock), remote, slot, registry, ex);
  } catch (const std::exception& e) {
    // An internal error ends its connection and is counted as one, as any other (review: it
    // was only an accept error); it had no session yet, so no access line.
    count_accept_error(*slot);
    if (auto lr = slot->current.load(); lr && lr->metrics) lr->metrics->errors->Increment();
    log::error("accept loop error; going on", {{"listener", slot->name}, {"error", e.what()}});
  }
}

}  // namespace

asio::awaitable<void> accept_loop(std::shared_ptr<stream_acceptor> acceptor,
                                  std::shared_ptr<listener_slot> slot, session_registry& registry) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer backoff(ex);
  auto last_warning = std::chrono::steady_clock::time_point{};
  stream_endpoint remote;  // filled by accept itself
  while (!slot->retired.load(std::memory_order_acquire)) {
    auto [ec, sock] = co_await acceptor->async_accept(remote, as_tuple(use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) co_return;
    if (ec) {
      count_accept_error(*slot);
      const bool out_of_fds = ec == asio::error::no_descriptors || ec.value() == ENFILE;
      auto now = std::chrono::steady_clock::now();
      if (now - last_warning > std::chrono::seconds(1)) {  // at most one line a second
        log::warn("accept failed", {{"listener", slot->name}, {"error", ec.message()}});
        last_warning = now;
      }
      backoff.expires_after(out_of_fds ? emfile_backoff : error_backoff);
      co_await backoff.async_wait(as_tuple(use_awaitable));
      continue;
    }
    admit_or_count(std::move(sock), remote, slot, registry, ex);
  }
}

void admit_queued(stream_acceptor& acceptor, const std::shared_ptr<listener_slot>& slot,
                  session_registry& registry) {
  if (!acceptor.is_open()) return;
  error_code ec;
  acceptor.non_blocking(true, ec);
  if (ec) return;
  const auto ex = acceptor.get_executor();
  for (;;) {
    stream_endpoint remote;
    stream_socket sock = acceptor.accept(remote, ec);
    if (ec) return;  // EAGAIN: the queue is empty; anything else: the close resets the rest
    admit_or_count(std::move(sock), remote, slot, registry, ex);
  }
}

}  // namespace mtlsd::proxy
