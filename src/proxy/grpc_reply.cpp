// mtlsd's own answers to gRPC calls: Trailers-Only responses (grpc_reply.hpp).
#include "grpc_reply.hpp"

#include <boost/beast/core/string.hpp>

namespace mtlsd::proxy::h2 {

namespace {
constexpr std::string_view grpc_type = "application/grpc";
// gRPC's status codes (grpc/status.h) that an HTTP status maps to.
constexpr int unknown = 2, permission_denied = 7, unimplemented = 12, internal = 13,
              unavailable = 14, unauthenticated = 16;
}  // namespace

bool is_grpc_content_type(std::string_view value) {
  if (value.size() < grpc_type.size() ||
      !boost::beast::iequals(value.substr(0, grpc_type.size()), grpc_type))
    return false;
  return value.size() == grpc_type.size() || value[grpc_type.size()] == '+' ||
         value[grpc_type.size()] == ';';
}

int grpc_status_of_http(int http_status) {
  switch (http_status) {
    case 400:
      return internal;
    case 401:
      return unauthenticated;
    case 403:
      return permission_denied;
    case 404:
      return unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return unavailable;
    default:
      return unknown;
  }
}

std::string grpc_percent_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b <= 0x7e && b != '%') {
      out += c;
      continue;
    }
    out += '%';
    out += hex[b >> 4];
    out += hex[b & 0xf];
  }
  return out;
}

header_list grpc_reply_fields(int grpc_status, std::string_view message) {
  return {{"content-type", std::string(grpc_type)},
          {"grpc-status", std::to_string(grpc_status)},
          {"grpc-message", grpc_percent_encode(message)}};
}

std::string upstream_failure_message(std::string_view detail) {
  // The connect's details (upstream.cpp, net/connect.cpp): "connect to ADDRESS...",
  // "resolve HOST: ...", "DNS lookup of HOST ...".
  for (const std::string_view names_upstream : {"connect to ", "resolve ", "DNS lookup"})
    if (detail.find(names_upstream) != std::string_view::npos) return "upstream unavailable";
  if (detail.empty()) return "upstream failed before its response head";
  return std::string(detail);
}

}  // namespace mtlsd::proxy::h2
