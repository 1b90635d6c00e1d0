#pragma once
// TLS over a non-blocking socket: OpenSSL reads and writes the file descriptor itself and Asio
// only reports readiness. Compared with asio::ssl::stream this (1) saves a copy through a BIO
// pair, and (2) lets each direction close on its own: shutdown_send() sends a lone close_notify
// while the other direction keeps reading — asio's async_shutdown would also wait for the
// peer's close_notify and collide with the concurrent reader. Reads and writes may be in flight
// at the same time (one of each), as in nginx; renegotiation is disabled in every context.
#include <openssl/ssl.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <cstdint>
#include <string>
#include <utility>

#include "mtlsd/net/shared_edge_wait.hpp"
#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/tls/openssl.hpp"

namespace mtlsd::proxy {

class tls_stream {
 public:
  // `sock` must stay open and outlive this object; the caller owns it.
  tls_stream(stream_socket& sock, SSL_CTX* ctx, bool server);
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;

  SSL* native() const { return ssl_.get(); }

  // Completes the handshake. On failure, failure_reason()/failure_detail() say what OpenSSL said.
  asio::awaitable<error_code> handshake();
  // Reads up to buf.size() bytes; asio::error::eof once the peer sent close_notify, or closed
  // TCP without one between two records (SSL_OP_IGNORE_UNEXPECTED_EOF: clients commonly do, and
  // Go reads it as EOF too). A TCP end inside a record is a truncation: connection_aborted,
  // with failure_detail() saying so (review: it was passed on as a clean end).
  // The reads_per_turn-th read in a row that found its bytes without waiting lets the worker's
  // other connections run (a post) before it returns: a peer that keeps the socket full does
  // not hold the worker (review: an HTTP/2 or HTTP/1.1 flood delayed another client's request
  // by 11 s).
  asio::awaitable<std::pair<error_code, std::size_t>> read_some(asio::mutable_buffer buf);
  // How many reads that complete at once a connection makes before the others get a turn:
  // reads and writes that complete at once do not go through the scheduler, so without a
  // bound one busy connection could keep its worker from every other (also the byte relay's
  // pumps, relay.cpp, and the lingering close's reads).
  static constexpr int reads_per_turn = 8;
  // Like read_some, but returns asio::error::would_block instead of waiting for the socket.
  asio::awaitable<std::pair<error_code, std::size_t>> try_read_some(asio::mutable_buffer buf);
  // True when OpenSSL holds received bytes not yet returned (read-ahead): read before waiting.
  bool has_pending() const { return SSL_has_pending(ssl_.get()) == 1; }
  // Bytes OpenSSL has read off the socket so far (records whole, with their headers): what the
  // byte relay counts its turns in (detail::read_records).
  std::uint64_t received() const { return received_; }
  // Writes all of `buf` (as one record when it fits).
  asio::awaitable<error_code> write(asio::const_buffer buf);
  // Like write, but returns asio::error::would_block instead of waiting for the socket to take
  // more; the caller waits for writability and must then retry with the same `buf` (OpenSSL
  // requires it), until it returns anything else.
  asio::awaitable<error_code> try_write(asio::const_buffer buf);
  // One attempt, without a coroutine frame, for the relay's common case (the data or the room
  // is there). On would_block, `wants` says what OpenSSL waits for: read = input (wait for
  // readability); write = it must send first (a key update): use try_read_some/try_write,
  // which wait for that, with the same buffer.
  enum class want { nothing, read, write };
  struct attempt {
    error_code ec;
    std::size_t n = 0;
    want wants = want::nothing;
  };
  attempt read_now(asio::mutable_buffer buf);
  attempt write_now(asio::const_buffer buf);
  // Sends close_notify (our half of the TLS shutdown) without waiting for the peer's.
  asio::awaitable<error_code> shutdown_send();

  int failure_reason() const { return failure_reason_; }  // ERR_GET_REASON, 0 if none
  bool truncated() const { return truncated_; }           // the peer's stream ended inside a record
  const std::string& failure_detail() const { return failure_detail_; }

  // A read wait on this socket that someone else keeps queued (HTTP/1.1's watch on its client,
  // http_relay.cpp): a read that must wait joins it while it is queued, rather than queueing a
  // second wait behind it (net/shared_edge_wait.hpp says what that costs). Null: none. The
  // setter clears it before `watch` goes.
  void join_read_waits(net::awaitable_shared_edge_wait* watch) { read_watch_ = watch; }

 private:
  template <class Op>
  attempt step(Op op);
  attempt cut_short();  // an EOF inside a record
  template <class Op>
  asio::awaitable<std::pair<error_code, std::size_t>> drive(Op op, bool wait_for_input = true,
                                                            bool wait_for_output = true,
                                                            bool wait_if_drained = false);
  // The read of the connection's BIO (tls_stream.cpp): the socket BIO's own, then what it got
  // goes to the record cursor, received() and net::note_read.
  static int read_socket(BIO* bio, char* out, int size);
  static BIO_METHOD* socket_method();  // the connection's BIO, built once

  // Where the peer's bytes stand in TLS records (a 5-byte header, then its body), fed by
  // read_socket from everything OpenSSL reads (read-ahead included), to tell an EOF between
  // records from one inside a record.
  struct record_cursor {
    unsigned header_seen = 0;  // bytes of the current record's header read (0-4)
    unsigned length_high = 0;  // its length's first byte
    std::size_t body_left = 0;
    bool off = false;  // not TLS records (an SSLv2-format ClientHello): no judgement
    void feed(const unsigned char* p, std::size_t n);
    bool inside_record() const { return !off && (header_seen > 0 || body_left > 0); }
  };

  stream_socket& sock_;
  tls::ssl_ptr ssl_;
  record_cursor cursor_;
  bool truncated_ = false;
  int failure_reason_ = 0;
  std::string failure_detail_;
  bool drain_track_tried_ = false;  // net::track_read_drain was called (once per connection)
  int reads_in_a_row_ = 0;          // read_some calls that completed without waiting
  net::awaitable_shared_edge_wait* read_watch_ = nullptr;  // join_read_waits
  std::uint64_t received_ = 0;                             // received()
};

// What the operations above return when OpenSSL reports a TLS protocol failure (a malformed
// or unexpected record, an alert from the peer). Its message says "TLS protocol error" (not a
// borrowed errno's, which read "Permission denied"); failure_detail() holds OpenSSL's words.
error_code tls_protocol_error();

// Waits until the peer's first TLS record (its ClientHello) is wholly in `sock`'s receive
// buffer — or the peer closed, or sent something other than a handshake record, which the
// handshake then reports. Until then a connection holds no SSL object and no handshake buffers
// (~40 KiB): silent and slow-starting connections cost only their coroutine frames. A partial
// record is waited for with SO_RCVLOWAT (TCP), so 2,000 half-sent ClientHellos cost no wakeups.
// Returns an error only when the wait itself fails (operation_aborted: cancelled).
asio::awaitable<error_code> wait_for_first_record(stream_socket& sock);

// ec's message, followed by OpenSSL's detail when ec is a TLS protocol failure on `tls`.
std::string describe(const error_code& ec, const tls_stream& tls);

}  // namespace mtlsd::proxy
