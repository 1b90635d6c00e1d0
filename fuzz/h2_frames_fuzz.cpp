// The HTTP/2 client side (h2_connection_impl.hpp): nghttp2's server session with our handler
// (begin_headers, header, frame_received, data_chunk, stream_closed, the response body source)
// fed arbitrary bytes after the client preface, so that adversarial frames — HEADERS with odd
// pseudo-headers, CONTINUATION floods, DATA after END_STREAM, RST_STREAM mid-response,
// oversized header lists, trailers — reach the code that turns them into requests. The upstream
// is an in-memory echo: streams answered here (a 502 by fail(), a body echoed with trailers,
// a head-only response) so that the response callbacks run too, and every fourth left
// unanswered, so that a client's reset of it counts as premature and a handful of them close
// the connection (the rapid-reset bound, lowered to 3). Properties: no memory error, every
// stream reported at most once, only client-initiated (odd) streams reported.
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string_view>

#include "fuzz_support.hpp"
#include "h2_connection_impl.hpp"

using namespace mtlsd;
namespace h2 = mtlsd::proxy::h2;

namespace {

constexpr std::string_view preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Answers a stream at once, one of three ways by its id, or (every fourth) never; echoes request
// body as response body until the request ends.
class echo_upstream final : public h2::upstream {
 public:
  explicit echo_upstream(h2::downstream& down) : down_(down) {}
  void start(h2::stream_ptr s) override {
    switch ((s->id / 2) % 4) {  // client streams are odd: 1, 3, 5, 7 -> 0, 1, 2, 3
      case 0:
        down_.fail(*s, 0, "fuzz: upstream failed");
        return;
      case 1:
        s->response_trailers = {{"grpc-status", "0"}};
        break;
      case 2:
        s->response_end = true;
        break;
      default:
        return;  // no answer: the stream waits until the client resets it or the input ends
    }
    s->status = 200;
    s->response_headers = {{"content-type", "application/grpc"}, {"connection", "close"}};
    down_.respond(*s);
    request_data(*s);
  }
  void request_data(h2::stream& s) override {
    if (s.closed || s.answered_here || s.response_end) return;
    std::uint8_t chunk[4096];
    while (std::size_t n = s.request_body.take(chunk, sizeof chunk)) {
      s.response_body.append(chunk, n);
      down_.request_consumed(s, n);
    }
    if (s.request_end) s.response_end = true;
    down_.response_data(s);
  }
  void response_consumed(h2::stream&, std::size_t) override {}
  void cancel(h2::stream&, std::uint32_t) override {}
  boost::asio::awaitable<void> run() override { co_return; }
  void stop() override {}

 private:
  h2::downstream& down_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  boost::asio::io_context ioc;
  proxy::stream_socket client(ioc), upstream(ioc);
  config::listener cfg;
  cfg.http.max_concurrent_streams = 8;
  cfg.http.max_premature_resets = 3;
  proxy::relay_result result;
  proxy::idle_deadline clock;
  std::set<std::int64_t> reported;
  proxy::http_request_sink sink = [&reported](const proxy::http_request_report& r) {
    fuzz::check(r.stream_id > 0 && r.stream_id % 2 == 1, "only client streams are reported");
    fuzz::check(reported.insert(r.stream_id).second, "each stream is reported once");
  };
  proxy::h2_environment env{nullptr, &client, &upstream, &cfg, {}, sink, &clock, &result, true};
  h2::connection c(std::move(env));
  if (!c.open_for_fuzzing(std::make_unique<echo_upstream>(c))) return 0;
  if (c.feed(reinterpret_cast<const std::uint8_t*>(preface.data()), preface.size()) < 0) return 0;
  // Fed in two pieces, so that a frame split across reads is exercised too.
  const std::size_t half = size / 2;
  if (c.feed(data, half) >= 0) c.feed(data + half, size - half);
  return 0;
}
