#include "mtlsd/proxy/http_forwarding.hpp"

#include <algorithm>
#include <boost/beast/http/rfc7230.hpp>
#include <charconv>
#include <span>
#include <string>
#include <vector>

#include "mtlsd/proxy/http_list.hpp"

namespace mtlsd::proxy {

namespace http = boost::beast::http;

namespace {

// The hop mtlsd appends to X-Forwarded-For. A client over a unix socket has no address, and the
// list is still ours to end: a client's own last entry must never pass for the hop an upstream
// trusts ("unknown", as RFC 7239 names an unknown node).
std::string_view xff_hop(const http_forwarding& f) {
  return f.client_ip.empty() ? std::string_view("unknown") : std::string_view(f.client_ip);
}

// Appends the members of one X-Forwarded-For value to the list that begins at out[start],
// skipping empty ones ("a, , b" or a trailing comma helps no reader).
void append_xff_element(std::string& out, std::size_t start, std::string_view value) {
  for_each_list_member(value, [&](std::string_view member) {
    if (out.size() > start) out.append(", ");
    out.append(member);
  });
}

}  // namespace

void apply_forwarding(header_list& headers, const http_forwarding& f) {
  // XFCC: the values the client sent, then the policy's verdict.
  if (f.xfcc.what != xfcc_policy::action::keep) {
    std::vector<std::string_view> existing;
    for (const auto& [name, value] : headers)
      if (same_field_name(name, xfcc_header)) existing.push_back(value);
    auto replacement = rewrite_xfcc(f.xfcc, existing);
    std::string value = replacement ? std::move(*replacement) : std::string();
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xfcc_header); });
    if (replacement) headers.emplace_back(std::string(xfcc_header), std::move(value));
  }
  if (f.x_forwarded_for) {
    // Several X-Forwarded-For lines are one list (RFC 9110 5.3): joined, then ours appended.
    std::string joined;
    for (const auto& [name, value] : headers)
      if (same_field_name(name, xff_header)) append_xff_element(joined, 0, value);
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xff_header); });
    append_xff_element(joined, 0, xff_hop(f));
    headers.emplace_back(std::string(xff_header), std::move(joined));
  }
  if (f.x_forwarded_proto) {
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xfp_header); });
    headers.emplace_back(std::string(xfp_header), "https");
  }
}

namespace {

// The fields a client's Connection names besides close, keep-alive and upgrade (RFC 9110 7.6.1:
// hop-by-hop, not forwarded), lower case. Host and the framing fields stay: the head is judged
// with them, and the framing is rewritten anyway.
std::vector<std::string> named_by_connection(std::string_view head) {
  std::vector<std::string> names;
  for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;) {
    const std::size_t start = at + 2, eol = head.find("\r\n", start);
    if (eol == std::string_view::npos || eol == start) break;  // the empty line: the end
    const std::string_view line = head.substr(start, eol - start);
    at = eol;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !same_field_name(line.substr(0, colon), "connection"))
      continue;
    const std::string_view value = line.substr(colon + 1);
    for (const auto& token : http::token_list{{value.data(), value.size()}}) {
      std::string name(token.data(), token.size());
      for (char& c : name)  // spelled as same_field_name reads a field's name
        c = c == '_' ? '-' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      if (name != "close" && name != "keep-alive" && name != "upgrade" && name != "host" &&
          name != "content-length" && name != "transfer-encoding")
        names.push_back(std::move(name));
    }
  }
  return names;
}

}  // namespace

void forward_response_head(std::string_view head, std::string_view connection, std::string& out,
                           bool unchunked) {
  const std::vector<std::string> named = named_by_connection(head);
  std::vector<std::string_view> drop = {"connection", "keep-alive", "proxy-connection", "te",
                                        "upgrade"};
  if (unchunked) drop.push_back("transfer-encoding");
  drop.insert(drop.end(), named.begin(), named.end());
  copy_head_except(head, drop, out);
  if (!connection.empty()) out.append("Connection: ").append(connection).append("\r\n");
  out.append("\r\n");
}

void forward_request_head(std::string_view head, const request_head_view& seen,
                          const http_forwarding& f, std::string& out) {
  using action = xfcc_policy::action;
  const bool xfcc = f.xfcc.what != action::keep;
  const bool xff_too = f.x_forwarded_for;
  // What mtlsd writes itself rather than pass on as the client wrote it: the framing (one
  // Content-Length or `Transfer-Encoding: chunked`, so the upstream cannot read the body's end
  // differently: duplicates, lists, odd spellings), the hop-by-hop fields (RFC 9110 7.6.1; a
  // Connection naming X-Forwarded-Client-Cert would have an upstream proxy drop ours), and
  // Upgrade unless this request is one (h2c is not, see request_head_view::upgrade). nginx does
  // the same with its proxy_set_header defaults.
  std::string_view fixed[13] = {"connection",     "keep-alive",        "proxy-connection", "te",
                                "http2-settings", "transfer-encoding", "content-length"};
  std::size_t n = 7;
  if (seen.absolute_form) fixed[n++] = "host";  // the target's authority replaces it
  if (!seen.upgrade) fixed[n++] = "upgrade";
  if (seen.expect_continue) fixed[n++] = "expect";
  if (xfcc) fixed[n++] = xfcc_header;
  if (xff_too) fixed[n++] = xff_header;
  if (f.x_forwarded_proto) fixed[n++] = xfp_header;
  if (!seen.connection_names_fields) {
    copy_head_except(head, std::span(fixed, n), out);
  } else {
    const std::vector<std::string> named = named_by_connection(head);
    std::vector<std::string_view> drop(fixed, fixed + n);
    drop.insert(drop.end(), named.begin(), named.end());
    copy_head_except(head, drop, out);
  }
  if (seen.absolute_form) {
    // "GET http://host/p HTTP/1.1" goes up as "GET /p HTTP/1.1" and "Host: host": an upstream
    // that routes by the target and one that routes by Host agree, and with the access log.
    std::string line(seen.method_text);
    line.append(" ")
        .append(origin_form(seen))
        .append(seen.version < 11 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n");
    out.replace(0, out.find("\r\n") + 2, line);
    out.append("Host: ").append(seen.target_authority).append("\r\n");
  }
  if (seen.transfer_encoding) {
    out.append("Transfer-Encoding: chunked\r\n");  // judge_request refused any other coding
  } else if (seen.content_length) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, *seen.content_length).ptr;
    out.append("Content-Length: ").append(digits, end).append("\r\n");
  }
  // TE is hop-by-hop, but "trailers" says what the client accepts end to end (Envoy passes it
  // too; its other codings are for this hop alone).
  if (seen.te_trailers) out.append("TE: trailers\r\n");
  // HTTP/1.1 keeps alive unless told to close; HTTP/1.0 closes unless told to keep alive.
  if (!seen.keep_alive)
    out.append(seen.upgrade ? "Connection: close, upgrade\r\n" : "Connection: close\r\n");
  else if (seen.upgrade)
    out.append("Connection: upgrade\r\n");
  else if (seen.version < 11)
    out.append("Connection: keep-alive\r\n");
  // The common XFCC policies need no copy of what the client sent: set is ours alone, remove
  // is nothing.
  if (xfcc && f.xfcc.what == action::set) {
    out.append("X-Forwarded-Client-Cert: ").append(f.xfcc.element).append("\r\n");
  } else if (xfcc && f.xfcc.what != action::remove) {
    if (auto ours = rewrite_xfcc(f.xfcc, seen.xfcc))
      out.append("X-Forwarded-Client-Cert: ").append(*ours).append("\r\n");
  }
  if (xff_too) {
    // Several X-Forwarded-For lines are one list (RFC 9110 5.3): joined, then ours appended.
    out.append("X-Forwarded-For: ");
    const std::size_t start = out.size();
    for (std::string_view v : seen.xff)
      append_xff_element(out, start, v);
    append_xff_element(out, start, xff_hop(f));
    out.append("\r\n");
  }
  if (f.x_forwarded_proto) out.append("X-Forwarded-Proto: https\r\n");
  out.append("\r\n");
}

namespace {

// RFC 9113 8.2.2's connection-specific fields (TE aside): is_hop_by_hop's and kept_in_trailers'.
constexpr std::string_view connection_specific[] = {"connection",       "keep-alive",
                                                    "proxy-connection", "transfer-encoding",
                                                    "upgrade",          "http2-settings"};

}  // namespace

bool is_hop_by_hop(std::string_view name, std::string_view value) {
  if (name == "te") return value != "trailers";
  return std::find(std::begin(connection_specific), std::end(connection_specific), name) !=
         std::end(connection_specific);
}

bool kept_in_trailers(std::string_view name) {
  static constexpr std::string_view not_trailers[] = {"te", "content-length", "host", "expect"};
  const auto named = [name](std::string_view lower) { return same_field_name(name, lower); };
  return std::none_of(std::begin(connection_specific), std::end(connection_specific), named) &&
         std::none_of(std::begin(not_trailers), std::end(not_trailers), named);
}

bool kept_in_request_trailers(std::string_view name) {
  return kept_in_trailers(name) && !is_forwarding_field(name);
}

}  // namespace mtlsd::proxy
