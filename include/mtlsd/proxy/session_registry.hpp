#pragma once
// Reaching live sessions from outside their coroutines: the handle each session registers
// (session_control) and each worker's set of them (session_registry), through which a drain,
// a revocation or a reload closes them.
#include <openssl/types.h>

#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "mtlsd/proxy/open_sessions.hpp"
#include "mtlsd/reason.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/termination.hpp"
#include "mtlsd/tls/revocation/event.hpp"

namespace mtlsd::proxy {

namespace asio = boost::asio;

class session_registry;

// The handle a worker keeps on each live session, to close it from outside.
class session_control {
 public:
  void kill();                                // drain timeout (termination=drain)
  void kill(reason why, std::string detail);  // e.g. the peer was revoked while connected
  // Ends the session for `how` (max_age, reload_rejudged...); `why`, when set, is the access
  // line's reason.
  void kill(termination how, std::optional<reason> why, std::string detail);
  bool killed() const { return killed_; }
  const std::optional<reason>& kill_reason() const { return kill_reason_; }
  termination kill_termination() const { return kill_termination_; }
  const std::string& kill_detail() const { return kill_detail_; }
  void attach(asio::steady_timer* watchdog) { watchdog_ = watchdog; }

  // Shutdown began (or, for this one session, timeouts.max_connection_age passed in HTTP mode):
  // a session that can end at a boundary of its own (HTTP/2: GOAWAY, then the
  // last stream's end; HTTP/1.1: after the response in progress) is asked to, through the
  // handler its serving side set. A byte relay has no such boundary and waits for kill().
  void drain_gracefully();
  bool draining() const { return draining_; }
  // Set by the serving side while it can act on drain_gracefully (empty: no longer); called at
  // once when the drain began before it was set. The handler runs on the session's executor.
  void on_drain(std::function<void()> handler);

  // recheck_established: the peer's certificates (leaf first), so that a revocation learnt
  // later can find this session. `listener` must outlive the session. `checking`: registered
  // before the session's own revocation check (OCSP, distribution points) ends, which then
  // calls revocation_checked (review: registered after it, a revocation learnt while it ran, a
  // CRL refreshed say, was lost for the session, admitted on what the check had read before).
  void watch_revocation(const std::string* listener,
                        std::vector<tls::revocation::peer_cert_id> certs, bool checking = false);
  // Kills the session when `e` revokes one of its peer's certificates. While its own check
  // runs, the revocation is kept for revocation_checked instead (false: nothing closed yet):
  // it may be the check's own answer, which its verdict names as a full refusal does.
  bool revoke_if(const tls::revocation::revocation_event& e);
  // The session's own revocation check ended, admitting the peer (`admitted`) or refusing it
  // (the watch ends). Admitted: why the peer stands revoked after all (a revocation learnt
  // while the check ran, for the caller to refuse it with), or nothing: the watch goes on.
  std::optional<std::string> revocation_checked(bool admitted);

  // After the handshake: what re-judging the peer needs. `ssl` (whose peer certificates stay
  // readable while the connection lives), `source` (the accepted connection's address, in either
  // mode: allowed_sources judges it; null on a unix socket), `sni` (the name judged: session::sni)
  // and `current` (the runtime the session runs with) belong to the session and outlive its
  // registration. A reload that came between the accept and now (the handshake ran under the old
  // runtime) is caught up with at once: the session is judged by the runtime its registry last
  // re-judged with, and that runtime's refusal returned (not killed: the caller refuses as after
  // any handshake, with close_notify after an http: listener's HTTP answer).
  std::optional<std::pair<reason, std::string>> judged(SSL* ssl, const config::ip_address* source,
                                                       const std::string* sni,
                                                       const runtime::listener_runtime* current);
  // After a reload: kills the session when refusal_by(next) says so. True when killed.
  bool rejudge(const runtime::listener_runtime& next);
  // Why `next` (the new runtime of its listener) refuses the peer while the session's own
  // runtime still admits it — the reload changed the verdict (a CA removed, a rule tightened, a
  // source range dropped, a CRL added) — the detail starting "reload_rejudged: "; nothing
  // otherwise. The verdict comes from verify_offline, the code a handshake runs.
  std::optional<std::pair<reason, std::string>> refusal_by(
      const runtime::listener_runtime& next) const;
  const runtime::listener_runtime* current_listener() const { return current_; }
  // The listener runtime of a reload whose re-judging (rejudge, or judged's catch-up) last
  // admitted and kept the session; null: none did, its own judges it. Kept when a later reload
  // removes its listener (the session runs on under the rules that judged it last). HTTP mode's
  // per-request Host check reads its rules (http_serve.cpp).
  const std::shared_ptr<const runtime::listener_runtime>& judged_by() const { return judged_by_; }
  // The runtime its registry last re-judged sessions with (null: no registry, or no reload yet).
  const std::shared_ptr<const runtime::runtime>* rejudged_with() const;

 private:
  friend class session_registry;
  session_registry* registry_ = nullptr;  // set by session_registry::add
  bool killed_ = false;
  bool draining_ = false;
  bool checking_revocation_ = false;  // watch_revocation(..., checking) until revocation_checked
  std::function<void()> on_drain_;
  std::optional<reason> kill_reason_;
  termination kill_termination_ = termination::drain;
  std::string kill_detail_;
  asio::steady_timer* watchdog_ = nullptr;
  const std::string* listener_ = nullptr;
  std::vector<tls::revocation::peer_cert_id> peer_certs_;
  std::string revoked_while_checking_;  // the first such revocation's detail
  SSL* ssl_ = nullptr;
  const config::ip_address* source_ = nullptr;
  const std::string* sni_ = nullptr;
  const runtime::listener_runtime* current_ = nullptr;
  std::shared_ptr<const runtime::listener_runtime> judged_by_;
};

// Live sessions of one worker. Single-threaded: only touched from that worker's io_context.
class session_registry {
 public:
  // `counted` (may be null, e.g. in tests): where this worker's sessions are counted for drain;
  // it outlives the registry.
  explicit session_registry(open_sessions* counted = nullptr) : counted_(counted) {}
  open_sessions* counted() const { return counted_; }
  void add(session_control* s) {
    live_.insert(s);
    s->registry_ = this;
  }
  void remove(session_control* s) { live_.erase(s); }
  void kill_all();
  // Asks every session to end gracefully (session_control::drain_gracefully).
  void drain_all();
  // Closes the sessions whose peers `e` revokes; returns how many.
  std::size_t revoke(const tls::revocation::revocation_event& e);
  // Closes the sessions whose peers the reloaded runtime `next` no longer admits (see
  // session_control::rejudge); returns how many. A session is judged by the listener of its
  // name; else, when the runtime rejudged before (the daemon passes the one served until now
  // first) did not name the listener now on its address, by that one (a rename); else it runs
  // on under its own runtime, as nginx's old workers finish theirs (also when another listener
  // moved onto the address of its removed one). A session kept points at the listener that
  // judged it (session_control::current_). `next` is kept for sessions still in their
  // handshake (catch_up) and for the Host checks (session_control::judged_by).
  std::size_t rejudge(std::shared_ptr<const runtime::runtime> next);
  // `s` finished its handshake: the listener runtime to judge it by again when the last
  // rejudge's runtime is newer than the one it ran under (review: a connection accepted before
  // a reload and judged after it was admitted by the old policy for good); else null.
  const runtime::listener_runtime* catch_up_with(const session_control& s) const;
  std::size_t size() const { return live_.size(); }
  const std::shared_ptr<const runtime::runtime>& rejudged_with() const { return rejudged_with_; }
  // `lr`, a listener of the runtime last rejudged with, as that runtime holds it (null if not).
  std::shared_ptr<const runtime::listener_runtime> held(const runtime::listener_runtime* lr) const;

 private:
  // The listener of `next` that serves `s`'s connection now: by name, else by address. A plain
  // pointer (`next` holds it): catch_up runs per handshake once a reload happened, and a
  // shared_ptr copy would touch a reference count all workers share.
  static const runtime::listener_runtime* successor(const runtime::runtime& next,
                                                    const runtime::listener_runtime& mine);

  std::unordered_set<session_control*> live_;
  std::shared_ptr<const runtime::runtime> rejudged_with_;
  open_sessions* counted_;
};

inline const std::shared_ptr<const runtime::runtime>* session_control::rejudged_with() const {
  return registry_ && registry_->rejudged_with() ? &registry_->rejudged_with() : nullptr;
}

}  // namespace mtlsd::proxy
