#include "mtlsd/proxy/http_head.hpp"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <optional>
#include <vector>

namespace mtlsd::proxy {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

bool is_upgrade(const http_request_head& m) {
  return m.version() >= 11 && m.count(http::field::upgrade) > 0 &&
         http::token_list{m[http::field::connection]}.exists("upgrade");
}

void rewrite_xfcc_header(http_request_head& m, const xfcc_policy& xfcc) {
  using action = xfcc_policy::action;
  // The common policies, on every request: straight into the head, no copy of the value
  // (rewrite_xfcc's result for them: nothing, or `element` whatever the client sent).
  if (xfcc.what == action::keep) return;
  if (xfcc.what == action::remove) {
    m.erase(xfcc_header);
    return;
  }
  if (xfcc.what == action::set) {
    m.set(xfcc_header, xfcc.element);  // replaces every line the client sent
    return;
  }
  std::optional<std::string> value;
  {
    std::vector<std::string_view> existing;
    for (auto [it, end] = m.equal_range(xfcc_header); it != end; ++it)
      existing.emplace_back(it->value().data(), it->value().size());
    value = rewrite_xfcc(xfcc, existing);
  }
  m.erase(xfcc_header);
  if (value) m.set(xfcc_header, *value);
}

}  // namespace

request_head_verdict prepare_request_head(http_request_head& msg, bool chunked, bool body_done,
                                          const xfcc_policy& xfcc) {
  request_head_verdict v;
  if (msg.method() == http::verb::connect) {
    v.status = 405;
    v.reason = "Method Not Allowed";
    v.why = "CONNECT is not proxied";
    return v;
  }
  // Beast already refuses Transfer-Encoding together with Content-Length.
  if (msg.count(http::field::transfer_encoding) && !chunked) {
    v.status = 400;
    v.reason = "Bad Request";
    v.why = "Transfer-Encoding without final chunked";
    return v;
  }
  rewrite_xfcc_header(msg, xfcc);
  v.head = msg.method() == http::verb::head;
  v.upgrade = is_upgrade(msg);
  v.keep_alive = msg.keep_alive();
  if (beast::iequals(msg[http::field::expect], "100-continue")) {
    msg.erase(http::field::expect);
    v.send_continue = !body_done;
  }
  return v;
}

std::string prepare_response_head(http_response_head& msg, bool upgrade_requested) {
  if (msg.result_int() == 101 && !upgrade_requested)
    return "101 Switching Protocols without an Upgrade request";
  if (msg.count(http::field::transfer_encoding) && msg.count(http::field::content_length))
    msg.erase(http::field::content_length);
  return {};
}

}  // namespace mtlsd::proxy
