#pragma once
// Shared by http_head_fuzz and h2_request_fuzz: the X-Forwarded-* fields of a head as an upstream
// application reads them (every spelling same_field_name reads as theirs: any case, '_' as '-';
// values without the whitespace around them), and the checks both make of the head mtlsd sends
// up against what the client sent and the policy (XFCC, X-Forwarded-For, X-Forwarded-Proto).
#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::fuzz {

// A value as Beast reads it: without the whitespace around it.
inline std::string trimmed(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
    v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
    v.remove_suffix(1);
  return std::string(v);
}

// The values of the fields an application reads as `lower` (X-Forwarded-*), in order: named as
// same_field_name reads a name, `_` as `-` too (CGI, WSGI, PHP and Rack make one variable of them).
inline std::vector<std::string> spelled(const proxy::header_list& f, std::string_view lower) {
  std::vector<std::string> out;
  for (const auto& [name, value] : f)
    if (proxy::same_field_name(name, lower)) out.push_back(value);
  return out;
}

// The fields of a whole head as written, in order (Beast's container puts a field after the
// last one of the same name, so X_Forwarded_For, x-forwarded-for, X_Forwarded_For would not
// come back in the order an application reads them): names as written, values without the
// whitespace around them, as a parser reads them.
inline proxy::header_list wire_fields(std::string_view head) {
  proxy::header_list out;
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;) {
    const std::size_t start = at + 2, eol = head.find("\r\n", start);
    if (eol == std::string_view::npos || eol == start) break;
    const std::string_view line = head.substr(start, eol - start);
    at = eol;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    out.emplace_back(std::string(line.substr(0, colon)), trimmed(line.substr(colon + 1)));
  }
  return out;
}

// X-Forwarded-For as an upstream must read it: the members of the client's values (split on ',',
// trimmed, empty ones skipped) in order, then the hop mtlsd appends.
inline std::string xff_list(const std::vector<std::string>& client, std::string_view hop) {
  std::string out;
  for (std::string_view v : client)
    for (std::size_t at = 0; at <= v.size();) {
      const std::size_t comma = std::min(v.find(',', at), v.size());
      const std::string member = trimmed(v.substr(at, comma - at));
      if (!member.empty()) out += (out.empty() ? "" : ", ") + member;
      at = comma + 1;
    }
  return out + (out.empty() ? "" : ", ") + std::string(hop);
}

// The client's fields named `lower` in any spelling, as an upstream reads them once passed on.
inline std::vector<std::string> as_sent(const proxy::header_list& client, std::string_view lower) {
  std::vector<std::string> out;
  for (const auto& v : spelled(client, lower))
    out.push_back(trimmed(v));
  return out;
}

// The XFCC fields of the head upstream (`got`, in every spelling) against the policy: remove
// leaves none, set our element alone; keep and append leave what each target's own model says
// (`kept()`, `appended()`: whether `got` is what they must leave).
template <class Kept, class Appended>
void check_xfcc(const std::vector<std::string>& got, const proxy::xfcc_policy& policy, Kept kept,
                Appended appended) {
  using action = proxy::xfcc_policy::action;
  switch (policy.what) {
    case action::keep:
      check(kept(), "keep passes the client's XFCC fields (unless hop-by-hop)");
      break;
    case action::remove:
      check(got.empty(), "remove leaves no XFCC in any spelling");
      break;
    case action::set:
      check(got.size() == 1 && got[0] == policy.element,
            "set leaves our element alone, no XFCC in another spelling");
      break;
    case action::append:
      check(appended(), "append leaves one XFCC, theirs then ours, none in another spelling");
      break;
  }
}

// X-Forwarded-For and -Proto of the head upstream (`upstream`, its fields as wire_fields reads
// them) against the client's fields (`client`) and the policy, counted in every spelling: with
// a switch on, the client's are all gone into one field of ours (For: the client's list, then
// the client's address or "unknown"; Proto: https); off, the client's pass as sent, unless
// `dropped(lower)` says they were hop-by-hop (named by the client's Connection): then none.
template <class Dropped>
void check_xff_and_xfp(const proxy::header_list& upstream, const proxy::header_list& client,
                       const proxy::http_forwarding& fwd, Dropped dropped) {
  const auto passed = [&](std::string_view lower) {
    return dropped(lower) ? std::vector<std::string>{} : as_sent(client, lower);
  };
  const auto xff = spelled(upstream, proxy::xff_header);
  if (fwd.x_forwarded_for) {
    const std::string hop = fwd.client_ip.empty() ? "unknown" : fwd.client_ip;
    check(xff.size() == 1 && xff[0] == xff_list(spelled(client, proxy::xff_header), hop),
          "one X-Forwarded-For in any spelling: the client's list, then its address");
  } else {
    check(xff == passed(proxy::xff_header), "X-Forwarded-For passes as sent when not asked for");
  }
  const auto xfp = spelled(upstream, proxy::xfp_header);
  if (fwd.x_forwarded_proto)
    check(xfp.size() == 1 && xfp[0] == "https", "X-Forwarded-Proto: https, once in any spelling");
  else
    check(xfp == passed(proxy::xfp_header), "X-Forwarded-Proto passes as sent when not asked for");
}

}  // namespace mtlsd::fuzz
