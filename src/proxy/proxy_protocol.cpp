#include "mtlsd/proxy/proxy_protocol.hpp"

#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>

namespace mtlsd::proxy {
namespace {

void put16(std::string& out, std::size_t v) {
  out += static_cast<char>((v >> 8) & 0xff);
  out += static_cast<char>(v & 0xff);
}

// Appends a TLV when it still fits in `limit` bytes of `out`: one value over 64 KiB, or all of
// them together over the header's 16-bit length, cannot be encoded; skipping beats corrupting.
void tlv(std::string& out, std::uint8_t type, std::string_view value, std::size_t limit = 0xffff) {
  if (value.size() > 0xffff || out.size() + 3 + value.size() > limit) return;
  out += static_cast<char>(type);
  put16(out, value.size());
  out.append(value);
}

template <class T>
const T& as(const sockaddr_storage& s) {
  return *reinterpret_cast<const T*>(&s);
}

bool v4_mapped(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&as<sockaddr_in6>(s).sin6_addr);
}

// ::ffff:a.b.c.d as the IPv4 address it stands for, port kept.
sockaddr_storage unmapped(const sockaddr_storage& s) {
  sockaddr_storage out{};
  auto& in = *reinterpret_cast<sockaddr_in*>(&out);
  in.sin_family = AF_INET;
  in.sin_port = as<sockaddr_in6>(s).sin6_port;
  std::memcpy(&in.sin_addr, as<sockaddr_in6>(s).sin6_addr.s6_addr + 12, 4);
  return out;
}

// The address block and its family byte: both ends of one family, else UNSPEC and no block.
// An IPv4 client of a dual-stack listener goes as IPv4 (TCP4), as X-Forwarded-For, the access
// log and the source checks name it: an upstream's IPv4 rules would miss ::ffff:10.1.2.3.
std::string encode_addresses(const proxy_v2_info& info, std::uint8_t& family) {
  const bool mapped = v4_mapped(info.source) && v4_mapped(info.destination);
  const sockaddr_storage source = mapped ? unmapped(info.source) : info.source;
  const sockaddr_storage destination = mapped ? unmapped(info.destination) : info.destination;
  std::string addresses;
  family = 0x00;  // UNSPEC
  if (source.ss_family == AF_INET && destination.ss_family == AF_INET) {
    family = 0x11;  // TCP over IPv4
    const auto& src = as<sockaddr_in>(source);
    const auto& dst = as<sockaddr_in>(destination);
    addresses.append(reinterpret_cast<const char*>(&src.sin_addr), 4);
    addresses.append(reinterpret_cast<const char*>(&dst.sin_addr), 4);
    addresses.append(reinterpret_cast<const char*>(&src.sin_port), 2);  // already big-endian
    addresses.append(reinterpret_cast<const char*>(&dst.sin_port), 2);
  } else if (source.ss_family == AF_INET6 && destination.ss_family == AF_INET6) {
    family = 0x21;  // TCP over IPv6
    const auto& src = as<sockaddr_in6>(source);
    const auto& dst = as<sockaddr_in6>(destination);
    addresses.append(reinterpret_cast<const char*>(&src.sin6_addr), 16);
    addresses.append(reinterpret_cast<const char*>(&dst.sin6_addr), 16);
    addresses.append(reinterpret_cast<const char*>(&src.sin6_port), 2);
    addresses.append(reinterpret_cast<const char*>(&dst.sin6_port), 2);
  } else if (source.ss_family == AF_UNIX && destination.ss_family == AF_UNIX) {
    family = 0x31;  // UNIX stream
    char path[108] = {};
    std::memcpy(path, as<sockaddr_un>(source).sun_path, sizeof path);
    addresses.append(path, sizeof path);
    std::memcpy(path, as<sockaddr_un>(destination).sun_path, sizeof path);
    addresses.append(path, sizeof path);
  }
  return addresses;
}

// The value of the PP2_TYPE_SSL TLV: client flags, verify result, then its sub-TLVs.
std::string ssl_value(const proxy_v2_info& info) {
  std::string ssl;
  std::uint8_t client = pp2::client_ssl;
  // As the specification (and HAProxy) have it: SESS whenever the TLS session has a client
  // certificate, CONN only when it was sent on this connection (not on a resumption).
  if (info.client_cert) client |= pp2::client_cert_sess;
  if (info.client_cert && !info.resumed) client |= pp2::client_cert_conn;
  ssl += static_cast<char>(client);
  // `verify` is 0 when the client presented a certificate and it was verified.
  const std::uint32_t verify = (info.client_cert && info.verified) ? 0 : 1;
  for (int shift = 24; shift >= 0; shift -= 8)
    ssl += static_cast<char>((verify >> shift) & 0xff);
  tlv(ssl, pp2::ssl_version, info.tls_version);
  if (!info.common_name.empty()) tlv(ssl, pp2::ssl_cn, info.common_name);
  tlv(ssl, pp2::ssl_cipher, info.cipher);
  if (!info.signature_algorithm.empty()) tlv(ssl, pp2::ssl_sig_alg, info.signature_algorithm);
  if (!info.key_algorithm.empty()) tlv(ssl, pp2::ssl_key_alg, info.key_algorithm);
  return ssl;
}

}  // namespace

std::string build_proxy_v2_local_header() {
  std::string out(proxy_v2_signature);
  out += static_cast<char>(0x20);  // version 2, command LOCAL
  out += static_cast<char>(0x00);  // AF_UNSPEC
  put16(out, 0);
  return out;
}

std::string san_list_value(const std::vector<std::string>& sans) {
  std::string out;
  for (std::size_t i = 0; i < sans.size(); ++i) {
    if (i > 0) out += ',';
    for (const char c : sans[i]) {
      if (c == ',')
        out += "%2C";
      else if (c == '%')
        out += "%25";  // so that a receiver decoding %XX gets every SAN exactly (second read)
      else
        out += c;
    }
  }
  return out;
}

std::string build_proxy_v2_header(const proxy_v2_info& info) {
  std::uint8_t family = 0x00;
  const std::string addresses = encode_addresses(info, family);

  // Every TLV together shares the 16-bit length with the addresses.
  const std::size_t limit = 0xffff - addresses.size();
  std::string tlvs;
  if (!info.alpn.empty()) tlv(tlvs, pp2::alpn, info.alpn, limit);
  if (!info.authority.empty()) tlv(tlvs, pp2::authority, info.authority, limit);
  tlv(tlvs, pp2::ssl, ssl_value(info), limit);
  if (!info.spiffe_id.empty()) tlv(tlvs, pp2::spiffe_id, info.spiffe_id, limit);
  if (!info.uri_sans.empty()) tlv(tlvs, pp2::uri_sans, san_list_value(info.uri_sans), limit);
  if (!info.dns_sans.empty()) tlv(tlvs, pp2::dns_sans, san_list_value(info.dns_sans), limit);
  if (!info.cert_der.empty()) tlv(tlvs, pp2::cert_der, info.cert_der, limit);
  if (!info.cert_sha256.empty()) tlv(tlvs, pp2::cert_sha256, info.cert_sha256, limit);

  std::string out(proxy_v2_signature);
  out += static_cast<char>(0x21);  // version 2, command PROXY
  out += static_cast<char>(family);
  put16(out, addresses.size() + tlvs.size());
  out += addresses;
  out += tlvs;
  return out;
}

}  // namespace mtlsd::proxy
