#pragma once
// The HTTP/1.1-aware relay of a server-mode listener with an `http:` block. It sits where the
// byte relay (relay.hpp) sits, between the verified TLS client and one upstream connection, and
// parses each message with Boost.Beast so it can rewrite X-Forwarded-Client-Cert (xfcc.hpp):
//
// - keep-alive and pipelining: one request at a time, in order, on one upstream connection;
// - bytes pass as they came: the parser only finds where a message ends (http_framing.hpp).
//   A request head goes up with the X-Forwarded-* edits (http_forwarding.hpp); a response head
//   goes down untouched, unless shutdown adds `Connection: close`; bodies, chunk extensions and
//   trailers pass as sent. A request with an obs-fold is refused (400); a response's is unfolded;
// - bodies are streamed, never buffered whole: each direction has one read buffer, bounded by the
//   64 KiB head limit plus one body chunk, and writes from it what the parser has passed;
// - the request body and the response run concurrently (an upstream may answer before it has
//   read the whole body, or stream its answer while reading); an answer before the body ended is
//   the connection's last, and result.tls_peer_sending tells the caller to close by lingering;
// - `Expect: 100-continue` is answered here and not forwarded (Envoy's default);
// - `Upgrade` (WebSocket; never h2c, see request_head_view::upgrade): after the upstream's 101 both
// directions become the plain byte
//   relay, bytes already read included;
// - a malformed request gets 400 (431 for an oversized head) and the connection closes; an
//   upstream that fails before answering gets the client a 502.
#include <boost/asio/awaitable.hpp>

#include "mtlsd/proxy/endpoint.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/relay.hpp"
#include "mtlsd/proxy/session_registry.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::proxy {

// Limits, exposed for tests and documentation.
inline constexpr std::uint32_t http_head_limit = 64 * 1024;  // request or response line + fields
// The unit of body streaming: the read buffers' room beyond a head, and the pieces the HTTP/2 to
// HTTP/1.1 exchange copies (a little under one TLS record, so that a piece with its chunk framing
// still travels as a single record).
inline constexpr std::size_t http_body_chunk = 16 * 1024 - 64;
// Interim (1xx) responses an upstream may send before its final one; past it the exchange
// fails (502 when nothing was sent yet). Each costs a parse and, to an HTTP/1.0 client, nothing
// is written, so without a bound an upstream sending them endlessly held a request (and its
// worker's time) for ever (review).
inline constexpr int http_interim_limit = 32;

// Relays HTTP/1.1 until either side closes or a message is unusable. Never throws for network
// or protocol errors: they end the connection and land in `result`. Each request gets
// `forwarding`'s headers and, once its exchange ended, is reported to `sink` (when set). When
// `control` (may be null) is drained, the connection ends after the response in progress.
asio::awaitable<void> http_relay(tls_stream& tls, stream_socket& tls_socket, stream_socket& plain,
                                 http_forwarding forwarding, idle_deadline& clock,
                                 relay_result& result, http_request_sink sink,
                                 session_control* control = nullptr);

// XFCC only: no X-Forwarded-For/-Proto, no reports.
inline asio::awaitable<void> http_relay(tls_stream& tls, stream_socket& tls_socket,
                                        stream_socket& plain, const xfcc_policy& xfcc,
                                        idle_deadline& clock, relay_result& result) {
  return http_relay(tls, tls_socket, plain, http_forwarding{xfcc, {}, false, false, {}, {}}, clock,
                    result, {});
}

}  // namespace mtlsd::proxy
