#pragma once
// The listeners being served, by name: for each, the slot every worker's acceptor reads the
// listener's current runtime from, and the address it is bound to. Startup opens them all;
// a reload binds what is new or moved first (all or nothing) and only then swaps: kept
// listeners get the new runtime through their slot, moved and removed ones are closed on every
// worker. Runs on the control thread; workers are only posted to.
#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mtlsd/daemon/worker.hpp"
#include "mtlsd/proxy/listener.hpp"
#include "mtlsd/runtime/runtime.hpp"

namespace mtlsd::daemon {

class listener_set {
 public:
  using listener_ptr = std::shared_ptr<const runtime::listener_runtime>;

  // `control` resolves host names in listen addresses; `workers` are the ones that serve.
  // Both outlive the set.
  listener_set(boost::asio::io_context& control, std::vector<std::unique_ptr<worker>>& workers);

  // Startup: binds and serves every listener of `rt`. Throws std::runtime_error naming the
  // listener and the address when one cannot be bound.
  void open_all(const runtime::runtime& rt);

  // A unix socket bound beside the path a running listener serves, to be renamed over it once
  // the reload goes ahead (bind_changed): until then that listener keeps its path. Unlinked
  // again when the reload gives up.
  struct unix_takeover {
    std::string bound_at, path;
    unix_takeover() = default;
    unix_takeover(unix_takeover&& o) noexcept;
    unix_takeover& operator=(unix_takeover&& o) noexcept;
    ~unix_takeover();
  };
  // A listener bound on every worker but not served yet (see bind_changed).
  struct bound_listener {
    std::shared_ptr<proxy::listener_slot> slot;
    // One per worker: TCP, a socket each (SO_REUSEPORT); unix, a dup() each of one socket.
    std::vector<proxy::stream_acceptor> acceptors;
    unix_takeover takeover;
    // A rename: no acceptors of its own, it takes those of the listener of this name.
    std::string renamed_from;
  };
  // Reload, first step: binds the listeners of `next` that are new or listen elsewhere than in
  // `current`. Throws (and the bound sockets close again, nothing else changed) when one
  // cannot be bound, or when its address is in use other than by a listener this reload stops
  // or moves (another listener's, another process's).
  std::vector<bound_listener> bind_changed(const runtime::runtime& next,
                                           const runtime::runtime& current);

  struct changes {
    std::vector<std::string> kept, started, stopped;  // by name, for the "reloaded" line
  };
  // Reload, second step: kept listeners serve new connections with their runtime in `next`;
  // those `next` no longer has, or that moved, are closed on every worker; `added` (from
  // bind_changed) start serving.
  changes swap_in(std::vector<bound_listener> added, const runtime::runtime& next,
                  const runtime::runtime& current);

  // New connections of `lr`'s listener (if it is served) use `lr` from now on.
  void publish(const listener_ptr& lr);
  bool is_bound(const std::string& name) const { return slots_.count(name) != 0; }

 private:
  // `released`: the addresses (listener_slot::bound) of running listeners the reload stops or
  // moves; a new listener overlapping one takes it over (and removes it from the list).
  bound_listener bind(const listener_ptr& lr, std::vector<std::string>& released);
  // A listener `next` adds where one it removes listened (same address as written): that one's
  // acceptors, under the new name. None when there is no such listener (or `added` took it).
  std::optional<bound_listener> rename(const listener_ptr& lr, const runtime::runtime& next,
                                       const runtime::runtime& current,
                                       const std::vector<bound_listener>& added,
                                       std::vector<std::string>& released);
  void start_serving(bound_listener& b);
  proxy::stream_endpoint resolve_listen(const config::address& a);

  boost::asio::io_context& control_;
  std::vector<std::unique_ptr<worker>>& workers_;
  std::map<std::string, std::shared_ptr<proxy::listener_slot>> slots_;
};

}  // namespace mtlsd::daemon
