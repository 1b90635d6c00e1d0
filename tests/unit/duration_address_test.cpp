// config::parse_duration / format_duration and config::parse_address / address::str.
#include <gtest/gtest.h>

#include <string>

#include "mtlsd/config/address.hpp"
#include "mtlsd/config/duration.hpp"

namespace mtlsd::config {
namespace {

using namespace std::chrono_literals;

// --- durations ------------------------------------------------------------------------------

TEST(ParseDuration, SingleUnits) {
  EXPECT_EQ(parse_duration("250ms"), duration(250));
  EXPECT_EQ(parse_duration("10s"), duration(10'000));
  EXPECT_EQ(parse_duration("5m"), duration(300'000));
  EXPECT_EQ(parse_duration("1h"), duration(3'600'000));
  EXPECT_EQ(parse_duration("0ms"), duration(0));
  EXPECT_EQ(parse_duration("0s"), duration(0));
}

TEST(ParseDuration, BareZeroNeedsNoUnit) {
  EXPECT_EQ(parse_duration("0"), duration(0));
}

TEST(ParseDuration, Compounds) {
  EXPECT_EQ(parse_duration("1m30s"), duration(90'000));
  EXPECT_EQ(parse_duration("1h30m"), duration(5'400'000));
  EXPECT_EQ(parse_duration("2h5m10s250ms"), duration(7'510'250));
}

TEST(ParseDuration, Fractions) {
  EXPECT_EQ(parse_duration("1.5s"), duration(1'500));
  EXPECT_EQ(parse_duration("0.25s"), duration(250));
  EXPECT_EQ(parse_duration("1.5h"), duration(5'400'000));
  EXPECT_EQ(parse_duration("2.5m"), duration(150'000));
}

TEST(ParseDuration, RejectsMissingOrUnknownUnits) {
  EXPECT_EQ(parse_duration(""), std::nullopt);
  EXPECT_EQ(parse_duration("10"), std::nullopt);
  EXPECT_EQ(parse_duration("1.5"), std::nullopt);
  EXPECT_EQ(parse_duration("5x"), std::nullopt);
  EXPECT_EQ(parse_duration("5S"), std::nullopt);
  EXPECT_EQ(parse_duration("5sec"), std::nullopt);
  EXPECT_EQ(parse_duration("1m30"), std::nullopt);  // trailing number without a unit
  EXPECT_EQ(parse_duration("s"), std::nullopt);
  EXPECT_EQ(parse_duration("ms"), std::nullopt);
}

TEST(ParseDuration, RejectsNegativeAndMalformedNumbers) {
  EXPECT_EQ(parse_duration("-1s"), std::nullopt);
  EXPECT_EQ(parse_duration("+1s"), std::nullopt);
  EXPECT_EQ(parse_duration("1..5s"), std::nullopt);
  EXPECT_EQ(parse_duration(".s"), std::nullopt);
  EXPECT_EQ(parse_duration("1e3s"), std::nullopt);
  EXPECT_EQ(parse_duration(" 1s"), std::nullopt);
  EXPECT_EQ(parse_duration("1s "), std::nullopt);
  EXPECT_EQ(parse_duration("1 s"), std::nullopt);
  EXPECT_EQ(parse_duration("00"), std::nullopt);  // only the literal "0" may omit the unit
}

TEST(ParseDuration, RejectsOverflow) {
  EXPECT_EQ(parse_duration("99999999999999999999h"), std::nullopt);
  EXPECT_EQ(parse_duration("9999999999999s"), std::nullopt);
  EXPECT_EQ(parse_duration(std::string(400, '9') + "ms"), std::nullopt);  // stod out of range
  // Review: each piece was capped, not their sum; a drain_timeout of five of these ended the
  // drain at once (now + the duration wrapped into the past).
  EXPECT_NE(parse_duration("596523h"), std::nullopt);
  EXPECT_EQ(parse_duration("596523h596523h596523h596523h596523h"), std::nullopt);
  EXPECT_EQ(parse_duration("596523h1h"), std::nullopt);
}

TEST(ParseDuration, SaysWhenTheCapAloneRefusedIt) {
  EXPECT_TRUE(duration_too_long("596523h1h"));
  EXPECT_TRUE(duration_too_long("99999999999999999999h"));
  EXPECT_TRUE(duration_too_long(std::string(400, '9') + "ms"));  // past a double's range
  EXPECT_FALSE(duration_too_long("596523h"));                    // accepted
  EXPECT_FALSE(duration_too_long("5x"));                         // malformed
  EXPECT_FALSE(duration_too_long("596524h5x"));                  // malformed as well
  EXPECT_FALSE(duration_too_long("596524h 1s"));
  // A fraction too long for a double is tiny, not huge.
  EXPECT_EQ(parse_duration("0." + std::string(400, '0') + "1s"), duration{0});
  // ... but a second '.' is malformed, however many digits (second read).
  EXPECT_EQ(parse_duration("0." + std::string(400, '0') + "1.2.3s"), std::nullopt);
  EXPECT_FALSE(duration_too_long("9" + std::string(400, '0') + ".1.1s"));
}

TEST(FormatDuration, PicksTheLargestExactUnit) {
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(10s), "10s");
  EXPECT_EQ(format_duration(90s), "90s");
  EXPECT_EQ(format_duration(5min), "5m");
  EXPECT_EQ(format_duration(1h), "1h");
  EXPECT_EQ(format_duration(120min), "2h");
  EXPECT_EQ(format_duration(1001ms), "1.001s");
}

TEST(FormatDuration, RoundTripsThroughParse) {
  for (duration d :
       {duration(0), duration(1), duration(250), duration(1'500), duration(10'000),
        duration(90'000), duration(300'000), duration(3'600'000), duration(86'400'000)}) {
    auto parsed = parse_duration(format_duration(d));
    ASSERT_TRUE(parsed.has_value()) << format_duration(d);
    EXPECT_EQ(*parsed, d) << format_duration(d);
  }
}

// BUG (src/config/duration.cpp): duration.hpp documents "1500ms -> \"1.5s\"", but
// format_duration(1500ms) returns "1500ms" (only whole units are used). Either the code or the
// header comment is wrong.
TEST(FormatDuration, FractionalSecondsAsDocumented) {
  EXPECT_EQ(format_duration(1500ms), "1.5s");
}

// --- addresses ------------------------------------------------------------------------------

address parse_ok(std::string_view text) {
  auto r = parse_address(text);
  if (auto* err = std::get_if<std::string>(&r)) {
    ADD_FAILURE() << "parse_address(\"" << text << "\") failed: " << *err;
    return {};
  }
  return std::get<address>(r);
}

std::string parse_error(std::string_view text) {
  auto r = parse_address(text);
  if (auto* err = std::get_if<std::string>(&r)) return *err;
  ADD_FAILURE() << "parse_address(\"" << text << "\") unexpectedly succeeded";
  return {};
}

TEST(ParseAddress, Ipv4) {
  EXPECT_EQ(parse_ok("127.0.0.1:8443"), (address{address::kind::tcp, "127.0.0.1", 8443, {}}));
  EXPECT_EQ(parse_ok("0.0.0.0:0"), (address{address::kind::tcp, "0.0.0.0", 0, {}}));
  EXPECT_EQ(parse_ok("10.1.2.3:65535"), (address{address::kind::tcp, "10.1.2.3", 65535, {}}));
}

TEST(ParseAddress, Hostname) {
  address a = parse_ok("upstream.example.org:8080");
  EXPECT_EQ(a.type, address::kind::tcp);
  EXPECT_FALSE(a.is_unix());
  EXPECT_EQ(a.host, "upstream.example.org");
  EXPECT_EQ(a.port, 8080);
  EXPECT_EQ(a.path, "");
  EXPECT_EQ(parse_ok("localhost:80").host, "localhost");
}

TEST(ParseAddress, BracketedIpv6) {
  EXPECT_EQ(parse_ok("[::1]:8443"), (address{address::kind::tcp, "::1", 8443, {}}));
  EXPECT_EQ(parse_ok("[::]:443"), (address{address::kind::tcp, "::", 443, {}}));
  EXPECT_EQ(parse_ok("[2001:db8::10]:9000"),
            (address{address::kind::tcp, "2001:db8::10", 9000, {}}));
}

TEST(ParseAddress, UnixSocket) {
  address a = parse_ok("unix:/run/app.sock");
  EXPECT_TRUE(a.is_unix());
  EXPECT_EQ(a.type, address::kind::unix_socket);
  EXPECT_EQ(a.path, "/run/app.sock");
  EXPECT_EQ(a.host, "");
  EXPECT_EQ(a.port, 0);
  // sun_path holds 107 bytes plus the NUL.
  const std::string longest = "/" + std::string(106, 'a');
  EXPECT_EQ(parse_ok("unix:" + longest).path, longest);
}

TEST(ParseAddress, MissingPort) {
  EXPECT_EQ(parse_error("127.0.0.1"), "expected HOST:PORT, [IPV6]:PORT or unix:/path");
  EXPECT_EQ(parse_error("example.org"), "expected HOST:PORT, [IPV6]:PORT or unix:/path");
  EXPECT_EQ(parse_error(""), "expected HOST:PORT, [IPV6]:PORT or unix:/path");
  EXPECT_EQ(parse_error("127.0.0.1:"), "invalid port '': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("[::1]"), "expected ':PORT' after ']'");
  EXPECT_EQ(parse_error("[::1]8443"), "expected ':PORT' after ']'");
  EXPECT_EQ(parse_error("[::1]:"), "invalid port '': expected a number from 0 to 65535");
}

TEST(ParseAddress, BadPort) {
  EXPECT_EQ(parse_error("127.0.0.1:65536"),
            "invalid port '65536': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("127.0.0.1:http"),
            "invalid port 'http': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("127.0.0.1:-1"), "invalid port '-1': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("127.0.0.1:80x"), "invalid port '80x': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("127.0.0.1: 80"), "invalid port ' 80': expected a number from 0 to 65535");
  EXPECT_EQ(parse_error("127.0.0.1:99999999999"),
            "invalid port '99999999999': expected a number from 0 to 65535");
}

TEST(ParseAddress, Ipv6WithoutBrackets) {
  EXPECT_EQ(parse_error("::1:8443"), "IPv6 addresses must be written in brackets: [IPV6]:PORT");
  EXPECT_EQ(parse_error("2001:db8::1:443"),
            "IPv6 addresses must be written in brackets: [IPV6]:PORT");
  EXPECT_EQ(parse_error("[::1:8443"), "missing ']' in IPv6 address; expected [IPV6]:PORT");
}

TEST(ParseAddress, MissingHost) {
  EXPECT_EQ(parse_error(":8443"), "missing host; use 0.0.0.0 or [::] for all addresses");
  EXPECT_EQ(parse_error("[]:8443"), "missing host; use 0.0.0.0 or [::] for all addresses");
}

TEST(ParseAddress, BadUnixPath) {
  EXPECT_EQ(parse_error("unix:"), "unix socket address needs a path, e.g. unix:/run/app.sock");
  EXPECT_EQ(parse_error("unix:/" + std::string(107, 'a')),
            "unix socket path is longer than 107 bytes");
}

TEST(AddressStr, RoundTrips) {
  for (const char* text : {"127.0.0.1:8443", "0.0.0.0:0", "upstream.example.org:8080", "[::1]:8443",
                           "[2001:db8::10]:9000", "unix:/run/app.sock"}) {
    EXPECT_EQ(parse_ok(text).str(), text);
  }
}

TEST(AddressStr, BracketsIpv6HostsBuiltInCode) {
  EXPECT_EQ((address{address::kind::tcp, "fe80::1", 80, {}}).str(), "[fe80::1]:80");
  EXPECT_EQ((address{address::kind::unix_socket, {}, 0, "/tmp/s"}).str(), "unix:/tmp/s");
}

// What a client-mode listener checks the remote's certificate against when server_name is
// empty (review: the zone went out as SNI, the mapped form never matched an IPv4 SAN).
TEST(HostAsNamed, DropsAZoneAndUnmapsIpv4) {
  EXPECT_EQ(host_as_named("::1%lo"), "::1");
  EXPECT_EQ(host_as_named("fe80::1%2"), "fe80::1");
  EXPECT_EQ(host_as_named("::ffff:127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(host_as_named("::FFFF:10.0.0.1%eth0"), "10.0.0.1");
}

TEST(HostAsNamed, LeavesOtherHostsAsWritten) {
  for (const char* host :
       {"127.0.0.1", "::1", "2001:db8::10", "upstream.example.org", "example.org.", "host%zone"})
    EXPECT_EQ(host_as_named(host), host);
}

}  // namespace
}  // namespace mtlsd::config
