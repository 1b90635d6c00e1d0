// PROXY protocol v2. First byte 0: the decoder on arbitrary bytes (never crashes, never claims
// more bytes than it was given, and what it accepts re-encodes to an equivalent header).
// First byte 1: a header built by build_proxy_v2_header from arbitrary fields decodes back to
// those fields.
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/proxy_protocol.hpp"
#include "mtlsd/proxy/proxy_protocol_decode.hpp"

using namespace mtlsd;
using proxy::proxy_v2_decoded;
using proxy::proxy_v2_info;

namespace {

sockaddr_storage address(FuzzedDataProvider& in, int family) {
  sockaddr_storage ss{};
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = in.ConsumeIntegral<std::uint16_t>();
    a.sin_addr.s_addr = in.ConsumeIntegral<std::uint32_t>();
    std::memcpy(&ss, &a, sizeof a);
  } else if (family == AF_INET6) {
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = in.ConsumeIntegral<std::uint16_t>();
    for (auto& b : a.sin6_addr.s6_addr)
      b = in.ConsumeIntegral<std::uint8_t>();
    std::memcpy(&ss, &a, sizeof a);
  } else if (family == AF_UNIX) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string path = in.ConsumeRandomLengthString(sizeof a.sun_path);
    std::memcpy(a.sun_path, path.data(), path.size());
    std::memcpy(&ss, &a, sizeof a);
  }
  return ss;
}

bool same_address(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    const auto& x = reinterpret_cast<const sockaddr_in&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    const auto& x = reinterpret_cast<const sockaddr_in6&>(a);
    const auto& y = reinterpret_cast<const sockaddr_in6&>(b);
    return x.sin6_port == y.sin6_port &&
           std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
  }
  if (a.ss_family == AF_UNIX)
    return std::memcmp(reinterpret_cast<const sockaddr_un&>(a).sun_path,
                       reinterpret_cast<const sockaddr_un&>(b).sun_path, 108) == 0;
  return true;
}

// Both ends v4-mapped (::ffff:a.b.c.d) go as TCP4, the IPv4 addresses they stand for, ports
// kept (fb15dfc: as X-Forwarded-For and the source checks name such a client).
bool v4_mapped(const sockaddr_storage& s) {
  return s.ss_family == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6&>(s).sin6_addr);
}
sockaddr_storage unmapped(const sockaddr_storage& s) {
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(s);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = in6.sin6_port;
  std::memcpy(&a.sin_addr, in6.sin6_addr.s6_addr + 12, 4);
  sockaddr_storage out{};
  std::memcpy(&out, &a, sizeof a);
  return out;
}

void decode_part(std::string_view bytes) {
  const auto d = proxy::decode_proxy_v2_header(bytes);
  switch (d.status) {
    case proxy_v2_decoded::state::invalid:
      fuzz::check(!d.error.empty(), "an invalid header says why");
      return;
    case proxy_v2_decoded::state::incomplete:
      fuzz::check(d.size > bytes.size() && d.size <= proxy::proxy_v2_max_header,
                  "incomplete asks for more bytes, within the maximum");
      return;
    case proxy_v2_decoded::state::complete:
      break;
  }
  fuzz::check(d.size >= 16 && d.size <= bytes.size(), "a complete header lies within the input");
  // Decoding only the header gives the same answer (no look-ahead into the payload).
  const auto again = proxy::decode_proxy_v2_header(bytes.substr(0, d.size));
  fuzz::check(again.status == proxy_v2_decoded::state::complete && again.size == d.size,
              "a header decodes the same without what follows it");
  // What was understood, encoded again, decodes to the same fields.
  if (d.local || d.size > 60000) return;  // re-encoding may add an SSL TLV the input lacked
  const auto re = proxy::decode_proxy_v2_header(proxy::build_proxy_v2_header(d.info));
  fuzz::check(re.status == proxy_v2_decoded::state::complete, "a re-encoded header decodes");
  fuzz::check(re.info.spiffe_id == d.info.spiffe_id && re.info.alpn == d.info.alpn &&
                  re.info.authority == d.info.authority && re.info.cert_der == d.info.cert_der &&
                  re.info.client_cert == d.info.client_cert,
              "a re-encoded header keeps its identity TLVs");
}

void build_part(std::string_view bytes) {
  FuzzedDataProvider in(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  static constexpr int families[] = {AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC};
  proxy_v2_info info;
  const int src_family = in.PickValueInArray(families);
  const int dst_family = in.ConsumeBool() ? src_family : in.PickValueInArray(families);
  info.source = address(in, src_family);
  info.destination = address(in, dst_family);
  info.client_cert = in.ConsumeBool();
  info.resumed = in.ConsumeBool();
  info.verified = in.ConsumeBool();
  // Sizes up to 70000 also exercise the 16-bit length limit (oversized TLVs are left out).
  const auto str = [&] { return in.ConsumeRandomLengthString(in.ConsumeBool() ? 64 : 70000); };
  info.alpn = str();
  info.authority = str();
  info.tls_version = str();
  info.common_name = str();
  info.cipher = str();
  info.signature_algorithm = str();
  info.key_algorithm = str();
  info.spiffe_id = str();
  for (int n = in.ConsumeIntegralInRange(0, 3); n > 0; --n)
    info.uri_sans.push_back(str());
  for (int n = in.ConsumeIntegralInRange(0, 3); n > 0; --n)
    info.dns_sans.push_back(str());
  info.cert_der = in.ConsumeRandomLengthString(70000);
  info.cert_sha256 = str();

  const std::string header = proxy::build_proxy_v2_header(info);
  const auto d = proxy::decode_proxy_v2_header(header + in.ConsumeRemainingBytesAsString());
  fuzz::check(d.status == proxy_v2_decoded::state::complete, "what we build decodes");
  fuzz::check(d.size == header.size(), "the decoder takes exactly the header");
  fuzz::check(!d.local, "we send PROXY, not LOCAL");
  if (src_family == dst_family && src_family != AF_UNSPEC) {
    const bool mapped = v4_mapped(info.source) && v4_mapped(info.destination);
    fuzz::check(same_address(d.info.source, mapped ? unmapped(info.source) : info.source),
                "source address round-trips");
    fuzz::check(
        same_address(d.info.destination, mapped ? unmapped(info.destination) : info.destination),
        "destination round-trips");
  } else {
    fuzz::check(d.family == 0 && d.info.source.ss_family == AF_UNSPEC, "mixed families: UNSPEC");
  }
  // Each field comes back, or (when the header would outgrow 64 KiB) is left out whole.
  const auto same_or_dropped = [](const std::string& got, const std::string& sent) {
    return got == sent || got.empty();
  };
  fuzz::check(same_or_dropped(d.info.alpn, info.alpn), "alpn");
  fuzz::check(same_or_dropped(d.info.authority, info.authority), "authority");
  fuzz::check(same_or_dropped(d.info.spiffe_id, info.spiffe_id), "spiffe_id");
  fuzz::check(same_or_dropped(d.info.cert_der, info.cert_der), "cert_der");
  fuzz::check(same_or_dropped(d.info.cert_sha256, info.cert_sha256), "cert_sha256");
  fuzz::check(d.info.uri_sans.empty() || d.info.uri_sans == info.uri_sans, "uri_sans");
  fuzz::check(d.info.dns_sans.empty() || d.info.dns_sans == info.dns_sans, "dns_sans");
  if (!d.info.tls_version.empty() || !d.info.cipher.empty() || d.info.client_cert) {
    // The SSL TLV arrived: its flags and sub-TLVs come back (sub-TLVs over 64 KiB are left out).
    fuzz::check(d.info.client_cert == info.client_cert, "client_cert");
    fuzz::check(d.info.resumed == (info.resumed && info.client_cert), "resumed");
    fuzz::check(d.info.verified == (info.verified && info.client_cert), "verified");
    fuzz::check(same_or_dropped(d.info.common_name, info.common_name), "common_name");
    fuzz::check(same_or_dropped(d.info.tls_version, info.tls_version), "tls_version");
  }
  // A header with small fields keeps every one of them.
  const std::size_t total =
      info.alpn.size() + info.authority.size() + info.tls_version.size() + info.common_name.size() +
      info.cipher.size() + info.signature_algorithm.size() + info.key_algorithm.size() +
      info.spiffe_id.size() + proxy::san_list_value(info.uri_sans).size() +
      proxy::san_list_value(info.dns_sans).size() + info.cert_der.size() + info.cert_sha256.size();
  if (total < 60000) {
    fuzz::check(d.info.alpn == info.alpn && d.info.authority == info.authority &&
                    d.info.tls_version == info.tls_version && d.info.cipher == info.cipher &&
                    d.info.common_name == info.common_name &&
                    d.info.signature_algorithm == info.signature_algorithm &&
                    d.info.key_algorithm == info.key_algorithm &&
                    d.info.spiffe_id == info.spiffe_id && d.info.cert_der == info.cert_der &&
                    d.info.cert_sha256 == info.cert_sha256 && d.info.uri_sans == info.uri_sans &&
                    d.info.dns_sans == info.dns_sans && d.info.client_cert == info.client_cert,
                "a header under 64 KiB round-trips every field");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1)
    build_part(rest);
  else
    decode_part(rest);
  return 0;
}
