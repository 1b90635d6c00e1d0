#include "mtlsd/tls/peer_policy.hpp"

#include <algorithm>
#include <cctype>

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

policy_decision evaluate(const config::allow_list& allow, const peer_identity& peer) {
  if (allow.empty()) return {};
  if (!peer.spiffe_id.empty() && any(allow.spiffe_ids, [&](const std::string& p) {
        return match_spiffe_id(p, peer.spiffe_id);
      }))
    return {};
  if (any(allow.uri_sans, [&](const std::string& p) {
        return any(peer.uri_sans, [&](const std::string& u) { return u == p; });
      }))
    return {};
  if (any(allow.dns_sans, [&](const std::string& p) {
        return any(peer.dns_sans, [&](const std::string& d) { return match_dns_name(p, d); });
      }))
    return {};
  if (any(allow.email_sans, [&](const std::string& p) {
        return any(peer.email_sans, [&](const std::string& e) { return match_email(p, e); });
      }))
    return {};
  if (!peer.common_name.empty() &&
      any(allow.common_names, [&](const std::string& p) { return p == peer.common_name; }))
    return {};
  if (any(allow.organizational_units, [&](const std::string& p) {
        return any(peer.organizational_units, [&](const std::string& ou) { return ou == p; });
      }))
    return {};
  if (any(allow.sha256_fingerprints, [&](const std::string& p) { return p == peer.sha256; }))
    return {};

  std::string detail = "certificate matches no allow rule:";
  if (!peer.spiffe_id.empty()) detail += " spiffe_id=" + peer.spiffe_id;
  if (!peer.dns_sans.empty()) detail += " dns=" + join(peer.dns_sans);
  if (!peer.email_sans.empty()) detail += " email=" + join(peer.email_sans);
  if (!peer.common_name.empty()) detail += " cn=" + peer.common_name;
  if (!peer.organizational_units.empty()) detail += " ou=" + join(peer.organizational_units);
  detail += " sha256=" + peer.sha256;
  return {false, detail};
}

}  // namespace mtlsd::tls
