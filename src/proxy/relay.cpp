#include "mtlsd/proxy/relay.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// 16 KiB: one maximum-size TLS record, so each TLS write is one record and each TLS read can
// take a whole record.
constexpr std::size_t buffer_size = 16 * 1024;

// A failed direction must stop the other one too (a reset client will not read the upstream's
// answer): thrown inside the && group, which then cancels the sibling pump.
struct direction_failed : std::exception {};

void record_failure(relay_result& r, const char* where, const error_code& ec) {
  if (r.aborted) return;
  r.aborted = true;
  r.error = std::string(where) + ": " + ec.message();
}

asio::awaitable<void> tls_to_plain(tls_stream& tls, stream_socket& plain, activity_clock& clock,
                                   relay_result& r) {
  std::array<char, buffer_size> buf;
  for (;;) {
    auto [ec, n] = co_await tls.read_some(asio::buffer(buf));
    if (ec == asio::error::eof) {
      error_code ignored;
      plain.shutdown(stream_socket::shutdown_send, ignored);  // pass the EOF on
      co_return;
    }
    if (ec) {
      record_failure(r, "reading from TLS peer", ec);
      throw direction_failed{};
    }
    clock.touch();
    auto [wec, written] =
        co_await asio::async_write(plain, asio::buffer(buf.data(), n), as_tuple(use_awaitable));
    if (wec) {
      record_failure(r, "writing to plaintext peer", wec);
      throw direction_failed{};
    }
    r.from_tls += n;
  }
}

asio::awaitable<void> plain_to_tls(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                   activity_clock& clock, relay_result& r) {
  std::array<char, buffer_size> buf;
  for (;;) {
    auto [ec, n] = co_await plain.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    if (ec == asio::error::eof) {
      // close_notify, then FIN: clients that only watch TCP see the end too. The TLS peer may
      // still send; we keep reading in the other pump.
      co_await tls.shutdown_send();
      error_code ignored;
      tls_socket.shutdown(stream_socket::shutdown_send, ignored);
      co_return;
    }
    if (ec) {
      record_failure(r, "reading from plaintext peer", ec);
      throw direction_failed{};
    }
    clock.touch();
    if (auto wec = co_await tls.write(asio::buffer(buf.data(), n))) {
      record_failure(r, "writing to TLS peer", wec);
      throw direction_failed{};
    }
    r.from_plain += n;
  }
}

}  // namespace

asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            activity_clock& clock, relay_result& result) {
  using namespace asio::experimental::awaitable_operators;
  clock.touch();
  try {
    co_await (tls_to_plain(tls, plain, clock, result) &&
              plain_to_tls(tls, tls_socket, plain, clock, result));
  } catch (const std::exception&) {
    // direction_failed (or, when both pumps failed, asio's multiple_exceptions): the cause is
    // already recorded in `result`.
  }
}

}  // namespace mtlsd::proxy
