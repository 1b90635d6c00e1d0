// What HTTP mode adds to every forwarded request (X-Forwarded-For, -Proto, -Client-Cert), on
// both the HTTP/2 form (header_list) and the HTTP/1.1 head, and which fields never cross a
// protocol boundary (is_hop_by_hop).
#include "mtlsd/proxy/http_forwarding.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <string>
#include <vector>

#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"

namespace mtlsd::proxy {
namespace {

using action = xfcc_policy::action;
namespace http = boost::beast::http;

constexpr const char* element = "Hash=abc;URI=spiffe://example.org/client";
constexpr const char* forged = "By=spiffe://evil;URI=spiffe://example.org/admin";

http_forwarding forwarding(action what = action::remove, bool xff = true, bool xfp = true) {
  http_forwarding f;
  f.xfcc.what = what;
  f.xfcc.element = element;
  f.client_ip = "192.0.2.10";
  f.x_forwarded_for = xff;
  f.x_forwarded_proto = xfp;
  return f;
}

// Every value of `name` in `headers`, in order.
std::vector<std::string> values(const header_list& headers, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [n, v] : headers)
    if (n == name) out.push_back(v);
  return out;
}

using strings = std::vector<std::string>;

// The configured modes (Envoy's table, xfcc_action), a client that sent one forged XFCC line,
// and what must reach the upstream, whichever protocol carried the request.
struct xfcc_mode_case {
  config::xfcc_mode mode;
  bool client_cert;
  strings expected;
};
std::vector<xfcc_mode_case> xfcc_mode_cases() {
  using config::xfcc_mode;
  const std::string appended = std::string(forged) + "," + element;
  return {
      {xfcc_mode::sanitize, true, {}},        {xfcc_mode::sanitize_set, true, {element}},
      {xfcc_mode::sanitize_set, false, {}},   {xfcc_mode::forward_only, true, {forged}},
      {xfcc_mode::forward_only, false, {}},   {xfcc_mode::append_forward, true, {appended}},
      {xfcc_mode::append_forward, false, {}}, {xfcc_mode::always_forward_only, false, {forged}},
  };
}

// --- header_list (HTTP/2 requests) -------------------------------------------------------

TEST(ForwardingHeaderList, XffIsCreatedWhenAbsent) {
  header_list h{{"accept", "*/*"}};
  apply_forwarding(h, forwarding());
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"192.0.2.10"});
  EXPECT_EQ(values(h, "accept"), strings{"*/*"});
}

TEST(ForwardingHeaderList, XffLinesAreJoinedAndTheClientAppended) {
  header_list h{{"x-forwarded-for", "198.51.100.1"}, {"x-forwarded-for", "198.51.100.2, ::1"}};
  apply_forwarding(h, forwarding());
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1, 198.51.100.2, ::1, 192.0.2.10"});
}

TEST(ForwardingHeaderList, XffOffLeavesTheListAloneAndAnUnknownClientIsUnknown) {
  header_list h{{"x-forwarded-for", "198.51.100.1"}};
  apply_forwarding(h, forwarding(action::remove, false));
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1"});
  auto unix_socket = forwarding();
  unix_socket.client_ip.clear();
  apply_forwarding(h, unix_socket);
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1, unknown"});
}

TEST(ForwardingHeaderList, XfpIsSetAndAForgedOneReplaced) {
  header_list absent;
  apply_forwarding(absent, forwarding());
  EXPECT_EQ(values(absent, "x-forwarded-proto"), strings{"https"});
  header_list forged_proto{{"x-forwarded-proto", "http"}, {"x-forwarded-proto", "ftp"}};
  apply_forwarding(forged_proto, forwarding());
  EXPECT_EQ(values(forged_proto, "x-forwarded-proto"), strings{"https"});
}

TEST(ForwardingHeaderList, XfpOffKeepsWhatTheClientSent) {
  header_list h{{"x-forwarded-proto", "http"}};
  apply_forwarding(h, forwarding(action::remove, true, false));
  EXPECT_EQ(values(h, "x-forwarded-proto"), strings{"http"});
}

TEST(ForwardingHeaderList, XfccSanitizeRemovesEveryForgedLine) {
  header_list h{{"x-forwarded-client-cert", forged}, {"x-forwarded-client-cert", "URI=x"}};
  apply_forwarding(h, forwarding(action::remove));
  EXPECT_TRUE(values(h, "x-forwarded-client-cert").empty());
}

TEST(ForwardingHeaderList, XfccSetReplacesForgedLinesWithOurs) {
  header_list h{{"x-forwarded-client-cert", forged}, {"x-forwarded-client-cert", "URI=x"}};
  apply_forwarding(h, forwarding(action::set));
  EXPECT_EQ(values(h, "x-forwarded-client-cert"), strings{element});
  header_list none;
  apply_forwarding(none, forwarding(action::set));
  EXPECT_EQ(values(none, "x-forwarded-client-cert"), strings{element});
}

TEST(ForwardingHeaderList, XfccAppendKeepsThePreviousHops) {
  header_list h{{"x-forwarded-client-cert", "URI=spiffe://example.org/edge"}};
  apply_forwarding(h, forwarding(action::append));
  EXPECT_EQ(values(h, "x-forwarded-client-cert"),
            strings{std::string("URI=spiffe://example.org/edge,") + element});
}

// As on HTTP/1.1 (ForwardingRequestHead.XfccModes...): a name with `_` for `-` is the same header
// to CGI, WSGI, PHP and Rack, so it goes too.
TEST(ForwardingHeaderList, UnderscoreSpellingsAreReplacedToo) {
  header_list h{{"x_forwarded_client_cert", forged},
                {"x_forwarded_for", "198.51.100.1"},
                {"x_forwarded_proto", "http"}};
  apply_forwarding(h, forwarding(action::set));
  EXPECT_EQ(values(h, "x_forwarded_client_cert"), strings{});
  EXPECT_EQ(values(h, "x-forwarded-client-cert"), strings{element});
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1, 192.0.2.10"});
  EXPECT_EQ(values(h, "x_forwarded_proto"), strings{});
}

TEST(ForwardingHeaderList, XfccKeepForwardsTheClientsLinesUntouched) {
  header_list h{{"x-forwarded-client-cert", forged}, {"x-forwarded-client-cert", "URI=x"}};
  apply_forwarding(h, forwarding(action::keep));
  EXPECT_EQ(values(h, "x-forwarded-client-cert"), (strings{forged, "URI=x"}));
}

TEST(ForwardingHeaderList, XfccModesWithAndWithoutAClientCertificate) {
  for (const auto& c : xfcc_mode_cases()) {
    header_list h{{"x-forwarded-client-cert", forged}};
    apply_forwarding(h, forwarding(xfcc_action(c.mode, c.client_cert)));
    EXPECT_EQ(values(h, "x-forwarded-client-cert"), c.expected)
        << static_cast<int>(c.mode) << " cert=" << c.client_cert;
  }
}

// --- forward_request_head (HTTP/1.1 requests) ---------------------------------------------

// The head that goes upstream for a client's `head` (whole, with its empty line).
std::string forwarded(std::string head, const http_forwarding& f) {
  unfold_head(head);
  request_framing req;
  boost::beast::error_code ec;
  EXPECT_EQ(req.put(boost::asio::buffer(head), ec), head.size());
  EXPECT_FALSE(ec) << ec.message();
  std::string out;
  forward_request_head(head, req.head(), f, out);
  return out;
}

// Every value of `name` in an HTTP/1.1 head, as a strict parser reads them, in order.
std::vector<std::string> values(std::string_view head, std::string_view name) {
  http::request_parser<http::empty_body> p;
  boost::beast::error_code ec;
  EXPECT_EQ(p.put(boost::asio::buffer(head.data(), head.size()), ec), head.size());
  EXPECT_FALSE(ec) << ec.message();
  std::vector<std::string> out;
  auto [first, last] = p.get().equal_range(name);
  for (auto it = first; it != last; ++it)
    out.emplace_back(it->value());
  return out;
}

std::string get_with(std::string_view fields) {
  return "GET /a?b HTTP/1.1\r\nHost: x\r\n" + std::string(fields) + "\r\n";
}

TEST(ForwardingRequestHead, XffIsCreatedWhenAbsent) {
  EXPECT_EQ(values(forwarded(get_with(""), forwarding()), "x-forwarded-for"),
            strings{"192.0.2.10"});
}

TEST(ForwardingRequestHead, XffLinesAreJoinedAndTheClientAppended) {
  const auto out = forwarded(
      get_with("X-Forwarded-For: 198.51.100.1\r\nx-forwarded-for: 198.51.100.2\r\n"), forwarding());
  EXPECT_EQ(values(out, "x-forwarded-for"), strings{"198.51.100.1, 198.51.100.2, 192.0.2.10"});
}

// Review: an empty X-Forwarded-For went up as ", 192.0.2.10" over HTTP/1.1; HTTP/2 joined
// ["a", ""] as "a, , hop". Empty members are skipped in both.
TEST(ForwardingRequestHead, EmptyXffMembersAreSkipped) {
  const auto out =
      forwarded(get_with("X-Forwarded-For:\r\nX-Forwarded-For: 198.51.100.1\r\n"), forwarding());
  EXPECT_EQ(values(out, "x-forwarded-for"), strings{"198.51.100.1, 192.0.2.10"});
  header_list h{{"x-forwarded-for", "198.51.100.1"}, {"x-forwarded-for", " "}};
  apply_forwarding(h, forwarding());
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1, 192.0.2.10"});
  // Inside one field too (the diff's review).
  EXPECT_EQ(
      values(forwarded(get_with("X-Forwarded-For: 198.51.100.1, ,198.51.100.2,\r\n"), forwarding()),
             "x-forwarded-for"),
      strings{"198.51.100.1, 198.51.100.2, 192.0.2.10"});
}

TEST(ForwardingRequestHead, XffOffLeavesTheListAloneAndAnUnknownClientIsUnknown) {
  const auto head = get_with("X-Forwarded-For: 198.51.100.1\r\n");
  EXPECT_EQ(values(forwarded(head, forwarding(action::remove, false)), "x-forwarded-for"),
            strings{"198.51.100.1"});
  // Over a unix socket: the client's own last entry must not pass for the hop mtlsd saw.
  auto unknown = forwarding();
  unknown.client_ip.clear();
  EXPECT_EQ(values(forwarded(head, unknown), "x-forwarded-for"), strings{"198.51.100.1, unknown"});
}

TEST(ForwardingRequestHead, XfpIsSetReplacedOrLeftWhenOff) {
  EXPECT_EQ(values(forwarded(get_with(""), forwarding()), "x-forwarded-proto"), strings{"https"});
  const auto forged_proto = get_with("X-Forwarded-Proto: http\r\nx-forwarded-proto: ws\r\n");
  EXPECT_EQ(values(forwarded(forged_proto, forwarding()), "x-forwarded-proto"), strings{"https"});
  EXPECT_EQ(values(forwarded(get_with("X-Forwarded-Proto: http\r\n"),
                             forwarding(action::remove, true, false)),
                   "x-forwarded-proto"),
            strings{"http"});
}

// The same table as the HTTP/2 form's: both protocols reach the upstream with the same XFCC.
TEST(ForwardingRequestHead, XfccModesWithAndWithoutAClientCertificate) {
  for (const auto& c : xfcc_mode_cases()) {
    const auto out = forwarded(get_with("X-Forwarded-Client-Cert: " + std::string(forged) + "\r\n"),
                               forwarding(xfcc_action(c.mode, c.client_cert)));
    EXPECT_EQ(values(out, "x-forwarded-client-cert"), c.expected)
        << static_cast<int>(c.mode) << " cert=" << c.client_cert;
  }
  // Every line the client sent goes, in any spelling (underscores too: CGI, WSGI, PHP and Rack
  // read X_Forwarded_Client_Cert as the same header), when the policy replaces them.
  const auto three = get_with(
      "X-Forwarded-Client-Cert: By=a\r\nx-forwarded-CLIENT-cert: By=b\r\n"
      "X_Forwarded_Client_Cert: By=c\r\n");
  const auto out = forwarded(three, forwarding(action::set));
  EXPECT_EQ(values(out, "x-forwarded-client-cert"), strings{element});
  EXPECT_EQ(out.find("By=c"), std::string::npos);
}

TEST(ForwardingRequestHead, EverythingElseGoesAsTheClientSentIt) {
  const std::string fields = "user-AGENT:  curl/8  \r\nX-Forwarded-Fort: not ours\r\n";
  const auto out = forwarded(get_with(fields), forwarding(action::set));
  EXPECT_EQ(out.substr(0, 28 + fields.size()), "GET /a?b HTTP/1.1\r\nHost: x\r\n" + fields);
  EXPECT_EQ(out.substr(28 + fields.size()),
            "X-Forwarded-Client-Cert: " + std::string(element) +
                "\r\nX-Forwarded-For: 192.0.2.10\r\nX-Forwarded-Proto: https\r\n\r\n");
}

// RFC 9112 3.2.2: a proxy given an absolute-form target ignores the client's Host and sends
// the target's authority; the upstream gets origin-form, as Envoy sends it.
TEST(ForwardingRequestHead, AnAbsoluteFormTargetGoesUpInOriginFormWithItsAuthorityAsHost) {
  const auto out = forwarded(
      "GET http://admin.internal:8080/x?y HTTP/1.1\r\nHost: public.example\r\nA: b\r\n\r\n",
      forwarding(action::keep, false, false));
  EXPECT_EQ(out, "GET /x?y HTTP/1.1\r\nA: b\r\nHost: admin.internal:8080\r\n\r\n");
  EXPECT_EQ(forwarded("GET https://h HTTP/1.0\r\n\r\n", forwarding(action::keep, false, false)),
            "GET / HTTP/1.0\r\nHost: h\r\nConnection: close\r\n\r\n");
}

TEST(ForwardingRequestHead, ExpectContinueIsAnsweredHereNotForwarded) {
  const auto out =
      forwarded("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
                forwarding(action::keep, false, false));
  EXPECT_EQ(out, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n");
  // Another expectation is refused before (judge_request: 417); here it would pass unedited.
  const std::string other = "POST / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n";
  EXPECT_EQ(forwarded(other, forwarding(action::keep, false, false)), other);
}

// The framing goes up as mtlsd writes it: one Content-Length, or `Transfer-Encoding: chunked`.
TEST(ForwardingRequestHead, FramingIsWrittenOnceInOneSpelling) {
  const auto plain = forwarding(action::keep, false, false);
  for (const char* lengths :
       {"Content-Length: 5, 5\r\n", "Content-Length: 5\r\ncontent-length: 5\r\n",
        "Content-Length: 0005\r\n"}) {
    const auto out =
        forwarded("POST / HTTP/1.1\r\nHost: x\r\n" + std::string(lengths) + "\r\n", plain);
    EXPECT_EQ(out, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n") << lengths;
  }
  for (const char* te : {"Transfer-Encoding: CHUNKED\r\n", "Transfer-Encoding:\tchunked\t\r\n"}) {
    const auto out = forwarded("POST / HTTP/1.1\r\nHost: x\r\n" + std::string(te) + "\r\n", plain);
    EXPECT_EQ(out, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n") << te;
  }
}

// RFC 9110 7.6.1: Connection, the fields it names and the other hop-by-hop fields stop here; the
// upstream hears only whether to close. A Connection naming X-Forwarded-Client-Cert would have
// an upstream proxy drop the one mtlsd sets.
TEST(ForwardingRequestHead, HopByHopFieldsAndTheFieldsConnectionNamesStopHere) {
  const auto out = forwarded(
      get_with("Connection: close, X-Forwarded-Client-Cert, X-Secret, x_other\r\n"
               "Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\n"
               "X-Secret: 1\r\nX_Other: 2\r\nUpgrade: websocket\r\nAccept: */*\r\n"),
      forwarding(action::set));
  // TE's "trailers" is what the client accepts end to end: it stays, its codings do not.
  EXPECT_EQ(out,
            "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nTE: trailers\r\n"
            "Connection: close\r\n"
            "X-Forwarded-Client-Cert: " +
                std::string(element) +
                "\r\nX-Forwarded-For: 192.0.2.10\r\nX-Forwarded-Proto: https\r\n\r\n");
  // HTTP/1.0 keep-alive is said again; HTTP/1.1 keep-alive is the default and says nothing.
  const auto plain = forwarding(action::keep, false, false);
  EXPECT_EQ(forwarded("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", plain),
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(forwarded("GET / HTTP/1.0\r\n\r\n", plain),
            "GET / HTTP/1.0\r\nConnection: close\r\n\r\n");
}

// Past a few names the drop list is sorted and searched (http_head.cpp, drop_list): the same
// fields must go, in every spelling, duplicates and all, and the others stay in order.
TEST(ForwardingRequestHead, ALongConnectionListDropsExactlyTheFieldsItNames) {
  std::string connection = "Connection: keep-alive";
  std::string fields;
  for (int i = 0; i < 40; ++i) {
    const std::string name = "X-Named-" + std::to_string(i);
    connection += ", " + name + (i % 3 == 0 ? ", " + name : "");  // some named twice
    std::string spelled = name;
    if (i % 2) std::replace(spelled.begin(), spelled.end(), '-', '_');
    fields += spelled + ": v\r\n" + "X-Kept-" + std::to_string(i) + ": k\r\n";
  }
  const auto out = forwarded(get_with(connection + "\r\n" + fields + "Accept: */*\r\n"),
                             forwarding(action::keep, false, false));
  std::string kept;
  for (int i = 0; i < 40; ++i)
    kept += "X-Kept-" + std::to_string(i) + ": k\r\n";
  EXPECT_EQ(out, "GET /a?b HTTP/1.1\r\nHost: x\r\n" + kept + "Accept: */*\r\n\r\n");
}

TEST(ForwardingRequestHead, AWebSocketUpgradeGoesUpAndAnH2cOneDoesNot) {
  const auto plain = forwarding(action::keep, false, false);
  EXPECT_EQ(
      forwarded("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                plain),
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
  // h2c would be a tunnel in which the client speaks HTTP/2 to the upstream past every field
  // mtlsd sets: the request goes up as a plain one.
  EXPECT_EQ(forwarded("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                      "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
                      plain),
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
}

// --- is_hop_by_hop -----------------------------------------------------------------------

TEST(HopByHop, ConnectionSpecificFieldsAreDropped) {
  for (const char* name : {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                           "upgrade", "http2-settings"})
    EXPECT_TRUE(is_hop_by_hop(name, "x")) << name;
}

TEST(HopByHop, TeOnlyPassesAsTrailers) {
  EXPECT_FALSE(is_hop_by_hop("te", "trailers"));
  EXPECT_TRUE(is_hop_by_hop("te", "gzip"));
  EXPECT_TRUE(is_hop_by_hop("te", "trailers, deflate"));
}

TEST(HopByHop, EndToEndFieldsPass) {
  for (const char* name : {"content-type", "grpc-timeout", "x-forwarded-for", "trailer", "host"})
    EXPECT_FALSE(is_hop_by_hop(name, "x")) << name;
}

// One rule for the trailers of HTTP/1.1 and HTTP/2 clients alike (review: an HTTP/1.1 client's
// Host, Connection, TE... trailers went up).
TEST(Trailers, KeepNoConnectionFramingRoutingOrExpectField) {
  for (const char* name :
       {"connection", "Keep-Alive", "proxy_connection", "TRANSFER-ENCODING", "upgrade",
        "http2-settings", "te", "TE", "content-length", "Host", "expect"})
    EXPECT_FALSE(kept_in_trailers(name)) << name;
  for (const char* name : {"grpc-status", "X-Checksum", "x-forwarded-for", "server-timing"})
    EXPECT_TRUE(kept_in_trailers(name)) << name;
  for (const char* name : {"x-forwarded-for", "X_Forwarded_Client_Cert", "x-forwarded-proto"})
    EXPECT_FALSE(kept_in_request_trailers(name)) << name;
  EXPECT_TRUE(kept_in_request_trailers("grpc-timeout"));
}

}  // namespace
}  // namespace mtlsd::proxy
