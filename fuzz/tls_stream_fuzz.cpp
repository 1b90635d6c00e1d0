// tls_stream, server side, fed by a peer over a socket pair (the listener's real SSL_CTX from
// build_context, fixtures' server certificate, client certificates required). First byte:
//   bit 0 clear: the rest is written raw to the server (records of any shape: ClientHellos,
//                alerts, garbage), then the peer half-closes;
//   bit 0 set:   a real OpenSSL client (fixtures' leaf) completes the handshake, sends the
//                first part of the rest as application data, close_notify when bit 1 is set,
//                then writes the second part raw on the wire (forged or truncated records
//                after the handshake), and half-closes.
// The server handshakes, reads until an error or EOF and sends close_notify: it must end every
// time (no hang: libFuzzer's -timeout), without a crash or leak.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <thread>

#include "fuzz_support.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/verify.hpp"

using namespace mtlsd;
namespace asio = boost::asio;

namespace {

tls::tls_context* server_ctx = nullptr;
SSL_CTX* client_ctx = nullptr;

void init_contexts() {
  const std::string yaml =
      "listeners:\n"
      "  - name: fuzz\n"
      "    listen: 127.0.0.1:1\n"
      "    upstream: 127.0.0.1:2\n"
      "    tls: {cert: " +
      fuzz::fixture_path("server.crt") + ", key: " + fuzz::fixture_path("server.key") +
      "}\n"
      "    client_auth: {mode: require, ca: [" +
      fuzz::fixture_path("ca.crt") + "]}\n";
  auto loaded = config::load_text(yaml, "/fuzz/tls.yaml");
  fuzz::check(loaded.config.has_value(), "the tls_stream fuzz configuration loads");
  server_ctx = new tls::tls_context(tls::build_context(loaded.config->listeners.front()));

  client_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, nullptr);
  fuzz::check(SSL_CTX_use_certificate_file(client_ctx, fuzz::fixture_path("leaf.crt").c_str(),
                                           SSL_FILETYPE_PEM) == 1 &&
                  SSL_CTX_use_PrivateKey_file(client_ctx, fuzz::fixture_path("leaf.key").c_str(),
                                              SSL_FILETYPE_PEM) == 1,
              "the fuzz client certificate loads");
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n <= 0) return;  // the server closed: the rest cannot matter
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void drain(int fd) {
  std::array<char, 4096> buf;
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
}

// The peer: blocking I/O on its own thread while the server runs on the io_context.
void raw_peer(int fd, std::string_view bytes) {
  write_all(fd, bytes);
  ::shutdown(fd, SHUT_WR);
  drain(fd);
}

void tls_peer(int fd, std::string_view app, std::string_view raw, bool close_notify) {
  SSL* ssl = SSL_new(client_ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) == 1) {
    while (!app.empty()) {
      const int n =
          SSL_write(ssl, app.data(), static_cast<int>(std::min<std::size_t>(app.size(), 1000)));
      if (n <= 0) break;
      app.remove_prefix(static_cast<std::size_t>(n));
    }
    if (close_notify) SSL_shutdown(ssl);
  }
  write_all(fd, raw);
  ::shutdown(fd, SHUT_WR);
  drain(fd);
  SSL_free(ssl);
  ERR_clear_error();
}

asio::awaitable<void> serve(proxy::stream_socket& sock) {
  proxy::tls_stream tls(sock, server_ctx->ctx.get(), true);
  tls::verify_outcome outcome;  // as session.cpp does: the verifier records its verdict here
  tls::verifier::bind(tls.native(), &outcome);
  if (co_await tls.handshake()) co_return;
  std::array<char, 4096> buf;
  for (;;) {
    auto [ec, n] = co_await tls.read_some(asio::buffer(buf));
    if (ec) break;
  }
  co_await tls.shutdown_send();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  std::signal(SIGPIPE, SIG_IGN);  // the peer may write after the server gave up (as mtlsd does)
  init_contexts();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::restart_interrupted_calls();
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;

  std::thread peer;
  if (data[0] & 1) {
    const std::size_t split = rest.empty() ? 0 : static_cast<std::uint8_t>(rest[0]) % (rest.size());
    const std::string_view body = rest.empty() ? rest : rest.substr(1);
    const std::string_view app = body.substr(0, std::min(split, body.size()));
    const std::string_view raw = body.substr(app.size());
    peer = std::thread(tls_peer, fds[1], app, raw, (data[0] & 2) != 0);
  } else {
    peer = std::thread(raw_peer, fds[1], rest);
  }

  {
    asio::io_context io;
    proxy::stream_socket sock(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[0]);
    asio::co_spawn(io, serve(sock), asio::detached);
    io.run();
    // Closing our end ends the peer's drain (and a handshake the server gave up on).
  }
  peer.join();
  ::close(fds[1]);
  ERR_clear_error();
  return 0;
}
