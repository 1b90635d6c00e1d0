#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace mtlsd::config {

// HOST:PORT, [IPV6]:PORT or unix:/path, as written in the configuration.
struct address {
  enum class kind { tcp, unix_socket };
  kind type = kind::tcp;
  std::string host;  // tcp: hostname or IP literal (no brackets)
  std::uint16_t port = 0;
  std::string path;  // unix_socket (made absolute by the configuration reader)

  bool is_unix() const { return type == kind::unix_socket; }
  // Back to the configuration syntax: "127.0.0.1:8443", "[::1]:8443", "unix:/run/app.sock".
  std::string str() const;
  friend bool operator==(const address&, const address&) = default;
};

// The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d): such an address is the
// IPv4 one wherever mtlsd compares addresses (CIDRs, IP literals, a certificate's IP SANs).
inline constexpr std::array<std::uint8_t, 12> ipv4_mapped_prefix = {0, 0, 0, 0, 0,    0,
                                                                    0, 0, 0, 0, 0xff, 0xff};

// sun_path is 108 bytes including the terminating NUL.
inline constexpr std::size_t max_unix_path = 107;

// Returns the address, or an error message explaining what is wrong with `text`.
std::variant<address, std::string> parse_address(std::string_view text);

// `host` (a TCP address's) as a peer's certificate names it: an IPv6 zone, which names an
// interface of this host and nothing of the peer's, dropped; an IPv4-mapped IPv6 address as the
// IPv4 address the connection goes to; anything else (an IPv4 or IPv6 literal, a host name) as
// written.
std::string host_as_named(const std::string& host);

// Whether sockets bound at `a` and `b` would take the same connections, as far as the text
// tells: the same unix path however spelt (lexically), or the same TCP port with the same host,
// the same IP however written, or a wildcard covering the other (0.0.0.0 every IPv4 address,
// :: every address: IPV6_V6ONLY is off). A host name matches only itself: it is resolved when
// bound, which then says so. Port 0 picks a free port and overlaps nothing.
bool may_overlap(const address& a, const address& b);

// Why a unix socket cannot be created at `a`'s path: its directory is missing or no directory.
// "" when it can (as far as that goes), and for a TCP address.
std::string socket_directory_problem(const address& a);

}  // namespace mtlsd::config
