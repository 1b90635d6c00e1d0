// certificate_selector::select: which tls.certificates entries a handshake gets for an SNI
// (exact, then `*.suffix` over one label, then the default entries), and the load-time refusal
// of two certificates of one key type for the same names. Handshakes with real clients are in
// tests/integration/test_certificates.py.
#include "mtlsd/tls/certificate_selection.hpp"
#include "mtlsd/tls/client_hello.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test_pki.hpp"

namespace mtlsd::tls {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct selection_fixture {
  test::pki_dir dir;
  test::credential root = test::make_root_ca({.cn = "Root"});

  config::certificate_entry entry(const std::string& name, std::vector<std::string> names,
                                  const std::string& key_type = "") {
    auto leaf = test::make_leaf(root, {.cn = name,
                                       .dns_sans = {"localhost"},
                                       .usage = test::key_usage::server,
                                       .key_type = key_type});
    config::certificate_entry e;
    e.cert.path = dir.write(name + ".crt", test::to_pem(leaf));
    e.key.path = dir.write(name + ".key", test::key_to_pem(leaf.key()));
    e.server_names = std::move(names);
    return e;
  }
};

std::vector<std::size_t> pick(const certificate_selector& s, std::string_view sni, bool& named) {
  return s.select(sni, named);
}

TEST(CertificateSelection, ExactThenWildcardThenDefault) {
  selection_fixture f;
  config::tls_options t;
  t.certificates = {f.entry("rsa-default", {}, "RSA-2048"), f.entry("ec-default", {}),
                    f.entry("api", {"api.example.org"}), f.entry("apps", {"*.example.org"}),
                    f.entry("api-rsa", {"api.example.org"}, "RSA-2048")};
  certificate_selector s(t);
  bool named = false;
  EXPECT_THAT(pick(s, "api.example.org", named), ElementsAre(2, 4));
  EXPECT_TRUE(named);
  EXPECT_THAT(pick(s, "www.example.org", named), ElementsAre(3));
  EXPECT_TRUE(named);
  // One label only, like certificate wildcards.
  EXPECT_THAT(pick(s, "a.b.example.org", named), ElementsAre(0, 1));
  EXPECT_FALSE(named);
  EXPECT_THAT(pick(s, "example.org", named), ElementsAre(0, 1));
  EXPECT_FALSE(named);
  // No SNI is not an unknown name (strict_sni does not refuse it).
  EXPECT_THAT(pick(s, "", named), ElementsAre(0, 1));
  EXPECT_TRUE(named);
  EXPECT_EQ(s.certificates().size(), 5u);
}

TEST(CertificateSelection, WithoutDefaultEntriesTheFirstNameStandsIn) {
  selection_fixture f;
  config::tls_options t;
  t.certificates = {f.entry("a", {"a.example.org"}), f.entry("b", {"b.example.org"}),
                    f.entry("a-rsa", {"a.example.org"}, "RSA-2048")};
  certificate_selector s(t);
  bool named = true;
  EXPECT_THAT(pick(s, "other.example.net", named), ElementsAre(0, 2));
  EXPECT_FALSE(named);
}

TEST(CertificateSelection, TwoCertificatesOfOneKeyTypeForOneNameAreRefused) {
  selection_fixture f;
  config::tls_options t;
  t.certificates = {f.entry("a", {"a.example.org"}), f.entry("b", {})};
  t.certificates[1].server_names = {"a.example.org", "b.org"};  // as the loader lower-cases
  t.certificates[1].where = {"/etc/mtlsd.yaml", 7, 11};
  try {
    certificate_selector s(t);
    FAIL() << "accepted two ECDSA certificates for a.example.org";
  } catch (const config::config_error& e) {
    ASSERT_EQ(e.problems().size(), 1u);
    EXPECT_EQ(e.problems()[0].where.line, 7);
    EXPECT_THAT(e.problems()[0].message,
                HasSubstr("entry 0 already serves 'a.example.org' with the same key type (ECDSA)"));
  }
}

// The name allow rules and the selection see. Fuzzing (client_hello_fuzz) found "a.b.." kept
// a final dot, so that a rule on "a.b" did not match it.
TEST(ServerName, NormalizedToLowerCaseWithoutFinalDots) {
  EXPECT_EQ(normalize_server_name("API.Example.org"), "api.example.org");
  EXPECT_EQ(normalize_server_name("api.example.org."), "api.example.org");
  EXPECT_EQ(normalize_server_name("api.example.org.."), "api.example.org");
  EXPECT_EQ(normalize_server_name("a b\n.org"), "a?b?.org");
  EXPECT_EQ(normalize_server_name("..."), "");
}

}  // namespace
}  // namespace mtlsd::tls
