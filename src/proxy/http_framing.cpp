#include "mtlsd/proxy/http_framing.hpp"

#include <algorithm>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <cctype>
#include <cstring>

#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_list.hpp"
#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::proxy {

namespace beast = boost::beast;
namespace http = beast::http;

bool same_field_name(std::string_view name, std::string_view lower) {
  if (name.size() != lower.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    c = c == '_' ? '-' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    if (c != lower[i]) return false;
  }
  return true;
}

bool is_forwarding_field(std::string_view name) {
  return same_field_name(name, xfcc_header) || same_field_name(name, xff_header) ||
         same_field_name(name, xfp_header);
}

expectations read_expect(std::string_view value) {
  expectations out;
  for_each_list_member(value, [&](std::string_view member) {
    if (beast::iequals(member, "100-continue"))
      out.continue_100 = true;
    else
      out.other = true;
  });
  return out;
}

namespace {

// RFC 9110 5.6.2: tchar.
bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr);
}

// Takes the token at the front of `s` off it and returns it ("" when none is there).
std::string_view take_token(std::string_view& s) {
  std::size_t n = 0;
  while (n < s.size() && is_tchar(s[n]))
    ++n;
  const auto token = s.substr(0, n);
  s.remove_prefix(n);
  return token;
}

void skip_whitespace(std::string_view& s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
}

// Takes a quoted-string (RFC 9110 5.6.4) off the front of `s`; false when it does not end.
// Beast let no control character into the field's value.
bool take_quoted_string(std::string_view& s) {
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;  // a quoted-pair: the next character, whatever it is
    } else if (s[i] == '"') {
      s.remove_prefix(i + 1);
      return true;
    }
  }
  return false;
}

}  // namespace

// transfer-coding = token *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ), in a
// list whose empty members are ignored (RFC 9110 5.6.1). Quoted strings may hold commas, so
// the value is walked, not split.
transfer_codings read_transfer_encoding(std::string_view value) {
  transfer_codings out;
  for (;;) {
    skip_whitespace(value);
    if (value.empty()) return out;
    if (value.front() == ',') {
      value.remove_prefix(1);
      continue;
    }
    const auto coding = take_token(value);
    bool parameters = false;
    for (skip_whitespace(value); !value.empty() && value.front() == ';'; skip_whitespace(value)) {
      value.remove_prefix(1);
      skip_whitespace(value);
      const bool named = !take_token(value).empty();
      skip_whitespace(value);
      if (!named || value.empty() || value.front() != '=') return {.parsed = false};
      value.remove_prefix(1);
      skip_whitespace(value);
      const bool quoted = !value.empty() && value.front() == '"';
      if (quoted ? !take_quoted_string(value) : take_token(value).empty()) return {.parsed = false};
      parameters = true;
    }
    if (coding.empty() || (!value.empty() && value.front() != ',')) return {.parsed = false};
    if (!beast::iequals(coding, "chunked"))
      out.other = true;
    else if (parameters)
      out.chunked_parameters = true;
  }
}

std::string_view unreadable_transfer_encoding(const transfer_codings& codings) {
  if (!codings.parsed) return "a Transfer-Encoding list that does not parse";
  if (codings.chunked_parameters) return "parameters on the chunked transfer coding";
  return {};
}

upgrade_protocols read_upgrade(std::string_view value) {
  upgrade_protocols out;
  for_each_list_member(value, [&](std::string_view member) {
    auto rest = member;
    const auto name = take_token(rest);
    if (!rest.empty() && rest.front() == '/') {
      rest.remove_prefix(1);
      out.parsed = out.parsed && !take_token(rest).empty();
    }
    out.parsed = out.parsed && !name.empty() && rest.empty();
    out.h2c = out.h2c || beast::iequals(name, "h2c");
  });
  return out;
}

namespace detail {

bool clean_chunk_extension(std::string_view extension) {
  return std::none_of(extension.begin(), extension.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  });
}

bool folded_field(std::string_view name) {
  const char* p = name.data();
  while (*p != '\n')  // the field's line ends with CRLF inside the section Beast checked
    ++p;
  return p[1] == ' ' || p[1] == '\t';  // the section ends with an empty line: p[1] exists
}

}  // namespace detail

void response_framing::on_field_impl(http::field f, string_view name, string_view value,
                                     error_code& ec) {
  if (is_header_done()) {  // a trailer
    if (detail::folded_field({name.data(), name.size()}))
      refuse(ec, http::error::bad_field, "a folded trailer");
    return;
  }
  if (f == http::field::transfer_encoding) {
    transfer_encoding_ = true;
    // Beast reads the list only up to its first character that is not a token's: a client
    // that reads it all could frame the body otherwise.
    const transfer_codings codings = read_transfer_encoding({value.data(), value.size()});
    if (const auto why = unreadable_transfer_encoding(codings); !why.empty()) {
      refuse(ec, http::error::bad_transfer_encoding, why);
      return;
    }
    other_coding_ = other_coding_ || codings.other;
  }
  content_length_ = content_length_ || f == http::field::content_length;
  if (status_ != 101) {
    if (f == http::field::keep_alive || f == http::field::proxy_connection ||
        f == http::field::te || f == http::field::upgrade) {
      hop_by_hop_ = true;
    } else if (f == http::field::connection) {
      for (const auto& token : http::token_list{value})
        hop_by_hop_ =
            hop_by_hop_ || !(beast::iequals(token, "close") || beast::iequals(token, "keep-alive"));
    } else if (f == http::field::unknown) {
      // Keep_Alive and the like, which some readers take for the field (copy_head_except drops
      // them too).
      const std::string_view n(name.data(), name.size());
      hop_by_hop_ = hop_by_hop_ || same_field_name(n, "connection") ||
                    same_field_name(n, "keep-alive") || same_field_name(n, "proxy-connection");
    }
    return;
  }
  if (f == http::field::upgrade) {
    if (!switching_to_.empty()) switching_to_ += ", ";
    switching_to_.append(value.data(), value.size());
  } else if (f == http::field::connection) {
    for (const auto& token : http::token_list{value})
      connection_upgrade_ = connection_upgrade_ || beast::iequals(token, "upgrade");
  }
}

void response_framing::on_header_impl(error_code& ec) {
  // Beast refuses the pair when chunked is involved or Content-Length comes first, not a
  // Transfer-Encoding: gzip before it; either way the client could frame the body otherwise.
  if (transfer_encoding_ && content_length_)
    refuse(ec, http::error::bad_transfer_encoding, "Transfer-Encoding with Content-Length");
  else if (const auto length = content_length(); length && *length > largest_length)
    refuse(ec, http::error::bad_content_length, "a Content-Length above 2^63-1");
}

// "scheme://authority[/path][?query]": the target's parts, when it is in absolute-form (a
// scheme — a letter, then letters, digits, "+", "-" or "." — then "://"; CONNECT's
// authority-form and OPTIONS' "*" have neither). Beast only kept control characters and
// spaces out of the target: judge_request checks the parts.
void split_absolute_form(request_head_view& head) {
  const std::string_view t = head.target;
  const auto colon = t.find("://");
  if (colon == std::string_view::npos || colon == 0 ||
      !std::isalpha(static_cast<unsigned char>(t[0])))
    return;
  for (const char c : t.substr(0, colon))
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return;
  head.absolute_form = true;
  head.target_scheme = t.substr(0, colon);
  const std::string_view rest = t.substr(colon + 3);
  const auto path = rest.find_first_of("/?#");
  head.target_authority = rest.substr(0, path);
  head.target_path = path == std::string_view::npos ? std::string_view() : rest.substr(path);
}

std::string origin_form(const request_head_view& head) {
  if (!head.absolute_form) return std::string(head.target);
  // RFC 9112 3.2.4: "OPTIONS http://h" asks about the server itself: "*" on the last hop.
  if (head.target_path.empty() && head.method == http::verb::options) return "*";
  const bool rooted = !head.target_path.empty() && head.target_path[0] == '/';
  return (rooted ? "" : "/") + std::string(head.target_path);
}

void request_framing::on_request_impl(http::verb method, string_view method_text,
                                      string_view target, int version, error_code&) {
  head_.method = method;
  head_.method_text = {method_text.data(), method_text.size()};
  head_.target = {target.data(), target.size()};
  head_.version = version;
  if (method != http::verb::connect) split_absolute_form(head_);
}

void request_framing::on_field_impl(http::field f, string_view name, string_view value,
                                    error_code& ec) {
  const std::string_view n(name.data(), name.size());
  if (is_header_done()) {
    // A trailer: forwarded as rewrite_chunks writes it (its value trimmed), so none that could
    // pass for what mtlsd tells the upstream. Those that have no place in a trailer section are
    // dropped by the rule an HTTP/2 client's trailers follow (kept_in_request_trailers).
    if (detail::folded_field(n))
      refuse(ec, http::error::bad_field, "a folded trailer");
    else if (is_forwarding_field(n))
      refuse(ec, http::error::bad_field, "an X-Forwarded-* trailer");
    else if (kept_in_request_trailers(n))
      keep_trailer(name, value);
    return;
  }
  const std::string_view v(value.data(), value.size());
  switch (f) {
    case http::field::host:
      if (head_.host_fields++ == 0) head_.host = v;
      return;
    case http::field::expect: {
      const expectations e = read_expect(v);
      head_.expect_continue = head_.expect_continue || e.continue_100;
      head_.other_expectation = head_.other_expectation || e.other;
      return;
    }
    case http::field::transfer_encoding: {
      head_.transfer_encoding = true;
      const transfer_codings codings = read_transfer_encoding(v);
      head_.malformed_transfer_encoding = head_.malformed_transfer_encoding || !codings.parsed;
      head_.chunked_parameters = head_.chunked_parameters || codings.chunked_parameters;
      head_.other_coding = head_.other_coding || codings.other;
      return;
    }
    case http::field::te:
      head_.te_trailers = head_.te_trailers || http::token_list{value}.exists("trailers");
      return;
    case http::field::upgrade: {
      upgrade_field_ = true;
      head_.upgrade_offers.push_back(v);
      const upgrade_protocols offered = read_upgrade(v);
      head_.malformed_upgrade = head_.malformed_upgrade || !offered.parsed;
      upgrade_h2c_ = upgrade_h2c_ || offered.h2c;
      return;
    }
    case http::field::connection:
      for (const auto& token : http::token_list{value}) {
        if (beast::iequals(token, "upgrade"))
          connection_upgrade_ = true;
        else if (!beast::iequals(token, "close") && !beast::iequals(token, "keep-alive"))
          head_.connection_names_fields = true;
      }
      return;
    case http::field::unknown:  // the X-Forwarded family is not in Beast's table
      if (same_field_name(n, xfcc_header))
        head_.xfcc.push_back(v);
      else if (same_field_name(n, xff_header))
        head_.xff.push_back(v);
      return;
    default:
      return;
  }
}

void request_framing::on_header_impl(error_code&) {
  head_.upgrade = head_.version >= 11 && upgrade_field_ && connection_upgrade_ && !upgrade_h2c_;
  head_.keep_alive = keep_alive();
  if (const auto length = content_length()) head_.content_length = *length;
}

}  // namespace mtlsd::proxy
