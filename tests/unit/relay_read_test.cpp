// The byte relay's reads from the TLS peer (proxy::detail::read_records): records that are there
// without waiting go into one buffer, so that the plain side gets one write for many of them
// (review: a client sending 1-byte records cost one write to the upstream each). A real TLS
// client and the proxy's tls_stream on a loopback connection; the client's records are all in
// the proxy's socket before each read, so what one call gathers is the code's doing, not timing.
#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <sys/ioctl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "test_pki.hpp"
#include "test_sockets.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using mtlsd::proxy::error_code;
using mtlsd::proxy::stream_acceptor;
using mtlsd::proxy::stream_socket;
using mtlsd::proxy::tls_stream;
using mtlsd::proxy::detail::read_records;

// Enough for every test's records: the turn's bound is not what these test (but the last one).
constexpr std::uint64_t unbounded = ~std::uint64_t{0};

class RelayRead : public ::testing::Test {
 protected:
  void SetUp() override {
    auto root = mtlsd::test::make_root_ca({.cn = "Relay Read Root"});
    auto server = mtlsd::test::make_leaf(
        root, {.cn = "proxy", .ip_sans = {"127.0.0.1"}, .usage = mtlsd::test::key_usage::server});
    server_ctx.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_use_certificate(server_ctx.get(), server.cert());
    SSL_CTX_use_PrivateKey(server_ctx.get(), server.key());
    SSL_CTX_set_read_ahead(server_ctx.get(), 1);  // as mtlsd's contexts (tls/context.cpp)
    client_ctx.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_NONE, nullptr);

    stream_acceptor front(ioc, mtlsd::test::loopback());
    client_sock.connect(front.local_endpoint());
    proxy_sock = front.accept();
    proxy_tls.emplace(proxy_sock, server_ctx.get(), true);
    client_tls.emplace(client_sock, client_ctx.get(), false);
    std::optional<error_code> server_hs, client_hs;
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { server_hs = co_await proxy_tls->handshake(); },
        asio::detached);
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { client_hs = co_await client_tls->handshake(); },
        asio::detached);
    ASSERT_TRUE(run_until([&] { return server_hs && client_hs; }));
    ASSERT_FALSE(*server_hs) << proxy_tls->failure_detail();
    ASSERT_FALSE(*client_hs) << client_tls->failure_detail();
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5000ms) {
    const auto stop_at = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < stop_at) {
      if (ioc.stopped()) ioc.restart();
      ioc.run_one_for(10ms);
    }
    return done();
  }

  // The client sends `payload` one byte per record, then with `then_close` its close_notify;
  // returns once every byte it wrote is in the proxy's socket (or already read by OpenSSL).
  void client_sends(const std::string& payload, bool then_close = false) {
    bool sent = false;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (const char& c : payload)
            if (co_await client_tls->write(asio::buffer(&c, 1))) co_return;
          if (then_close) co_await client_tls->shutdown_send();
          sent = true;
        },
        asio::detached);
    ASSERT_TRUE(run_until([&] { return sent; }));
    const std::uint64_t written = BIO_number_written(SSL_get_wbio(client_tls->native()));
    ASSERT_TRUE(run_until([&] { return proxy_tls->received() + queued() >= written; }))
        << "the client's records never all reached the proxy's socket";
  }

  // Bytes in the proxy's socket not yet read.
  std::uint64_t queued() {
    int n = 0;
    return ::ioctl(proxy_sock.native_handle(), FIONREAD, &n) == 0 ? static_cast<std::uint64_t>(n)
                                                                  : 0;
  }

  asio::io_context ioc;
  mtlsd::test::ssl_ctx_ptr server_ctx, client_ctx;
  stream_socket client_sock{ioc}, proxy_sock{ioc};
  std::optional<tls_stream> proxy_tls, client_tls;
  std::vector<char> buf = std::vector<char>(16384);
};

TEST_F(RelayRead, RecordsThatAreThereGoIntoOneBuffer) {
  const std::string payload(300, 'x');
  client_sends(payload);
  const auto got = read_records(*proxy_tls, proxy_sock, asio::buffer(buf), unbounded);
  ASSERT_EQ(got.n, payload.size());  // 300 records, one read of the relay's
  EXPECT_EQ(std::string(buf.data(), got.n), payload);
  // What stopped it: the next read would wait, and that is the caller's to do.
  EXPECT_EQ(got.ec, asio::error::would_block);
  EXPECT_EQ(got.wants, tls_stream::want::read);
}

TEST_F(RelayRead, AFullBufferEndsTheReadAndTheNextGoesOn) {
  std::string payload;
  for (int i = 0; i < 250; ++i)
    payload += static_cast<char>('a' + i % 26);
  client_sends(payload);
  std::string read;
  for (int call = 0; call < 2; ++call) {
    const auto got = read_records(*proxy_tls, proxy_sock, asio::buffer(buf.data(), 100), unbounded);
    ASSERT_EQ(got.n, 100u) << "call " << call;
    EXPECT_FALSE(got.ec) << got.ec.message();  // full: nothing was tried after
    read.append(buf.data(), got.n);
  }
  const auto last = read_records(*proxy_tls, proxy_sock, asio::buffer(buf.data(), 100), unbounded);
  ASSERT_EQ(last.n, 50u);
  read.append(buf.data(), last.n);
  EXPECT_EQ(read, payload);
}

TEST_F(RelayRead, WhatCameBeforeTheEndComesWithIt) {
  client_sends("hello", true);
  const auto got = read_records(*proxy_tls, proxy_sock, asio::buffer(buf), unbounded);
  EXPECT_EQ(std::string(buf.data(), got.n), "hello");
  EXPECT_EQ(got.ec, asio::error::eof);  // close_notify, to be passed on after the bytes
}

TEST_F(RelayRead, NoReadOfTheSocketPastTheTurnsBytes) {
  // ~23 bytes on the wire per 1-byte record (TLS 1.3): many of OpenSSL's 16 KiB socket reads.
  const std::string payload(3000, 'y');
  client_sends(payload);
  const std::uint64_t before = proxy_tls->received();
  const auto got = read_records(*proxy_tls, proxy_sock, asio::buffer(buf), before + 1);
  // One socket read's worth of records, all of them (none left in OpenSSL), and no more.
  EXPECT_FALSE(got.ec) << got.ec.message();
  EXPECT_GT(got.n, 0u);
  EXPECT_LT(got.n, payload.size());
  EXPECT_FALSE(proxy_tls->has_pending());
  EXPECT_GT(queued(), 0u);  // the rest waits in the socket for the next turn
  const auto rest = read_records(*proxy_tls, proxy_sock, asio::buffer(buf), unbounded);
  EXPECT_EQ(got.n + rest.n, payload.size());
}

}  // namespace
