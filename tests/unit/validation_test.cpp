// What is checked about a peer's certificate, and that `mtlsd verify` (verify_offline) and a
// real handshake agree: the same certificates run through both, over a memory BIO pair between
// an SSL made from mtlsd's own context and a test peer, must get the same verdict and reason.
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/name_constraints.hpp"
#include "mtlsd/tls/verify.hpp"
#include "test_pki.hpp"

namespace mtlsd {
namespace {

struct pki_set {
  test::credential root = test::make_root_ca({.cn = "Validation Root"});
  test::credential intermediate = test::make_intermediate(root, {.cn = "Validation Issuing CA"});
  test::credential server = test::make_leaf(
      root, {.cn = "server", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
};

const pki_set& pki() {
  static const pki_set p;
  return p;
}

// A configuration in a temporary directory: the listener `yaml` describes, with root.crt,
// intermediate.crt and server.crt/key next to it.
class listener_files {
 public:
  listener_files() {
    dir_.write("root.crt", test::to_pem(pki().root.cert()), 0644);
    dir_.write("intermediate.crt", test::to_pem(pki().intermediate.cert()), 0644);
    dir_.write_pair("server", pki().server);
  }
  void write(const std::string& name, const std::string& content) {
    dir_.write(name, content, 0644);
  }
  tls::tls_context build(const std::string& listener_yaml) {
    dir_.write("mtlsd.yaml", "listeners:\n" + listener_yaml, 0644);
    auto r = config::load_file((dir_.path() / "mtlsd.yaml").string());
    for (const auto& p : r.problems)
      ADD_FAILURE() << p.str();
    if (!r.config) throw std::runtime_error("configuration does not load");
    return tls::build_context(r.config->listeners.at(0));
  }

 private:
  test::pki_dir dir_;
};

std::string server_listener(const std::string& ca = "root.crt", const std::string& extra = "") {
  return "  - name: inbound\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:8080\n"
         "    tls: {cert: server.crt, key: server.key}\n"
         "    client_auth:\n      ca: [" +
         ca + "]\n" + extra;
}

std::string client_listener(const std::string& ca = "root.crt", const std::string& extra = "",
                            const std::string& upstream = "localhost:8443") {
  return "  - name: outbound\n    mode: client\n    listen: 127.0.0.1:0\n    upstream: " +
         upstream + "\n    server_auth:\n      ca: [" + ca + "]\n" + extra;
}

std::string verdict(const std::optional<reason>& r) {
  return r ? std::string(to_string(*r)) : std::string("accepted");
}

tls::verify_outcome offline(const tls::tls_context& t, const test::credential& leaf,
                            const std::vector<test::credential>& chain = {}) {
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (const auto& c : chain)
    sk_X509_push(untrusted, c.cert());
  auto out = t.peer_verifier->verify_offline(t.ctx.get(), leaf.cert(), untrusted, std::nullopt);
  sk_X509_free(untrusted);
  return out;
}

// A peer context with no security level, so that it can present whatever a test gives it.
SSL_CTX* lax_ctx(bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  SSL_CTX_set_security_level(ctx, 0);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  return ctx;
}

struct handshake_result {
  std::optional<reason> refusal;  // what mtlsd's side concluded (the verifier, else SSL_R_*)
  std::string detail;
  bool completed = false;
};

// Runs a handshake between `ours` (an SSL of mtlsd's context, verifier bound) and `theirs` over
// a BIO pair and classifies our side's failure the way the session does.
handshake_result handshake(SSL* ours, SSL* theirs, bool we_are_server) {
  tls::verify_outcome vo;
  tls::verifier::bind(ours, &vo);
  BIO* a = nullptr;
  BIO* b = nullptr;
  BIO_new_bio_pair(&a, 0, &b, 0);
  SSL_set_bio(ours, a, a);
  SSL_set_bio(theirs, b, b);
  if (we_are_server) {
    SSL_set_accept_state(ours);
    SSL_set_connect_state(theirs);
  } else {
    SSL_set_connect_state(ours);
    SSL_set_accept_state(theirs);
  }
  handshake_result r;
  bool ours_done = false, theirs_done = false, ours_failed = false;
  int ssl_reason = 0;
  for (int i = 0; i < 50 && !ours_done && !ours_failed; ++i) {
    if (!theirs_done) {
      const int rc = SSL_do_handshake(theirs);
      if (rc == 1) theirs_done = true;
      const int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(theirs, rc);
      ERR_clear_error();
      if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        theirs_done = true;  // the peer gave up (it read our alert)
    }
    const int rc = SSL_do_handshake(ours);
    if (rc == 1) {
      ours_done = true;
    } else {
      const int e = SSL_get_error(ours, rc);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        ours_failed = true;
        ssl_reason = ERR_GET_REASON(ERR_peek_error());
      }
    }
    ERR_clear_error();
  }
  r.completed = ours_done;
  if (vo.refusal) {
    r.refusal = vo.refusal;
    r.detail = vo.detail;
  } else if (ours_failed) {
    r.refusal = tls::reason_from_ssl_failure(ssl_reason).value_or(reason::protocol_error);
    r.detail = ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, ssl_reason))
                   ? ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, ssl_reason))
                   : "";
  }
  return r;
}

// mtlsd in mode: server judges a client presenting `leaf` (+ `chain`) with its key.
handshake_result client_presents(const tls::tls_context& t, const test::credential& leaf,
                                 const std::vector<test::credential>& chain = {},
                                 EVP_PKEY* key = nullptr, bool tls12 = false) {
  SSL_CTX* cctx = lax_ctx(false);
  // A TLS 1.3 client has no signature scheme for some keys (P-192) and sends no certificate.
  if (tls12) SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
  SSL* theirs = SSL_new(cctx);
  SSL_use_certificate(theirs, leaf.cert());
  SSL_use_PrivateKey(theirs, key ? key : leaf.key());
  for (const auto& c : chain)
    SSL_add1_chain_cert(theirs, c.cert());
  SSL* ours = SSL_new(t.ctx.get());
  auto r = handshake(ours, theirs, true);
  SSL_free(ours);
  SSL_free(theirs);
  SSL_CTX_free(cctx);
  return r;
}

// mtlsd in mode: client judges a server presenting `leaf`.
handshake_result server_presents(const tls::tls_context& t, const test::credential& leaf,
                                 const std::vector<test::credential>& chain = {}) {
  SSL_CTX* sctx = lax_ctx(true);
  SSL* theirs = SSL_new(sctx);
  SSL_use_certificate(theirs, leaf.cert());
  SSL_use_PrivateKey(theirs, leaf.key());
  for (const auto& c : chain)
    SSL_add1_chain_cert(theirs, c.cert());
  SSL* ours = SSL_new(t.ctx.get());
  SSL_ctrl(ours, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
           const_cast<char*>("localhost"));
  auto r = handshake(ours, theirs, false);
  SSL_free(ours);
  SSL_free(theirs);
  SSL_CTX_free(sctx);
  return r;
}

struct weak_case {
  const char* name;
  test::cert_spec spec;
  const char* expected;
};

std::vector<weak_case> cases(test::key_usage good_usage, test::key_usage wrong_usage,
                             bool with_p192) {
  std::vector<weak_case> out = {
      {"good", {.cn = "good", .dns_sans = {"localhost"}, .usage = good_usage}, "accepted"},
      {"rsa1024",
       {.cn = "rsa1024", .dns_sans = {"localhost"}, .usage = good_usage, .key_type = "RSA-1024"},
       "bad_signature"},
      {"sha1",
       {.cn = "sha1", .dns_sans = {"localhost"}, .usage = good_usage, .digest = "sha1"},
       "bad_signature"},
      {"expired",
       {.cn = "expired",
        .dns_sans = {"localhost"},
        .usage = good_usage,
        .not_before = test::now() - test::days(10),
        .not_after = test::now() - test::days(1)},
       "expired"},
      {"wrong_eku",
       {.cn = "eku", .dns_sans = {"localhost"}, .usage = wrong_usage},
       "bad_key_usage"},
  };
  if (with_p192) {
    out.push_back(
        {"p192",
         {.cn = "p192", .dns_sans = {"localhost"}, .usage = good_usage, .key_type = "EC-P-192"},
         "bad_signature"});
    // Security level 2 takes these; no TLS signature scheme does (a TLS 1.2 client sends them).
    out.push_back(
        {"p224",
         {.cn = "p224", .dns_sans = {"localhost"}, .usage = good_usage, .key_type = "EC-P-224"},
         "bad_certificate"});
    out.push_back(
        {"secp256k1",
         {.cn = "k256", .dns_sans = {"localhost"}, .usage = good_usage, .key_type = "EC-secp256k1"},
         "bad_certificate"});
  }
  return out;
}

bool tls12_only(const std::string& name) {
  return name == "p192" || name == "p224" || name == "secp256k1";
}

TEST(OfflineMatchesHandshake, ClientCertificatesJudgedByAServerListener) {
  listener_files files;
  auto t = files.build(server_listener());
  for (const auto& c : cases(test::key_usage::client, test::key_usage::server, true)) {
    SCOPED_TRACE(c.name);
    auto leaf = test::make_leaf(pki().root, c.spec);
    auto off = offline(t, leaf);
    auto live = client_presents(t, leaf, {}, nullptr, tls12_only(c.name));
    EXPECT_EQ(verdict(off.refusal), c.expected) << off.detail;
    EXPECT_EQ(verdict(live.refusal), verdict(off.refusal)) << live.detail;
    EXPECT_EQ(live.detail, off.detail);
  }
}

TEST(OfflineMatchesHandshake, ServerCertificatesJudgedByAClientListener) {
  listener_files files;
  auto t = files.build(client_listener());
  // No P-192 here: a server cannot even offer it to mtlsd, whose groups start at P-256.
  for (const auto& c : cases(test::key_usage::server, test::key_usage::client, false)) {
    SCOPED_TRACE(c.name);
    auto leaf = test::make_leaf(pki().root, c.spec);
    auto off = offline(t, leaf);
    auto live = server_presents(t, leaf);
    EXPECT_EQ(verdict(off.refusal), c.expected) << off.detail;
    EXPECT_EQ(verdict(live.refusal), verdict(off.refusal)) << live.detail;
    EXPECT_EQ(live.detail, off.detail);
  }
}

// TLS 1.2 signs with ECDSA on any curve in the listener's groups (brainpool: RFC 7027), TLS 1.3
// on P-256, P-384 and P-521 only: a peer's key is judged by what the listener allows.
TEST(Validation, PeerKeyFollowsTheListenersVersionsAndCurves) {
  auto listener = [](const std::string& tls) {
    return "  - name: inbound\n    listen: 127.0.0.1:0\n    upstream: 127.0.0.1:8080\n"
           "    tls: {cert: server.crt, key: server.key" +
           tls + "}\n    client_auth:\n      ca: [root.crt]\n";
  };
  auto brainpool = test::make_leaf(pki().root, {.cn = "bp",
                                                .dns_sans = {"localhost"},
                                                .usage = test::key_usage::client,
                                                .key_type = "EC-brainpoolP256r1"});
  auto k256 = test::make_leaf(pki().root, {.cn = "k256",
                                           .dns_sans = {"localhost"},
                                           .usage = test::key_usage::client,
                                           .key_type = "EC-secp256k1"});
  listener_files files;
  auto tls12 = files.build(listener(", max_version: \"1.2\", curves: \"brainpoolP256r1:P-256\""));
  EXPECT_EQ(verdict(offline(tls12, brainpool).refusal), "accepted");
  auto off = offline(tls12, k256);  // not among the curves
  EXPECT_EQ(verdict(off.refusal), "bad_certificate");
  EXPECT_NE(off.detail.find("an EC key on secp256k1, which this listener's TLS versions and "
                            "curves cannot sign with (TLS 1.2: the curves in tls.curves, "
                            "brainpoolP256r1:P-256)"),
            std::string::npos)
      << off.detail;
  auto tls13 = files.build(listener(", min_version: \"1.3\", curves: \"brainpoolP256r1:P-256\""));
  off = offline(tls13, brainpool);
  EXPECT_EQ(verdict(off.refusal), "bad_certificate");
  EXPECT_NE(off.detail.find("an EC key on brainpoolP256r1, which this listener's TLS versions "
                            "and curves cannot sign with (TLS 1.3: P-256, P-384, P-521)"),
            std::string::npos)
      << off.detail;
  EXPECT_EQ(verdict(offline(files.build(listener("")), brainpool).refusal), "bad_certificate");
}

TEST(Validation, SecurityLevelIsAtLeastTwo) {
  listener_files files;
  EXPECT_GE(SSL_CTX_get_security_level(files.build(server_listener()).ctx.get()), 2);
  EXPECT_GE(SSL_CTX_get_security_level(files.build(client_listener()).ctx.get()), 2);
}

TEST(Validation, AnIssuingCaAloneIsATrustAnchor) {
  listener_files files;
  auto leaf = test::make_leaf(pki().intermediate, {.cn = "via-int", .dns_sans = {"localhost"}});
  auto srv =
      test::make_leaf(pki().intermediate,
                      {.cn = "srv", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
  auto t = files.build(server_listener("intermediate.crt"));
  EXPECT_EQ(verdict(offline(t, leaf).refusal), "accepted");
  EXPECT_EQ(verdict(client_presents(t, leaf).refusal), "accepted");
  // Not the root's other children.
  auto sibling = test::make_leaf(pki().root, {.cn = "sibling"});
  EXPECT_EQ(verdict(offline(t, sibling).refusal), "unknown_ca");
  auto c = files.build(client_listener("intermediate.crt"));
  EXPECT_EQ(verdict(offline(c, srv).refusal), "accepted");
  EXPECT_EQ(verdict(server_presents(c, srv).refusal), "accepted");
}

// A bundle with the root AND the intermediate: the intermediate is no anchor, so the root's CRL
// revoking it refuses the intermediate's leaves (were it an anchor, the root's CRL would never
// be consulted about it).
TEST(Validation, AnIntermediateListedWithItsRootIsNoAnchor) {
  listener_files files;
  test::pki_dir extra;
  auto leaf = test::make_leaf(pki().intermediate, {.cn = "below", .dns_sans = {"localhost"}});
  tls::x509_crl_ptr root_crl(test::make_crl(
      pki().root, {.revoked = {{test::serial_of(pki().intermediate.cert()), test::now()}}}));
  tls::x509_crl_ptr int_crl(test::make_crl(pki().intermediate, {}));
  const std::string crls = extra.write("root.crl", test::to_pem(root_crl.get()), 0644) + ", " +
                           extra.write("int.crl", test::to_pem(int_crl.get()), 0644);
  auto t = files.build(server_listener(
      "root.crt, intermediate.crt",
      "    revocation:\n      crl_scope: chain\n      crl_files: [" + crls + "]\n"));
  EXPECT_EQ(verdict(offline(t, leaf).refusal), "revoked");
  EXPECT_EQ(verdict(offline(t, leaf, {pki().intermediate}).refusal), "revoked");
  EXPECT_EQ(verdict(client_presents(t, leaf).refusal), "revoked");
  // Without revocation the same bundle builds leaf -> intermediate -> root, the intermediate
  // from the bundle when the peer does not send it.
  auto plain = files.build(server_listener("root.crt, intermediate.crt"));
  auto off = offline(plain, leaf);
  EXPECT_EQ(verdict(off.refusal), "accepted") << off.detail;
  EXPECT_EQ(off.chain.size(), 3u);
  EXPECT_EQ(verdict(client_presents(plain, leaf).refusal), "accepted");
}

TEST(Validation, VerifyDepthStillAppliesToPartialChains) {
  listener_files files;
  auto leaf = test::make_leaf(pki().intermediate, {.cn = "deep", .dns_sans = {"localhost"}});
  // Anchored at the root: leaf + intermediate is one intermediate deep.
  auto t = files.build(server_listener("root.crt", "      verify_depth: 0\n"));
  EXPECT_EQ(verdict(offline(t, leaf, {pki().intermediate}).refusal), "chain_too_long");
  auto srv =
      test::make_leaf(pki().intermediate,
                      {.cn = "srv", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
  auto c = files.build(client_listener("root.crt", "      verify_depth: 0\n"));
  EXPECT_EQ(verdict(offline(c, srv, {pki().intermediate}).refusal), "chain_too_long");
  EXPECT_EQ(verdict(server_presents(c, srv, {pki().intermediate}).refusal), "chain_too_long");
  auto c1 = files.build(client_listener("root.crt", "      verify_depth: 1\n"));
  EXPECT_EQ(verdict(offline(c1, srv, {pki().intermediate}).refusal), "accepted");
}

TEST(Validation, ClientModeNeverMatchesTheSubjectCn) {
  listener_files files;
  auto t = files.build(client_listener());
  // CN "localhost", no DNS SAN: OpenSSL's default would fall back to the CN.
  auto cn_only = test::make_leaf(
      pki().root,
      {.cn = "localhost", .uri_sans = {"spiffe://td/x"}, .usage = test::key_usage::server});
  EXPECT_EQ(verdict(offline(t, cn_only).refusal), "hostname_mismatch");
  EXPECT_EQ(verdict(server_presents(t, cn_only).refusal), "hostname_mismatch");
}

TEST(Validation, NameConstraintsViolationHasItsOwnReason) {
  auto constrained = test::make_intermediate(
      pki().root,
      {.cn = "Constrained CA", .name_constraints = "critical,permitted;DNS:.example.org"});
  listener_files files;
  auto t = files.build(client_listener());
  auto outside = test::make_leaf(
      constrained, {.cn = "x", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
  auto off = offline(t, outside, {constrained});
  EXPECT_EQ(verdict(off.refusal), "name_constraints") << off.detail;
  EXPECT_EQ(verdict(server_presents(t, outside, {constrained}).refusal), "name_constraints");
  auto inside = test::make_leaf(
      constrained, {.cn = "y", .dns_sans = {"a.example.org"}, .usage = test::key_usage::server});
  auto t2 = files.build(client_listener("root.crt", "", "a.example.org:8443"));
  EXPECT_EQ(verdict(offline(t2, inside, {constrained}).refusal), "accepted");
}

// OpenSSL compares what follows "://" up to the next ':' (else '/') as a URI's host.
TEST(Validation, UriNameConstraintsJudgeTheRealHost) {
  auto constrained = test::make_intermediate(
      pki().root, {.cn = "URI CA", .name_constraints = "critical,permitted;URI:example.org"});
  listener_files files;
  auto t = files.build(server_listener());
  auto evil =
      test::make_leaf(constrained, {.cn = "e", .uri_sans = {"spiffe://example.org:1@evil.org/x"}});
  auto off = offline(t, evil, {constrained});
  EXPECT_EQ(verdict(off.refusal), "name_constraints") << off.detail;
  EXPECT_NE(off.detail.find("URI SAN 'spiffe://example.org:1@evil.org/x' has a userinfo ('@')"),
            std::string::npos)
      << off.detail;
  auto live = client_presents(t, evil, {constrained});
  EXPECT_EQ(verdict(live.refusal), "name_constraints");
  EXPECT_EQ(live.detail, off.detail);
  auto good =
      test::make_leaf(constrained, {.cn = "g", .uri_sans = {"spiffe://example.org:8443/x"}});
  EXPECT_EQ(verdict(offline(t, good, {constrained}).refusal), "accepted");
}

TEST(Validation, UriHostProblems) {
  EXPECT_EQ(tls::uri_host_problem("spiffe://example.org/ns/a"), "");
  EXPECT_EQ(tls::uri_host_problem("https://example.org:443/a?b#c"), "");
  EXPECT_EQ(tls::uri_host_problem("https://example.org"), "");
  EXPECT_EQ(tls::uri_host_problem("https://example.org:"), "");  // RFC 3986: port = *DIGIT
  EXPECT_EQ(tls::uri_host_problem("spiffe://example.org:1@evil.org/x"), "has a userinfo ('@')");
  EXPECT_EQ(tls::uri_host_problem("https://u@example.org/"), "has a userinfo ('@')");
  EXPECT_EQ(tls::uri_host_problem("https://[::1]:443/"), "has an IP literal ('[...]') for a host");
  EXPECT_EQ(tls::uri_host_problem("https://ex%61mple.org/"), "has a percent-encoded host");
  EXPECT_EQ(tls::uri_host_problem("https://evil.org\\.example.org/"), "has a host with '\\' in it");
  EXPECT_EQ(tls::uri_host_problem("https://example.org:8x/"), "has a port that is not a number");
  EXPECT_EQ(tls::uri_host_problem("https:///x"), "has no host");
  // The same host as evil.org, which `excluded URI:evil.org` did not see as such (review).
  EXPECT_EQ(tls::uri_host_problem("spiffe://evil.org./x"), "has a host ending in '.'");
  EXPECT_EQ(tls::uri_host_problem("https://evil.org.:443/"), "has a host ending in '.'");
  EXPECT_EQ(tls::uri_host_problem("urn:example:a"), "has no scheme://");
  EXPECT_EQ(tls::uri_host_problem("1x://example.org/"), "has no valid scheme");
  EXPECT_EQ(tls::uri_host_problem("a/b://example.org/"), "has no valid scheme");
  // Where OpenSSL's host runs on past RFC 3986's.
  EXPECT_EQ(tls::uri_host_problem("spiffe://evil.org?.example.org"),
            "has the host 'evil.org', but OpenSSL's check compares 'evil.org?.example.org'");
  EXPECT_EQ(tls::uri_host_problem("spiffe://evil.org#.example.org"),
            "has the host 'evil.org', but OpenSSL's check compares 'evil.org#.example.org'");
  EXPECT_EQ(tls::uri_host_problem("https://example.org/a:b"),
            "has the host 'example.org', but OpenSSL's check compares 'example.org/a'");
  EXPECT_EQ(tls::uri_host_problem(std::string_view("https://a\0b/", 12)),
            "has a host with '\\x00' in it");
}

TEST(Validation, EmailSansAllowList) {
  listener_files files;
  auto t = files.build(
      server_listener("root.crt", "      allow:\n        email_sans: [alice@Example.org]\n"));
  auto alice = test::make_leaf(pki().root, {.cn = "a", .email_sans = {"alice@example.ORG"}});
  auto bob = test::make_leaf(pki().root, {.cn = "b", .email_sans = {"bob@example.org"}});
  auto upper = test::make_leaf(pki().root, {.cn = "c", .email_sans = {"ALICE@example.org"}});
  EXPECT_EQ(verdict(offline(t, alice).refusal), "accepted");
  EXPECT_EQ(verdict(client_presents(t, alice).refusal), "accepted");
  auto off = offline(t, bob);
  EXPECT_EQ(verdict(off.refusal), "not_authorized");
  EXPECT_NE(off.detail.find("email=bob@example.org"), std::string::npos) << off.detail;
  EXPECT_EQ(verdict(client_presents(t, bob).refusal), "not_authorized");
  EXPECT_EQ(verdict(offline(t, upper).refusal), "not_authorized");  // local parts are exact
  auto c = files.build(
      client_listener("root.crt", "      allow:\n        email_sans: [ops@example.org]\n"));
  auto srv = test::make_leaf(pki().root, {.cn = "s",
                                          .dns_sans = {"localhost"},
                                          .usage = test::key_usage::server,
                                          .email_sans = {"ops@example.org"}});
  EXPECT_EQ(verdict(server_presents(c, srv).refusal), "accepted");
}

// A key whose public half is `cert`'s and whose private half is another key's: OpenSSL accepts
// it as the certificate's key (only the public halves are compared), so the peer sends a
// CertificateVerify that does not verify — what a peer holding a stolen certificate but not its
// key would do.
EVP_PKEY* forged_key_for(X509* cert) {
  EVP_PKEY* other = test::make_key();
  unsigned char pub[256];
  std::size_t pub_len = 0;
  EVP_PKEY_get_octet_string_param(X509_get0_pubkey(cert), OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub,
                                  &pub_len);
  BIGNUM* priv = nullptr;
  EVP_PKEY_get_bn_param(other, OSSL_PKEY_PARAM_PRIV_KEY, &priv);
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
  OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len);
  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv);
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr);
  EVP_PKEY* forged = nullptr;
  EVP_PKEY_fromdata_init(pctx);
  EVP_PKEY_fromdata(pctx, &forged, EVP_PKEY_KEYPAIR, params);
  EVP_PKEY_CTX_free(pctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(priv);
  EVP_PKEY_free(other);
  return forged;
}

TEST(Validation, ForgedCertificateVerifyIsBadSignature) {
  listener_files files;
  auto t = files.build(server_listener());
  auto leaf = test::make_leaf(pki().root, {.cn = "victim"});
  EVP_PKEY* forged = forged_key_for(leaf.cert());
  ASSERT_NE(forged, nullptr);
  ASSERT_EQ(X509_check_private_key(leaf.cert(), forged), 1);  // the client library is fooled
  // The chain itself is fine: only the handshake signature gives the forger away.
  EXPECT_EQ(verdict(offline(t, leaf).refusal), "accepted");
  auto live = client_presents(t, leaf, {}, forged);
  EXPECT_FALSE(live.completed);
  EXPECT_EQ(verdict(live.refusal), "bad_signature") << live.detail;
  EVP_PKEY_free(forged);
}

TEST(Validation, SslFailureReasons) {
  EXPECT_EQ(tls::reason_from_ssl_failure(SSL_R_BAD_SIGNATURE), reason::bad_signature);
  EXPECT_EQ(tls::reason_from_ssl_failure(SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE),
            reason::no_client_cert);
  EXPECT_EQ(tls::reason_from_ssl_failure(SSL_R_WRONG_VERSION_NUMBER), std::nullopt);
}

TEST(Validation, StrictReasonMapping) {
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_PERMITTED_VIOLATION), reason::name_constraints);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_EXCLUDED_VIOLATION), reason::name_constraints);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_MISSING_AUTHORITY_KEY_IDENTIFIER),
            reason::bad_certificate);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_EMPTY_SUBJECT_SAN_NOT_CRITICAL),
            reason::bad_certificate);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_KU_KEY_CERT_SIGN_INVALID_FOR_NON_CA),
            reason::bad_key_usage);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_CA_MD_TOO_WEAK), reason::bad_signature);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_EE_KEY_TOO_SMALL), reason::bad_signature);
  // A CRL that cannot be used is as if there were none: on_unavailable and deferral decide.
  for (int err :
       {X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD, X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD,
        X509_V_ERR_CRL_PATH_VALIDATION_ERROR, X509_V_ERR_KEYUSAGE_NO_CRL_SIGN})
    EXPECT_EQ(tls::reason_from_x509_error(err), reason::revocation_unavailable)
        << X509_verify_cert_error_string(err);
  // Policy errors: the certificates themselves are at fault.
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_INVALID_POLICY_EXTENSION),
            reason::bad_certificate);
  EXPECT_EQ(tls::reason_from_x509_error(X509_V_ERR_NO_EXPLICIT_POLICY), reason::bad_certificate);
}

}  // namespace
}  // namespace mtlsd

namespace mtlsd {
namespace {

// crl_scope: chain checks every level below the anchor. With an issuing CA as the anchor, the
// anchor itself needs no CRL from the root (nobody configured one): it is trusted by
// configuration, exactly like a root.
TEST(Validation, AnIntermediateAnchorNeedsNoCrlOfItsOwn) {
  listener_files files;
  test::pki_dir extra;
  tls::x509_crl_ptr crl(test::make_crl(pki().intermediate, {}));
  const std::string crl_path = extra.write("int.crl", test::to_pem(crl.get()), 0644);
  auto t = files.build(server_listener("intermediate.crt",
                                       "    revocation:\n      crl_files: [" + crl_path + "]\n"));
  auto leaf = test::make_leaf(pki().intermediate, {.cn = "leaf", .dns_sans = {"localhost"}});
  auto off = offline(t, leaf);
  EXPECT_EQ(verdict(off.refusal), "accepted") << off.detail;
  EXPECT_EQ(verdict(client_presents(t, leaf).refusal), "accepted");
  // ...while a revoked leaf is still refused.
  auto revoked = test::make_leaf(pki().intermediate, {.cn = "revoked"});
  tls::x509_crl_ptr crl2(test::make_crl(
      pki().intermediate, {.revoked = {{test::serial_of(revoked.cert()), test::now()}}}));
  extra.write("int.crl", test::to_pem(crl2.get()), 0644);
  auto t2 = files.build(server_listener("intermediate.crt",
                                        "    revocation:\n      crl_files: [" + crl_path + "]\n"));
  EXPECT_EQ(verdict(offline(t2, revoked).refusal), "revoked");
}

}  // namespace
}  // namespace mtlsd

namespace mtlsd {
namespace {

int advertised_ca_names(const tls::tls_context& t) {
  return sk_X509_NAME_num(SSL_CTX_get_client_CA_list(t.ctx.get()));
}

// Review: ~600 CAs with ordinary names in client_auth.ca (or a SPIFFE bundle of 3,000 copies of
// one CA) made every handshake fail with internal_error, while `check` passed and /readyz said
// ready: their names did not fit the CertificateRequest's list.
TEST(CaNames, TooManyToFitAreNotSentAndHandshakesStillWork) {
  listener_files files;
  std::string bundle = test::to_pem(pki().root.cert());
  for (int i = 0; i < 900; ++i)
    bundle += test::to_pem(
        test::make_root_ca(
            {.cn = "Another CA with a name as long as real ones are, number " + std::to_string(i)})
            .cert());
  files.write("many.crt", bundle);
  auto t = files.build(server_listener("many.crt"));
  EXPECT_GT(t.ca_names_bytes, tls::max_ca_names_bytes);
  EXPECT_EQ(advertised_ca_names(t), 0);
  auto leaf = test::make_leaf(pki().root, {.cn = "client"});
  const auto r = client_presents(t, leaf);
  EXPECT_TRUE(r.completed) << verdict(r.refusal) << ": " << r.detail;
}

TEST(CaNames, EachDistinctNameIsSentOnce) {
  listener_files files;
  std::string bundle;
  for (int i = 0; i < 3000; ++i)
    bundle += test::to_pem(pki().root.cert());
  bundle += test::to_pem(pki().intermediate.cert());
  files.write("copies.crt", bundle);
  auto t = files.build(server_listener("copies.crt"));
  EXPECT_EQ(advertised_ca_names(t), 2);
  EXPECT_TRUE(client_presents(t, test::make_leaf(pki().root, {.cn = "client"})).completed);
}

}  // namespace
}  // namespace mtlsd

namespace mtlsd {
namespace {

// `leaf` with its extension `nid` replaced by `value` (openssl.cnf syntax), or with a second
// copy of it when `value` is empty, signed again by `issuer`.
test::credential edited(const test::credential& leaf, const test::credential& issuer, int nid,
                        const char* value) {
  X509* x = X509_dup(leaf.cert());
  const int at = X509_get_ext_by_NID(x, nid, -1);
  if (*value) {
    X509_EXTENSION_free(X509_delete_ext(x, at));
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, nullptr, nid, value);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  } else {
    X509_add_ext(x, X509_get_ext(x, at), -1);
  }
  X509_sign(x, issuer.key(), EVP_sha256());
  EVP_PKEY_up_ref(leaf.key());
  return test::credential(x, leaf.key());
}

// Review: holding an intermediate CA's key logged in *as* that CA: a CA certificate with the
// clientAuth EKU was admitted as a client's own (OpenSSL's default; webpki and Go refuse it).
TEST(Validation, ACaCertificateIsNoPeersOwn) {
  listener_files files;
  auto t = files.build(server_listener());
  const auto leaf = test::make_leaf(pki().root, {.cn = "ca-as-leaf"});
  auto ca = edited(leaf, pki().root, NID_basic_constraints, "critical,CA:TRUE");
  ca = edited(ca, pki().root, NID_key_usage, "critical,digitalSignature,keyCertSign");
  EXPECT_EQ(verdict(client_presents(t, leaf).refusal), "accepted");
  EXPECT_EQ(verdict(offline(t, ca).refusal), "bad_key_usage");
  const auto r = client_presents(t, ca);
  EXPECT_EQ(verdict(r.refusal), "bad_key_usage") << r.detail;
  // Without keyCertSign, CA:TRUE alone is enough.
  const auto bc_only = edited(leaf, pki().root, NID_basic_constraints, "critical,CA:TRUE");
  EXPECT_EQ(verdict(client_presents(t, bc_only).refusal), "bad_key_usage");
  // Client mode: a server presenting a CA certificate as its own is refused the same way.
  auto c = files.build(client_listener());
  const auto srv = test::make_leaf(
      pki().root, {.cn = "srv", .dns_sans = {"localhost"}, .usage = test::key_usage::server});
  EXPECT_EQ(verdict(server_presents(c, srv).refusal), "accepted");
  EXPECT_EQ(
      verdict(server_presents(c, edited(srv, pki().root, NID_basic_constraints, "critical,CA:TRUE"))
                  .refusal),
      "bad_key_usage");
}

// Review: an extension twice made OpenSSL mark the certificate invalid, which then failed its
// issuer lookup: refused as unknown_ca, "issuer ... was not sent by the peer".
TEST(Validation, AnExtensionTwiceIsABadCertificate) {
  listener_files files;
  auto t = files.build(server_listener());
  const auto leaf = test::make_leaf(pki().root, {.cn = "twice", .dns_sans = {"a.example"}});
  const auto twice = edited(leaf, pki().root, NID_subject_alt_name, "");
  const auto r = client_presents(t, twice);
  EXPECT_EQ(verdict(r.refusal), "bad_certificate") << r.detail;
  EXPECT_EQ(r.detail.find("was not sent by the peer"), std::string::npos) << r.detail;
  EXPECT_EQ(verdict(offline(t, twice).refusal), "bad_certificate");
}

}  // namespace
}  // namespace mtlsd
