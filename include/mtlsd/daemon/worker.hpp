#pragma once
// A worker: one thread running one io_context with its own acceptors and sessions. Workers
// share nothing on the connection path (no strands, no locks); the control thread talks to them
// only by posting.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "mtlsd/proxy/listener.hpp"
#include "mtlsd/proxy/open_sessions.hpp"
#include "mtlsd/proxy/session.hpp"

namespace mtlsd::daemon {

class worker {
 public:
  // `counted`: where this worker's sessions are counted for drain (outlives the worker).
  worker(unsigned index, proxy::open_sessions& counted);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  boost::asio::io_context& context() { return ioc_; }
  void start();
  // Stops the event loop and joins the thread. Open sessions are destroyed with the loop.
  void stop();

  // Thread-safe (they post to the worker).
  void serve(std::shared_ptr<proxy::listener_slot> slot, proxy::stream_acceptor acceptor);
  void close_listener(const std::string& name);
  // A reload renamed listener `from`: its acceptors serve `to` from now on, neither closed nor
  // bound again (a new socket in its place would have the kernel reset what the old one had
  // queued). `from`'s slot must be retired first.
  void rename_listener(const std::string& from, std::shared_ptr<proxy::listener_slot> to);
  void close_all_listeners();
  void kill_sessions();
  // Drain start: sessions that can end gracefully begin to (session_control::drain_gracefully).
  void drain_sessions();
  // Closes the sessions whose peers `e` revokes (recheck_established).
  void revoke(tls::revocation::event_ptr e);
  // After a reload published `next`: closes the sessions whose peers it no longer admits.
  void rejudge(std::shared_ptr<const runtime::runtime> next);

 private:
  // Runs the accept loop of `slot` on `acc`; restarts it should it ever fail.
  void accept(std::shared_ptr<proxy::listener_slot> slot,
              std::shared_ptr<proxy::stream_acceptor> acc);

  unsigned index_;
  // Touched only on this worker's thread. Declared before ioc_ so that sessions_ outlives it: the
  // io_context's destructor destroys pending session frames, which unregister themselves.
  // acceptors_ is cleared explicitly in ~worker, before ioc_ goes.
  struct accepting {
    std::shared_ptr<proxy::stream_acceptor> acceptor;
    std::shared_ptr<proxy::listener_slot> slot;
  };
  std::map<std::string, accepting> acceptors_;
  proxy::session_registry sessions_;
  boost::asio::io_context ioc_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

}  // namespace mtlsd::daemon
