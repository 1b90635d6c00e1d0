#include "mtlsd/daemon/worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

#include "mtlsd/daemon/loop_thread.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/net/reactor_reserve.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;

namespace {
constexpr auto restart_pause = std::chrono::milliseconds(100);
// Sockets whose reactor records a worker makes before it serves (net/reactor_reserve.hpp): a
// burst up to this many open sockets per worker is given back when it ends.
constexpr std::size_t reserved_socket_records = 4096;
}  // namespace

worker::worker(unsigned index, proxy::open_sessions& counted)
    : index_(index), sessions_(&counted), work_(asio::make_work_guard(ioc_)) {
  // The first handler the worker's thread runs, before any accept: the records then come from
  // that thread's malloc arena, where the connections' memory will follow them.
  asio::post(ioc_, [this] { net::reserve_reactor_records(ioc_, reserved_socket_records); });
}

worker::~worker() {
  stop();
  // Our references to acceptors go first: an I/O object must not outlive its io_context.
  // Pending accept loops and sessions still hold theirs; the io_context destroys those frames
  // while its services are alive, and sessions_ (declared before ioc_) outlives that.
  acceptors_.clear();
}

void worker::start() {
  thread_ = start_loop_thread(ioc_, [index = index_](const std::string& error) {
    log::error("worker event loop error", {{"worker", index}, {"error", error}});
  });
}

void worker::stop() {
  if (!thread_.joinable()) return;
  work_.reset();
  ioc_.stop();
  thread_.join();
}

void worker::serve(std::shared_ptr<proxy::listener_slot> slot, proxy::stream_acceptor acceptor) {
  auto acc = std::make_shared<proxy::stream_acceptor>(std::move(acceptor));
  asio::post(ioc_, [this, slot = std::move(slot), acc]() mutable {
    acceptors_[slot->name] = {acc, slot};
    accept(std::move(slot), acc);
  });
}

void worker::accept(std::shared_ptr<proxy::listener_slot> slot,
                    std::shared_ptr<proxy::stream_acceptor> acc) {
  asio::co_spawn(ioc_, proxy::accept_loop(acc, slot, sessions_),
                 [this, slot, acc](std::exception_ptr e) {
                   auto it = acceptors_.find(slot->name);
                   const bool current = it != acceptors_.end() && it->second.acceptor == acc;
                   if (!e) {
                     // Closed: forget the acceptor unless a new one for the same name replaced
                     // it. Retired (a rename): rename_listener moves it to the new name.
                     if (current && !slot->retired) acceptors_.erase(it);
                     return;
                   }
                   // accept_loop handles its own errors; this is a bug. The loop must not die
                   // quietly: log, count, and accept again after a pause (no spin if it recurs).
                   const std::string what = util::message_of(e);
                   if (auto lr = slot->current.load(); lr && lr->metrics)
                     lr->metrics->accept_errors->Increment();
                   log::error("accept loop failed; restarting it",
                              {{"worker", index_}, {"listener", slot->name}, {"error", what}});
                   if (!current || !acc->is_open() || slot->retired) return;
                   auto pause = std::make_shared<asio::steady_timer>(ioc_, restart_pause);
                   pause->async_wait([this, pause, slot, acc](boost::system::error_code) {
                     auto now = acceptors_.find(slot->name);
                     if (now != acceptors_.end() && now->second.acceptor == acc && acc->is_open())
                       accept(slot, acc);
                   });
                 });
}

void worker::close_listener(const std::string& name) {
  asio::post(ioc_, [this, name] {
    auto it = acceptors_.find(name);
    if (it == acceptors_.end()) return;
    // Connections the kernel queued on it would be reset by the close: they are taken first.
    proxy::admit_queued(*it->second.acceptor, it->second.slot, sessions_);
    boost::system::error_code ignored;
    it->second.acceptor->close(ignored);
    acceptors_.erase(it);
  });
}

void worker::rename_listener(const std::string& from, std::shared_ptr<proxy::listener_slot> to) {
  asio::post(ioc_, [this, from, to = std::move(to)]() mutable {
    auto it = acceptors_.find(from);
    if (it == acceptors_.end()) return;
    auto acc = std::move(it->second.acceptor);
    acceptors_.erase(it);
    acceptors_[to->name] = {acc, to};
    // The old name's loop, waiting in accept, ends (operation_aborted); what the kernel queued
    // stays queued for the loop that takes over.
    boost::system::error_code ignored;
    acc->cancel(ignored);
    accept(std::move(to), std::move(acc));
  });
}

void worker::close_all_listeners() {
  asio::post(ioc_, [this] {
    for (auto& [name, acc] : acceptors_) {
      boost::system::error_code ignored;
      acc.acceptor->close(ignored);
    }
    acceptors_.clear();
  });
}

void worker::kill_sessions() {
  asio::post(ioc_, [this] { sessions_.kill_all(); });
}

void worker::drain_sessions() {
  asio::post(ioc_, [this] { sessions_.drain_all(); });
}

void worker::revoke(tls::revocation::event_ptr e) {
  asio::post(ioc_, [this, e = std::move(e)] {
    if (std::size_t n = sessions_.revoke(*e))
      log::info("closing connections of a revoked peer",
                {{"worker", index_}, {"connections", n}, {"source", e->source}});
  });
}

void worker::rejudge(std::shared_ptr<const runtime::runtime> next) {
  asio::post(ioc_, [this, next = std::move(next)] {
    if (std::size_t n = sessions_.rejudge(next))
      log::info("closing connections the reloaded configuration no longer admits",
                {{"worker", index_}, {"connections", n}});
  });
}

}  // namespace mtlsd::daemon
