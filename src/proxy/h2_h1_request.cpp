#include "h2_h1_request.hpp"

namespace mtlsd::proxy::h2 {

std::string request_head(stream& s, const http_forwarding& fwd, bool& chunked) {
  header_list fields;
  std::string cookie;  // HTTP/2 may split Cookie into several fields (RFC 9113 8.2.3)
  bool has_length = false;
  for (auto& h : s.request_headers) {
    if (is_hop_by_hop(h.first, h.second) || h.first == "te" || h.first == "host") continue;
    if (h.first == "cookie") {
      cookie += (cookie.empty() ? "" : "; ") + h.second;
      continue;
    }
    if (h.first == "content-length") {
      // Written as a number, not as spelt ("0005"): an HTTP/1.1 upstream reads one canonical
      // Content-Length, as from forward_request_head. nghttp2 let only digits through and
      // checked them against the DATA frames; one field only.
      has_length = true;
      const auto first_digit = h.second.find_first_not_of('0');
      h.second = first_digit == std::string::npos ? "0" : h.second.substr(first_digit);
    }
    fields.push_back(std::move(h));
  }
  s.request_headers.clear();
  if (!cookie.empty()) fields.emplace_back("cookie", std::move(cookie));
  apply_forwarding(fields, fwd);
  std::string head = s.method + " " + s.path + " HTTP/1.1\r\nhost: " + s.authority + "\r\n";
  for (const auto& [name, value] : fields)
    head += name + ": " + value + "\r\n";
  // Trailers alone (no DATA) still need a chunked body to carry them.
  const bool no_body = s.request_end && s.request_body.empty() && s.request_trailers.empty();
  chunked = !has_length && !no_body;
  if (chunked) head += "transfer-encoding: chunked\r\n";
  return head + "\r\n";
}

std::string last_chunk(const header_list& trailers) {
  std::string out = "0\r\n";
  for (const auto& [name, value] : trailers)
    if (kept_in_request_trailers(name)) out += name + ": " + value + "\r\n";
  return out + "\r\n";
}

}  // namespace mtlsd::proxy::h2
