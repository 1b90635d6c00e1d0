#include "mtlsd/net/url.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
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

std::optional<http_url> parse_http_url(std::string_view text, std::string* why) {
  auto fail = [why](const char* reason) -> std::optional<http_url> {
    if (why) *why = reason;
    return std::nullopt;
  };
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
