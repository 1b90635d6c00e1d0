// The HTTP mode's head rules (http_head.hpp): the verdict on a request head, the checks and edits
// on raw heads, and the parsers that say where a message ends and what its head holds
// (http_framing.hpp); fuzzed further in fuzz/http_head_fuzz.cpp. The forwarded headers are
// http_forwarding_test.cpp's.
#include "mtlsd/proxy/http_head.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http/parser.hpp>
#include <string>
#include <string_view>

#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"

namespace mtlsd::proxy {
namespace {

namespace http = boost::beast::http;

// judge_request's verdict on a whole request head.
request_head_verdict judged(std::string_view head) {
  request_framing req;
  boost::beast::error_code ec;
  EXPECT_EQ(req.put(boost::asio::buffer(head.data(), head.size()), ec), head.size());
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(req.is_header_done());
  return judge_request(req);
}

TEST(HttpHead, RefusesConnect) {
  const auto v = judged("CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n");
  EXPECT_EQ(v.status, 405);
  EXPECT_EQ(v.why, "CONNECT is not proxied");
}

// A POST whose Transfer-Encoding field reads `te`.
request_head_verdict judged_with_coding(std::string_view te) {
  return judged("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + std::string(te) + "\r\n\r\n");
}

TEST(HttpHead, RefusesTransferEncodingWithoutFinalChunked) {
  for (const char* te : {"gzip", "chunked, gzip"}) {
    const auto v = judged_with_coding(te);
    EXPECT_EQ(v.status, 400) << te;
    EXPECT_EQ(v.why, "Transfer-Encoding without final chunked");
  }
}

// mtlsd writes `Transfer-Encoding: chunked` upstream itself: another coding would be lost.
TEST(HttpHead, AnswersACodingBesidesChunkedWith501) {
  for (const char* te : {"gzip, chunked", "identity, chunked"}) {
    const auto v = judged_with_coding(te);
    EXPECT_EQ(v.status, 501) << te;
    EXPECT_EQ(v.why, "a transfer coding other than chunked");
  }
  // Spellings of chunked alone pass (and are rewritten as one `chunked` upstream).
  for (const char* te : {"chunked", "CHUNKED", "\tchunked\t"})
    EXPECT_EQ(judged_with_coding(te).status, 0) << te;
}

// Beast reads a Transfer-Encoding list only up to its first character that is not a token's;
// mtlsd reads it whole (review: `chunked, "x"` and `chunked;q=1` were taken for chunked).
TEST(HttpHead, ReadsTheWholeTransferEncodingList) {
  for (const char* te : {"chunked, \"x\"", "chunked, @", "chunked;", "chunked;q",
                         "chunked;q=", "chunked;q=\"1", "chunked x", "gzip;a=\"b, chunked"}) {
    const auto v = judged_with_coding(te);
    EXPECT_EQ(v.status, 400) << te;
    EXPECT_EQ(v.why, "a Transfer-Encoding list that does not parse") << te;
  }
  for (const char* te : {"chunked;q=1", "chunked ; a=\"b,c\"", "gzip, chunked;x=y"}) {
    const auto v = judged_with_coding(te);
    EXPECT_EQ(v.status, 400) << te;
    EXPECT_EQ(v.why, "parameters on the chunked transfer coding") << te;
  }
  for (const char* te : {"chunked,", ", chunked", " ,chunked , "})  // RFC 9110 5.6.1
    EXPECT_EQ(judged_with_coding(te).status, 0) << te;
  // A parameter on another coding parses: that coding is what gets refused.
  const auto coded = read_transfer_encoding("gzip;level=\"9, x\", chunked");
  EXPECT_TRUE(coded.parsed && coded.other && !coded.chunked_parameters);
}

TEST(HttpHead, ReadsTheWholeUpgradeListAndSeesH2cInAnyMember) {
  const auto upgrade = [](std::string_view offer) {
    return judged("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: " +
                  std::string(offer) + "\r\n\r\n");
  };
  // h2c is never an upgrade: the request goes up as a plain one.
  for (const char* offer : {"h2c", "websocket/13, h2c", "x/1, H2C", "h2c/1", "foo, h2C/x"}) {
    const auto v = upgrade(offer);
    EXPECT_EQ(v.status, 0) << offer;
    EXPECT_FALSE(v.upgrade) << offer;
  }
  for (const char* offer : {"@, h2c", "websocket/, h2c", "/1", "a/b/c", "a b", "\"h2c\""}) {
    const auto v = upgrade(offer);
    EXPECT_EQ(v.status, 400) << offer;
    EXPECT_EQ(v.why, "an Upgrade list that does not parse") << offer;
  }
  EXPECT_TRUE(upgrade("websocket/13, foo").upgrade);
  EXPECT_TRUE(upgrade(" , websocket ,").upgrade);
}

TEST(HttpHead, RefusesAContentLengthAbove2To63Minus1) {
  const auto with_length = [](std::string_view length) {
    const std::string head =
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::string(length) + "\r\n\r\n";
    request_framing req;
    req.body_limit(boost::none);  // as the relay parses: bodies are streamed
    boost::beast::error_code ec;
    EXPECT_EQ(req.put(boost::asio::buffer(head), ec), head.size());
    EXPECT_FALSE(ec) << ec.message();
    return judge_request(req);
  };
  for (const char* length : {"9223372036854775808", "18446744073709551615"}) {
    const auto v = with_length(length);
    EXPECT_EQ(v.status, 400) << length;
    EXPECT_EQ(v.why, "a Content-Length above 2^63-1");
  }
  EXPECT_EQ(with_length("9223372036854775807").status, 0);
}

TEST(HttpHead, WantsExactlyOneHostInHttp11AndAtMostOneBefore) {
  auto v = judged("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(v.status, 400);
  EXPECT_EQ(v.why, "no Host field");
  v = judged("GET / HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n\r\n");
  EXPECT_EQ(v.status, 400);
  EXPECT_EQ(v.why, "more than one Host field");
  EXPECT_EQ(judged("GET / HTTP/1.0\r\n\r\n").status, 0);
  EXPECT_EQ(judged("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status, 400);
}

TEST(HttpHead, RefusesAnAbsoluteFormTargetItCannotSendInOriginForm) {
  for (const char* target : {"ftp://x/a", "http:///a", "http://user:pw@x/a", "HTTP://@x/",
                             "http://:80/p", "http://good\\evil/p", "http://h%2fevil/p",
                             "http://h:99999/", "http://h:8x/", "http://[::1/", "http://[zz]/"}) {
    const auto v = judged("GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(v.status, 400) << target;
    EXPECT_NE(v.why.find("absolute-form"), std::string::npos) << target << ": " << v.why;
  }
  for (const char* target : {"http://x/a", "HTTPS://x:8443", "http://x?q=1", "/p://q",
                             "http://[::1]:80/", "http://h:/", "//evil.example/p", "http://a_b~c/"})
    EXPECT_EQ(judged("GET " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n\r\n").status, 0)
        << target;
}

TEST(HttpHead, RefusesATargetOfNoFormAndAnInvalidHost) {
  for (const char* target : {"http:/x", "http:x", "http:\\\\evil/x", "evil.example/x", "://x",
                             "?x://y", "*", "/a#frag", "http://evil.example#.good.example/p"}) {
    const auto v = judged("GET " + std::string(target) + " HTTP/1.1\r\nHost: h\r\n\r\n");
    EXPECT_EQ(v.status, 400) << target;
  }
  EXPECT_EQ(judged("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").status, 0);
  for (const char* host : {"a,b", "evil#.good", "h\\x", "h:http", "h%2f", "[::1", ":80"})
    EXPECT_EQ(judged("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n").status, 400)
        << host;
  for (const char* host : {"h", "h.example.:8443", "[2001:db8::1]:443", "10.0.0.1", "a_b"})
    EXPECT_EQ(judged("GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n").status, 0)
        << host;
  EXPECT_EQ(judged("GET / HTTP/1.1\r\nHost:\r\n\r\n").status, 0);  // RFC 9112 3.2: allowed
}

TEST(RequestFraming, SplitsAnAbsoluteFormTarget) {
  struct c {
    std::string_view target, authority, origin;
  };
  for (const auto& [target, authority, origin] :
       {c{"http://api.example:8080/a/b?c=d", "api.example:8080", "/a/b?c=d"},
        c{"https://x", "x", "*"}, c{"http://x?q", "x", "/?q"}, c{"/plain?x", "host", "/plain?x"},
        c{"*", "host", "*"}}) {
    const std::string head = "OPTIONS " + std::string(target) + " HTTP/1.1\r\nHost: host\r\n\r\n";
    request_framing req;
    boost::beast::error_code ec;
    req.put(boost::asio::buffer(head), ec);
    ASSERT_FALSE(ec) << target;
    EXPECT_EQ(request_authority(req.head()), authority) << target;
    EXPECT_EQ(origin_form(req.head()), origin) << target;
  }
}

TEST(HttpHead, AnswersExpectContinueHereOnlyWhenABodyFollows) {
  EXPECT_TRUE(
      judged("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
          .send_continue);
  EXPECT_FALSE(judged("GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").send_continue);
  // RFC 9110 10.1.1: ignored in an HTTP/1.0 request.
  EXPECT_FALSE(
      judged("POST / HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
          .send_continue);
}

// Every Expect field and member counts, not the first field only (review: `Expect: foo` then
// `Expect: 100-continue` went up whole, unanswered here).
TEST(HttpHead, ReadsEveryExpectationAndRefusesOthersThan100ContinueWith417) {
  const auto with = [](std::string_view expect) {
    return judged("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n" + std::string(expect) +
                  "\r\n\r\n");
  };
  for (const char* expect : {"Expect: foo\r\nExpect: 100-continue", "Expect: 100-continue, foo",
                             "Expect: foo=bar", "Expect: 100-continue\r\nExpect: x"}) {
    const auto v = with(expect);
    EXPECT_EQ(v.status, 417) << expect;
    EXPECT_EQ(v.reason, "Expectation Failed");
    EXPECT_EQ(v.why, "an expectation other than 100-continue");
  }
  for (const char* expect :
       {"Expect: 100-CONTINUE", "X: y\r\nExpect: 100-continue", "Expect: , 100-continue ,"}) {
    const auto v = with(expect);
    EXPECT_EQ(v.status, 0) << expect;
    EXPECT_TRUE(v.send_continue) << expect;
  }
}

TEST(HttpHead, SeesHeadUpgradeAndKeepAlive) {
  auto v = judged("HEAD / HTTP/1.0\r\nHost: x\r\n\r\n");
  EXPECT_TRUE(v.head);
  EXPECT_FALSE(v.keep_alive);
  v = judged("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  EXPECT_TRUE(v.upgrade);
  EXPECT_TRUE(v.keep_alive);
  EXPECT_FALSE(judged("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n").upgrade);
  EXPECT_FALSE(
      judged("GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

TEST(RequestFraming, ReportsTheHeadAsViewsIntoItsBytes) {
  const std::string head =
      "PATCH /p?q=1 HTTP/1.1\r\nhost: a.example\r\nHost: b.example\r\n"
      "X-Forwarded-Client-Cert: By=x\r\nx-forwarded-for: 1.2.3.4\r\nX-FORWARDED-FOR: "
      "5.6.7.8\r\n\r\n";
  request_framing req;
  boost::beast::error_code ec;
  req.put(boost::asio::buffer(head), ec);
  ASSERT_FALSE(ec);
  const auto& h = req.head();
  EXPECT_EQ(h.method, http::verb::patch);
  EXPECT_EQ(h.method_text, "PATCH");
  EXPECT_EQ(h.target, "/p?q=1");
  EXPECT_EQ(h.host, "a.example");  // the first
  EXPECT_EQ(h.xfcc, (std::vector<std::string_view>{"By=x"}));
  EXPECT_EQ(h.xff, (std::vector<std::string_view>{"1.2.3.4", "5.6.7.8"}));
  EXPECT_GE(h.target.data(), head.data());
  EXPECT_LT(h.xff.back().data(), head.data() + head.size());
}

TEST(RequestFraming, ClaimsABodyWithItsFramingAndCountsThePayload) {
  const std::string head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string body = "3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n";
  const std::string next = "GET / HTTP/1.1\r\n";
  std::uint64_t payload = 0;
  request_framing req;
  req.count_body_in(payload);
  boost::beast::error_code ec;
  EXPECT_EQ(req.put(boost::asio::buffer(head), ec), head.size());
  req.eager(true);
  const std::string rest = body + next;
  EXPECT_EQ(req.put(boost::asio::buffer(rest), ec), body.size());
  EXPECT_FALSE(ec);
  EXPECT_TRUE(req.is_done());
  EXPECT_EQ(payload, 3u);
}

TEST(HttpHead, RefusesTransferEncodingInHttp10) {
  const auto v = judged("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(v.status, 400);
  EXPECT_EQ(v.why, "Transfer-Encoding in an HTTP/1.0 request");
}

TEST(HttpHead, FieldNamesMatchInAnyCaseWithUnderscoresAsDashes) {
  EXPECT_TRUE(same_field_name("X-Forwarded-Client-Cert", "x-forwarded-client-cert"));
  EXPECT_TRUE(same_field_name("x_forwarded_CLIENT_cert", "x-forwarded-client-cert"));
  EXPECT_FALSE(same_field_name("X-Forwarded-Client-Certs", "x-forwarded-client-cert"));
  EXPECT_FALSE(same_field_name("X-Forwarded.Client-Cert", "x-forwarded-client-cert"));
}

// What a framing parser says of `head` followed by `body` (given whole, eager), as the relay
// drives it: the error, if any.
template <class Framing>
boost::beast::error_code framing_error(std::string_view head, std::string_view body) {
  Framing f;
  f.body_limit(boost::none);  // as the relay parses: bodies are streamed
  boost::beast::error_code ec;
  f.put(boost::asio::buffer(head.data(), head.size()), ec);
  if (ec || body.empty()) return ec;
  f.eager(true);
  f.put(boost::asio::buffer(body.data(), body.size()), ec);
  return ec;
}

TEST(Framing, RefusesControlCharactersInChunkExtensions) {
  // Beast alone accepts the bare LF inside the quoted value: a peer that ends chunk lines at LF
  // would take the data to start 3 bytes earlier (a smuggled request in the difference).
  const std::string smuggling = "5;a=\"\n\"\r\nhello\r\n0\r\n\r\n";
  const std::string fine = "5;a=\"b c\";d=e\r\nhello\r\n0\r\n\r\n";
  const auto req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const auto res = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  EXPECT_EQ(framing_error<request_framing>(req, smuggling), http::error::bad_chunk_extension);
  EXPECT_EQ(framing_error<response_framing>(res, smuggling), http::error::bad_chunk_extension);
  EXPECT_FALSE(framing_error<request_framing>(req, fine));
  EXPECT_FALSE(framing_error<response_framing>(res, fine));
}

TEST(Framing, RefusesFoldedTrailersAndForwardingTrailersInRequests) {
  const auto req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const auto res = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string folded = "0\r\nT: a\r\n b\r\n\r\n";
  EXPECT_EQ(framing_error<request_framing>(req, folded), http::error::bad_field);
  EXPECT_EQ(framing_error<response_framing>(res, folded), http::error::bad_field);
  for (const char* name : {"X-Forwarded-Client-Cert", "x_forwarded_for", "X-FORWARDED-PROTO"}) {
    const std::string trailer = std::string("0\r\n") + name + ": forged\r\n\r\n";
    EXPECT_EQ(framing_error<request_framing>(req, trailer), http::error::bad_field) << name;
    EXPECT_FALSE(framing_error<response_framing>(res, trailer)) << name;
  }
  EXPECT_FALSE(framing_error<request_framing>(req, "0\r\nX-Checksum: 1\r\n\r\n"));
}

TEST(Framing, RefusesAChunkSizeAbove2To63Minus1BothWays) {
  const auto req = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  const auto res = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const char* size : {"8000000000000000\r\nabc", "ffffffffffffffff\r\nabc"}) {
    EXPECT_EQ(framing_error<request_framing>(req, size), http::error::bad_chunk) << size;
    EXPECT_EQ(framing_error<response_framing>(res, size), http::error::bad_chunk) << size;
  }
  EXPECT_FALSE(framing_error<request_framing>(req, "7fffffffffffffff\r\nabc"));
}

// Trailers that have no place in a trailer section are dropped, as an HTTP/2 client's are
// (kept_in_request_trailers); the others go up as mtlsd writes them. (Beast itself refuses a
// Transfer-Encoding or Content-Length trailer next to the head's chunked.)
TEST(Framing, DropsConnectionFramingAndRoutingFieldsFromRequestTrailers) {
  request_framing req;
  req.rewrite_chunks();
  boost::beast::error_code ec;
  const std::string_view head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  req.put(boost::asio::buffer(head.data(), head.size()), ec);
  ASSERT_FALSE(ec);
  req.eager(true);
  const std::string_view body =
      "1\r\nA\r\n0\r\nHost: evil.example\r\nConnection: close\r\nUpgrade: websocket\r\n"
      "TE: trailers\r\nKeep-Alive: 1\r\nExpect: foo\r\nContent_Length: 3\r\n"
      "X-Sum: 1\r\nproxy-connection: x\r\n\r\n";
  std::string_view rest = body;
  while (!rest.empty() && !ec && !req.is_done())  // as forward_body puts what is buffered
    rest.remove_prefix(req.put_body(rest, ec));
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(req.is_done() && rest.empty());
  EXPECT_EQ(req.rewritten(), "1\r\nA\r\n0\r\nX-Sum: 1\r\n\r\n");
}

// For an HTTP/1.0 client: the data alone, whatever the chunks and trailers.
TEST(Framing, UnchunksAResponseBodyToItsDataAlone) {
  response_framing res;
  res.unchunk();
  boost::beast::error_code ec;
  const std::string_view head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  res.put(boost::asio::buffer(head.data(), head.size()), ec);
  ASSERT_FALSE(ec);
  res.eager(true);
  const std::string_view body = "2;x=y\r\nok\r\n3\r\n!!!\r\n0\r\nX-Sum: 1\r\n\r\n";
  std::string_view rest = body;
  while (!rest.empty() && !ec && !res.is_done())
    rest.remove_prefix(res.put_body(rest, ec));
  EXPECT_FALSE(ec);
  EXPECT_TRUE(res.is_done() && res.rewrites_body() && rest.empty());
  EXPECT_EQ(res.rewritten(), "ok!!!");
}

TEST(Framing, RefusesAResponseWithTransferEncodingAndContentLength) {
  for (const char* head :
       {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\n"})
    EXPECT_TRUE(framing_error<response_framing>(head, "")) << head;
  EXPECT_FALSE(
      framing_error<response_framing>("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", ""));
}

// response_head_refusal on a whole response head, for a request that offered `offer` ("": none).
std::string refusal_of(std::string_view head, std::string_view offer) {
  response_framing res;
  boost::beast::error_code ec;
  EXPECT_EQ(res.put(boost::asio::buffer(head.data(), head.size()), ec), head.size()) << head;
  EXPECT_FALSE(ec) << ec.message();
  return std::string(response_head_refusal(res, !offer.empty(), offer));
}

TEST(HttpHead, TakesA101OnlyToAnUpgradeOfferedWithUpgradeAndConnection) {
  const std::string ws =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  EXPECT_EQ(refusal_of(ws, ""), "101 Switching Protocols without an Upgrade request");
  EXPECT_EQ(refusal_of(ws, "websocket"), "");
  EXPECT_EQ(refusal_of(ws, "foo/2, WebSocket"), "");
  EXPECT_EQ(refusal_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", ""), "");
  // A bare 101, or one missing either field, while the upstream may still speak HTTP: the
  // tunnel would carry the client's next requests past the X-Forwarded-* edits.
  for (const char* head :
       {"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: \r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n"})
    EXPECT_EQ(refusal_of(head, "websocket"),
              "101 Switching Protocols without Upgrade and Connection: upgrade")
        << head;
  // Only protocols the request offered (RFC 9110 7.8); a version only where the offer had one
  // or named none.
  const auto to = [](std::string_view upgrade) {
    return "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: " +
           std::string(upgrade) + "\r\n\r\n";
  };
  const std::string not_offered = "101 Switching Protocols to a protocol the request did not offer";
  EXPECT_EQ(refusal_of(to("ws2"), "websocket"), not_offered);
  EXPECT_EQ(refusal_of(to("websocket, ws2"), "websocket"), not_offered);
  EXPECT_EQ(refusal_of(to("foo/2"), "foo/1"), not_offered);
  EXPECT_EQ(refusal_of(to("foo/2"), "foo"), "");
  EXPECT_EQ(refusal_of(to("foo/2"), "bar, \tfoo/2"), "");
  EXPECT_EQ(refusal_of(to("Foo"), "foo/2"), "");  // the offer's version, unnamed
  EXPECT_EQ(refusal_of(to("bar/2"), "foo/2"), not_offered);
}

// Never to h2c, whatever the request offered (an offer of h2c never goes up: the switch would be
// a tunnel past every X-Forwarded-* field), and never on an Upgrade that does not parse.
TEST(HttpHead, TakesNo101ToH2cWhateverWasOffered) {
  const auto to = [](std::string_view upgrade) {
    return "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: " +
           std::string(upgrade) + "\r\n\r\n";
  };
  for (const char* upgrade : {"h2c", "H2C", "websocket, h2c", "h2c/2"})
    for (const char* offer : {"h2c", "websocket, h2c", "websocket"})
      EXPECT_EQ(refusal_of(to(upgrade), offer), "101 Switching Protocols to h2c")
          << upgrade << " / " << offer;
  EXPECT_EQ(refusal_of(to("websocket/\"13\""), "websocket"),
            "101 Switching Protocols with an Upgrade list that does not parse");
}

TEST(HttpHead, RefusesAResponseStatusOutside100To599) {
  for (const char* line : {"HTTP/1.1 099 X", "HTTP/1.1 000 X", "HTTP/1.1 600 X", "HTTP/1.1 999 X"})
    EXPECT_EQ(refusal_of(std::string(line) + "\r\nContent-Length: 0\r\n\r\n", ""),
              "a response status outside 100-599")
        << line;
  for (const char* line : {"HTTP/1.1 100 X", "HTTP/1.1 599 X", "HTTP/1.1 299 X"})
    EXPECT_EQ(refusal_of(std::string(line) + "\r\nContent-Length: 0\r\n\r\n", ""), "") << line;
  // The rule alone, as an HTTP/2 client's exchange with an HTTP/1.1 upstream applies it to every
  // head, interim ones included: 99 is no interim response.
  for (const unsigned status : {0u, 99u, 600u, 999u})
    EXPECT_EQ(response_status_refusal(status), "a response status outside 100-599") << status;
  for (const unsigned status : {100u, 101u, 199u, 200u, 599u})
    EXPECT_EQ(response_status_refusal(status), "") << status;
}

// The rule response_framing and an HTTP/2 client's exchange share for a response's list.
TEST(HttpHead, NamesWhyAResponsesTransferEncodingCannotBeRead) {
  const auto why = [](std::string_view te) {
    return std::string(unreadable_transfer_encoding(read_transfer_encoding(te)));
  };
  EXPECT_EQ(why("chunked, \"x\""), "a Transfer-Encoding list that does not parse");
  EXPECT_EQ(why("chunked;q=1"), "parameters on the chunked transfer coding");
  for (const char* te : {"chunked", " , Chunked", "gzip, chunked", "gzip;level=9, chunked"})
    EXPECT_EQ(why(te), "") << te;  // a coding besides chunked is each path's own question
}

TEST(HttpHead, AnUpgradeVerdictCarriesEveryOfferedProtocol) {
  const auto v = judged(
      "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo/1\r\nConnection: upgrade\r\n"
      "Upgrade: websocket\r\n\r\n");
  EXPECT_TRUE(v.upgrade);
  EXPECT_EQ(v.upgrade_offer, "foo/1, websocket");
  EXPECT_EQ(judged("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n").upgrade_offer, "");
}

// HTTP mode holds a connection admitted by an `sni` rule to that name (http_forwarding).
TEST(HttpHead, AnAuthorityNamesAHostWhateverItsPortAndCase) {
  EXPECT_TRUE(authority_is_host("api.example.org", "api.example.org"));
  EXPECT_TRUE(authority_is_host("API.Example.org:8443", "api.example.org"));
  EXPECT_TRUE(authority_is_host("[::1]:8443", "::1"));
  EXPECT_FALSE(authority_is_host("admin.example.org", "api.example.org"));
  EXPECT_FALSE(authority_is_host("api.example.org.evil", "api.example.org"));
  EXPECT_FALSE(authority_is_host("", "api.example.org"));
  EXPECT_FALSE(authority_is_host(":443", "api.example.org"));
  EXPECT_TRUE(authority_is_host("api.example.org.", "api.example.org"));  // fully qualified
  EXPECT_TRUE(authority_is_host("api.example.org.:443", "api.example.org"));
  EXPECT_FALSE(authority_is_host(".", "api.example.org"));
  EXPECT_EQ(misdirected("", "api.example.org"),
            "the request names no host; the listener's rules judged the TLS server name "
            "'api.example.org'");
  EXPECT_EQ(misdirected("admin.example.org", ""), "");  // no name binds the connection
  EXPECT_EQ(misdirected("api.example.org:1", "api.example.org"), "");
  EXPECT_EQ(misdirected("admin.example.org", "api.example.org"),
            "the request is for 'admin.example.org', not the TLS server name 'api.example.org' "
            "the listener's rules judged");
}

TEST(HttpHead, UnfoldingReplacesEachObsFoldWithSpacesInPlace) {
  std::string head = "HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\n\tthree\r\nX-B: b\r\n\r\n";
  const auto size = head.size();
  EXPECT_TRUE(unfold_head(head));
  EXPECT_EQ(head, "HTTP/1.1 200 OK\r\nX-A: one   two  \tthree\r\nX-B: b\r\n\r\n");
  EXPECT_EQ(head.size(), size);
  // No fold: untouched. Whitespace after the start line is no fold: left for the parser.
  for (std::string plain :
       {"HTTP/1.1 204 No Content\r\nA: b\r\n\r\n", "GET / HTTP/1.1\r\n Host: x\r\n\r\n"}) {
    const std::string before = plain;
    EXPECT_FALSE(unfold_head(plain));
    EXPECT_EQ(plain, before);
  }
}

// forward_response_head: the upstream connection's hop-by-hop fields stay on its side.
std::string forwarded_response(std::string_view head, std::string_view connection) {
  std::string out;
  forward_response_head(head, connection, out);
  return out;
}

TEST(HttpHead, ConnectionCloseReplacesEveryConnectionLine) {
  EXPECT_EQ(forwarded_response("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nA: b\r\n"
                               "connection: foo,\r\n bar\r\nProxy-Connection: keep-alive\r\n"
                               "Content-Length: 0\r\n\r\n",
                               "close"),
            "HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(forwarded_response("HTTP/1.1 204 No Content\r\n\r\n", "close"),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  // Only a field named Connection goes: not one whose name or value merely contains it.
  EXPECT_EQ(
      forwarded_response("HTTP/1.1 200 OK\r\nX-Connection: a\r\nB: Connection\r\n\r\n", "close"),
      "HTTP/1.1 200 OK\r\nX-Connection: a\r\nB: Connection\r\nConnection: close\r\n\r\n");
}

TEST(HttpHead, ResponseHopByHopFieldsStayUpstream) {
  // The fields each Connection line names go, as do Keep-Alive, Upgrade, TE and their odd
  // spellings; the framing fields stay even when named.
  EXPECT_EQ(forwarded_response("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\n"
                               "X-Secret: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n"
                               "Connection: x-other, content-length\r\nX-Other: 2\r\n"
                               "Keep_Alive: 3\r\nTE: trailers\r\nContent-Length: 2\r\n"
                               "X-Kept: 4\r\n\r\n",
                               ""),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 4\r\n\r\n");
  EXPECT_EQ(forwarded_response("HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\n\r\n", "keep-alive"),
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n");
}

// What response_framing makes of `bytes`, fed in pieces of `piece` bytes the way the relay
// feeds it (the head whole, then the body as it comes): bytes it claimed, payload counted.
struct framed {
  std::size_t claimed = 0;
  std::uint64_t payload = 0;
  bool done = false;
  bool keep_alive = false;
  unsigned status = 0;
};
framed frame(std::string_view bytes, std::size_t piece, bool head_request = false) {
  framed out;
  response_framing res;
  res.count_body_in(out.payload);
  res.body_limit(boost::none);
  if (head_request) res.skip(true);
  const auto head_end = bytes.find("\r\n\r\n") + 4;
  boost::beast::error_code ec;
  out.claimed = res.put(boost::asio::buffer(bytes.data(), head_end), ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_EQ(out.claimed, head_end);
  res.eager(true);
  std::string pending;  // bytes given but not claimed yet (a partial chunk line)
  for (std::size_t at = head_end; at < bytes.size() && !res.is_done(); at += piece) {
    pending.append(bytes.substr(at, piece));
    const auto n = res.put(boost::asio::buffer(pending), ec);
    if (ec == boost::beast::http::error::need_more) ec = {};
    EXPECT_FALSE(ec) << ec.message();
    out.claimed += n;
    pending.erase(0, n);
  }
  out.done = res.is_done();
  out.keep_alive = res.keep_alive();
  out.status = res.status();
  return out;
}

TEST(ResponseFraming, ClaimsExactlyOneMessageWithItsFraming) {
  const std::string next = "HTTP/1.1 200 OK\r\n";  // a following response is not claimed
  const std::string sized = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
  const std::string chunked =
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer-A: x\r\n\r\n";
  for (std::size_t piece : {1u, 3u, 7u, 4096u}) {
    auto f = frame(sized + next, piece);
    EXPECT_TRUE(f.done);
    EXPECT_EQ(f.claimed, sized.size()) << piece;
    EXPECT_EQ(f.payload, 5u);
    EXPECT_EQ(f.status, 200u);
    f = frame(chunked + next, piece);
    EXPECT_TRUE(f.done);
    EXPECT_EQ(f.claimed, chunked.size()) << piece;  // extensions and trailers included
    EXPECT_EQ(f.payload, 8u);
    EXPECT_EQ(f.status, 201u);
  }
}

TEST(ResponseFraming, KnowsTheMessagesWithoutABody) {
  auto f = frame("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 4096, true);
  EXPECT_TRUE(f.done);
  EXPECT_EQ(f.payload, 0u);
  EXPECT_EQ(f.claimed, 38u);  // the head only: a response to HEAD
  for (const char* head :
       {"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\n\r\n"}) {
    f = frame(std::string(head) + "HTTP/1.1 200 OK\r\n", 4096);
    EXPECT_TRUE(f.done) << head;
    EXPECT_EQ(f.claimed, std::string_view(head).size());
  }
}

TEST(ResponseFraming, ABodyWithoutLengthRunsToTheCloseAndEndsTheConnection) {
  std::uint64_t payload = 0;
  response_framing res;
  res.count_body_in(payload);
  boost::beast::error_code ec;
  const std::string_view head = "HTTP/1.1 200 OK\r\n\r\n";
  EXPECT_EQ(res.put(boost::asio::buffer(head.data(), head.size()), ec), head.size());
  res.eager(true);
  EXPECT_EQ(res.put(boost::asio::buffer(std::string_view("all of it")), ec), 9u);
  EXPECT_FALSE(res.is_done());
  res.put_eof(ec);
  EXPECT_FALSE(ec);
  EXPECT_TRUE(res.is_done());
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(payload, 9u);
}

TEST(ResponseFraming, RefusesSmugglingShapes) {
  for (const char* head :
       {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 3\n\n",
        // What Beast alone reads otherwise than a client might (review): the list up to a
        // character that is no token's, a length a signed reader takes for negative.
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, \"x\"\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n"}) {
    response_framing res;
    boost::beast::error_code ec;
    res.put(boost::asio::buffer(std::string_view(head)), ec);
    EXPECT_TRUE(ec) << head;
  }
}

}  // namespace
}  // namespace mtlsd::proxy
