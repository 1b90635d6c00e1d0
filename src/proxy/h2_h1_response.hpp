#pragma once
// What the HTTP/1.1 side of an HTTP/2 client's connection makes of an upstream's response for a
// stream (h2_h1_exchange.cpp): its head's fields and its chunked body's trailers, as HTTP/2
// fields.
#include <boost/beast/http/fields.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "h2_stream.hpp"

namespace mtlsd::proxy::h2 {

// Why a response head with `status`, interim or final, cannot go to an HTTP/2 client, or "": a
// status outside 100-599 (response_status_refusal, the HTTP/1.1 relay's rule: below 100 it
// would pass for an interim response here, to be waited past), or a 101 (HTTP/2 has none, RFC
// 9113 8.6, and the request asked for no upgrade). The caller answers 502.
std::string_view refused_status_for_http2(unsigned status);

// Why a final response head cannot go to an HTTP/2 client as it is, or "": a Transfer-Encoding
// beside a Content-Length, or one whose list does not parse or gives chunked parameters
// (unreadable_transfer_encoding; the HTTP/1.1 relay refuses these too: response_framing), or a
// transfer coding other than chunked, which HTTP/2 has no field for (the coded bytes would
// reach the client as the content). The caller answers 502.
std::string_view unframable_for_http2(const boost::beast::http::fields& fields);

// The response head's fields as the stream's response_headers (lower-case names): without the
// hop-by-hop ones, those the response's Connection names (returned in `named_by_connection`
// for its trailers), and its Content-Length, for which `length` (as Beast read it: "2, 2" is 2)
// is written once, but on a 204 (RFC 9110 8.6; nghttp2 resets a client's stream for either).
void take_response_head(const boost::beast::http::fields& fields, int status,
                        std::optional<std::uint64_t> length,
                        std::set<std::string>& named_by_connection, header_list& out);

// A chunked response's trailer section, as the stream's HTTP/2 trailers (RFC 9113 8.1):
// `fields` holds only it (the head's were cleared once taken: Beast's parser adds the trailer
// fields to the head's, next to any of the same name), without the fields kept_in_trailers
// leaves out nor those the response's Connection named. False when the section would not fit
// an HTTP/2 header block (RFC 9113 6.5.2's accounting, against the head limit).
bool take_trailers(const boost::beast::http::fields& fields,
                   const std::set<std::string>& named_by_connection, header_list& out);

}  // namespace mtlsd::proxy::h2
