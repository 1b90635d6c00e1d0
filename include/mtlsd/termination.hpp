#pragma once
// Why a connection ended, as the access log's `termination` field says it (one per line,
// interface.md "Access-log fields"). The first five name who or which deadline ended a relayed
// connection; `refused` covers every connection that never reached the relay; the rest are
// mtlsd's own decisions. max_age, reload_rejudged and rate_limited are defined for the features
// that close connections for those reasons.
#include <cstdint>
#include <string_view>

namespace mtlsd {

enum class termination : std::uint8_t {
  client_close,        // the connecting side closed (EOF or reset) first
  upstream_close,      // the upstream side closed (EOF or reset) first
  idle_timeout,        // timeouts.idle passed with no byte either way
  half_close_timeout,  // timeouts.half_close passed after one side finished
  max_age,             // the connection reached its maximum age
  drain,               // shutdown: the drain timeout cut it
  revoked,             // the peer's certificate was revoked while connected
  reload_rejudged,     // a reload's new policy no longer admits the peer
  rate_limited,        // refused by a rate limit
  error,               // an internal error or a protocol error mtlsd ended the connection for
  refused,             // never admitted: the access line's `reason` says why
};

constexpr std::string_view to_string(termination t) {
  switch (t) {
    case termination::client_close:
      return "client_close";
    case termination::upstream_close:
      return "upstream_close";
    case termination::idle_timeout:
      return "idle_timeout";
    case termination::half_close_timeout:
      return "half_close_timeout";
    case termination::max_age:
      return "max_age";
    case termination::drain:
      return "drain";
    case termination::revoked:
      return "revoked";
    case termination::reload_rejudged:
      return "reload_rejudged";
    case termination::rate_limited:
      return "rate_limited";
    case termination::error:
      return "error";
    case termination::refused:
      return "refused";
  }
  return "error";
}

}  // namespace mtlsd
