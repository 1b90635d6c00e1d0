// log::format_line and log::append_json_escaped: JSON lines must be valid JSON whatever the
// values hold (peer-controlled names end up in logs), text lines must stay on one line.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include "mtlsd/log/log.hpp"
#include "mtlsd/termination.hpp"

namespace mtlsd::log {
namespace {

using log_format = line_format;

// A strict JSON checker (RFC 8259) for one value, enough to tell valid lines from invalid ones.
class json_checker {
 public:
  explicit json_checker(std::string_view s) : s_(s) {}

  bool valid() {
    ws();
    if (!value()) return false;
    ws();
    return i_ == s_.size();
  }

 private:
  bool value() {
    if (i_ >= s_.size()) return false;
    switch (s_[i_]) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool object() {
    ++i_;
    ws();
    if (peek('}')) return ++i_, true;
    for (;;) {
      ws();
      if (!string()) return false;
      ws();
      if (!peek(':')) return false;
      ++i_;
      ws();
      if (!value()) return false;
      ws();
      if (peek(',')) {
        ++i_;
        continue;
      }
      if (peek('}')) return ++i_, true;
      return false;
    }
  }
  bool array() {
    ++i_;
    ws();
    if (peek(']')) return ++i_, true;
    for (;;) {
      ws();
      if (!value()) return false;
      ws();
      if (peek(',')) {
        ++i_;
        continue;
      }
      if (peek(']')) return ++i_, true;
      return false;
    }
  }
  bool string() {
    if (!peek('"')) return false;
    ++i_;
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') return ++i_, true;
      if (c < 0x20) return false;  // raw control characters are not allowed
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return false;
        const char e = s_[i_];
        if (e == 'u') {
          for (int k = 1; k <= 4; ++k)
            if (i_ + k >= s_.size() || !std::isxdigit(static_cast<unsigned char>(s_[i_ + k])))
              return false;
          i_ += 5;
          continue;
        }
        if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) return false;
        ++i_;
        continue;
      }
      if (c >= 0x80) {  // must be well-formed UTF-8
        int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : -1;
        if (extra < 0 || c > 0xF4) return false;
        for (int k = 1; k <= extra; ++k)
          if (i_ + k >= s_.size() || (static_cast<unsigned char>(s_[i_ + k]) & 0xC0) != 0x80)
            return false;
        i_ += static_cast<std::size_t>(extra) + 1;
        continue;
      }
      ++i_;
    }
    return false;
  }
  bool number() {
    const std::size_t start = i_;
    if (peek('-')) ++i_;
    if (peek('0')) {
      ++i_;
    } else if (digits() == 0) {
      return false;
    }
    if (peek('.')) {
      ++i_;
      if (digits() == 0) return false;
    }
    if (peek('e') || peek('E')) {
      ++i_;
      if (peek('+') || peek('-')) ++i_;
      if (digits() == 0) return false;
    }
    return i_ > start;
  }
  std::size_t digits() {
    std::size_t n = 0;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])))
      ++i_, ++n;
    return n;
  }
  bool literal(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

bool valid_json(std::string_view s) {
  return json_checker(s).valid();
}

// format_line gives the object's members; `write` wraps them (after "ts") in braces.
std::string json_object(spdlog::level::level_enum level, std::string_view msg, fields f) {
  return "{" + format_line(log_format::json, level, msg, f) + "}";
}

TEST(JsonChecker, SelfTest) {
  EXPECT_TRUE(valid_json(R"({"a":"b","n":-1.5e3,"t":true,"x":null,"l":[1,{}]})"));
  EXPECT_TRUE(valid_json(R"({"u":"\u00e9\n"})"));
  EXPECT_FALSE(valid_json(R"({"a":"b",})"));
  EXPECT_FALSE(valid_json("{\"a\":\"line\nbreak\"}"));
  EXPECT_FALSE(valid_json(R"({"a":"\q"})"));
  EXPECT_FALSE(valid_json(R"({"a":inf})"));
  EXPECT_FALSE(valid_json(R"({"a":nan})"));
  EXPECT_FALSE(valid_json("{\"a\":\"\xff\"}"));
  EXPECT_FALSE(valid_json(R"("level":"info")"));
}

TEST(JsonLine, ExactShape) {
  EXPECT_EQ(
      format_line(log_format::json, spdlog::level::info, "listening",
                  {{"listener", "inbound"}, {"port", 8443}, {"tls", true}, {"ratio", 0.5}}),
      R"("level":"info","msg":"listening","listener":"inbound","port":8443,"tls":true,"ratio":0.5)");
  EXPECT_EQ(format_line(log_format::json, spdlog::level::warn, "x", {}),
            R"("level":"warn","msg":"x")");
}

TEST(JsonLine, LevelNames) {
  auto level_of = [](spdlog::level::level_enum l) {
    return format_line(log_format::json, l, "", {});
  };
  EXPECT_EQ(level_of(spdlog::level::trace), R"("level":"trace","msg":"")");
  EXPECT_EQ(level_of(spdlog::level::debug), R"("level":"debug","msg":"")");
  EXPECT_EQ(level_of(spdlog::level::err), R"("level":"error","msg":"")");
  EXPECT_EQ(level_of(spdlog::level::critical), R"("level":"critical","msg":"")");
}

TEST(JsonLine, IsValidJsonWhenWrapped) {
  const std::string line = json_object(spdlog::level::err, "handshake failed",
                                       {{"listener", "in"},
                                        {"peer", "CN=a \"b\",O=c\\d"},
                                        {"bytes", std::int64_t{-3}},
                                        {"ok", false},
                                        {"secs", 1.25},
                                        {"empty", ""}});
  EXPECT_TRUE(valid_json(line)) << line;
  EXPECT_EQ(
      line,
      R"({"level":"error","msg":"handshake failed","listener":"in","peer":"CN=a \"b\",O=c\\d","bytes":-3,"ok":false,"secs":1.25,"empty":""})");
}

TEST(JsonLine, EscapesQuotesBackslashesAndNewlines) {
  const std::string line =
      json_object(spdlog::level::info, "say \"hi\"\nC:\\path", {{"k\"ey", "a\\b\nc\r\td"}});
  EXPECT_TRUE(valid_json(line)) << line;
  EXPECT_EQ(line, R"({"level":"info","msg":"say \"hi\"\nC:\\path","k\"ey":"a\\b\nc\r\td"})");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(JsonLine, EscapesEveryControlCharacter) {
  std::string all;
  for (int c = 0; c < 0x20; ++c)
    all += static_cast<char>(c);
  all += '\x7f';
  const std::string line = json_object(spdlog::level::info, "m", {{"v", std::string_view(all)}});
  EXPECT_TRUE(valid_json(line)) << line;
  for (char c : line)
    EXPECT_GE(static_cast<unsigned char>(c), 0x20) << "raw control character in " << line;
  EXPECT_EQ(
      line,
      R"({"level":"info","msg":"m","v":")"
      R"(\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\t\n\u000b\u000c\r\u000e\u000f)"
      R"(\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f)"
      R"(\u007f"})");
}

TEST(JsonLine, Utf8PassesThrough) {
  const std::string line =
      json_object(spdlog::level::info, "caf\xC3\xA9", {{"who", "Jos\xC3\xA9"}});
  EXPECT_TRUE(valid_json(line)) << line;
  EXPECT_EQ(line, "{\"level\":\"info\",\"msg\":\"caf\xC3\xA9\",\"who\":\"Jos\xC3\xA9\"}");
}

// What append_json_escaped makes of `s` on its own.
std::string escaped(std::string_view s) {
  std::string out;
  append_json_escaped(out, s);
  return out;
}

// Review: an SNI of 'a\xffb.example' went into the access line raw, so the line was not UTF-8
// and strict JSON parsers dropped it; the peer needs no certificate to send one.
TEST(JsonEscape, WhatIsNotUtf8BecomesTheReplacementCharacter) {
  EXPECT_EQ(escaped("a\xff"
                    "b"),
            R"(a\ufffdb)");
  EXPECT_EQ(escaped("\xc0\xaf"), R"(\ufffd\ufffd)");                      // overlong '/'
  EXPECT_EQ(escaped("\xed\xa0\x80"), R"(\ufffd\ufffd\ufffd)");            // a surrogate
  EXPECT_EQ(escaped("\xf4\x90\x80\x80"), R"(\ufffd\ufffd\ufffd\ufffd)");  // past U+10FFFF
  EXPECT_EQ(escaped("x\xe2\x82"), R"(x\ufffd\ufffd)");                    // cut short
  EXPECT_EQ(escaped("\xc2\x85"), R"(\u0085)");                            // C1 control (NEL)
  EXPECT_EQ(escaped("\xc2\xa0\xe2\x82\xac\xf0\x9f\x98\x80"),
            "\xc2\xa0\xe2\x82\xac\xf0\x9f\x98\x80");
}

// Review: U+202E in a path showed the rest of the line reversed in a terminal or viewer, and
// U+2028 broke it there, though the line was valid JSON.
TEST(JsonEscape, LineSeparatorsAndBidiControlsAreEscaped) {
  EXPECT_EQ(escaped("a\xe2\x80\xae"
                    "b"),
            R"(a\u202eb)");  // RIGHT-TO-LEFT OVERRIDE
  EXPECT_EQ(escaped("\xe2\x80\xa8\xe2\x80\xa9"), R"(\u2028\u2029)");
  EXPECT_EQ(escaped("\xe2\x81\xa6\xe2\x81\xa9\xe2\x80\x8f\xd8\x9c"), R"(\u2066\u2069\u200f\u061c)");
  EXPECT_EQ(escaped("\xe2\x80\x94\xe2\x81\xaa"),
            "\xe2\x80\x94\xe2\x81\xaa");  // a dash, U+206A: as is
}

TEST(TextLine, QuotesAndEscapesWhatIsNotPrintableAscii) {
  EXPECT_EQ(format_line(log_format::text, spdlog::level::info, "m",
                        {{"sni",
                          "a\x7f"
                          "b"}}),
            R"(info m sni="a\u007fb")");
  EXPECT_EQ(format_line(log_format::text, spdlog::level::info, "m",
                        {{"sni",
                          "a\xff"
                          "b"}}),
            R"(info m sni="a\ufffdb")");
}

TEST(JsonEscape, AppendsToExistingText) {
  std::string out = "x=";
  append_json_escaped(out, "a\"b\\c\x01");
  EXPECT_EQ(out, R"(x=a\"b\\c\u0001)");
}

// BUG (src/log/log.cpp, append_value): a non-finite double is printed with std::to_chars as
// "inf" / "-inf" / "nan", which is not JSON, so the whole line becomes unparsable. It should be
// written as null (or as a string).
TEST(JsonLine, NonFiniteNumbersStayValidJson) {
  const std::string line = json_object(spdlog::level::info, "m",
                                       {{"a", std::numeric_limits<double>::infinity()},
                                        {"b", -std::numeric_limits<double>::infinity()},
                                        {"c", std::numeric_limits<double>::quiet_NaN()}});
  EXPECT_TRUE(valid_json(line)) << line;
}

TEST(Termination, NamesAreTheContracts) {
  // interface.md, "Access-log fields": exactly these, in this order.
  const char* expected[] = {"client_close", "upstream_close", "idle_timeout", "half_close_timeout",
                            "max_age",      "drain",          "revoked",      "reload_rejudged",
                            "rate_limited", "error",          "refused"};
  for (std::size_t i = 0; i < std::size(expected); ++i)
    EXPECT_EQ(to_string(static_cast<termination>(i)), expected[i]);
}

TEST(NullValue, JsonNullTextEmpty) {
  EXPECT_EQ(format_line(log_format::json, spdlog::level::info, "access",
                        {{"upstream_connect_ms", null}, {"n", 3}}),
            R"("level":"info","msg":"access","upstream_connect_ms":null,"n":3)");
  EXPECT_EQ(format_line(log_format::text, spdlog::level::info, "access",
                        {{"upstream_connect_ms", null}, {"n", 3}}),
            R"(info access upstream_connect_ms="" n=3)");
}

TEST(Rfc3339, MillisecondsAndSecondsInUtc) {
  using namespace std::chrono;
  char buf[32];
  // 2024-02-29T23:59:59.007Z: a leap day, a day's last second, a zero-padded millisecond.
  const system_clock::time_point t{sys_days{year{2024} / February / 29} + hours{23} + minutes{59} +
                                   seconds{59} + milliseconds{7}};
  EXPECT_EQ(format_rfc3339(buf, t, true), "2024-02-29T23:59:59.007Z");
  EXPECT_EQ(format_rfc3339(buf, t, false), "2024-02-29T23:59:59Z");
  EXPECT_EQ(format_rfc3339(buf, system_clock::time_point{}, true), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339(buf, system_clock::from_time_t(4102444800), false),
            "2100-01-01T00:00:00Z");
}

// Review: a certificate's notAfter of 9999-12-31T23:59:59Z (RFC 5280's "no expiry") went through
// system_clock's nanoseconds, which end in 2262: peer_not_after read 1816 (and UBSan aborted).
TEST(Rfc3339, CertificateTimesPastTheNanosecondRange) {
  char buf[32];
  EXPECT_EQ(format_rfc3339(buf, std::time_t{253402300799}), "9999-12-31T23:59:59Z");
  EXPECT_EQ(mtlsd::log::utc(253402300799), "9999-12-31T23:59:59Z");
  EXPECT_EQ(mtlsd::log::utc(0), "1970-01-01T00:00:00Z");
}

TEST(TextLine, ExactShape) {
  EXPECT_EQ(format_line(log_format::text, spdlog::level::info, "listening",
                        {{"listener", "inbound"}, {"port", 8443}, {"tls", true}, {"ratio", 0.5}}),
            "info listening listener=inbound port=8443 tls=true ratio=0.5");
  EXPECT_EQ(format_line(log_format::text, spdlog::level::err, "stopped", {}), "error stopped");
}

TEST(TextLine, QuotesValuesThatNeedIt) {
  EXPECT_EQ(
      format_line(log_format::text, spdlog::level::warn, "refused",
                  {{"subject", "CN=a b,O=c"},
                   {"empty", ""},
                   {"eq", "a=b"},
                   {"quote", "say \"x\""},
                   {"plain", "spiffe://td/a"}}),
      R"(warn refused subject="CN=a b,O=c" empty="" eq="a=b" quote="say \"x\"" plain=spiffe://td/a)");
}

TEST(TextLine, StaysOnOneLine) {
  const std::string line = format_line(log_format::text, spdlog::level::info, "two\nlines",
                                       {{"v", "a\nb"}, {"w", "c\r\nd"}, {"t", "tab\there"}});
  EXPECT_EQ(line.find('\n'), std::string::npos) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos) << line;
  EXPECT_EQ(line, R"(info two lines v="a\nb" w="c\r\nd" t="tab\there")");
}

// Review (fixed): only '\n' in a text line's message was replaced; a '\r' or any other control
// character went out raw, so a message carrying "\r" (e.g. a diagnostic built from a file path)
// could overwrite or fake a line on a terminal. Every control character is replaced now.
TEST(TextLine, MessageCarriageReturnIsNotRaw) {
  const std::string line = format_line(log_format::text, spdlog::level::info, "a\rb\x1b[2Kc", {});
  EXPECT_EQ(line.find('\r'), std::string::npos);
  EXPECT_EQ(line.find('\x1b'), std::string::npos);
}

// A peer controls some event fields (a certificate's subject in a soft-fail warning's detail):
// one that long is cut, so that its line is not dropped whole by the queue and the event lost.
TEST(EventLine, LongStringFieldsAreCutAndSaySo) {
  const std::string subject = "CN=" + std::string(field_value_limit, 'a') + "\xc3\xa9";
  const std::string line =
      format_line(log_format::text, spdlog::level::warn, "admitted", {{"detail", subject}});
  const std::string expected =
      "warn admitted detail=\"" + subject.substr(0, field_value_limit) + "...(5 more bytes)\"";
  EXPECT_TRUE(line == expected) << line.size() << " bytes: ..." << line.substr(line.size() - 40);
  EXPECT_TRUE(valid_json(json_object(spdlog::level::warn, "admitted", {{"detail", subject}})));
  // At the limit nothing is cut; a two-byte character across it is kept out whole.
  const std::string exact(field_value_limit, 'b');
  EXPECT_TRUE(format_line(log_format::text, spdlog::level::info, "x", {{"v", exact}}) ==
              "info x v=" + exact);
  const std::string across = std::string(field_value_limit - 1, 'c') + "\xc3\xa9";
  const std::string cut = format_line(log_format::text, spdlog::level::info, "x", {{"v", across}});
  EXPECT_TRUE(cut ==
              "info x v=\"" + across.substr(0, field_value_limit - 1) + "...(2 more bytes)\"")
      << "..." << cut.substr(cut.size() - 40);
  // Continuation bytes only (invalid UTF-8 a peer may send): cut at most 3 early, not to nothing.
  const std::string junk(field_value_limit + 10, '\x80');
  const std::string kept = format_line(log_format::text, spdlog::level::info, "x", {{"v", junk}});
  EXPECT_GT(kept.size(), field_value_limit) << kept.size();
}

}  // namespace
}  // namespace mtlsd::log
