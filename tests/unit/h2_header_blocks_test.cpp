// header_block_scan (h2_header_blocks.hpp): where header blocks begin and end in a client's
// byte stream, fed whole or a byte at a time.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mtlsd/proxy/h2_header_blocks.hpp"

namespace {

using mtlsd::proxy::h2::header_block_scan;

constexpr std::uint8_t DATA = 0x0, HEADERS = 0x1, CONTINUATION = 0x9, PING = 0x6;
constexpr std::uint8_t END_HEADERS = 0x4, END_STREAM = 0x1;

std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream, std::size_t length) {
  std::string f = {static_cast<char>(length >> 16), static_cast<char>(length >> 8),
                   static_cast<char>(length),       static_cast<char>(type),
                   static_cast<char>(flags),        static_cast<char>(stream >> 24),
                   static_cast<char>(stream >> 16), static_cast<char>(stream >> 8),
                   static_cast<char>(stream)};
  return f + std::string(length, 'x');
}

const std::string preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, 0);

// in_header_block() after each byte of `bytes`, fed one at a time to a fresh scan.
std::vector<bool> byte_by_byte(const std::string& bytes) {
  header_block_scan scan;
  std::vector<bool> out;
  for (char c : bytes) {
    const auto b = static_cast<std::uint8_t>(c);
    scan.feed(&b, 1);
    out.push_back(scan.in_header_block());
  }
  return out;
}

bool after_whole(const std::string& bytes) {
  header_block_scan scan;
  scan.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return scan.in_header_block();
}

TEST(H2HeaderBlocks, AWholeHeadersFrameWithEndHeadersLeavesNoBlockOpen) {
  EXPECT_FALSE(after_whole(preface + frame(HEADERS, END_HEADERS | END_STREAM, 1, 40)));
  EXPECT_FALSE(after_whole(preface + frame(DATA, 0, 1, 100) + frame(PING, 0, 0, 8)));
}

TEST(H2HeaderBlocks, ABlockIsOpenUntilTheContinuationWithEndHeadersIsWhole) {
  const std::string start = preface + frame(HEADERS, END_STREAM, 1, 20);
  EXPECT_TRUE(after_whole(start));
  EXPECT_TRUE(after_whole(start + frame(CONTINUATION, 0, 1, 5)));
  const std::string last = frame(CONTINUATION, END_HEADERS, 1, 5);
  EXPECT_TRUE(after_whole(start + last.substr(0, 11)));
  EXPECT_FALSE(after_whole(start + last));
  EXPECT_FALSE(after_whole(start + last + frame(DATA, END_STREAM, 1, 3)));
}

TEST(H2HeaderBlocks, AHeadersFrameSentAByteAtATimeIsABlockFromItsTypeOn) {
  const std::string headers = frame(HEADERS, END_HEADERS, 3, 30);
  const auto seen = byte_by_byte(preface + headers);
  for (std::size_t i = 0; i < preface.size(); ++i)
    EXPECT_FALSE(seen[i]) << i;
  for (std::size_t i = 0; i < headers.size(); ++i)
    EXPECT_EQ(seen[preface.size() + i], i >= 3 && i + 1 < headers.size()) << i;
}

TEST(H2HeaderBlocks, OtherFramesSentAByteAtATimeAreNot) {
  for (bool in : byte_by_byte(preface + frame(DATA, 0, 1, 30) + frame(PING, 0, 0, 8)))
    EXPECT_FALSE(in);
}

TEST(H2HeaderBlocks, FeedingInAnyPiecesGivesTheSameAnswer) {
  const std::string bytes = preface + frame(DATA, 0, 1, 7) + frame(HEADERS, 0, 5, 9) +
                            frame(CONTINUATION, 0, 5, 2) + frame(CONTINUATION, END_HEADERS, 5, 4) +
                            frame(HEADERS, END_HEADERS, 7, 0) + frame(HEADERS, 0, 9, 3);
  const auto single = byte_by_byte(bytes);
  for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
    header_block_scan scan;
    scan.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), cut);
    scan.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()) + cut, bytes.size() - cut);
    EXPECT_EQ(scan.in_header_block(), single.back()) << cut;
    if (cut > 0) {
      EXPECT_EQ(after_whole(bytes.substr(0, cut)), single[cut - 1]) << cut;
    }
  }
  EXPECT_TRUE(single.back());  // the last HEADERS has no END_HEADERS
}

}  // namespace
