// http_body_reader (net/http_body_reader.hpp): a response body parsed step by step from a socket,
// whole or a byte at a time, and the byte-at-a-time last chunk that Boost 1.81's own
// http::async_read_some asserts on (boostorg/beast#2861).
#include "mtlsd/net/http_body_reader.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "socket_pair.hpp"

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using mtlsd::net::http_body_reader;

// What reading one response body came to.
struct body_read {
  std::string body;
  bool done = false;
  boost::beast::error_code error;
  std::string trailer;  // the "Trailer-Field" trailer's value, when there is one
};

struct HttpBodyReader : mtlsd::test::SocketPairTest {
  http::response_parser<http::buffer_body> p;
  boost::beast::flat_buffer buf{64 * 1024};
  std::vector<char> piece = std::vector<char>(4);  // small: several steps per chunk
  std::optional<body_read> result;

  // Gives the parser `head` (and nothing past it), then reads the body from the socket until the
  // message is whole or a step fails, on the test's io_context.
  void start(std::string_view head) {
    boost::beast::error_code ec;
    ASSERT_EQ(p.put(asio::buffer(head.data(), head.size()), ec), head.size());
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_TRUE(p.is_header_done());
    asio::co_spawn(ioc, read_all(), asio::detached);
  }
  asio::awaitable<void> read_all() {
    http_body_reader reader(p, buf);
    body_read r;
    while (!p.is_done()) {
      p.get().body().data = piece.data();
      p.get().body().size = piece.size();
      r.error = co_await reader.read_some(near);
      r.body.append(piece.data(), piece.size() - p.get().body().size);
      if (r.error) break;
    }
    r.done = p.is_done();
    if (auto it = p.get().find("Trailer-Field"); it != p.get().end()) r.trailer = it->value();
    result = r;
  }
  // The peer's bytes whole, or one write per byte with the reader run between them.
  void send(std::string_view bytes, bool byte_by_byte) {
    if (!byte_by_byte) {
      send_from_far(bytes);
      ioc.poll();
      return;
    }
    for (char c : bytes) {
      send_from_far(std::string_view(&c, 1));
      ioc.poll();
    }
  }
  void close_far() {
    ::close(far);
    far = -1;
    ioc.poll();
  }
};

constexpr std::string_view chunked_head =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Trailer-Field\r\n\r\n";

TEST_F(HttpBodyReader, AFirstChunkThatIsTheLastArrivingAByteAtATimeEndsTheBody) {
  start(chunked_head);
  send("0\r\n", false);
  EXPECT_FALSE(result);
  send("\r\n", true);  // "\r", then "\n": Beast's own step asserts on the first of them
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->done);
  EXPECT_FALSE(result->error) << result->error.message();
  EXPECT_EQ(result->body, "");
}

TEST_F(HttpBodyReader, TheSameLastChunkWithTrailersAByteAtATime) {
  start(chunked_head);
  send("0\r\nTrailer-Field: yes\r\n\r\n", true);
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->done);
  EXPECT_EQ(result->trailer, "yes");
}

class WholeOrByteByByte : public HttpBodyReader, public ::testing::WithParamInterface<bool> {};

TEST_P(WholeOrByteByByte, AChunkedBodyWithTrailers) {
  start(chunked_head);
  send("5\r\nhello\r\n09;ext=1\r\n, world!!\r\n0\r\nTrailer-Field: t\r\n\r\n", GetParam());
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->done);
  EXPECT_FALSE(result->error) << result->error.message();
  EXPECT_EQ(result->body, "hello, world!!");
  EXPECT_EQ(result->trailer, "t");
}

TEST_P(WholeOrByteByByte, AContentLengthBody) {
  start("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n");
  send("hello world", GetParam());
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->done);
  EXPECT_EQ(result->body, "hello world");
}

TEST_P(WholeOrByteByByte, ABodyThatEndsAtTheCloseIsWhole) {
  start("HTTP/1.1 200 OK\r\n\r\n");
  send("until the close", GetParam());
  EXPECT_FALSE(result);
  close_far();
  ASSERT_TRUE(result);
  EXPECT_TRUE(result->done);
  EXPECT_FALSE(result->error) << result->error.message();
  EXPECT_EQ(result->body, "until the close");
}

TEST_P(WholeOrByteByByte, AChunkedBodyCutShortByTheCloseIsPartial) {
  start(chunked_head);
  send("5\r\nhel", GetParam());
  close_far();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result->done);
  EXPECT_EQ(result->error, http::error::partial_message);
  EXPECT_EQ(result->body, "hel");
}

TEST_P(WholeOrByteByByte, AChunkedFirstLastChunkCutShortByTheCloseIsPartial) {
  start(chunked_head);
  send("0\r\n\r", GetParam());
  close_far();
  ASSERT_TRUE(result);
  EXPECT_FALSE(result->done);
  EXPECT_EQ(result->error, http::error::partial_message);
}

TEST_P(WholeOrByteByByte, AMalformedChunkSizeIsAnError) {
  start(chunked_head);
  send("zz\r\n", GetParam());
  ASSERT_TRUE(result);
  EXPECT_FALSE(result->done);
  EXPECT_EQ(result->error, http::error::bad_chunk);
}

INSTANTIATE_TEST_SUITE_P(Delivery, WholeOrByteByByte, ::testing::Bool(),
                         [](const auto& param_info) {
                           return param_info.param ? "ByteByByte" : "Whole";
                         });

}  // namespace
