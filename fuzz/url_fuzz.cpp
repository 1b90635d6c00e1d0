// The URL parser (net/url.hpp) and the proxy environment (net/proxy_env.hpp) on arbitrary text.
// The URLs come from certificates (CRL distribution points, OCSP responders: whoever runs the
// CA writes them, and a client's certificate carries them in), from the configuration and from
// the environment. First byte even: parse_http_url on the rest. Properties of an accepted URL:
// a host, a port in 1-65535, a target that starts with '/'; no space or control byte in the
// host or the target (they go into a request line and a Host field: such a byte would split
// or extend them); absolute() parses again to the same host, port and target.
// First byte odd: the rest is "http_proxy\nhttps_proxy\nno_proxy\nhost". Reading it throws a
// runtime_error or gives settings; a no_proxy entry equal to the host (or "*") makes it bypass,
// and a bypassed host gets no proxy.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/net/proxy_env.hpp"
#include "mtlsd/net/url.hpp"

using namespace mtlsd;

namespace {

bool one_token(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
  });
}

void url(std::string_view text) {
  const auto u = net::parse_http_url(text);
  if (!u) return;
  fuzz::check(!u->host.empty(), "an accepted URL has a host");
  fuzz::check(u->port != 0, "an accepted URL has a port");
  fuzz::check(!u->target.empty() && u->target.front() == '/', "the target starts with /");
  fuzz::check(one_token(u->host), "no space or control byte in the host");
  fuzz::check(one_token(u->target), "no space or control byte in the target");
  const auto again = net::parse_http_url(u->absolute());
  fuzz::check(again.has_value(), "absolute() parses again");
  fuzz::check(again->host == u->host && again->port == u->port && again->target == u->target,
              "absolute() parses to the same host, port and target");
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void environment(std::string_view text) {
  std::vector<std::string> parts;
  for (;;) {
    const auto nl = text.find('\n');
    parts.emplace_back(text.substr(0, nl));
    if (nl == std::string_view::npos || parts.size() == 4) break;
    text.remove_prefix(nl + 1);
  }
  parts.resize(4);
  const std::string& host = parts[3];
  net::proxy_settings s;
  try {
    s = net::proxy_from_environment([&](const char* name) -> const char* {
      const std::string_view n(name);
      if (n == "http_proxy") return parts[0].c_str();
      if (n == "https_proxy") return parts[1].c_str();
      if (n == "no_proxy") return parts[2].c_str();
      return nullptr;
    });
  } catch (const std::runtime_error& e) {
    fuzz::check(*e.what() != '\0', "a refused variable says why");
    return;
  }
  for (const auto& entry : s.no_proxy)
    fuzz::check(!entry.empty() && entry == lower(entry), "no_proxy entries: lower case, not empty");
  const bool listed = std::any_of(s.no_proxy.begin(), s.no_proxy.end(), [&](const auto& e) {
    return e == "*" || (e == lower(host) && !host.empty() && host.front() != '.');
  });
  const bool bypassed = s.bypass(host);
  if (listed) fuzz::check(bypassed, "a host named in no_proxy goes direct");
  if (bypassed) fuzz::check(s.for_http(host) == nullptr, "a bypassed host gets no proxy");
  if (!bypassed && s.http) fuzz::check(s.for_http(host) == &*s.http, "anything else: the proxy");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] % 2 == 0)
    url(rest);
  else
    environment(rest);
  return 0;
}
