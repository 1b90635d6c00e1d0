#pragma once
// What the HTTP/1.1 side of an HTTP/2 client's connection writes upstream for a stream
// (h2_h1_exchange.cpp): the request head translated from the stream's HTTP/2 fields, and the
// last chunk of a chunked body with the client's trailers.
#include <string>
#include <string_view>

#include "h2_stream.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"

namespace mtlsd::proxy::h2 {

// The HTTP/1.1 request head for stream `s` (its request fields are taken); `chunked` says how
// its body is framed.
std::string request_head(stream& s, const http_forwarding& fwd, bool& chunked);

// Whether a field may travel in HTTP/1.1 trailers (RFC 9110 6.5.1): not connection-specific,
// framing or routing ones. `lower_name` is lower-case. Both directions (take_trailers too).
bool kept_in_trailers(std::string_view lower_name, std::string_view value);
// The same for a client's request trailers, which also never carry a field named like one mtlsd
// tells the upstream (is_forwarding_field: X-Forwarded-Client-Cert, -For, -Proto, `_` as `-`).
// connection::header drops those as they arrive already; this does not rely on it.
bool kept_in_request_trailers(std::string_view lower_name, std::string_view value);

// The end of a chunked request body: the last chunk, then the HTTP/2 client's trailers that
// kept_in_request_trailers keeps, as its trailer section. A body with a Content-Length has
// nowhere to carry them in HTTP/1.1: they are dropped then.
std::string last_chunk(const header_list& trailers);

}  // namespace mtlsd::proxy::h2
