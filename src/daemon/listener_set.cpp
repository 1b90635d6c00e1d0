#include "mtlsd/daemon/listener_set.hpp"

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <stdexcept>
#include <variant>

#include "mtlsd/log/log.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;

listener_set::listener_set(asio::io_context& control, std::vector<std::unique_ptr<worker>>& workers)
    : control_(control), workers_(workers) {}

void listener_set::open_all(const runtime::runtime& rt) {
  for (const auto& lr : rt.listeners) {
    auto b = bind(lr);
    start_serving(b);
    slots_[lr->cfg.name] = b.slot;
  }
}

std::vector<listener_set::bound_listener> listener_set::bind_changed(
    const runtime::runtime& next, const runtime::runtime& current) {
  std::vector<bound_listener> added;
  for (const auto& lr : next.listeners) {
    auto it = slots_.find(lr->cfg.name);
    const auto* old = current.find(lr->cfg.name).get();
    if (it != slots_.end() && old && old->cfg.listen == lr->cfg.listen) continue;
    added.push_back(bind(lr));
  }
  return added;
}

listener_set::changes listener_set::swap_in(std::vector<bound_listener> added,
                                            const runtime::runtime& next,
                                            const runtime::runtime& current) {
  changes out;
  for (const auto& lr : next.listeners) {
    auto it = slots_.find(lr->cfg.name);
    const auto* old = current.find(lr->cfg.name).get();
    if (it != slots_.end() && old && old->cfg.listen == lr->cfg.listen) {
      it->second->current.store(lr);  // new connections use it from now on
      out.kept.push_back(lr->cfg.name);
    }
  }
  for (auto& [name, slot] : slots_) {
    const auto* now_cfg = next.cfg.find_listener(name);
    bool moved = std::any_of(added.begin(), added.end(),
                             // (clang 14, the fuzz build, cannot capture a binding)
                             [&n = name](const bound_listener& b) { return b.slot->name == n; });
    if (!now_cfg || moved) {
      for (auto& w : workers_)
        w->close_listener(name);
      out.stopped.push_back(name);
    }
  }
  for (const auto& name : out.stopped)
    slots_.erase(name);
  for (auto& b : added) {
    // close_listener() was posted before serve(), so on each worker the old acceptor of a
    // moved listener is closed before the new one is registered under the same name.
    start_serving(b);
    out.started.push_back(b.slot->name);
    slots_[b.slot->name] = b.slot;
  }
  return out;
}

void listener_set::publish(const listener_ptr& lr) {
  if (auto it = slots_.find(lr->cfg.name); it != slots_.end())
    it->second->current.store(lr);  // new connections use it from now on
}

proxy::stream_endpoint listener_set::resolve_listen(const config::address& a) {
  auto literal = proxy::literal_endpoint(a);
  if (auto* ep = std::get_if<proxy::stream_endpoint>(&literal)) return *ep;
  // A hostname (e.g. localhost): resolved once at bind time, on the control thread.
  asio::ip::tcp::resolver resolver(control_);
  auto results = resolver.resolve(a.host, std::to_string(a.port));
  return proxy::stream_endpoint(results.begin()->endpoint());
}

// Binds a listener's sockets on every worker without serving them yet, so that a reload can
// bind everything it needs first and give up cleanly if any bind fails.
listener_set::bound_listener listener_set::bind(const listener_ptr& lr) {
  bound_listener b;
  b.slot = std::make_shared<proxy::listener_slot>();
  b.slot->name = lr->cfg.name;
  b.slot->current.store(lr);
  try {
    auto ep = resolve_listen(lr->cfg.listen);  // inside: a resolver error is reported here too
    if (lr->cfg.listen.is_unix()) {
      b.acceptors.push_back(proxy::open_acceptor(workers_[0]->context(), ep, false));
    } else {
      for (auto& w : workers_) {
        b.acceptors.push_back(proxy::open_acceptor(w->context(), ep, true));
        // Port 0: the kernel picked a port for the first worker; the others join it.
        ep = b.acceptors.front().local_endpoint();
      }
    }
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("listener '" + lr->cfg.name + "': cannot listen on " +
                             lr->cfg.listen.str() + ": " + e.code().message());
  }
  b.slot->bound = proxy::format_endpoint(b.acceptors.front().local_endpoint());
  return b;
}

void listener_set::start_serving(bound_listener& b) {
  for (std::size_t i = 0; i < b.acceptors.size(); ++i)
    workers_[i]->serve(b.slot, std::move(b.acceptors[i]));
  const auto lr = b.slot->current.load();
  log::info("listening",
            {{"listener", b.slot->name},
             {"address", b.slot->bound},
             {"mode", lr->cfg.mode == config::listener_mode::server ? "server" : "client"},
             {"upstream", lr->cfg.upstream.str()}});
}

}  // namespace mtlsd::daemon
