// Inbound PROXY headers, v1 and v2: complete headers give the client's address and their exact
// length; prefixes ask for more; every malformed shape is refused with a reason (fuzzed further
// in fuzz/proxy_header_fuzz.cpp).
#include "mtlsd/proxy/proxy_header.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "mtlsd/proxy/proxy_header_read.hpp"
#include "mtlsd/proxy/proxy_protocol.hpp"

namespace mtlsd::proxy {
namespace {

using state = inbound_proxy_header::state;
using namespace std::string_literals;

std::string ip_of(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof buf);
  return buf;
}

int port_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
}

TEST(ProxyHeaderV1, Tcp4GivesTheClientAndItsLength) {
  const std::string line = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
  const auto h = parse_proxy_header(line + "\x16\x03\x01 TLS follows");
  ASSERT_EQ(h.status, state::complete) << h.error;
  EXPECT_EQ(h.version, 1);
  EXPECT_EQ(h.size, line.size());
  ASSERT_TRUE(h.has_addresses);
  EXPECT_EQ(ip_of(h.source), "192.0.2.7");
  EXPECT_EQ(port_of(h.source), 56324);
  EXPECT_EQ(ip_of(h.destination), "198.51.100.1");
  EXPECT_EQ(port_of(h.destination), 443);
}

TEST(ProxyHeaderV1, Tcp6) {
  const auto h = parse_proxy_header("PROXY TCP6 2001:db8::7 ::1 1 65535\r\n");
  ASSERT_EQ(h.status, state::complete) << h.error;
  EXPECT_EQ(h.source.ss_family, AF_INET6);
  EXPECT_EQ(ip_of(h.source), "2001:db8::7");
  EXPECT_EQ(port_of(h.destination), 65535);
}

TEST(ProxyHeaderV1, UnknownKeepsTheConnectionsAddresses) {
  for (const char* line : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ::1 1 2\r\n"}) {
    const auto h = parse_proxy_header(line);
    ASSERT_EQ(h.status, state::complete) << line;
    EXPECT_FALSE(h.has_addresses);
    EXPECT_EQ(h.size, std::strlen(line));
  }
}

TEST(ProxyHeaderV1, PrefixesAskForMore) {
  const std::string line = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
  for (std::size_t n = 1; n < line.size(); ++n) {
    const auto h = parse_proxy_header(line.substr(0, n));
    EXPECT_EQ(h.status, state::incomplete) << n << ": " << h.error;
  }
}

TEST(ProxyHeaderV1, MalformedLinesAreRefusedWithAReason) {
  for (const std::string& bad : {
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"s,                      // a field missing
           "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 x\r\n"s,                // one too many
           "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n"s,                      // IPv6 under TCP4
           "PROXY TCP6 192.0.2.7 ::1 1 2\r\n"s,                                 // IPv4 under TCP6
           "PROXY TCP4 192.0.2.7 198.51.100.1 65536 443\r\n"s,                  // port out of range
           "PROXY TCP4 192.0.2.7 198.51.100.1 0443 443\r\n"s,                   // leading zero
           "PROXY TCP4 192.0.2.7 198.51.100.1 -1 443\r\n"s,                     // sign
           "PROXY TCP4  192.0.2.7 198.51.100.1 1 443\r\n"s,                     // double space
           "PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n"s,                        // unknown protocol
           "PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n"s + std::string(110, 'x'),  // LF alone
           "PROXY UNKNOWN " + std::string(100, 'a') + "\r\n",                   // over 107 bytes
           "PROXY UNKNOWN " + std::string(100, 'a'),  // ...and no CRLF yet
           "PROXY TCP4 192.0.2.7\x01\r\n"s,           // control character
       }) {
    const auto h = parse_proxy_header(bad);
    EXPECT_EQ(h.status, state::invalid) << bad;
    EXPECT_FALSE(h.error.empty()) << bad;
  }
}

// Review: a line ended by LF alone was refused as holding a control character when it came
// alone, as longer than 107 bytes when the ClientHello came with it. The LF names it, whatever
// follows; and a control character is named before a length the line never reached cleanly.
TEST(ProxyHeaderV1, ABareLfIsOneReasonWhateverFollows) {
  const std::string line = "PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\n";
  for (const std::string& bytes :
       {line, line + "\x16\x03\x01\x02\x00\x01\x00"s + std::string(100, 'x'), line + "\r\n"s}) {
    const auto h = parse_proxy_header(bytes);
    EXPECT_EQ(h.status, state::invalid);
    EXPECT_EQ(h.error, "PROXY v1 line ends in LF without CR");
  }
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN \x01" + std::string(100, 'a')).error,
            "PROXY v1 line with a control character");
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(100, 'a') + "\n").error,
            "PROXY v1 line longer than 107 bytes");
  // A CR as the 107th byte: too long whatever follows (the reader takes no 108th byte to judge
  // the CR by; the fuzzer found the parser saying "control character" when a space followed).
  for (const char* after : {" ", "\n", ""})
    EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'f') + "\r" + after).error,
              "PROXY v1 line longer than 107 bytes")
        << after;
}

TEST(ProxyHeader, NeitherSignatureIsRefusedAtOnce) {
  for (const std::string& bad :
       {"\x16\x03\x01\x02\x00\x01"s, "GET / HTTP/1.1\r\n"s, "PROXX "s, "\r\n\r\n\x01"s}) {
    const auto h = parse_proxy_header(bad);
    EXPECT_EQ(h.status, state::invalid) << bad;
    EXPECT_NE(h.error.find("PROXY"), std::string::npos) << h.error;
  }
  EXPECT_EQ(parse_proxy_header("").status, state::incomplete);
}

proxy_v2_info v2_info() {
  proxy_v2_info info;
  sockaddr_in src{}, dst{};
  src.sin_family = dst.sin_family = AF_INET;
  src.sin_port = htons(40000);
  dst.sin_port = htons(8443);
  inet_pton(AF_INET, "203.0.113.9", &src.sin_addr);
  inet_pton(AF_INET, "10.1.2.3", &dst.sin_addr);
  std::memcpy(&info.source, &src, sizeof src);
  std::memcpy(&info.destination, &dst, sizeof dst);
  info.alpn = "h2";  // a TLV, skipped by the inbound side
  return info;
}

TEST(ProxyHeaderV2, ProxyCommandGivesTheClient) {
  const std::string header = build_proxy_v2_header(v2_info());
  const auto h = parse_proxy_header(header + "after");
  ASSERT_EQ(h.status, state::complete) << h.error;
  EXPECT_EQ(h.version, 2);
  EXPECT_EQ(h.size, header.size());
  ASSERT_TRUE(h.has_addresses);
  EXPECT_EQ(ip_of(h.source), "203.0.113.9");
  EXPECT_EQ(port_of(h.source), 40000);
  EXPECT_EQ(ip_of(h.destination), "10.1.2.3");
}

TEST(ProxyHeaderV2, PrefixesSayHowMuchTheyNeed) {
  const std::string header = build_proxy_v2_header(v2_info());
  for (std::size_t n = 1; n < header.size(); ++n) {
    const auto h = parse_proxy_header(header.substr(0, n));
    ASSERT_EQ(h.status, state::incomplete) << n << ": " << h.error;
    EXPECT_EQ(h.version, 2);
    if (n >= 16) {
      EXPECT_EQ(h.size, header.size());
    }
  }
}

TEST(ProxyHeaderV2, LocalCommandHasNoClient) {
  // Signature, version 2 / LOCAL, AF_UNSPEC, length 0: a balancer's health check.
  const std::string local("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x20\x00\x00\x00", 16);
  const auto h = parse_proxy_header(local);
  ASSERT_EQ(h.status, state::complete) << h.error;
  EXPECT_EQ(h.size, 16u);
  EXPECT_FALSE(h.has_addresses);
}

TEST(ProxyHeaderV2, BadVersionOrCommandIsRefused) {
  std::string header = build_proxy_v2_header(v2_info());
  header[12] = '\x31';  // version 3
  EXPECT_EQ(parse_proxy_header(header).status, state::invalid);
  header[12] = '\x2F';  // command 15
  EXPECT_EQ(parse_proxy_header(header).status, state::invalid);
}

}  // namespace
}  // namespace mtlsd::proxy

// --- reading it off a socket: exactly the header, never a byte of what follows --------------

namespace mtlsd::proxy {
namespace {

// Writes `pieces` to a socket pair (a pause between them, so that the reader sees each on its
// own), reads the header off the other end, then returns what is left to read after it.
struct read_result {
  inbound_proxy_header header;
  error_code ec;
  std::string rest;
};

read_result read_in_pieces(const std::vector<std::string>& pieces) {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  asio::io_context ioc;
  stream_socket sock(ioc);
  sock.assign(asio::generic::stream_protocol(AF_UNIX, 0), fds[0]);
  read_result out;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec, h] = co_await read_proxy_header(sock);
        out.ec = ec;
        out.header = h;
        for (;;) {
          char buf[256];
          auto [rec, n] =
              co_await sock.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
          out.rest.append(buf, n);
          if (rec) break;
        }
      },
      asio::detached);
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer pause(ioc);
        for (const auto& p : pieces) {
          EXPECT_EQ(::write(fds[1], p.data(), p.size()), static_cast<ssize_t>(p.size()));
          pause.expires_after(std::chrono::milliseconds(5));
          co_await pause.async_wait(asio::use_awaitable);
        }
        ::shutdown(fds[1], SHUT_WR);  // then EOF
      },
      asio::detached);
  ioc.run();
  ::close(fds[1]);
  return out;
}

TEST(ProxyHeaderRead, V1InOneWriteLeavesTheRest) {
  const auto r = read_in_pieces({"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n\x16\x03\x01hello"});
  ASSERT_EQ(r.header.status, state::complete) << r.header.error;
  EXPECT_EQ(r.rest, "\x16\x03\x01hello");
}

TEST(ProxyHeaderRead, V1InPiecesWithTheCrlfSplit) {
  const auto r = read_in_pieces({"PRO", "XY TCP4 192.0.2.7 198.51.100.1 1 2\r", "\nrest"});
  ASSERT_EQ(r.header.status, state::complete) << r.header.error;
  EXPECT_EQ(ip_of(r.header.source), "192.0.2.7");
  EXPECT_EQ(r.rest, "rest");
}

TEST(ProxyHeaderRead, ShortestV1LineIsNotOverRead) {
  const auto r = read_in_pieces({"PROXY UNKNOWN\r\nX"});
  ASSERT_EQ(r.header.status, state::complete) << r.header.error;
  EXPECT_EQ(r.rest, "X");
}

TEST(ProxyHeaderRead, V2InPiecesLeavesTheRest) {
  const std::string header = build_proxy_v2_header(v2_info());
  const auto r =
      read_in_pieces({header.substr(0, 7), header.substr(7, 20), header.substr(27), "after"});
  ASSERT_EQ(r.header.status, state::complete) << r.header.error;
  EXPECT_EQ(r.rest, "after");
}

TEST(ProxyHeaderRead, ABareLfEndsWhatIsTaken) {
  const auto r = read_in_pieces({"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n\x16\x03\x01hello"});
  EXPECT_EQ(r.header.error, "PROXY v1 line ends in LF without CR");
  EXPECT_EQ(r.rest, "\x16\x03\x01hello");  // the ClientHello's bytes were not taken
}

// Review: the whole announced length was allocated, zero-filled, as soon as the first 16 bytes
// came. Memory now follows the bytes (a step at a time); a large header still reads whole.
TEST(ProxyHeaderRead, ALargeV2HeaderInPiecesLeavesTheRest) {
  auto info = v2_info();
  info.cert_der.assign(65000, 'c');
  const std::string header = build_proxy_v2_header(info);
  ASSERT_GT(header.size(), 65000u);
  const auto r = read_in_pieces(
      {header.substr(0, 16), header.substr(16, 20000), header.substr(20016) + "after"});
  ASSERT_EQ(r.header.status, state::complete) << r.header.error;
  EXPECT_EQ(r.header.size, header.size());
  EXPECT_EQ(r.rest, "after");
}

TEST(ProxyHeaderRead, AFirstByteOfNeitherVersionIsRefusedAtOnce) {
  // Not after waiting for the 6-byte probe: the peer closing after "G" is not what is reported.
  const auto r = read_in_pieces({"G"});
  EXPECT_EQ(r.header.status, state::invalid);
  EXPECT_EQ(r.header.error, "the connection does not begin with a PROXY header");
}

TEST(ProxyHeaderRead, EofAndGarbageAreInvalid) {
  const auto eof = read_in_pieces({"PROXY TCP4 192.0.2.7"});
  EXPECT_EQ(eof.header.status, state::invalid);
  EXPECT_NE(eof.header.error.find("closed before a complete PROXY header"), std::string::npos);
  const auto tls = read_in_pieces({"\x16\x03\x01\x02\x00\x01\x00"s});
  EXPECT_EQ(tls.header.status, state::invalid);
}

}  // namespace
}  // namespace mtlsd::proxy
