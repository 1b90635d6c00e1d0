// Inbound PROXY headers (v1 text and v2 binary) as they arrive on an accept_proxy_protocol
// listener. The input's first byte chooses how the rest is split into segments; the rest is the
// first bytes of a connection.
//
// The parser (parse_proxy_header) never crashes, never claims more bytes than it was given,
// decides the same on the header alone as with what follows it, and finds every proper prefix
// of a complete header (up to 600 bytes) incomplete.
//
// The socket reader (read_proxy_header, what a listener runs) reads the bytes off a socket
// pair, sent one segment at a time with the reader running after each, as a peer's segments
// arrive. Whatever the segmentation: its verdict is the parser's on all the bytes at once (a
// peer that closes before a verdict: "closed before a complete PROXY header"); it takes exactly
// the header and what follows stays readable byte for byte (a refused header: never more than
// the line up to its first LF, or the length a v2 header announced); and what it holds while it
// waits for more is within twice the bytes sent plus a constant, never what a header announced
// (ASan's allocator hooks count it; a review found 16 bytes pinning 64 KiB).
#include <fcntl.h>
#include <sanitizer/allocator_interface.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "mtlsd/proxy/proxy_header.hpp"
#include "mtlsd/proxy/proxy_header_read.hpp"
#include "mtlsd/proxy/proxy_protocol_decode.hpp"

namespace asio = boost::asio;
using mtlsd::fuzz::check;
using mtlsd::proxy::inbound_proxy_header;
using mtlsd::proxy::parse_proxy_header;
using state = inbound_proxy_header::state;

namespace {

// --- the parser alone ------------------------------------------------------------------------

void check_parser(std::string_view bytes) {
  const auto h = parse_proxy_header(bytes);
  switch (h.status) {
    case state::invalid:
      check(!h.error.empty(), "an invalid header says why");
      break;
    case state::incomplete:
      check(h.size == 0 || h.size > bytes.size(), "incomplete asks for more");
      check(h.size <= mtlsd::proxy::proxy_v2_max_header, "within the maximum");
      check(h.version != 1 || bytes.size() < mtlsd::proxy::proxy_v1_max_header,
            "a v1 line is complete or refused by 107 bytes");
      break;
    case state::complete: {
      check(h.size > 0 && h.size <= bytes.size(), "the header lies in the input");
      check(h.version == 1 || h.version == 2, "a known version");
      const auto again = parse_proxy_header(bytes.substr(0, h.size));
      check(again.status == state::complete && again.size == h.size &&
                again.has_addresses == h.has_addresses,
            "the header alone decodes the same");
      check(!h.has_addresses || h.source.ss_family == h.destination.ss_family,
            "both addresses of one family");
      // Every proper prefix is incomplete, never invalid (the reader stops at the first verdict
      // that is not incomplete).
      if (h.size <= 600)
        for (std::size_t n = 1; n < h.size; ++n)
          check(parse_proxy_header(bytes.substr(0, n)).status == state::incomplete,
                "a prefix of a valid header is incomplete");
      break;
    }
  }
}

// --- what the reader holds: bytes allocated and not freed on this thread while counting -------

thread_local bool counting = false;
thread_local long long live = 0;

void on_malloc(const volatile void*, std::size_t size) {
  if (counting) live += static_cast<long long>(size);
}
void on_free(const volatile void* p) {
  if (counting)
    live -= static_cast<long long>(__sanitizer_get_allocated_size(const_cast<const void*>(p)));
}

// Coroutine frames, the pending wait, the verdict's strings: what a reader holds with nothing
// read (measured: under 2.5 KiB).
constexpr long long held_at_rest = 8 * 1024;

// Segment lengths from the first byte: 0 sends everything at once; else lengths from 1 to
// 2^(k mod 17), drawn by a generator the byte seeds, for the first 160 segments (a v1 line's
// 107 bytes one at a time, a v2 header's fixed part and its first TLVs); the rest goes at once
// (a run per byte of a 64 KiB header would cost seconds).
struct segments {
  std::uint32_t x;
  std::size_t most;
  int left_to_draw = 160;
  explicit segments(std::uint8_t k)
      : x(k * 2654435761u | 1u), most(k == 0 ? 0 : std::size_t{1} << (k % 17)) {}
  std::size_t next(std::size_t left) {
    if (most == 0 || left_to_draw == 0) return left;
    --left_to_draw;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return std::min<std::size_t>(left, 1 + x % most);
  }
};

// The most a reader may take before its verdict: v1, the line up to its first LF within 107
// bytes; v2, the 16 fixed bytes and the length they announce; anything else, the probe.
std::size_t may_take(std::string_view bytes) {
  const auto starts = [&](std::string_view sig) {
    return bytes.substr(0, sig.size()) == sig.substr(0, std::min(bytes.size(), sig.size()));
  };
  if (starts("PROXY ")) {
    const auto lf = bytes.find('\n');
    return std::min(lf == std::string_view::npos ? bytes.size() : lf + 1,
                    mtlsd::proxy::proxy_v1_max_header);
  }
  if (!starts(mtlsd::proxy::proxy_v2_signature) || bytes.size() < 16) return 16;
  return 16 + ((std::size_t{static_cast<std::uint8_t>(bytes[14])} << 8) |
               static_cast<std::uint8_t>(bytes[15]));
}

struct verdict {
  bool done = false;
  mtlsd::proxy::error_code ec;
  inbound_proxy_header h;
};

void check_reader(std::string_view bytes, std::uint8_t split) {
  static asio::io_context ioc;
  int fds[2];
  check(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "a socket pair");
  ::fcntl(fds[1], F_SETFL, O_NONBLOCK);
  mtlsd::proxy::stream_socket sock(ioc);
  sock.assign(asio::generic::stream_protocol(AF_UNIX, 0), fds[0]);
  verdict v;

  live = 0;
  counting = true;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto [ec, h] = co_await mtlsd::proxy::read_proxy_header(sock);
        v.ec = ec;
        v.h = std::move(h);
        v.done = true;
      },
      asio::detached);
  ioc.restart();
  ioc.poll();
  segments seg(split);
  std::size_t sent = 0;
  while (!v.done && sent < bytes.size()) {
    const ssize_t w =
        ::send(fds[1], bytes.data() + sent, seg.next(bytes.size() - sent), MSG_NOSIGNAL);
    check(w > 0, "the reader takes what it may before its verdict");
    sent += static_cast<std::size_t>(w);
    ioc.restart();
    ioc.poll();
    if (!v.done)
      check(live <= 2 * static_cast<long long>(sent) + held_at_rest,
            "what the reader holds while it waits follows the bytes sent");
  }
  if (!v.done) {
    ::shutdown(fds[1], SHUT_WR);
    ioc.restart();
    ioc.poll();
  }
  counting = false;
  check(v.done, "a verdict once the peer has closed");

  // What follows the header is still there, byte for byte.
  std::string rest;
  for (;;) {
    if (sent < bytes.size()) {
      const ssize_t w = ::send(fds[1], bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (w > 0) sent += static_cast<std::size_t>(w);
    }
    char buf[4096];
    const ssize_t r = ::recv(fds[0], buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      rest.append(buf, static_cast<std::size_t>(r));
    } else if (sent == bytes.size()) {
      break;
    }
  }
  ::close(fds[1]);
  const std::size_t taken = bytes.size() - rest.size();

  const auto ref = parse_proxy_header(bytes);
  if (ref.status == state::incomplete) {
    check(v.ec == asio::error::eof && v.h.status == state::invalid &&
              v.h.error == "connection closed before a complete PROXY header",
          "a header cut short: the peer closed before a verdict");
    check(taken == bytes.size(), "a header cut short is read to its end");
    return;
  }
  check(!v.ec, "a verdict, not a read error");
  check(v.h.status == ref.status && v.h.error == ref.error && v.h.size == ref.size &&
            v.h.version == ref.version && v.h.has_addresses == ref.has_addresses &&
            std::memcmp(&v.h.source, &ref.source, sizeof ref.source) == 0 &&
            std::memcmp(&v.h.destination, &ref.destination, sizeof ref.destination) == 0,
        "the reader's verdict is the parser's on all the bytes, however they came");
  if (ref.status == state::complete)
    check(taken == ref.size && rest == bytes.substr(ref.size),
          "exactly the header is taken; what follows stays readable");
  else
    check(taken <= may_take(bytes), "a refused header: nothing past what it may take");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  check(__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free) != 0,
        "the allocator hooks installed");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  mtlsd::fuzz::restart_interrupted_calls();
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_parser(bytes);
  check_reader(bytes, data[0]);
  return 0;
}
