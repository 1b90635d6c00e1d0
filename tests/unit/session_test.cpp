// In-process tests of the connection pipeline (session, relay, tls_stream): a real mtlsd
// session on loopback sockets, a real TLS client (tls_stream in client mode, OpenSSL), and a
// real upstream socket, all on one io_context. Each deadline is measured from the event that
// starts it and must hold to within a few tens of milliseconds (a shared, loaded machine).
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <functional>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/log/access_log.hpp"
#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/listener.hpp"
#include "mtlsd/proxy/session.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "mtlsd/util/exception.hpp"
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

// Out of descriptors, UBSan's vptr check (probing memory through a pipe()) fails and then reports
// valid objects as bad: the descriptor-exhaustion tests run in the normal build only (as
// integration.test_limits does).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

// How late a deadline may fire on a busy 2-core machine shared by several builds.
constexpr auto slack = 150ms;

long ms(steady::duration d) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

using mtlsd::test::loopback;
using mtlsd::test::reset_close;
using mtlsd::test::ssl_ctx_ptr;

unsigned short port_of(const stream_acceptor& a) {
  const stream_endpoint ep = a.local_endpoint();  // data() points into it
  const auto* sin = reinterpret_cast<const sockaddr_in*>(ep.data());
  return ntohs(sin->sin_port);
}

// One listener in server mode in front of an upstream socket the test controls.
class pipeline {
 public:
  // `timeouts`: YAML flow mapping, e.g. "{handshake: 300ms}". `upstream_port`: 0 = our own.
  explicit pipeline(const std::string& timeouts, unsigned short upstream_port = 0)
      : upstream_acc(ioc, loopback()), proxy_acc(ioc, loopback()) {
    mtlsd::log::set_access_log_enabled(false);  // keep the test output readable
    root = mtlsd::test::make_root_ca({.cn = "Pipeline Root"});
    server = mtlsd::test::make_leaf(
        root, {.cn = "proxy", .ip_sans = {"127.0.0.1"}, .usage = mtlsd::test::key_usage::server});
    client = mtlsd::test::make_leaf(root, {.cn = "alice"});
    auto s = dir.write_pair("server", server);
    const std::string ca = dir.write("ca.crt", mtlsd::test::to_pem(root));
    const unsigned short up = upstream_port ? upstream_port : port_of(upstream_acc);
    const std::string yaml =
        "listeners:\n  - name: t\n    listen: 127.0.0.1:0\n"
        "    upstream: 127.0.0.1:" +
        std::to_string(up) + "\n    timeouts: " + timeouts + "\n    tls:\n      cert: " + s.cert +
        "\n      key: " + s.key + "\n    client_auth:\n      ca: [" + ca + "]\n";
    auto loaded = mtlsd::config::load_text(yaml, (dir.path() / "t.yaml").string());
    if (!loaded.config) {
      std::string why;
      for (const auto& p : loaded.problems)
        why += p.str() + "\n";
      throw std::runtime_error(why);
    }
    mtlsd::runtime::build_options opts;
    opts.registry = &registry;
    rt = mtlsd::runtime::build(*loaded.config, opts);
    listener = rt->listeners.front();
    m = listener->metrics;

    client_ctx.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_use_certificate(client_ctx.get(), client.cert());
    SSL_CTX_use_PrivateKey(client_ctx.get(), client.key());
    X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx.get()), root.cert());
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_PEER, nullptr);
  }

  // Connects a client and starts a session on the accepted socket; `started` is when.
  void connect() { connect_with(listener); }
  void connect_with(std::shared_ptr<const mtlsd::runtime::listener_runtime> lr) {
    client_sock.emplace(ioc);
    client_sock->connect(proxy_acc.local_endpoint());
    stream_socket accepted = proxy_acc.accept();
    started = steady::now();
    auto& stop = stops.emplace_back();
    asio::co_spawn(ioc,
                   mtlsd::proxy::run_session(std::move(accepted), std::move(lr), sessions, stop),
                   asio::bind_cancellation_slot(stop.slot(), [this](std::exception_ptr e) {
                     escaped = static_cast<bool>(e);
                     ended = steady::now();
                   }));
  }

  // Runs the loop until the session ended (or `limit` passed); true when it ended.
  bool run_until_ended(steady::duration limit = 5s) {
    const auto stop_at = steady::now() + limit;
    while (!ended && steady::now() < stop_at)
      ioc.run_one_for(10ms);
    return ended.has_value();
  }
  // Runs the loop until `done()` (or `limit` passed).
  bool run_until(const std::function<bool()>& done, steady::duration limit = 5s) {
    const auto stop_at = steady::now() + limit;
    while (!done() && steady::now() < stop_at)
      ioc.run_one_for(10ms);
    return done();
  }

  // The client's TLS handshake, run to completion; records when it completed.
  void handshake() {
    tls.emplace(*client_sock, client_ctx.get(), false);
    std::optional<error_code> result;
    asio::co_spawn(
        ioc, [this, &result]() -> asio::awaitable<void> { result = co_await tls->handshake(); },
        asio::detached);
    ASSERT_TRUE(run_until([&] { return result.has_value(); }));
    ASSERT_FALSE(*result) << result->message() << " " << tls->failure_detail();
    established = steady::now();
  }

  // Accepts the session's upstream connection.
  void accept_upstream() {
    bool done = false;
    upstream_sock.emplace(ioc);
    upstream_acc.async_accept(*upstream_sock, [&](error_code ec) {
      ASSERT_FALSE(ec) << ec.message();
      done = true;
    });
    ASSERT_TRUE(run_until([&] { return done; }));
  }

  double counter(prometheus::Counter* c) const { return c->Value(); }
  double failures(mtlsd::reason r) const { return m->failure(r).Value(); }

  mtlsd::test::pki_dir dir;
  mtlsd::test::credential root, server, client;
  mtlsd::metrics::registry registry;
  // One per session started, each bound to its session's serving side; declared before `ioc`
  // so that they outlive the frames it may still hold when it goes.
  std::list<asio::cancellation_signal> stops;
  // Before `ioc` too: a session it still holds unregisters itself as it goes.
  mtlsd::proxy::session_registry sessions;
  asio::io_context ioc;
  stream_acceptor upstream_acc;
  stream_acceptor proxy_acc;
  std::shared_ptr<const mtlsd::runtime::runtime> rt;
  std::shared_ptr<const mtlsd::runtime::listener_runtime> listener;
  mtlsd::metrics::listener_metrics* m = nullptr;
  ssl_ctx_ptr client_ctx;
  std::optional<stream_socket> client_sock;
  std::optional<stream_socket> upstream_sock;
  std::optional<tls_stream> tls;  // declared after client_sock: destroyed first
  steady::time_point started, established;
  std::optional<steady::time_point> ended;
  bool escaped = false;
};

// A listening socket whose accept queue is full: connects to it hang (SYNs are dropped).
struct never_accepts {
  int fd = -1;
  std::vector<int> fillers;
  unsigned short port = 0;
  never_accepts() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd, 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    for (int i = 0; i < 4; ++i) {
      int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      ::connect(f, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers.push_back(f);
    }
    // A listening socket is readable once its accept queue holds a connection: with backlog 0
    // that one fills it, and the kernel drops every further SYN (a connect then hangs).
    pollfd queued{fd, POLLIN, 0};
    EXPECT_EQ(::poll(&queued, 1, 5000), 1) << "no filler's handshake completed within 5s";
  }
  ~never_accepts() {
    for (int f : fillers)
      ::close(f);
    ::close(fd);
  }
};

// --- deadlines ------------------------------------------------------------------------------

TEST(SessionDeadline, HandshakeDeadlineHolds) {
  pipeline p("{handshake: 300ms}");
  p.connect();  // and send nothing
  ASSERT_TRUE(p.run_until_ended());
  EXPECT_GE(p.ended.value() - p.started, 300ms);
  EXPECT_LE(p.ended.value() - p.started, 300ms + slack) << ms(*p.ended - p.started);
  EXPECT_EQ(p.failures(mtlsd::reason::handshake_timeout), 1);
}

TEST(SessionDeadline, ConnectDeadlineShorterThanTheHandshakeOneHolds) {
  never_accepts upstream;
  pipeline p("{handshake: 5s, connect: 300ms}", upstream.port);
  p.connect();
  p.handshake();
  ASSERT_TRUE(p.run_until_ended(3s)) << "the handshake deadline (5s) applied instead";
  EXPECT_GE(p.ended.value() - p.established, 250ms);
  EXPECT_LE(p.ended.value() - p.established, 300ms + slack) << ms(*p.ended - p.established);
  EXPECT_EQ(p.failures(mtlsd::reason::upstream_unavailable), 1);
  EXPECT_EQ(p.counter(p.m->upstream_connect_failures), 1);
}

TEST(SessionDeadline, LingerAfterARefusalLastsOneSecond) {
  pipeline p("{handshake: 5s}");
  p.connect();
  const std::string not_tls = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  asio::write(*p.client_sock, asio::buffer(not_tls));  // refused; then the client stays, silent
  ASSERT_TRUE(p.run_until_ended(3s)) << "the handshake deadline (5s) applied to the linger";
  EXPECT_GE(p.ended.value() - p.started, 1s);
  EXPECT_LE(p.ended.value() - p.started, 1s + slack) << ms(*p.ended - p.started);
  EXPECT_EQ(p.failures(mtlsd::reason::protocol_error), 1);
}

TEST(SessionDeadline, IdleDeadlineShorterThanTheConnectOneHolds) {
  pipeline p("{connect: 5s, idle: 300ms}");
  p.connect();
  p.handshake();
  p.accept_upstream();
  const auto relaying = steady::now();
  ASSERT_TRUE(p.run_until_ended(3s)) << "the connect deadline (5s) applied instead";
  EXPECT_GE(p.ended.value() - p.established, 300ms);
  EXPECT_LE(p.ended.value() - relaying, 300ms + slack) << ms(*p.ended - relaying);
  EXPECT_EQ(p.counter(p.m->accepted), 1);
}

// --- half-close -----------------------------------------------------------------------------

TEST(SessionHalfClose, TheOtherSideHasHalfCloseToFinish) {
  pipeline p("{idle: 0s, half_close: 300ms}");  // idle 0s: nothing else would end it
  p.connect();
  p.handshake();
  p.accept_upstream();
  std::optional<error_code> sent;
  asio::co_spawn(
      p.ioc, [&]() -> asio::awaitable<void> { sent = co_await p.tls->shutdown_send(); },
      asio::detached);
  ASSERT_TRUE(p.run_until([&] { return sent.has_value(); }));
  error_code ignored;
  p.client_sock->shutdown(stream_socket::shutdown_send, ignored);
  const auto half_closed = steady::now();
  // The upstream sees the EOF, and stays silent.
  std::array<char, 16> buf{};
  p.upstream_sock->non_blocking(false);
  ASSERT_TRUE(p.run_until([&] {
    error_code ec;
    p.upstream_sock->non_blocking(true);
    p.upstream_sock->read_some(asio::buffer(buf), ec);
    return ec == asio::error::eof;
  }));
  ASSERT_TRUE(p.run_until_ended(3s)) << "a half-closed connection stayed open";
  EXPECT_GE(p.ended.value() - half_closed, 300ms);
  EXPECT_LE(p.ended.value() - half_closed, 300ms + slack) << ms(*p.ended - half_closed);
  EXPECT_EQ(p.counter(p.m->accepted), 1);
  EXPECT_EQ(p.counter(p.m->errors), 0);
}

// The upstream finishes first: the relay's own coroutine (the upstream side's pump) is done and
// waits for the client side's, which the session's deadline, and a kill, must still reach.
// `kill`: kill the session once the client heard the end, instead of waiting for half_close.
void upstream_ends_first_then(pipeline& p, bool kill) {
  p.connect();
  p.handshake();
  p.accept_upstream();
  error_code ignored;
  p.upstream_sock->shutdown(stream_socket::shutdown_send, ignored);
  const auto half_closed = steady::now();
  // The client hears the end (close_notify), and stays silent.
  std::optional<error_code> heard;
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        std::array<char, 16> buf{};
        heard = (co_await p.tls->read_some(asio::buffer(buf))).first;
      },
      asio::detached);
  ASSERT_TRUE(p.run_until([&] { return heard.has_value(); }));
  EXPECT_EQ(*heard, asio::error::eof) << heard->message();
  ASSERT_FALSE(p.ended) << "the session ended with the upstream's end; the client may still send";
  const auto killed = steady::now();
  if (kill) p.sessions.kill_all();
  ASSERT_TRUE(p.run_until_ended(3s)) << "a half-closed connection stayed open";
  if (kill) {
    EXPECT_LE(p.ended.value() - killed, 50ms + slack) << ms(*p.ended - killed);
  } else {
    EXPECT_GE(p.ended.value() - half_closed, 300ms);
    EXPECT_LE(p.ended.value() - half_closed, 300ms + slack) << ms(*p.ended - half_closed);
  }
  EXPECT_EQ(p.counter(p.m->accepted), 1);
  EXPECT_EQ(p.counter(p.m->errors), 0);
}

TEST(SessionHalfClose, TheClientHasHalfCloseToFinishAfterTheUpstreamEnded) {
  pipeline p("{idle: 0s, half_close: 300ms}");  // idle 0s: nothing else would end it
  upstream_ends_first_then(p, false);
}

TEST(SessionKill, KillEndsARelayWhoseUpstreamSideIsOver) {
  pipeline p("{idle: 0s, half_close: 0s}");  // no limit: only the kill ends it
  upstream_ends_first_then(p, true);
}

// --- kill, errors ---------------------------------------------------------------------------

TEST(SessionKill, KillEndsARelayingSessionAtOnce) {
  pipeline p("{idle: 30s}");
  p.connect();
  p.handshake();
  p.accept_upstream();
  p.run_until([] { return false; }, 50ms);
  ASSERT_EQ(p.sessions.size(), 1u);
  const auto killed = steady::now();
  p.sessions.kill_all();
  ASSERT_TRUE(p.run_until_ended(2s));
  EXPECT_LE(p.ended.value() - killed, 50ms + slack) << ms(*p.ended - killed);
  EXPECT_EQ(p.sessions.size(), 0u);
}

TEST(SessionError, AnInternalErrorEndsTheSessionAtOnceAsAnError) {
  pipeline p("{handshake: 5s}");
  // A listener whose TLS context is missing: making the connection's SSL throws.
  auto broken = std::make_shared<mtlsd::runtime::listener_runtime>();
  broken->cfg = p.listener->cfg;
  broken->metrics = p.m;
  broken->registry = &p.registry;
  p.connect_with(broken);
  // The SSL is made once the first TLS record is in (wait_for_first_record): a one-byte one.
  asio::write(*p.client_sock, asio::buffer(std::string_view("\x16\x03\x01\x00\x01\x01", 6)));
  ASSERT_TRUE(p.run_until_ended(3s));
  EXPECT_LE(p.ended.value() - p.started, slack)
      << "waited for a deadline: " << ms(*p.ended - p.started);
  EXPECT_FALSE(p.escaped);
  EXPECT_EQ(p.counter(p.m->errors), 1);
  EXPECT_EQ(p.counter(p.m->rejected), 0);
  EXPECT_EQ(p.failures(mtlsd::reason::handshake_timeout), 0);
}

// The watchdog ends a session through the signal its spawner binds: a session spawned without
// that binding could never be ended by a deadline, and refuses to start.
TEST(SessionError, ASessionSpawnedWithoutItsStopSignalsSlotFailsAtOnce) {
  pipeline p("{handshake: 5s}");
  p.client_sock.emplace(p.ioc);
  p.client_sock->connect(p.proxy_acc.local_endpoint());
  asio::cancellation_signal unbound;
  std::optional<std::string> escaped;
  asio::co_spawn(
      p.ioc, mtlsd::proxy::run_session(p.proxy_acc.accept(), p.listener, p.sessions, unbound),
      [&](std::exception_ptr e) { escaped = e ? mtlsd::util::message_of(e) : std::string(); });
  ASSERT_TRUE(p.run_until([&] { return escaped.has_value(); }, 1s));
  EXPECT_NE(escaped->find("stop_serving"), std::string::npos) << *escaped;
  EXPECT_EQ(p.sessions.size(), 0u);
}

TEST(SessionCapacity, OutOfDescriptorsConnectingUpstreamIsOverCapacity) {
  if (sanitized) GTEST_SKIP() << "sanitizer runtime needs descriptors (see `sanitized`)";
  pipeline p("{handshake: 5s, connect: 5s}");
  p.connect();
  // Use up every descriptor the process may have, then let the session reach its connect.
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  std::vector<int> hogs;
  for (int fd; (fd = ::dup(0)) >= 0;)
    hogs.push_back(fd);
  p.handshake();
  ASSERT_TRUE(p.run_until_ended(3s));
  for (int fd : hogs)
    ::close(fd);
  EXPECT_EQ(p.failures(mtlsd::reason::over_capacity), 1);
  EXPECT_EQ(p.failures(mtlsd::reason::upstream_unavailable), 0);
  EXPECT_EQ(p.counter(p.m->upstream_connect_failures), 0);
  EXPECT_EQ(p.counter(p.m->rejected), 1);
}

// --- relay ----------------------------------------------------------------------------------

TEST(Relay, BytesFlowBothWaysAndEofEndsTheSession) {
  pipeline p("{idle: 5s}");
  p.connect();
  p.handshake();
  p.accept_upstream();
  std::string at_upstream, at_client;
  bool client_done = false;
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        co_await p.tls->write(asio::buffer(std::string_view("ping")));
        std::array<char, 64> buf{};
        auto [ec, n] = co_await p.tls->read_some(asio::buffer(buf));
        at_client.assign(buf.data(), ec ? 0 : n);
        co_await p.tls->shutdown_send();
        client_done = true;
      },
      asio::detached);
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        std::array<char, 64> buf{};
        auto [ec, n] =
            co_await p.upstream_sock->async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
        at_upstream.assign(buf.data(), ec ? 0 : n);
        co_await asio::async_write(*p.upstream_sock, asio::buffer(std::string_view("pong")),
                                   as_tuple(use_awaitable));
        error_code ignored;
        p.upstream_sock->shutdown(stream_socket::shutdown_send, ignored);
      },
      asio::detached);
  ASSERT_TRUE(p.run_until_ended(3s));
  EXPECT_TRUE(client_done);
  EXPECT_EQ(at_upstream, "ping");
  EXPECT_EQ(at_client, "pong");
  EXPECT_EQ(p.counter(p.m->accepted), 1);
  EXPECT_EQ(p.counter(p.m->rx_bytes), 4);
  EXPECT_EQ(p.counter(p.m->tx_bytes), 4);
}

TEST(Relay, AnUpstreamResetEndsTheRelayAsAValue) {
  pipeline p("{idle: 30s}");
  p.connect();
  p.handshake();
  p.accept_upstream();
  p.run_until([] { return false; }, 50ms);
  const auto reset = steady::now();
  reset_close(*p.upstream_sock);
  ASSERT_TRUE(p.run_until_ended(2s));
  EXPECT_LE(p.ended.value() - reset, slack);
  EXPECT_FALSE(p.escaped);
  EXPECT_EQ(p.counter(p.m->accepted), 1);
  EXPECT_EQ(p.counter(p.m->errors), 0);  // a reset is the network's doing, not an internal error
}

TEST(Relay, AClientThatLeavesWhileTheUpstreamIsStalledIsNoticed) {
  pipeline p("{idle: 30s, half_close: 30s}");
  p.connect();
  p.handshake();
  p.accept_upstream();  // and never read: the upstream is stalled
  // The client pushes until every buffer on the way is full.
  const std::string chunk(64 * 1024, 'x');
  std::uint64_t written = 0;
  asio::co_spawn(
      p.ioc,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          if (co_await p.tls->write(asio::buffer(chunk))) co_return;
          written += chunk.size();
        }
      },
      asio::detached);
  // Stalled once no write completed for 300 ms.
  for (std::uint64_t last = 1; last != written;) {
    last = written;
    p.run_until([] { return false; }, 300ms);
  }
  ASSERT_GT(written, 0u);
  ASSERT_FALSE(p.ended);
  const auto left = steady::now();
  reset_close(*p.client_sock);  // the client leaves (its pending write ends with the socket)
  ASSERT_TRUE(p.run_until_ended(3s)) << "not noticed until the idle timeout";
  EXPECT_LE(p.ended.value() - left, 100ms + slack) << ms(*p.ended - left);
}

// --- accept loop ----------------------------------------------------------------------------

TEST(AcceptLoop, OutOfDescriptorsIsCountedBackedOffAndRecovered) {
  if (sanitized) GTEST_SKIP() << "sanitizer runtime needs descriptors (see `sanitized`)";
  pipeline p("{handshake: 5s}");
  auto slot = std::make_shared<mtlsd::proxy::listener_slot>();
  slot->name = "t";
  slot->current.store(p.listener);
  auto acc = std::make_shared<stream_acceptor>(p.ioc, loopback());
  stream_socket waiting(p.ioc);
  waiting.connect(acc->local_endpoint());  // queued in the kernel until accepted
  std::vector<int> hogs;
  for (int fd; (fd = ::dup(0)) >= 0;)
    hogs.push_back(fd);
  bool loop_ended = false;
  asio::co_spawn(p.ioc, mtlsd::proxy::accept_loop(acc, slot, p.sessions),
                 [&](std::exception_ptr) { loop_ended = true; });
  p.run_until([] { return false; }, 500ms);
  for (int fd : hogs)
    ::close(fd);
  const double errors = p.counter(p.m->accept_errors);
  EXPECT_GE(errors, 2);   // counted...
  EXPECT_LE(errors, 10);  // ...and backed off (100 ms), not a busy loop
  EXPECT_EQ(p.sessions.size(), 0u);
  ASSERT_TRUE(p.run_until([&] { return p.sessions.size() == 1; }, 2s)) << "never recovered";
  EXPECT_FALSE(loop_ended);
  acc->close();
  ASSERT_TRUE(p.run_until([&] { return loop_ended; }));
}

// --- tls_stream -----------------------------------------------------------------------------

TEST(TlsStream, ATcpCloseWithoutCloseNotifyReadsAsEof) {
  pipeline p("{idle: 30s}");
  p.connect();
  p.handshake();
  p.accept_upstream();
  // The session's TLS side is ours to read from here: close the client's TCP without TLS
  // close_notify; the session ends cleanly (EOF, not an error).
  p.tls.reset();
  error_code ignored;
  p.client_sock->shutdown(stream_socket::shutdown_both, ignored);
  p.client_sock->close(ignored);
  std::array<char, 16> buf{};
  ASSERT_TRUE(p.run_until([&] {
    error_code ec;
    p.upstream_sock->non_blocking(true);
    p.upstream_sock->read_some(asio::buffer(buf), ec);
    return ec == asio::error::eof;
  })) << "the upstream never saw the client's end";
  reset_close(*p.upstream_sock);
  ASSERT_TRUE(p.run_until_ended(2s));
  EXPECT_EQ(p.counter(p.m->errors), 0);
}

TEST(TlsStream, AProtocolFailureIsNamedAsSuchWithOpenSslsDetail) {
  asio::io_context ioc;
  stream_acceptor acc(ioc, loopback());
  stream_socket client(ioc);
  client.connect(acc.local_endpoint());
  stream_socket raw = acc.accept();
  // Not a ServerHello: an application-data record before any handshake.
  asio::write(raw, asio::buffer(std::string_view("\x17\x03\x03\x00\x05hello", 10)));
  ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
  tls_stream tls(client, ctx.get(), false);
  std::optional<error_code> result;
  asio::co_spawn(
      ioc, [&]() -> asio::awaitable<void> { result = co_await tls.handshake(); }, asio::detached);
  ioc.run_for(2s);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(*result, mtlsd::proxy::tls_protocol_error());
  const std::string said = mtlsd::proxy::describe(*result, tls);
  EXPECT_EQ(said.rfind("TLS protocol error (", 0), 0u) << said;  // not a borrowed errno's text
  EXPECT_NE(said.find("unexpected message"), std::string::npos) << said;
}

}  // namespace
