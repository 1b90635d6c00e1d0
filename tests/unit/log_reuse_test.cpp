// What the log reuses from line to line, so that HTTP mode's line per request stays cheap (issue
// 13): a connection's fields rendered once (request_line_cache) must make the very line that
// rendering them on every request makes, hostile values included (escapes, the
// access_field_limit cut, a UTF-8 sequence at the cut), in both formats; a second's text
// (rfc3339.cpp); the string of a line written (sink::push's spare).
#include <fcntl.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include "mtlsd/log/access_log.hpp"
#include "mtlsd/log/log.hpp"
#include "mtlsd/log/sink.hpp"

namespace mtlsd::log {
namespace {

// A connection whose every string field a peer could have chosen badly (the record's views
// point into it).
struct hostile_connection {
  std::string sni = std::string(1500, 's') + "\x01";  // over access_field_limit
  // 1023 bytes, then a 3-byte sequence (U+20AC) across the cut at 1024.
  std::string subject = std::string(1023, 'x') + "\xe2\x82\xac" + std::string(40, 'y');
  access_record record() const {
    access_record c;
    c.conn_id = 123456789012345;
    c.listener = "edge \"public\" =1";
    c.client = "[2001:db8::1]:443\r\nforged=1";
    c.identity =
        "spiffe://example.org/\xe2\x80\xae"
        "evil";  // U+202E, right-to-left override
    c.tls_version = "TLSv1.3";
    c.cipher = "TLS_AES_256_GCM_SHA384";
    c.sni = sni;
    c.alpn = "h2";
    c.upstream = "up stream=\"1\"";
    c.upstream_connect_ms = 7;
    c.peer_subject = subject;
    c.peer_serial = "=01:02";
    c.peer_issuer =
        "CN=\xff\xfe bad\t\xc2\x85"
        "C1";  // invalid UTF-8, a tab, NEL (C1)
    c.peer_sha256 = "9f7e270d3e47b1cd4e9042e798033525048689cf730f2c873399932df31f6a59";
    c.peer_not_after = "2030-01-01T00:00:00Z";
    c.resumed = true;
    return c;
  }
};

struct hostile_request {
  std::string method = "GET\x7f";
  std::string authority =
      "a.example\xe2\x80\xa8"
      "b";  // U+2028, a line separator
  // A 4-byte sequence (U+1F600) across the cut at 1024.
  std::string path = "/" + std::string(1021, 'p') + "\xf0\x9f\x98\x80" + "?q=\"x\"";
  std::string detail = std::string(1100, 'd') + "\n\"quoted\"\\";
  http_request_record record() const {
    http_request_record q;
    q.start = std::chrono::sys_days{std::chrono::year{2026} / 12 / 2} + std::chrono::hours{6} +
              std::chrono::minutes{21} + std::chrono::seconds{14} + std::chrono::milliseconds{123};
    q.method = method;
    q.authority = authority;
    q.path = path;
    q.protocol = "HTTP/2";
    q.status = 502;
    q.grpc_status = 14;
    q.req_bytes = 1ULL << 40;
    q.resp_bytes = 21;
    q.stream_id = 2147483647;
    q.duration_ms = 12;
    q.detail = detail;
    return q;
  }
};

std::string cached_line(request_line_cache& cache, const access_record& c,
                        const http_request_record& q) {
  return format_request_line(cache, c.upstream, c.upstream_connect_ms, q);
}

TEST(RequestLineCache, CachedLineIsTheUncachedOneForHostileValues) {
  const hostile_connection hc;
  const hostile_request hr;
  for (const line_format format : {line_format::text, line_format::json}) {
    SCOPED_TRACE(format == line_format::json ? "json" : "text");
    access_record c = hc.record();
    http_request_record q = hr.record();
    request_line_cache cache;
    cache.render(format, c);
    const std::string reference = format_request_line(format, c, q);
    // The values did reach what they were chosen for: cuts and escapes; the request's start.
    EXPECT_NE(reference.find(format == line_format::json ? R"("start":"2026-12-02T06:21:14.123Z")"
                                                         : "start=2026-12-02T06:21:14.123Z"),
              std::string::npos);
    EXPECT_NE(reference.find("more bytes)"), std::string::npos);
    EXPECT_NE(reference.find("\\u202e"), std::string::npos);
    EXPECT_NE(reference.find("\\ufffd"), std::string::npos);
    EXPECT_EQ(cached_line(cache, c, q), reference);

    // The per-request values change, the cache stays: unknown upstream_connect_ms, no
    // grpc_status, an HTTP/1.1 request with no detail.
    c.upstream = "127.0.0.1:8080";
    c.upstream_connect_ms = -1;
    q.grpc_status = -1;
    q.protocol = "HTTP/1.1";
    q.detail = "";
    q.stream_id = 3;
    EXPECT_EQ(cached_line(cache, c, q), format_request_line(format, c, q));
  }
}

TEST(RequestLineCache, HoldsOnlyTheFormatItRendered) {
  const hostile_connection hc;
  const access_record c = hc.record();
  const hostile_request hr;
  request_line_cache cache;
  EXPECT_FALSE(cache.holds(line_format::text));
  EXPECT_FALSE(cache.holds(line_format::json));
  cache.render(line_format::text, c);
  EXPECT_TRUE(cache.holds(line_format::text));
  EXPECT_FALSE(cache.holds(line_format::json));
  // log.format changed on a reload: rendered again, the line in the new format.
  cache.render(line_format::json, c);
  EXPECT_TRUE(cache.holds(line_format::json));
  EXPECT_FALSE(cache.holds(line_format::text));
  EXPECT_EQ(cached_line(cache, c, hr.record()),
            format_request_line(line_format::json, c, hr.record()));
}

TEST(RequestLineCache, AnEmptyConnectionAsWell) {
  // A connection with nothing known (no peer certificate, no SNI): empty values and nulls.
  const access_record c;
  http_request_record q;
  q.protocol = "HTTP/1.1";
  for (const line_format format : {line_format::text, line_format::json}) {
    request_line_cache cache;
    cache.render(format, c);
    EXPECT_EQ(cached_line(cache, c, q), format_request_line(format, c, q));
  }
}

// The request's integers are written by hand for up to three digits (access_log.cpp's
// put_decimal): each side of each digit count, both signs, and the unsigned byte counts above
// 2^63, which read negative when they went through a signed value.
TEST(RequestLineIntegers, EachDigitCountAndUnsignedAbove2To63) {
  const access_record c;
  const auto fields_of = [&](int status, std::uint64_t bytes, std::int64_t stream,
                             std::int64_t ms) {
    http_request_record q;
    q.status = status;
    q.req_bytes = bytes;
    q.resp_bytes = bytes;
    q.stream_id = stream;
    q.duration_ms = ms;
    const std::string line = format_request_line(line_format::text, c, q);
    const auto from = line.find(" status=");
    return line.substr(from, line.find(" detail=") - from);
  };
  EXPECT_EQ(fields_of(0, 9, -1, 10),
            " status=0 grpc_status=\"\" req_bytes=9 resp_bytes=9 stream_id=-1 duration_ms=10");
  EXPECT_EQ(fields_of(99, 100, -999, 999),
            " status=99 grpc_status=\"\" req_bytes=100 resp_bytes=100 stream_id=-999"
            " duration_ms=999");
  EXPECT_EQ(fields_of(1000, 1001, -1000, 123456789),
            " status=1000 grpc_status=\"\" req_bytes=1001 resp_bytes=1001 stream_id=-1000"
            " duration_ms=123456789");
  EXPECT_EQ(
      fields_of(200, std::numeric_limits<std::uint64_t>::max(),
                std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()),
      " status=200 grpc_status=\"\" req_bytes=18446744073709551615"
      " resp_bytes=18446744073709551615 stream_id=-9223372036854775808"
      " duration_ms=9223372036854775807");
}

// The connection's line: its unsigned counters (conn_id, rx_bytes, tx_bytes) above 2^63 too.
TEST(AccessLineIntegers, UnsignedCountersAbove2To63) {
  EXPECT_EQ(format_line(line_format::json, spdlog::level::info, "access",
                        {{"conn_id", std::uint64_t{9223372036854775808u}},
                         {"rx_bytes", std::numeric_limits<std::uint64_t>::max()},
                         {"duration_ms", std::int64_t{-1}}}),
            R"("level":"info","msg":"access","conn_id":9223372036854775808)"
            R"(,"rx_bytes":18446744073709551615,"duration_ms":-1)");
}

// rfc3339.cpp reuses the text of the second it formatted last: the milliseconds are still each
// time's own, and another second (later or earlier) is formatted afresh.
TEST(Rfc3339SecondReuse, EachTimeIsItsOwn) {
  using namespace std::chrono;
  const system_clock::time_point base{sys_days{year{2026} / December / 31} + hours{23} +
                                      minutes{59} + seconds{59}};
  char buf[32];
  EXPECT_EQ(format_rfc3339(buf, base + milliseconds{5}, true), "2026-12-31T23:59:59.005Z");
  EXPECT_EQ(format_rfc3339(buf, base + milliseconds{999}, true), "2026-12-31T23:59:59.999Z");
  EXPECT_EQ(format_rfc3339(buf, base, false), "2026-12-31T23:59:59Z");
  EXPECT_EQ(format_rfc3339(buf, base + milliseconds{1000}, true), "2027-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339(buf, base + milliseconds{1}, true), "2026-12-31T23:59:59.001Z");
  EXPECT_EQ(format_rfc3339(buf, base - milliseconds{1}, true), "2026-12-31T23:59:58.999Z");
  // Before the epoch: the milliseconds count up from the second below.
  EXPECT_EQ(format_rfc3339(buf, system_clock::time_point{} - milliseconds{1}, true),
            "1969-12-31T23:59:59.999Z");
}

// A line's string comes back once the line is written, for the next line: no allocation per
// line. A long line's does not (it would sit unused: lines are ~600 bytes).
TEST(SinkSpareLines, AWrittenLinesStringComesBack) {
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(devnull, 0);
  {
    auto out = sink::for_fd(devnull, 64 * 1024);
    std::string line(600, 'x');
    line += '\n';
    const char* const storage = line.data();
    std::string spare;
    ASSERT_TRUE(out->push(std::move(line), line_kind::access, &spare));
    ASSERT_TRUE(out->flush(std::chrono::seconds(5)));
    ASSERT_TRUE(out->push("next\n", line_kind::access, &spare));
    EXPECT_EQ(spare.data(), storage);  // the very buffer, emptied
    EXPECT_TRUE(spare.empty());

    std::string long_line(5000, 'y');
    long_line += '\n';
    ASSERT_TRUE(out->push(std::move(long_line), line_kind::access));
    ASSERT_TRUE(out->flush(std::chrono::seconds(5)));
    std::string none;
    ASSERT_TRUE(out->push("last\n", line_kind::access, &none));
    // "next" was kept too; only lines up to 4 KiB are.
    EXPECT_LT(none.capacity(), 5000u);
  }
  ::close(devnull);
}

}  // namespace
}  // namespace mtlsd::log
