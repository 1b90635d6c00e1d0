#include "stapler.hpp"

#include <algorithm>

#include "mtlsd/log/log.hpp"
#include "ocsp_client.hpp"

namespace mtlsd::tls::revocation {

namespace asio = boost::asio;

namespace {

// The listener's runtime is gone, or superseded by a reload (its connections may hold it for
// long; their handshakes are over).
bool abandoned(const std::shared_ptr<staple_slot>& slot) {
  return !slot || slot->retired();
}

struct progress {
  int failures = 0;  // in a row, for the backoff
  bool stapled_once = false;
};

// One refresh of `slot`: fetches a response and staples it when it says good or revoked (a
// revoked certificate is stapled too: clients must learn it). Returns when to refresh next.
// (Non-const references only: none can bind to a temporary that dies while this is suspended.)
asio::awaitable<std::time_t> refresh(service_state& state, staple_slot& slot, staple_source& src,
                                     progress& done) {
  // No nonce: responders that pre-generate responses ignore it, and a staple is shared anyway.
  ocsp_exchange x = co_await ask_responder(
      src.url, make_ocsp_query(src.cert.get(), src.issuer.get(), false), up_ref(src.cert.get()),
      up_ref(src.issuer.get()), src.timeout, state.lim.ocsp_response_bytes);
  ocsp_answer& a = x.answer;
  const std::time_t now = std::time(nullptr);
  // Without nextUpdate a response is good for ocsp_max_age_without_next_update after its
  // thisUpdate, as mtlsd's own client judges it: served no longer, even if the responder is down.
  const std::time_t lapses =
      a.next_update ? a.next_update : a.this_update + ocsp_max_age_without_next_update;
  if (a.result == status::good && lapses <= now) {
    // Usable for a peer's check, which allows revocation_skew_seconds past nextUpdate, but a staple
    // that lapsed is served to nobody: a responder that still hands it out has failed, and is
    // asked again with backoff, not after ocsp_default_lifetime.
    a.result = status::unavailable;
    a.detail = "response is stale (it lapsed at " + log::utc(lapses) + ")";
  }
  const bool usable = a.result == status::good || a.result == status::revoked;
  // Said when the listener first staples, and again when it staples after failures (each was
  // warned about): the operator sees the recovery, not only the trouble.
  state.report(staple_fetched{src.listener, src.url.text, a,
                              usable && (!done.stapled_once || done.failures > 0)});
  if (!usable) {
    ++done.failures;
    // Never leave an expired response in the slot (the handshake skips it anyway).
    auto current = slot.get();
    if (current && current->next_update && current->next_update <= now) slot.set(nullptr);
    co_return now + backoff(done.failures);
  }
  auto r = std::make_shared<staple_slot::response>();
  r->der = std::move(x.response);
  r->next_update = lapses;
  r->this_update = a.this_update;
  slot.set(std::move(r));
  done.failures = 0;
  done.stapled_once = true;
  // Refresh halfway through the time the response may be served: a responder outage shorter
  // than half of it never leaves clients without a staple. One already past that (a revocation
  // taken whatever its times, a response with little left) is asked for again a second before
  // it expires (at most ocsp_default_lifetime on), not every second; one expiring within that
  // second, just after its expiry, when the same answer again is a failure (above).
  const std::time_t expiry = slot.get()->next_update;
  std::time_t next = a.this_update + (expiry - a.this_update) / 2;
  if (next <= now)
    next = expiry > now + 1 ? std::min<std::time_t>(now + ocsp_default_lifetime, expiry - 1)
           : expiry >= now  ? expiry + 1
                            : now + ocsp_default_lifetime;
  co_return std::clamp<std::time_t>(next, now + 1, now + crl_idle_lifetime);
}

}  // namespace

asio::awaitable<void> keep_stapled(std::shared_ptr<service_state> state,
                                   std::weak_ptr<staple_slot> weak, staple_source src) {
  progress done;
  std::time_t next = 0;  // when to refresh
  if (auto slot = weak.lock(); !abandoned(slot)) {
    // A reload that kept our certificate handed the slot the response it stapled before
    // (daemon's inherit_staples): that does until halfway through its validity, as for the
    // loop that fetched it (review: each reload, a SIGHUP that changed nothing too, asked the
    // responder at once and logged "stapling OCSP response" again). Past halfway, or without
    // one, the first fetch is now.
    if (const auto inherited = slot->get()) {
      next = inherited->this_update + (inherited->next_update - inherited->this_update) / 2;
      done.stapled_once = true;
      slot->first_fetch_done();
    }
  }
  while (!state->stopping) {
    if (std::time(nullptr) >= next) {
      auto slot = weak.lock();  // not held while sleeping: the slot may go meanwhile
      if (abandoned(slot)) co_return;
      next = co_await refresh(*state, *slot, src, done);
      slot->first_fetch_done();
    }
    while (!state->stopping && std::time(nullptr) < next) {
      if (abandoned(weak.lock())) co_return;
      co_await state->sleep_for(std::chrono::seconds(next - std::time(nullptr)));
    }
  }
}

}  // namespace mtlsd::tls::revocation
