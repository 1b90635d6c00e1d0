#include "mtlsd/proxy/session_registry.hpp"

namespace mtlsd::proxy {

void session_registry::kill_all() {
  // kill() only cancels a timer; sessions unregister themselves later, from their own frames.
  for (auto* s : live_)
    s->kill();
}

void session_registry::drain_all() {
  // A handler may end its connection's frames later, never unregister at once: live_ is stable.
  for (auto* s : live_)
    s->drain_gracefully();
}

std::size_t session_registry::revoke(const tls::revocation::revocation_event& e) {
  std::size_t n = 0;
  for (auto* s : live_)
    if (s->revoke_if(e)) ++n;
  return n;
}

const runtime::listener_runtime* session_registry::successor(
    const runtime::runtime& next, const runtime::listener_runtime& mine) {
  for (const auto& lr : next.listeners)
    if (lr.get() == &mine || lr->cfg.name == mine.cfg.name) return lr.get();
  for (const auto& lr : next.listeners)
    if (lr->cfg.listen == mine.cfg.listen) return lr.get();
  return nullptr;
}

std::size_t session_registry::rejudge(std::shared_ptr<const runtime::runtime> next) {
  std::size_t n = 0;
  // kill() only cancels a timer: sessions unregister later, from their own frames.
  for (auto* s : live_) {
    if (!s->current_listener()) continue;
    if (auto lr = successor(*next, *s->current_listener()); lr && s->rejudge(*lr)) ++n;
  }
  rejudged_with_ = std::move(next);
  return n;
}

const runtime::listener_runtime* session_registry::catch_up_with(const session_control& s) const {
  if (!rejudged_with_ || !s.current_listener()) return nullptr;
  // A session accepted under a runtime newer than the last re-judged one (published to the
  // listener before its re-judging reached this worker) already runs by a newer policy: judged
  // by the older one, it could be refused by what the reload changed (review).
  if (rejudged_with_->generation < s.current_listener()->generation) return nullptr;
  return successor(*rejudged_with_, *s.current_listener());
}

}  // namespace mtlsd::proxy
