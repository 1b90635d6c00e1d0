#include "mtlsd/proxy/http_head.hpp"

#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_list.hpp"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <cctype>
#include <cstring>
#include <vector>

namespace mtlsd::proxy {

namespace beast = boost::beast;
namespace http = beast::http;

bool valid_authority(std::string_view a) {
  std::string_view host = a, port;
  bool has_port = false;
  if (!a.empty() && a[0] == '[') {
    const auto close = a.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (const char c : a.substr(1, close - 1))
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    if (close + 1 < a.size()) {
      if (a[close + 1] != ':') return false;
      has_port = true;
      port = a.substr(close + 2);
    }
  } else {
    if (const auto colon = a.find(':'); colon != std::string_view::npos) {
      host = a.substr(0, colon);
      port = a.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return false;
    for (const char c : host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_' &&
          c != '~')
        return false;
  }
  if (!has_port) return true;
  if (port.size() > 5) return false;
  unsigned value = 0;
  for (const char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

namespace {

// Why the request's target or Host cannot go up (nullptr: it can). RFC 9112 3.2: a target is
// origin-form ("/..."), absolute-form, or "*" for OPTIONS (CONNECT's authority-form is refused
// before); none has a fragment; a Host field's value, when not empty, is an authority.
const char* target_refusal(const request_head_view& h) {
  if (h.target.find('#') != std::string_view::npos) return "a fragment in the request target";
  if (h.absolute_form) {
    // It goes up in origin-form with its authority as Host: one that names no valid host, or
    // credentials (RFC 9110 4.2.4), or a scheme mtlsd does not serve, cannot.
    if (!beast::iequals(h.target_scheme, "http") && !beast::iequals(h.target_scheme, "https"))
      return "an absolute-form target whose scheme is not http or https";
    if (h.target_authority.find('@') != std::string_view::npos)
      return "an absolute-form target with user information";
    if (!valid_authority(h.target_authority)) return "an absolute-form target without a valid host";
  } else if (h.target == "*") {
    if (h.method != http::verb::options) return "the target * in a request other than OPTIONS";
  } else if (h.target.empty() || h.target[0] != '/') {
    return "a request target that is neither a path, an absolute URI nor *";
  }
  if (h.host_fields > 0 && !h.host.empty() && !valid_authority(h.host)) return "an invalid Host";
  return nullptr;
}

}  // namespace

request_head_verdict judge_request(const request_framing& req) {
  const auto& h = req.head();
  request_head_verdict v;
  if (h.method == http::verb::connect) {
    v.status = 405;
    v.reason = "Method Not Allowed";
    v.why = "CONNECT is not proxied";
    return v;
  }
  // Beast reads these lists only up to the first character that is not a token's: it takes
  // `chunked, "x"` and `chunked;q=1` for chunked, and misses h2c in `Upgrade: websocket/13, h2c`.
  // An upstream reading them whole could frame the body, or take the upgrade, otherwise.
  if (h.malformed_transfer_encoding || h.malformed_upgrade) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = h.malformed_upgrade ? "an Upgrade list that does not parse"
                                : "a Transfer-Encoding list that does not parse";
    return v;
  }
  // With Content-Length too: Beast refuses the pair when chunked is last, and this the rest.
  if (h.transfer_encoding && !req.chunked()) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = "Transfer-Encoding without final chunked";
    return v;
  }
  // RFC 9112 6.1: an HTTP/1.0 recipient may not know Transfer-Encoding, and would read the body
  // as the next request.
  if (h.transfer_encoding && h.version < 11) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = "Transfer-Encoding in an HTTP/1.0 request";
    return v;
  }
  // RFC 9112 7.1: the chunked coding has no parameters, and their presence is an error.
  if (h.chunked_parameters) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = "parameters on the chunked transfer coding";
    return v;
  }
  // The upstream gets `Transfer-Encoding: chunked` written by mtlsd (forward_request_head), so
  // no coding it might read differently; a coding besides chunked (gzip, identity) would be
  // lost that way (RFC 9112 6.1: 501, as nginx and Envoy answer).
  if (h.transfer_encoding && h.other_coding) {
    v.status = 501;
    v.reason = "Not Implemented";
    v.why = "a transfer coding other than chunked";
    return v;
  }
  // A length an upstream reading it as a signed 64-bit number would take for negative (nginx
  // answers 400 too); a chunk size past it is refused as the body arrives (framing_base).
  if (h.content_length && *h.content_length > largest_length) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = "a Content-Length above 2^63-1";
    return v;
  }
  // RFC 9112 3.2: exactly one Host in HTTP/1.1, at most one before. Two could route the request
  // to one host upstream and log it under the other.
  if (h.host_fields > 1 || (h.host_fields == 0 && h.version >= 11)) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = h.host_fields > 1 ? "more than one Host field" : "no Host field";
    return v;
  }
  // RFC 9110 10.1.1 lets a server answer 417 to an expectation other than 100-continue. mtlsd
  // answers 100-continue itself and drops the field: an upstream given the field it answered
  // from could answer it again, or meet an expectation mtlsd claimed to handle.
  if (h.other_expectation) {
    v.status = 417;
    v.reason = "Expectation Failed";
    v.why = "an expectation other than 100-continue";
    return v;
  }
  if (const char* bad = target_refusal(h)) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = bad;
    return v;
  }
  v.head = h.method == http::verb::head;
  v.upgrade = h.upgrade;
  if (h.upgrade)
    for (const auto offer : h.upgrade_offers)
      v.upgrade_offer.append(v.upgrade_offer.empty() ? "" : ", ").append(offer);
  v.keep_alive = req.keep_alive();
  // RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored (its client knows no 1xx).
  v.send_continue = h.expect_continue && h.version >= 11 && !req.is_done();
  return v;
}

std::string_view authority_host(std::string_view authority) {
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    authority = close == std::string_view::npos ? authority : authority.substr(1, close - 1);
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    authority = authority.substr(0, colon);
  }
  // "example.org." is the same name, fully qualified (curl sends it for such a URL; nginx
  // takes the dot off too).
  if (authority.size() > 1 && authority.back() == '.') authority.remove_suffix(1);
  return authority;
}

bool authority_is_host(std::string_view authority, std::string_view host) {
  const auto name = authority_host(authority);
  return !name.empty() && beast::iequals(name, host);
}

std::string misdirected(std::string_view authority, std::string_view server_name) {
  if (server_name.empty() || authority_is_host(authority, server_name)) return {};
  if (authority.empty())
    return "the request names no host; the listener's rules judged the TLS server name '" +
           std::string(server_name) + "'";
  return "the request is for '" + std::string(authority) + "', not the TLS server name '" +
         std::string(server_name) + "' the listener's rules judged";
}

std::string misdirected(const http_forwarding& f, std::string_view authority) {
  if (!f.rules || !f.rules->hold_host()) return {};
  if (!f.server_name.empty()) return misdirected(authority, f.server_name);
  const auto host = authority_host(authority);
  if (host.empty()) return "the request names no host for the listener's rules to judge";
  auto why = f.rules->judge_host(host);
  if (why.empty()) return {};
  return "the request is for '" + std::string(authority) +
         "', which the listener's rules do not admit without a TLS server name: " + why;
}

namespace {

// The comma-separated members of an Upgrade value, without optional whitespace ("" members
// dropped, as RFC 9110 5.6.1 has a recipient ignore them).
std::vector<std::string_view> protocols(std::string_view list) {
  std::vector<std::string_view> out;
  for_each_list_member(list, [&](std::string_view member) { out.push_back(member); });
  return out;
}

// Whether `protocol` ("name" or "name/version") is among those offered: the same name, and the
// same version where both name one. Case-insensitive, as servers echo "WebSocket".
bool offered(std::string_view offers, std::string_view protocol) {
  const auto name = protocol.substr(0, protocol.find('/'));
  for (const auto offer : protocols(offers)) {
    const auto offer_name = offer.substr(0, offer.find('/'));
    if (!beast::iequals(offer_name, name)) continue;
    if (offer.size() == offer_name.size() || protocol.size() == name.size() ||
        beast::iequals(offer, protocol))
      return true;
  }
  return false;
}

}  // namespace

std::string_view response_status_refusal(unsigned status) {
  if (status < 100 || status > 599) return "a response status outside 100-599";
  return {};
}

std::string_view response_head_refusal(const response_framing& res, bool upgrade_requested,
                                       std::string_view upgrade_offer) {
  if (const auto why = response_status_refusal(res.status()); !why.empty()) return why;
  if (res.status() != 101) return {};
  if (!upgrade_requested) return "101 Switching Protocols without an Upgrade request";
  const auto switching = protocols(res.switching_to());
  if (switching.empty() || !res.connection_upgrade())
    return "101 Switching Protocols without Upgrade and Connection: upgrade";
  const upgrade_protocols to = read_upgrade(res.switching_to());
  if (!to.parsed) return "101 Switching Protocols with an Upgrade list that does not parse";
  // Whatever was offered (an h2c offer never goes up: request_head_view::upgrade): in that
  // tunnel the client would speak HTTP/2 to the upstream itself, past every X-Forwarded-* field.
  if (to.h2c) return "101 Switching Protocols to h2c";
  for (const auto protocol : switching)
    if (!offered(upgrade_offer, protocol))
      return "101 Switching Protocols to a protocol the request did not offer";
  return {};
}

bool unfold_head(std::span<char> head) {
  bool folded = false;
  char* const end = head.data() + head.size();
  char* p = static_cast<char*>(std::memchr(head.data(), '\n', head.size()));  // the start line's
  while (p && ++p < end) {
    p = static_cast<char*>(std::memchr(p, '\n', static_cast<std::size_t>(end - p)));
    if (!p || p + 1 == end) break;
    if ((p[1] == ' ' || p[1] == '\t') && p[-1] == '\r') {
      p[-1] = p[0] = ' ';
      folded = true;
    }
  }
  return folded;
}

namespace {

// Whether a field called `name` (as written) is one of `drop`. A short list is searched as it
// is; a long one (a Connection field naming many fields: a client controls its length) is sorted
// once and each name looked up by binary search, so that a head of L lines costs L log N, not
// L x N (review: a 64 KiB head naming 16,000 fields in 8,000 lines held the worker 0.3 s).
class drop_list {
 public:
  explicit drop_list(std::span<const std::string_view> drop) : drop_(drop) {
    if (drop.size() <= linear_limit) return;
    sorted_.assign(drop.begin(), drop.end());
    std::sort(sorted_.begin(), sorted_.end());
    sorted_.erase(std::unique(sorted_.begin(), sorted_.end()), sorted_.end());
  }

  bool has(std::string_view name) {
    if (sorted_.empty())
      return std::any_of(drop_.begin(), drop_.end(),
                         [name](std::string_view d) { return same_field_name(name, d); });
    spelled_.assign(name);  // as same_field_name reads a field's name
    for (char& c : spelled_)
      c = c == '_' ? '-' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return std::binary_search(sorted_.begin(), sorted_.end(), std::string_view(spelled_));
  }

 private:
  static constexpr std::size_t linear_limit = 16;
  std::span<const std::string_view> drop_;
  std::vector<std::string_view> sorted_;
  std::string spelled_;
};

}  // namespace

void copy_head_except(std::string_view head, std::span<const std::string_view> drop,
                      std::string& out) {
  out.clear();
  drop_list dropped(drop);
  bool dropping = false;  // the line before was dropped: so are its continuations
  for (std::size_t at = 0; at < head.size();) {
    std::size_t eol = head.find("\r\n", at);
    eol = eol == std::string_view::npos ? head.size() : eol + 2;
    const std::string_view line = head.substr(at, eol - at);
    const bool start_line = at == 0;
    at = eol;
    if (line == "\r\n") break;  // the empty line that ends the head
    if (!start_line && (line[0] == ' ' || line[0] == '\t')) {
      if (!dropping) out.append(line);
      continue;
    }
    dropping = !start_line && dropped.has(line.substr(0, line.find(':')));
    if (!dropping) out.append(line);
  }
}

}  // namespace mtlsd::proxy
