// Helpers shared by the HTTP/2 halves (h2_stream.hpp).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "h2_stream.hpp"

namespace mtlsd::proxy::h2 {

std::vector<nghttp2_nv> to_nv(const header_list& headers) {
  std::vector<nghttp2_nv> out;
  out.reserve(headers.size());
  for (const auto& [name, value] : headers)
    out.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                   reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                   value.size(), NGHTTP2_NV_FLAG_NONE});
  return out;
}

int collect_output(nghttp2_session* session, std::string& out, std::size_t limit) {
  while (out.size() < limit) {
    const std::uint8_t* data = nullptr;
    const auto n = nghttp2_session_mem_send(session, &data);
    if (n < 0) return static_cast<int>(n);
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return 0;
}

asio::awaitable<void> write_signal::wait() {
  if (pending_) co_return;
  co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace mtlsd::proxy::h2
