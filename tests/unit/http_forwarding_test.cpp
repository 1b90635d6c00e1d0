// What HTTP mode adds to every forwarded request (X-Forwarded-For, -Proto, -Client-Cert), on
// both the HTTP/2 form (header_list) and the HTTP/1.1 head, and which fields never cross a
// protocol boundary (is_hop_by_hop).
#include "mtlsd/proxy/http_forwarding.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

std::vector<std::string> values(const http_request_head& msg, std::string_view name) {
  std::vector<std::string> out;
  auto [first, last] = msg.equal_range(name);
  for (auto it = first; it != last; ++it)
    out.emplace_back(it->value());
  return out;
}

using strings = std::vector<std::string>;

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

TEST(ForwardingHeaderList, XffOffOrUnknownClientLeavesTheListAlone) {
  header_list h{{"x-forwarded-for", "198.51.100.1"}};
  apply_forwarding(h, forwarding(action::remove, false));
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1"});
  auto unix_socket = forwarding();
  unix_socket.client_ip.clear();
  apply_forwarding(h, unix_socket);
  EXPECT_EQ(values(h, "x-forwarded-for"), strings{"198.51.100.1"});
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

TEST(ForwardingHeaderList, XfccKeepForwardsTheClientsLinesUntouched) {
  header_list h{{"x-forwarded-client-cert", forged}, {"x-forwarded-client-cert", "URI=x"}};
  apply_forwarding(h, forwarding(action::keep));
  EXPECT_EQ(values(h, "x-forwarded-client-cert"), (strings{forged, "URI=x"}));
}

// The configured modes (Envoy's table, xfcc_action) end in what reaches the upstream.
TEST(ForwardingHeaderList, XfccModesWithAndWithoutAClientCertificate) {
  using config::xfcc_mode;
  const std::string appended = std::string(forged) + "," + element;
  const struct {
    xfcc_mode mode;
    bool client_cert;
    strings expected;
  } cases[] = {
      {xfcc_mode::sanitize, true, {}},        {xfcc_mode::sanitize_set, true, {element}},
      {xfcc_mode::sanitize_set, false, {}},   {xfcc_mode::forward_only, true, {forged}},
      {xfcc_mode::forward_only, false, {}},   {xfcc_mode::append_forward, true, {appended}},
      {xfcc_mode::append_forward, false, {}}, {xfcc_mode::always_forward_only, false, {forged}},
  };
  for (const auto& c : cases) {
    header_list h{{"x-forwarded-client-cert", forged}};
    apply_forwarding(h, forwarding(xfcc_action(c.mode, c.client_cert)));
    EXPECT_EQ(values(h, "x-forwarded-client-cert"), c.expected)
        << static_cast<int>(c.mode) << " cert=" << c.client_cert;
  }
}

// --- http_request_head (HTTP/1.1 requests) -----------------------------------------------

http_request_head get_with(std::initializer_list<std::pair<const char*, const char*>> fields) {
  http_request_head msg{http::verb::get, "/", 11};
  for (const auto& [name, value] : fields)
    msg.insert(name, value);
  return msg;
}

TEST(ForwardingRequestHead, XffIsCreatedWhenAbsent) {
  auto msg = get_with({});
  apply_forwarding(msg, forwarding());
  EXPECT_EQ(values(msg, "x-forwarded-for"), strings{"192.0.2.10"});
}

TEST(ForwardingRequestHead, XffLinesAreJoinedAndTheClientAppended) {
  auto msg = get_with({{"X-Forwarded-For", "198.51.100.1"}, {"x-forwarded-for", "198.51.100.2"}});
  apply_forwarding(msg, forwarding());
  EXPECT_EQ(values(msg, "x-forwarded-for"), strings{"198.51.100.1, 198.51.100.2, 192.0.2.10"});
}

TEST(ForwardingRequestHead, XffOffLeavesTheListAlone) {
  auto msg = get_with({{"X-Forwarded-For", "198.51.100.1"}});
  apply_forwarding(msg, forwarding(action::remove, false));
  EXPECT_EQ(values(msg, "x-forwarded-for"), strings{"198.51.100.1"});
}

TEST(ForwardingRequestHead, XfpIsSetReplacedOrLeftWhenOff) {
  auto absent = get_with({});
  apply_forwarding(absent, forwarding());
  EXPECT_EQ(values(absent, "x-forwarded-proto"), strings{"https"});
  auto forged_proto = get_with({{"X-Forwarded-Proto", "http"}, {"x-forwarded-proto", "ws"}});
  apply_forwarding(forged_proto, forwarding());
  EXPECT_EQ(values(forged_proto, "x-forwarded-proto"), strings{"https"});
  auto off = get_with({{"X-Forwarded-Proto", "http"}});
  apply_forwarding(off, forwarding(action::remove, true, false));
  EXPECT_EQ(values(off, "x-forwarded-proto"), strings{"http"});
}

// On HTTP/1.1, XFCC is prepare_request_head's (the same policy): apply_forwarding leaves it.
TEST(ForwardingRequestHead, XfccComesFromPrepareRequestHeadNotApplyForwarding) {
  auto msg = get_with({{"X-Forwarded-Client-Cert", forged}});
  apply_forwarding(msg, forwarding(action::set));
  EXPECT_EQ(values(msg, "x-forwarded-client-cert"), strings{forged});
  for (auto [what, expected] :
       {std::pair{action::remove, strings{}}, std::pair{action::set, strings{element}},
        std::pair{action::keep, strings{forged}}}) {
    auto m = get_with({{"X-Forwarded-Client-Cert", forged}});
    const auto f = forwarding(what);
    EXPECT_EQ(prepare_request_head(m, false, true, f.xfcc).status, 0);
    EXPECT_EQ(values(m, "x-forwarded-client-cert"), expected) << static_cast<int>(what);
  }
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

}  // namespace
}  // namespace mtlsd::proxy
