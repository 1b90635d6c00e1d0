#pragma once
// The validated configuration as plain structs, with the defaults of the README's configuration
// reference. Only src/config knows YAML (load.hpp reads a file into these); everything else
// builds runtime objects from them. A new field is also parsed in src/config/parse_*.cpp and
// printed by src/config/print.cpp (`mtlsd check --print`).
#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mtlsd/config/address.hpp"
#include "mtlsd/config/cidr.hpp"
#include "mtlsd/config/diagnostic.hpp"
#include "mtlsd/config/duration.hpp"
#include "mtlsd/log/line_format.hpp"

namespace mtlsd::config {

using namespace std::chrono_literals;

// A file named by the configuration, remembered with where it was named so that a later failure
// to load it (at check, start or reload) can point at the line.
struct file_ref {
  std::string path;  // absolute, or relative to the configuration file's directory
  source_location where;
  bool empty() const { return path.empty(); }
};

// The identity matchers: one list per certificate field; a list matches a peer when ANY of its
// entries does.
struct identity_matchers {
  std::vector<std::string> spiffe_ids;            // exact, or "spiffe://td/path/*" prefix
  std::vector<std::string> uri_sans;              // exact
  std::vector<std::string> dns_sans;              // exact or "*.suffix" (one label)
  std::vector<std::string> common_names;          // exact
  std::vector<std::string> organizational_units;  // exact
  std::vector<std::string> sha256_fingerprints;   // hex, colons optional, any case
  std::vector<std::string> email_sans;  // rfc822Name SANs: exact (domain part case-insensitive)
  bool empty() const {
    return spiffe_ids.empty() && uri_sans.empty() && dns_sans.empty() && common_names.empty() &&
           organizational_units.empty() && sha256_fingerprints.empty() && email_sans.empty();
  }
};

// What one rule (or its `not:`) tests: the identity matchers plus the connection's.
struct rule_matchers : identity_matchers {
  std::vector<cidr> source_cidrs;  // the peer's address (client_auth only)
  // Server mode: the SNI the client sent; client mode: the name mtlsd sends. Lower-case, exact
  // or "*.suffix" (one label). No SNI matches no entry.
  std::vector<std::string> sni;
  bool empty() const { return identity_matchers::empty() && source_cidrs.empty() && sni.empty(); }
};

// allow.rules[i]: matches when EVERY matcher in `match` matches and NO matcher in `exclude`
// does.
struct allow_rule {
  rule_matchers match;
  rule_matchers exclude;  // `not:`
  source_location where;  // the list item
};

// `allow`: empty admits every certificate that chains to the trust store. Otherwise a peer is
// admitted when any non-empty flat list matches (each acts as a one-matcher rule) or any rule
// does.
struct allow_list : identity_matchers {
  std::vector<allow_rule> rules;
  bool empty() const { return identity_matchers::empty() && rules.empty(); }
  // Whether a rule (or its `not:`) looks at the SNI: then the name is part of what admitted a
  // client, and HTTP mode holds every request on the connection to it (421 otherwise).
  bool judges_sni() const {
    return std::any_of(rules.begin(), rules.end(), [](const allow_rule& r) {
      return !r.match.sni.empty() || !r.exclude.sni.empty();
    });
  }
};

// Where a certificate and its key come from: cert + key (with the key's secret), or pkcs12.
// The same six keys in `tls:` and in each tls.certificates entry.
struct key_source {
  file_ref cert;
  file_ref key;  // a file, or an RFC 7512 "pkcs11:" URI kept verbatim (see pkcs11_uri.hpp)
  file_ref key_password_file;
  file_ref key_pin_file;  // the PIN of a pkcs11: key
  file_ref pkcs12;
  file_ref pkcs12_password_file;
  const file_ref& cert_ref() const { return pkcs12.empty() ? cert : pkcs12; }
  // All six, in the order above (for walking every file the configuration names).
  std::array<const file_ref*, 6> files() const {
    return {&cert, &key, &key_password_file, &key_pin_file, &pkcs12, &pkcs12_password_file};
  }
};

// One entry of tls.certificates: a certificate (cert + key, or pkcs12) and the server names it
// answers for. Several entries let one listener serve several names, and RSA and ECDSA clients.
struct certificate_entry : key_source {
  // Lower-case, exact ("api.example.org") or "*.suffix" (one label). Empty = a default entry,
  // served when the client sends no SNI or one that no entry names.
  std::vector<std::string> server_names;
  source_location where;  // the list item
};

// tls.spiffe: our certificate and key (an X.509-SVID) and the CAs we trust (the trust bundles)
// come from the SPIFFE Workload API instead of files, streamed and rotated by the agent.
struct spiffe_options {
  bool enabled = false;      // the `spiffe:` block is present
  std::string workload_api;  // as written: "unix:/path" or "env"
  // The agent's socket, absolute. For "env", read from $SPIFFE_ENDPOINT_SOCKET when the
  // configuration is loaded.
  std::string socket_path;
  // Federated trust domains whose bundles are trusted besides our own, as bare names
  // ("example.org"); [] = our own trust domain only.
  std::vector<std::string> trust_domains;
  source_location where;  // the `spiffe:` block
};

// tls: our certificate and key (key_source, unless `certificates` or `spiffe` replace them) and
// the protocol settings.
struct tls_options : key_source {
  std::string min_version = "1.2";
  std::string max_version = "1.3";
  std::string cipher_suites;  // TLS 1.3; "" = secure defaults
  std::string ciphers;        // TLS 1.2; "" = ECDHE + AEAD only
  std::string curves;         // "" = X25519:P-256:P-384
  std::vector<std::string> alpn;
  bool session_resumption = true;
  // Alternative to cert/key/pkcs12 (server mode): several certificates, chosen per handshake.
  std::vector<certificate_entry> certificates;
  source_location certificates_where;
  // Server mode: refuse an SNI that no certificates entry names (unrecognized_name alert).
  bool strict_sni = false;
  spiffe_options spiffe;          // alternative to cert/key/pkcs12/certificates
  source_location where;          // the `tls:` block itself
  source_location ciphers_where;  // tls.ciphers, when given
};

enum class client_auth_mode { require, optional, none };

struct client_auth_options {
  client_auth_mode mode = client_auth_mode::require;
  std::vector<file_ref> ca;
  int verify_depth = 4;
  allow_list allow;
  source_location where;
};

struct server_auth_options {
  std::vector<file_ref> ca;  // empty = system trust store
  std::string server_name;   // "" = host of `upstream`
  int verify_depth = 4;      // intermediates allowed between the remote's leaf and an anchor
  allow_list allow;
  // Turning verification of the remote off must be explicit and is logged loudly at start.
  bool insecure_skip_verify = false;
};

enum class crl_scope { leaf, chain };
enum class ocsp_mode { off, leaf, chain };
enum class unavailable_policy { fail, allow };

struct revocation_options {
  std::vector<file_ref> crl_files;
  bool crl_distribution_points = false;
  crl_scope scope = crl_scope::chain;
  ocsp_mode ocsp = ocsp_mode::off;
  std::string ocsp_responder;
  source_location ocsp_responder_where;  // checked as a URL where it is used (net/url.hpp)
  duration ocsp_timeout = 2s;
  unavailable_policy on_unavailable = unavailable_policy::fail;
  duration crl_grace = 0s;
  bool recheck_established = true;
  bool stapling = false;
  // Client mode: refuse a remote that does not staple a usable OCSP response for its leaf.
  bool require_staple = false;
  bool enabled() const {
    return !crl_files.empty() || crl_distribution_points || ocsp != ocsp_mode::off;
  }
};

enum class proxy_protocol_mode { off, v2 };

enum class xfcc_mode { sanitize, forward_only, append_forward, sanitize_set, always_forward_only };

// http.upstream_protocol: what mtlsd speaks to the upstream. same = h2c for clients that
// negotiated h2, HTTP/1.1 for HTTP/1.1 clients.
enum class http_upstream_protocol { http1, h2c, same };

struct http_options {
  bool enabled = false;  // true when the `http:` block is present
  xfcc_mode forward_client_cert_details = xfcc_mode::sanitize_set;
  std::vector<std::string> set_current_client_cert_details = {"uri", "dns", "subject", "hash"};
  // Downstream protocols, offered by ALPN in this order (h2, http/1.1); replaces tls.alpn.
  std::vector<std::string> protocols = {"h2", "http/1.1"};
  http_upstream_protocol upstream_protocol = http_upstream_protocol::http1;
  bool x_forwarded_for = true;       // append the client's address (false: forward as received)
  bool x_forwarded_proto = true;     // set "https", dropping the client's (false: as received)
  int max_concurrent_streams = 100;  // HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (Envoy: 100)
  // HTTP/2 rapid reset: premature client resets that close a connection once they outnumber
  // its upstream's responses (proxy/h2_connection_impl.hpp); 0: no bound of mtlsd's own.
  int max_premature_resets = 200;
  // HTTP/2 clients of an HTTP/1.1 upstream: upstream connections one client connection's streams
  // hold at once (one exchange each); the other streams wait their turn (proxy/h2_h1_exchange).
  int max_upstream_connections_per_client = 8;
  duration stream_idle_timeout = 5min;  // an HTTP/2 stream with no frames for this long is reset
  // An HTTP/1.1 request head, or an HTTP/2 header block, must be whole this long after its
  // first byte (nginx's client_header_timeout); 0 = no limit.
  duration request_headers_timeout = 60s;
  bool offers(std::string_view protocol) const {
    return std::find(protocols.begin(), protocols.end(), protocol) != protocols.end();
  }
};

struct timeout_options {
  duration handshake = 10s;
  duration connect = 5s;
  duration idle = 5min;
  duration half_close = 30s;  // after one side half-closed, the other has this long; 0s = no limit
  // An admitted connection older than this is closed gracefully (half-close towards both sides,
  // then half_close); 0s = no limit.
  duration max_connection_age = 0s;
};

// accept_proxy_protocol: every connection must begin with a PROXY header (v1 text or v2
// binary) from a trusted balancer; the address in it is the client's from then on.
struct proxy_accept_options {
  bool enabled = false;  // true when the block is present
  bool v1 = true;
  bool v2 = true;
  std::vector<cidr> trusted_sources;  // [] = any peer may send the header
};

// Admission limits; 0 = unlimited (max_pending_handshakes: 0 = the default below).
struct limit_options {
  int connections_per_second = 0;  // token bucket per listener, shared by all workers
  int burst = 0;                   // 0 = connections_per_second (one second's worth)
  int max_connections_per_source = 0;
  int max_connections_per_identity = 0;
  int max_pending_handshakes = 0;
  // Connections not yet past the handshake: unless set, half of max_connections, so that
  // silent sockets can take at most half the places of authenticated clients — but at least 64
  // (or max_connections, when smaller), so that a small listener's clients arriving together
  // are not refused while the previous ones finish their handshakes.
  int pending_cap(int max_connections) const {
    if (max_pending_handshakes > 0) return max_pending_handshakes;
    return std::min(max_connections, std::max(64, max_connections / 2));
  }
  int bucket_size() const { return burst > 0 ? burst : connections_per_second; }
};

enum class listener_mode { server, client };

enum class upstream_check_type { tcp, http };

// listeners[].upstream_check: a periodic probe of the upstream, reported in /readyz and
// mtlsd_upstream_up. Off unless the block is present.
struct upstream_check_options {
  bool enabled = false;  // true when the `upstream_check:` block is present
  upstream_check_type type = upstream_check_type::tcp;
  std::string path = "/healthz";  // type http: the GET target; 2xx and 3xx mean up
  duration interval = 5s;
  duration timeout = 1s;
  bool operator==(const upstream_check_options&) const = default;
};

struct listener {
  std::string name;
  listener_mode mode = listener_mode::server;
  address listen;
  // The permission bits a unix `listen` socket gets when bound (chmod before listen(2)), e.g.
  // 0660; none: what the process umask leaves of 0777. Never set for a TCP listener.
  std::optional<unsigned> unix_socket_mode;
  address upstream;
  int max_connections = 10000;
  std::vector<cidr> allowed_sources;  // [] = any; checked before any TLS work
  proxy_accept_options accept_proxy_protocol;
  limit_options limits;
  timeout_options timeouts;
  tls_options tls;
  client_auth_options client_auth;
  server_auth_options server_auth;
  revocation_options revocation;
  proxy_protocol_mode proxy_protocol = proxy_protocol_mode::off;
  http_options http;
  upstream_check_options upstream_check;
  source_location where;  // the list item
};

using log_format = log::line_format;  // defined by the log, which includes no config

struct log_options {
  std::string level = "info";
  log_format format = log_format::text;
  bool access_log = true;
  // "" = stderr (with the events), "stdout", or a file (absolute after loading): appended,
  // created 0640, reopened on SIGUSR1.
  std::string access_log_path;
};

struct admin_options {
  std::optional<address> listen = address{address::kind::tcp, "127.0.0.1", 9901, {}};
};

struct reload_options {
  bool watch = true;
  duration poll_interval = 0s;
};

struct shutdown_options {
  duration drain_timeout = 30s;
};

struct dns_options {
  // DNS servers for upstream and OCSP/CRL host names, each an IP literal with a port.
  // Empty = the system resolver configuration (/etc/resolv.conf). /etc/hosts applies either way.
  std::vector<address> servers;
};

struct configuration {
  std::string file;  // absolute path of the YAML this came from
  admin_options admin;
  log_options log;
  unsigned workers = 0;  // 0 = number of CPU cores
  reload_options reload;
  shutdown_options shutdown;
  dns_options dns;
  // After start-up: no_new_privs, no capabilities, a seccomp filter and (where the kernel has it)
  // Landlock. Changing it needs a restart.
  bool sandbox = true;
  std::vector<listener> listeners;

  const listener* find_listener(std::string_view name) const;
  // Every file the configuration names (for the reload watcher and `check`).
  std::vector<file_ref> referenced_files() const;
};

}  // namespace mtlsd::config
