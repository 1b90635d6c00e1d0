// config::load_text / load_file: defaults, every class of error with its FILE:LINE:COL, path
// resolution and normalisation. Each YAML text starts on line 1 so that the line numbers in the
// expectations can be read off the literal.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <net/if.h>

#include <filesystem>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/config/pkcs11_uri.hpp"
#include "test_pki.hpp"

namespace mtlsd::config {
namespace {

using ::testing::ElementsAre;
using namespace std::chrono_literals;

const std::string kFile = "/etc/mtlsd/mtlsd.yaml";

// "FILE:LINE:COL: message", as `mtlsd check` prints it.
std::string at(int line, int col, const std::string& message) {
  return kFile + ":" + std::to_string(line) + ":" + std::to_string(col) + ": " + message;
}

std::vector<std::string> problems_of(const std::string& yaml) {
  load_result r = load_text(yaml, kFile);
  std::vector<std::string> out;
  for (const auto& p : r.problems)
    out.push_back(p.str());
  if (has_errors(r.problems)) {
    EXPECT_FALSE(r.config.has_value()) << "errors but a config";
  }
  return out;
}

configuration load_ok(const std::string& yaml) {
  load_result r = load_text(yaml, kFile);
  for (const auto& p : r.problems)
    ADD_FAILURE() << "unexpected problem: " << p.str();
  if (!r.config) {
    ADD_FAILURE() << "no configuration";
    return {};
  }
  return *r.config;
}

// The smallest valid server-mode configuration; lines 1-9.
const std::string kMinimal = R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
    client_auth:
      ca: [ca.crt]
)";

// The same with the tls block last, so that tests can append keys to it; lines 1-9.
const std::string kMinimalTlsLast = R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    client_auth:
      ca: [ca.crt]
    tls:
      cert: tls.crt
      key: tls.key
)";

// --- defaults -------------------------------------------------------------------------------

TEST(ConfigDefaults, TopLevelMatchTheContract) {
  configuration c = load_ok(kMinimal);
  EXPECT_EQ(c.file, kFile);
  ASSERT_TRUE(c.admin.listen.has_value());
  EXPECT_EQ(c.admin.listen->str(), "127.0.0.1:9901");
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, log_format::text);
  EXPECT_TRUE(c.log.access_log);
  EXPECT_EQ(c.workers, 0u);
  EXPECT_TRUE(c.sandbox);
  EXPECT_TRUE(c.reload.watch);
  EXPECT_EQ(c.reload.poll_interval, 0s);
  EXPECT_EQ(c.shutdown.drain_timeout, 30s);
  EXPECT_TRUE(c.dns.servers.empty());  // the system resolver configuration
  ASSERT_EQ(c.listeners.size(), 1u);
}

TEST(ConfigDefaults, ListenerMatchTheContract) {
  configuration c = load_ok(kMinimal);
  ASSERT_EQ(c.listeners.size(), 1u);
  const listener& l = c.listeners[0];
  EXPECT_EQ(l.name, "inbound");
  EXPECT_EQ(l.mode, listener_mode::server);
  EXPECT_EQ(l.listen.str(), "0.0.0.0:8443");
  EXPECT_EQ(l.upstream.str(), "127.0.0.1:8080");
  EXPECT_EQ(l.max_connections, 10000);
  EXPECT_EQ(l.timeouts.handshake, 10s);
  EXPECT_EQ(l.timeouts.connect, 5s);
  EXPECT_EQ(l.timeouts.idle, 5min);
  EXPECT_EQ(l.timeouts.half_close, 30s);

  EXPECT_EQ(l.tls.cert.path, "/etc/mtlsd/tls.crt");
  EXPECT_EQ(l.tls.key.path, "/etc/mtlsd/tls.key");
  EXPECT_TRUE(l.tls.key_password_file.empty());
  EXPECT_TRUE(l.tls.pkcs12.empty());
  EXPECT_TRUE(l.tls.pkcs12_password_file.empty());
  EXPECT_EQ(l.tls.min_version, "1.2");
  EXPECT_EQ(l.tls.max_version, "1.3");
  EXPECT_EQ(l.tls.cipher_suites, "");
  EXPECT_EQ(l.tls.ciphers, "");
  EXPECT_EQ(l.tls.curves, "");
  EXPECT_TRUE(l.tls.alpn.empty());
  EXPECT_TRUE(l.tls.session_resumption);

  EXPECT_EQ(l.client_auth.mode, client_auth_mode::require);
  ASSERT_EQ(l.client_auth.ca.size(), 1u);
  EXPECT_EQ(l.client_auth.ca[0].path, "/etc/mtlsd/ca.crt");
  EXPECT_EQ(l.client_auth.verify_depth, 4);
  EXPECT_TRUE(l.client_auth.allow.empty());

  EXPECT_TRUE(l.server_auth.ca.empty());
  EXPECT_EQ(l.server_auth.server_name, "");
  EXPECT_TRUE(l.server_auth.allow.empty());
  EXPECT_FALSE(l.server_auth.insecure_skip_verify);

  const revocation_options& rv = l.revocation;
  EXPECT_TRUE(rv.crl_files.empty());
  EXPECT_FALSE(rv.crl_distribution_points);
  EXPECT_EQ(rv.scope, crl_scope::chain);
  EXPECT_EQ(rv.ocsp, ocsp_mode::off);
  EXPECT_EQ(rv.ocsp_responder, "");
  EXPECT_EQ(rv.ocsp_timeout, 2s);
  EXPECT_EQ(rv.on_unavailable, unavailable_policy::fail);
  EXPECT_EQ(rv.crl_grace, 0s);
  EXPECT_TRUE(rv.recheck_established);
  EXPECT_FALSE(rv.stapling);
  EXPECT_FALSE(rv.enabled());

  EXPECT_EQ(l.proxy_protocol, proxy_protocol_mode::off);
  EXPECT_FALSE(l.http.enabled);
  EXPECT_EQ(l.http.forward_client_cert_details, xfcc_mode::sanitize_set);
  EXPECT_THAT(l.http.set_current_client_cert_details, ElementsAre("uri", "dns", "subject", "hash"));
  EXPECT_EQ(l.http.request_headers_timeout, std::chrono::seconds(60));  // nginx's default
}

TEST(ConfigDefaults, FileRefsRememberWhereTheyWereNamed) {
  configuration c = load_ok(kMinimal);
  const listener& l = c.listeners.at(0);
  EXPECT_EQ(l.tls.cert.where.str(), kFile + ":6:13");
  EXPECT_EQ(l.tls.key.where.str(), kFile + ":7:12");
  EXPECT_EQ(l.client_auth.ca.at(0).where.str(), kFile + ":9:12");
  EXPECT_EQ(l.where.str(), kFile + ":2:5");
  EXPECT_EQ(l.tls.where.str(), kFile + ":6:7");
  EXPECT_EQ(l.client_auth.where.str(), kFile + ":9:7");
}

TEST(ConfigDefaults, EmptyHttpBlockEnablesHttpWithDefaults) {
  configuration c = load_ok(kMinimal + "    http: {}\n");
  const listener& l = c.listeners.at(0);
  EXPECT_TRUE(l.http.enabled);
  EXPECT_EQ(l.http.forward_client_cert_details, xfcc_mode::sanitize_set);
  EXPECT_THAT(l.http.set_current_client_cert_details, ElementsAre("uri", "dns", "subject", "hash"));
}

TEST(ConfigParse, EveryKeyWithNonDefaultValues) {
  configuration c = load_ok(R"(admin:
  address: "[::1]:9902"
log:
  level: debug
  format: json
  access_log: false
workers: 3
sandbox: false
reload:
  watch: false
  poll_interval: 30s
shutdown:
  drain_timeout: 1m30s
listeners:
  - name: in.bound-1_a
    mode: server
    listen: "[::]:8443"
    upstream: unix:/run/app.sock
    max_connections: 500
    timeouts:
      handshake: 2s
      connect: 250ms
      idle: 1h
      half_close: 3s
    tls:
      pkcs12: /secrets/server.p12
      pkcs12_password_file: p12.pass
      min_version: "1.3"
      max_version: "1.3"
      cipher_suites: TLS_AES_256_GCM_SHA384
      ciphers: ECDHE-ECDSA-AES256-GCM-SHA384
      curves: X25519
      alpn: [h2, http/1.1]
      session_resumption: false
    client_auth:
      mode: optional
      ca: [a.crt, /abs/b.crt]
      verify_depth: 2
      allow:
        spiffe_ids: [spiffe://example.org/ns/*, spiffe://example.org/exact]
        uri_sans: [https://x.example.org/id]
        dns_sans: ["*.svc.example.org", api.example.org]
        common_names: [alice]
        organizational_units: [payments]
        sha256_fingerprints: ["AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"]
    revocation:
      crl_files: [crl/root.crl]
      crl_distribution_points: true
      crl_scope: leaf
      ocsp: chain
      ocsp_responder: http://ocsp.example.org:8080
      ocsp_timeout: 500ms
      on_unavailable: allow
      crl_grace: 1h
      recheck_established: false
      stapling: true
    proxy_protocol: v2
    http:
      forward_client_cert_details: append_forward
      set_current_client_cert_details: [cert, chain]
  - name: outbound
    mode: client
    listen: 127.0.0.1:15001
    upstream: backend.example.org:443
    tls:
      cert: client.crt
      key: client.key
      key_password_file: client.pass
    server_auth:
      ca: server-ca.crt
      server_name: api.example.org
      insecure_skip_verify: false
      allow:
        dns_sans: [api.example.org]
)");
  ASSERT_TRUE(c.admin.listen.has_value());
  EXPECT_EQ(*c.admin.listen, (address{address::kind::tcp, "::1", 9902, {}}));
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.format, log_format::json);
  EXPECT_FALSE(c.log.access_log);
  EXPECT_EQ(c.workers, 3u);
  EXPECT_FALSE(c.sandbox);
  EXPECT_FALSE(c.reload.watch);
  EXPECT_EQ(c.reload.poll_interval, 30s);
  EXPECT_EQ(c.shutdown.drain_timeout, 90s);
  ASSERT_EQ(c.listeners.size(), 2u);

  const listener& s = c.listeners[0];
  EXPECT_EQ(s.name, "in.bound-1_a");
  EXPECT_EQ(s.listen, (address{address::kind::tcp, "::", 8443, {}}));
  EXPECT_EQ(s.upstream, (address{address::kind::unix_socket, {}, 0, "/run/app.sock"}));
  EXPECT_EQ(s.max_connections, 500);
  EXPECT_EQ(s.timeouts.handshake, 2s);
  EXPECT_EQ(s.timeouts.connect, 250ms);
  EXPECT_EQ(s.timeouts.idle, 1h);
  EXPECT_EQ(s.timeouts.half_close, 3s);
  EXPECT_EQ(s.tls.pkcs12.path, "/secrets/server.p12");
  EXPECT_EQ(s.tls.pkcs12_password_file.path, "/etc/mtlsd/p12.pass");
  EXPECT_EQ(s.tls.min_version, "1.3");
  EXPECT_EQ(s.tls.max_version, "1.3");
  EXPECT_EQ(s.tls.cipher_suites, "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(s.tls.ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384");
  EXPECT_EQ(s.tls.curves, "X25519");
  EXPECT_THAT(s.tls.alpn, ElementsAre("h2", "http/1.1"));
  EXPECT_FALSE(s.tls.session_resumption);
  EXPECT_EQ(s.client_auth.mode, client_auth_mode::optional);
  ASSERT_EQ(s.client_auth.ca.size(), 2u);
  EXPECT_EQ(s.client_auth.ca[0].path, "/etc/mtlsd/a.crt");
  EXPECT_EQ(s.client_auth.ca[1].path, "/abs/b.crt");
  EXPECT_EQ(s.client_auth.verify_depth, 2);
  const allow_list& a = s.client_auth.allow;
  EXPECT_THAT(a.spiffe_ids, ElementsAre("spiffe://example.org/ns/*", "spiffe://example.org/exact"));
  EXPECT_THAT(a.uri_sans, ElementsAre("https://x.example.org/id"));
  EXPECT_THAT(a.dns_sans, ElementsAre("*.svc.example.org", "api.example.org"));
  EXPECT_THAT(a.common_names, ElementsAre("alice"));
  EXPECT_THAT(a.organizational_units, ElementsAre("payments"));
  EXPECT_THAT(a.sha256_fingerprints,
              ElementsAre("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"));
  const revocation_options& rv = s.revocation;
  ASSERT_EQ(rv.crl_files.size(), 1u);
  EXPECT_EQ(rv.crl_files[0].path, "/etc/mtlsd/crl/root.crl");
  EXPECT_TRUE(rv.crl_distribution_points);
  EXPECT_EQ(rv.scope, crl_scope::leaf);
  EXPECT_EQ(rv.ocsp, ocsp_mode::chain);
  EXPECT_EQ(rv.ocsp_responder, "http://ocsp.example.org:8080");
  EXPECT_EQ(rv.ocsp_timeout, 500ms);
  EXPECT_EQ(rv.on_unavailable, unavailable_policy::allow);
  EXPECT_EQ(rv.crl_grace, 1h);
  EXPECT_FALSE(rv.recheck_established);
  EXPECT_TRUE(rv.stapling);
  EXPECT_TRUE(rv.enabled());
  EXPECT_EQ(s.proxy_protocol, proxy_protocol_mode::v2);
  EXPECT_TRUE(s.http.enabled);
  EXPECT_EQ(s.http.forward_client_cert_details, xfcc_mode::append_forward);
  EXPECT_THAT(s.http.set_current_client_cert_details, ElementsAre("cert", "chain"));

  const listener& o = c.listeners[1];
  EXPECT_EQ(o.mode, listener_mode::client);
  EXPECT_EQ(o.upstream, (address{address::kind::tcp, "backend.example.org", 443, {}}));
  EXPECT_EQ(o.tls.cert.path, "/etc/mtlsd/client.crt");
  EXPECT_EQ(o.tls.key_password_file.path, "/etc/mtlsd/client.pass");
  ASSERT_EQ(o.server_auth.ca.size(), 1u);  // a single string is accepted for a list
  EXPECT_EQ(o.server_auth.ca[0].path, "/etc/mtlsd/server-ca.crt");
  EXPECT_EQ(o.server_auth.server_name, "api.example.org");
  // (true together with an allow list is an error: InsecureSkipVerifyRefusesAnAllowList)
  EXPECT_FALSE(o.server_auth.insecure_skip_verify);
  EXPECT_THAT(o.server_auth.allow.dns_sans, ElementsAre("api.example.org"));

  EXPECT_EQ(c.find_listener("outbound"), &c.listeners[1]);
  EXPECT_EQ(c.find_listener("nope"), nullptr);
  std::vector<std::string> files;
  for (const auto& f : c.referenced_files())
    files.push_back(f.path);
  EXPECT_THAT(files, ElementsAre("/secrets/server.p12", "/etc/mtlsd/p12.pass", "/etc/mtlsd/a.crt",
                                 "/abs/b.crt", "/etc/mtlsd/crl/root.crl", "/etc/mtlsd/client.crt",
                                 "/etc/mtlsd/client.key", "/etc/mtlsd/client.pass",
                                 "/etc/mtlsd/server-ca.crt"));
}

TEST(ConfigParse, BooleansAcceptYamlSpellings) {
  configuration c = load_ok("log:\n  access_log: off\nreload:\n  watch: No\n" + kMinimal);
  EXPECT_FALSE(c.log.access_log);
  EXPECT_FALSE(c.reload.watch);
  c = load_ok("log:\n  access_log: YES\n" + kMinimal);
  EXPECT_TRUE(c.log.access_log);
}

TEST(ConfigParse, AccessLogPath) {
  EXPECT_EQ(load_ok(kMinimal).log.access_log_path, "");
  EXPECT_EQ(load_ok("log:\n  access_log_path: \"\"\n" + kMinimal).log.access_log_path, "");
  EXPECT_EQ(load_ok("log:\n  access_log_path: stderr\n" + kMinimal).log.access_log_path, "");
  EXPECT_EQ(load_ok("log:\n  access_log_path: stdout\n" + kMinimal).log.access_log_path, "stdout");
  // The streams' /dev names are the streams, not files in /dev (the sandbox would let mtlsd
  // write there).
  for (const char* out : {"/dev/stdout", "/dev/fd/1"})
    EXPECT_EQ(load_ok(std::string("log:\n  access_log_path: ") + out + "\n" + kMinimal)
                  .log.access_log_path,
              "stdout");
  for (const char* err : {"/dev/stderr", "/dev/fd/2"})
    EXPECT_EQ(load_ok(std::string("log:\n  access_log_path: ") + err + "\n" + kMinimal)
                  .log.access_log_path,
              "");
  const auto dir = std::filesystem::temp_directory_path();
  configuration c =
      load_ok("log:\n  access_log_path: " + (dir / "mtlsd-access.log").string() + "\n" + kMinimal);
  EXPECT_EQ(c.log.access_log_path, (dir / "mtlsd-access.log").lexically_normal().string());
}

TEST(ConfigErrors, AccessLogPathMustBeWritable) {
  EXPECT_THAT(
      problems_of("log:\n  access_log_path: /nonexistent-mtlsd-dir/access.log\n" + kMinimal),
      ElementsAre(at(2, 20,
                     "log.access_log_path: cannot write '/nonexistent-mtlsd-dir/access.log': "
                     "the directory /nonexistent-mtlsd-dir does not exist")));
  const std::string tmp = std::filesystem::temp_directory_path().string();
  EXPECT_THAT(
      problems_of("log:\n  access_log_path: " + tmp + "\n" + kMinimal),
      ElementsAre(at(2, 20, "log.access_log_path: cannot write '" + tmp + "': it is a directory")));
  // Relative paths are relative to the configuration file's directory, like every path.
  EXPECT_THAT(problems_of("log:\n  access_log_path: logs/access.log\n" + kMinimal),
              ElementsAre(at(2, 20,
                             "log.access_log_path: cannot write '/etc/mtlsd/logs/access.log': "
                             "the directory /etc/mtlsd/logs does not exist")));
  EXPECT_THAT(problems_of("log:\n  access_log_path: [a]\n" + kMinimal),
              ElementsAre(at(2, 20, "log.access_log_path: expected a string, got a list")));
}

TEST(ConfigParse, ClientModeNeedsNoCertificate) {
  configuration c = load_ok(R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:15001
    upstream: 10.0.0.7:8443
)");
  const listener& l = c.listeners.at(0);
  EXPECT_EQ(l.mode, listener_mode::client);
  EXPECT_TRUE(l.tls.cert.empty());
  EXPECT_TRUE(l.server_auth.ca.empty());  // system trust store
}

TEST(ConfigParse, ClientAuthNoneNeedsNoCa) {
  configuration c = load_ok(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {mode: none}
)");
  EXPECT_EQ(c.listeners.at(0).client_auth.mode, client_auth_mode::none);
}

// Review: mode: none with an allow list loaded, and admitted every client (no certificate is
// asked for, so no rule is looked at), source_cidrs rules included.
TEST(ConfigErrors, ClientAuthNoneRefusesAnAllowListAndSaysWhatItIgnores) {
  EXPECT_THAT(
      problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key}
    client_auth:
      mode: none
      ca: [ca.crt]
      allow:
        rules: [{source_cidrs: [10.0.0.0/8]}]
)"),
      ElementsAre(at(10, 9,
                     "listeners[0].client_auth.allow: with mode: none no client "
                     "certificate is asked for and every client is admitted; remove "
                     "allow, or use mode: require"),
                  at(8, 11, "warning: listeners[0].client_auth.ca is not used with mode: none")));
}

// --- paths and normalisation ----------------------------------------------------------------

TEST(ConfigPaths, RelativePathsResolveAgainstTheConfigDirectory) {
  configuration c = load_ok(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: certs/./tls.crt
      key: ../pki/tls.key
      key_password_file: /run/secrets/key.pass
    client_auth:
      ca: [ca.crt, ../../root/ca.crt]
    revocation:
      crl_files: crl.pem
)");
  const listener& l = c.listeners.at(0);
  EXPECT_EQ(l.tls.cert.path, "/etc/mtlsd/certs/tls.crt");
  EXPECT_EQ(l.tls.key.path, "/etc/pki/tls.key");
  EXPECT_EQ(l.tls.key_password_file.path, "/run/secrets/key.pass");
  ASSERT_EQ(l.client_auth.ca.size(), 2u);
  EXPECT_EQ(l.client_auth.ca[0].path, "/etc/mtlsd/ca.crt");
  EXPECT_EQ(l.client_auth.ca[1].path, "/root/ca.crt");
  ASSERT_EQ(l.revocation.crl_files.size(), 1u);
  EXPECT_EQ(l.revocation.crl_files[0].path, "/etc/mtlsd/crl.pem");
}

TEST(ConfigPaths, LoadFileResolvesAgainstTheFilesOwnDirectory) {
  test::pki_dir dir;
  const std::string path = dir.write("conf/mtlsd.yaml", kMinimal);
  // Also through a relative spelling of the same file: the result must be absolute.
  const std::string relative =
      std::filesystem::path(path).lexically_relative(std::filesystem::current_path()).string();
  for (const std::string& p : {path, relative}) {
    load_result r = load_file(p);
    ASSERT_TRUE(r.problems.empty()) << r.problems.front().str();
    ASSERT_TRUE(r.config.has_value());
    const std::string conf_dir = (dir.path() / "conf").string();
    EXPECT_EQ(r.config->file, path);
    EXPECT_EQ(r.config->listeners.at(0).tls.cert.path, conf_dir + "/tls.crt");
    EXPECT_EQ(r.config->listeners.at(0).tls.cert.where.str(), path + ":6:13");
    EXPECT_EQ(r.config->listeners.at(0).client_auth.ca.at(0).path, conf_dir + "/ca.crt");
  }
}

// Nothing is verified, so no identity could be matched: the allow list would be ignored.
TEST(ConfigErrors, InsecureSkipVerifyRefusesAnAllowList) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: outbound
    mode: client
    listen: 127.0.0.1:15001
    upstream: backend.example.org:443
    server_auth:
      insecure_skip_verify: true
      allow:
        dns_sans: [api.example.org]
)"),
              ElementsAre(at(7, 29,
                             "listeners[0].server_auth.insecure_skip_verify: true cannot be "
                             "combined with listeners[0].server_auth.allow (nothing is verified, "
                             "so the allow list could never be enforced)")));
  // Either alone is fine.
  load_ok(R"(listeners:
  - name: outbound
    mode: client
    listen: 127.0.0.1:15001
    upstream: backend.example.org:443
    server_auth:
      insecure_skip_verify: true
)");
}

TEST(ConfigParse, SandboxMustBeABoolean) {
  test::pki_dir dir;
  const std::string path = dir.write("bad.yaml", "sandbox: maybe\n" + kMinimal);
  load_result r = load_file(path);
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].str().rfind(path + ":1:10: sandbox: ", 0), 0u) << r.problems[0].str();
}

TEST(ConfigPaths, LoadFileErrorsNameTheAbsoluteFile) {
  test::pki_dir dir;
  const std::string path = dir.write("bad.yaml", "workers: lots\n" + kMinimal);
  load_result r = load_file(path);
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].str(), path + ":1:10: workers: expected an integer, got 'lots'");
}

TEST(ConfigPaths, MissingConfigFile) {
  test::pki_dir dir;
  const std::string path = (dir.path() / "absent.yaml").string();
  load_result r = load_file(path);
  EXPECT_FALSE(r.config.has_value());
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].str(),
            path + ": cannot read configuration file: No such file or directory");
}

TEST(ConfigNormalise, FingerprintsLoseColonsAndCase) {
  configuration c = load_ok(kMinimal + R"(      allow:
        sha256_fingerprints:
          - 01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef
          - FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210FEDCBA9876543210
)");
  EXPECT_THAT(c.listeners.at(0).client_auth.allow.sha256_fingerprints,
              ElementsAre("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                          "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"));
}

TEST(ConfigAdmin, EmptyAddressDisablesAdmin) {
  configuration c = load_ok("admin:\n  address: \"\"\n" + kMinimal);
  EXPECT_FALSE(c.admin.listen.has_value());
}

TEST(ConfigAdmin, AddressIsParsed) {
  configuration c = load_ok("admin:\n  address: 0.0.0.0:19901\n" + kMinimal);
  ASSERT_TRUE(c.admin.listen.has_value());
  EXPECT_EQ(*c.admin.listen, (address{address::kind::tcp, "0.0.0.0", 19901, {}}));
}

// Review: `check` passed a host name that `run` then refused to start with.
TEST(ConfigAdmin, HostNameIsRefusedAsRunRefusesIt) {
  EXPECT_THAT(problems_of("admin:\n  address: localhost:19931\n" + kMinimal),
              ElementsAre(at(2, 12,
                             "admin.address: 'localhost' is not an IP address: the admin address "
                             "is an IP address or a unix: path, not a host name")));
}

// Review: the check above refused an IPv6 address with a scope, which `run` accepts (and needs
// for a link-local address).
TEST(ConfigAdmin, AnIpv6AddressMayHaveAScope) {
  configuration c = load_ok("admin:\n  address: \"[fe80::1%lo]:19901\"\n" + kMinimal);
  ASSERT_TRUE(c.admin.listen.has_value());
  EXPECT_EQ(c.admin.listen->host, "fe80::1%lo");
  for (const std::string host : {"fe80::1%", "myhost%lo"})  // no scope; no IPv6 address
    EXPECT_THAT(problems_of("admin:\n  address: \"[" + host + "]:19901\"\n" + kMinimal),
                ElementsAre(at(2, 12,
                               "admin.address: '" + host +
                                   "' is not an IP address: the admin address is an IP address "
                                   "or a unix: path, not a host name")));
}

TEST(ConfigAdmin, BadAddress) {
  EXPECT_THAT(problems_of("admin:\n  address: localhost\n" + kMinimal),
              ElementsAre(at(2, 12,
                             "admin.address: invalid address 'localhost': expected HOST:PORT, "
                             "[IPV6]:PORT or unix:/path")));
}

// --- unknown keys, at every level -----------------------------------------------------------

TEST(ConfigUnknownKey, TopLevel) {
  EXPECT_THAT(problems_of("workers: 2\nlistner: []\n" + kMinimal),
              ElementsAre(at(2, 1,
                             "unknown key 'listner' in the top level (did you mean "
                             "'listeners'?)")));
}

TEST(ConfigUnknownKey, NoSuggestionWhenNothingIsClose) {
  EXPECT_THAT(problems_of("frobnicate: 1\n" + kMinimal),
              ElementsAre(at(1, 1, "unknown key 'frobnicate' in the top level")));
}

TEST(ConfigUnknownKey, Admin) {
  EXPECT_THAT(problems_of("admin:\n  adress: 127.0.0.1:1\n" + kMinimal),
              ElementsAre(at(2, 3, "unknown key 'adress' in admin (did you mean 'address'?)")));
}

TEST(ConfigUnknownKey, Log) {
  EXPECT_THAT(problems_of("log:\n  level: info\n  formt: json\n" + kMinimal),
              ElementsAre(at(3, 3, "unknown key 'formt' in log (did you mean 'format'?)")));
}

TEST(ConfigUnknownKey, ReloadAndShutdown) {
  EXPECT_THAT(problems_of("reload:\n  wacth: true\nshutdown:\n  drain_timout: 5s\n" + kMinimal),
              ElementsAre(at(2, 3, "unknown key 'wacth' in reload (did you mean 'watch'?)"),
                          at(4, 3,
                             "unknown key 'drain_timout' in shutdown (did you mean "
                             "'drain_timeout'?)")));
}

TEST(ConfigUnknownKey, Listener) {
  EXPECT_THAT(problems_of(kMinimal + "    max_connection: 5\n"),
              ElementsAre(at(10, 5,
                             "unknown key 'max_connection' in listeners[0] (did you mean "
                             "'max_connections'?)")));
}

TEST(ConfigUnknownKey, Timeouts) {
  EXPECT_THAT(problems_of(kMinimal + "    timeouts:\n      handshak: 5s\n"),
              ElementsAre(at(11, 7,
                             "unknown key 'handshak' in listeners[0].timeouts (did you mean "
                             "'handshake'?)")));
}

TEST(ConfigUnknownKey, Tls) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
      ciphers_suites: TLS_AES_128_GCM_SHA256
      certificate_file: x
    client_auth:
      ca: [ca.crt]
)"),
              ElementsAre(at(8, 7,
                             "unknown key 'ciphers_suites' in listeners[0].tls (did you mean "
                             "'cipher_suites'?)"),
                          at(9, 7, "unknown key 'certificate_file' in listeners[0].tls")));
}

TEST(ConfigUnknownKey, ClientAuthAndAllow) {
  EXPECT_THAT(problems_of(kMinimal + R"(      verify_dept: 3
      allow:
        spiffe_id: [spiffe://example.org/a]
)"),
              ElementsAre(at(10, 7,
                             "unknown key 'verify_dept' in listeners[0].client_auth (did you "
                             "mean 'verify_depth'?)"),
                          at(12, 9,
                             "unknown key 'spiffe_id' in listeners[0].client_auth.allow (did "
                             "you mean 'spiffe_ids'?)")));
}

TEST(ConfigUnknownKey, ServerAuthAndItsAllow) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:15001
    upstream: 10.0.0.7:8443
    server_auth:
      server_nme: api
      allow:
        dns_san: [api.example.org]
)"),
              ElementsAre(at(7, 7,
                             "unknown key 'server_nme' in listeners[0].server_auth (did you "
                             "mean 'server_name'?)"),
                          at(9, 9,
                             "unknown key 'dns_san' in listeners[0].server_auth.allow (did you "
                             "mean 'dns_sans'?)")));
}

TEST(ConfigUnknownKey, RevocationAndHttp) {
  EXPECT_THAT(problems_of(kMinimal + R"(    revocation:
      crl_file: [x.crl]
    http:
      forward_client_cert_detail: sanitize
)"),
              ElementsAre(at(11, 7,
                             "unknown key 'crl_file' in listeners[0].revocation (did you mean "
                             "'crl_files'?)"),
                          at(13, 7,
                             "unknown key 'forward_client_cert_detail' in listeners[0].http "
                             "(did you mean 'forward_client_cert_details'?)")));
}

TEST(ConfigUnknownKey, SecondListenerIsNamedByIndex) {
  EXPECT_THAT(problems_of(kMinimal + R"(  - name: second
    listen: 0.0.0.0:9443
    upstream: 127.0.0.1:9080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
    upstraem: x
)"),
              ElementsAre(at(15, 5,
                             "unknown key 'upstraem' in listeners[1] (did you mean "
                             "'upstream'?)")));
}

// --- wrong types ----------------------------------------------------------------------------

TEST(ConfigWrongType, ListWhereMappingExpected) {
  EXPECT_THAT(problems_of("log: [a, b]\n" + kMinimal),
              ElementsAre(at(1, 6, "log: expected a mapping of keys, got a list")));
}

TEST(ConfigWrongType, ScalarWhereMappingExpected) {
  EXPECT_THAT(problems_of("admin: 127.0.0.1:9901\n" + kMinimal),
              ElementsAre(at(1, 8, "admin: expected a mapping of keys, got '127.0.0.1:9901'")));
  EXPECT_THAT(
      problems_of(kMinimal + "    timeouts: 5s\n"),
      ElementsAre(at(10, 15, "listeners[0].timeouts: expected a mapping of keys, got '5s'")));
}

TEST(ConfigWrongType, MappingWhereScalarExpected) {
  EXPECT_THAT(problems_of("workers: {count: 2}\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: expected an integer, got a mapping")));
  EXPECT_THAT(problems_of(kMinimal + "    mode: {server: true}\n"),
              ElementsAre(at(10, 11,
                             "listeners[0].mode: invalid value a mapping: expected server | "
                             "client")));
}

TEST(ConfigWrongType, ListWhereStringExpected) {
  // The cert is not taken, so the cross-field check also notices that only the key is left.
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: [a.crt, b.crt]
      key: tls.key
    client_auth:
      ca: [ca.crt]
)"),
              ElementsAre(at(6, 13, "listeners[0].tls.cert: expected a string, got a list"),
                          at(6, 7, "listeners[0].tls: 'key' is set but 'cert' is missing")));
}

TEST(ConfigWrongType, MappingWhereListExpected) {
  EXPECT_THAT(
      problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
      alpn: {h2: true}
    client_auth:
      ca:
        file: ca.crt
)"),
      ElementsAre(at(8, 13, "listeners[0].tls.alpn: expected a list of strings, got a mapping"),
                  at(11, 9,
                     "listeners[0].client_auth.ca: expected a list of file paths, got a "
                     "mapping"),
                  at(10, 7,
                     "listeners[0].client_auth.ca: client certificates are required "
                     "(mode require) but no CA bundle is configured")));
}

TEST(ConfigWrongType, ListElementNotAString) {
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n        common_names: [alice, [bob]]\n"),
              ElementsAre(at(11, 31,
                             "listeners[0].client_auth.allow.common_names[1]: expected a string, "
                             "got a list")));
}

TEST(ConfigWrongType, Listeners) {
  EXPECT_THAT(problems_of("listeners:\n  inbound: {}\n"),
              ElementsAre(at(2, 3, "listeners: expected a list of listeners, got a mapping")));
  EXPECT_THAT(problems_of("listeners:\n  - inbound\n"),
              ElementsAre(at(2, 5,
                             "listeners[0]: expected a mapping describing a listener, got "
                             "'inbound'")));
}

TEST(ConfigWrongType, Boolean) {
  EXPECT_THAT(problems_of("log:\n  access_log: sometimes\n" + kMinimal),
              ElementsAre(at(2, 15, "log.access_log: expected true or false, got 'sometimes'")));
  EXPECT_THAT(problems_of(kMinimal + "    revocation:\n      stapling: [true]\n"),
              ElementsAre(at(11, 17,
                             "listeners[0].revocation.stapling: expected true or false, got a "
                             "list")));
}

TEST(ConfigWrongType, TopLevelNotAMapping) {
  EXPECT_THAT(problems_of("- a\n- b\n"),
              ElementsAre(at(1, 1,
                             "expected a mapping at the top level (admin, log, listeners, ...), "
                             "got a list")));
  EXPECT_THAT(
      problems_of(""),
      ElementsAre(kFile + ": expected a mapping at the top level (admin, log, listeners, ...), "
                          "got nothing"));
}

// --- values ---------------------------------------------------------------------------------

TEST(ConfigBadValue, Duration) {
  const std::string hint = ": expected a number with a unit (ms, s, m, h), e.g. 250ms, 10s, 5m";
  EXPECT_THAT(
      problems_of(kMinimal + "    timeouts:\n      handshake: 10\n      idle: -5m\n"),
      ElementsAre(at(11, 18, "listeners[0].timeouts.handshake: invalid duration '10'" + hint),
                  at(12, 13, "listeners[0].timeouts.idle: invalid duration '-5m'" + hint)));
  EXPECT_THAT(problems_of("shutdown:\n  drain_timeout: 30 s\n" + kMinimal),
              ElementsAre(at(2, 18, "shutdown.drain_timeout: invalid duration '30 s'" + hint)));
  EXPECT_THAT(problems_of("reload:\n  poll_interval: [1s]\n" + kMinimal),
              ElementsAre(at(2, 18, "reload.poll_interval: invalid duration a list" + hint)));
  // Review: 0s became a 1 ms timeout that refused every client under on_unavailable: fail.
  EXPECT_THAT(
      problems_of(kMinimal + "    revocation:\n      ocsp_timeout: 0s\n"),
      ElementsAre(at(11, 21, "listeners[0].revocation.ocsp_timeout must be greater than 0")));
  EXPECT_THAT(problems_of(kMinimal + "    revocation:\n      ocsp_timeout: 2x\n"),
              ElementsAre(at(
                  11, 21, "listeners[0].revocation.ocsp_timeout: invalid duration '2x'" + hint)));
  // Well formed but past the cap: said so, not "expected a number with a unit".
  EXPECT_THAT(problems_of("shutdown:\n  drain_timeout: 596523h1h\n" + kMinimal),
              ElementsAre(at(2, 18,
                             "shutdown.drain_timeout: invalid duration '596523h1h': longer than "
                             "the longest allowed, 2147483647s (about 68 years)")));
}

TEST(ConfigDns, ServersAreIpAddressesWithPorts) {
  configuration c = load_ok("dns:\n  servers: [127.0.0.1:5353, '[::1]:53']\n" + kMinimal);
  ASSERT_EQ(c.dns.servers.size(), 2u);
  EXPECT_EQ(c.dns.servers[0].host, "127.0.0.1");
  EXPECT_EQ(c.dns.servers[0].port, 5353);
  EXPECT_EQ(c.dns.servers[1].host, "::1");
  EXPECT_EQ(c.dns.servers[1].port, 53);
  EXPECT_TRUE(load_ok("dns:\n  servers: []\n" + kMinimal).dns.servers.empty());
  EXPECT_TRUE(load_ok("dns: {}\n" + kMinimal).dns.servers.empty());
  EXPECT_EQ(load_ok("dns:\n  servers: 10.0.0.1:53\n" + kMinimal).dns.servers.size(), 1u);
}

TEST(ConfigDns, BadServersNameTheirPlace) {
  EXPECT_THAT(problems_of("dns:\n  servers:\n    - ns1.example:53\n    - 10.0.0.1\n"
                          "    - unix:/run/dns.sock\n    - 10.0.0.2:0\n" +
                          kMinimal),
              ElementsAre(at(3, 7,
                             "dns.servers[0]: 'ns1.example' is not an IP address (a DNS server "
                             "cannot be found by name)"),
                          at(4, 7,
                             "dns.servers[1]: invalid address '10.0.0.1': expected HOST:PORT, "
                             "[IPV6]:PORT or unix:/path"),
                          at(5, 7,
                             "dns.servers[2]: a DNS server is an IP:PORT address, not a unix "
                             "socket"),
                          at(6, 7,
                             "dns.servers[3]: port 0 is not a DNS server's port (53 is the "
                             "usual one)")));
  EXPECT_THAT(problems_of("dns:\n  servers: {a: 1}\n" + kMinimal),
              ElementsAre(at(2, 12,
                             "dns.servers: expected a list of IP:PORT addresses, got a "
                             "mapping")));
  EXPECT_THAT(problems_of("dns:\n  server: []\n" + kMinimal),
              ElementsAre(at(2, 3, "unknown key 'server' in dns (did you mean 'servers'?)")));
}

TEST(ConfigBadValue, ZeroTimeouts) {
  EXPECT_THAT(problems_of(kMinimal + "    timeouts:\n      handshake: 0s\n      connect: 0\n"),
              ElementsAre(at(11, 7, "listeners[0].timeouts.handshake must be greater than 0"),
                          at(11, 7, "listeners[0].timeouts.connect must be greater than 0")));
}

std::string with_addresses(const std::string& listen, const std::string& upstream) {
  return "listeners:\n  - name: inbound\n    listen: " + listen + "\n    upstream: " + upstream +
         "\n    tls: {cert: tls.crt, key: tls.key}\n    client_auth: {ca: ca.crt}\n";
}

TEST(ConfigBadValue, AddressMissingPort) {
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0", "127.0.0.1:8080")),
              ElementsAre(at(3, 13,
                             "listeners[0].listen: invalid address '0.0.0.0': expected "
                             "HOST:PORT, [IPV6]:PORT or unix:/path")));
}

TEST(ConfigBadValue, AddressBadPort) {
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:8443", "127.0.0.1:99999")),
              ElementsAre(at(4, 15,
                             "listeners[0].upstream: invalid address '127.0.0.1:99999': invalid "
                             "port '99999': expected a number from 0 to 65535")));
}

TEST(ConfigBadValue, AddressIpv6WithoutBrackets) {
  EXPECT_THAT(problems_of(with_addresses("::1:8443", "127.0.0.1:8080")),
              ElementsAre(at(3, 13,
                             "listeners[0].listen: invalid address '::1:8443': IPv6 addresses "
                             "must be written in brackets: [IPV6]:PORT")));
}

TEST(ConfigBadValue, AddressEmptyUnixPath) {
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:8443", "\"unix:\"")),
              ElementsAre(at(4, 15,
                             "listeners[0].upstream: invalid address 'unix:': unix socket "
                             "address needs a path, e.g. unix:/run/app.sock")));
}

// Review: "unix:rel.sock" was bound in the current directory (/ under systemd), and
// `check --print` showed it unresolved, unlike every other path in the file.
TEST(ConfigParse, ARelativeUnixSocketPathIsRelativeToTheConfigurationFile) {
  test::pki_dir dir;
  dir.write("conf/run/.keep", "");  // the listener's socket directory must exist
  const std::string file =
      dir.write("conf/mtlsd.yaml", with_addresses("unix:run/in.sock", "unix:../app/app.sock"));
  const load_result r = load_file(file);
  ASSERT_TRUE(r.problems.empty()) << r.problems.front().str();
  ASSERT_TRUE(r.config.has_value());
  const auto& c = *r.config;
  ASSERT_EQ(c.listeners.size(), 1U);
  EXPECT_EQ(c.listeners[0].listen.path, (dir.path() / "conf" / "run" / "in.sock").string());
  EXPECT_EQ(c.listeners[0].upstream.path, (dir.path() / "app" / "app.sock").string());
  EXPECT_EQ(load_ok(with_addresses("unix:/run/in.sock", "unix:app.sock")).listeners[0].listen.path,
            "/run/in.sock");
}

TEST(ConfigBadValue, ARelativeUnixSocketPathTooLongOnceResolved) {
  const std::string name(100, 's');
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:8443", "unix:" + name)),
              ElementsAre(at(4, 15,
                             "listeners[0].upstream: invalid address 'unix:" + name +
                                 "': the socket path /etc/mtlsd/" + name +
                                 " (relative to the configuration file's directory) is longer "
                                 "than 107 bytes")));
}

TEST(ConfigBadValue, UpstreamPortZero) {
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:8443", "127.0.0.1:0")),
              ElementsAre(at(4, 15, "listeners[0].upstream: port 0 is not a valid destination")));
}

TEST(ConfigBadValue, ListenAddressUsedTwice) {
  EXPECT_THAT(problems_of(kMinimal + R"(  - name: second
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:9080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(11, 13,
                             "listeners[1].listen: 0.0.0.0:8443 is already used by listener "
                             "'inbound'")));
}

// Review: `check` passed what binding refuses at start (the same socket spelt two ways, a
// wildcard and an address on its port, the admin server's address), and a unix socket in a
// directory that does not exist.
TEST(ConfigBadValue, ListenAddressesThatOverlapAreRefused) {
  const auto second = [](const std::string& listen) {
    return R"(  - name: second
    listen: )" +
           listen + R"(
    upstream: 127.0.0.1:9080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)";
  };
  EXPECT_THAT(problems_of(kMinimal + second("127.0.0.1:8443")),
              ElementsAre(at(11, 13,
                             "listeners[1].listen: 127.0.0.1:8443 overlaps 0.0.0.0:8443 of "
                             "listener 'inbound' (the same socket; 0.0.0.0 and [::] take every "
                             "address on their port)")));
  // One socket once bound, however spelt: an IPv4-mapped address is the IPv4 one, a zone names
  // its interface by name or number, a wildcard takes its port.
  const auto problems = [&](const std::string& first, const std::string& then) {
    return problems_of(with_addresses(first, "127.0.0.1:80") + second(then)).size();
  };
  const std::string lo = std::to_string(::if_nametoindex("lo"));
  const std::pair<std::string, std::string> same[] = {
      {"0.0.0.0:8443", "\"[::]:8443\""},
      {"127.0.0.1:8443", "\"[::ffff:127.0.0.1]:8443\""},
      {"\"[fe80::1%" + lo + "]:8443\"", "\"[fe80::1%lo]:8443\""},
      {"\"[::]:8443\"", "\"[fe80::1%lo]:8443\""},
      {"unix:/run/a.sock", "unix:/run/./a.sock"}};
  for (const auto& [first, then] : same)
    EXPECT_EQ(problems(first, then), 1U) << first << " and " << then;
  const std::pair<std::string, std::string> apart[] = {{"0.0.0.0:8443", "127.0.0.1:8444"},
                                                       {"127.0.0.1:8443", "127.0.0.2:8443"},
                                                       {"0.0.0.0:8443", "\"[::1]:8443\""}};
  for (const auto& [first, then] : apart)
    EXPECT_EQ(problems(first, then), 0U) << first << " and " << then;
  EXPECT_THAT(problems_of("admin: {address: 127.0.0.1:8443}\n" + kMinimal),
              ElementsAre(at(1, 18,
                             "admin.address: 127.0.0.1:8443 overlaps listener 'inbound' "
                             "(0.0.0.0:8443); give one of them another port")));
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:9901", "127.0.0.1:80")),
              ElementsAre(at(1, 1,
                             "admin.address: 127.0.0.1:9901 (the default) overlaps listener "
                             "'inbound' (0.0.0.0:9901); give one of them another port")));
}

TEST(ConfigBadValue, AUnixSocketInAMissingDirectoryIsWarnedOf) {
  // A warning, not an error: systemd's RuntimeDirectory= exists only while the service runs, so
  // `check` before the start (and `verify`) must load such a configuration (review).
  EXPECT_THAT(problems_of(with_addresses("unix:/nonexistent-mtlsd/l.sock", "127.0.0.1:80")),
              ElementsAre(at(3, 13,
                             "warning: listeners[0].listen: the directory /nonexistent-mtlsd "
                             "does not exist: mtlsd cannot create the socket "
                             "/nonexistent-mtlsd/l.sock and start until it does")));
  EXPECT_THAT(problems_of("admin: {address: \"unix:/nonexistent-mtlsd/a.sock\"}\n" + kMinimal),
              ElementsAre(at(1, 18,
                             "warning: admin.address: the directory /nonexistent-mtlsd does not "
                             "exist: mtlsd cannot create the socket /nonexistent-mtlsd/a.sock "
                             "and start until it does")));
  // An upstream's socket may come later: not judged.
  load_ok(with_addresses("0.0.0.0:8443", "unix:/nonexistent-mtlsd/up.sock"));
}

TEST(ConfigBadValue, ListenPortZeroMayRepeat) {
  configuration c = load_ok(with_addresses("127.0.0.1:0", "127.0.0.1:8080") + R"(  - name: second
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:9080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)");
  EXPECT_EQ(c.listeners.size(), 2u);
}

TEST(ConfigBadValue, EnumValues) {
  EXPECT_THAT(problems_of("log:\n  level: verbose\n  format: xml\n" + kMinimal),
              ElementsAre(at(2, 10,
                             "log.level: invalid value 'verbose': expected trace | debug | info "
                             "| warn | error"),
                          at(3, 11, "log.format: invalid value 'xml': expected text | json")));
  EXPECT_THAT(problems_of(kMinimal + R"(      mode: required
    proxy_protocol: v1
    revocation:
      crl_scope: all
      ocsp: on
      on_unavailable: ignore
    http:
      forward_client_cert_details: forward
      set_current_client_cert_details: [uri, email]
)"),
              ElementsAre(at(10, 13,
                             "listeners[0].client_auth.mode: invalid value 'required': expected "
                             "require | optional | none"),
                          at(13, 18,
                             "listeners[0].revocation.crl_scope: invalid value 'all': expected "
                             "leaf | chain"),
                          at(14, 13,
                             "listeners[0].revocation.ocsp: invalid value 'on': expected off | "
                             "false | leaf | chain"),
                          at(15, 23,
                             "listeners[0].revocation.on_unavailable: invalid value 'ignore': "
                             "expected fail | allow"),
                          at(11, 21,
                             "listeners[0].proxy_protocol: invalid value 'v1': expected off | "
                             "false | v2"),
                          at(17, 36,
                             "listeners[0].http.forward_client_cert_details: invalid value "
                             "'forward': expected sanitize | forward_only | append_forward | "
                             "sanitize_set | always_forward_only"),
                          at(18, 40,
                             "listeners[0].http.set_current_client_cert_details: unknown detail "
                             "'email': expected uri, dns, subject, hash, cert or chain")));
}

TEST(ConfigBadValue, ModeTypo) {
  EXPECT_THAT(problems_of(kMinimal + "    mode: sever\n"),
              ElementsAre(at(10, 11,
                             "listeners[0].mode: invalid value 'sever': expected server | "
                             "client")));
}

TEST(ConfigBadValue, TlsVersion) {
  EXPECT_THAT(problems_of(kMinimalTlsLast + "      min_version: \"1.1\"\n"),
              ElementsAre(at(10, 20,
                             "listeners[0].tls.min_version: unsupported TLS version "
                             "'1.1': expected \"1.2\" or \"1.3\"")));
}

TEST(ConfigBadValue, OcspResponderMustBeHttp) {
  EXPECT_THAT(
      problems_of(kMinimal + "    revocation:\n      ocsp_responder: https://ocsp.example.org\n"),
      ElementsAre(at(11, 23,
                     "listeners[0].revocation.ocsp_responder: only http:// responder URLs are "
                     "supported (OCSP is signed, so TLS adds nothing)")));
}

TEST(ConfigBadValue, ListenerName) {
  EXPECT_THAT(problems_of(with_addresses("0.0.0.0:1", "127.0.0.1:2") + "    name: x\n"),
              ::testing::Contains(at(7, 5, "duplicate key 'name' in listeners[0]")));
  std::string bad = with_addresses("0.0.0.0:1", "127.0.0.1:2");
  bad.replace(bad.find("inbound"), 7, "\"in bound\"");
  EXPECT_THAT(problems_of(bad),
              ElementsAre(at(2, 11,
                             "listeners[0].name: 'in bound' must be non-empty and use only "
                             "letters, digits, '_', '-' and '.'")));
}

// --- integers -------------------------------------------------------------------------------

TEST(ConfigInteger, OutOfRange) {
  EXPECT_THAT(problems_of("workers: 2000\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: 2000 is out of range (0 to 1024)")));
  EXPECT_THAT(problems_of("workers: -1\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: -1 is out of range (0 to 1024)")));
  EXPECT_THAT(
      problems_of(kMinimal + "      verify_depth: 33\n    max_connections: 0\n"),
      ElementsAre(at(11, 22, "listeners[0].max_connections: 0 is out of range (1 to 10000000)"),
                  at(10, 21,
                     "listeners[0].client_auth.verify_depth: 33 is out of range (0 to "
                     "32)")));
}

TEST(ConfigInteger, NotAnInteger) {
  EXPECT_THAT(problems_of("workers: 1.5\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: expected an integer, got '1.5'")));
  EXPECT_THAT(problems_of("workers: 0x10\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: expected an integer, got '0x10'")));
  EXPECT_THAT(problems_of("workers: 99999999999999999999\n" + kMinimal),
              ElementsAre(at(1, 10, "workers: expected an integer, got '99999999999999999999'")));
}

TEST(ConfigInteger, Boundaries) {
  configuration c = load_ok("workers: 1024\n" + kMinimal +
                            "      verify_depth: 0\n    max_connections: 10000000\n");
  EXPECT_EQ(c.workers, 1024u);
  EXPECT_EQ(c.listeners.at(0).client_auth.verify_depth, 0);
  EXPECT_EQ(c.listeners.at(0).max_connections, 10'000'000);
}

// --- duplicates -----------------------------------------------------------------------------

TEST(ConfigDuplicate, TopLevelKey) {
  EXPECT_THAT(problems_of("workers: 1\nworkers: 2\n" + kMinimal),
              ElementsAre(at(2, 1, "duplicate key 'workers' in the top level")));
}

TEST(ConfigDuplicate, NestedKey) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
      cert: other.crt
    client_auth:
      ca: [ca.crt]
)"),
              ElementsAre(at(8, 7, "duplicate key 'cert' in listeners[0].tls")));
}

TEST(ConfigDuplicate, ListenerName) {
  EXPECT_THAT(problems_of(kMinimal + R"(  - name: inbound
    listen: 0.0.0.0:9443
    upstream: 127.0.0.1:9080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(10, 11, "listeners[1].name: duplicate listener name 'inbound'")));
}

// --- YAML syntax ----------------------------------------------------------------------------

TEST(ConfigSyntax, BadIndentation) {
  EXPECT_THAT(problems_of("admin:\n  address: 127.0.0.1:9901\n log:\n  level: info\n"),
              ElementsAre(at(3, 2, "YAML syntax error: end of map not found")));
}

TEST(ConfigSyntax, TabIndentation) {
  EXPECT_THAT(problems_of("listeners:\n  - name: in\n\tlisten: x\n"),
              ElementsAre(at(3, 1, "YAML syntax error: illegal tab when looking for indentation")));
}

TEST(ConfigSyntax, OnlyTheSyntaxErrorIsReported) {
  // Nothing after a syntax error can be trusted: no follow-up "missing key" noise.
  EXPECT_THAT(problems_of("listeners:\n  - name: in\n    tls: {cert: a\n"),
              ElementsAre(::testing::StartsWith(kFile + ":4:1: YAML syntax error: ")));
}

// --- required keys and cross-field rules ----------------------------------------------------

TEST(ConfigRequired, NoListeners) {
  EXPECT_THAT(
      problems_of("workers: 1\n"),
      ElementsAre(at(1, 1, "no listeners configured: add at least one under 'listeners:'")));
  EXPECT_THAT(
      problems_of("workers: 1\nlisteners: []\n"),
      ElementsAre(at(2, 12, "no listeners configured: add at least one under 'listeners:'")));
  EXPECT_THAT(
      problems_of("listeners:\n"),
      ElementsAre(at(1, 1, "no listeners configured: add at least one under 'listeners:'")));
}

TEST(ConfigRequired, NameListenUpstream) {
  EXPECT_THAT(problems_of(R"(listeners:
  - mode: server
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(2, 5, "listeners[0]: missing required key 'name'"),
                          at(2, 5, "listeners[0]: missing required key 'listen'"),
                          at(2, 5, "listeners[0]: missing required key 'upstream'")));
}

TEST(ConfigRequired, ServerModeWithoutCertificate) {
  // Without a tls block the listener itself is pointed at; with one, the block.
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(2, 5,
                             "listeners[0].tls: a server-mode listener needs its certificate: "
                             "set cert + key or pkcs12")));
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      min_version: "1.3"
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(6, 7,
                             "listeners[0].tls: a server-mode listener needs its certificate: "
                             "set cert + key or pkcs12")));
}

TEST(ConfigRequired, CertWithoutKeyAndViceVersa) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt}
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(5, 10, "listeners[0].tls: 'cert' is set but 'key' is missing")));
  EXPECT_THAT(
      problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key, pkcs12: server.p12}
    client_auth: {ca: ca.crt}
)"),
      ElementsAre(at(5, 10, "listeners[0].tls: give either cert + key or pkcs12, not both")));
}

TEST(ConfigRequired, RequireOrOptionalWithoutCa) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key}
)"),
              ElementsAre(at(2, 5,
                             "listeners[0].client_auth.ca: client certificates are required "
                             "(mode require) but no CA bundle is configured")));
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key}
    client_auth:
      mode: optional
      ca: []
)"),
              ElementsAre(at(7, 7,
                             "listeners[0].client_auth.ca: client certificates are required "
                             "(mode optional) but no CA bundle is configured")));
}

const std::string kClient = R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:15001
    upstream: backend.example.org:8443
)";

// Review: each of these passed check, then failed every handshake as hostname_mismatch.
TEST(ConfigBadValue, ServerNameMustBeAHostName) {
  using ::testing::HasSubstr;
  const auto problem = [](const std::string& name) {
    auto p = problems_of(kClient + "    server_auth:\n      server_name: \"" + name + "\"\n");
    return p.size() == 1 ? p[0] : "(" + std::to_string(p.size()) + " problems)";
  };
  EXPECT_EQ(problem("[::1]"), at(7, 20,
                                 "listeners[0].server_auth.server_name: '[::1]' is not a host "
                                 "name: write an IPv6 address without brackets: '::1'"));
  EXPECT_THAT(problem("b\u00fccher.example"), HasSubstr("its A-label ('xn--...'"));
  EXPECT_THAT(problem("*.example.org"), HasSubstr("a wildcard names no one host"));
  EXPECT_THAT(problem("exa mple.org"), HasSubstr("' ' is in no host name"));
  EXPECT_THAT(problem("fe80::1%lo"), HasSubstr("a zone (%...)"));
  EXPECT_THAT(problem("localhost.."), HasSubstr("an empty label"));
  EXPECT_THAT(problem("api.example.org:443"), HasSubstr("':' is in no host name"));
  for (const char* fine : {"api.example.org", "api.example.org.", "::1", "127.0.0.1",
                           "svc_internal.local", "localhost"})
    EXPECT_THAT(problems_of(kClient + "    server_auth:\n      server_name: \"" + fine + "\"\n"),
                ElementsAre())
        << fine;
}

TEST(ConfigCrossField, ClientAuthInClientMode) {
  EXPECT_THAT(problems_of(kClient + "    client_auth:\n      ca: [ca.crt]\n"),
              ElementsAre(at(7, 7,
                             "listeners[0].client_auth applies to mode: server only (use "
                             "server_auth)")));
}

TEST(ConfigCrossField, ServerAuthInServerMode) {
  EXPECT_THAT(problems_of(kMinimal + "    server_auth:\n      server_name: x\n"),
              ElementsAre(at(11, 7,
                             "listeners[0].server_auth applies to mode: client only (use "
                             "client_auth)")));
}

TEST(ConfigCrossField, ServerOnlyFeaturesInClientMode) {
  EXPECT_THAT(
      problems_of(kClient + R"(    proxy_protocol: v2
    http: {}
    revocation:
      stapling: true
)"),
      ElementsAre(at(6, 21, "listeners[0].proxy_protocol applies to mode: server only"),
                  at(7, 11, "listeners[0].http applies to mode: server only"),
                  at(9, 7, "listeners[0].revocation.stapling applies to mode: server only")));
}

TEST(ConfigCrossField, ClientModeUpstreamMustBeTcp) {
  std::string yaml = kClient;
  yaml.replace(yaml.find("backend.example.org:8443"), 24, "unix:/run/s.sock");
  EXPECT_THAT(problems_of(yaml),
              ElementsAre(at(5, 15,
                             "listeners[0].upstream: a client-mode listener connects to a TLS "
                             "server over TCP")));
}

TEST(ConfigCrossField, MinVersionAboveMaxVersion) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    tls:
      cert: tls.crt
      key: tls.key
      min_version: "1.3"
      max_version: "1.2"
    client_auth: {ca: ca.crt}
)"),
              ElementsAre(at(6, 7, "listeners[0].tls: min_version 1.3 is above max_version 1.2")));
}

// --- allow-list syntax ----------------------------------------------------------------------

TEST(ConfigAllow, SpiffePatternWithMisplacedStar) {
  const std::string msg = "listeners[0].client_auth.allow.spiffe_ids: ";
  EXPECT_THAT(problems_of(kMinimal + R"(      allow:
        spiffe_ids:
          - spiffe://example.org/ns/*
          - spiffe://example.org/*/app
          - spiffe://example.org/ns*
          - spiffe://example.org/ns/*/
          - https://example.org/ns/a
)"),
              ElementsAre(at(13, 13,
                             msg + "'spiffe://example.org/*/app': '*' is only allowed as a "
                                   "trailing '/*'"),
                          at(14, 13,
                             msg + "'spiffe://example.org/ns*': '*' is only allowed as a "
                                   "trailing '/*'"),
                          at(15, 13,
                             msg + "'spiffe://example.org/ns/*/': '*' is only allowed as a "
                                   "trailing '/*'"),
                          at(16, 13,
                             msg + "'https://example.org/ns/a' is not a SPIFFE ID: it must start "
                                   "with spiffe://")));
}

// What no peer's SPIFFE ID can match is refused too (tls/identity checks peers the same way).
TEST(ConfigAllow, SpiffePatternsFollowTheSpiffeIdSyntax) {
  const std::string msg = "listeners[0].client_auth.allow.spiffe_ids: ";
  EXPECT_THAT(problems_of(kMinimal + R"(      allow:
        spiffe_ids:
          - spiffe://example.org/ns/../*
          - spiffe://Example.org/a
          - spiffe://example.org/ns/prod/*
          - spiffe://*
          - spiffe://example.org/*
          - spiffe://example.org
)"),
              ElementsAre(at(12, 13,
                             msg + "'spiffe://example.org/ns/../*' is not a SPIFFE ID: its path "
                                   "has a '.' or '..' segment"),
                          at(13, 13,
                             msg + "'spiffe://Example.org/a' is not a SPIFFE ID: its trust "
                                   "domain holds 'E' (only lowercase letters, digits, '.', '-' "
                                   "and '_'; no user or port)"),
                          at(17, 13,
                             msg + "'spiffe://example.org' names only a trust domain, which no "
                                   "workload's certificate carries; spiffe_ids: "
                                   "['spiffe://example.org/*'] admits every workload in it")));
}

TEST(ConfigAllow, ABareTrustDomainUnderUriSansIsAWarning) {
  EXPECT_THAT(problems_of(kMinimal + R"(      allow:
        uri_sans:
          - spiffe://example.org
          - spiffe://example.org/ns/a
          - https://example.org
)"),
              ElementsAre(at(12, 13,
                             "warning: listeners[0].client_auth.allow.uri_sans: "
                             "'spiffe://example.org' names only a trust domain, which no "
                             "workload's certificate carries; spiffe_ids: "
                             "['spiffe://example.org/*'] admits every workload in it")));
  EXPECT_TRUE(
      load_text(kMinimal + "      allow:\n        uri_sans: [spiffe://example.org]\n", kFile)
          .config.has_value());
}

TEST(ConfigAllow, BareStarIsRejected) {
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n        spiffe_ids: \"*\"\n"),
              ElementsAre(at(11, 21,
                             "listeners[0].client_auth.allow.spiffe_ids: '*': '*' is only "
                             "allowed as a trailing '/*'")));
}

TEST(ConfigAllow, DnsWildcardOnlyLeading) {
  EXPECT_THAT(
      problems_of(kMinimal +
                  "      allow:\n        dns_sans: [\"*.ok.org\", \"a.*.org\", \"*.*.org\"]\n"),
      ElementsAre(at(11, 32,
                     "listeners[0].client_auth.allow.dns_sans: 'a.*.org': wildcards are "
                     "only allowed as a leading '*.'"),
                  at(11, 43,
                     "listeners[0].client_auth.allow.dns_sans: '*.*.org': wildcards are "
                     "only allowed as a leading '*.'")));
}

TEST(ConfigAllow, BadFingerprint) {
  const std::string msg = "listeners[0].client_auth.allow.sha256_fingerprints: ";
  const std::string hint = "' is not a SHA-256 fingerprint (64 hex digits, colons optional)";
  const std::string too_short(62, 'a');
  const std::string not_hex = std::string(63, 'a') + "g";
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n        sha256_fingerprints:\n          - " +
                          too_short + "\n          - " + not_hex + "\n          - abc\n"),
              ElementsAre(at(12, 13, msg + "'" + too_short + hint),
                          at(13, 13, msg + "'" + not_hex + hint), at(14, 13, msg + "'abc" + hint)));
}

TEST(ConfigAllow, AlpnNamesMustBeNonEmpty) {
  EXPECT_THAT(
      problems_of(kMinimalTlsLast + "      alpn: [h2, \"\"]\n"),
      ElementsAre(at(10, 13, "listeners[0].tls.alpn: protocol names must be 1 to 255 bytes")));
}

// --- empty values ---------------------------------------------------------------------------

// BUG (src/config/yaml_reader.cpp, reader::at): a key with an empty value (`upstream:` and nothing
// after it) gives a null node whose yaml-cpp mark is that of the NEXT token, so the diagnostic
// points at the following line (here 5:5 instead of line 4). For a null value the location of
// its key should be used.
TEST(ConfigEmptyValue, ErrorPointsAtTheKeysLine) {
  load_result r = load_text(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream:
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: ca.crt}
)",
                            kFile);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].message,
            "listeners[0].upstream: invalid address '': expected HOST:PORT, [IPV6]:PORT or "
            "unix:/path");
  EXPECT_EQ(r.problems[0].where.line, 4);
}

// The same quirk, pinned as it behaves today so that a change is noticed: an empty `tls:` block
// (server mode) is reported on the line after it.
TEST(ConfigEmptyValue, EmptyBlockIsTreatedAsAbsent) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    client_auth: {ca: ca.crt}
    tls:
)"),
              ElementsAre(::testing::EndsWith(
                  ": listeners[0].tls: a server-mode listener needs its certificate: set cert + "
                  "key or pkcs12")));
}

// --- several problems at once ---------------------------------------------------------------

TEST(ConfigMultipleErrors, AllAreReportedInOrder) {
  load_result r = load_text(R"(workers: many
log:
  level: loud
listeners:
  - name: inbound
    listen: 0.0.0.0
    upstream: 127.0.0.1:8080
    timeouts:
      idle: forever
    tls:
      cert: tls.crt
      key: tls.key
      colour: blue
    client_auth:
      ca: [ca.crt]
)",
                            kFile);
  EXPECT_FALSE(r.config.has_value());
  std::vector<std::string> got;
  for (const auto& p : r.problems) {
    EXPECT_FALSE(p.warning);
    got.push_back(p.str());
  }
  EXPECT_THAT(got,
              ElementsAre(at(3, 10,
                             "log.level: invalid value 'loud': expected trace | debug | info | "
                             "warn | error"),
                          at(1, 10, "workers: expected an integer, got 'many'"),
                          at(6, 13,
                             "listeners[0].listen: invalid address '0.0.0.0': expected "
                             "HOST:PORT, [IPV6]:PORT or unix:/path"),
                          at(9, 13,
                             "listeners[0].timeouts.idle: invalid duration 'forever': expected "
                             "a number with a unit (ms, s, m, h), e.g. 250ms, 10s, 5m"),
                          at(13, 7, "unknown key 'colour' in listeners[0].tls")));
}

TEST(ConfigDiagnostic, Formatting) {
  diagnostic d{{"/x.yaml", 3, 7}, "boom", false};
  EXPECT_EQ(d.str(), "/x.yaml:3:7: boom");
  d.warning = true;
  EXPECT_EQ(d.str(), "/x.yaml:3:7: warning: boom");
  EXPECT_EQ((diagnostic{{"/x.yaml", 0, 0}, "no line", false}).str(), "/x.yaml: no line");
  EXPECT_EQ((diagnostic{{"", 0, 0}, "bare", false}).str(), "bare");
  EXPECT_FALSE(has_errors({d}));
  EXPECT_TRUE(has_errors({d, diagnostic{{}, "e", false}}));
  config_error e({{{"/a", 1, 2}, "first", false}, {{"/b", 3, 4}, "second", true}});
  EXPECT_STREQ(e.what(), "/a:1:2: first\n/b:3:4: warning: second");
  EXPECT_EQ(e.problems().size(), 2u);
}

}  // namespace
}  // namespace mtlsd::config

// --- issue 10: validation keys ------------------------------------------------------------------

namespace mtlsd::config {
namespace {
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(ConfigValidation, ServerAuthVerifyDepthEmailSansAndRequireStaple) {
  configuration c = load_ok(kClient + R"(    server_auth:
      verify_depth: 2
      allow:
        email_sans: [ops@example.org]
    revocation:
      require_staple: true
      crl_files: [root.crl]
)");
  const listener& l = c.listeners.at(0);
  EXPECT_EQ(l.server_auth.verify_depth, 2);
  EXPECT_THAT(l.server_auth.allow.email_sans, ElementsAre("ops@example.org"));
  EXPECT_FALSE(l.server_auth.allow.empty());
  EXPECT_TRUE(l.revocation.require_staple);
  EXPECT_EQ(load_ok(kClient).listeners.at(0).server_auth.verify_depth, 4);
  EXPECT_FALSE(load_ok(kClient).listeners.at(0).revocation.require_staple);
}

TEST(ConfigValidation, ClientAuthEmailSans) {
  configuration c = load_ok(kMinimal + "      allow: {email_sans: [a@b.org, c@d.org]}\n");
  EXPECT_THAT(c.listeners.at(0).client_auth.allow.email_sans, ElementsAre("a@b.org", "c@d.org"));
}

TEST(ConfigValidation, BadEmailSan) {
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n        email_sans: [alice, '@b.org']\n"),
              ElementsAre(at(11, 22,
                             "listeners[0].client_auth.allow.email_sans: 'alice' is not an "
                             "e-mail address (local@domain)"),
                          at(11, 29,
                             "listeners[0].client_auth.allow.email_sans: '@b.org' is not an "
                             "e-mail address (local@domain)")));
}

TEST(ConfigValidation, ServerAuthVerifyDepthRange) {
  EXPECT_THAT(problems_of(kClient + "    server_auth:\n      verify_depth: 33\n"),
              ElementsAre(HasSubstr("listeners[0].server_auth.verify_depth")));
}

TEST(ConfigValidation, RequireStapleIsClientModeOnly) {
  EXPECT_THAT(problems_of(kMinimal + "    revocation:\n      require_staple: true\n"),
              ElementsAre(at(11, 23,
                             "listeners[0].revocation.require_staple applies to mode: client "
                             "only (a client's certificate cannot be stapled)")));
}

// --- tls.certificates / strict_sni --------------------------------------------------------------

// Lines 1-6; the tls block (line 7) follows.
const std::string kNoTls = R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
    client_auth:
      ca: [ca.crt]
)";

TEST(ConfigCertificates, EntriesWithNamesAndStrictSni) {
  auto c = load_ok(kNoTls + R"(    tls:
      strict_sni: true
      certificates:
        - cert: rsa.crt
          key: rsa.key
        - pkcs12: ec.p12
          pkcs12_password_file: ec.pass
          server_names: [API.Example.org, "*.apps.example.org"]
)");
  const auto& t = c.listeners.at(0).tls;
  EXPECT_TRUE(t.strict_sni);
  ASSERT_EQ(t.certificates.size(), 2u);
  EXPECT_EQ(t.certificates[0].cert.path, "/etc/mtlsd/rsa.crt");
  EXPECT_EQ(t.certificates[0].key.where.line, 11);
  EXPECT_TRUE(t.certificates[0].server_names.empty());
  EXPECT_EQ(t.certificates[1].cert_ref().path, "/etc/mtlsd/ec.p12");
  EXPECT_EQ(t.certificates[1].where.line, 12);
  EXPECT_THAT(t.certificates[1].server_names, ElementsAre("api.example.org", "*.apps.example.org"));
  // Every entry's files are watched for reload.
  std::vector<std::string> paths;
  for (const auto& f : c.referenced_files())
    paths.push_back(f.path);
  EXPECT_THAT(paths, ::testing::IsSupersetOf({"/etc/mtlsd/rsa.key", "/etc/mtlsd/ec.pass"}));
}

TEST(ConfigCertificates, DefaultsOff) {
  auto c = load_ok(kMinimal);
  EXPECT_FALSE(c.listeners.at(0).tls.strict_sni);
  EXPECT_TRUE(c.listeners.at(0).tls.certificates.empty());
}

TEST(ConfigCertificates, BothFormsIsAnError) {
  EXPECT_THAT(problems_of(kMinimalTlsLast + R"(      certificates:
        - {cert: a.crt, key: a.key}
)"),
              ElementsAre(at(11, 9,
                             "listeners[0].tls.certificates: give either certificates or "
                             "cert/key/pkcs12, not both")));
}

TEST(ConfigCertificates, EntryErrorsNameTheEntry) {
  EXPECT_THAT(
      problems_of(kNoTls + R"(    tls:
      certificates:
        - cert: a.crt
        - key: b.key
          server_names: ["a.*.org", "ok.org", "*."]
        - {cert: c.crt, key: c.key, pkcs12: c.p12, colour: red}
        - {cert: d.crt, key: d.key, key_pin_file: pin}
)"),
      ElementsAre(
          at(9, 11, "listeners[0].tls.certificates[0]: 'cert' is set but 'key' is missing"),
          at(11, 26,
             "listeners[0].tls.certificates[1].server_names: 'a.*.org' is not a server "
             "name: expected a DNS name or '*.suffix'"),
          at(11, 47,
             "listeners[0].tls.certificates[1].server_names: '*.' is not a server name: "
             "expected a DNS name or '*.suffix'"),
          at(10, 11, "listeners[0].tls.certificates[1]: 'key' is set but 'cert' is missing"),
          at(12, 52, "unknown key 'colour' in listeners[0].tls.certificates[2]"),
          at(12, 11,
             "listeners[0].tls.certificates[2]: give either cert + key or pkcs12, not both"),
          at(13, 51,
             "listeners[0].tls.certificates[3].key_pin_file applies to a pkcs11: key only (a "
             "key file takes key_password_file)")));
}

TEST(ConfigCertificates, EmptyListAndClientModeAndStapling) {
  EXPECT_THAT(problems_of(kNoTls + "    tls:\n      certificates: []\n"),
              ElementsAre(at(8, 21,
                             "listeners[0].tls.certificates: the list is empty: give at least one "
                             "certificate"),
                          at(8, 7,
                             "listeners[0].tls: a server-mode listener needs its certificate: set "
                             "cert + key or pkcs12")));
  EXPECT_THAT(problems_of(R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:8080
    upstream: backend:443
    tls:
      strict_sni: true
      certificates:
        - {cert: a.crt, key: a.key}
)"),
              ElementsAre(at(9, 9,
                             "listeners[0].tls.certificates applies to mode: server only (a "
                             "client presents one)"),
                          at(7, 19, "listeners[0].tls.strict_sni applies to mode: server only")));
  EXPECT_THAT(problems_of(kNoTls + R"(    revocation:
      stapling: true
    tls:
      certificates:
        - {cert: a.crt, key: a.key}
        - {cert: b.crt, key: b.key}
)"),
              ElementsAre(at(8, 17,
                             "listeners[0].revocation.stapling: not supported with several "
                             "tls.certificates yet (staple with one certificate, or turn "
                             "stapling off)")));
}

// --- pkcs11: keys ---------------------------------------------------------------------------

TEST(ConfigPkcs11, UriIsKeptVerbatimWithItsPinFile) {
  auto c = load_text(kNoTls + R"(    tls:
      cert: s.crt
      key: "pkcs11:token=mtlsd;object=server"
      key_pin_file: secrets/pin
)",
                     "/etc/mtlsd/mtlsd.yaml");
  ASSERT_TRUE(c.config) << (c.problems.empty() ? "" : c.problems[0].str());
  const auto& t = c.config->listeners[0].tls;
  EXPECT_EQ(t.key.path, "pkcs11:token=mtlsd;object=server");
  EXPECT_EQ(t.key_pin_file.path, "/etc/mtlsd/secrets/pin");
  // The PIN file is watched and readable in the sandbox; the URI is no file.
  std::vector<std::string> files;
  for (const auto& f : c.config->referenced_files())
    files.push_back(f.path);
  EXPECT_THAT(files, Contains("/etc/mtlsd/secrets/pin"));
  EXPECT_THAT(files, Not(Contains(t.key.path)));
}

TEST(ConfigPkcs11, PinSourceFileIsAReferencedFile) {
  auto c = load_text(kNoTls + R"(    tls:
      cert: s.crt
      key: "pkcs11:token=mtlsd;object=server?pin-source=file:/run/pin"
)",
                     "/etc/mtlsd/mtlsd.yaml");
  ASSERT_TRUE(c.config);
  std::vector<std::string> files;
  for (const auto& f : c.config->referenced_files())
    files.push_back(f.path);
  EXPECT_THAT(files, Contains("/run/pin"));
}

TEST(ConfigPkcs11, BadUrisAndMisplacedSecretsNameTheLine) {
  EXPECT_THAT(problems_of(kNoTls + R"(    tls:
      certificates:
        - {cert: a.crt, key: "pkcs11:token=t;objekt=a"}
        - {cert: b.crt, key: "pkcs11:token=t"}
        - {cert: c.crt, key: "pkcs11:object=c?pin-source=pin.txt"}
        - {cert: d.crt, key: "pkcs11:object=d?module-name=softhsm2"}
        - {cert: e.crt, key: "pkcs11:object=e;id=%4"}
        - {cert: f.crt, key: "pkcs11:object=f", key_password_file: p}
        - {cert: g.crt, key: "pkcs11:object=g?pin-value=1", key_pin_file: p}
        - {cert: h.crt, key: "pkcs11:object=h;type=cert"}
)"),
              ElementsAre(at(9, 30,
                             "listeners[0].tls.certificates[0].key: not a usable PKCS#11 URI: "
                             "unknown attribute 'objekt' (expected token, object, id, serial, "
                             "manufacturer, model, type, module-path, pin-source or pin-value; "
                             "a ';', '?' or '&' inside a value, a PIN's among them, must be "
                             "%-escaped)"),
                          at(10, 30,
                             "listeners[0].tls.certificates[1].key: not a usable PKCS#11 URI: "
                             "names no key: give object=LABEL and/or id=%XX... (the key's "
                             "CKA_ID)"),
                          at(11, 30,
                             "listeners[0].tls.certificates[2].key: not a usable PKCS#11 URI: "
                             "pin-source must name an absolute path "
                             "(pin-source=file:/path/to/pin)"),
                          at(12, 30,
                             "listeners[0].tls.certificates[3].key: not a usable PKCS#11 URI: "
                             "module-name is not supported: name the module's file with "
                             "module-path="),
                          at(13, 30,
                             "listeners[0].tls.certificates[4].key: not a usable PKCS#11 URI: "
                             "attribute 'id' has a malformed %-escape"),
                          at(14, 68,
                             "listeners[0].tls.certificates[5].key_password_file: the key is a "
                             "pkcs11: URI; its PIN goes in key_pin_file"),
                          at(15, 75,
                             "listeners[0].tls.certificates[6].key_pin_file: the key's URI "
                             "already gives the PIN (pin-source or pin-value); give it once"),
                          at(16, 30,
                             "listeners[0].tls.certificates[7].key: not a usable PKCS#11 URI: "
                             "type=cert: only a private key can be used here (type=private)")));
}

TEST(Pkcs11Uri, ParsesRfc7512) {
  mtlsd::config::pkcs11_uri u;
  EXPECT_EQ(
      mtlsd::config::parse_pkcs11_uri(
          "PKCS11:token=My%20Token;object=k;id=%01%ab;serial=42;manufacturer=SoftHSM%20project;"
          "model=SoftHSM%20v2;type=private;slot-id=3;x-vendor=1"
          "?module-path=/usr/lib/m.so&pin-source=file:///run/pin",
          u),
      "");
  EXPECT_EQ(u.token, "My Token");
  EXPECT_EQ(u.object, "k");
  EXPECT_TRUE(u.has_id);
  EXPECT_EQ(u.id, std::string("\x01\xab"));
  EXPECT_EQ(u.serial, "42");
  EXPECT_EQ(u.manufacturer, "SoftHSM project");
  EXPECT_EQ(u.model, "SoftHSM v2");
  EXPECT_EQ(u.module_path, "/usr/lib/m.so");
  EXPECT_EQ(u.pin_source, "/run/pin");
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:id=%01?pin-value=12%2534", u), "");
  EXPECT_EQ(u.pin_value, "12%34");
  EXPECT_FALSE(mtlsd::config::is_pkcs11_uri("/etc/pkcs11:x.key"));
  EXPECT_NE(mtlsd::config::parse_pkcs11_uri("pkcs11:object=a?module-path=rel.so", u), "");
  EXPECT_NE(mtlsd::config::parse_pkcs11_uri("pkcs11:object=a;pin-source=https://x/pin", u), "");
  EXPECT_NE(mtlsd::config::parse_pkcs11_uri("pkcs11:object", u), "");
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:token=A;object=k;token=B", u),
            "attribute 'token' is given twice (RFC 7512 allows each once)");
  EXPECT_EQ(
      mtlsd::config::parse_pkcs11_uri("pkcs11:object=k?module-path=/a.so&module-path=/b.so", u),
      "attribute 'module-path' is given twice (RFC 7512 allows each once)");
}

// Review: a PIN holding a separator was split into attributes, and the error quoted the pieces.
TEST(Pkcs11Uri, ErrorsDoNotQuoteWhatMayBeAPieceOfAPin) {
  mtlsd::config::pkcs11_uri u;
  for (const char* uri :
       {"pkcs11:object=k;pin-value=ab?cdSECRET&module-path=/m.so",
        "pkcs11:object=k;pin-value=ab;cdSECRET", "pkcs11:object=k?pin-value=ab&cdSECRET=1",
        "pkcs11:object=k;pin-value=ab;XySECRET$Q=%zz", "pkcs11:object=k;pin-value=12;3456=7"}) {
    const std::string why = mtlsd::config::parse_pkcs11_uri(uri, u);
    EXPECT_NE(why, "") << uri;
    EXPECT_EQ(why.find("SECRET"), std::string::npos) << why;
    EXPECT_EQ(why.find("3456"), std::string::npos) << why;
  }
}

// Review: RFC 7512 makes pin-value a query attribute. One in the path was printed by
// `check --print` without the rest of the URI (its ?module-path=), and the printed placeholder
// PIN was tried on the token, spending one of the tries before it locks.
TEST(Pkcs11Uri, PinValueOnlyInTheQueryAndNeverThePrintedPlaceholder) {
  const std::string in_path =
      "pin-value belongs in the URI's query part, after '?' (pkcs11:...?pin-value=...; "
      "RFC 7512), or give the PIN in key_pin_file";
  const std::string placeholder =
      "pin-value is REDACTED, the placeholder that mtlsd check --print writes for the PIN: the "
      "printed configuration's PIN was redacted and must be given again (or give it in "
      "key_pin_file)";
  mtlsd::config::pkcs11_uri u;
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:object=k;pin-value=1234?module-path=/m.so", u),
            in_path);
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:pin-value=REDACTED;object=k", u), in_path);
  EXPECT_EQ(
      mtlsd::config::parse_pkcs11_uri("pkcs11:object=k?module-path=/m.so&pin-value=REDACTED", u),
      placeholder);
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:object=k?pin-value=RE%44ACTED", u),
            placeholder);
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:object=k?pin-value=REDACTED1", u), "");
  EXPECT_EQ(u.pin_value, "REDACTED1");
  // module-path and pin-source, no secrets, stay accepted in the path (as libp11 and p11-kit).
  EXPECT_EQ(mtlsd::config::parse_pkcs11_uri("pkcs11:object=k;module-path=/m.so;pin-source=/p", u),
            "");
  EXPECT_EQ(u.module_path, "/m.so");
  EXPECT_EQ(u.pin_source, "/p");
  EXPECT_THAT(
      problems_of(kNoTls + R"(    tls:
      certificates:
        - {cert: a.crt, key: "pkcs11:token=t;object=a;pin-value=1234?module-path=/m.so"}
        - {cert: b.crt, key: "pkcs11:token=t;object=b?module-path=/m.so&pin-value=REDACTED"}
)"),
      ElementsAre(
          at(9, 30, "listeners[0].tls.certificates[0].key: not a usable PKCS#11 URI: " + in_path),
          at(10, 30,
             "listeners[0].tls.certificates[1].key: not a usable PKCS#11 URI: " + placeholder)));
}

}  // namespace
}  // namespace mtlsd::config

namespace mtlsd::config {
namespace {

// YAML::Load reads only the first document: a second one (`---` then more) would be dropped
// without a word, so it is refused where it starts.
TEST(ConfigMultipleDocuments, SecondDocumentIsRefusedWhereItStarts) {
  const std::string second_doc_msg =
      "a second YAML document starts here: a configuration file holds exactly one (remove the "
      "'---' line and what follows, or merge it into the first)";
  EXPECT_THAT(problems_of(kMinimal + "---\nworkers: 2\n"), ElementsAre(at(10, 1, second_doc_msg)));
  // Even an empty second document, and after a leading `---` that opens the first.
  EXPECT_THAT(problems_of("---\n" + kMinimal + "---\n"), ElementsAre(at(11, 1, second_doc_msg)));
}

TEST(ConfigMultipleDocuments, LeadingMarkerAndDocumentEndAreFine) {
  load_ok("---\n" + kMinimal);
  load_ok(kMinimal + "...\n");
  load_ok("# comment\n---\n" + kMinimal + "...\n# trailing comment\n");
}

TEST(ConfigMultipleDocuments, SyntaxErrorInASecondDocumentIsReported) {
  auto problems = problems_of(kMinimal + "---\nworkers: [2\n");
  ASSERT_FALSE(problems.empty());
  EXPECT_THAT(problems.front(), ::testing::StartsWith(kFile + ":"));
  EXPECT_THAT(problems.front(), ::testing::HasSubstr("YAML syntax error"));
}

// --- allow.rules -------------------------------------------------------------------------------

TEST(ConfigAllowRules, ParsesMatchersNotAndCidrs) {
  configuration c = load_ok(kMinimal + R"(      allow:
        spiffe_ids: ["spiffe://td/ops"]
        rules:
          - spiffe_ids: ["spiffe://td/ns/*"]
            source_cidrs: [10.0.0.0/8, "::1", "::ffff:192.0.2.1"]
            sni: [API.Example.org]
            not:
              dns_sans: [bad.example.org]
              source_cidrs: [10.9.0.0/16]
          - not: {sni: ["*.admin.example.org"]}
)");
  const allow_list& a = c.listeners.at(0).client_auth.allow;
  EXPECT_THAT(a.spiffe_ids, ElementsAre("spiffe://td/ops"));
  ASSERT_EQ(a.rules.size(), 2u);
  const auto& r0 = a.rules[0];
  EXPECT_EQ(r0.where.line, 13);
  EXPECT_EQ(r0.where.column, 13);
  EXPECT_THAT(r0.match.spiffe_ids, ElementsAre("spiffe://td/ns/*"));
  ASSERT_EQ(r0.match.source_cidrs.size(), 3u);
  EXPECT_EQ(r0.match.source_cidrs[0].prefix, 8);
  EXPECT_FALSE(r0.match.source_cidrs[0].base.v6);
  EXPECT_EQ(r0.match.source_cidrs[1].prefix, 128);
  EXPECT_TRUE(r0.match.source_cidrs[1].base.v6);
  // A mapped address is the IPv4 address it carries.
  EXPECT_EQ(r0.match.source_cidrs[2].str(), "192.0.2.1/32");
  EXPECT_THAT(r0.match.sni, ElementsAre("api.example.org"));
  EXPECT_THAT(r0.exclude.dns_sans, ElementsAre("bad.example.org"));
  EXPECT_EQ(r0.exclude.source_cidrs.at(0).str(), "10.9.0.0/16");
  EXPECT_TRUE(a.rules[1].match.empty());
  EXPECT_THAT(a.rules[1].exclude.sni, ElementsAre("*.admin.example.org"));
  EXPECT_FALSE(a.empty());
}

TEST(ConfigAllowRules, RulesAloneMakeTheListNonEmpty) {
  configuration c = load_ok(kMinimal + R"(      allow:
        rules:
          - common_names: [alice]
)");
  EXPECT_FALSE(c.listeners.at(0).client_auth.allow.empty());
  EXPECT_TRUE(c.listeners.at(0).client_auth.allow.identity_matchers::empty());
}

TEST(ConfigAllowRules, UnknownMatcherBadCidrBadSni) {
  EXPECT_THAT(
      problems_of(kMinimal + R"(      allow:
        rules:
          - spiffe_id: [spiffe://td/a]
            source_cidrs: [10.0.0.0/33, 10.0.0.1/8, nonsense, 10.0.0.0/8]
            sni: ["a b"]
            not: {not: {sni: [x]}}
)"),
      ElementsAre(
          at(12, 13,
             "unknown key 'spiffe_id' in listeners[0].client_auth.allow.rules[0] (did you mean "
             "'spiffe_ids'?)"),
          at(13, 28,
             "listeners[0].client_auth.allow.rules[0].source_cidrs[0]: invalid CIDR '10.0.0.0/33': "
             "invalid prefix length '33' (0 to 32)"),
          at(13, 41,
             "listeners[0].client_auth.allow.rules[0].source_cidrs[1]: invalid CIDR '10.0.0.1/8': "
             "host bits set: did you mean 10.0.0.0/8?"),
          at(13, 53,
             "listeners[0].client_auth.allow.rules[0].source_cidrs[2]: invalid CIDR 'nonsense': "
             "not an IP address or CIDR range (e.g. 10.0.0.0/8, 2001:db8::/32)"),
          at(14, 19,
             "listeners[0].client_auth.allow.rules[0].sni: 'a b' is not a server name: expected "
             "a DNS name or '*.suffix'"),
          at(15, 19, "unknown key 'not' in listeners[0].client_auth.allow.rules[0].not")));
}

TEST(ConfigAllowRules, EmptyRuleEmptyNotEmptyMatcher) {
  EXPECT_THAT(problems_of(kMinimal + R"(      allow:
        rules:
          - {}
          - ~
          - dns_sans: []
            not: {}
)"),
              ElementsAre(at(12, 13,
                             "listeners[0].client_auth.allow.rules[0]: an empty rule (give at "
                             "least one matcher)"),
                          at(13, 13,
                             "listeners[0].client_auth.allow.rules[1]: an empty rule (give at "
                             "least one matcher: spiffe_ids, uri_sans, dns_sans, common_names, "
                             "organizational_units, sha256_fingerprints, email_sans, "
                             "source_cidrs, sni, not)"),
                          at(14, 13,
                             "listeners[0].client_auth.allow.rules[2].dns_sans: an empty list "
                             "never matches; remove the matcher"),
                          at(15, 18,
                             "listeners[0].client_auth.allow.rules[2].not: an empty 'not' (give "
                             "at least one matcher)")));
}

TEST(ConfigAllowRules, NoSourceCidrsInServerAuth) {
  EXPECT_THAT(problems_of(R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:15001
    upstream: 10.0.0.7:8443
    server_auth:
      allow:
        rules:
          - sni: [api.example.org]
            not: {source_cidrs: [10.0.0.0/8]}
)"),
              ElementsAre(at(10, 33,
                             "listeners[0].server_auth.allow.rules[0].not.source_cidrs: not "
                             "available in server_auth (the remote is the address mtlsd "
                             "connects to; use sni, or the identity matchers)")));
}

TEST(ConfigAllowRules, RulesMustBeAList) {
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n        rules: {sni: [a]}\n"),
              ElementsAre(at(11, 16,
                             "listeners[0].client_auth.allow.rules: expected a list of rules, "
                             "got a mapping")));
}

TEST(RuleCidr, FamiliesNeverMixAndMappedCountsAsV4) {
  auto c = [](std::string_view t) { return std::get<cidr>(parse_cidr(t)); };
  auto ip = [](std::string_view t) { return *parse_ip(t); };
  EXPECT_TRUE(c("127.0.0.0/8").contains(ip("127.0.0.2")));
  EXPECT_FALSE(c("127.0.0.1/32").contains(ip("127.0.0.2")));
  EXPECT_TRUE(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));  // dual-stack socket
  EXPECT_FALSE(c("127.0.0.1").contains(ip("::1")));              // families never mix
  EXPECT_FALSE(c("::1").contains(ip("127.0.0.1")));
  EXPECT_FALSE(c("0.0.0.0/0").contains(ip("2001:db8::1")));
  EXPECT_TRUE(c("::/0").contains(ip("2001:db8::1")));
  EXPECT_TRUE(c("2001:db8::/33").contains(ip("2001:db8:7fff::1")));
  EXPECT_FALSE(c("2001:db8::/33").contains(ip("2001:db8:8000::1")));
  EXPECT_EQ(ip("::ffff:10.1.2.3").str(), "10.1.2.3");
}

TEST(ConfigUpstreamCheck, OffByDefaultAndDefaults) {
  EXPECT_FALSE(load_ok(kMinimal).listeners[0].upstream_check.enabled);
  auto c = load_ok(kMinimal + "    upstream_check:\n").listeners[0].upstream_check;
  EXPECT_TRUE(c.enabled);
  EXPECT_EQ(c.type, upstream_check_type::tcp);
  EXPECT_EQ(c.interval, 5s);
  EXPECT_EQ(c.timeout, 1s);
  c = load_ok(
          kMinimal +
          "    upstream_check: {type: http, path: \"/healthz?x=1\", interval: 2s, timeout: 2s}\n")
          .listeners[0]
          .upstream_check;
  EXPECT_EQ(c.type, upstream_check_type::http);
  EXPECT_EQ(c.path, "/healthz?x=1");
  EXPECT_EQ(c.interval, 2s);
  EXPECT_EQ(c.timeout, 2s);
  // Review: an interval alone below the default timeout ran with 1 s timeouts, and `check
  // --print` then printed a configuration `check` refuses. The default is at most the interval.
  c = load_ok(kMinimal + "    upstream_check: {interval: 200ms}\n").listeners[0].upstream_check;
  EXPECT_EQ(c.timeout, 200ms);
}

TEST(ConfigUpstreamCheck, ErrorsNameTheKey) {
  // Lines 10-.. follow kMinimal.
  // Review: a scalar here threw from yaml-cpp past the parser (check aborted, a reload ended
  // the daemon). It is an error with its position, like any value of the wrong kind.
  for (const char* scalar : {"5s", "true"}) {
    const auto problems = problems_of(kMinimal + "    upstream_check: " + scalar + "\n");
    ASSERT_EQ(problems.size(), 1u) << scalar;
    EXPECT_THAT(problems[0], ::testing::StartsWith(at(10, 21, "listeners[0].upstream_check")));
  }
  EXPECT_THAT(problems_of(kMinimal + "    upstream_check:\n      type: udp\n"),
              ElementsAre(at(11, 13,
                             "listeners[0].upstream_check.type: invalid value 'udp': expected "
                             "tcp | http")));
  EXPECT_THAT(problems_of(kMinimal + "    upstream_check:\n      type: http\n      path: health\n"),
              ElementsAre(at(12, 13,
                             "listeners[0].upstream_check.path: 'health' must start with / and "
                             "hold no spaces, control characters or '#'")));
  EXPECT_THAT(
      problems_of(kMinimal + "    upstream_check:\n      path: /x\n"),
      ElementsAre(at(11, 13,
                     "warning: listeners[0].upstream_check.path is not used with type: tcp (it "
                     "applies to type: http only)")));
  // The contract's example (interface.md) as written: usable, with that warning.
  const load_result contract = load_text(kMinimal +
                                             "    upstream_check:\n      type: tcp\n      path: "
                                             "/healthz\n      interval: 5s\n      timeout: 1s\n",
                                         kFile);
  EXPECT_TRUE(contract.config.has_value());
  EXPECT_EQ(contract.problems.size(), 1u);
  EXPECT_THAT(
      problems_of(kMinimal + "    upstream_check:\n      interval: 0s\n"),
      ElementsAre(at(11, 17, "listeners[0].upstream_check.interval must be greater than 0")));
  EXPECT_THAT(
      problems_of(kMinimal + "    upstream_check:\n      interval: 1s\n      timeout: 2s\n"),
      ElementsAre(at(12, 16,
                     "listeners[0].upstream_check.timeout (2s) must not exceed "
                     "listeners[0].upstream_check.interval (1s)")));
  EXPECT_THAT(problems_of(kMinimal + "    upstream_check:\n      retries: 3\n"),
              ElementsAre(at(11, 7, "unknown key 'retries' in listeners[0].upstream_check")));
  EXPECT_THAT(problems_of(R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:7000
    upstream: remote.example.org:443
    upstream_check: {type: http}
)"),
              ::testing::Contains(at(6, 28,
                                     "listeners[0].upstream_check.type: http applies to mode: "
                                     "server only (in client mode the upstream speaks TLS; use "
                                     "tcp)")));
}

}  // namespace
}  // namespace mtlsd::config

// --- tls.spiffe -------------------------------------------------------------------------------

namespace mtlsd::config {
namespace {

// Lines 1-4; the tls block (line 5) follows.
const std::string kSpiffeListener = R"(listeners:
  - name: inbound
    listen: 0.0.0.0:8443
    upstream: 127.0.0.1:8080
)";

TEST(ConfigSpiffe, ReplacesCertKeyAndCa) {
  auto c = load_ok(kSpiffeListener + R"(    tls:
      spiffe:
        workload_api: unix:///run/spire/sockets/../sockets/agent.sock
        trust_domains: [spiffe://partner.org, other.example]
)");
  const auto& s = c.listeners.at(0).tls.spiffe;
  EXPECT_TRUE(s.enabled);
  EXPECT_EQ(s.workload_api, "unix:///run/spire/sockets/../sockets/agent.sock");
  EXPECT_EQ(s.socket_path, "/run/spire/sockets/agent.sock");
  EXPECT_THAT(s.trust_domains, ElementsAre("partner.org", "other.example"));
  EXPECT_EQ(s.where.line, 7);
  EXPECT_FALSE(load_ok(kMinimal).listeners.at(0).tls.spiffe.enabled);
}

TEST(ConfigSpiffe, EnvReadsSpiffeEndpointSocket) {
  const std::string yaml = kSpiffeListener + R"(    tls:
      spiffe: {workload_api: env}
)";
  ::setenv("SPIFFE_ENDPOINT_SOCKET", "unix:/tmp/agent.sock", 1);
  EXPECT_EQ(load_ok(yaml).listeners.at(0).tls.spiffe.socket_path, "/tmp/agent.sock");
  ::setenv("SPIFFE_ENDPOINT_SOCKET", "tcp://127.0.0.1:8081", 1);
  EXPECT_THAT(problems_of(yaml),
              ElementsAre(at(6, 30,
                             "listeners[0].tls.spiffe.workload_api: 'tcp://127.0.0.1:8081' (from "
                             "SPIFFE_ENDPOINT_SOCKET): expected unix:/path/to/agent.sock (only "
                             "unix sockets are supported)")));
  ::unsetenv("SPIFFE_ENDPOINT_SOCKET");
  EXPECT_THAT(problems_of(yaml), ElementsAre(at(6, 30,
                                                "listeners[0].tls.spiffe.workload_api: env, but "
                                                "SPIFFE_ENDPOINT_SOCKET is not set")));
}

TEST(ConfigSpiffe, Errors) {
  EXPECT_THAT(
      problems_of(kSpiffeListener + R"(    tls:
      spiffe:
        workload_api: unix://host/agent.sock
        trust_domains: [Example.org, "spiffe://ok.org/"]
        colour: red
)"),
      ElementsAre(at(9, 9, "unknown key 'colour' in listeners[0].tls.spiffe"),
                  at(7, 23,
                     "listeners[0].tls.spiffe.workload_api: 'unix://host/agent.sock': a unix: "
                     "URL names no host: write unix:///path or unix:/path"),
                  at(8, 25,
                     "listeners[0].tls.spiffe.trust_domains: 'Example.org' is not a trust domain "
                     "name (lower-case letters, digits, '.', '-', '_', as in spiffe://NAME/...)")));
  EXPECT_THAT(problems_of(kSpiffeListener + R"(    tls:
      spiffe: {workload_api: "unix:relative.sock"}
)"),
              ElementsAre(at(6, 30,
                             "listeners[0].tls.spiffe.workload_api: 'unix:relative.sock': the "
                             "socket path must be absolute")));
}

// The contract's default (interface.md: `workload_api: env`): `spiffe:` alone, or without the
// key, finds the agent as go-spiffe and ghostunnel do.
TEST(ConfigSpiffe, WorkloadApiDefaultsToEnv) {
  for (const std::string spiffe : {"      spiffe:\n", "      spiffe: {trust_domains: [a.org]}\n"}) {
    const std::string yaml = kSpiffeListener + "    tls:\n" + spiffe;
    ::setenv("SPIFFE_ENDPOINT_SOCKET", "unix:/tmp/agent.sock", 1);
    const auto cfg = load_ok(yaml);
    const auto& s = cfg.listeners.at(0).tls.spiffe;
    EXPECT_EQ(s.workload_api, "env") << spiffe;
    EXPECT_EQ(s.socket_path, "/tmp/agent.sock") << spiffe;
    ::unsetenv("SPIFFE_ENDPOINT_SOCKET");
    EXPECT_THAT(problems_of(yaml),
                ElementsAre(at(6, spiffe.find('{') == std::string::npos ? 7 : 15,
                               "listeners[0].tls.spiffe.workload_api: not given, so env (the "
                               "default), but SPIFFE_ENDPOINT_SOCKET is not set: give "
                               "unix:/path/to/agent.sock, or set the variable")))
        << spiffe;
  }
}

TEST(ConfigSpiffe, ExcludesCertificateFiles) {
  EXPECT_THAT(problems_of(kMinimalTlsLast + R"(      spiffe: {workload_api: "unix:/a.sock"}
)"),
              ElementsAre(at(10, 15,
                             "listeners[0].tls.spiffe: the Workload API supplies the certificate "
                             "and key: give either spiffe or cert/key/pkcs12/certificates, not "
                             "both")));
  EXPECT_THAT(problems_of(kSpiffeListener + R"(    tls:
      spiffe: {workload_api: "unix:/a.sock"}
      certificates: [{cert: a.crt, key: a.key}]
    revocation: {stapling: true}
)"),
              ElementsAre(at(6, 15,
                             "listeners[0].tls.spiffe: the Workload API supplies the certificate "
                             "and key: give either spiffe or cert/key/pkcs12/certificates, not "
                             "both"),
                          at(8, 28,
                             "listeners[0].revocation.stapling: not supported with tls.spiffe (an "
                             "X.509-SVID names no OCSP responder)")));
}

TEST(ConfigSpiffe, ClientModeMustNameTheRemote) {
  const std::string client = R"(listeners:
  - name: out
    mode: client
    listen: 127.0.0.1:7000
    upstream: 127.0.0.1:8443
    tls:
      spiffe: {workload_api: "unix:/a.sock"}
)";
  const auto names_no_remote = ElementsAre(
      at(7, 15,
         "listeners[0].tls.spiffe in mode: client: name the remote's SPIFFE ID in "
         "server_auth.allow.spiffe_ids (an X.509-SVID carries no host name to check; every rule "
         "needs an identity matcher, sni and not: alone name no remote), or set "
         "server_auth.server_name"));
  EXPECT_THAT(problems_of(client), names_no_remote);
  load_ok(client + "    server_auth: {allow: {spiffe_ids: [\"spiffe://td/remote\"]}}\n");
  load_ok(client + "    server_auth: {server_name: remote.example.org}\n");
  // `sni` is the name mtlsd sends itself, and `not:` only excludes: such rules admit any SVID
  // of the trust domain (review).
  EXPECT_THAT(problems_of(client + "    server_auth: {allow: {rules: [{sni: [remote]}]}}\n"),
              names_no_remote);
  EXPECT_THAT(problems_of(client + "    server_auth:\n      allow:\n        rules:\n"
                                   "          - not: {spiffe_ids: [\"spiffe://td/bad\"]}\n"),
              names_no_remote);
  // One rule naming the remote does not make up for another that names none.
  EXPECT_THAT(problems_of(client + "    server_auth:\n      allow:\n        spiffe_ids: "
                                   "[\"spiffe://td/remote\"]\n        rules: [{sni: [remote]}]\n"),
              names_no_remote);
  load_ok(client +
          "    server_auth:\n      allow:\n        rules:\n"
          "          - {sni: [remote], spiffe_ids: [\"spiffe://td/remote\"]}\n");
}

}  // namespace
}  // namespace mtlsd::config

// --- admission: allowed_sources, accept_proxy_protocol, limits, max_connection_age ----------

namespace mtlsd::config {
namespace {

TEST(ConfigAdmission, DefaultsAreOff) {
  const auto c = load_ok(kMinimal);
  const auto& l = c.listeners[0];
  EXPECT_TRUE(l.allowed_sources.empty());
  EXPECT_FALSE(l.accept_proxy_protocol.enabled);
  EXPECT_EQ(l.limits.connections_per_second, 0);
  EXPECT_EQ(l.limits.max_connections_per_source, 0);
  EXPECT_EQ(l.limits.max_connections_per_identity, 0);
  EXPECT_EQ(l.limits.pending_cap(l.max_connections), 5000);  // half of max_connections
  EXPECT_EQ(l.timeouts.max_connection_age, 0s);
}

TEST(ConfigAdmission, ParsesEveryKey) {
  const auto c = load_ok(kMinimal + R"(    allowed_sources: [10.0.0.0/8, "2001:db8::/32"]
    accept_proxy_protocol: {versions: [v1], trusted_sources: [127.0.0.1]}
    limits: {connections_per_second: 20, burst: 40, max_connections_per_source: 3,
             max_connections_per_identity: 2, max_pending_handshakes: 7}
    timeouts: {max_connection_age: 2h}
)");
  const auto& l = c.listeners[0];
  ASSERT_EQ(l.allowed_sources.size(), 2u);
  EXPECT_EQ(l.allowed_sources[1].str(), "2001:db8::/32");
  EXPECT_TRUE(l.accept_proxy_protocol.enabled);
  EXPECT_TRUE(l.accept_proxy_protocol.v1);
  EXPECT_FALSE(l.accept_proxy_protocol.v2);
  EXPECT_EQ(l.accept_proxy_protocol.trusted_sources.at(0).str(), "127.0.0.1/32");
  EXPECT_EQ(l.limits.bucket_size(), 40);
  EXPECT_EQ(l.limits.pending_cap(l.max_connections), 7);
  EXPECT_EQ(l.timeouts.max_connection_age, 2h);
  // An empty block turns the header on with both versions, from any peer.
  const auto d = load_ok(kMinimal + "    accept_proxy_protocol: {}\n");
  EXPECT_TRUE(d.listeners[0].accept_proxy_protocol.enabled);
  EXPECT_TRUE(d.listeners[0].accept_proxy_protocol.v1 && d.listeners[0].accept_proxy_protocol.v2);
}

// Review: with no trusted_sources any client can send a header choosing the address that
// allowed_sources and the per-source limit judge; said, not refused (nginx's default).
TEST(ConfigAdmission, SourceChecksBehindAHeaderAnyoneMaySendAreWarnedAbout) {
  EXPECT_THAT(problems_of(kMinimal + "    allowed_sources: [10.0.0.0/8]\n"
                                     "    accept_proxy_protocol: {}\n"
                                     "    limits: {max_connections_per_source: 3}\n"),
              ElementsAre(at(11, 28,
                             "warning: listeners[0].accept_proxy_protocol: any peer may send the "
                             "header (trusted_sources is empty), so any client can choose the "
                             "source address allowed_sources and "
                             "limits.max_connections_per_source judge: list the load balancers "
                             "in trusted_sources")));
  // Allow rules judge the source too (review: they were not named).
  EXPECT_THAT(problems_of(kMinimal + "      allow:\n"
                                     "        rules:\n"
                                     "          - source_cidrs: [10.0.0.0/8]\n"
                                     "    accept_proxy_protocol: {}\n"),
              ElementsAre(at(13, 28,
                             "warning: listeners[0].accept_proxy_protocol: any peer may send the "
                             "header (trusted_sources is empty), so any client can choose the "
                             "source address client_auth.allow rules' source_cidrs judge: list "
                             "the load balancers in trusted_sources")));
  // What the upstream is told of the source is as spoofable (review: X-Forwarded-For and the
  // PROXY v2 header mtlsd sends were not named).
  EXPECT_THAT(problems_of(kMinimal + "    accept_proxy_protocol: {}\n"
                                     "    proxy_protocol: v2\n"
                                     "    http: {}\n"),
              ElementsAre(at(10, 28,
                             "warning: listeners[0].accept_proxy_protocol: any peer may send the "
                             "header (trusted_sources is empty), so any client can choose the "
                             "source address the X-Forwarded-For hop mtlsd appends and the PROXY "
                             "v2 header mtlsd sends upstream: list the load balancers in "
                             "trusted_sources")));
  EXPECT_THAT(problems_of(kMinimal + "    allowed_sources: [10.0.0.0/8]\n"
                                     "    accept_proxy_protocol: {}\n"
                                     "    http: {}\n"),
              ElementsAre(at(11, 28,
                             "warning: listeners[0].accept_proxy_protocol: any peer may send the "
                             "header (trusted_sources is empty), so any client can choose the "
                             "source address allowed_sources judge, and the X-Forwarded-For hop "
                             "mtlsd appends upstream: list the load balancers in "
                             "trusted_sources")));
  load_ok(kMinimal +
          "    accept_proxy_protocol: {}\n"
          "    http: {x_forwarded_for: off}\n");
  load_ok(kMinimal + "    accept_proxy_protocol: {}\n");  // nothing judges or tells the source
  load_ok(kMinimal +
          "    allowed_sources: [10.0.0.0/8]\n"
          "    accept_proxy_protocol: {trusted_sources: [10.0.0.1]}\n");
}

TEST(ConfigAdmission, ErrorsPointAtTheValue) {
  EXPECT_THAT(problems_of(kMinimal + "    allowed_sources: [10.0.0.0/8, 10.1.2.3/8]\n"),
              ElementsAre(at(10, 35,
                             "listeners[0].allowed_sources[1]: invalid CIDR '10.1.2.3/8': host "
                             "bits set: did you mean 10.0.0.0/8?")));
  EXPECT_THAT(problems_of(kMinimal + "    allowed_sources: 10.0.0.0/8\n"),
              ElementsAre(at(10, 22,
                             "listeners[0].allowed_sources: expected a list of CIDR ranges (e.g. "
                             "[10.0.0.0/8]), got '10.0.0.0/8'")));
  EXPECT_THAT(problems_of(kMinimal + "    accept_proxy_protocol: {versions: [v3]}\n"),
              ElementsAre(at(10, 39,
                             "listeners[0].accept_proxy_protocol.versions: unknown version 'v3': "
                             "expected v1 or v2")));
  EXPECT_THAT(
      problems_of(kMinimal + "    accept_proxy_protocol: {trusted: []}\n"),
      ElementsAre(at(10, 29, "unknown key 'trusted' in listeners[0].accept_proxy_protocol")));
  EXPECT_THAT(problems_of(kMinimal + "    limits: {burst: 5}\n"),
              ElementsAre(at(10, 21,
                             "listeners[0].limits.burst needs connections_per_second (the rate "
                             "that refills it)")));
  EXPECT_THAT(problems_of(kMinimal + "    limits: {max_connections_per_source: -1}\n"),
              ElementsAre(at(10, 42,
                             "listeners[0].limits.max_connections_per_source: -1 is out of range "
                             "(0 to 10000000)")));
  EXPECT_THAT(problems_of(kMinimal + "    timeouts: {max_connection_age: forever}\n"),
              ElementsAre(at(10, 36,
                             "listeners[0].timeouts.max_connection_age: invalid duration "
                             "'forever': expected a number with a unit (ms, s, m, h), e.g. "
                             "250ms, 10s, 5m")));
}

TEST(ConfigAdmission, UnixListenerPeersHaveNoAddress) {
  const std::string unix_listener = R"(listeners:
  - name: inbound
    listen: unix:/run/in.sock
    upstream: 127.0.0.1:8080
    tls: {cert: tls.crt, key: tls.key}
    client_auth: {ca: [ca.crt]}
)";
  EXPECT_THAT(problems_of(unix_listener + "    allowed_sources: [10.0.0.0/8]\n"),
              ElementsAre(at(7, 22,
                             "listeners[0].allowed_sources: a unix-socket listener's peers have "
                             "no IP address (use accept_proxy_protocol, or drop the list)")));
  // Behind a PROXY header they do have one.
  load_ok(unix_listener +
          "    allowed_sources: [10.0.0.0/8]\n    accept_proxy_protocol: {versions: [v2]}\n");
}

}  // namespace
}  // namespace mtlsd::config

// --- review: shapes and values that were not reported --------------------------------------

namespace mtlsd::config {
namespace {

TEST(ConfigErrors, HttpAsAScalarBesideTlsAlpnIsReportedNotThrown) {
  // yaml-cpp throws when a check subscripts a scalar: `check` used to abort (terminate) here.
  const auto problems = problems_of(kMinimalTlsLast + "      alpn: [h2]\n    http: yes\n");
  ASSERT_FALSE(problems.empty());
  for (const auto& p : problems)
    EXPECT_EQ(p.rfind(kFile + ":11:11: ", 0), 0u) << p;
}

TEST(ConfigErrors, AnEmptyEntryInAFileListIsAnError) {
  // Dropped silently, an entry that rendered empty (["${CRL}"]) turned CRL checks off.
  EXPECT_EQ(problems_of(kMinimal + "    revocation:\n      crl_files: [\"\"]\n"),
            std::vector<std::string>{
                at(11, 19, "listeners[0].revocation.crl_files[0]: an empty file path")});
  std::string two_cas = kMinimal;
  two_cas.replace(two_cas.find("[ca.crt]"), 8, "[ca.crt, ~]");
  EXPECT_EQ(
      problems_of(two_cas),
      std::vector<std::string>{at(9, 20, "listeners[0].client_auth.ca[1]: an empty file path")});
}

}  // namespace
}  // namespace mtlsd::config

namespace mtlsd::config {
namespace {

TEST(ConfigWarnings, AnHttpUpstreamCheckOfAnH2cUpstreamIsWarnedAbout) {
  const std::string h2c = kMinimal + "    http: {protocols: [h2], upstream_protocol: h2c}\n";
  EXPECT_EQ(problems_of(h2c + "    upstream_check: {type: http}\n"),
            std::vector<std::string>{at(
                11, 21,
                "warning: listeners[0].upstream_check: type: http probes with HTTP/1.1, which an "
                "h2c-only upstream (http.upstream_protocol: h2c) does not answer: it would read "
                "down; use type: tcp unless the upstream also speaks HTTP/1.1")});
  load_ok(h2c + "    upstream_check: {type: tcp}\n");
}

}  // namespace
}  // namespace mtlsd::config

namespace mtlsd::config {
namespace {

// listeners[].unix_socket_mode (review: a unix listener's socket took only what the umask left,
// so under the shipped unit only its owner could connect).
std::string unix_listener(const std::string& listen, const std::string& mode) {
  return "listeners:\n"
         "  - name: app\n"
         "    mode: client\n"
         "    listen: " +
         listen +
         "\n"
         "    unix_socket_mode: " +
         mode +
         "\n"
         "    upstream: 10.0.0.7:8443\n";
}

TEST(ConfigParse, UnixSocketModeIsOctalPermissionBits) {
  EXPECT_EQ(load_ok(unix_listener("unix:/tmp/app.sock", "\"0660\"")).listeners[0].unix_socket_mode,
            0660u);
  // Unquoted, yaml-cpp reads the same text.
  EXPECT_EQ(load_ok(unix_listener("unix:/tmp/app.sock", "0666")).listeners[0].unix_socket_mode,
            0666u);
  EXPECT_EQ(load_ok(unix_listener("unix:/tmp/app.sock", "\"00\"")).listeners[0].unix_socket_mode,
            0u);
  // Absent: none, the umask decides.
  EXPECT_FALSE(load_ok(kMinimal).listeners[0].unix_socket_mode.has_value());
}

TEST(ConfigErrors, UnixSocketModeIsRefusedWhereItCannotApply) {
  EXPECT_EQ(problems_of(unix_listener("127.0.0.1:15001", "\"0660\"")),
            std::vector<std::string>{at(5, 23,
                                        "listeners[0].unix_socket_mode: applies to a unix: listen "
                                        "address only, and listen is 127.0.0.1:15001")});
  EXPECT_EQ(problems_of(unix_listener("unix:/tmp/app.sock", "\"01777\"")),
            std::vector<std::string>{at(5, 23,
                                        "listeners[0].unix_socket_mode: 01777 is above 0777: only "
                                        "the read, write and execute bits of owner, group and "
                                        "others can be set")});
  // Without its leading 0: 660 could be decimal, and PyYAML writes an unquoted 0660 back as 432.
  for (const std::string bad : {"660", "432", "\"0689\"", "rw-rw----", "\"\""})
    EXPECT_EQ(problems_of(unix_listener("unix:/tmp/app.sock", bad)),
              std::vector<std::string>{
                  at(5, 23,
                     "listeners[0].unix_socket_mode: expected permission bits in octal with a "
                     "leading 0, in quotes (e.g. \"0660\"), got '" +
                         (bad.front() == '"' ? bad.substr(1, bad.size() - 2) : bad) + "'")})
        << bad;
}

}  // namespace
}  // namespace mtlsd::config
