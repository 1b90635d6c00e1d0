// The "request" access line's exact bytes, as the code before commit 6ddacac wrote them.
// That commit renders a connection's fields once (request_line_cache) and escapes through a
// byte-class table (log/byte_classes.hpp, json_escape.cpp); log_reuse_test.cpp holds the cached
// line to the uncached one, but both go through that escaping, so a drift in it passes there.
// Only fixed bytes catch it: the literals below were written by the code of 6ddacac^ (its
// write_request_access line for the same inputs, the timestamp taken off; its format_rfc3339),
// and pasted here. Operators' log pipelines parse these lines: change a literal only on purpose.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"

namespace mtlsd::log {
namespace {

// A connection a peer chose badly, its two requests (the second on another upstream, with
// nothing known), and a connection with nothing known at all. Its views point into it.
struct golden_inputs {
  // Space, '=', '"', '\': quoted and escaped in text.
  std::string client = "198.51.100.7:443 forged=\"1\"\\";
  // U+202E (right-to-left override), U+061C, U+2066: escaped, shown the other way round else.
  std::string identity =
      "spiffe://ex.org/\xe2\x80\xae"
      "a\xd8\x9c"
      "b\xe2\x81\xa6"
      "c";
  // 1023 bytes, then U+20AC across the access_field_limit cut at 1024.
  std::string sni = std::string(1023, 's') + "\xe2\x82\xac" + "tail";
  // ESC, NBSP (valid, kept as it is), C1 CSI (escaped).
  std::string subject = "CN=\x1b[31mred,O=\xc2\xa0nbsp\xc2\x9b";
  // Overlong '/', a surrogate, past U+10FFFF, a sequence cut short at the end: U+FFFD each.
  std::string issuer = "CN=\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xe2\x82";
  // Not capped at access_field_limit: a tab and DEL.
  std::string listener = "edge\t\x7f";
  // Over field_value_limit (8192), U+1F600 across that cut.
  std::string upstream = std::string(8191, 'u') + "\xf0\x9f\x98\x80" + std::string(100, 'z');
  std::string authority = "h\xe2\x80\xa8x=1 \"q\"";  // U+2028, a line separator
  // Continuation bytes across the cut: it backs over three of them at most.
  std::string path = "/" + std::string(1019, 'p') + std::string(10, '\x80');
  std::string detail = std::string("line1\nline2\r\0nul\\", 17);  // LF, CR, NUL, '\'

  access_record connection() const {
    access_record c;
    c.conn_id = 9223372036854775807;
    c.listener = listener;
    c.client = client;
    c.identity = identity;
    c.tls_version = "TLSv1.3";
    c.cipher = "TLS_AES_128_GCM_SHA256";
    c.sni = sni;
    c.alpn = "";
    c.upstream = upstream;
    c.upstream_connect_ms = 7;
    c.peer_subject = subject;
    c.peer_serial = "00";
    c.peer_issuer = issuer;
    c.peer_sha256 = "=";
    c.peer_not_after = "9999-12-31T23:59:59Z";
    c.resumed = true;
    return c;
  }
  // The connection's first request, on its first upstream.
  http_request_record first_request() const {
    http_request_record q;
    q.method = "";
    q.authority = authority;
    q.path = path;
    q.protocol = "HTTP/2";
    q.status = 200;
    q.grpc_status = 0;
    q.req_bytes = 1099511627776;
    q.resp_bytes = 0;
    q.stream_id = -5;
    q.duration_ms = 9223372036854775807;
    q.detail = detail;
    q.start = std::chrono::sys_days{std::chrono::year{2026} / 12 / 2} + std::chrono::hours{6} +
              std::chrono::minutes{21} + std::chrono::seconds{14} + std::chrono::milliseconds{123};
    return q;
  }
  // Its second, on another upstream not connected to (null upstream_connect_ms), with no
  // grpc_status (null), before 1970.
  static constexpr std::string_view second_upstream = "127.0.0.1:8080";
  http_request_record second_request() const {
    http_request_record q;
    q.method = "GET";
    q.authority = "";
    q.path = "/";
    q.protocol = "HTTP/1.1";
    q.stream_id = 2;
    q.start = std::chrono::sys_days{std::chrono::year{1970} / 1 / 1} - std::chrono::milliseconds{1};
    return q;
  }
  // A connection with nothing known, and a request with nothing known (started at the epoch).
  static http_request_record empty_request() {
    http_request_record q;
    q.start = std::chrono::system_clock::time_point{};
    return q;
  }
};

// The old code's lines for golden_inputs: the first request, the second, the empty connection's.
struct golden_lines {
  std::string first, second, empty;
};

golden_lines old_text_lines() {
  return {std::string(R"g(info request start=2026-12-02T06:21:14.123Z conn_id=9223372036854775807)g"
                      R"g( listener="edge\t\u007f" client="198.51.100.7:443)g"
                      R"g( forged=\"1\"\\" identity="spiffe://ex.org/\u202ea\u061cb\u2066c")g"
                      R"g( tls_version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)g"
                      R"g( resumed=true sni=")g") +
              std::string(1023, 's') + std::string(R"g(...(7 more bytes)" alpn="" upstream=")g") +
              std::string(8191, 'u') +
              std::string(
                  R"g(...(104 more bytes)" upstream_connect_ms=7 peer_subject="CN=\u001b[31mred)g"
                  R"g(,O=)g"
                  "\xc2\xa0"
                  R"g(nbsp\u009b" peer_serial=00 peer_issuer="CN=\ufffd\ufffd|\ufffd\ufffd\ufffd)g"
                  R"g(|\ufffd\ufffd\ufffd\ufffd|\ufffd\ufffd" peer_sha256="=")g"
                  R"g( peer_not_after=9999-12-31T23:59:59Z method="")g"
                  R"g( authority="h\u2028x=1 \"q\"" path="/)g") +
              std::string(1019, 'p') +
              std::string(R"g(\ufffd...(9 more bytes)" protocol=HTTP/2 status=200)g"
                          R"g( grpc_status=0 req_bytes=1099511627776 resp_bytes=0)g"
                          R"g( stream_id=-5 duration_ms=9223372036854775807)g"
                          R"g( detail="line1\nline2\r\u0000nul\\")g"),
          std::string(R"g(info request start=1969-12-31T23:59:59.999Z conn_id=9223372036854775807)g"
                      R"g( listener="edge\t\u007f" client="198.51.100.7:443)g"
                      R"g( forged=\"1\"\\" identity="spiffe://ex.org/\u202ea\u061cb\u2066c")g"
                      R"g( tls_version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256)g"
                      R"g( resumed=true sni=")g") +
              std::string(1023, 's') +
              std::string(
                  R"g(...(7 more bytes)" alpn="" upstream=127.0.0.1:8080)g"
                  R"g( upstream_connect_ms="" peer_subject="CN=\u001b[31mred)g"
                  R"g(,O=)g"
                  "\xc2\xa0"
                  R"g(nbsp\u009b" peer_serial=00 peer_issuer="CN=\ufffd\ufffd|\ufffd\ufffd\ufffd)g"
                  R"g(|\ufffd\ufffd\ufffd\ufffd|\ufffd\ufffd" peer_sha256="=")g"
                  R"g( peer_not_after=9999-12-31T23:59:59Z method=GET)g"
                  R"g( authority="" path=/ protocol=HTTP/1.1 status=0)g"
                  R"g( grpc_status="" req_bytes=0 resp_bytes=0 stream_id=2)g"
                  R"g( duration_ms=0 detail="")g"),
          std::string(R"g(info request start=1970-01-01T00:00:00.000Z conn_id=0)g"
                      R"g( listener="" client="" identity="" tls_version="")g"
                      R"g( cipher="" resumed=false sni="" alpn="" upstream="")g"
                      R"g( upstream_connect_ms="" peer_subject="" peer_serial="")g"
                      R"g( peer_issuer="" peer_sha256="" peer_not_after="")g"
                      R"g( method="" authority="" path="" protocol="" status=0)g"
                      R"g( grpc_status="" req_bytes=0 resp_bytes=0 stream_id=0)g"
                      R"g( duration_ms=0 detail="")g")};
}

golden_lines old_json_lines() {
  return {
      std::string(R"g("level":"info","msg":"request","start":"2026-12-02T06:21:14.123Z")g"
                  R"g(,"conn_id":9223372036854775807,"listener":"edge\t\u007f")g"
                  R"g(,"client":"198.51.100.7:443 forged=\"1\"\\","identity":"spiffe://ex.org/\u)g"
                  R"g(202ea\u061cb\u2066c","tls_version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA)g"
                  R"g(256","resumed":true,"sni":")g") +
          std::string(1023, 's') + std::string(R"g(...(7 more bytes)","alpn":"","upstream":")g") +
          std::string(8191, 'u') +
          std::string(
              R"g(...(104 more bytes)","upstream_connect_ms":7,"peer_subject":"CN=\u001b[31m)g"
              R"g(red,O=)g"
              "\xc2\xa0"
              R"g(nbsp\u009b","peer_serial":"00","peer_issuer":"CN=\ufffd\ufffd|\ufffd\ufffd)g"
              R"g(\ufffd|\ufffd\ufffd\ufffd\ufffd|\ufffd\ufffd")g"
              R"g(,"peer_sha256":"=","peer_not_after":"9999-12-31T23:59:59Z")g"
              R"g(,"method":"","authority":"h\u2028x=1 \"q\"","path":"/)g") +
          std::string(1019, 'p') +
          std::string(R"g(\ufffd...(9 more bytes)","protocol":"HTTP/2","status":200)g"
                      R"g(,"grpc_status":0,"req_bytes":1099511627776,"resp_bytes":0)g"
                      R"g(,"stream_id":-5,"duration_ms":9223372036854775807)g"
                      R"g(,"detail":"line1\nline2\r\u0000nul\\")g"),
      std::string(R"g("level":"info","msg":"request","start":"1969-12-31T23:59:59.999Z")g"
                  R"g(,"conn_id":9223372036854775807,"listener":"edge\t\u007f")g"
                  R"g(,"client":"198.51.100.7:443 forged=\"1\"\\","identity":"spiffe://ex.org/\u)g"
                  R"g(202ea\u061cb\u2066c","tls_version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA)g"
                  R"g(256","resumed":true,"sni":")g") +
          std::string(1023, 's') +
          std::string(
              R"g(...(7 more bytes)","alpn":"","upstream":"127.0.0.1:8080")g"
              R"g(,"upstream_connect_ms":null,"peer_subject":"CN=\u001b[31mred)g"
              R"g(,O=)g"
              "\xc2\xa0"
              R"g(nbsp\u009b","peer_serial":"00","peer_issuer":"CN=\ufffd\ufffd|\ufffd\ufffd)g"
              R"g(\ufffd|\ufffd\ufffd\ufffd\ufffd|\ufffd\ufffd")g"
              R"g(,"peer_sha256":"=","peer_not_after":"9999-12-31T23:59:59Z")g"
              R"g(,"method":"GET","authority":"","path":"/","protocol":"HTTP/1.1")g"
              R"g(,"status":0,"grpc_status":null,"req_bytes":0,"resp_bytes":0)g"
              R"g(,"stream_id":2,"duration_ms":0,"detail":"")g"),
      std::string(R"g("level":"info","msg":"request","start":"1970-01-01T00:00:00.000Z")g"
                  R"g(,"conn_id":0,"listener":"","client":"","identity":"")g"
                  R"g(,"tls_version":"","cipher":"","resumed":false)g"
                  R"g(,"sni":"","alpn":"","upstream":"","upstream_connect_ms":null)g"
                  R"g(,"peer_subject":"","peer_serial":"","peer_issuer":"")g"
                  R"g(,"peer_sha256":"","peer_not_after":"","method":"")g"
                  R"g(,"authority":"","path":"","protocol":"","status":0)g"
                  R"g(,"grpc_status":null,"req_bytes":0,"resp_bytes":0)g"
                  R"g(,"stream_id":0,"duration_ms":0,"detail":"")g")};
}

const golden_lines& golden_old_lines(line_format format) {
  static const golden_lines text = old_text_lines(), json = old_json_lines();
  return format == line_format::json ? json : text;
}

const char* golden_format_name(line_format format) {
  return format == line_format::json ? "json" : "text";
}

// Whether `line` is `old`; if not, where it leaves it, with 60 bytes either side: gtest's own
// message for two lines of 11,000 bytes does not show it.
::testing::AssertionResult is_old_bytes(const std::string& line, const std::string& old) {
  if (line == old) return ::testing::AssertionSuccess();
  const auto at = static_cast<std::size_t>(
      std::mismatch(line.begin(), line.end(), old.begin(), old.end()).first - line.begin());
  const std::size_t from = at < 60 ? 0 : at - 60;
  return ::testing::AssertionFailure()
         << "differs from byte " << at << " (" << line.size() << " bytes, the old line "
         << old.size() << ")\n  now: " << line.substr(from, 120)
         << "\n  old: " << old.substr(from, 120);
}

TEST(AccessLineGolden, UncachedLinesAreTheOldBytes) {
  const golden_inputs in;
  for (const line_format format : {line_format::text, line_format::json}) {
    SCOPED_TRACE(golden_format_name(format));
    const golden_lines& old = golden_old_lines(format);
    access_record c = in.connection();
    EXPECT_TRUE(is_old_bytes(format_request_line(format, c, in.first_request()), old.first));
    c.upstream = golden_inputs::second_upstream;
    c.upstream_connect_ms = -1;
    EXPECT_TRUE(is_old_bytes(format_request_line(format, c, in.second_request()), old.second));
    EXPECT_TRUE(is_old_bytes(
        format_request_line(format, access_record{}, golden_inputs::empty_request()), old.empty));
  }
}

// One cache for the connection, through a log.format reload (text, then json): its upstream
// changes from request to request and back.
TEST(AccessLineGolden, CachedLinesAreTheOldBytes) {
  const golden_inputs in;
  const access_record c = in.connection();
  request_line_cache cache;
  for (const line_format format : {line_format::text, line_format::json}) {
    SCOPED_TRACE(golden_format_name(format));
    const golden_lines& old = golden_old_lines(format);
    cache.render(format, c);
    EXPECT_TRUE(
        is_old_bytes(format_request_line(cache, c.upstream, 7, in.first_request()), old.first));
    EXPECT_TRUE(is_old_bytes(
        format_request_line(cache, golden_inputs::second_upstream, -1, in.second_request()),
        old.second));
    EXPECT_TRUE(
        is_old_bytes(format_request_line(cache, c.upstream, 7, in.first_request()), old.first));

    request_line_cache empty_cache;
    empty_cache.render(format, access_record{});
    EXPECT_TRUE(is_old_bytes(
        format_request_line(empty_cache, "", -1, golden_inputs::empty_request()), old.empty));
  }
}

// format_rfc3339's texts from the same old code: with and without milliseconds, before 1970
// (floored, not truncated), at system_clock's ends (nanoseconds: 1677 to 2262), and for a time_t
// (certificates' times) past year 9999 or before year 1, which the old code printed unpadded.
TEST(Rfc3339Golden, TheOldTexts) {
  using namespace std::chrono;
  using namespace std::literals;
  const auto at = [](std::int64_t ms) { return system_clock::time_point{milliseconds{ms}}; };
  char buf[32];
  EXPECT_EQ(format_rfc3339(buf, at(1796192474123), true), "2026-12-02T06:21:14.123Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(1796192474123), false), "2026-12-02T06:21:14Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(-1), true), "1969-12-31T23:59:59.999Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(-1001), false), "1969-12-31T23:59:58Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(-2208988800001), true), "1899-12-31T23:59:59.999Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(-9223372036854), true), "1677-09-21T00:12:43.146Z"sv);
  EXPECT_EQ(format_rfc3339(buf, at(9223372036854), false), "2262-04-11T23:47:16Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{0}), "1970-01-01T00:00:00Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{-1}), "1969-12-31T23:59:59Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{253402300799}), "9999-12-31T23:59:59Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{253402300800}), "10000-01-01T00:00:00Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{325036800000}), "12270-01-03T00:00:00Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{-62135596801}), "0000-12-31T23:59:59Z"sv);
  EXPECT_EQ(format_rfc3339(buf, std::time_t{-62167219201}), "-001-12-31T23:59:59Z"sv);
}

}  // namespace
}  // namespace mtlsd::log
