// The one URL parser (net/url.hpp) and the proxy environment (net/proxy_env.hpp).
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/url.hpp"

using namespace mtlsd::net;

TEST(HttpUrl, Parses) {
  auto u = parse_http_url("http://127.0.0.1:8080/ocsp");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->target, "/ocsp");
  EXPECT_EQ(u->authority(), "127.0.0.1:8080");
  EXPECT_EQ(u->absolute(), "http://127.0.0.1:8080/ocsp");
  u = parse_http_url("HTTP://crl.example.org");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/");
  EXPECT_EQ(u->authority(), "crl.example.org");
  u = parse_http_url("http://[::1]:9/x?y=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->target, "/x?y=1");
  EXPECT_EQ(u->authority(), "[::1]:9");
  u = parse_http_url("http://h:/p");  // an empty port is the default one (RFC 3986 3.2.3)
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 80);
}

TEST(HttpUrl, Rejects) {
  std::string why;
  EXPECT_FALSE(parse_http_url("https://example.org/", &why));
  EXPECT_EQ(why, "not an http:// URL");
  EXPECT_FALSE(parse_http_url("ldap://example.org/"));
  EXPECT_FALSE(parse_http_url("http://"));
  EXPECT_FALSE(parse_http_url("http:/x"));
  EXPECT_FALSE(parse_http_url("http://host:0/", &why));
  EXPECT_EQ(why, "the port must be 1-65535");
  EXPECT_FALSE(parse_http_url("http://host:99999/"));
  EXPECT_FALSE(parse_http_url("http://user@host/", &why));
  EXPECT_EQ(why, "credentials in the URL are not supported");
  EXPECT_FALSE(parse_http_url("http://[::1/"));
  EXPECT_FALSE(parse_http_url("http://ho%41st/"));
  EXPECT_FALSE(parse_http_url("127.0.0.1:80"));
}

// Boost.URL 1.81 fails an assertion on bytes it should refuse in a rootless path
// (boostorg/url#665): these abort this (asserting) build unless refused before it parses.
TEST(HttpUrl, RefusesWhatNoUrlHoldsBeforeBoostSeesIt) {
  std::string why;
  for (std::string_view text : {"a:[", ":Ftn:["}) {
    EXPECT_FALSE(parse_http_url(text, &why)) << text;
    EXPECT_EQ(why, "not an http:// URL") << text;
  }
  for (std::string_view text : {std::string_view("A:\\"), std::string_view("ht:\0", 4)}) {
    EXPECT_FALSE(parse_http_url(text, &why)) << text;
    EXPECT_EQ(why, "not a URL") << text;
  }
  for (std::string_view text : {"http://x/a b", "http://x/\x01", "http://x/\x7f",
                                "http://x/\xc3\xa9", "http://x/\\", "http://x/{}", "http://x/\"q\"",
                                "http://x/<a>", "http://x/a|b", "http://x/^", "http://x/`"}) {
    EXPECT_FALSE(parse_http_url(text, &why)) << text;
    EXPECT_EQ(why, "not a URL") << text;
  }
  EXPECT_FALSE(parse_http_url("http:[", &why));
  EXPECT_EQ(why, "no host");
  EXPECT_FALSE(parse_http_url("http:", &why));
  EXPECT_EQ(why, "no host");
  // Reserved bytes where a URL may hold them are still fine.
  auto u = parse_http_url("http://[::1]:8/a;b=c,d/e:f@g!$&'()*+?q=/?#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->target, "/a;b=c,d/e:f@g!$&'()*+?q=/?");
}

namespace {
proxy_settings from(std::map<std::string, std::string> env) {
  return proxy_from_environment([&env](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}
}  // namespace

TEST(ProxyEnvironment, LowerCaseWinsAndSchemeIsOptional) {
  auto s = from({{"HTTP_PROXY", "http://upper:1"}, {"http_proxy", "lower:3128"}});
  ASSERT_TRUE(s.http);
  EXPECT_EQ(s.http->host, "lower");
  EXPECT_EQ(s.http->port, 3128);
  EXPECT_EQ(s.http_variable, "http_proxy");
  s = from({{"HTTP_PROXY", "http://upper:1"}, {"http_proxy", ""}});  // empty = unset
  ASSERT_TRUE(s.http);
  EXPECT_EQ(s.http_variable, "HTTP_PROXY");
  EXPECT_FALSE(s.https);
  EXPECT_FALSE(from({}).http);
}

TEST(ProxyEnvironment, RefusesWhatItCannotUse) {
  EXPECT_THROW(from({{"HTTP_PROXY", "https://proxy:3128"}}), std::runtime_error);
  try {
    from({{"https_proxy", "http://u:secret@proxy:3128"}});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("https_proxy='http://u:REDACTED@proxy:3128': "
                                          "credentials in the URL are not supported",
                                          0),
              0u)
        << e.what();
  }
  // Review: a password holding '/' or '@' was shown whole or in part.
  for (const char* value : {"http://user:pa/ss@proxy:3128", "http://user:p@ss@proxy:3128"}) {
    try {
      from({{"http_proxy", value}});
      FAIL() << value;
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find("pa/ss"), std::string::npos) << what;
      EXPECT_EQ(what.find("ss@"), std::string::npos) << what;
      EXPECT_NE(what.find("REDACTED@proxy:3128"), std::string::npos) << what;
    }
  }
  try {
    from({{"HTTP_PROXY", "http://proxy:0"}});
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP_PROXY='http://proxy:0'"), std::string::npos);
  }
}

TEST(ProxyEnvironment, NoProxyLikeCurl) {
  auto s = from({{"http_proxy", "p:1"},
                 {"NO_PROXY", " Example.ORG, .internal,10.0.0.0/8 ,::1,[fd00::1],192.168.1.7"}});
  EXPECT_TRUE(s.bypass("example.org"));
  EXPECT_TRUE(s.bypass("crl.EXAMPLE.org"));
  EXPECT_FALSE(s.bypass("badexample.org"));  // a suffix only at a dot
  EXPECT_TRUE(s.bypass("ocsp.internal"));
  EXPECT_TRUE(s.bypass("internal"));
  EXPECT_TRUE(s.bypass("10.2.3.4"));
  EXPECT_FALSE(s.bypass("11.2.3.4"));
  EXPECT_TRUE(s.bypass("::1"));
  EXPECT_TRUE(s.bypass("fd00::1"));
  EXPECT_TRUE(s.bypass("192.168.1.7"));
  EXPECT_FALSE(s.bypass("192.168.1.8"));
  EXPECT_FALSE(s.bypass("example.com"));
  EXPECT_EQ(s.for_http("example.com"), &*s.http);
  EXPECT_EQ(s.for_http("example.org"), nullptr);
  EXPECT_TRUE(from({{"no_proxy", "*"}}).bypass("anything.at.all"));
  EXPECT_FALSE(from({}).bypass("example.org"));
}
