#include "h2_h1_response.hpp"

#include <boost/beast/http/rfc7230.hpp>
#include <cctype>

#include "h2_h1_request.hpp"
#include "mtlsd/proxy/http_forwarding.hpp"
#include "mtlsd/proxy/http_framing.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

namespace mtlsd::proxy::h2 {
namespace {

namespace http = boost::beast::http;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

std::string_view refused_status_for_http2(unsigned status) {
  if (const auto why = response_status_refusal(status); !why.empty()) return why;
  if (status == 101) return "answered 101 Switching Protocols";
  return {};
}

std::string_view unframable_for_http2(const http::fields& fields) {
  bool coded = false, other_coding = false;
  std::string_view unreadable;  // the first Transfer-Encoding value's fault, if any
  for (const auto& f : fields)
    if (f.name() == http::field::transfer_encoding) {
      coded = true;
      const transfer_codings codings = read_transfer_encoding({f.value().data(), f.value().size()});
      if (unreadable.empty()) unreadable = unreadable_transfer_encoding(codings);
      other_coding = other_coding || codings.other;
    }
  if (!coded) return {};
  if (fields.count(http::field::content_length) != 0)
    return "a response with both Transfer-Encoding and Content-Length";
  if (!unreadable.empty()) return unreadable;
  if (other_coding) return "a response with a transfer coding other than chunked";
  return {};
}

void take_response_head(const http::fields& fields, int status, std::optional<std::uint64_t> length,
                        std::set<std::string>& named_by_connection, header_list& out) {
  for (const auto& f : fields)
    if (f.name() == http::field::connection)
      for (auto token : http::token_list(f.value()))
        named_by_connection.insert(lower(std::string_view(token.data(), token.size())));
  for (const auto& f : fields) {
    std::string name = lower(std::string_view(f.name_string().data(), f.name_string().size()));
    std::string value(f.value());
    if (is_hop_by_hop(name, value) || name == "te" || named_by_connection.count(name) ||
        name == "content-length")
      continue;
    out.emplace_back(std::move(name), std::move(value));
  }
  if (length && status != 204) out.emplace_back("content-length", std::to_string(*length));
}

bool take_trailers(const http::fields& fields, const std::set<std::string>& named_by_connection,
                   header_list& out) {
  std::size_t size = 0;
  for (const auto& f : fields) {
    std::string name = lower(std::string_view(f.name_string().data(), f.name_string().size()));
    std::string value(f.value());
    size += name.size() + value.size() + 32;
    if (size > http_head_limit) return false;
    if (kept_in_trailers(name) && !named_by_connection.count(name))
      out.emplace_back(std::move(name), std::move(value));
  }
  return true;
}

}  // namespace mtlsd::proxy::h2
