#include "mtlsd/proxy/proxy_protocol_decode.hpp"

#include <netinet/in.h>
#include <sys/un.h>

#include <array>
#include <bitset>
#include <cstring>
#include <optional>

namespace mtlsd::proxy {
namespace {

// Type codes the encoder does not send but a peer may.
constexpr std::uint8_t pp2_crc32c = 0x03;
constexpr std::uint8_t pp2_noop = 0x04;
constexpr std::uint8_t pp2_unique_id = 0x05;
constexpr std::uint8_t pp2_netns = 0x30;

std::uint8_t byte_at(std::string_view s, std::size_t i) {
  return static_cast<std::uint8_t>(s[i]);
}
std::size_t be16(std::string_view s, std::size_t i) {
  return (std::size_t{byte_at(s, i)} << 8) | byte_at(s, i + 1);
}
std::uint32_t be32(std::string_view s, std::size_t i) {
  return (std::uint32_t{byte_at(s, i)} << 24) | (std::uint32_t{byte_at(s, i + 1)} << 16) |
         (std::uint32_t{byte_at(s, i + 2)} << 8) | byte_at(s, i + 3);
}

// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: headers are small and rare.
std::uint32_t crc32c(std::string_view data) {
  std::uint32_t crc = 0xffffffff;
  for (const char c : data) {
    crc ^= static_cast<std::uint8_t>(c);
    for (int k = 0; k < 8; ++k)
      crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// One SAN of a list TLV, with san_list_value's escapes undone: "%2C" is a comma inside the SAN,
// "%25" a percent sign (review: they were left escaped). Any other '%' stays as it is.
std::string unescape_san(std::string_view v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string_view next = v.substr(i, 3);
    if (next == "%2C" || next == "%25") {
      out += next == "%2C" ? ',' : '%';
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

std::vector<std::string> split_commas(std::string_view v) {
  std::vector<std::string> out;
  for (;;) {
    const auto comma = v.find(',');
    out.push_back(unescape_san(v.substr(0, comma)));
    if (comma == std::string_view::npos) return out;
    v.remove_prefix(comma + 1);
  }
}

proxy_v2_decoded invalid(std::string why) {
  proxy_v2_decoded d;
  d.status = proxy_v2_decoded::state::invalid;
  d.error = std::move(why);
  return d;
}

template <class T>
void store(sockaddr_storage& ss, const T& addr) {
  static_assert(sizeof(T) <= sizeof(sockaddr_storage));
  std::memcpy(&ss, &addr, sizeof addr);
}

void decode_addresses(std::uint8_t family, std::string_view a, proxy_v2_info& info) {
  switch (family >> 4) {
    case 1: {  // INET: src addr, dst addr, src port, dst port
      sockaddr_in src{}, dst{};
      src.sin_family = dst.sin_family = AF_INET;
      std::memcpy(&src.sin_addr, a.data(), 4);
      std::memcpy(&dst.sin_addr, a.data() + 4, 4);
      std::memcpy(&src.sin_port, a.data() + 8, 2);  // both big-endian
      std::memcpy(&dst.sin_port, a.data() + 10, 2);
      store(info.source, src);
      store(info.destination, dst);
      break;
    }
    case 2: {
      sockaddr_in6 src{}, dst{};
      src.sin6_family = dst.sin6_family = AF_INET6;
      std::memcpy(&src.sin6_addr, a.data(), 16);
      std::memcpy(&dst.sin6_addr, a.data() + 16, 16);
      std::memcpy(&src.sin6_port, a.data() + 32, 2);
      std::memcpy(&dst.sin6_port, a.data() + 34, 2);
      store(info.source, src);
      store(info.destination, dst);
      break;
    }
    case 3: {
      sockaddr_un src{}, dst{};
      src.sun_family = dst.sun_family = AF_UNIX;
      static_assert(sizeof src.sun_path == 108);
      std::memcpy(src.sun_path, a.data(), 108);
      std::memcpy(dst.sun_path, a.data() + 108, 108);
      store(info.source, src);
      store(info.destination, dst);
      break;
    }
    default:
      break;
  }
}

// The specification's own types, whose value means one thing: one of them twice is ambiguous,
// and refused. Any other type (mtlsd's and other applications' 0xE0-0xEF, 0xF0-0xFF, unassigned
// ones) is skipped even when repeated (as HAProxy does; the specification forbids no repeat);
// of mtlsd's own, the first counts. NOOP is skipped always.
bool spec_type(std::uint8_t type) {
  switch (type) {
    case pp2::alpn:
    case pp2::authority:
    case pp2_crc32c:
    case pp2_unique_id:
    case pp2::ssl:
    case pp2_netns:
      return true;
    default:
      return false;
  }
}
bool ssl_subtype(std::uint8_t type) {
  return type >= pp2::ssl_version && type <= pp2::ssl_key_alg;
}

// Walks a TLV list; `on_tlv(type, value)` returns an error or "".
template <class F>
std::string walk_tlvs(std::string_view block, F&& on_tlv) {
  std::size_t at = 0;
  while (at < block.size()) {
    if (block.size() - at < 3) return "truncated TLV header";
    const std::uint8_t type = byte_at(block, at);
    const std::size_t len = be16(block, at + 1);
    if (block.size() - at - 3 < len)
      return "TLV type " + std::to_string(type) + " overruns its block";
    if (auto err = on_tlv(type, block.substr(at + 3, len)); !err.empty()) return err;
    at += 3 + len;
  }
  return {};
}

std::string decode_ssl(std::string_view v, proxy_v2_info& info) {
  if (v.size() < 5) return "SSL TLV shorter than 5 bytes";
  const std::uint8_t client = byte_at(v, 0);
  const std::uint32_t verify = be32(v, 1);
  info.client_cert = (client & (pp2::client_cert_conn | pp2::client_cert_sess)) != 0;
  // A certificate of the session not sent on this connection: a resumption.
  info.resumed = info.client_cert && (client & pp2::client_cert_conn) == 0;
  info.verified = info.client_cert && verify == 0;
  std::bitset<256> seen;
  return walk_tlvs(v.substr(5), [&](std::uint8_t type, std::string_view value) -> std::string {
    if (seen[type]) return ssl_subtype(type) ? "SSL sub-TLV repeated" : std::string();
    seen[type] = true;
    switch (type) {
      case pp2::ssl_version:
        info.tls_version = value;
        break;
      case pp2::ssl_cn:
        info.common_name = value;
        break;
      case pp2::ssl_cipher:
        info.cipher = value;
        break;
      case pp2::ssl_sig_alg:
        info.signature_algorithm = value;
        break;
      case pp2::ssl_key_alg:
        info.key_algorithm = value;
        break;
      default:
        break;
    }
    return {};
  });
}

// The size of the address block a family byte announces; none for an unknown family.
std::optional<std::size_t> address_size_of(std::uint8_t family) {
  switch (family) {
    case 0x00:
      return 0;
    case 0x11:
    case 0x12:
      return 12;
    case 0x21:
    case 0x22:
      return 36;
    case 0x31:
    case 0x32:
      return 216;
    default:
      return std::nullopt;
  }
}

// One top-level TLV (not NOOP, not CRC32C) into `info`; returns an error or "".
std::string apply_tlv(std::uint8_t type, std::string_view v, proxy_v2_info& info) {
  switch (type) {
    case pp2::alpn:
      info.alpn = v;
      break;
    case pp2::authority:
      info.authority = v;
      break;
    case pp2::ssl:
      return decode_ssl(v, info);
    case pp2::spiffe_id:
      info.spiffe_id = v;
      break;
    case pp2::uri_sans:
      info.uri_sans = split_commas(v);
      break;
    case pp2::dns_sans:
      info.dns_sans = split_commas(v);
      break;
    case pp2::cert_der:
      info.cert_der = v;
      break;
    case pp2::cert_sha256:
      info.cert_sha256 = v;
      break;
    case pp2_unique_id:
      if (v.size() > 128) return "UNIQUE_ID TLV longer than 128 bytes";
      break;
    case pp2_netns:
    default:
      break;  // unknown types are ignored
  }
  return {};
}

// The TLVs after the addresses of `header`: each of the specification's types at most once
// (spec_type). Sets `crc_at` to the offset of the CRC32C value in `header` when there is one.
// Returns an error or "".
std::string decode_tlvs(std::string_view header, std::size_t address_size, proxy_v2_info& info,
                        std::size_t& crc_at) {
  std::bitset<256> seen;
  std::size_t offset = 16 + address_size;
  return walk_tlvs(header.substr(offset),
                   [&](std::uint8_t type, std::string_view v) -> std::string {
                     const std::size_t value_at = offset + 3;
                     offset += 3 + v.size();
                     if (type == pp2_noop) return {};
                     if (seen[type] && !spec_type(type)) return {};
                     if (seen[type]) return "TLV type " + std::to_string(type) + " repeated";
                     seen[type] = true;
                     if (type != pp2_crc32c) return apply_tlv(type, v, info);
                     if (v.size() != 4) return "CRC32C TLV is not 4 bytes";
                     crc_at = value_at;
                     return {};
                   });
}

// The CRC32C of the header with its own value zeroed equals that value.
bool crc_matches(std::string_view header, std::size_t crc_at) {
  std::string copy(header);
  const std::uint32_t expected = be32(copy, crc_at);
  std::memset(copy.data() + crc_at, 0, 4);
  return crc32c(copy) == expected;
}

}  // namespace

proxy_v2_decoded decode_proxy_v2_header(std::string_view bytes) {
  proxy_v2_decoded d;
  // A prefix of the signature may still become a header.
  const std::size_t sig = std::min(bytes.size(), proxy_v2_signature.size());
  if (bytes.substr(0, sig) != proxy_v2_signature.substr(0, sig))
    return invalid("no PROXY v2 signature");
  if (bytes.size() < 16) {
    d.size = 16;
    return d;
  }
  const std::uint8_t ver_cmd = byte_at(bytes, 12);
  if ((ver_cmd >> 4) != 2) return invalid("PROXY protocol version is not 2");
  if ((ver_cmd & 0x0f) > 1) return invalid("unknown PROXY v2 command");
  d.local = (ver_cmd & 0x0f) == 0;
  d.family = byte_at(bytes, 13);
  std::optional<std::size_t> address_size = address_size_of(d.family);
  const std::size_t len = be16(bytes, 14);
  // LOCAL discards the address block, family included (the specification, and HAProxy): an
  // unknown family or a block shorter than its family's is no reason to refuse a health check
  // (review). Its TLVs are read only after a block of a known family that fits.
  if (d.local && (!address_size || len < *address_size)) address_size = len;
  if (!address_size) return invalid("unknown PROXY v2 address family");
  if (len < *address_size) return invalid("PROXY v2 length shorter than its addresses");
  if (bytes.size() < 16 + len) {
    d.size = 16 + len;
    return d;
  }
  const std::string_view header = bytes.substr(0, 16 + len);
  if (!d.local) decode_addresses(d.family, header.substr(16, *address_size), d.info);
  std::size_t crc_at = 0;  // offset of the CRC32C value in `header`, 0 = none
  if (auto err = decode_tlvs(header, *address_size, d.info, crc_at); !err.empty())
    return invalid("PROXY v2 " + err);
  if (crc_at != 0 && !crc_matches(header, crc_at)) return invalid("PROXY v2 CRC32C mismatch");
  d.status = proxy_v2_decoded::state::complete;
  d.size = header.size();
  return d;
}

}  // namespace mtlsd::proxy
