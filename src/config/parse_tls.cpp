// tls: where the listener's certificate and key come from (files, pkcs12, several certificates
// chosen by SNI, or the SPIFFE Workload API) and the protocol settings.
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "sections.hpp"
#include "validate.hpp"

namespace mtlsd::config {
namespace {

namespace fs = std::filesystem;

// cert, key (and its secret), pkcs12: the same keys in `tls:` and in a tls.certificates entry.
void parse_key_source(reader& r, const YAML::Node& n, const std::string& path, key_source& k) {
  with(n, "cert", [&](auto v) { r.file(v, path + ".cert", k.cert); });
  with(n, "key", [&](auto v) { r.key_file(v, path + ".key", k.key); });
  with(n, "key_password_file",
       [&](auto v) { r.file(v, path + ".key_password_file", k.key_password_file); });
  with(n, "key_pin_file", [&](auto v) { r.file(v, path + ".key_pin_file", k.key_pin_file); });
  check_key_secrets(r, n, path, k.key, k.key_password_file, k.key_pin_file);
  with(n, "pkcs12", [&](auto v) { r.file(v, path + ".pkcs12", k.pkcs12); });
  with(n, "pkcs12_password_file",
       [&](auto v) { r.file(v, path + ".pkcs12_password_file", k.pkcs12_password_file); });
}

// tls.certificates: each entry is cert + key or pkcs12, plus the names it serves.
void parse_certificate_entry(reader& r, const YAML::Node& n, const std::string& path,
                             certificate_entry& e) {
  e.where = r.at(n);
  if (!r.map(n, path,
             {"cert", "key", "key_password_file", "key_pin_file", "pkcs12", "pkcs12_password_file",
              "server_names"}))
    return;
  parse_key_source(r, n, path, e);
  with(n, "server_names",
       [&](auto v) { parse_server_names(r, v, path + ".server_names", e.server_names); });
  check_certificate_entry(r, n, path, e);
}

void parse_certificates(reader& r, const YAML::Node& n, const std::string& path, tls_options& t) {
  t.certificates_where = r.at(n);
  if (!n.IsSequence()) {
    r.error(
        n, path + ": expected a list of {cert, key, server_names} entries, got " + reader::kind(n));
    return;
  }
  if (n.size() == 0) r.error(n, path + ": the list is empty: give at least one certificate");
  for (std::size_t i = 0; i < n.size(); ++i) {
    certificate_entry e;
    parse_certificate_entry(r, n[i], path + "[" + std::to_string(i) + "]", e);
    t.certificates.push_back(std::move(e));
  }
}

// "unix:/path" or "unix:///path" (the URL form SPIFFE_ENDPOINT_SOCKET usually holds) -> "/path";
// nullopt with `why` set otherwise. Only unix sockets: the Workload API over TCP would need its
// own authentication of the agent, which the spec leaves to the deployment.
std::optional<std::string> workload_api_socket(const std::string& value, std::string& why) {
  constexpr std::string_view scheme = "unix:";
  if (value.rfind(scheme, 0) != 0) {
    why = "expected unix:/path/to/agent.sock (only unix sockets are supported)";
    return std::nullopt;
  }
  std::string path = value.substr(scheme.size());
  if (path.rfind("//", 0) == 0) {
    // unix://HOST/path: only an empty host (unix:///path) names a local file.
    if (path.rfind("///", 0) != 0) {
      why = "a unix: URL names no host: write unix:///path or unix:/path";
      return std::nullopt;
    }
    path = path.substr(2);
  }
  if (path.empty() || path.front() != '/') {
    why = "the socket path must be absolute";
    return std::nullopt;
  }
  if (path.size() >= 108) {  // sizeof(sockaddr_un::sun_path)
    why = "the socket path is longer than a unix socket address can hold (107 bytes)";
    return std::nullopt;
  }
  return fs::path(path).lexically_normal().string();
}

// A trust domain name, as in spiffe://NAME/...: lower-case letters, digits, '.', '-', '_'.
// "spiffe://example.org" is accepted too and stored bare.
bool trust_domain_name(std::string& td) {
  if (td.rfind("spiffe://", 0) == 0) td = td.substr(9);
  if (!td.empty() && td.back() == '/') td.pop_back();
  return !td.empty() &&
         td.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-_") == std::string::npos;
}

// `value` ("env" or a unix: address) into s.socket_path, or an error at `at`. `given`: false
// when the key is absent and `value` is the contract's default, env.
void resolve_workload_api(reader& r, const YAML::Node& at, const std::string& path,
                          std::string value, bool given, spiffe_options& s) {
  std::string source;
  if (value == "env") {
    const char* env = std::getenv("SPIFFE_ENDPOINT_SOCKET");
    if (!env || !*env) {
      r.error(at, given ? path + ".workload_api: env, but SPIFFE_ENDPOINT_SOCKET is not set"
                        : path +
                              ".workload_api: not given, so env (the default), but "
                              "SPIFFE_ENDPOINT_SOCKET is not set: give "
                              "unix:/path/to/agent.sock, or set the variable");
      return;
    }
    value = env;
    source = " (from SPIFFE_ENDPOINT_SOCKET)";
  }
  std::string why;
  if (auto socket = workload_api_socket(value, why))
    s.socket_path = *socket;
  else
    r.error(at, path + ".workload_api: '" + value + "'" + source + ": " + why);
}

void parse_spiffe(reader& r, const YAML::Node& n, const std::string& path, spiffe_options& s) {
  s.enabled = true;
  s.where = r.at(n);
  // `spiffe:` alone, or without workload_api: the agent named by $SPIFFE_ENDPOINT_SOCKET, as the
  // contract's default (`workload_api: env`) and as go-spiffe and ghostunnel find it.
  if (!n.IsDefined() || n.IsNull() || (n.IsMap() && !n["workload_api"].IsDefined())) {
    s.workload_api = "env";
    resolve_workload_api(r, n, path, s.workload_api, false, s);
    if (!n.IsMap()) return;
  }
  if (!r.map(n, path, {"workload_api", "trust_domains"})) return;
  with(n, "workload_api", [&](auto v) {
    if (r.str(v, path + ".workload_api", s.workload_api))
      resolve_workload_api(r, v, path, s.workload_api, true, s);
  });
  with(n, "trust_domains", [&](auto v) {
    if (!r.strings(v, path + ".trust_domains", s.trust_domains)) return;
    for (std::size_t i = 0; i < s.trust_domains.size(); ++i)
      if (std::string written = s.trust_domains[i]; !trust_domain_name(s.trust_domains[i]))
        r.error(v.IsSequence() ? v[i] : v,
                path + ".trust_domains: '" + written +
                    "' is not a trust domain name (lower-case letters, digits, '.', '-', '_', "
                    "as in spiffe://NAME/...)");
  });
}

}  // namespace

void parse_tls(reader& r, const YAML::Node& n, const std::string& path, tls_options& t) {
  t.where = r.at(n);
  r.map(n, path,
        {"cert", "key", "key_password_file", "key_pin_file", "pkcs12", "pkcs12_password_file",
         "min_version", "max_version", "cipher_suites", "ciphers", "curves", "alpn",
         "session_resumption", "certificates", "strict_sni", "spiffe"});
  parse_key_source(r, n, path, t);
  auto version = [&](const char* key, std::string& out) {
    with(n, key, [&](auto v) {
      std::string s;
      if (r.str(v, path + "." + key, s)) {
        if (s == "1.2" || s == "1.3")
          out = s;
        else
          r.error(v, path + "." + key + ": unsupported TLS version '" + s +
                         "': expected \"1.2\" or \"1.3\"");
      }
    });
  };
  version("min_version", t.min_version);
  version("max_version", t.max_version);
  check_tls_versions(r, path, t);
  with(n, "cipher_suites", [&](auto v) { r.str(v, path + ".cipher_suites", t.cipher_suites); });
  with(n, "ciphers", [&](auto v) {
    t.ciphers_where = r.at(v);
    r.str(v, path + ".ciphers", t.ciphers);
  });
  with(n, "curves", [&](auto v) { r.str(v, path + ".curves", t.curves); });
  with(n, "alpn", [&](auto v) {
    if (!r.strings(v, path + ".alpn", t.alpn)) return;
    for (const auto& p : t.alpn)
      if (p.empty() || p.size() > 255)
        r.error(v, path + ".alpn: protocol names must be 1 to 255 bytes");
  });
  with(n, "session_resumption",
       [&](auto v) { r.boolean(v, path + ".session_resumption", t.session_resumption); });
  with(n, "strict_sni", [&](auto v) { r.boolean(v, path + ".strict_sni", t.strict_sni); });
  with(n, "certificates", [&](auto v) { parse_certificates(r, v, path + ".certificates", t); });
  with(n, "spiffe", [&](auto v) { parse_spiffe(r, v, path + ".spiffe", t.spiffe); });
}

}  // namespace mtlsd::config
