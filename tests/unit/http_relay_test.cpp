// In-process tests of the HTTP relay's error paths: a real TLS client and the proxy's tls_stream
// on a loopback connection, a real upstream socket, one io_context. A peer that leaves in the
// middle of a message is an expected network error: http_relay must return it as a value in
// relay_result (aborted, with a detail naming the side and the step), at once and without
// throwing.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <optional>
#include <string>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/proxy/xfcc.hpp"
#include "test_pki.hpp"
#include "test_sockets.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using asio::as_tuple;
using asio::use_awaitable;
using mtlsd::proxy::error_code;
using mtlsd::proxy::stream_acceptor;
using mtlsd::proxy::stream_endpoint;
using mtlsd::proxy::stream_socket;
using mtlsd::proxy::tls_stream;
using steady = std::chrono::steady_clock;

using mtlsd::test::loopback;
using mtlsd::test::reset_close;
using mtlsd::test::ssl_ctx_ptr;

// client --TLS--> [proxy_tls | http_relay | proxy_plain] --plain--> upstream
class http_pipeline {
 public:
  http_pipeline() {
    // As the daemon does: writing to a peer that vanished is EPIPE, not a dead process.
    std::signal(SIGPIPE, SIG_IGN);
    auto root = mtlsd::test::make_root_ca({.cn = "HTTP Relay Root"});
    auto server = mtlsd::test::make_leaf(
        root, {.cn = "proxy", .ip_sans = {"127.0.0.1"}, .usage = mtlsd::test::key_usage::server});
    server_ctx.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX_use_certificate(server_ctx.get(), server.cert());
    SSL_CTX_use_PrivateKey(server_ctx.get(), server.key());
    // As mtlsd's contexts (tls/context.cpp): a FIN without close_notify is an end of input.
    SSL_CTX_set_options(server_ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
    client_ctx.reset(SSL_CTX_new(TLS_client_method()));
    X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx.get()), root.cert());
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_PEER, nullptr);

    stream_acceptor front(ioc, loopback()), back(ioc, loopback());
    client_sock.connect(front.local_endpoint());
    proxy_tls_sock = front.accept();
    proxy_plain_sock.connect(back.local_endpoint());
    upstream_sock = back.accept();

    proxy_tls.emplace(proxy_tls_sock, server_ctx.get(), true);
    client_tls.emplace(client_sock, client_ctx.get(), false);
    std::optional<error_code> server_hs, client_hs;
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { server_hs = co_await proxy_tls->handshake(); },
        asio::detached);
    asio::co_spawn(
        ioc, [&]() -> asio::awaitable<void> { client_hs = co_await client_tls->handshake(); },
        asio::detached);
    run_until([&] { return server_hs && client_hs; });
    if (!server_hs || *server_hs || !client_hs || *client_hs)
      throw std::runtime_error("test handshake failed: " + proxy_tls->failure_detail());

    clock.idle = 30s;  // no watchdog here: only the relay itself can end the exchange
    asio::co_spawn(
        ioc,
        mtlsd::proxy::http_relay(*proxy_tls, proxy_tls_sock, proxy_plain_sock, xfcc, clock, result),
        [this](std::exception_ptr e) {
          escaped = e;
          ended = steady::now();
        });
  }

  bool run_until(const std::function<bool()>& done, steady::duration limit = 5s) {
    const auto stop_at = steady::now() + limit;
    while (!done() && steady::now() < stop_at) {
      if (ioc.stopped()) ioc.restart();  // it stops whenever it runs out of work
      ioc.run_one_for(10ms);
    }
    return done();
  }

  // The client sends `data` over TLS.
  void client_sends(const std::string& data) {
    std::optional<error_code> sent;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          sent = co_await client_tls->write(asio::buffer(data.data(), data.size()));
        },
        asio::detached);
    ASSERT_TRUE(run_until([&] { return sent.has_value(); }));
    ASSERT_FALSE(*sent) << sent->message();
  }

  // The upstream reads until it holds at least `n` bytes (the relay runs meanwhile).
  void upstream_reads(std::size_t n) {
    std::array<char, 65536> buf{};
    upstream_sock.non_blocking(true);
    ASSERT_TRUE(run_until([&] {
      error_code ec;
      std::size_t got = upstream_sock.read_some(asio::buffer(buf), ec);
      if (!ec) upstream_received.append(buf.data(), got);
      return upstream_received.size() >= n;
    })) << "the upstream got "
        << upstream_received.size() << " of " << n << " bytes";
  }

  // Everything the client reads until its connection ends (EOF or an error).
  std::string client_reads_to_end() {
    std::string out;
    bool done = false;
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          std::array<char, 16384> buf{};
          for (;;) {
            auto [ec, n] = co_await client_tls->read_some(asio::buffer(buf));
            if (ec) break;
            out.append(buf.data(), n);
          }
          done = true;
        },
        asio::detached);
    EXPECT_TRUE(run_until([&] { return done; })) << "the client's connection never ended";
    return out;
  }

  asio::io_context ioc;
  ssl_ctx_ptr server_ctx, client_ctx;
  stream_socket client_sock{ioc}, proxy_tls_sock{ioc}, proxy_plain_sock{ioc}, upstream_sock{ioc};
  std::optional<tls_stream> proxy_tls, client_tls;  // after the sockets: destroyed first
  mtlsd::proxy::xfcc_policy xfcc;
  mtlsd::proxy::idle_deadline clock;
  mtlsd::proxy::relay_result result;
  std::string upstream_received;
  std::exception_ptr escaped;
  std::optional<steady::time_point> ended;
};

const std::string kGet = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
const std::string kPostHead = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";

std::string escaped_what(const std::exception_ptr& e) {
  if (!e) return "";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

// The upstream answers with a head announcing 100000 bytes, sends 1000 of them, then leaves.
void upstream_leaves_mid_response(http_pipeline& p, bool reset) {
  p.client_sends(kGet);
  p.upstream_reads(kGet.size());
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
  asio::write(p.upstream_sock, asio::buffer(head + std::string(1000, 'b')));
  if (reset) {
    reset_close(p.upstream_sock);
  } else {
    error_code ignored;
    p.upstream_sock.shutdown(stream_socket::shutdown_send, ignored);
  }
  const auto left = steady::now();
  const std::string got = p.client_reads_to_end();
  ASSERT_TRUE(p.run_until([&] { return p.ended.has_value(); }));
  EXPECT_LE(*p.ended - left, 500ms) << "noticed late";
  EXPECT_FALSE(p.escaped) << escaped_what(p.escaped);
  // The client got the head and what there was of the body (no 502 after the head), then the
  // connection closed: only the truncation says what happened.
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got.substr(0, 80);
  EXPECT_EQ(got.find("502"), std::string::npos);
  EXPECT_EQ(got.substr(got.find("\r\n\r\n") + 4), std::string(1000, 'b'));
  EXPECT_TRUE(p.result.aborted);
  EXPECT_EQ(p.result.error.rfind("upstream: reading the response body: ", 0), 0u) << p.result.error;
}

TEST(HttpRelayErrors, UpstreamResetMidResponseIsAValue) {
  http_pipeline p;
  upstream_leaves_mid_response(p, true);
  EXPECT_NE(p.result.error.find("Connection reset by peer"), std::string::npos) << p.result.error;
}

TEST(HttpRelayErrors, UpstreamClosingMidResponseIsAValue) {
  http_pipeline p;
  upstream_leaves_mid_response(p, false);
  EXPECT_NE(p.result.error.find("partial message"), std::string::npos) << p.result.error;
}

// The client sends a request head announcing 100000 body bytes, 1000 of them, then leaves.
void client_leaves_mid_request(http_pipeline& p, bool reset) {
  p.client_sends(kPostHead + std::string(1000, 'a'));
  p.upstream_reads(kPostHead.size() + 1000);
  if (reset) {
    reset_close(p.client_sock);
  } else {
    error_code ignored;  // FIN without close_notify, as many clients end
    p.client_sock.shutdown(stream_socket::shutdown_send, ignored);
  }
  const auto left = steady::now();
  ASSERT_TRUE(p.run_until([&] { return p.ended.has_value(); })) << "the relay never ended";
  EXPECT_LE(*p.ended - left, 500ms) << "noticed late";
  EXPECT_FALSE(p.escaped) << escaped_what(p.escaped);
  EXPECT_TRUE(p.result.aborted);
  EXPECT_EQ(p.result.from_tls, kPostHead.size() + 1000);
  // The upstream got the head and the partial body, then its connection ended: no byte more.
  p.upstream_reads(kPostHead.size() + 1000);
  EXPECT_EQ(p.upstream_received, kPostHead + std::string(1000, 'a'));
  std::array<char, 16> buf{};
  error_code ec = asio::error::would_block;
  p.run_until([&] {
    p.upstream_sock.read_some(asio::buffer(buf), ec);
    return ec != asio::error::would_block;
  });
  EXPECT_EQ(ec, asio::error::eof) << ec.message();
}

TEST(HttpRelayErrors, ClientResetMidRequestIsAValue) {
  http_pipeline p;
  client_leaves_mid_request(p, true);
  EXPECT_EQ(p.result.error, "reading the request body: Connection reset by peer");
}

TEST(HttpRelayErrors, ClientClosingMidRequestIsAValue) {
  http_pipeline p;
  client_leaves_mid_request(p, false);
  // Not "malformed request body: partial message", answered 400 (review).
  EXPECT_EQ(p.result.error, "the client ended its connection inside the request body");
}

// A large body the upstream has already sent goes to the client in large TLS records: reads
// grow while they fill what they ask for. With beast::read_size's fixed 512-byte reads (every
// read consumed whole) 1 MiB took 2,048 reads, writes and records.
TEST(HttpRelayStreaming, ALargeResponseMovesInLargeRecords) {
  http_pipeline p;
  p.client_sends(kGet);
  p.upstream_reads(kGet.size());
  constexpr std::size_t body_size = 1024 * 1024;
  const std::string response = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body_size) +
                               "\r\n\r\n" + std::string(body_size, 'b');
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        co_await asio::async_write(p.upstream_sock, asio::buffer(response),
                                   as_tuple(use_awaitable));
      },
      asio::detached);
  std::string got;
  std::size_t records = 0;  // OpenSSL's SSL_read hands out at most one record per call
  bool done = false;
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        std::array<char, 16384> buf{};
        while (got.size() < response.size()) {
          auto [ec, n] = co_await p.client_tls->read_some(asio::buffer(buf));
          if (ec) break;
          got.append(buf.data(), n);
          ++records;
        }
        done = true;
      },
      asio::detached);
  ASSERT_TRUE(p.run_until([&] { return done; }, 20s));
  EXPECT_EQ(got, response);
  EXPECT_LE(records, body_size / 4096) << "records averaged " << body_size / records << " bytes";
}

}  // namespace

// tls_stream peeks at OpenSSL's error queue before each operation and clears it only when an
// entry is there (clearing an empty queue costs ~500 instructions): an entry some other code
// left behind must still not turn "no input yet" into a protocol error.
TEST(TlsStreamErrors, AStaleQueueEntryDoesNotTurnAWaitIntoAFailure) {
  http_pipeline p;
  std::array<char, 64> buf{};
  // First the server's session tickets: OpenSSL's handshake code clears the queue itself.
  ASSERT_EQ(p.client_tls->read_now(asio::buffer(buf)).ec, asio::error::would_block);
  ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);  // left by someone else on this thread
  const auto attempt = p.client_tls->read_now(asio::buffer(buf));
  EXPECT_EQ(attempt.ec, asio::error::would_block) << attempt.ec.message();
  EXPECT_EQ(attempt.wants, tls_stream::want::read);
  EXPECT_EQ(ERR_peek_error(), 0u);
}
