#include "mtlsd/proxy/relay.hpp"

#include "mtlsd/proxy/buffer_pool.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace mtlsd::proxy {
namespace {

using asio::as_tuple;
using asio::use_awaitable;

// How many reads one pump does back to back before it waits again. Reads and writes that
// complete at once do not go through the scheduler, so without a bound one busy connection
// could keep its worker from every other connection.
constexpr int reads_per_turn = 8;

// A failed direction must stop the other one too (a reset client will not read the upstream's
// answer): thrown inside the && group, which then cancels the sibling pump.
struct direction_failed : std::exception {};

void record_failure(relay_result& r, const char* where, const error_code& ec) {
  if (r.aborted) return;
  r.aborted = true;
  r.error = std::string(where) + ": " + ec.message();
}

// Writes everything to a non-blocking plain socket, waiting only when the kernel buffer is full.
asio::awaitable<error_code> write_plain(stream_socket& sock, const char* data, std::size_t n) {
  while (n > 0) {
    error_code ec;
    std::size_t written = sock.write_some(asio::buffer(data, n), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      auto [wec] = co_await sock.async_wait(stream_socket::wait_write, as_tuple(use_awaitable));
      if (wec) co_return wec;
      continue;
    }
    if (ec) co_return ec;
    data += written;
    n -= written;
  }
  co_return error_code{};
}

asio::awaitable<void> tls_to_plain(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                   activity_clock& clock, relay_result& r) {
  for (;;) {
    // Wait without a buffer: an idle connection holds none (OpenSSL may already hold
    // read-ahead bytes, which need no waiting).
    if (!tls.has_pending()) {
      auto [ec] = co_await tls_socket.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
      if (ec) {
        record_failure(r, "waiting for TLS peer", ec);
        throw direction_failed{};
      }
    }
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      auto [ec, n] = co_await tls.try_read_some(buf.buffer());
      if (ec == asio::error::would_block) break;
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
      if (auto wec = co_await write_plain(plain, buf.data(), n)) {
        record_failure(r, "writing to plaintext peer", wec);
        throw direction_failed{};
      }
      r.from_tls += n;
    }
  }
}

asio::awaitable<void> plain_to_tls(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                   activity_clock& clock, relay_result& r) {
  for (;;) {
    auto [wait_ec] = co_await plain.async_wait(stream_socket::wait_read, as_tuple(use_awaitable));
    if (wait_ec) {
      record_failure(r, "waiting for plaintext peer", wait_ec);
      throw direction_failed{};
    }
    pooled_buffer buf;
    for (int turn = 0; turn < reads_per_turn; ++turn) {
      error_code ec;
      std::size_t n = plain.read_some(buf.buffer(), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) break;
      if (ec == asio::error::eof) {
        // close_notify, then FIN: clients that only watch TCP see the end too. The TLS peer
        // may still send; the other pump keeps reading.
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
}

}  // namespace

asio::awaitable<void> relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                            activity_clock& clock, relay_result& result) {
  using namespace asio::experimental::awaitable_operators;
  clock.touch();
  plain.non_blocking(true);  // the pumps read and write it directly, waiting only when needed
  try {
    co_await (tls_to_plain(tls, tls_socket, plain, clock, result) &&
              plain_to_tls(tls, tls_socket, plain, clock, result));
  } catch (const std::exception&) {
    // direction_failed (or, when both pumps failed, asio's multiple_exceptions): the cause is
    // already recorded in `result`.
  }
}

}  // namespace mtlsd::proxy
