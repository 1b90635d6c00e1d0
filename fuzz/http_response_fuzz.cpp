// HTTP/1.1 responses from the network, both places mtlsd reads them:
//   bit 0 clear: net::http_fetch (OCSP responders, CRL distribution points, `mtlsd health`,
//                upstream checks), over a unix socket to an in-process peer that sends the
//                input as the response, then closes. Properties: the exchange ends once the peer
//                has closed (never by the deadline), a response taken has a three-digit status
//                and a body within the request's max_body.
//   bit 0 set:   the HTTP/2 front's upstream side (h2_h1_exchange.cpp's read_response): the head
//                read with the same limits, turned into HTTP/2 fields (take_response_head), the
//                body read by net::http_body_reader into a fixed piece, a chunked body's
//                trailers taken (take_trailers). Properties: the fields are lower-case with no
//                hop-by-hop field, nor one the response's Connection names, and at most one
//                content-length; a body that ended is exactly its Content-Length.
// Byte 0 also chooses the request (bit 1: headers only / HEAD; bit 2: POST) and how the peer
// writes (bits 3-7: N > 0 writes N bytes at a time, yielding between writes, so that a head or a
// chunk header arrives in pieces; 0 writes it whole; at most 64 writes, as h2_upstream_fuzz, so
// that a long input written a byte at a time does not take seconds). Byte 1 chooses http_fetch's
// max_body.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "h2_h1_response.hpp"
#include "mtlsd/net/http_body_reader.hpp"
#include "mtlsd/net/http_client.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "piecewise_peer.hpp"

using namespace mtlsd;
namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

struct input {
  bool upstream_side = false;
  bool head_only = false;
  bool post = false;
  std::size_t piece = 0;  // 0: the whole response at once
  std::size_t max_body = 0;
  std::string_view response;
};

// Writes the response as the input says, then waits for the reader to close.
template <class Socket>
asio::awaitable<void> send_response(Socket& sock, const input& in) {
  co_await fuzz::write_in_pieces(sock, in.response, in.piece);
  co_await fuzz::drain_until_closed(sock);
}

// --- net::http_fetch ---------------------------------------------------------------------------

std::string socket_path;

asio::awaitable<void> serve_one(asio::local::stream_protocol::acceptor& acceptor, const input& in) {
  auto [ec, peer] = co_await acceptor.async_accept(as_tuple(use_awaitable));
  if (ec) co_return;
  co_await send_response(peer, in);
}

asio::awaitable<void> fetch(const input& in) {
  net::http_request req;
  req.post = in.post;
  req.body = "request";
  req.content_type = "application/ocsp-request";
  req.headers_only = in.head_only;
  req.max_body = in.max_body;
  req.unix_socket = socket_path;
  // Beyond libFuzzer's -timeout (10 s under dev.sh fuzz): an exchange that hangs is reported
  // as that timeout, and the check below cannot fail on a slow machine (a review saw a 4 KB
  // response written a byte at a time take 7.6 s beside CPU hogs).
  req.timeout = std::chrono::seconds(60);
  net::http_url url;
  url.host = "localhost";
  url.port = 80;
  url.target = "/";
  const net::http_result r = co_await net::http_fetch(url, req);
  fuzz::check(!r.error.starts_with("no answer within"),
              "an exchange whose peer closed ends without the deadline");
  if (!r.ok()) co_return;
  fuzz::check(r.status >= 0 && r.status <= 999, "a response's status has three digits");
  fuzz::check(r.body.size() <= in.max_body, "a response's body is within max_body");
  fuzz::check(!in.head_only || r.body.empty(), "a headers-only request keeps no body");
}

void run_fetch(const input& in) {
  asio::io_context io;
  asio::local::stream_protocol::acceptor acceptor(io);
  acceptor.open();
  // A run that ended abnormally (a property, the RSS limit) left its socket file behind, and a
  // later process with the same pid (containers) could bind no input at all.
  ::unlink(socket_path.c_str());
  acceptor.bind(asio::local::stream_protocol::endpoint(socket_path));
  acceptor.listen();
  asio::co_spawn(io, serve_one(acceptor, in), asio::detached);
  asio::co_spawn(io, fetch(in), [&](std::exception_ptr e) {
    fuzz::check(!e, "http_fetch throws nothing");
    acceptor.close();
  });
  io.run();
  ::unlink(socket_path.c_str());
}

// --- the HTTP/2 front's upstream side ---------------------------------------------------------

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void check_fields(const proxy::header_list& fields, const std::set<std::string>& named) {
  int lengths = 0;
  for (const auto& [name, value] : fields) {
    fuzz::check(!name.empty() && name == lower(name), "an HTTP/2 field name is lower-case");
    fuzz::check(name != "connection" && name != "transfer-encoding" && name != "keep-alive" &&
                    name != "upgrade" && name != "proxy-connection" && name != "te",
                "no hop-by-hop field reaches HTTP/2");
    fuzz::check(!named.count(name), "no field the response's Connection names is passed on");
    if (name == "content-length") ++lengths;
  }
  fuzz::check(lengths <= 1, "at most one content-length");
}

asio::awaitable<void> read_upstream_response(net::stream_socket& sock, const input& in) {
  boost::beast::flat_buffer buf(proxy::http_head_limit + proxy::http_body_chunk);
  buf.reserve(proxy::http_body_chunk);
  std::optional<http::response_parser<http::buffer_body>> p;
  for (int interim = 0;; ++interim) {
    if (interim > proxy::http_interim_limit) co_return;
    p.emplace();
    p->header_limit(proxy::http_head_limit);
    p->body_limit(boost::none);
    if (in.head_only) p->skip(true);
    auto [ec, n] = co_await http::async_read_header(sock, buf, *p, as_tuple(use_awaitable));
    if (ec || p->get().result_int() == 101) co_return;
    if (p->get().result_int() >= 200) break;
  }
  auto& msg = p->get();
  const int status = static_cast<int>(msg.result_int());
  const auto length = p->content_length();
  std::set<std::string> named;
  proxy::header_list head;
  proxy::h2::take_response_head(
      msg, status, length ? std::optional<std::uint64_t>(*length) : std::nullopt, named, head);
  check_fields(head, named);
  static_cast<http::fields&>(msg).clear();
  std::vector<char> piece(proxy::http_body_chunk);
  std::uint64_t body = 0;
  net::http_body_reader reader(*p, buf);
  while (!p->is_done()) {
    msg.body().data = piece.data();
    msg.body().size = piece.size();
    if (co_await reader.read_some(sock)) co_return;
    body += piece.size() - msg.body().size;
    fuzz::check(body <= in.response.size(), "a body is no longer than what was sent");
    if (p->is_done()) {
      proxy::header_list trailers;
      if (proxy::h2::take_trailers(msg, named, trailers)) check_fields(trailers, named);
    }
  }
  if (length && !in.head_only && status != 204 && status != 304)
    fuzz::check(body == *length, "a body that ended is exactly its Content-Length");
}

void run_upstream_side(const input& in) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
  asio::io_context io;
  const asio::generic::stream_protocol unix_stream(AF_UNIX, SOCK_STREAM);
  net::stream_socket ours(io, unix_stream, fds[0]), theirs(io, unix_stream, fds[1]);
  asio::co_spawn(io, send_response(theirs, in), asio::detached);
  asio::co_spawn(io, read_upstream_response(ours, in), [&](std::exception_ptr e) {
    fuzz::check(!e, "reading an upstream's response throws nothing");
    boost::system::error_code ignored;
    ours.close(ignored);
  });
  io.run();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  std::signal(SIGPIPE, SIG_IGN);
  socket_path = "/tmp/mtlsd-http-response-fuzz-" + std::to_string(::getpid()) + ".sock";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  input in;
  in.upstream_side = (data[0] & 1) != 0;
  in.head_only = (data[0] & 2) != 0;
  in.post = (data[0] & 4) != 0;
  in.piece = data[0] >> 3;
  constexpr std::size_t max_writes = 64;
  if (in.piece != 0) in.piece = std::max(in.piece, size / max_writes + 1);
  in.max_body = std::size_t{16} << (data[1] % 13);  // 16 B .. 64 KiB
  in.response = std::string_view(reinterpret_cast<const char*>(data) + 2, size - 2);
  if (in.upstream_side)
    run_upstream_side(in);
  else
    run_fetch(in);
  return 0;
}
