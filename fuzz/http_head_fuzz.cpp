// The HTTP mode's head handling (http_framing.hpp, http_head.hpp, forward_request_head) as the
// relay runs it on raw heads. Input: a policy byte, a request, "\0\0\0\0", a response.
// Properties: a request that is forwarded, edited, parses again with the same method, target,
// body framing, keep-alive and upgrade (no request smuggled in by the rewrite) and exactly the
// X-Forwarded-* fields the policy asks for, counted in every spelling the product reads as theirs
// (same_field_name: any case, '_' as '-'); no Expect: 100-continue goes upstream; a refusal has
// a status and a reason. Only a 101 response head is ever refused, and one that is taken
// answers an upgrade with Upgrade and Connection: upgrade; unfolded, a head keeps its length
// and has no fold left; with Connection: close it still parses and says close; the body's
// framing never claims more bytes than it was given; a chunked request body leaves with
// canonical chunk headers and the same data.
#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "forwarding_fields.hpp"
#include "fuzz_support.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

using namespace mtlsd;
using fuzz::wire_fields;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// A forwarded head, parsed again by Beast's own message parser: what the upstream would read.
struct reparsed {
  http::request_parser<http::empty_body> p;
  bool ok = false;
  explicit reparsed(std::string_view head) {
    p.header_limit(2 * proxy::http_head_limit);  // ours were added to a head within the limit
    p.body_limit(boost::none);                   // the relay sets none either
    beast::error_code ec;
    ok = p.put(boost::asio::buffer(head.data(), head.size()), ec) == head.size() && !ec &&
         p.is_header_done();
  }
};

// Whether a Connection field of the (whole, unfolded) request head names `lower`, in any
// spelling: forward_request_head drops the fields it names.
bool named_by_connection(std::string_view head, std::string_view lower) {
  reparsed client(head);
  if (!client.ok) return false;
  for (const auto& field : client.p.get())
    if (field.name() == http::field::connection)
      for (const auto& token : http::token_list(field.value()))
        if (proxy::same_field_name({token.data(), token.size()}, lower)) return true;
  return false;
}

// The data of a whole chunked body, as Beast's own parser reads it (nullopt: not whole, or
// malformed).
std::optional<std::string> chunked_data(std::string_view chunked) {
  http::request_parser<http::string_body> p;
  p.body_limit(boost::none);
  const std::string message =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(chunked);
  beast::error_code ec;
  p.eager(true);
  if (p.put(boost::asio::buffer(message), ec) != message.size() || ec || !p.is_done())
    return std::nullopt;
  return p.get().body();
}

// Whether every chunk header of a chunked body, as far as it goes, is a size in lower-case hex
// without leading zero or extension; `last` says whether the walk reached the last chunk ("0";
// the trailers after it are not looked at).
bool canonical_chunks(std::string_view chunked, bool& last) {
  last = false;
  for (;;) {
    const auto eol = chunked.find("\r\n");
    if (eol == std::string_view::npos) return true;  // the rest is still to come
    if (eol == 0 || eol > 16) return false;
    const auto size_text = chunked.substr(0, eol);
    if (size_text.size() > 1 && size_text[0] == '0') return false;
    std::uint64_t size = 0;
    for (const char c : size_text) {
      const char* digit = std::strchr("0123456789abcdef", c);
      if (c == '\0' || digit == nullptr) return false;
      size = size * 16 + static_cast<std::uint64_t>(digit - "0123456789abcdef");
    }
    if (size == 0) return last = true;
    if (chunked.size() < eol + 2 + size + 2) return true;
    chunked.remove_prefix(eol + 2 + size + 2);
  }
}

// A body the relay parsed whole in one put, walked again as forward_body walks it when the
// client's bytes come `piece` at a time (put_body, given all that is unparsed at each step): it
// must end the same, having claimed the same bytes and written the same rewritten framing. (A
// review found Boost 1.81's Beast aborting a debug build on "0\r\n" then one byte: put_body
// keeps it from that call.)
void body_in_pieces(const std::string& head, std::string_view body, std::size_t piece,
                    std::size_t whole_claimed, const std::string& whole_rewritten) {
  if (body.size() > 4096) return;  // each step parses what is unparsed again: bounded
  proxy::request_framing req;
  req.header_limit(proxy::http_head_limit);
  req.body_limit(boost::none);
  req.rewrite_chunks();
  beast::error_code ec;
  req.put(boost::asio::buffer(head), ec);
  if (ec || req.is_done()) return;
  req.eager(true);
  std::string rewritten;
  std::size_t claimed = 0, arrived = 0;
  while (!req.is_done() && arrived < body.size()) {
    arrived = std::min(body.size(), arrived + piece);
    claimed += req.put_body(body.substr(claimed, arrived - claimed), ec);
    fuzz::check(!ec, "a body that parsed whole parses in pieces");
    rewritten += req.rewritten();
    req.rewritten().clear();
  }
  fuzz::check(req.is_done() && claimed == whole_claimed, "in pieces it ends where it did whole");
  if (req.rewrites_body()) fuzz::check(rewritten == whole_rewritten, "and is rewritten the same");
}

void request_part(std::uint8_t policy_byte, std::string_view bytes) {
  // As inbound::whole_head: the head up to its first empty line, unfolded, parsed in one put.
  const auto end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos || end + 4 > proxy::http_head_limit) return;
  std::string head(bytes.substr(0, end + 4));
  if (proxy::unfold_head(head)) return;  // the relay refuses a folded request (400)
  proxy::request_framing req;
  req.header_limit(proxy::http_head_limit);
  req.body_limit(boost::none);
  req.rewrite_chunks();  // as the relay does
  beast::error_code ec;
  const auto consumed = req.put(boost::asio::buffer(head), ec);
  if (ec) return;
  fuzz::check(consumed == head.size() && req.is_header_done(), "the whole head, nothing more");

  proxy::http_forwarding f;
  f.xfcc.what = static_cast<proxy::xfcc_policy::action>(policy_byte % 4);
  f.xfcc.element = (policy_byte & 4) ? "By=spiffe://td/us;Hash=ab;URI=spiffe://td/client" : "";
  f.client_ip = (policy_byte & 16) ? "192.0.2.1" : "";
  f.x_forwarded_for = (policy_byte & 32) != 0;
  f.x_forwarded_proto = (policy_byte & 64) != 0;

  const auto v = proxy::judge_request(req);
  if (v.status != 0) {
    fuzz::check((v.status == 400 || v.status == 405 || v.status == 417 || v.status == 501) &&
                    !v.reason.empty() && !v.why.empty(),
                "a refusal has a status, a reason and a cause");
    return;
  }
  const auto& seen = req.head();
  fuzz::check(seen.method != http::verb::connect, "CONNECT is never forwarded");
  std::string out;
  proxy::forward_request_head(head, seen, f, out);
  reparsed again(out);
  fuzz::check(again.ok, "the forwarded head parses again");
  const auto& m = again.p.get();
  fuzz::check(m.method_string() == seen.method_text && m.target() == proxy::origin_form(seen),
              "method kept, target kept or made origin-form");
  // What reaches the upstream is a plain path (or "*"), in the client's HTTP version, and a
  // Host of host-name characters only (no "#", "\\", "@", "%" or "," to read another host in).
  const std::string_view target(m.target().data(), m.target().size());
  fuzz::check((!target.empty() && target[0] == '/') || target == "*",
              "the upstream gets origin-form or *");
  fuzz::check(again.p.get().version() == (seen.version < 11 ? 10 : 11), "the version kept");
  const auto host = m[http::field::host];
  fuzz::check(std::all_of(host.begin(), host.end(),
                          [](char c) {
                            return std::isalnum(static_cast<unsigned char>(c)) ||
                                   (c != '\0' && std::strchr(".-_~:[]", c) != nullptr);
                          }),
              "a Host of host-name characters");
  // One Host upstream, and the one the access log names: an absolute-form target's authority.
  fuzz::check(
      m.count(http::field::host) == (seen.host_fields > 0 || seen.absolute_form ? 1u : 0u) &&
          m[http::field::host] == proxy::request_authority(seen),
      "one Host, the request's authority");
  // No smuggling through the rewrite: the upstream frames the body as we do. An upgrade only
  // as judged (never h2c).
  fuzz::check(again.p.chunked() == req.chunked() &&
                  again.p.content_length() == req.content_length() &&
                  again.p.keep_alive() == req.keep_alive() && again.p.upgrade() == seen.upgrade,
              "the same framing, keep-alive and upgrade upstream");
  fuzz::check(m.count(http::field::content_length) <= 1 &&
                  m.count(http::field::transfer_encoding) <= 1 &&
                  m.count(http::field::keep_alive) == 0 && m.count(http::field::te) == 0 &&
                  m.count(http::field::proxy_connection) == 0,
              "one framing field, no hop-by-hop field from the client");
  fuzz::check(!beast::iequals(m[http::field::expect], "100-continue"),
              "Expect: 100-continue is answered here, not forwarded");

  // Exactly the XFCC the policy asks for, counted in every spelling the request's were
  // (X-Forwarded-Client_Cert too): `keep` passes each as the client spelled it, the others
  // must leave none of them.
  std::vector<std::string> got;
  for (const auto& field : m)
    if (proxy::same_field_name(field.name_string(), proxy::xfcc_header))
      got.emplace_back(field.value());
  fuzz::check_xfcc(
      got, f.xfcc,
      [&] {  // unless the client's Connection names it: a hop-by-hop field then (RFC 9110 7.6.1)
        return got.size() == (named_by_connection(head, proxy::xfcc_header) ? 0 : seen.xfcc.size());
      },
      [&] {
        const auto want = proxy::rewrite_xfcc(f.xfcc, seen.xfcc);
        return want ? got.size() == 1 && got[0] == *want : got.empty();
      });
  // X-Forwarded-For and -Proto counted the same way, in every spelling (X_Forwarded_For,
  // x-forwarded-PROTO): with the policy on, the client's must all be gone into ours; off, they
  // pass as sent, unless the client's Connection names them (hop-by-hop: dropped).
  fuzz::check_xff_and_xfp(wire_fields(out), wire_fields(head), f,
                          [&](std::string_view lower) { return named_by_connection(head, lower); });

  // The body, as forward_body walks it: never more bytes than it was given; a chunked one
  // leaves rewritten, and the upstream reads the client's data from it.
  if (req.is_done()) return;
  req.eager(true);
  const auto body = bytes.substr(end + 4);
  const auto claimed = req.put(boost::asio::buffer(body.data(), body.size()), ec);
  fuzz::check(claimed <= body.size(), "claims only bytes it was given");
  if (!ec && req.is_done())
    for (const std::size_t piece : {std::size_t{1}, std::size_t{3}})
      body_in_pieces(head, body, piece, claimed, req.rewritten());
  if (!req.rewrites_body()) return;
  bool last = false;
  fuzz::check(canonical_chunks(req.rewritten(), last),
              "each chunk header is a bare lower-case size");
  if (ec || !req.is_done()) {
    // Refused or not whole yet: what the relay writes up holds no last chunk, which an upstream
    // could take for the end of a body mtlsd answered 400 (the diff review's finding).
    fuzz::check(!last, "no last chunk before the message parsed whole");
    return;
  }
  const auto client_data = chunked_data(body.substr(0, claimed));
  fuzz::check(client_data.has_value(), "Beast reads again the chunked body it took");
  fuzz::check(last, "a whole body ends with its last chunk");
  fuzz::check(chunked_data(req.rewritten()) == client_data, "the upstream reads the same data");
}

// What the relay does with a response: the head parsed whole, the body's framing walked.
struct framed_response {
  std::uint64_t payload = 0;
  proxy::response_framing res;
  std::size_t head_size = 0;
  explicit framed_response(std::string_view bytes, bool head_request = false) {
    res.count_body_in(payload);
    res.header_limit(proxy::http_head_limit);
    res.body_limit(boost::none);
    if (head_request) res.skip(true);
    beast::error_code ec;
    head_size = res.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec || !res.is_header_done()) head_size = 0;
  }
};

void response_part(bool upgrade, std::string_view bytes) {
  // As inbound::whole_head: up to the first empty line, unfolded, then parsed in one put.
  const auto end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos || end + 4 > proxy::http_head_limit) return;
  std::string head(bytes.substr(0, end + 4));
  proxy::unfold_head(head);
  fuzz::check(head.size() == end + 4, "unfolding keeps the head's length");
  framed_response first(head + std::string(bytes.substr(end + 4)));
  if (first.head_size == 0) return;
  fuzz::check(first.head_size == head.size(), "the head ends at its first empty line");
  fuzz::check(head.find("\r\n ") == std::string::npos && head.find("\r\n\t") == std::string::npos,
              "no obs-fold left in a head that parses");
  const auto status = first.res.status();
  if (!proxy::response_head_refusal(first.res, upgrade, upgrade ? "websocket" : "").empty()) {
    fuzz::check(status == 101 || status < 100 || status > 599,
                "only a 101, or a status outside 100-599, is refused");
    return;
  }
  if (status == 101)
    fuzz::check(upgrade && first.res.connection_upgrade() && !first.res.switching_to().empty(),
                "a 101 taken answers an upgrade with Upgrade and Connection: upgrade");
  std::string last;
  proxy::forward_response_head(head, "close", last);
  framed_response closing(last);
  fuzz::check(closing.head_size == last.size() && closing.res.status() == status,
              "the head with Connection: close parses, status kept");
  fuzz::check(!closing.res.keep_alive(), "and says the connection closes");
  if (status != 101)
    fuzz::check(!closing.res.hop_by_hop(), "and carries no hop-by-hop field of the upstream's");

  // The body: what put claims never runs past what it was given.
  if (first.res.is_done()) return;
  first.res.eager(true);
  const auto body = bytes.substr(end + 4);
  beast::error_code ec;
  const auto claimed = first.res.put(boost::asio::buffer(body.data(), body.size()), ec);
  fuzz::check(claimed <= body.size(), "claims only bytes it was given");
  fuzz::check(first.payload <= claimed, "payload within what was claimed");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto split = in.find(std::string_view("\0\0\0\0", 4));
  request_part(data[0], in.substr(0, split));
  if (split != std::string_view::npos) response_part((data[0] & 8) != 0, in.substr(split + 4));
  return 0;
}
