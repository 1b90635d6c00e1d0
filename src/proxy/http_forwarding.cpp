#include "mtlsd/proxy/http_forwarding.hpp"

#include <algorithm>
#include <boost/beast/http/field.hpp>

namespace mtlsd::proxy {
namespace {

constexpr std::string_view xff = "x-forwarded-for";
constexpr std::string_view xfp = "x-forwarded-proto";

}  // namespace

void apply_forwarding(header_list& headers, const http_forwarding& f) {
  // XFCC: the values the client sent, then the policy's verdict.
  if (f.xfcc.what != xfcc_policy::action::keep) {
    std::vector<std::string_view> existing;
    for (const auto& [name, value] : headers)
      if (name == xfcc_header) existing.push_back(value);
    auto replacement = rewrite_xfcc(f.xfcc, existing);
    std::string value = replacement ? std::move(*replacement) : std::string();
    std::erase_if(headers, [](const header_field& h) { return h.first == xfcc_header; });
    if (replacement) headers.emplace_back(std::string(xfcc_header), std::move(value));
  }
  if (f.x_forwarded_for && !f.client_ip.empty()) {
    // Several X-Forwarded-For lines are one list (RFC 9110 5.3): joined, then ours appended.
    std::string joined;
    for (const auto& [name, value] : headers)
      if (name == xff) joined += (joined.empty() ? "" : ", ") + value;
    std::erase_if(headers, [](const header_field& h) { return h.first == xff; });
    joined += (joined.empty() ? "" : ", ") + f.client_ip;
    headers.emplace_back(std::string(xff), std::move(joined));
  }
  if (f.x_forwarded_proto) {
    std::erase_if(headers, [](const header_field& h) { return h.first == xfp; });
    headers.emplace_back(std::string(xfp), "https");
  }
}

void apply_forwarding(http_request_head& msg, const http_forwarding& f) {
  if (f.x_forwarded_for && !f.client_ip.empty() && msg.find(xff) == msg.end()) {
    msg.set(xff, f.client_ip);  // the usual case: no list to join, no copy
  } else if (f.x_forwarded_for && !f.client_ip.empty()) {
    std::string joined;
    auto [first, last] = msg.equal_range(xff);
    for (auto it = first; it != last; ++it)
      joined += (joined.empty() ? "" : ", ") + std::string(it->value());
    msg.erase(xff);
    joined += (joined.empty() ? "" : ", ") + f.client_ip;
    msg.set(xff, joined);
  }
  if (f.x_forwarded_proto) msg.set(xfp, "https");
}

bool is_hop_by_hop(std::string_view name, std::string_view value) {
  if (name == "te") return value != "trailers";
  static constexpr std::string_view connection_specific[] = {
      "connection",        "keep-alive", "proxy-connection",
      "transfer-encoding", "upgrade",    "http2-settings"};
  return std::find(std::begin(connection_specific), std::end(connection_specific), name) !=
         std::end(connection_specific);
}

}  // namespace mtlsd::proxy
