// An HTTP/2 client's request as the HTTP/1.1 side writes it upstream (h2_h1_request.hpp:
// request_head, last_chunk), from fields nghttp2 lets through. Input: a flags byte (1 END_STREAM,
// 2 a body, 4 X-Forwarded-For, 8 X-Forwarded-Proto, 16 and 32 the XFCC policy: neither remove,
// 16 set, 32 keep, both append; 64 an empty element to append, 128 no client address), then
// records separated by 0x01: the method, the path, the authority, then "name:value" fields until
// a record "--", then trailer fields the same way.
// Properties: the head parses whole as HTTP/1.1 (Beast) with the stream's method and target and
// exactly one Host, the stream's authority; its body framing is exactly one of Content-Length (the
// client's number, canonical) or chunked, as request_head said; no connection-specific field
// (Connection, Keep-Alive, Proxy-Connection, TE, Upgrade, a second Transfer-Encoding) reaches the
// upstream and Cookie is one field; X-Forwarded-* are as the policy asks, counted in every spelling
// the product reads as theirs (same_field_name: any case, '_' as '-'); the last chunk with the
// trailers parses as the end of a chunked body, carrying no framing or routing field and no
// X-Forwarded-* one in any spelling (last_chunk drops them itself, whatever connection::header let
// through).
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "forwarding_fields.hpp"
#include "fuzz_support.hpp"
#include "h2_h1_request.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/xfcc.hpp"

using namespace mtlsd;
using fuzz::as_sent, fuzz::spelled, fuzz::trimmed, fuzz::wire_fields;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::vector<std::string_view> records(std::string_view in) {
  std::vector<std::string_view> out;
  for (std::size_t at = 0; at <= in.size();) {
    const std::size_t end = std::min(in.find('\x01', at), in.size());
    out.push_back(in.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

const std::uint8_t* bytes(std::string_view s) {
  return reinterpret_cast<const std::uint8_t*>(s.data());
}

// A regular field as nghttp2's HTTP messaging checks let it into a stream: a lower-case token
// name, a value without CR, LF or NUL, and Content-Length once, digits only.
bool admitted_field(std::string_view name, std::string_view value, bool& seen_length) {
  if (name.empty() || name.front() == ':') return false;
  if (nghttp2_check_header_name(bytes(name), name.size()) == 0 ||
      nghttp2_check_header_value(bytes(value), value.size()) == 0)
    return false;
  if (name == "content-length") {
    if (seen_length || value.empty() || value.find_first_not_of("0123456789") != value.npos ||
        value.size() > 18)
      return false;
    seen_length = true;
  }
  return true;
}

proxy::header_list fields_of(const std::vector<std::string_view>& recs, std::size_t& at,
                             bool& seen_length) {
  proxy::header_list out;
  for (; at < recs.size() && recs[at] != "--"; ++at) {
    const std::size_t colon = recs[at].find(':', 1);
    if (colon == std::string_view::npos) continue;
    const std::string_view name = recs[at].substr(0, colon), value = recs[at].substr(colon + 1);
    if (admitted_field(name, value, seen_length)) out.emplace_back(name, value);
  }
  ++at;  // past "--"
  return out;
}

// Fields named `name` in any case: how an HTTP/1.1 parser finds the framing and connection fields
// (a `_` spelling frames nothing; the X-Forwarded-* checks use `spelled`).
std::size_t count(const http::fields& f, std::string_view name) {
  std::size_t n = 0;
  for (const auto& field : f)
    if (beast::iequals(field.name_string(), name)) ++n;
  return n;
}

bool forwarding_named(std::string_view name) {
  return proxy::same_field_name(name, proxy::xfcc_header) ||
         proxy::same_field_name(name, proxy::xff_header) ||
         proxy::same_field_name(name, proxy::xfp_header);
}

// The X-Forwarded-* fields of the head upstream, against what the client sent (`client`, the
// stream's fields before request_head took them) and the policy.
void check_forwarding(std::string_view head, const proxy::header_list& client,
                      const proxy::http_forwarding& fwd) {
  const proxy::header_list req = wire_fields(head);
  const auto xfcc = spelled(req, proxy::xfcc_header);
  fuzz::check_xfcc(
      xfcc, fwd.xfcc, [&] { return xfcc == as_sent(client, proxy::xfcc_header); },
      [&] {
        std::string want;  // the client's non-empty values, then ours, joined with ','
        for (const auto& v : spelled(client, proxy::xfcc_header))
          if (!v.empty()) want += (want.empty() ? "" : ",") + v;
        if (!fwd.xfcc.element.empty()) want += (want.empty() ? "" : ",") + fwd.xfcc.element;
        return want.empty() ? xfcc.empty() : xfcc.size() == 1 && xfcc[0] == trimmed(want);
      });
  fuzz::check_xff_and_xfp(req, client, fwd, [](std::string_view) { return false; });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static boost::asio::io_context io;
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  const auto recs = records(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  if (recs.size() < 3) return 0;
  const std::string_view method = recs[0], path = recs[1], authority = recs[2];
  if (nghttp2_check_method(bytes(method), method.size()) == 0 ||
      nghttp2_check_path(bytes(path), path.size()) == 0 || path.empty() ||
      nghttp2_check_authority(bytes(authority), authority.size()) == 0)
    return 0;
  std::size_t at = 3;
  bool seen_length = false;
  proxy::h2::stream s(1, io.get_executor());
  s.method = method;
  s.path = path;
  s.authority = authority;
  s.request_headers = fields_of(recs, at, seen_length);
  bool trailer_length = false;
  s.request_trailers = fields_of(recs, at, trailer_length);
  s.request_end = flags & 1;
  if (flags & 2) s.request_body.append(reinterpret_cast<const std::uint8_t*>("x"), 1);
  std::string client_length;
  for (const auto& [name, value] : s.request_headers)
    if (name == "content-length") client_length = value;

  const proxy::header_list client = s.request_headers;

  using action = proxy::xfcc_policy::action;
  proxy::http_forwarding fwd;
  fwd.x_forwarded_for = flags & 4;
  fwd.x_forwarded_proto = flags & 8;
  fwd.client_ip = (flags & 128) ? "" : "192.0.2.7";
  static constexpr action policies[] = {action::remove, action::set, action::keep, action::append};
  fwd.xfcc.what = policies[(flags >> 4) & 3];
  // make_xfcc_policy never sets an empty element (it removes instead); it may append one.
  if (!(fwd.xfcc.what == action::append && (flags & 64)))
    fwd.xfcc.element = "Hash=00;URI=spiffe://example.org/a";

  bool chunked = false;
  const std::string head = proxy::h2::request_head(s, fwd, chunked);
  fuzz::check(s.request_headers.empty(), "the stream's fields were taken");

  http::request_parser<http::empty_body> p;
  p.header_limit(1 << 20);
  p.body_limit(boost::none);
  beast::error_code ec;
  const std::size_t used = p.put(boost::asio::buffer(head), ec);
  fuzz::check(!ec && used == head.size() && p.is_header_done(),
              "the head parses whole as HTTP/1.1");
  const auto& req = p.get();
  fuzz::check(req.method_string() == method, "the method is the stream's");
  fuzz::check(req.target() == path, "the target is the stream's path");
  fuzz::check(count(req, "host") == 1 && req["host"] == authority,
              "one Host: the stream's authority");
  fuzz::check(count(req, "transfer-encoding") == (chunked ? 1 : 0),
              "Transfer-Encoding only for a chunked body, once");
  fuzz::check(!chunked || req["transfer-encoding"] == "chunked", "chunked, nothing else");
  if (!client_length.empty()) {
    fuzz::check(!chunked && count(req, "content-length") == 1, "the client's length frames it");
    const std::size_t first = client_length.find_first_not_of('0');
    fuzz::check(req["content-length"] == (first == std::string::npos
                                              ? std::string_view("0")
                                              : std::string_view(client_length).substr(first)),
                "the same length, canonical");
  } else {
    fuzz::check(count(req, "content-length") == 0, "no length the client did not give");
  }
  for (const char* name : {"connection", "keep-alive", "proxy-connection", "te", "upgrade"})
    fuzz::check(count(req, name) == 0, "no connection-specific field goes upstream");
  fuzz::check(count(req, "cookie") <= 1, "Cookie is one field");
  check_forwarding(head, client, fwd);

  const std::string end = proxy::h2::last_chunk(s.request_trailers);
  http::request_parser<http::string_body> body;
  body.eager(true);
  const std::string message = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + end;
  fuzz::check(body.put(boost::asio::buffer(message), ec) == message.size() && !ec &&
                  body.is_done() && body.get().body().empty(),
              "the last chunk ends a chunked body");
  // Beast adds the trailers to the head's fields, which hold the one Transfer-Encoding.
  for (const std::string_view name :
       {"content-length", "transfer-encoding", "host", "te", "connection", "upgrade", "keep-alive"})
    fuzz::check(count(body.get(), name) == (name == "transfer-encoding" ? 1U : 0U),
                "no framing or routing field in the trailers");
  for (const auto& field : body.get())
    fuzz::check(!forwarding_named(field.name_string()),
                "no X-Forwarded-* field in any spelling in the trailers");
  return 0;
}
