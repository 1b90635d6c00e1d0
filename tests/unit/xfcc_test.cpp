// X-Forwarded-Client-Cert: the element format, Envoy's URL encoding of PEM, the mode table and
// the header rewrite. Expected strings follow Envoy's conn_manager_utility_test.cc.
#include "mtlsd/proxy/xfcc.hpp"

#include <gtest/gtest.h>

namespace mtlsd::proxy {
namespace {

using action = xfcc_policy::action;
using config::xfcc_mode;

xfcc_fields sample() {
  xfcc_fields f;
  f.hash = "abcdef";
  f.subject = "CN=client,OU=payments,O=mtlsd Test";
  f.uri = {"spiffe://example.org/ns/default/sa/client"};
  f.dns = {"client.example.org", "alt.example.org"};
  return f;
}

TEST(XfccElement, DefaultDetailsInEnvoyOrder) {
  EXPECT_EQ(format_xfcc_element({"uri", "dns", "subject", "hash"}, sample()),
            "Hash=abcdef;Subject=\"CN=client,OU=payments,O=mtlsd Test\";"
            "URI=spiffe://example.org/ns/default/sa/client;"
            "DNS=client.example.org;DNS=alt.example.org");
}

TEST(XfccElement, ByComesFirstOncePerUriSan) {
  xfcc_fields f = sample();
  f.by = {"spiffe://example.org/ns/edge/sa/a", "https://edge.example.org"};
  EXPECT_EQ(format_xfcc_element({"hash"}, f),
            "By=spiffe://example.org/ns/edge/sa/a;By=https://edge.example.org;Hash=abcdef");
}

TEST(XfccElement, CertAndChainAreQuotedAndPrecedeSubject) {
  xfcc_fields f = sample();
  f.cert = "CERT";
  f.chain = "CHAIN";
  EXPECT_EQ(format_xfcc_element({"subject", "chain", "cert"}, f),
            "Cert=\"CERT\";Chain=\"CHAIN\";Subject=\"CN=client,OU=payments,O=mtlsd Test\"");
}

TEST(XfccElement, EmptyUriAndSubjectStillAppearDnsDoesNot) {
  xfcc_fields f;
  f.hash = "00";
  EXPECT_EQ(format_xfcc_element({"uri", "dns", "subject"}, f), "Subject=\"\";URI=");
}

TEST(XfccElement, HashOnlyWhenAsked) {
  EXPECT_EQ(format_xfcc_element({"uri"}, sample()),
            "URI=spiffe://example.org/ns/default/sa/client");
}

TEST(XfccElement, HostileSanValuesCannotForgeKeysOrHeaders) {
  xfcc_fields f;
  f.uri = {"spiffe://a;URI=spiffe://admin", "x\r\nX-Admin: 1"};
  f.dns = {"a,b", "q\"uote\\"};
  const std::string el = format_xfcc_element({"uri", "dns"}, f);
  EXPECT_EQ(el,
            "URI=\"spiffe://a;URI=spiffe://admin\";URI=\"x%0D%0AX-Admin: 1\";"
            "DNS=\"a,b\";DNS=\"q\\\"uote\\\\\"");
  EXPECT_EQ(el.find('\r'), std::string::npos);
  EXPECT_EQ(el.find('\n'), std::string::npos);
  f.uri = {"spiffe://td/x?a=b"};  // an '=' is quoted; plain SANs are not
  f.dns = {"a.example.org"};
  EXPECT_EQ(format_xfcc_element({"uri", "dns"}, f), "URI=\"spiffe://td/x?a=b\";DNS=a.example.org");
}

TEST(XfccUrlEncode, EnvoysCharacterSet) {
  EXPECT_EQ(url_encode_pem("-----BEGIN CERTIFICATE-----\nMIIB+/a=\n-----END CERTIFICATE-----\n"),
            "-----BEGIN%20CERTIFICATE-----%0AMIIB%2B%2Fa%3D%0A-----END%20CERTIFICATE-----%0A");
}

TEST(XfccAction, EnvoyDecisionTable) {
  EXPECT_EQ(xfcc_action(xfcc_mode::sanitize, true), action::remove);
  EXPECT_EQ(xfcc_action(xfcc_mode::sanitize, false), action::remove);
  EXPECT_EQ(xfcc_action(xfcc_mode::forward_only, true), action::keep);
  EXPECT_EQ(xfcc_action(xfcc_mode::forward_only, false), action::remove);
  EXPECT_EQ(xfcc_action(xfcc_mode::append_forward, true), action::append);
  EXPECT_EQ(xfcc_action(xfcc_mode::append_forward, false), action::remove);
  EXPECT_EQ(xfcc_action(xfcc_mode::sanitize_set, true), action::set);
  EXPECT_EQ(xfcc_action(xfcc_mode::sanitize_set, false), action::remove);
  EXPECT_EQ(xfcc_action(xfcc_mode::always_forward_only, true), action::keep);
  EXPECT_EQ(xfcc_action(xfcc_mode::always_forward_only, false), action::keep);
}

TEST(XfccRewrite, SetIgnoresWhatTheClientSent) {
  xfcc_policy p{action::set, "Hash=1"};
  EXPECT_EQ(rewrite_xfcc(p, {"By=evil;Hash=0", "URI=forged"}), "Hash=1");
  EXPECT_EQ(rewrite_xfcc(p, {}), "Hash=1");
}

TEST(XfccRewrite, AppendJoinsEveryLineThenOurs) {
  xfcc_policy p{action::append, "Hash=2"};
  EXPECT_EQ(rewrite_xfcc(p, {"Hash=0", "Hash=1"}), "Hash=0,Hash=1,Hash=2");
  EXPECT_EQ(rewrite_xfcc(p, {}), "Hash=2");
  EXPECT_EQ(rewrite_xfcc(p, {""}), "Hash=2");
}

TEST(XfccRewrite, RemoveSendsNothing) {
  xfcc_policy p{action::remove, ""};
  EXPECT_EQ(rewrite_xfcc(p, {"Hash=0"}), std::nullopt);
}

}  // namespace
}  // namespace mtlsd::proxy
