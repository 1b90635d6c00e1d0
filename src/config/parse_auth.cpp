// client_auth and server_auth: the CA bundles, and the allow lists with their rules (identity
// matchers, source_cidrs, sni, not:).
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "mtlsd/config/spiffe_id.hpp"
#include "sections.hpp"
#include "validate.hpp"

namespace mtlsd::config {

void parse_server_names(reader& r, const YAML::Node& v, const std::string& path,
                        std::vector<std::string>& out) {
  if (!r.strings(v, path, out)) return;
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto& name = out[i];
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const std::string_view rest =
        name.rfind("*.", 0) == 0 ? std::string_view(name).substr(2) : std::string_view(name);
    if (rest.empty() || rest.find('*') != std::string_view::npos || rest.front() == '.' ||
        rest.back() == '.' || rest.find_first_of(" /:") != std::string_view::npos)
      r.error(v.IsSequence() ? v[i] : v,
              path + ": '" + name + "' is not a server name: expected a DNS name or '*.suffix'");
  }
}

namespace {

// What is wrong with server_auth.server_name as the host name checked in the remote's SANs and
// sent as SNI; "" when nothing is. Each of these passed, then failed every handshake as
// hostname_mismatch (review).
std::string server_name_problem(const std::string& name) {
  unsigned char ip[sizeof(in6_addr)];
  if (inet_pton(AF_INET, name.c_str(), ip) == 1 || inet_pton(AF_INET6, name.c_str(), ip) == 1)
    return {};
  if (name.size() > 2 && name.front() == '[' && name.back() == ']')
    return "write an IPv6 address without brackets: '" + name.substr(1, name.size() - 2) + "'";
  if (name.find('%') != std::string::npos && name.find(':') != std::string::npos)
    return "a zone (%...) is no part of the address a certificate names";
  if (std::any_of(name.begin(), name.end(), [](unsigned char c) { return c >= 0x80; }))
    return "a name outside ASCII goes in SNI and SANs as its A-label ('xn--...', e.g. from "
           "`idn2`)";
  if (name.find('*') != std::string::npos) return "a wildcard names no one host";
  // One final dot names the same host (dropped: context.cpp); an empty label anywhere else,
  // or a character no host name has, is a typo.
  const std::string_view host = std::string_view(name).substr(
      0, name.size() - (name.size() > 1 && name.back() == '.' ? 1 : 0));
  std::size_t label = 0;
  for (const char c : host) {
    if (c == '.') {
      if (label == 0) return "an empty label (two dots, or a dot first)";
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') {
      if (++label > 63) return "a label longer than 63 characters";
    } else {
      return std::string("'") + c + "' is in no host name";
    }
  }
  if (label == 0) return "an empty label (two dots, or a dot first)";
  return {};
}

// For a well-formed SPIFFE ID without a path where a workload's ID is matched: what to write.
std::string trust_domain_only(const std::string& id) {
  return "'" + id +
         "' names only a trust domain, which no workload's certificate carries; spiffe_ids: ['" +
         id + "/*'] admits every workload in it";
}

// The identity matchers of `allow` and of its rules (the caller checks the keys).
void parse_identity(reader& r, const YAML::Node& n, const std::string& path, identity_matchers& a) {
  with(n, "spiffe_ids", [&](auto v) {
    if (!r.strings(v, path + ".spiffe_ids", a.spiffe_ids)) return;
    for (std::size_t i = 0; i < a.spiffe_ids.size(); ++i) {
      const auto& id = a.spiffe_ids[i];
      auto star = id.find('*');
      if (star != std::string::npos &&
          (star != id.size() - 1 || id.size() < 2 || id[star - 1] != '/')) {
        r.error(v.IsSequence() ? v[i] : v,
                path + ".spiffe_ids: '" + id + "': '*' is only allowed as a trailing '/*'");
        continue;
      }
      // A pattern no SPIFFE ID can match is a mistake (a peer's ID is checked the same way).
      // "spiffe://*" is any SPIFFE ID at all.
      const std::string exact = star == std::string::npos ? id : id.substr(0, star - 1);
      if (std::string why = spiffe_id_problem(exact); !why.empty() && id != "spiffe://*")
        r.error(v.IsSequence() ? v[i] : v,
                path + ".spiffe_ids: '" + id + "' is not a SPIFFE ID: " + why);
      else if (star == std::string::npos && !leaf_spiffe_id_problem(id).empty())
        r.error(v.IsSequence() ? v[i] : v, path + ".spiffe_ids: " + trust_domain_only(id));
    }
  });
  with(n, "uri_sans", [&](auto v) {
    if (!r.strings(v, path + ".uri_sans", a.uri_sans)) return;
    // Matched exactly as written, so a bare trust domain here admits only certificates that
    // break X509-SVID 3.1: most likely meant as the whole trust domain.
    for (std::size_t i = 0; i < a.uri_sans.size(); ++i) {
      const auto& u = a.uri_sans[i];
      if (spiffe_id_problem(u).empty() && !leaf_spiffe_id_problem(u).empty())
        r.warning(v.IsSequence() ? v[i] : v, path + ".uri_sans: " + trust_domain_only(u));
    }
  });
  with(n, "dns_sans", [&](auto v) {
    if (!r.strings(v, path + ".dns_sans", a.dns_sans)) return;
    for (std::size_t i = 0; i < a.dns_sans.size(); ++i) {
      const auto& d = a.dns_sans[i];
      if (d.find('*') != std::string::npos &&
          (d.rfind("*.", 0) != 0 || d.find('*', 1) != std::string::npos))
        r.error(v.IsSequence() ? v[i] : v,
                path + ".dns_sans: '" + d + "': wildcards are only allowed as a leading '*.'");
    }
  });
  with(n, "email_sans", [&](auto v) {
    if (!r.strings(v, path + ".email_sans", a.email_sans)) return;
    for (std::size_t i = 0; i < a.email_sans.size(); ++i) {
      const auto& e = a.email_sans[i];
      const auto at = e.find('@');
      if (at == std::string::npos || at == 0 || at + 1 == e.size() ||
          e.find('@', at + 1) != std::string::npos)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".email_sans: '" + e + "' is not an e-mail address (local@domain)");
    }
  });
  with(n, "common_names", [&](auto v) { r.strings(v, path + ".common_names", a.common_names); });
  with(n, "organizational_units",
       [&](auto v) { r.strings(v, path + ".organizational_units", a.organizational_units); });
  with(n, "sha256_fingerprints", [&](auto v) {
    if (!r.strings(v, path + ".sha256_fingerprints", a.sha256_fingerprints)) return;
    for (std::size_t i = 0; i < a.sha256_fingerprints.size(); ++i) {
      std::string hex;
      for (char c : a.sha256_fingerprints[i])
        if (c != ':') hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        r.error(v.IsSequence() ? v[i] : v,
                path + ".sha256_fingerprints: '" + a.sha256_fingerprints[i] +
                    "' is not a SHA-256 fingerprint (64 hex digits, colons optional)");
      a.sha256_fingerprints[i] = hex;
    }
  });
}

void parse_cidrs(reader& r, const YAML::Node& v, const std::string& path, std::vector<cidr>& out) {
  std::vector<std::string> texts;
  if (!r.strings(v, path, texts)) return;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto parsed = parse_cidr(texts[i]);
    if (auto* msg = std::get_if<std::string>(&parsed))
      r.error(v.IsSequence() ? v[i] : v,
              path + "[" + std::to_string(i) + "]: invalid CIDR '" + texts[i] + "': " + *msg);
    else
      out.push_back(std::move(std::get<cidr>(parsed)));
  }
}

enum class rule_side { client_auth, server_auth };

// One rule, or its `not:` (nested = true: no further `not:`).
void parse_rule_matchers(reader& r, const YAML::Node& n, const std::string& path, rule_matchers& m,
                         rule_side side, bool nested, allow_rule* rule) {
  if (!n.IsMap()) {
    if (n.IsNull())
      r.error(n, path + ": an empty " + (nested ? "'not'" : "rule") +
                     " (give at least one matcher: " +
                     "spiffe_ids, uri_sans, dns_sans, common_names, organizational_units, "
                     "sha256_fingerprints, email_sans, " +
                     (side == rule_side::client_auth ? "source_cidrs, " : "") + "sni" +
                     (nested ? "" : ", not") + ")");
    else
      r.map(n, path, {});
    return;
  }
  if (nested)
    r.map(n, path,
          {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
           "sha256_fingerprints", "email_sans", "source_cidrs", "sni"});
  else
    r.map(n, path,
          {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
           "sha256_fingerprints", "email_sans", "source_cidrs", "sni", "not"});
  parse_identity(r, n, path, m);
  with(n, "source_cidrs", [&](auto v) {
    if (side == rule_side::server_auth) {
      r.error(v, path +
                     ".source_cidrs: not available in server_auth (the remote is the address "
                     "mtlsd connects to; use sni, or the identity matchers)");
      return;
    }
    parse_cidrs(r, v, path + ".source_cidrs", m.source_cidrs);
  });
  with(n, "sni", [&](auto v) { parse_server_names(r, v, path + ".sni", m.sni); });
  // A matcher with no entries could never match: almost certainly a mistake.
  for (const auto& kv : n) {
    const std::string key = kv.first.Scalar();
    if (key == "not") continue;
    const YAML::Node& v = kv.second;
    if (v.IsNull() || (v.IsSequence() && v.size() == 0))
      r.error(kv.first, path + "." + key + ": an empty list never matches; remove the matcher");
  }
  if (rule) {
    with(n, "not", [&](auto v) {
      parse_rule_matchers(r, v, path + ".not", rule->exclude, side, true, nullptr);
    });
  }
  if (n.size() == 0)
    r.error(n, path + ": an empty " + std::string(nested ? "'not'" : "rule") +
                   " (give at least one matcher)");
}

void parse_allow(reader& r, const YAML::Node& n, const std::string& path, allow_list& a,
                 rule_side side) {
  r.map(n, path,
        {"spiffe_ids", "uri_sans", "dns_sans", "common_names", "organizational_units",
         "sha256_fingerprints", "email_sans", "rules"});
  parse_identity(r, n, path, a);
  with(n, "rules", [&](auto v) {
    if (v.IsNull()) return;
    if (!v.IsSequence()) {
      r.error(v, path + ".rules: expected a list of rules, got " + reader::kind(v));
      return;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      allow_rule rule;
      rule.where = r.at(v[i]);
      const std::string p = path + ".rules[" + std::to_string(i) + "]";
      parse_rule_matchers(r, v[i], p, rule.match, side, false, &rule);
      a.rules.push_back(std::move(rule));
    }
  });
}

}  // namespace

void parse_client_auth(reader& r, const YAML::Node& n, const std::string& path,
                       client_auth_options& ca) {
  ca.where = r.at(n);
  r.map(n, path, {"mode", "ca", "verify_depth", "allow"});
  with(n, "mode", [&](auto v) {
    r.choice(v, path + ".mode",
             {{"require", client_auth_mode::require},
              {"optional", client_auth_mode::optional},
              {"none", client_auth_mode::none}},
             ca.mode);
  });
  with(n, "ca", [&](auto v) { r.files(v, path + ".ca", ca.ca); });
  with(n, "verify_depth",
       [&](auto v) { r.integer_into(v, path + ".verify_depth", 0, 32, ca.verify_depth); });
  with(n, "allow",
       [&](auto v) { parse_allow(r, v, path + ".allow", ca.allow, rule_side::client_auth); });
}

void parse_server_auth(reader& r, const YAML::Node& n, const std::string& path,
                       server_auth_options& sa) {
  r.map(n, path, {"ca", "server_name", "verify_depth", "allow", "insecure_skip_verify"});
  with(n, "verify_depth",
       [&](auto v) { r.integer_into(v, path + ".verify_depth", 0, 32, sa.verify_depth); });
  with(n, "ca", [&](auto v) { r.files(v, path + ".ca", sa.ca); });
  with(n, "server_name", [&](auto v) {
    if (!r.str(v, path + ".server_name", sa.server_name) || sa.server_name.empty()) return;
    if (std::string why = server_name_problem(sa.server_name); !why.empty())
      r.error(v, path + ".server_name: '" + sa.server_name + "' is not a host name: " + why);
  });
  with(n, "allow",
       [&](auto v) { parse_allow(r, v, path + ".allow", sa.allow, rule_side::server_auth); });
  with(n, "insecure_skip_verify",
       [&](auto v) { r.boolean(v, path + ".insecure_skip_verify", sa.insecure_skip_verify); });
  check_server_auth(r, n, path, sa);
}

}  // namespace mtlsd::config
