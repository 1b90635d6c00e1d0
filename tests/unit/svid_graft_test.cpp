// runtime::with_svid: an X.509-SVID swapped into a listener's context as built, without reading
// its files again, makes the context build_context makes from the files and the SVID: the same
// trust store (anchors and CRLs), verify parameters, CA names and verdicts; and it still does
// once the files are broken or gone.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mtlsd/config/load.hpp"
#include "mtlsd/runtime/svid_graft.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/spiffe/x509_context.hpp"
#include "test_pki.hpp"
#include "test_svid.hpp"

namespace mtlsd::runtime {
namespace {

const std::string kId = "spiffe://example.org/ns/prod/sa/mtlsd";

// Every object of a context's store, by kind and SHA-256, sorted.
std::vector<std::string> store_objects(SSL_CTX* ctx) {
  std::vector<std::string> out;
  STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
  for (int i = 0; i < sk_X509_OBJECT_num(objs); ++i) {
    X509_OBJECT* o = sk_X509_OBJECT_value(objs, i);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    std::string kind;
    if (X509* x = X509_OBJECT_get0_X509(o)) {
      X509_digest(x, EVP_sha256(), d, &len);
      kind = "cert:";
    } else if (X509_CRL* c = X509_OBJECT_get0_X509_CRL(o)) {
      X509_CRL_digest(c, EVP_sha256(), d, &len);
      kind = "crl:";
    }
    out.push_back(kind + std::string(reinterpret_cast<char*>(d), len));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> ca_names(SSL_CTX* ctx) {
  std::vector<std::string> out;
  STACK_OF(X509_NAME)* names = SSL_CTX_get_client_CA_list(ctx);
  for (int i = 0; i < sk_X509_NAME_num(names); ++i)
    out.push_back(tls::name_of(sk_X509_NAME_value(names, i)));
  return out;
}

std::string host_of(SSL_CTX* ctx) {
  const char* h = X509_VERIFY_PARAM_get0_host(SSL_CTX_get0_param(ctx), 0);
  return h ? h : "";
}

std::string verdict(const tls::tls_context& t, const test::credential& leaf) {
  auto o = t.peer_verifier->verify_offline(t.ctx.get(), leaf.cert(), nullptr, std::nullopt);
  return o.refusal ? std::string(to_string(*o.refusal)) + ": " + o.detail : "accepted";
}

class SvidGraftTest : public ::testing::Test {
 protected:
  test::credential root_ = test::make_root_ca({.cn = "example.org root"});
  test::credential other_ = test::make_root_ca({.cn = "other root"});
  test::credential svid_leaf_ =
      test::make_leaf(root_, {.cn = "mtlsd", .uri_sans = {kId}, .usage = test::key_usage::both});
  test::credential alice_ = test::make_leaf(root_, {.cn = "alice",
                                                    .uri_sans = {"spiffe://example.org/a"},
                                                    .dns_sans = {"localhost"},
                                                    .usage = test::key_usage::both});
  test::credential bob_ = test::make_leaf(root_, {.cn = "bob",
                                                  .uri_sans = {"spiffe://example.org/b"},
                                                  .dns_sans = {"localhost"},
                                                  .usage = test::key_usage::both});
  test::credential stranger_ = test::make_leaf(other_, {.cn = "eve",
                                                        .uri_sans = {"spiffe://example.org/e"},
                                                        .dns_sans = {"localhost"},
                                                        .usage = test::key_usage::both});
  test::pki_dir dir_;
  std::shared_ptr<const tls::spiffe::x509_context> svid_;

  void SetUp() override {
    dir_.write("root.crt", test::to_pem(root_.cert()), 0644);
    tls::x509_crl_ptr crl(test::make_crl(
        root_, {.revoked = {{test::serial_of(bob_.cert()), test::now() - test::hours(2)}}}));
    dir_.write("root.crl", test::to_pem(crl.get()), 0644);
    svid_ = tls::spiffe::parse(test::raw_svid(kId, svid_leaf_, root_));
  }

  config::listener load(const std::string& yaml) {
    const std::string path = dir_.write("mtlsd.yaml", yaml, 0644);
    auto r = config::load_file(path);
    for (const auto& p : r.problems)
      ADD_FAILURE() << p.str();
    if (!r.config) throw std::runtime_error("test configuration does not load");
    return r.config->listeners.at(0);
  }

  tls::svid_material material(const config::listener& l) const {
    return {svid_->spiffe_id, &svid_->svid,
            tls::spiffe::trusted_anchors(*svid_, l.tls.spiffe.trust_domains)};
  }

  // A grafted context is what a build from the files makes, the files then broken or gone.
  void expect_as_built(const std::string& yaml, const std::string& host = "") {
    const config::listener l = load(yaml);
    const auto m = material(l);
    const tls::tls_context full = tls::build_context(l, &m);
    const tls::tls_context before = tls::build_context(l);  // no SVID yet
    dir_.write("root.crl", "-----BEGIN X509 CRL-----\nAAAA\n", 0644);
    std::filesystem::remove(dir_.path() / "root.crt");
    EXPECT_THROW(tls::build_context(l, &m), config::config_error);
    const tls::tls_context grafted = with_svid(l, before, m);

    SSL_CTX* f = full.ctx.get();
    SSL_CTX* g = grafted.ctx.get();
    EXPECT_EQ(store_objects(g), store_objects(f));
    EXPECT_EQ(X509_VERIFY_PARAM_get_flags(SSL_CTX_get0_param(g)),
              X509_VERIFY_PARAM_get_flags(SSL_CTX_get0_param(f)));
    EXPECT_EQ(host_of(f), host);  // checked in client mode with CA files only
    EXPECT_EQ(host_of(g), host_of(f));
    EXPECT_EQ(SSL_CTX_get_verify_mode(g), SSL_CTX_get_verify_mode(f));
    EXPECT_EQ(SSL_CTX_get_verify_depth(g), SSL_CTX_get_verify_depth(f));
    EXPECT_EQ(ca_names(g), ca_names(f));
    EXPECT_EQ(grafted.ca_names_bytes, full.ca_names_bytes);
    EXPECT_EQ(grafted.trust.size(), full.trust.size());
    EXPECT_EQ(grafted.trust_by_domain.size(), full.trust_by_domain.size());
    EXPECT_EQ(grafted.crls.size(), full.crls.size());
    EXPECT_EQ(grafted.crl_files, before.crl_files);
    EXPECT_EQ(grafted.peer_verifier->trust_binding(), full.peer_verifier->trust_binding());
    ASSERT_FALSE(grafted.own_chain.empty());
    EXPECT_EQ(X509_cmp(grafted.own_chain.front().get(), svid_leaf_.cert()), 0);
    EXPECT_EQ(grafted.own_uri_sans, full.own_uri_sans);
    for (const auto* peer : {&alice_, &bob_, &stranger_})
      EXPECT_EQ(verdict(grafted, *peer), verdict(full, *peer));
    EXPECT_EQ(verdict(grafted, alice_), "accepted");
    EXPECT_EQ(verdict(grafted, bob_).rfind("revoked", 0), 0u) << verdict(grafted, bob_);
  }
};

// A listener with an SVID from the Workload API and the root's CRL; a test adds its
// client_auth or server_auth.
const std::string kSvidAndCrl =
    "    listen: 127.0.0.1:0\n"
    "    tls:\n"
    "      spiffe: {workload_api: unix:/tmp/agent.sock}\n"
    "    revocation:\n"
    "      crl_files: [root.crl]\n";
const std::string kServer =
    "listeners:\n  - name: inbound\n    upstream: 127.0.0.1:8080\n" + kSvidAndCrl;
const std::string kClient =
    "listeners:\n  - name: outbound\n    mode: client\n    upstream: localhost:8443\n" +
    kSvidAndCrl;

TEST_F(SvidGraftTest, ServerTrustingTheBundles) {
  expect_as_built(kServer + "    client_auth: {mode: require}\n");
}

TEST_F(SvidGraftTest, ServerTrustingItsCaFiles) {
  expect_as_built(kServer + "    client_auth: {mode: require, ca: [root.crt]}\n");
}

TEST_F(SvidGraftTest, ClientTrustingItsCaFilesChecksTheHostName) {
  expect_as_built(kClient + "    server_auth: {ca: [root.crt]}\n", "localhost");
}

TEST_F(SvidGraftTest, ClientTrustingTheBundles) {
  expect_as_built(kClient +
                  "    server_auth:\n"
                  "      allow: {spiffe_ids: ['spiffe://example.org/*']}\n");
}

}  // namespace
}  // namespace mtlsd::runtime
