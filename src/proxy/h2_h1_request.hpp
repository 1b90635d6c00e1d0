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

// The end of a chunked request body: the last chunk, then the HTTP/2 client's trailers that
// kept_in_request_trailers (http_forwarding.hpp, the HTTP/1.1 client's rule too) keeps, as its
// trailer section. connection::header drops X-Forwarded-* trailers as they arrive already; this
// does not rely on it. A body with a Content-Length has nowhere to carry them in HTTP/1.1: they
// are dropped then.
std::string last_chunk(const header_list& trailers);

}  // namespace mtlsd::proxy::h2
