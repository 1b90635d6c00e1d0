// The rules of validate.hpp, in the order a listener's sections are read.
#include "validate.hpp"

#include <algorithm>

#include "mtlsd/config/pkcs11_uri.hpp"

namespace mtlsd::config {

// A key's secret comes from the file that matches its kind: key_password_file decrypts a key
// file, key_pin_file (or the URI's pin-source/pin-value) logs in to a PKCS#11 token.
void check_key_secrets(reader& r, const YAML::Node& n, const std::string& path, const file_ref& key,
                       const file_ref& password, const file_ref& pin) {
  const bool uri = is_pkcs11_uri(key.path);
  if (uri && !password.empty())
    r.error(n["key_password_file"],
            path + ".key_password_file: the key is a pkcs11: URI; its PIN goes in key_pin_file");
  if (!uri && !pin.empty())
    r.error(n["key_pin_file"], path +
                                   ".key_pin_file applies to a pkcs11: key only (a key file takes "
                                   "key_password_file)");
  pkcs11_uri parsed;
  if (uri && !pin.empty() && parse_pkcs11_uri(key.path, parsed).empty() &&
      (!parsed.pin_source.empty() || !parsed.pin_value.empty()))
    r.error(n["key_pin_file"],
            path +
                ".key_pin_file: the key's URI already gives the PIN (pin-source or "
                "pin-value); give it once");
}

void check_certificate_entry(reader& r, const YAML::Node& n, const std::string& path,
                             const certificate_entry& e) {
  const bool has_pem = !e.cert.empty() || !e.key.empty();
  if (has_pem && !e.pkcs12.empty())
    r.error(n, path + ": give either cert + key or pkcs12, not both");
  else if (!e.cert.empty() && e.key.empty())
    r.error(n, path + ": 'cert' is set but 'key' is missing");
  else if (e.cert.empty() && !e.key.empty())
    r.error(n, path + ": 'key' is set but 'cert' is missing");
  else if (!has_pem && e.pkcs12.empty())
    r.error(n, path + ": each entry needs cert + key or pkcs12");
}

void check_tls_versions(reader& r, const std::string& path, const tls_options& t) {
  if (t.min_version > t.max_version)
    r.error(t.where,
            path + ": min_version " + t.min_version + " is above max_version " + t.max_version);
}

void check_server_auth(reader& r, const YAML::Node& n, const std::string& path,
                       const server_auth_options& sa) {
  // Without verification there is no verified identity to match: an allow list would be
  // ignored in silence, admitting any remote the operator meant to restrict.
  if (sa.insecure_skip_verify && !sa.allow.empty())
    r.error(n["insecure_skip_verify"],
            path + ".insecure_skip_verify: true cannot be combined with " + path +
                ".allow (nothing is verified, so the allow list could never be enforced)");
}

void check_limits(reader& r, const YAML::Node& n, const std::string& path,
                  const limit_options& lim) {
  if (lim.burst > 0 && lim.connections_per_second == 0)
    r.error(n["burst"], path + ".burst needs connections_per_second (the rate that refills it)");
}

void check_unix_listener_sources(reader& r, const YAML::Node& n, const std::string& path,
                                 const listener& l) {
  // A peer on a unix socket has no IP address to match: only a PROXY header can give it one.
  if (l.listen.is_unix() && !l.accept_proxy_protocol.enabled && !l.allowed_sources.empty())
    r.error(n["allowed_sources"], path +
                                      ".allowed_sources: a unix-socket listener's peers have no "
                                      "IP address (use accept_proxy_protocol, or drop the list)");
  if (l.listen.is_unix() && !l.accept_proxy_protocol.trusted_sources.empty())
    r.error(n["accept_proxy_protocol"]["trusted_sources"],
            path +
                ".accept_proxy_protocol.trusted_sources: a unix-socket listener's peers have no "
                "IP address (use [] and the socket's permissions)");
}

void check_proxy_header_senders(reader& r, const YAML::Node& n, const std::string& path,
                                const listener& l) {
  // With no trusted_sources any peer may send a PROXY header, and so choose the address the
  // source checks judge and the upstream is told (review: easy to miss; the default is nginx's,
  // and kept).
  if (l.listen.is_unix() || !l.accept_proxy_protocol.enabled ||
      !l.accept_proxy_protocol.trusted_sources.empty())
    return;
  std::string judged;
  if (!l.allowed_sources.empty()) judged = "allowed_sources";
  auto also = [&](const char* what) {
    judged += (judged.empty() ? "" : " and ") + std::string(what);
  };
  if (l.limits.max_connections_per_source > 0) also("limits.max_connections_per_source");
  const auto& rules = l.client_auth.allow.rules;
  if (std::any_of(rules.begin(), rules.end(), [](const allow_rule& a) {
        return !a.match.source_cidrs.empty() || !a.exclude.source_cidrs.empty();
      }))
    also("client_auth.allow rules' source_cidrs");
  // What the upstream is told trusts that address as much (its last X-Forwarded-For hop, the
  // PROXY header mtlsd sends): a spoofed one reaches its access rules and logs.
  std::string told;
  if (l.http.enabled && l.http.x_forwarded_for) told = "the X-Forwarded-For hop mtlsd appends";
  if (l.proxy_protocol == proxy_protocol_mode::v2)
    told += (told.empty() ? "" : " and ") + std::string("the PROXY v2 header mtlsd sends");
  if (judged.empty() && told.empty()) return;
  std::string what = "any client can choose the source address ";
  if (!judged.empty()) what += judged + " judge";
  if (!told.empty()) what += (judged.empty() ? "" : ", and ") + told + " upstream";
  r.warning(n["accept_proxy_protocol"],
            path +
                ".accept_proxy_protocol: any peer may send the header (trusted_sources is "
                "empty), so " +
                what + ": list the load balancers in trusted_sources");
}

void check_upstream_check_path(reader& r, const YAML::Node& v, const std::string& path,
                               const upstream_check_options& c) {
  // A warning, not an error: the contract's own example gives type: tcp beside path.
  if (c.type != upstream_check_type::http)
    r.warning(v, path + ".path is not used with type: tcp (it applies to type: http only)");
}

void check_upstream_check_timeout(reader& r, const YAML::Node& v, const std::string& path,
                                  const upstream_check_options& c) {
  if (c.timeout > c.interval)
    r.error(v, path + ".timeout (" + format_duration(c.timeout) + ") must not exceed " + path +
                   ".interval (" + format_duration(c.interval) + ")");
}

// A check in client mode can only be tcp: there the upstream is a TLS server, and a plain HTTP
// request to it would say nothing about its health.
void check_upstream_check_mode(reader& r, const YAML::Node& n, const std::string& path, bool server,
                               const upstream_check_options& c) {
  if (!server && c.type == upstream_check_type::http)
    r.error(n["type"], path +
                           ".type: http applies to mode: server only (in client mode the "
                           "upstream speaks TLS; use tcp)");
}

namespace {

// Where the listener's own certificate comes from: exactly one of cert + key, pkcs12,
// tls.certificates and tls.spiffe.
void check_certificate_source(reader& r, const YAML::Node& n, const std::string& path,
                              const listener& l) {
  const bool server = l.mode == listener_mode::server;
  const bool has_pem = !l.tls.cert.empty() || !l.tls.key.empty();
  const bool has_list = !l.tls.certificates.empty();
  if (has_list && (has_pem || !l.tls.pkcs12.empty() || !l.tls.key_password_file.empty() ||
                   !l.tls.key_pin_file.empty() || !l.tls.pkcs12_password_file.empty()))
    r.error(l.tls.certificates_where,
            path + ".tls.certificates: give either certificates or cert/key/pkcs12, not both");
  if (has_list && !server)
    r.error(l.tls.certificates_where,
            path + ".tls.certificates applies to mode: server only (a client presents one)");
  if (l.tls.strict_sni && !server)
    r.error(n["tls"]["strict_sni"], path + ".tls.strict_sni applies to mode: server only");
  if (has_list && l.revocation.stapling && l.tls.certificates.size() > 1)
    r.error(n["revocation"]["stapling"],
            path +
                ".revocation.stapling: not supported with several tls.certificates yet (staple "
                "with one certificate, or turn stapling off)");
  const bool spiffe = l.tls.spiffe.enabled;
  if (spiffe && (has_pem || has_list || !l.tls.pkcs12.empty() || !l.tls.key_password_file.empty() ||
                 !l.tls.pkcs12_password_file.empty()))
    r.error(l.tls.spiffe.where,
            path +
                ".tls.spiffe: the Workload API supplies the certificate and key: give either "
                "spiffe or cert/key/pkcs12/certificates, not both");
  if (spiffe && l.revocation.stapling)
    r.error(n["revocation"]["stapling"],
            path +
                ".revocation.stapling: not supported with tls.spiffe (an X.509-SVID names no "
                "OCSP responder)");
  if (has_pem && !l.tls.pkcs12.empty())
    r.error(l.tls.where, path + ".tls: give either cert + key or pkcs12, not both");
  if (!l.tls.cert.empty() && l.tls.key.empty())
    r.error(l.tls.where, path + ".tls: 'cert' is set but 'key' is missing");
  if (l.tls.cert.empty() && !l.tls.key.empty())
    r.error(l.tls.where, path + ".tls: 'key' is set but 'cert' is missing");
}

// A server-mode listener authenticates clients and serves them; a client-mode one connects to a
// TLS server and authenticates it.
void check_server_mode(reader& r, const YAML::Node& n, const std::string& path, const listener& l) {
  const bool has_pem = !l.tls.cert.empty() || !l.tls.key.empty();
  const bool spiffe = l.tls.spiffe.enabled;
  if (!has_pem && l.tls.pkcs12.empty() && l.tls.certificates.empty() && !spiffe)
    r.error(l.tls.where,
            path + ".tls: a server-mode listener needs its certificate: set cert + key or pkcs12");
  // With tls.spiffe the trust bundles are the CAs, unless client_auth.ca names files.
  if (l.client_auth.mode != client_auth_mode::none && l.client_auth.ca.empty() && !spiffe)
    r.error(l.client_auth.where,
            path + ".client_auth.ca: client certificates are required (mode " +
                (l.client_auth.mode == client_auth_mode::require ? "require" : "optional") +
                ") but no CA bundle is configured");
  if (const YAML::Node sa = n["server_auth"]; sa.IsDefined())
    r.error(sa, path + ".server_auth applies to mode: client only (use client_auth)");
  // mode: none asks for no certificate, so nothing is verified and no rule is looked at: an
  // allow list beside it would read as a restriction and admit everyone (review). The same
  // contradiction as server_auth's insecure_skip_verify with an allow list.
  if (l.client_auth.mode == client_auth_mode::none) {
    const YAML::Node auth = n["client_auth"];
    const auto node = [&n](const YAML::Node& k) { return k.IsDefined() ? k : n; };
    if (!l.client_auth.allow.empty())
      r.error(node(auth["allow"]),
              path +
                  ".client_auth.allow: with mode: none no client certificate is "
                  "asked for and every client is admitted; remove allow, or use "
                  "mode: require");
    if (!l.client_auth.ca.empty())
      r.warning(node(auth["ca"]), path + ".client_auth.ca is not used with mode: none");
    if (l.revocation.enabled())
      r.warning(node(n["revocation"]), path +
                                           ".revocation is not used with client_auth.mode: none "
                                           "(no client certificate to check)");
  }
}

void check_client_mode(reader& r, const YAML::Node& n, const std::string& path, const listener& l) {
  if (const YAML::Node ca = n["client_auth"]; ca.IsDefined())
    r.error(ca, path + ".client_auth applies to mode: server only (use server_auth)");
  // The remote's SVID names no host: without a CA file or a server_name to check, its SPIFFE
  // ID is what authenticates it, so it must be named.
  // A rule of `sni` (the name mtlsd sends itself) or `not:` alone names no remote: it would
  // admit any SVID of the trust domain (review).
  const auto& allow = l.server_auth.allow;
  const bool names_remote =
      !allow.empty() && std::all_of(allow.rules.begin(), allow.rules.end(), [](const auto& rule) {
        return !static_cast<const identity_matchers&>(rule.match).empty();
      });
  if (l.tls.spiffe.enabled && l.server_auth.ca.empty() && l.server_auth.server_name.empty() &&
      !names_remote)
    r.error(l.tls.spiffe.where,
            path +
                ".tls.spiffe in mode: client: name the remote's SPIFFE ID in "
                "server_auth.allow.spiffe_ids (an X.509-SVID carries no host name to check; "
                "every rule needs an identity matcher, sni and not: alone name no remote), "
                "or set server_auth.server_name");
  if (l.upstream.is_unix())
    r.error(n["upstream"],
            path + ".upstream: a client-mode listener connects to a TLS server over TCP");
  if (l.proxy_protocol != proxy_protocol_mode::off)
    r.error(n["proxy_protocol"], path + ".proxy_protocol applies to mode: server only");
  if (l.http.enabled) r.error(n["http"], path + ".http applies to mode: server only");
  if (l.revocation.stapling)
    r.error(n["revocation"], path + ".revocation.stapling applies to mode: server only");
  // As with client_auth.mode: none: nothing would be checked (review: a CRL revoking the remote
  // admitted it all the same, while `check` said only "valid").
  if (l.server_auth.insecure_skip_verify && (l.revocation.enabled() || l.revocation.require_staple))
    r.warning(n["revocation"], path +
                                   ".revocation is not used with server_auth.insecure_skip_verify: "
                                   "true (the remote's certificate is not judged, revocation "
                                   "included)");
}

}  // namespace

void check_listener(reader& r, const YAML::Node& n, const std::string& path, const listener& l) {
  check_certificate_source(r, n, path, l);
  if (l.mode == listener_mode::server)
    check_server_mode(r, n, path, l);
  else
    check_client_mode(r, n, path, l);
  if (l.mode == listener_mode::server && l.revocation.require_staple) {
    r.error(n["revocation"]["require_staple"],
            path +
                ".revocation.require_staple applies to mode: client only (a client's "
                "certificate cannot be stapled)");
  }
}

void check_listener_unique(reader& r, const YAML::Node& n, const std::string& path,
                           const listener& l, taken_by_listeners& taken) {
  if (!l.name.empty() && !taken.names.insert(l.name).second)
    r.error(n["name"], path + ".name: duplicate listener name '" + l.name + "'");
  for (const auto& [a, other] : taken.addresses) {
    if (!may_overlap(a, l.listen)) continue;
    if (a == l.listen)
      r.error(n["listen"],
              path + ".listen: " + a.str() + " is already used by listener '" + other + "'");
    else  // what binding would refuse at start (review: check passed, run did not start)
      r.error(n["listen"],
              path + ".listen: " + l.listen.str() + " overlaps " + a.str() + " of listener '" +
                  other + "' (" +
                  (l.listen.is_unix() ? "the same socket, however spelt)"
                                      : "the same socket; 0.0.0.0 and [::] take every address on "
                                        "their port)"));
  }
  // A warning: systemd's RuntimeDirectory= (/run/mtlsd) exists only while the service runs, so
  // a check before the start, or `verify`, must not refuse it (review).
  if (const auto why = socket_directory_problem(l.listen); !why.empty())
    r.warning(n["listen"], path + ".listen: " + why + ": mtlsd cannot create the socket " +
                               l.listen.path + " and start until it does");
  taken.addresses.emplace_back(l.listen, l.name);
}

void check_http_protocols(reader& r, const YAML::Node& v, const std::string& path, listener& l) {
  const std::string p = path + ".http";
  if (!l.tls.alpn.empty()) {
    // `http:` as a scalar has been reported already; subscripting it would throw (review).
    if (!v.IsMap() || !v["protocols"]) l.http.protocols = l.tls.alpn;
    if (l.tls.alpn != l.http.protocols)
      r.error(v, p + ".protocols and " + path + ".tls.alpn differ: on an http listener the ALPN " +
                     "offered is " + p + ".protocols; drop tls.alpn");
    for (const auto& proto : l.tls.alpn)
      if (proto != "h2" && proto != "http/1.1")
        r.error(v, path + ".tls.alpn: an http listener speaks h2 and http/1.1 only, not '" + proto +
                       "'");
  }
  if (l.http.upstream_protocol == http_upstream_protocol::h2c && l.http.offers("http/1.1"))
    r.error(v, p + ".upstream_protocol: h2c needs protocols: [h2] (HTTP/1.1 clients are not " +
                   "translated to h2c; use upstream_protocol: same to serve both)");
}

}  // namespace mtlsd::config
