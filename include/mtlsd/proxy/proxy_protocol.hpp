#pragma once
// PROXY protocol v2 (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt): the header a
// server-mode listener sends upstream before any payload, so the upstream learns the client's
// address and identity. Compatible with nginx `listen ... proxy_protocol` and HAProxy
// `accept-proxy`. The TLVs are the specification's (ALPN, authority, SSL and its sub-TLVs) plus
// mtlsd's own in the 0xE0-0xEF range the specification reserves for applications (below).
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mtlsd::proxy {

// The 12 bytes every v2 header starts with (the specification's section 2.2).
inline constexpr std::string_view proxy_v2_signature(
    "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

// TLV type codes.
namespace pp2 {
inline constexpr std::uint8_t alpn = 0x01;
inline constexpr std::uint8_t authority = 0x02;
inline constexpr std::uint8_t ssl = 0x20;
inline constexpr std::uint8_t ssl_version = 0x21;
inline constexpr std::uint8_t ssl_cn = 0x22;
inline constexpr std::uint8_t ssl_cipher = 0x23;
inline constexpr std::uint8_t ssl_sig_alg = 0x24;
inline constexpr std::uint8_t ssl_key_alg = 0x25;
inline constexpr std::uint8_t spiffe_id = 0xE0;    // mtlsd
inline constexpr std::uint8_t uri_sans = 0xE1;     // mtlsd, comma-separated
inline constexpr std::uint8_t dns_sans = 0xE2;     // mtlsd, comma-separated
inline constexpr std::uint8_t cert_der = 0xE3;     // mtlsd, the client's leaf in DER
inline constexpr std::uint8_t cert_sha256 = 0xE4;  // mtlsd, hex
// Bits of the SSL TLV's `client` byte.
inline constexpr std::uint8_t client_ssl = 0x01;
inline constexpr std::uint8_t client_cert_conn = 0x02;
inline constexpr std::uint8_t client_cert_sess = 0x04;
}  // namespace pp2

struct proxy_v2_info {
  sockaddr_storage source{};       // the client, as our listener saw it
  sockaddr_storage destination{};  // our listener's address
  std::string alpn, authority;     // negotiated ALPN, SNI
  bool client_cert = false;        // a certificate was presented on this connection
  bool resumed = false;            // ...on the session this connection resumed
  bool verified = false;
  std::string tls_version, common_name, cipher, signature_algorithm, key_algorithm;
  std::string spiffe_id;
  std::vector<std::string> uri_sans, dns_sans;
  std::string cert_der, cert_sha256;
};

// The value of the URI / DNS SAN TLVs (0xE1, 0xE2): the SANs, comma-separated. A comma inside
// one SAN (an IA5String may hold any) is sent as "%2C", and a '%' as "%25": a receiver
// splitting on commas sees one element per SAN, never one SAN as two identities, and decoding
// %XX in an element gives the SAN exactly.
std::string san_list_value(const std::vector<std::string>& sans);

// A v2 header with the LOCAL command and no addresses: the connection is the sender's own (a
// health probe), not a client's. What HAProxy's check-send-proxy sends.
std::string build_proxy_v2_local_header();

// The complete header: signature, version/command, family, addresses, TLVs. Mismatched or
// unknown address families are sent as UNSPEC (the receiver then uses the connection's own
// addresses) with the TLVs still present. TLVs that would push the header past its 16-bit
// length are left out: they are added in the order ALPN, authority, SSL, SPIFFE ID, URI SANs,
// DNS SANs, certificate, hash, each only when it still fits.
std::string build_proxy_v2_header(const proxy_v2_info& info);

}  // namespace mtlsd::proxy
