#pragma once
// The HTTP mode's rules for message heads, as pure functions on parsed Beast messages: what
// http_relay.cpp does between parsing a head and writing it on. Kept apart from the relay's I/O
// so that unit tests and the fuzzer (fuzz/http_head_fuzz.cpp) reach them without sockets.
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <string>
#include <string_view>

#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::proxy {

using http_request_head = boost::beast::http::request<boost::beast::http::buffer_body>;
using http_response_head = boost::beast::http::response<boost::beast::http::buffer_body>;

struct request_head_verdict {
  int status = 0;           // 0: forward the request; else answer with this status and close
  std::string_view reason;  // the status line's text when refused
  std::string why;          // the refusal, for the log
  bool head = false;        // HEAD: the response has a length but no body
  bool upgrade = false;     // Upgrade requested (WebSocket, h2c)
  bool keep_alive = true;
  bool send_continue = false;  // answer `Expect: 100-continue` here (a body follows)
};

// Checks and rewrites a request head before it goes upstream: refuses CONNECT (405) and a
// Transfer-Encoding whose last coding is not chunked (400: the body's end would be undefined,
// RFC 9112 6.3, the classic request-smuggling shape); replaces X-Forwarded-Client-Cert as
// `xfcc` says; removes `Expect: 100-continue` (answered by the relay, as Envoy does). `chunked`
// and `body_done` come from the parser.
request_head_verdict prepare_request_head(http_request_head& msg, bool chunked, bool body_done,
                                          const xfcc_policy& xfcc);

// Checks a response head before it goes to the client: "" to send it (a Content-Length next to
// a Transfer-Encoding is dropped: Transfer-Encoding wins, RFC 9112 6.3), else why the upstream
// failed (a 101 to a request that asked for no upgrade).
std::string prepare_response_head(http_response_head& msg, bool upgrade_requested);

}  // namespace mtlsd::proxy
