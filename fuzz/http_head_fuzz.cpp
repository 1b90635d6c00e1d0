// The HTTP mode's head handling (http_head.hpp) behind Beast's parser, as http_relay runs it.
// Input: a policy byte, a request head, "\0\0\0\0", a response head. Properties: a request
// that is forwarded re-serializes into a head that parses again, with the same method and
// target and exactly the X-Forwarded-Client-Cert the policy asks for (no header smuggled in by
// the rewrite); no Expect: 100-continue goes upstream; a refused request has a status and a
// reason. A forwarded response never carries both Transfer-Encoding and Content-Length.
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/http_head.hpp"
#include "mtlsd/proxy/http_relay.hpp"

using namespace mtlsd;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// Parses a head only (eager off: put() stops once the head is done), as the relay does.
template <bool isRequest>
bool parse_head(http::parser<isRequest, http::buffer_body>& p, std::string_view bytes) {
  p.header_limit(proxy::http_head_limit);
  p.body_limit(boost::none);
  beast::error_code ec;
  p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
  if (!ec && !p.is_header_done()) p.put_eof(ec);
  return !ec && p.is_header_done();
}

template <bool isRequest>
std::string serialize_head(http::message<isRequest, http::buffer_body>& m) {
  m.body().data = nullptr;
  m.body().size = 0;
  m.body().more = true;
  http::serializer<isRequest, http::buffer_body> sr{m};
  sr.split(true);
  std::string out;
  while (!sr.is_header_done()) {
    beast::error_code ec;
    std::size_t n = 0;
    sr.next(ec, [&](beast::error_code&, const auto& buffers) {
      for (auto b : beast::buffers_range_ref(buffers)) {
        out.append(static_cast<const char*>(b.data()), b.size());
        n += b.size();
      }
    });
    if (ec) break;
    sr.consume(n);
  }
  return out;
}

void request_part(std::uint8_t policy_byte, std::string_view bytes) {
  http::request_parser<http::buffer_body> p;
  if (!parse_head(p, bytes)) return;
  auto& msg = p.get();
  const std::string method(msg.method_string());
  const std::string target(msg.target());

  proxy::xfcc_policy xfcc;
  xfcc.what = static_cast<proxy::xfcc_policy::action>(policy_byte % 4);
  xfcc.element = (policy_byte & 4) ? "By=spiffe://td/us;Hash=ab;URI=spiffe://td/client" : "";
  std::vector<std::string> sent;
  for (auto [it, end] = msg.equal_range(proxy::xfcc_header); it != end; ++it)
    sent.emplace_back(it->value());

  const auto v = proxy::prepare_request_head(msg, p.chunked(), p.is_done(), xfcc);
  if (v.status != 0) {
    fuzz::check((v.status == 400 || v.status == 405) && !v.reason.empty() && !v.why.empty(),
                "a refusal has a status, a reason and a cause");
    return;
  }
  fuzz::check(msg.method() != http::verb::connect, "CONNECT is never forwarded");
  const std::string out = serialize_head(msg);
  http::request_parser<http::buffer_body> again;
  fuzz::check(parse_head(again, out), "the forwarded head parses again");
  auto& m2 = again.get();
  fuzz::check(m2.method_string() == method && m2.target() == target, "method and target kept");
  fuzz::check(!beast::iequals(m2[http::field::expect], "100-continue"),
              "Expect: 100-continue is answered here, not forwarded");

  // Exactly the XFCC the policy asks for.
  std::vector<std::string> got;
  for (auto [it, end] = m2.equal_range(proxy::xfcc_header); it != end; ++it)
    got.emplace_back(it->value());
  using action = proxy::xfcc_policy::action;
  switch (xfcc.what) {
    case action::keep: {
      fuzz::check(got.size() == sent.size(), "keep forwards the client's XFCC lines");
      break;
    }
    case action::remove:
      fuzz::check(got.empty(), "remove strips every XFCC line");
      break;
    case action::set:
      fuzz::check(xfcc.element.empty() ? got.size() == 1 && got[0].empty()
                                       : got.size() == 1 && got[0] == xfcc.element,
                  "set leaves exactly our element");
      break;
    case action::append: {
      const std::vector<std::string_view> views(sent.begin(), sent.end());
      const auto want = proxy::rewrite_xfcc(xfcc, views);
      fuzz::check(want ? got.size() == 1 && got[0] == *want : got.empty(),
                  "append leaves one line: theirs, then ours");
      break;
    }
  }
}

void response_part(bool upgrade, std::string_view bytes) {
  http::response_parser<http::buffer_body> p;
  if (!parse_head(p, bytes)) return;
  auto& msg = p.get();
  const auto why = proxy::prepare_response_head(msg, upgrade);
  if (!why.empty()) {
    fuzz::check(msg.result_int() == 101 && !upgrade, "only an unasked-for 101 is refused");
    return;
  }
  fuzz::check(
      !(msg.count(http::field::transfer_encoding) && msg.count(http::field::content_length)),
      "never both Transfer-Encoding and Content-Length");
  const std::string out = serialize_head(msg);
  http::response_parser<http::buffer_body> again;
  fuzz::check(parse_head(again, out), "the forwarded response head parses again");
  fuzz::check(again.get().result_int() == msg.result_int(), "status kept");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto split = in.find(std::string_view("\0\0\0\0", 4));
  request_part(data[0], in.substr(0, split));
  if (split != std::string_view::npos) response_part((data[0] & 8) != 0, in.substr(split + 4));
  return 0;
}
