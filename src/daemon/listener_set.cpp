#include "mtlsd/daemon/listener_set.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <utility>
#include <variant>

#include "mtlsd/config/address.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/net/socket.hpp"

namespace mtlsd::daemon {

namespace asio = boost::asio;

namespace {

// Whether sockets bound at `a` and `b` (listener_slot::bound: "IP:PORT", "[IPV6]:PORT",
// "unix:PATH") take the same connections: config::may_overlap on what was bound.
bool overlaps(const std::string& a, const std::string& b) {
  const auto x = config::parse_address(a), y = config::parse_address(b);
  const auto* p = std::get_if<config::address>(&x);
  const auto* q = std::get_if<config::address>(&y);
  return p && q && config::may_overlap(*p, *q);
}

// Whether a listener configured as `next` keeps the socket bound for `now`: the same address, and
// for a unix socket the same unix_socket_mode. A new mode takes a new socket, bound beside the
// old and renamed over it as a moved listener's is, so that a reload that fails leaves the old
// socket as it was, and one that drops the key leaves what the umask gives, as at a start.
bool same_socket(const config::listener& now, const config::listener& next) {
  return now.listen == next.listen && now.unix_socket_mode == next.unix_socket_mode;
}

// One listening unix socket served by every worker: each gets an acceptor of its own on a dup()
// of it, so every worker's loop waits on the one socket and its one queue (a unix socket has no
// SO_REUSEPORT group: review, worker 0 alone served a unix listener). A connection wakes every
// waiting worker; the first accepts it and the others' accept() fails with EAGAIN, which Asio
// takes as "wait again" (no error, no log line). Every acceptor is an assigned descriptor
// (Asio's `possible_dup`), so closing one takes it out of its worker's epoll set explicitly: a
// close alone would not while another descriptor keeps the socket open, and the epoll set
// would go on reporting it for an acceptor that is gone.
std::vector<proxy::stream_acceptor> share_unix_socket(
    proxy::stream_acceptor bound, const std::vector<std::unique_ptr<worker>>& workers) {
  const auto protocol = bound.local_endpoint().protocol();
  const int fd = bound.release();  // out of the epoll set it was opened in; assigned below
  std::vector<proxy::stream_acceptor> out;
  for (std::size_t i = 0; i < workers.size(); ++i) {
    const int d = i == 0 ? fd : ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) {
      const int err = errno;
      throw boost::system::system_error(err, boost::system::system_category(), "dup");
    }
    proxy::stream_acceptor acc(workers[i]->context());
    boost::system::error_code ec;
    acc.assign(protocol, d, ec);
    if (ec) {
      ::close(d);  // the others close with `out`
      throw boost::system::system_error(ec, "assign");
    }
    out.push_back(std::move(acc));
  }
  return out;
}

}  // namespace

listener_set::listener_set(asio::io_context& control, std::vector<std::unique_ptr<worker>>& workers)
    : control_(control), workers_(workers) {}

void listener_set::open_all(const runtime::runtime& rt) {
  for (const auto& lr : rt.listeners) {
    std::vector<std::string> none;
    auto b = bind(lr, none);
    start_serving(b);
    slots_[lr->cfg.name] = b.slot;
  }
}

std::vector<listener_set::bound_listener> listener_set::bind_changed(
    const runtime::runtime& next, const runtime::runtime& current) {
  std::vector<std::string> released;  // the addresses of listeners this reload stops or moves
  for (const auto& [name, slot] : slots_) {
    const auto* now_cfg = next.cfg.find_listener(name);
    const auto* old = current.find(name).get();
    if (!now_cfg || !old || !same_socket(old->cfg, *now_cfg)) released.push_back(slot->bound);
  }
  std::vector<bound_listener> added;
  for (const auto& lr : next.listeners) {
    auto it = slots_.find(lr->cfg.name);
    const auto* old = current.find(lr->cfg.name).get();
    if (it != slots_.end() && old && same_socket(old->cfg, lr->cfg)) continue;
    if (it == slots_.end())
      if (auto renamed = rename(lr, next, current, added, released)) {
        added.push_back(std::move(*renamed));
        continue;
      }
    added.push_back(bind(lr, released));
  }
  return added;
}

// A listener under a new name where one this reload removes listened, at the same address as
// written: it takes that listener's acceptors (swap_in), rather than new sockets beside them
// whose predecessors' close would have the kernel reset the connections queued there (review: a
// rename under load reset about 1% of the connections made meanwhile).
std::optional<listener_set::bound_listener> listener_set::rename(
    const listener_ptr& lr, const runtime::runtime& next, const runtime::runtime& current,
    const std::vector<bound_listener>& added, std::vector<std::string>& released) {
  for (const auto& [name, slot] : slots_) {
    const auto* old = current.find(name).get();
    if (next.cfg.find_listener(name) || !old || !same_socket(old->cfg, lr->cfg)) continue;
    if (std::any_of(added.begin(), added.end(),
                    [&n = name](const bound_listener& b) { return b.renamed_from == n; }))
      continue;
    bound_listener b;
    b.slot = std::make_shared<proxy::listener_slot>();
    b.slot->name = lr->cfg.name;
    b.slot->current.store(lr);
    b.slot->bound = slot->bound;
    b.slot->admission = slot->admission;  // its limits' counts go on (see bind)
    b.slot->active = slot->active;
    b.renamed_from = name;
    std::erase(released, slot->bound);
    return b;
  }
  return std::nullopt;
}

listener_set::unix_takeover::unix_takeover(unix_takeover&& o) noexcept
    : bound_at(std::exchange(o.bound_at, {})), path(std::exchange(o.path, {})) {}

listener_set::unix_takeover& listener_set::unix_takeover::operator=(unix_takeover&& o) noexcept {
  std::swap(bound_at, o.bound_at);
  std::swap(path, o.path);
  return *this;
}

listener_set::unix_takeover::~unix_takeover() {
  if (!bound_at.empty()) ::unlink(bound_at.c_str());  // the reload gave up: leave no trace
}

listener_set::changes listener_set::swap_in(std::vector<bound_listener> added,
                                            const runtime::runtime& next,
                                            const runtime::runtime& current) {
  changes out;
  // Renamed: every worker's acceptors move to the new name, before the closes below (which then
  // find nothing under the old one).
  for (const auto& b : added) {
    if (b.renamed_from.empty()) continue;
    slots_.at(b.renamed_from)->retired.store(true, std::memory_order_release);
    for (auto& w : workers_)
      w->rename_listener(b.renamed_from, b.slot);
  }
  for (const auto& lr : next.listeners) {
    auto it = slots_.find(lr->cfg.name);
    const auto* old = current.find(lr->cfg.name).get();
    if (it != slots_.end() && old && same_socket(old->cfg, lr->cfg)) {
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
listener_set::bound_listener listener_set::bind(const listener_ptr& lr,
                                                std::vector<std::string>& released) {
  bound_listener b;
  b.slot = std::make_shared<proxy::listener_slot>();
  b.slot->name = lr->cfg.name;
  b.slot->current.store(lr);
  // A listener moved to another address keeps its limits' counts (max_connections, rate, per
  // source, per identity, pending handshakes): its connections so far still hold their places,
  // and give them back to the same counts when they end.
  if (auto it = slots_.find(lr->cfg.name); it != slots_.end()) {
    b.slot->admission = it->second->admission;
    b.slot->active = it->second->active;
  }
  try {
    auto ep = resolve_listen(lr->cfg.listen);  // inside: a resolver error is reported here too
    const std::string spot = proxy::format_endpoint(ep);
    // A listener this reload stops or moves gives its address to one new listener, no more.
    const auto freed = std::find_if(released.begin(), released.end(),
                                    [&](const std::string& r) { return overlaps(r, spot); });
    const bool takes_over = freed != released.end();
    if (takes_over) {
      released.erase(freed);
    } else {
      // Ours first (no probe connection to our own socket), then anybody's.
      const bool ours = std::any_of(slots_.begin(), slots_.end(), [&](const auto& kv) {
        return overlaps(kv.second->bound, spot);
      });
      if (ours || net::address_in_use(ep))
        throw boost::system::system_error(
            boost::system::error_code(EADDRINUSE, boost::system::system_category()));
    }
    if (lr->cfg.listen.is_unix() && takes_over) {
      // A unix path cannot be bound twice, and the listener on it must keep it until the reload
      // goes ahead: bind beside it (a short name: the path may be near sun_path's 108 bytes),
      // and rename over it in start_serving.
      static unsigned takeovers = 0;
      b.takeover.path = lr->cfg.listen.path;
      b.takeover.bound_at =
          (std::filesystem::path(b.takeover.path).parent_path() /
           (".mtlsd-" + std::to_string(::getpid()) + "-" + std::to_string(++takeovers)))
              .string();
      b.acceptors = share_unix_socket(
          proxy::open_acceptor(
              workers_[0]->context(),
              proxy::stream_endpoint(asio::local::stream_protocol::endpoint(b.takeover.bound_at)),
              false, lr->cfg.unix_socket_mode),
          workers_);
    } else if (lr->cfg.listen.is_unix()) {
      b.acceptors = share_unix_socket(
          proxy::open_acceptor(workers_[0]->context(), ep, false, lr->cfg.unix_socket_mode),
          workers_);
    } else {
      for (auto& w : workers_) {
        b.acceptors.push_back(proxy::open_acceptor(w->context(), ep, true));
        // Port 0: the kernel picked a port for the first worker; the others join it.
        ep = b.acceptors.front().local_endpoint();
      }
    }
  } catch (const boost::system::system_error& e) {
    // A reload binds anew for a listener it adds or moves, or whose address is spelt
    // differently; a port below the host's ip_unprivileged_port_start then needs a capability
    // that mtlsd gave up after start (sandbox).
    const bool privileged_port = e.code() == boost::system::errc::permission_denied &&
                                 !lr->cfg.listen.is_unix() && lr->cfg.listen.port > 0 &&
                                 lr->cfg.listen.port < 1024;
    throw std::runtime_error(
        (lr->cfg.where.file.empty() ? std::string() : lr->cfg.where.str() + ": ") + "listener '" +
        lr->cfg.name + "': cannot listen on " + lr->cfg.listen.str() + ": " + e.code().message() +
        (privileged_port ? std::string(" (a port below 1024 needs CAP_NET_BIND_SERVICE, which "
                                       "mtlsd gives up once started when `sandbox` is on: a "
                                       "reload that adds, moves or re-spells a listener on "
                                       "such a port needs a restart)")
                         : std::string()));
  }
  b.slot->bound = b.takeover.path.empty()
                      ? proxy::format_endpoint(b.acceptors.front().local_endpoint())
                      : "unix:" + b.takeover.path;
  return b;
}

void listener_set::start_serving(bound_listener& b) {
  if (!b.takeover.bound_at.empty()) {
    // rename(2) replaces the path at once: from now on clients reach the new socket, and the
    // listener it replaces (closed by swap_in) keeps no path.
    if (::rename(b.takeover.bound_at.c_str(), b.takeover.path.c_str()) != 0)
      log::error(
          "cannot move the new unix socket into place",
          {{"listener", b.slot->name}, {"path", b.takeover.path}, {"error", std::strerror(errno)}});
    else
      b.takeover.bound_at.clear();
  }
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
