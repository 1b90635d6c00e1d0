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

std::size_t session_registry::rejudge(const runtime::runtime& next) {
  std::size_t n = 0;
  // kill() only cancels a timer: sessions unregister later, from their own frames.
  for (auto* s : live_) {
    if (!s->current_listener()) continue;
    if (auto lr = next.find(s->current_listener()->cfg.name); lr && s->rejudge(*lr)) ++n;
  }
  return n;
}

}  // namespace mtlsd::proxy
