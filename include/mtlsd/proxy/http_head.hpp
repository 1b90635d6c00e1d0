#pragma once
// The HTTP mode's rules for message heads, as pure functions on what the parser saw
// (http_framing.hpp) and on a head's raw bytes: what the relay does between parsing a head and
// writing it on.
// Kept apart from the relay's I/O so that unit tests and the fuzzer (fuzz/http_head_fuzz.cpp)
// reach them without sockets.
#include <span>
#include <string>
#include <string_view>

#include "mtlsd/proxy/http_framing.hpp"

namespace mtlsd::proxy {

struct request_head_verdict {
  int status = 0;             // 0: forward the request; else answer with this status and close
  std::string_view reason;    // the status line's text when refused
  std::string why;            // the refusal, for the log
  bool head = false;          // HEAD: the response has a length but no body
  bool upgrade = false;       // Upgrade requested (WebSocket; never h2c)
  std::string upgrade_offer;  // then: the protocols it offers (its Upgrade values, ", "-joined)
  bool keep_alive = true;
  bool send_continue = false;  // answer `Expect: 100-continue` here (a body follows)
};

// Judges a parsed request head (`req` is past it): refuses CONNECT (405), a Transfer-Encoding or
// Upgrade list that does not parse (400), a Transfer-Encoding whose last coding is not chunked
// (400: the body's end would be undefined, RFC 9112 6.3, the classic request-smuggling shape),
// one in an HTTP/1.0 request or with parameters on chunked (400, RFC 9112 6.1, 7.1), a coding
// besides chunked (501), a Content-Length above largest_length (400), and a missing (HTTP/1.1) or
// repeated Host (400, RFC 9112 3.2). `Expect: 100-continue` is answered by the relay, as Envoy
// does, and not forwarded (forward_request_head drops it); in an HTTP/1.0 request it is ignored
// (RFC 9110 10.1.1). Any other expectation gets 417, whatever the version.
request_head_verdict judge_request(const request_framing& req);

// An authority as a Host field, an absolute-form target or HTTP/2's :authority may carry it
// (RFC 9110 4.2.1, 7.2), read more strictly than nginx reads one: a host that is a bracketed IP
// literal (no zone identifier) or a name of letters, digits, ".", "-", "_" and "~" (no
// percent-encoding or sub-delimiters: with "#", "\", "@", "," or "%" an upstream, or a check
// on the name, could read another host), then at most a port of digits up to 65535.
bool valid_authority(std::string_view authority);

// The host an authority (a Host field, an absolute-form target's, HTTP/2's :authority) names:
// without its port, an IPv6 literal's brackets or a fully qualified name's final dot.
std::string_view authority_host(std::string_view authority);
// Whether `authority` names `host` (a TLS server name), case-insensitively.
bool authority_is_host(std::string_view authority, std::string_view host);

// The 421 for a request whose authority is not `server_name` (http_forwarding::server_name);
// "" when it is, or when no server name binds the connection.
std::string misdirected(std::string_view authority, std::string_view server_name);

// Why a response head with `status` must not be forwarded, or "": RFC 9110 15 has statuses
// 1xx to 5xx, and Envoy refuses any other (nginx relays it): a client may take 099 for an
// interim response and wait for another, and no status class holds either. HTTP/1.1 clients
// (response_head_refusal) and HTTP/2 clients of an HTTP/1.1 upstream (h2_h1_exchange.cpp) alike.
std::string_view response_status_refusal(unsigned status);

// Why the upstream failed, when a response must not be forwarded at all; "" to forward it. A
// status outside 100-599 is refused (response_status_refusal). A 101
// opens a tunnel that mtlsd no longer parses, so it is taken only as RFC 9110 7.8 has a server
// send it: to a request that asked for an upgrade (`upgrade_offer`: the protocols it offered),
// with `Connection: upgrade` and an Upgrade field naming only offered protocols, as Envoy
// checks, and never h2c. Without that check, an upstream endpoint that can be made to answer a bare
// 101 while still speaking HTTP would let the client send it further requests past every
// X-Forwarded-* field mtlsd sets. Transfer-Encoding next to Content-Length is refused by the parser
// (response_framing, RFC 9112 6.3).
std::string_view response_head_refusal(const response_framing& res, bool upgrade_requested,
                                       std::string_view upgrade_offer);

// Heads travel as their bytes came, with these edits on a whole head (it ends with its empty
// line):
//
// Replaces each obs-fold (CRLF followed by SP or HTAB) in the field lines with spaces, in place:
// what RFC 9112 5.2 asks of a proxy that does not refuse such a message. The head keeps its
// length. Whitespace right after the start line is no fold, and is left for the parser to refuse.
// Returns whether there was any.
bool unfold_head(std::span<char> head);
// Copies `head` into `out` without the fields named in `drop` (lower case; any spelling
// same_field_name accepts) and without the empty line: the caller appends its own fields (each
// ending with CRLF), then the empty line.
void copy_head_except(std::string_view head, std::span<const std::string_view> drop,
                      std::string& out);

}  // namespace mtlsd::proxy
