#include "mtlsd/tls/peer_policy.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace mtlsd::tls {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

template <class List, class Pred>
bool any(const List& list, Pred p) {
  return std::any_of(list.begin(), list.end(), p);
}

// A final dot marks a name as fully qualified: it names the same host without it.
std::string_view without_final_dot(std::string_view name) {
  if (name.size() > 1 && name.back() == '.') name.remove_suffix(1);
  return name;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A URI with its scheme and authority in lower case (they are case-insensitive, RFC 3986 6.2.2.1),
// the rest as written.
std::string normalized_uri(std::string_view uri) {
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) return std::string(uri);
  const auto path = uri.find('/', scheme_end + 3);
  const auto head = path == std::string_view::npos ? uri.size() : path;
  return lower(uri.substr(0, head)) + std::string(uri.substr(head));
}

// Whether the SAN `san`, a wildcard in its first label ("*.x", "a*.x", "*b.x"), stands for the
// host `name`: the wildcard's label matches name's first label and the rest is the same.
bool wildcard_covers(std::string_view san, std::string_view name) {
  san = without_final_dot(san);
  name = without_final_dot(name);
  const auto san_dot = san.find('.'), name_dot = name.find('.');
  if (san_dot == std::string_view::npos || name_dot == std::string_view::npos) return false;
  const std::string_view label = san.substr(0, san_dot), first = name.substr(0, name_dot);
  const auto star = label.find('*');
  if (star == std::string_view::npos || label.find('*', star + 1) != std::string_view::npos)
    return false;
  const std::string_view before = label.substr(0, star), after = label.substr(star + 1);
  return first.size() >= before.size() + after.size() && !first.empty() &&
         iequals(first.substr(0, before.size()), before) &&
         iequals(first.substr(first.size() - after.size()), after) &&
         iequals(san.substr(san_dot), name.substr(name_dot));
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ",") + s;
  return out;
}

}  // namespace

bool match_email(std::string_view pattern, std::string_view email) {
  const auto pa = pattern.rfind('@'), ea = email.rfind('@');
  if (pa == std::string_view::npos || ea == std::string_view::npos) return false;
  return pattern.substr(0, pa) == email.substr(0, ea) &&
         iequals(pattern.substr(pa + 1), email.substr(ea + 1));
}

bool match_spiffe_id(std::string_view pattern, std::string_view id) {
  if (pattern.size() >= 2 && pattern.substr(pattern.size() - 2) == "/*") {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);  // keep the '/'
    return id.size() > prefix.size() && id.substr(0, prefix.size()) == prefix;
  }
  return pattern == id;
}

bool match_dns_name(std::string_view pattern, std::string_view name) {
  if (pattern.substr(0, 2) == "*.") {
    auto dot = name.find('.');
    if (dot == std::string_view::npos || dot == 0) return false;
    return iequals(name.substr(dot + 1), pattern.substr(2));
  }
  return iequals(pattern, name);
}

namespace {

// The matchers, in evaluation order. The first seven are the identity lists (flat or in rules).
enum class matcher : std::uint8_t {
  spiffe_ids,
  uri_sans,
  dns_sans,
  email_sans,
  common_names,
  organizational_units,
  sha256_fingerprints,
  source_cidrs,
  sni,
};
constexpr matcher kAll[] = {
    matcher::spiffe_ids,          matcher::uri_sans,     matcher::dns_sans,
    matcher::email_sans,          matcher::common_names, matcher::organizational_units,
    matcher::sha256_fingerprints, matcher::source_cidrs, matcher::sni};
constexpr std::size_t kIdentityCount = 7;

const char* name_of(matcher k) {
  switch (k) {
    case matcher::spiffe_ids:
      return "spiffe_ids";
    case matcher::uri_sans:
      return "uri_sans";
    case matcher::dns_sans:
      return "dns_sans";
    case matcher::email_sans:
      return "email_sans";
    case matcher::common_names:
      return "common_names";
    case matcher::organizational_units:
      return "organizational_units";
    case matcher::sha256_fingerprints:
      return "sha256_fingerprints";
    case matcher::source_cidrs:
      return "source_cidrs";
    case matcher::sni:
      return "sni";
  }
  return "?";
}

const std::vector<std::string>* strings_of(matcher k, const config::identity_matchers& m) {
  switch (k) {
    case matcher::spiffe_ids:
      return &m.spiffe_ids;
    case matcher::uri_sans:
      return &m.uri_sans;
    case matcher::dns_sans:
      return &m.dns_sans;
    case matcher::email_sans:
      return &m.email_sans;
    case matcher::common_names:
      return &m.common_names;
    case matcher::organizational_units:
      return &m.organizational_units;
    case matcher::sha256_fingerprints:
      return &m.sha256_fingerprints;
    default:
      return nullptr;
  }
}

bool present(matcher k, const config::rule_matchers& m) {
  if (k == matcher::source_cidrs) return !m.source_cidrs.empty();
  if (k == matcher::sni) return !m.sni.empty();
  return !strings_of(k, m)->empty();
}

// How a list is used: to admit a peer it must name the peer's identity strictly; in a rule's
// `not:`, it also excludes these spellings of an excluded name, which the strict match refuses
// and which would otherwise slip past it (review): a final dot (a DNS name's, an email domain's),
// a wildcard SAN covering an excluded host, URIs differing only in the case of their scheme or
// host, and the spiffe:// URIs of a certificate that has no single SPIFFE ID (several of them).
// Admission keeps the final dot strict: OpenSSL's name constraints compare suffixes, so a CA
// excluded from "api.example.com" can still issue "api.example.com." (second review).
enum class use : std::uint8_t { admit, exclude };

bool spiffe_excluded(const std::string& pattern, const peer_identity& peer) {
  if (!peer.spiffe_id.empty() && match_spiffe_id(pattern, peer.spiffe_id)) return true;
  return any(peer.uri_sans, [&](const std::string& u) {
    const std::string uri = normalized_uri(u);
    return uri.rfind("spiffe://", 0) == 0 && match_spiffe_id(pattern, uri);
  });
}

// Whether the identity list `k` (entries `list`) matches the peer.
bool identity_matches(matcher k, const std::vector<std::string>& list, const peer_identity& peer,
                      use how = use::admit) {
  const bool excluding = how == use::exclude;
  switch (k) {
    case matcher::spiffe_ids:
      if (excluding)
        return any(list, [&](const std::string& p) { return spiffe_excluded(p, peer); });
      return !peer.spiffe_id.empty() &&
             any(list, [&](const std::string& p) { return match_spiffe_id(p, peer.spiffe_id); });
    case matcher::uri_sans:
      return any(list, [&](const std::string& p) {
        return any(peer.uri_sans, [&](const std::string& u) {
          return u == p || (excluding && normalized_uri(u) == normalized_uri(p));
        });
      });
    case matcher::dns_sans:
      return any(list, [&](const std::string& p) {
        return any(peer.dns_sans, [&](const std::string& d) {
          return match_dns_name(p, d) ||
                 (excluding && (match_dns_name(without_final_dot(p), without_final_dot(d)) ||
                                wildcard_covers(d, p)));
        });
      });
    case matcher::email_sans:
      return any(list, [&](const std::string& p) {
        return any(peer.email_sans, [&](const std::string& e) {
          return match_email(p, e) ||
                 (excluding && match_email(without_final_dot(p), without_final_dot(e)));
        });
      });
    case matcher::common_names:
      return !peer.common_name.empty() &&
             any(list, [&](const std::string& p) { return p == peer.common_name; });
    case matcher::organizational_units:
      return any(list, [&](const std::string& p) {
        return any(peer.organizational_units, [&](const std::string& ou) { return ou == p; });
      });
    case matcher::sha256_fingerprints:
      return any(list, [&](const std::string& p) { return p == peer.sha256; });
    default:
      return false;
  }
}

bool matches(matcher k, const config::rule_matchers& m, const peer_identity& peer,
             const peer_context& ctx, use how) {
  if (k == matcher::source_cidrs)
    return ctx.source &&
           any(m.source_cidrs, [&](const config::cidr& c) { return c.contains(*ctx.source); });
  if (k == matcher::sni)
    return !ctx.sni.empty() &&
           any(m.sni, [&](const std::string& p) { return match_dns_name(p, ctx.sni); });
  return identity_matches(k, *strings_of(k, m), peer, how);
}

bool rule_matches(const config::allow_rule& r, const peer_identity& peer, const peer_context& ctx) {
  for (matcher k : kAll)
    if (present(k, r.match) && !matches(k, r.match, peer, ctx, use::admit)) return false;
  for (matcher k : kAll)
    if (present(k, r.exclude) && matches(k, r.exclude, peer, ctx, use::exclude)) return false;
  return true;
}

// What the peer has for matcher `k`, for explanations: "spiffe_id=spiffe://..." etc.
std::string peer_values(matcher k, const peer_identity& peer, const peer_context& ctx) {
  auto or_none = [](const std::string& v) { return v.empty() ? std::string("(none)") : v; };
  switch (k) {
    case matcher::spiffe_ids:
      if (peer.spiffe_id.empty() && !peer.spiffe_id_problem.empty())
        return "spiffe_id=(none: " + peer.spiffe_id_problem + ")";
      return "spiffe_id=" + or_none(peer.spiffe_id);
    case matcher::uri_sans:
      return "uri=" + or_none(join(peer.uri_sans));
    case matcher::dns_sans:
      return "dns=" + or_none(join(peer.dns_sans));
    case matcher::email_sans:
      return "email=" + or_none(join(peer.email_sans));
    case matcher::common_names:
      return "cn=" + or_none(peer.common_name);
    case matcher::organizational_units:
      return "ou=" + or_none(join(peer.organizational_units));
    case matcher::sha256_fingerprints:
      return "sha256=" + peer.sha256;
    case matcher::source_cidrs:
      return "source=" + (ctx.source ? ctx.source->str() : std::string("(none)"));
    case matcher::sni:
      return "sni=" + (ctx.sni.empty() ? std::string("(none)") : std::string(ctx.sni));
  }
  return "";
}

std::string entries(matcher k, const config::rule_matchers& m) {
  if (k == matcher::source_cidrs) {
    std::string out;
    for (const auto& c : m.source_cidrs)
      out += (out.empty() ? "" : ",") + c.str();
    return out;
  }
  return join(k == matcher::sni ? m.sni : *strings_of(k, m));
}

// "spiffe_ids + source_cidrs, not sni"
std::string shape(const config::allow_rule& r) {
  std::string out;
  for (matcher k : kAll)
    if (present(k, r.match)) out += (out.empty() ? "" : " + ") + std::string(name_of(k));
  std::string excluded;
  for (matcher k : kAll)
    if (present(k, r.exclude))
      excluded += (excluded.empty() ? "" : " + ") + std::string(name_of(k));
  if (!excluded.empty()) out += (out.empty() ? "not " : ", not ") + excluded;
  return out;
}

// Why rule `i` refused the peer, and how close it came.
struct near_miss {
  std::size_t satisfied = 0, total = 0;
  std::string why;
  bool excluded_only = false;  // every positive matcher matched: a not: refused the peer
};

near_miss explain(const config::allow_rule& r, const peer_identity& peer, const peer_context& ctx) {
  near_miss n;
  for (matcher k : kAll) {
    if (!present(k, r.match)) continue;
    ++n.total;
    if (matches(k, r.match, peer, ctx, use::admit))
      ++n.satisfied;
    else if (n.why.empty())
      n.why = std::string(name_of(k)) + " [" + entries(k, r.match) + "] does not match " +
              peer_values(k, peer, ctx);
  }
  for (matcher k : kAll) {
    if (!present(k, r.exclude)) continue;
    ++n.total;
    if (!matches(k, r.exclude, peer, ctx, use::exclude))
      ++n.satisfied;
    else if (n.why.empty())
      n.why = "not." + std::string(name_of(k)) + " [" + entries(k, r.exclude) + "] matches " +
              peer_values(k, peer, ctx);
  }
  // The first miss is a positive matcher's when there is one: a why of not. means none missed.
  n.excluded_only = n.why.starts_with("not.");
  return n;
}

// Whether `n` explains a refusal better than `best`, a rule before it. A rule only a not: refused
// names exactly what refused the peer (review: a rule that merely tied on matchers was named
// instead); else the most matchers satisfied; on a tie, the larger share of its rule; then the
// first.
bool closer(const near_miss& n, const near_miss& best) {
  if (n.excluded_only != best.excluded_only) return n.excluded_only;
  return n.satisfied > best.satisfied ||
         (n.satisfied == best.satisfied && n.satisfied * best.total > best.satisfied * n.total);
}

}  // namespace

policy_decision evaluate(const config::allow_list& allow, const peer_identity& peer,
                         const peer_context& ctx) {
  if (allow.empty()) return {};
  for (std::size_t i = 0; i < kIdentityCount; ++i) {
    const matcher k = kAll[i];
    const auto& list = *strings_of(k, allow);
    if (!list.empty() && identity_matches(k, list, peer)) return {true, {}, {-1, name_of(k)}};
  }
  for (std::size_t i = 0; i < allow.rules.size(); ++i)
    if (rule_matches(allow.rules[i], peer, ctx)) return {true, {}, {static_cast<int>(i), nullptr}};

  const bool rules = !allow.rules.empty();
  std::string detail = rules ? "peer matches no allow rule:" : "certificate matches no allow rule:";
  // A spiffe:// URI that is no SPIFFE ID says why, and URIs that are not the SPIFFE ID are named:
  // the operator is told to add one of the printed names (review: neither was printed).
  if (!peer.spiffe_id.empty() || !peer.spiffe_id_problem.empty())
    detail += " " + peer_values(matcher::spiffe_ids, peer, ctx);
  std::vector<std::string> other_uris;
  for (const auto& uri : peer.uri_sans)
    if (uri != peer.spiffe_id) other_uris.push_back(uri);
  if (!other_uris.empty()) detail += " uri=" + join(other_uris);
  if (!peer.dns_sans.empty()) detail += " dns=" + join(peer.dns_sans);
  if (!peer.email_sans.empty()) detail += " email=" + join(peer.email_sans);
  if (!peer.common_name.empty()) detail += " cn=" + peer.common_name;
  if (!peer.organizational_units.empty()) detail += " ou=" + join(peer.organizational_units);
  detail += " sha256=" + peer.sha256;
  if (!rules) return {false, detail, {}};
  detail += " " + peer_values(matcher::source_cidrs, peer, ctx) + " " +
            peer_values(matcher::sni, peer, ctx);
  std::size_t best = 0;
  near_miss closest = explain(allow.rules[0], peer, ctx);
  for (std::size_t i = 1; i < allow.rules.size(); ++i) {
    near_miss n = explain(allow.rules[i], peer, ctx);
    if (closer(n, closest)) {
      best = i;
      closest = std::move(n);
    }
  }
  detail += "; closest: rules[" + std::to_string(best) + "] (" + shape(allow.rules[best]) +
            ") matched " + std::to_string(closest.satisfied) + " of " +
            std::to_string(closest.total) + ": " + closest.why;
  return {false, detail, {}};
}

std::string describe_match(const config::allow_list& allow, const policy_match& m) {
  if (m.rule >= 0 && static_cast<std::size_t>(m.rule) < allow.rules.size())
    return "rules[" + std::to_string(m.rule) + "] (" +
           shape(allow.rules[static_cast<std::size_t>(m.rule)]) + ")";
  if (m.flat) return std::string(m.flat) + " (flat list)";
  return "empty allow list (any certificate that chains to the trust store)";
}

}  // namespace mtlsd::tls
