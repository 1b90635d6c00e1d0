// The HTTP mode's head rules (http_head.hpp) on parsed messages: refusals, the XFCC rewrite,
// Expect: 100-continue, and the response checks (fuzzed further in fuzz/http_head_fuzz.cpp).
#include "mtlsd/proxy/http_head.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http/parser.hpp>
#include <string_view>

namespace mtlsd::proxy {
namespace {

namespace http = boost::beast::http;

struct parsed_request {
  http::request_parser<http::buffer_body> p;
  explicit parsed_request(std::string_view text) {
    boost::beast::error_code ec;
    p.put(boost::asio::buffer(text.data(), text.size()), ec);
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_TRUE(p.is_header_done());
  }
  request_head_verdict prepare(const xfcc_policy& xfcc) {
    return prepare_request_head(p.get(), p.chunked(), p.is_done(), xfcc);
  }
};

xfcc_policy set_policy() {
  xfcc_policy x;
  x.what = xfcc_policy::action::set;
  x.element = "By=spiffe://td/us;URI=spiffe://td/client";
  return x;
}

TEST(HttpHead, RefusesConnect) {
  parsed_request r("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n");
  const auto v = r.prepare(set_policy());
  EXPECT_EQ(v.status, 405);
  EXPECT_EQ(v.why, "CONNECT is not proxied");
}

TEST(HttpHead, RefusesTransferEncodingWithoutFinalChunked) {
  parsed_request r("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n");
  const auto v = r.prepare(set_policy());
  EXPECT_EQ(v.status, 400);
  EXPECT_EQ(v.why, "Transfer-Encoding without final chunked");
}

TEST(HttpHead, ReplacesEveryClientXfccLine) {
  parsed_request r(
      "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: By=forged\r\n"
      "x-forwarded-client-cert: URI=forged\r\n\r\n");
  const auto v = r.prepare(set_policy());
  EXPECT_EQ(v.status, 0);
  auto& m = r.p.get();
  EXPECT_EQ(m.count(xfcc_header), 1u);
  EXPECT_EQ(m[xfcc_header], set_policy().element);
}

TEST(HttpHead, AnswersExpectContinueHereOnlyWhenABodyFollows) {
  parsed_request with_body(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  auto v = with_body.prepare(set_policy());
  EXPECT_TRUE(v.send_continue);
  EXPECT_EQ(with_body.p.get().count(http::field::expect), 0u);

  parsed_request no_body("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
  v = no_body.prepare(set_policy());
  EXPECT_FALSE(v.send_continue);
  EXPECT_EQ(no_body.p.get().count(http::field::expect), 0u);
}

TEST(HttpHead, SeesHeadUpgradeAndKeepAlive) {
  parsed_request r("HEAD / HTTP/1.0\r\nHost: x\r\n\r\n");
  auto v = r.prepare(set_policy());
  EXPECT_TRUE(v.head);
  EXPECT_FALSE(v.keep_alive);
  parsed_request u(
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  v = u.prepare(set_policy());
  EXPECT_TRUE(v.upgrade);
  EXPECT_TRUE(v.keep_alive);
}

TEST(HttpHead, ResponseRules) {
  http_response_head m;
  m.result(101);
  EXPECT_EQ(prepare_response_head(m, false), "101 Switching Protocols without an Upgrade request");
  EXPECT_EQ(prepare_response_head(m, true), "");

  http_response_head both;
  both.result(200);
  both.set(http::field::transfer_encoding, "chunked");
  both.set(http::field::content_length, "5");
  EXPECT_EQ(prepare_response_head(both, false), "");
  EXPECT_EQ(both.count(http::field::content_length), 0u);
}

}  // namespace
}  // namespace mtlsd::proxy
