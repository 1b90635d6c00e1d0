// The HTTP/1.1 relay (http_relay.hpp), the function a server-mode listener with an `http:` block
// runs after the handshake (serve_http): its loops over both sockets — request heads read and sent
// up with the X-Forwarded-* edits, request bodies (Content-Length, chunked: rewritten) and
// responses pumped at once, pipelining, 1xx, Expect: 100-continue, refusals, the tunnel after a
// 101 — driven as in production. The client is a TLS client (tls_stream, client side) on a
// loopback TCP connection, handshaken with the listener's own SSL_CTX (build_context) by an
// external TLS 1.3 PSK (cheap; handshakes are tls_stream_fuzz's); the upstream is a fake server
// on a socket pair. Both run on the relay's io_context and move only when it is quiescent
// (io_context::poll found nothing ready: every coroutine waits on a socket), one scripted step at
// a time, so that a run is deterministic and every partial read the script makes is seen by the
// relay as such. Both read everything mtlsd sends them.
//
// Input: byte 0: bits 0-2 the client's write size (whole steps, or 1, 2, 7, 64, 512, 4096 or
// 16385 bytes per TLS record), bits 3-5 the upstream's (same sizes, raw writes); bit 6: at the
// end the upstream closes first (else the client); bit 7: the client closes with a bare FIN,
// no close_notify. Byte 1: bits 0-1 the XFCC policy (remove, set, append, keep); bit 2: no
// X-Forwarded-For/-Proto; bit 3: no client address (X-Forwarded-For says "unknown"). The rest:
// a script, steps separated by "~~" and a letter: "~~u" what follows is the upstream's, "~~c"
// the client's (the script starts with the client's), "~~U" the upstream closes its sending side
// (FIN), "~~C" the client closes (close_notify unless bit 7, and FIN), "~~X" the client resets
// (RST). A step whose peer is still writing (the relay is not reading it) waits and a later step
// of the other peer goes first; when none can go, the peer that is not writing closes first. At
// the end both close. HTTP1_RELAY_FUZZ_TRACE=1 prints what each side got (to triage an input).
//
// Properties: no memory error, leak or UB; http_relay throws nothing and returns once both peers
// closed (checked: an explicit failure rather than libFuzzer's -timeout); what the client gets
// parses as responses (a HEAD's without a body), each head whole before any byte after it (unless
// the client reset), none after a final response that closes the connection, nothing unframed
// but a 101's tunnel and a body cut at the end; what the upstream gets parses as requests with
// whole heads (a tunnel aside); it gets at most what the client sent plus what mtlsd adds to each
// head; at most one request head per request the relay reported, none of a request it refused
// (400, 413, 417, 431, 501...) and no byte after it, and no complete request whose body it found
// malformed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/proxy/http_relay.hpp"
#include "mtlsd/proxy/tls_stream.hpp"
#include "mtlsd/tls/context.hpp"
#include "mtlsd/tls/verify.hpp"
#include "parser_feed.hpp"

using namespace mtlsd;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;

namespace {

tls::tls_context* server_ctx = nullptr;
bool trace = false;
SSL_CTX* client_ctx = nullptr;

constexpr std::string_view xfcc_element =
    "By=spiffe://example.org/mtlsd;Hash=0123abcd;URI=spiffe://example.org/ns/prod/sa/alice";
// What forward_request_head may add to a head beyond the client's bytes, besides one byte per
// ", " in X-Forwarded-For (each member the client separated by a bare comma): X-Forwarded-For
// (28 bytes with 192.0.2.1), X-Forwarded-Proto (26), a Connection line (at most 28), a byte
// each on Transfer-Encoding, Content-Length and TE, an absolute-form target's Host (a few), and
// X-Forwarded-Client-Cert (its name, the element and a comma; set and append).
constexpr std::size_t head_allowance = 128;

// The handshake is not what this target tests (tls_stream_fuzz and client_hello_fuzz do), and
// a full one per input would cost most of each run: the client and the listener's context share
// an external TLS 1.3 PSK, without (EC)DHE, so a handshake costs little more than its records.
// The context is otherwise build_context's (its modes and options are what the relay reads and
// writes through).
SSL_SESSION* psk = nullptr;
constexpr std::string_view psk_identity = "http1-relay-fuzz";

int server_find_psk(SSL*, const unsigned char* id, std::size_t id_len, SSL_SESSION** out) {
  *out = nullptr;
  if (std::string_view(reinterpret_cast<const char*>(id), id_len) != psk_identity) return 1;
  SSL_SESSION_up_ref(psk);
  *out = psk;
  return 1;
}

int client_use_psk(SSL*, const EVP_MD*, const unsigned char** id, std::size_t* id_len,
                   SSL_SESSION** out) {
  SSL_SESSION_up_ref(psk);
  *out = psk;
  *id = reinterpret_cast<const unsigned char*>(psk_identity.data());
  *id_len = psk_identity.size();
  return 1;
}

void init_contexts() {
  const std::string yaml =
      "listeners:\n"
      "  - name: fuzz\n"
      "    listen: 127.0.0.1:1\n"
      "    upstream: 127.0.0.1:2\n"
      "    tls: {cert: " +
      fuzz::fixture_path("server.crt") + ", key: " + fuzz::fixture_path("server.key") +
      ", session_resumption: false}\n"
      "    client_auth: {mode: none}\n"
      "    http: {}\n";
  auto loaded = config::load_text(yaml, "/fuzz/http1_relay.yaml");
  fuzz::check(loaded.config.has_value(), "the http1_relay fuzz configuration loads");
  server_ctx = new tls::tls_context(tls::build_context(loaded.config->listeners.front()));
  client_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, nullptr);

  SSL_CTX* server = server_ctx->ctx.get();
  SSL_CTX_set_options(server, SSL_OP_ALLOW_NO_DHE_KEX);
  SSL_CTX_set_psk_find_session_callback(server, server_find_psk);
  SSL_CTX_set_options(client_ctx, SSL_OP_ALLOW_NO_DHE_KEX);
  SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
  SSL_CTX_set_psk_use_session_callback(client_ctx, client_use_psk);
  SSL* ssl = SSL_new(client_ctx);
  static constexpr unsigned char aes_128_gcm_sha256[2] = {0x13, 0x01};
  static constexpr unsigned char key[32] = {1, 2, 3, 4, 5, 6, 7, 8};
  psk = SSL_SESSION_new();
  fuzz::check(ssl && psk && SSL_SESSION_set1_master_key(psk, key, sizeof key) == 1 &&
                  SSL_SESSION_set_cipher(psk, SSL_CIPHER_find(ssl, aes_128_gcm_sha256)) == 1 &&
                  SSL_SESSION_set_protocol_version(psk, TLS1_3_VERSION) == 1,
              "the fuzz PSK is made");
  SSL_free(ssl);
}

// The client's connection is TCP over loopback, as a client's is (a reset, TCP_NODELAY, the
// socket options mtlsd reads); the upstream's a socket pair (a unix: upstream's).
int listener_fd = -1;
sockaddr_in listener_addr{};

void init_listener() {
  listener_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  listener_addr.sin_family = AF_INET;
  listener_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof listener_addr;
  fuzz::check(
      listener_fd >= 0 &&
          ::bind(listener_fd, reinterpret_cast<sockaddr*>(&listener_addr), len) == 0 &&
          ::listen(listener_fd, 16) == 0 &&
          ::getsockname(listener_fd, reinterpret_cast<sockaddr*>(&listener_addr), &len) == 0,
      "the fuzz listener opens");
}

// fds[0]: mtlsd's end (accepted), fds[1]: the client's. Anything else the listener accepts (a
// process on this machine probing ports: the fuzzer once took one for its client, whose
// handshake then waited for ever) is closed.
bool tcp_pair(int fds[2]) {
  fds[1] = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fds[1] < 0) return false;
  sockaddr_in ours{}, theirs{};
  socklen_t len = sizeof ours;
  if (::connect(fds[1], reinterpret_cast<const sockaddr*>(&listener_addr), sizeof listener_addr) !=
          0 ||
      ::getsockname(fds[1], reinterpret_cast<sockaddr*>(&ours), &len) != 0) {
    ::close(fds[1]);
    return false;
  }
  for (;;) {
    len = sizeof theirs;
    fds[0] = ::accept4(listener_fd, reinterpret_cast<sockaddr*>(&theirs), &len, SOCK_CLOEXEC);
    if (fds[0] < 0) {
      ::close(fds[1]);
      return false;
    }
    if (theirs.sin_port == ours.sin_port && theirs.sin_addr.s_addr == ours.sin_addr.s_addr) break;
    ::close(fds[0]);
  }
  const int one = 1;
  ::setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return true;
}

enum class who : std::uint8_t { client, upstream };
struct step {
  who peer;
  bool close;  // else: write `bytes`
  std::string_view bytes;
  bool abort = false;  // the client resets the connection
};

struct input {
  std::vector<step> steps;  // data steps already cut into writes
  bool upstream_closes_first = false;
  bool bare_fin = false;
  proxy::http_forwarding forwarding;
  std::size_t allowance = head_allowance;  // per head, besides X-Forwarded-For's ", "
};

// The script's steps, each data step cut into writes of `piece` bytes (0: whole).
std::vector<step> parse_script(std::string_view s, std::size_t client_piece,
                               std::size_t upstream_piece) {
  std::vector<step> out;
  who current = who::client;
  auto add = [&](std::string_view bytes) {
    const std::size_t piece = current == who::client ? client_piece : upstream_piece;
    while (!bytes.empty()) {
      const std::size_t n = piece == 0 ? bytes.size() : std::min(piece, bytes.size());
      out.push_back({current, false, bytes.substr(0, n)});
      bytes.remove_prefix(n);
    }
  };
  std::size_t start = 0;
  for (std::size_t i = 0; i + 2 < s.size();) {
    const char tag = s[i + 2];
    if (s[i] != '~' || s[i + 1] != '~' || std::string_view("cuCUX").find(tag) == s.npos) {
      ++i;
      continue;
    }
    add(s.substr(start, i - start));
    if (tag == 'C' || tag == 'U' || tag == 'X')
      out.push_back({tag == 'U' ? who::upstream : who::client, true, {}, tag == 'X'});
    else
      current = tag == 'c' ? who::client : who::upstream;
    i += 3;
    start = i;
  }
  add(s.substr(start));
  return out;
}

// A parser that keeps nothing, for what the peers received: what each message is, and where
// it ends (fed by fuzz::feed_parser, which steers clear of boostorg/beast#2861).
template <bool isRequest>
class checker final : public http::basic_parser<isRequest> {
 public:
  checker() {
    this->header_limit(UINT32_MAX);
    this->body_limit(boost::none);
    this->eager(true);
  }
  unsigned status = 0;
  std::string method;
  std::size_t xff_commas = 0;  // ", " in X-Forwarded-For values
  // Parses what it can of `bytes` (the rest of a stream): how much was taken, ec an error other
  // than need_more.
  std::size_t feed(std::string_view bytes, beast::error_code& ec) {
    return fuzz::feed_parser(*this, bytes, ec, chunk_seen_);
  }

 private:
  using string_view = beast::string_view;
  using error_code = beast::error_code;
  void on_request_impl(http::verb, string_view m, string_view, int, error_code&) override {
    method.assign(m.data(), m.size());
  }
  void on_response_impl(int code, string_view, int, error_code&) override {
    status = static_cast<unsigned>(code);
  }
  void on_field_impl(http::field, string_view name, string_view value, error_code&) override {
    if (!beast::iequals(name, "x-forwarded-for")) return;
    for (std::string_view v(value.data(), value.size()); v.find(", ") != v.npos;
         v.remove_prefix(v.find(", ") + 2))
      ++xff_commas;
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(string_view b, error_code&) override { return b.size(); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {
    chunk_seen_ = true;
  }
  std::size_t on_chunk_body_impl(std::uint64_t, string_view b, error_code&) override {
    return b.size();
  }
  void on_finish_impl(error_code&) override {}
  bool chunk_seen_ = false;
};

struct peer_state {
  bool busy = false;    // a write is in progress (the relay is not reading)
  bool closed = false;  // its sending side is closed
  bool broken = false;  // a write failed: nothing more to send
};

class harness {
 public:
  explicit harness(const input& in, int client_fds[2], int upstream_fds[2])
      : in_(in),
        srv_sock_(io_, tcp_stream(), client_fds[0]),
        cli_sock_(io_, tcp_stream(), client_fds[1]),
        plain_(io_, unix_stream(), upstream_fds[0]),
        up_sock_(io_, unix_stream(), upstream_fds[1]),
        srv_tls_(srv_sock_, server_ctx->ctx.get(), true),
        cli_tls_(cli_sock_, client_ctx, false) {}

  void run() {
    asio::co_spawn(io_, serve(), [this](std::exception_ptr e) {
      fuzz::check(!e, "http_relay throws nothing");
      relay_done_ = true;
      // As the session does once the relay returned, but the client's socket only half-closed:
      // closed over bytes the client sent, it would be reset, and what mtlsd wrote last could
      // be lost on the way (the session lingers then). The client closes once it read all.
      boost::system::error_code ignored;
      srv_sock_.shutdown(proxy::stream_socket::shutdown_send, ignored);
      srv_sock_.cancel(ignored);
      plain_.close(ignored);
    });
    asio::co_spawn(io_, client(), asio::detached);
    asio::co_spawn(io_, upstream_drain(), asio::detached);
    for (;;) {
      io_.poll();
      if (io_.stopped()) break;
      if (client_ready_ && !relay_done_ && advance()) continue;
      // Nothing left to send: both peers closed (or a timer of the tunnel's runs).
      if (io_.run_one_for(std::chrono::seconds(5)) > 0) continue;
      print_trace();
      std::fprintf(stderr, "--- waiting: relay %d, client %d, upstream %d\n", !relay_done_,
                   !client_done_, !upstream_done_);
      fuzz::check(false, "the relay ends once both peers closed (no hang)");
    }
    if (trace) print_trace();
    fuzz::check(!handshake_failed_, "the TLS handshake completes");
    fuzz::check(relay_done_, "http_relay returned");
    check_client_side();
    check_upstream_side();
  }

 private:
  // HTTP1_RELAY_FUZZ_TRACE=1 (reproducing one input): what each side got, and the relay's result.
  void print_trace() const {
    std::fprintf(stderr, "--- client sent %llu bytes; got %zu:\n%s\n--- upstream got %zu:\n%s\n",
                 static_cast<unsigned long long>(client_sent_), to_client_.size(),
                 to_client_.c_str(), to_upstream_.size(), to_upstream_.c_str());
    for (const auto& r : reports_)
      std::fprintf(stderr, "--- request %lld: %s %s status %d detail \"%s\"\n",
                   static_cast<long long>(r.stream_id), r.method.c_str(), r.path.c_str(), r.status,
                   r.detail.c_str());
    std::fprintf(
        stderr, "--- result: first_end %d, aborted %d, tunnel %d, error \"%s\"; handshake %s\n",
        static_cast<int>(result_.first_end), result_.aborted, result_.tunnel, result_.error.c_str(),
        handshake_failed_                       ? "failed"
        : SSL_session_reused(srv_tls_.native()) ? "by the PSK"
                                                : "full");
  }

  static asio::generic::stream_protocol unix_stream() { return {AF_UNIX, SOCK_STREAM}; }
  static asio::generic::stream_protocol tcp_stream() { return {AF_INET, IPPROTO_TCP}; }

  asio::awaitable<void> serve() {
    tls::verify_outcome outcome;  // as session.cpp does: the verifier records its verdict here
    tls::verifier::bind(srv_tls_.native(), &outcome);
    if (co_await srv_tls_.handshake()) {
      handshake_failed_ = true;
      co_return;
    }
    proxy::http_request_sink sink = [this](const proxy::http_request_report& r) {
      reports_.push_back(r);
    };
    co_await proxy::http_relay(srv_tls_, srv_sock_, plain_, in_.forwarding, clock_, result_,
                               std::move(sink));
  }

  asio::awaitable<void> client() {
    if (co_await cli_tls_.handshake()) {
      handshake_failed_ = client_done_ = true;
      co_return;
    }
    client_ready_ = true;
    std::array<char, 4096> buf;
    for (;;) {
      auto [ec, n] = co_await cli_tls_.read_some(asio::buffer(buf));
      if (ec) break;
      to_client_.append(buf.data(), n);
    }
    // Done: a write still waiting (mtlsd no longer reads) fails now.
    client_done_ = client_.closed = true;
    boost::system::error_code ignored;
    cli_sock_.close(ignored);
  }

  asio::awaitable<void> upstream_drain() {
    std::array<char, 4096> buf;
    for (;;) {
      auto [ec, n] = co_await up_sock_.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
      if (ec) break;
      to_upstream_.append(buf.data(), n);
    }
    upstream_done_ = true;
  }

  asio::awaitable<void> client_write(std::string_view bytes) {
    client_.busy = true;
    client_sent_ += bytes.size();
    const auto ec = co_await cli_tls_.write(asio::buffer(bytes.data(), bytes.size()));
    client_.busy = false;
    if (ec) client_.broken = true;
  }

  asio::awaitable<void> upstream_write(std::string_view bytes) {
    upstream_.busy = true;
    auto [ec, n] = co_await asio::async_write(up_sock_, asio::buffer(bytes.data(), bytes.size()),
                                              as_tuple(use_awaitable));
    upstream_.busy = false;
    if (ec) upstream_.broken = true;
  }

  asio::awaitable<void> client_close() {
    if (!in_.bare_fin && !client_.broken) {
      client_.busy = true;
      co_await cli_tls_.shutdown_send();
      client_.busy = false;
    }
    boost::system::error_code ignored;
    cli_sock_.shutdown(proxy::stream_socket::shutdown_send, ignored);
  }

  // The client resets its connection (RST): SO_LINGER 0, then close.
  void abort_client() {
    client_.closed = client_aborted_ = true;
    const linger reset{1, 0};
    ::setsockopt(cli_sock_.native_handle(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    boost::system::error_code ignored;
    cli_sock_.close(ignored);
  }

  void close(who p) {
    peer_state& st = p == who::client ? client_ : upstream_;
    st.closed = true;
    boost::system::error_code ignored;
    if (p == who::upstream)
      up_sock_.shutdown(proxy::stream_socket::shutdown_send, ignored);
    else if (client_.busy)  // a TLS write is under way: no close_notify beside it
      cli_sock_.shutdown(proxy::stream_socket::shutdown_send, ignored);
    else
      asio::co_spawn(io_, client_close(), asio::detached);
  }

  // One step of the script, at a quiescent point; false when there is none left.
  bool advance() {
    for (std::size_t i = next_; i < in_.steps.size(); ++i) {
      const step& s = in_.steps[i];
      peer_state& st = s.peer == who::client ? client_ : upstream_;
      if (done_[i]) continue;
      if (st.closed || st.broken) {
        done_[i] = true;  // nothing more goes from a peer that closed
      } else if (!st.busy) {
        done_[i] = true;
        if (s.abort)
          abort_client();
        else if (s.close)
          close(s.peer);
        else if (s.peer == who::client)
          asio::co_spawn(io_, client_write(s.bytes), asio::detached);
        else
          asio::co_spawn(io_, upstream_write(s.bytes), asio::detached);
      } else {
        continue;
      }
      while (next_ < in_.steps.size() && done_[next_])
        ++next_;
      return true;
    }
    // The end (or only steps of a peer the relay does not read): the peers close, one that is
    // not writing first.
    const who order[2] = {in_.upstream_closes_first ? who::upstream : who::client,
                          in_.upstream_closes_first ? who::client : who::upstream};
    for (const bool busy_too : {false, true})
      for (const who p : order) {
        const peer_state& st = p == who::client ? client_ : upstream_;
        if (!st.closed && (busy_too || !st.busy)) {
          close(p);
          return true;
        }
      }
    return false;
  }

  // The client's bytes: responses in order, one per reported request (a HEAD's without a body),
  // 1xx before them, each head whole; nothing after a final response that closes, or past a 101.
  void check_client_side() {
    std::string_view rest = to_client_;
    std::size_t answered = 0;
    while (!rest.empty()) {
      checker<false> p;
      const bool head = answered < reports_.size() && reports_[answered].method == "HEAD";
      if (head) p.skip(true);
      beast::error_code ec;
      rest.remove_prefix(p.feed(rest, ec));
      fuzz::check(!ec, "the client gets well-formed responses");
      if (!p.is_done() && p.is_header_done()) {
        beast::error_code ignored;
        p.put_eof(ignored);  // a body that ends with the connection (else one cut short)
        return;
      }
      if (!p.is_done()) {  // a head cut short: only by the client's own reset
        fuzz::check(client_aborted_, "every byte the client gets follows a whole head");
        return;
      }
      if (p.status >= 100 && p.status < 200 && p.status != 101) continue;
      ++answered;
      if (p.status == 101) return;  // the tunnel's bytes follow
      fuzz::check(rest.empty() || p.keep_alive(),
                  "nothing reaches the client after a response that closes the connection");
    }
  }

  // The upstream's bytes: requests, each head whole; no more heads than requests reported, none
  // of a refused one; no more bytes than the client sent and mtlsd adds to heads.
  void check_upstream_side() {
    std::string_view rest = to_upstream_;
    std::size_t heads = 0, complete = 0, allowance = 0;
    bool clean = true;  // everything parsed, up to a message's end
    while (!rest.empty()) {
      checker<true> p;
      beast::error_code ec;
      rest.remove_prefix(p.feed(rest, ec));
      if (ec) {
        fuzz::check(result_.tunnel, "the upstream gets well-formed requests");
        clean = false;
        break;
      }
      if (p.is_header_done()) {
        ++heads;
        allowance += in_.allowance + p.xff_commas;
      }
      if (!p.is_done()) {
        fuzz::check(result_.tunnel || p.is_header_done(),
                    "every byte the upstream gets follows a whole head");
        clean = false;
        break;
      }
      ++complete;
    }
    fuzz::check(to_upstream_.size() <= client_sent_ + allowance,
                "the upstream gets no more than the client sent and mtlsd adds to heads");
    if (result_.tunnel) return;
    fuzz::check(heads <= reports_.size(), "at most one request head upstream per request");
    const bool refused = result_.first_end == proxy::relay_end::local;
    const bool body_malformed = refused && result_.error.starts_with("malformed request body");
    if (refused && !body_malformed) {
      fuzz::check(heads < reports_.size(), "a refused request's head never reaches the upstream");
      fuzz::check(clean && rest.empty(), "no byte reaches the upstream after a refused request");
    }
    if (body_malformed)
      fuzz::check(complete < heads, "a request whose body was malformed never reaches its end");
  }

  const input& in_;
  asio::io_context io_;
  proxy::stream_socket srv_sock_, cli_sock_, plain_, up_sock_;
  proxy::tls_stream srv_tls_, cli_tls_;
  proxy::idle_deadline clock_;  // no timeouts: the run ends when the peers do
  proxy::relay_result result_;
  std::vector<proxy::http_request_report> reports_;
  std::vector<bool> done_ = std::vector<bool>(in_.steps.size());
  std::size_t next_ = 0;
  peer_state client_, upstream_;
  bool client_ready_ = false, handshake_failed_ = false, relay_done_ = false;
  bool client_aborted_ = false, client_done_ = false, upstream_done_ = false;
  std::uint64_t client_sent_ = 0;
  std::string to_client_, to_upstream_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  std::signal(SIGPIPE, SIG_IGN);  // a peer may write after mtlsd closed
  init_contexts();
  init_listener();
  trace = std::getenv("HTTP1_RELAY_FUZZ_TRACE") != nullptr;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::restart_interrupted_calls();
  if (size < 2) return 0;
  static constexpr std::size_t pieces[] = {0, 1, 2, 7, 64, 512, 4096, 16385};
  constexpr std::size_t max_steps = 128;  // each costs a turn of the io_context or more
  const std::string_view script(reinterpret_cast<const char*>(data) + 2, size - 2);
  input in;
  std::size_t client_piece = pieces[data[0] & 7], upstream_piece = pieces[(data[0] >> 3) & 7];
  for (;;) {
    in.steps = parse_script(script, client_piece, upstream_piece);
    if (in.steps.size() <= max_steps) break;
    client_piece = client_piece == 0 ? 0 : client_piece * 2;
    upstream_piece = upstream_piece == 0 ? 0 : upstream_piece * 2;
    if (client_piece == 0 && upstream_piece == 0) return 0;  // too many steps of their own
  }
  in.upstream_closes_first = (data[0] & 64) != 0;
  in.bare_fin = (data[0] & 128) != 0;
  auto& f = in.forwarding;
  using action = proxy::xfcc_policy::action;
  static constexpr action policies[] = {action::remove, action::set, action::append, action::keep};
  f.xfcc.what = policies[data[1] & 3];
  if (f.xfcc.what == action::set || f.xfcc.what == action::append) {
    f.xfcc.element = xfcc_element;
    in.allowance += xfcc_element.size() + 28;
  }
  f.x_forwarded_for = f.x_forwarded_proto = (data[1] & 4) == 0;
  if ((data[1] & 8) == 0) f.client_ip = "192.0.2.1";

  int client_fds[2], upstream_fds[2];
  if (!tcp_pair(client_fds)) return 0;
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, upstream_fds) != 0) {
    ::close(client_fds[0]);
    ::close(client_fds[1]);
    return 0;
  }
  {
    harness h(in, client_fds, upstream_fds);
    h.run();
  }
  ERR_clear_error();
  return 0;
}
