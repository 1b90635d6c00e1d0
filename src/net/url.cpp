#include "mtlsd/net/url.hpp"

#include <algorithm>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <charconv>

namespace mtlsd::net {

std::string http_url::authority() const {
  std::string out = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != 80) out += ":" + std::to_string(port);
  return out;
}

std::string http_url::absolute() const {
  return "http://" + authority() + target;
}

namespace {

// What Boost.URL is given has been checked for two things first: only bytes RFC 3986 allows
// anywhere in a URI (unreserved, reserved, '%'), and "http://" (any case) in front, so that the
// path is an absolute one behind an authority. Boost 1.81 accepts some other bytes ('[', '\\')
// in a rootless path ("a:[") and then fails its own assertion counting the segments
// (boostorg/url#665, fixed in 1.82): a build with assertions on would abort on such a URL from
// a certificate's distribution point (url_fuzz found it). Both checks refuse only what the
// parser below refuses anyway.
bool uri_characters_only(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return false;
    return std::string_view("\\\"<>^`{|}").find(c) == std::string_view::npos;
  });
}

bool starts_with_http_scheme(std::string_view text) {
  constexpr std::string_view scheme = "http:";
  if (text.size() < scheme.size()) return false;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(text[i])) != scheme[i]) return false;
  return true;
}

}  // namespace

std::optional<http_url> parse_http_url(std::string_view text, std::string* why) {
  auto fail = [why](const char* reason) -> std::optional<http_url> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (!uri_characters_only(text)) return fail("not a URL");
  if (!starts_with_http_scheme(text))
    return fail(text.find(':') == std::string_view::npos ? "not a URL" : "not an http:// URL");
  if (text.substr(5, 2) != "//") return fail("no host");
  auto parsed = boost::urls::parse_uri(boost::urls::string_view(text.data(), text.size()));
  if (!parsed) return fail("not a URL");
  const boost::urls::url_view& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http) return fail("not an http:// URL");
  if (!u.has_authority()) return fail("no host");
  if (u.has_userinfo()) return fail("credentials in the URL are not supported");
  http_url out;
  out.text = std::string(text);
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      out.host = std::string(u.host_address());  // IPv6 without its brackets
      break;
    case boost::urls::host_type::name: {
      const auto encoded = u.encoded_host();
      // A percent-encoded name would mean something else to DNS than it shows in messages.
      if (encoded.find('%') != boost::urls::string_view::npos)
        return fail("percent-encoded host names are not supported");
      out.host = std::string(encoded);
      break;
    }
    default:
      return fail("unsupported host");
  }
  if (out.host.empty()) return fail("no host");
  if (u.has_port()) {
    // Read the digits ourselves: port_number() wraps a number that does not fit in 16 bits.
    const auto digits = u.port();
    unsigned value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty())
      value = 80;
    else if (ec != std::errc() || end != digits.data() + digits.size() || value == 0 ||
             value > 65535)
      return fail("the port must be 1-65535");
    out.port = static_cast<std::uint16_t>(value);
  }
  out.target = std::string(u.encoded_path());
  if (out.target.empty()) out.target = "/";
  if (out.target.front() != '/') return fail("the path must start with /");
  if (u.has_query()) out.target += "?" + std::string(u.encoded_query());
  return out;
}

}  // namespace mtlsd::net
