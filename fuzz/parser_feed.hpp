#pragma once
// Feeding a stream to a Beast basic_parser a piece at a time, as the fuzz harnesses' checking
// parsers read what a peer received (admin_server_fuzz, http1_relay_fuzz).
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstddef>
#include <string_view>

namespace mtlsd::fuzz {

// Parses what it can of `bytes` (the rest of a stream) into `parser`: how much was taken; `ec`
// an error other than need_more. Never calls put with fewer than five bytes after a first chunk
// "0\r\n" before any chunk header was seen (`chunk_seen`, set by the parser's
// on_chunk_header_impl): Beast 1.81 asserts then (boostorg/beast#2861, as framing_base::put_body
// says). `header_bytes`, if given, gets how many bytes the header took once it is done.
template <class Parser>
std::size_t feed_parser(Parser& parser, std::string_view bytes, boost::beast::error_code& ec,
                        const bool& chunk_seen, std::size_t* header_bytes = nullptr) {
  std::size_t used = 0;
  for (;;) {
    const std::string_view rest = bytes.substr(used);
    ec = {};
    if (rest.empty() || parser.is_done()) return used;
    if (!chunk_seen && parser.is_header_done() && parser.chunked() && rest.size() < 5 &&
        rest.starts_with("0\r\n"))
      return used;
    const bool header_was_done = parser.is_header_done();
    const std::size_t n = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    used += n;
    if (header_bytes && !header_was_done && parser.is_header_done()) *header_bytes = used;
    if (ec == boost::beast::http::error::need_more) {
      ec = {};
      if (n == 0) return used;
      continue;
    }
    if (ec || n == 0) return used;
  }
}

}  // namespace mtlsd::fuzz
