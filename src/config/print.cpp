// configuration structs -> YAML for `mtlsd check --print`. yaml-cpp's emitter does the quoting,
// so any string round-trips through load_text.
#include "mtlsd/config/print.hpp"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cstdio>
#include <regex>
#include <string_view>

#include "mtlsd/config/pkcs11_uri.hpp"
#include "value_names.hpp"

namespace mtlsd::config {
namespace {

class printer {
 public:
  YAML::Emitter out;

  void key(const char* k) { out << YAML::Key << k << YAML::Value; }
  void str(const char* k, const std::string& v) {
    key(k);
    out << YAML::DoubleQuoted << v;
  }
  // Only the values that can carry a secret are redacted: a key's pkcs11: URI (its pin-value)
  // and the OCSP responder's URL (a password in it; refused when the configuration is built).
  // Elsewhere a "scheme://user:x@" is no secret but a value, such as an allow list's URI SAN:
  // printed as "user:REDACTED@", it matched another name once loaded again (review).
  void secret(const char* k, const std::string& v) {
    key(k);
    out << YAML::DoubleQuoted << redact(v);
  }
  void word(const char* k, const char* v) {
    key(k);
    // YAML 1.1 readers (PyYAML, many tools) take a plain off/on/yes/no for a boolean.
    const std::string_view w(v);
    if (w == "off" || w == "on" || w == "yes" || w == "no")
      out << YAML::DoubleQuoted << v;
    else
      out << v;
  }
  void boolean(const char* k, bool v) {
    key(k);
    out << YAML::TrueFalseBool << v;
  }
  void number(const char* k, long long v) {
    key(k);
    out << v;
  }
  void dur(const char* k, duration d) {
    key(k);
    out << format_duration(d);
  }
  void file(const char* k, const file_ref& f) { str(k, f.path); }
  void strings(const char* k, const std::vector<std::string>& v) {
    key(k);
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : v)
      out << YAML::DoubleQuoted << s;
    out << YAML::EndSeq;
  }
  void files(const char* k, const std::vector<file_ref>& v) {
    key(k);
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& f : v)
      out << YAML::DoubleQuoted << f.path;
    out << YAML::EndSeq;
  }
  void ranges(const char* k, const std::vector<cidr>& v) {
    std::vector<std::string> text;
    for (const auto& c : v)
      text.push_back(c.str());
    strings(k, text);
  }
  void begin(const char* k) {
    key(k);
    out << YAML::BeginMap;
  }
  void end() { out << YAML::EndMap; }

  void identity(const identity_matchers& a, bool all) {
    auto list = [&](const char* k, const std::vector<std::string>& v) {
      if (all || !v.empty()) strings(k, v);
    };
    list("spiffe_ids", a.spiffe_ids);
    list("uri_sans", a.uri_sans);
    list("dns_sans", a.dns_sans);
    list("common_names", a.common_names);
    list("organizational_units", a.organizational_units);
    list("sha256_fingerprints", a.sha256_fingerprints);
    list("email_sans", a.email_sans);
  }
  // A rule prints only the matchers it has: an absent matcher and an empty one differ.
  void matchers(const rule_matchers& m) {
    identity(m, false);
    if (!m.source_cidrs.empty()) {
      key("source_cidrs");
      out << YAML::Flow << YAML::BeginSeq;
      for (const auto& c : m.source_cidrs)
        out << YAML::DoubleQuoted << c.str();
      out << YAML::EndSeq;
    }
    if (!m.sni.empty()) strings("sni", m.sni);
  }
  void allow(const char* k, const allow_list& a) {
    begin(k);
    identity(a, true);
    key("rules");
    out << YAML::BeginSeq;
    for (const auto& r : a.rules) {
      out << YAML::BeginMap;
      matchers(r.match);
      if (!r.exclude.empty()) {
        begin("not");
        matchers(r.exclude);
        end();
      }
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
    end();
  }

  void key_pair(const key_source& k) {
    file("cert", k.cert);
    if (is_pkcs11_uri(k.key.path))
      secret("key", k.key.path);
    else
      file("key", k.key);
    file("key_password_file", k.key_password_file);
    file("key_pin_file", k.key_pin_file);
    file("pkcs12", k.pkcs12);
    file("pkcs12_password_file", k.pkcs12_password_file);
  }

  // tls.spiffe and tls.certificates each replace cert/key/pkcs12 (giving both is an error), so
  // only one is printed.
  void tls(const tls_options& t, bool server) {
    begin("tls");
    if (t.spiffe.enabled) {
      // As written ("env" stays env: the socket it names is read again at the next load).
      begin("spiffe");
      str("workload_api", t.spiffe.workload_api);
      strings("trust_domains", t.spiffe.trust_domains);
      end();
    } else if (t.certificates.empty()) {
      key_pair(t);
    } else {
      key("certificates");
      out << YAML::BeginSeq;
      for (const auto& e : t.certificates) {
        out << YAML::BeginMap;
        key_pair(e);
        strings("server_names", e.server_names);
        out << YAML::EndMap;
      }
      out << YAML::EndSeq;
    }
    if (server) boolean("strict_sni", t.strict_sni);
    str("min_version", t.min_version);
    str("max_version", t.max_version);
    str("cipher_suites", t.cipher_suites);
    str("ciphers", t.ciphers);
    str("curves", t.curves);
    strings("alpn", t.alpn);
    boolean("session_resumption", t.session_resumption);
    end();
  }

  void revocation(const revocation_options& r, bool server) {
    begin("revocation");
    files("crl_files", r.crl_files);
    boolean("crl_distribution_points", r.crl_distribution_points);
    word("crl_scope", to_text(r.scope));
    word("ocsp", to_text(r.ocsp));
    secret("ocsp_responder", r.ocsp_responder);
    dur("ocsp_timeout", r.ocsp_timeout);
    word("on_unavailable", to_text(r.on_unavailable));
    dur("crl_grace", r.crl_grace);
    boolean("recheck_established", r.recheck_established);
    if (server)
      boolean("stapling", r.stapling);
    else
      boolean("require_staple", r.require_staple);
    end();
  }

  void proxy_accept(const proxy_accept_options& p) {
    begin("accept_proxy_protocol");
    std::vector<std::string> versions;
    if (p.v1) versions.emplace_back("v1");
    if (p.v2) versions.emplace_back("v2");
    strings("versions", versions);
    ranges("trusted_sources", p.trusted_sources);
    end();
  }

  void limits(const listener& l) {
    begin("limits");
    number("connections_per_second", l.limits.connections_per_second);
    number("burst", l.limits.burst);
    number("max_connections_per_source", l.limits.max_connections_per_source);
    number("max_connections_per_identity", l.limits.max_connections_per_identity);
    // The effective cap, so that the default (half of max_connections) is visible.
    number("max_pending_handshakes", l.limits.pending_cap(l.max_connections));
    end();
  }

  void timeouts(const timeout_options& t) {
    begin("timeouts");
    dur("handshake", t.handshake);
    dur("connect", t.connect);
    dur("idle", t.idle);
    dur("half_close", t.half_close);
    dur("max_connection_age", t.max_connection_age);
    end();
  }

  void client_auth(const client_auth_options& a) {
    begin("client_auth");
    word("mode", to_text(a.mode));
    files("ca", a.ca);
    number("verify_depth", a.verify_depth);
    allow("allow", a.allow);
    end();
  }

  void server_auth(const server_auth_options& a) {
    begin("server_auth");
    files("ca", a.ca);
    str("server_name", a.server_name);
    number("verify_depth", a.verify_depth);
    allow("allow", a.allow);
    boolean("insecure_skip_verify", a.insecure_skip_verify);
    end();
  }

  void upstream_check(const upstream_check_options& c) {
    begin("upstream_check");
    const bool http = c.type == upstream_check_type::http;
    word("type", http ? "http" : "tcp");
    if (http) str("path", c.path);
    dur("interval", c.interval);
    dur("timeout", c.timeout);
    end();
  }

  void http_mode(const http_options& h) {
    begin("http");
    word("forward_client_cert_details", to_text(h.forward_client_cert_details));
    strings("set_current_client_cert_details", h.set_current_client_cert_details);
    strings("protocols", h.protocols);
    word("upstream_protocol", to_text(h.upstream_protocol));
    word("x_forwarded_for", h.x_forwarded_for ? "append" : "off");
    word("x_forwarded_proto", h.x_forwarded_proto ? "set" : "off");
    number("max_concurrent_streams", h.max_concurrent_streams);
    number("max_premature_resets", h.max_premature_resets);
    number("max_upstream_connections_per_client", h.max_upstream_connections_per_client);
    dur("stream_idle_timeout", h.stream_idle_timeout);
    dur("request_headers_timeout", h.request_headers_timeout);
    end();
  }

  // Keys that apply to one mode only are printed for that mode only: load_text refuses
  // client_auth, proxy_protocol, http and stapling on a client-mode listener and server_auth on
  // a server-mode one.
  void listener_entry(const listener& l) {
    const bool server = l.mode == listener_mode::server;
    out << YAML::BeginMap;
    str("name", l.name);
    word("mode", to_text(l.mode));
    str("listen", l.listen.str());
    if (l.unix_socket_mode) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", *l.unix_socket_mode);
      str("unix_socket_mode", mode);
    }
    str("upstream", l.upstream.str());
    number("max_connections", l.max_connections);
    ranges("allowed_sources", l.allowed_sources);
    // Present = on, as in the file: these blocks are printed only when on.
    if (l.accept_proxy_protocol.enabled) proxy_accept(l.accept_proxy_protocol);
    limits(l);
    timeouts(l.timeouts);
    tls(l.tls, server);
    if (server)
      client_auth(l.client_auth);
    else
      server_auth(l.server_auth);
    revocation(l.revocation, server);
    if (l.upstream_check.enabled) upstream_check(l.upstream_check);
    if (server) {
      word("proxy_protocol", to_text(l.proxy_protocol));
      // `http:` being present is what turns HTTP mode on.
      if (l.http.enabled) http_mode(l.http);
    }
    out << YAML::EndMap;
  }
};

}  // namespace

namespace {

std::size_t find_ci(const std::string& text, std::string_view what, std::size_t from) {
  for (std::size_t i = from; i + what.size() <= text.size(); ++i) {
    std::size_t k = 0;
    while (k < what.size() && std::tolower(static_cast<unsigned char>(text[i + k])) == what[k])
      ++k;
    if (k == what.size()) return i;
  }
  return std::string::npos;
}

// pkcs11:...pin-value=PIN (RFC 7512) -> pin-value=REDACTED. In the query (after the URI's first
// '?') the PIN runs to the next '&', as the parser splits it (config/pkcs11_uri.cpp). The
// parser refuses a pin-value in the path, so `check --print` never meets one there; an error
// that quotes such a URI hides up to the next ';', a '?' and what follows it included, as the
// PIN may hold a '?' (review: a PIN with '&' in the path, or ';' in the query, was shown past
// that character). Callers pass one value, so the end of the text is the end of the URI.
std::string redact_pins(std::string text) {
  constexpr std::string_view key = "pin-value=";
  for (std::size_t at = find_ci(text, key, 0); at != std::string::npos;
       at = find_ci(text, key, at + key.size())) {
    const std::size_t scheme = [&] {
      std::size_t last = std::string::npos;
      for (std::size_t p = find_ci(text, "pkcs11:", 0); p != std::string::npos && p < at;
           p = find_ci(text, "pkcs11:", p + 1))
        last = p;
      return last;
    }();
    const auto question = scheme == std::string::npos ? std::string::npos : text.find('?', scheme);
    const bool in_query = question != std::string::npos && question < at;
    // Only the parser's separator or the end of the text ends it: a space or a quote inside
    // a PIN is part of it (second read: "correct horse battery" showed "horse battery").
    std::size_t end = at + key.size();
    while (end < text.size() && text[end] != (in_query ? '&' : ';'))
      ++end;
    text.replace(at + key.size(), end - at - key.size(), "REDACTED");
  }
  return text;
}

}  // namespace

std::string redact(const std::string& text) {
  // scheme://user:PASSWORD@host -> scheme://user:REDACTED@host. The password runs to the last
  // '@' before a space, and the user name to the first ':': either may hold '/' or '@' as people
  // write them (review: "pa/ss" was shown, and a user "me@corp.com" hid nothing).
  static const std::regex userinfo(R"(([A-Za-z][A-Za-z0-9+.-]*://[^/:\s]*:)\S*@)");
  return redact_pins(std::regex_replace(text, userinfo, "$1REDACTED@"));
}

std::string print_yaml(const configuration& c) {
  printer p;
  p.out.SetIndent(2);
  p.out << YAML::Comment("effective configuration of " + c.file +
                         ": every default filled in, inline secrets REDACTED");
  p.out << YAML::BeginMap;
  p.begin("admin");
  p.str("address", c.admin.listen ? c.admin.listen->str() : std::string());
  p.end();
  p.begin("log");
  p.word("level", c.log.level.c_str());
  p.word("format", to_text(c.log.format));
  p.boolean("access_log", c.log.access_log);
  p.str("access_log_path", c.log.access_log_path);
  p.end();
  p.number("workers", c.workers);
  p.boolean("sandbox", c.sandbox);
  p.begin("dns");
  std::vector<std::string> servers;
  for (const auto& a : c.dns.servers)
    servers.push_back(a.str());
  p.strings("servers", servers);
  p.end();
  p.begin("reload");
  p.boolean("watch", c.reload.watch);
  p.dur("poll_interval", c.reload.poll_interval);
  p.end();
  p.begin("shutdown");
  p.dur("drain_timeout", c.shutdown.drain_timeout);
  p.end();
  p.key("listeners");
  p.out << YAML::BeginSeq;
  for (const auto& l : c.listeners)
    p.listener_entry(l);
  p.out << YAML::EndSeq;
  p.out << YAML::EndMap;
  return std::string(p.out.c_str()) + "\n";
}

}  // namespace mtlsd::config
