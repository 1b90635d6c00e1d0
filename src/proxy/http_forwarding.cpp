#include "mtlsd/proxy/http_forwarding.hpp"

#include <algorithm>
#include <span>

namespace mtlsd::proxy {
void apply_forwarding(header_list& headers, const http_forwarding& f) {
  // XFCC: the values the client sent, then the policy's verdict.
  if (f.xfcc.what != xfcc_policy::action::keep) {
    std::vector<std::string_view> existing;
    for (const auto& [name, value] : headers)
      if (same_field_name(name, xfcc_header)) existing.push_back(value);
    auto replacement = rewrite_xfcc(f.xfcc, existing);
    std::string value = replacement ? std::move(*replacement) : std::string();
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xfcc_header); });
    if (replacement) headers.emplace_back(std::string(xfcc_header), std::move(value));
  }
  if (f.x_forwarded_for && !f.client_ip.empty()) {
    // Several X-Forwarded-For lines are one list (RFC 9110 5.3): joined, then ours appended.
    std::string joined;
    for (const auto& [name, value] : headers)
      if (same_field_name(name, xff_header)) joined += (joined.empty() ? "" : ", ") + value;
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xff_header); });
    joined += (joined.empty() ? "" : ", ") + f.client_ip;
    headers.emplace_back(std::string(xff_header), std::move(joined));
  }
  if (f.x_forwarded_proto) {
    std::erase_if(headers,
                  [](const header_field& h) { return same_field_name(h.first, xfp_header); });
    headers.emplace_back(std::string(xfp_header), "https");
  }
}

void forward_request_head(std::string_view head, const request_head_view& seen,
                          const http_forwarding& f, std::string& out) {
  using action = xfcc_policy::action;
  const bool xfcc = f.xfcc.what != action::keep;
  const bool xff_too = f.x_forwarded_for && !f.client_ip.empty();
  std::string_view drop[4];
  std::size_t n = 0;
  if (xfcc) drop[n++] = xfcc_header;
  if (xff_too) drop[n++] = xff_header;
  if (f.x_forwarded_proto) drop[n++] = xfp_header;
  if (seen.expect_continue) drop[n++] = "expect";
  copy_head_except(head, std::span(drop, n), out);
  // The common XFCC policies need no copy of what the client sent: set is ours alone, remove
  // is nothing.
  if (xfcc && f.xfcc.what == action::set) {
    out.append("X-Forwarded-Client-Cert: ").append(f.xfcc.element).append("\r\n");
  } else if (xfcc && f.xfcc.what != action::remove) {
    if (auto ours = rewrite_xfcc(f.xfcc, seen.xfcc))
      out.append("X-Forwarded-Client-Cert: ").append(*ours).append("\r\n");
  }
  if (xff_too) {
    // Several X-Forwarded-For lines are one list (RFC 9110 5.3): joined, then ours appended.
    out.append("X-Forwarded-For: ");
    for (std::string_view v : seen.xff)
      out.append(v).append(", ");
    out.append(f.client_ip).append("\r\n");
  }
  if (f.x_forwarded_proto) out.append("X-Forwarded-Proto: https\r\n");
  out.append("\r\n");
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
