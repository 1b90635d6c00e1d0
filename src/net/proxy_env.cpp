#include "mtlsd/net/proxy_env.hpp"

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace mtlsd::net {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

// The first of the (lower case, upper case) pair that is set and not empty.
std::pair<std::string, std::string> first_set(const std::function<const char*(const char*)>& get,
                                              const char* lower_name, const char* upper_name) {
  for (const char* name : {lower_name, upper_name})
    if (const char* v = get(name); v && *v) return {name, v};
  return {};
}

// "http://user:secret@host" -> "http://user:REDACTED@host": a refused value is quoted in
// the error, and the error goes to the log. The credentials run to the last '@': a password may
// hold '/' or '@' as people write them, unescaped (review: "pa/ss" was shown whole, "p@ss" in
// part). A '@' in a path makes this hide more than the password; never less.
std::string redacted(std::string value) {
  const auto start = value.find("://");
  const auto from = start == std::string::npos ? 0 : start + 3;
  const auto at = value.rfind('@');
  if (at == std::string::npos || at < from) return value;
  const auto colon = value.find(':', from);
  if (colon != std::string::npos && colon < at && value.find('/', from) > colon)
    value.replace(colon + 1, at - colon - 1, "REDACTED");
  else
    value.replace(from, at - from, "REDACTED");  // a token without a user name
  return value;
}

std::optional<http_url> parse_proxy(const std::string& variable, std::string value) {
  // curl's convention: a proxy without a scheme is an HTTP proxy.
  if (value.find("://") == std::string::npos) value = "http://" + value;
  std::string why;
  auto url = parse_http_url(value, &why);
  if (!url)
    throw std::runtime_error(variable + "='" + redacted(value) + "': " + why +
                             " (expected http://HOST:PORT; TLS to the proxy is not supported)");
  return url;
}

bool in_cidr(const boost::asio::ip::address& ip, std::string_view cidr) {
  boost::system::error_code ec;
  const std::string text(cidr);
  if (ip.is_v4()) {
    auto net = boost::asio::ip::make_network_v4(text, ec);
    return !ec && net.canonical() ==
                      boost::asio::ip::network_v4(ip.to_v4(), net.prefix_length()).canonical();
  }
  auto net = boost::asio::ip::make_network_v6(text, ec);
  return !ec && net.canonical() ==
                    boost::asio::ip::network_v6(ip.to_v6(), net.prefix_length()).canonical();
}

}  // namespace

bool proxy_settings::bypass(std::string_view host_in) const {
  const std::string host = lower(host_in);
  boost::system::error_code ec;
  const auto ip = boost::asio::ip::make_address(host, ec);
  const bool is_ip = !ec;
  for (std::string_view entry : no_proxy) {
    if (entry == "*") return true;
    if (is_ip) {
      if (entry.find('/') != std::string_view::npos) {
        if (in_cidr(ip, entry)) return true;
        continue;
      }
      std::string_view bare = entry;
      if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']')
        bare = bare.substr(1, bare.size() - 2);
      boost::system::error_code eec;
      if (auto e = boost::asio::ip::make_address(std::string(bare), eec); !eec && e == ip)
        return true;
      continue;
    }
    if (entry.front() == '.') entry.remove_prefix(1);
    if (host == entry) return true;
    if (host.size() > entry.size() && host.ends_with(entry) &&
        host[host.size() - entry.size() - 1] == '.')
      return true;
  }
  return false;
}

const http_url* proxy_settings::for_http(std::string_view host) const {
  if (!http || bypass(host)) return nullptr;
  return &*http;
}

proxy_settings proxy_from_environment(const std::function<const char*(const char*)>& get) {
  proxy_settings s;
  if (auto [name, value] = first_set(get, "http_proxy", "HTTP_PROXY"); !name.empty()) {
    s.http = parse_proxy(name, value);
    s.http_variable = name;
  }
  if (auto [name, value] = first_set(get, "https_proxy", "HTTPS_PROXY"); !name.empty()) {
    s.https = parse_proxy(name, value);
    s.https_variable = name;
  }
  if (auto [name, value] = first_set(get, "no_proxy", "NO_PROXY"); !name.empty()) {
    std::string_view rest = value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      auto entry = trim(rest.substr(0, comma));
      if (!entry.empty()) s.no_proxy.push_back(lower(entry));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
  }
  return s;
}

namespace {
std::mutex proxy_mutex;
std::shared_ptr<const proxy_settings> current_proxy = std::make_shared<const proxy_settings>();
}  // namespace

void set_fetch_proxy(proxy_settings s) {
  auto p = std::make_shared<const proxy_settings>(std::move(s));
  std::lock_guard lock(proxy_mutex);
  current_proxy = std::move(p);
}

std::shared_ptr<const proxy_settings> fetch_proxy() {
  std::lock_guard lock(proxy_mutex);
  return current_proxy;
}

}  // namespace mtlsd::net
