#include "mtlsd/proxy/http_framing.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include "mtlsd/proxy/xfcc.hpp"

namespace mtlsd::proxy {

namespace beast = boost::beast;
namespace http = beast::http;

void request_framing::on_request_impl(http::verb method, string_view method_text,
                                      string_view target, int version, error_code&) {
  head_.method = method;
  head_.method_text = {method_text.data(), method_text.size()};
  head_.target = {target.data(), target.size()};
  head_.version = version;
}

void request_framing::on_field_impl(http::field f, string_view name, string_view value,
                                    error_code&) {
  const std::string_view v(value.data(), value.size());
  switch (f) {
    case http::field::host:
      if (!std::exchange(host_seen_, true)) head_.host = v;
      return;
    case http::field::expect:
      if (!std::exchange(expect_seen_, true))
        head_.expect_continue = beast::iequals(v, "100-continue");
      return;
    case http::field::transfer_encoding:
      head_.transfer_encoding = true;
      return;
    case http::field::upgrade:
      upgrade_field_ = true;
      return;
    case http::field::connection:
      connection_upgrade_ = connection_upgrade_ || http::token_list{value}.exists("upgrade");
      return;
    case http::field::unknown:  // the X-Forwarded family is not in Beast's table
      if (beast::iequals(name, xfcc_header))
        head_.xfcc.push_back(v);
      else if (beast::iequals(name, "x-forwarded-for"))
        head_.xff.push_back(v);
      return;
    default:
      return;
  }
}

void request_framing::on_header_impl(error_code&) {
  head_.upgrade = head_.version >= 11 && upgrade_field_ && connection_upgrade_;
}

}  // namespace mtlsd::proxy
