#include "mtlsd/proxy/session_registry.hpp"

#include <algorithm>

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

namespace {

bool holds(const runtime::runtime& rt, const runtime::listener_runtime* lr) {
  return std::any_of(rt.listeners.begin(), rt.listeners.end(),
                     [lr](const auto& l) { return l.get() == lr; });
}

// The listener of `next` that judges a session `mine` judged until now: by name; else, when
// `mine` was a listener of `previous` (the runtime served until this reload), the one listening
// at its address under a name `previous` did not have: a rename, as listener_set's (review: a
// listener that was already there and moved onto the address of one the reload removed judged
// that one's connections). Null: the reload removed the listener; its connections run on.
const runtime::listener_runtime* kept_or_renamed(const runtime::runtime& next,
                                                 const runtime::runtime* previous,
                                                 const runtime::listener_runtime& mine) {
  for (const auto& lr : next.listeners)
    if (lr.get() == &mine || lr->cfg.name == mine.cfg.name) return lr.get();
  for (const auto& lr : next.listeners)
    if (lr->cfg.listen == mine.cfg.listen && (!previous || !previous->find(lr->cfg.name)))
      return lr.get();
  return nullptr;
}

}  // namespace

std::size_t session_registry::rejudge(std::shared_ptr<const runtime::runtime> next) {
  // The daemon passes the runtime served until now before each reload's (reload.cpp), so that
  // `previous` is known at the first reload too: a runtime known already changes nothing.
  if (next == rejudged_with_) return 0;
  const runtime::runtime* previous = rejudged_with_.get();
  std::size_t n = 0;
  // kill() only cancels a timer: sessions unregister later, from their own frames. Each judged
  // session's current_ ends up in `next` (the listener that judged it: the next reload judges
  // it by that one's successor), or null: judged by no reload again. Those of a runtime newer
  // than `next` (accepted once a later reload published it) keep theirs: its re-judging comes.
  for (auto* s : live_) {
    const runtime::listener_runtime* mine = s->current_;
    if (!mine || mine->generation > next->generation) continue;
    // Killed; or its listener was removed by an earlier reload, under its own runtime since (its
    // handshake spanned that reload, and the catch-up found no successor).
    const bool orphan = s->killed() || (previous && !holds(*previous, mine) && !holds(*next, mine));
    const auto* lr = orphan ? nullptr : kept_or_renamed(*next, previous, *mine);
    if (!lr || lr->cfg.mode != mine->cfg.mode) {
      s->current_ = nullptr;  // runs on under its own runtime until it ends
      continue;
    }
    if (s->rejudge(*lr)) ++n;
    s->current_ = s->killed() ? nullptr : lr;
    if (s->current_) {
      for (const auto& l : next->listeners)
        if (l.get() == lr) s->judged_by_ = l;
    }
  }
  rejudged_with_ = std::move(next);
  return n;
}

std::shared_ptr<const runtime::listener_runtime> session_registry::held(
    const runtime::listener_runtime* lr) const {
  if (rejudged_with_)
    for (const auto& l : rejudged_with_->listeners)
      if (l.get() == lr) return l;
  return nullptr;
}

const runtime::listener_runtime* session_registry::catch_up_with(const session_control& s) const {
  if (!rejudged_with_ || !s.current_listener()) return nullptr;
  // A session accepted under a runtime newer than the last re-judged one (published to the
  // listener before its re-judging reached this worker) already runs by a newer policy: judged
  // by the older one, it could be refused by what the reload changed (review).
  if (rejudged_with_->generation < s.current_listener()->generation) return nullptr;
  // By name, else by address: a session whose handshake spanned the reload is judged as one
  // accepted now would be, by the listener now on its address. One that a rejudge kept points
  // into rejudged_with_ already: its own successor.
  return successor(*rejudged_with_, *s.current_listener());
}

}  // namespace mtlsd::proxy
