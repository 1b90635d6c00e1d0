// The admin listener (admin/admin_server.cpp: GET/HEAD /metrics, /healthz, /readyz) as mtlsd runs
// it: one admin::server, made once, on a loopback TCP address or a unix socket, serving a small
// Prometheus registry (a counter, a histogram with a label) and a readiness function, on the fuzz
// process's io_context. Each input scripts client connections to it, moved one step at a time
// whenever everything waits on a socket (io_context::poll found nothing ready), so that runs are
// deterministic: every client writes its bytes in pieces, reads whatever the server sends until
// it closes, and ends with a half-close (so the server always sees the end of the stream and
// never waits on its 10 s deadline) or a reset. A last connection then sends nothing.
//
// Input: byte 0: bit 0 the unix socket (else 127.0.0.1), bit 1 ready (else not ready), bits 3-5
// the default write size (whole, 1, 2, 3, 7, 64, 512 or 4096 bytes; doubled until the script has
// at most 32 writes). Byte 1: the counter's value, and its low 4 bits the histogram's
// observations. The rest: a script, steps separated by "~~" and a character: "~~0" to "~~7" what
// follows goes to that client connection (the script starts with connection 0's; a connection is
// opened by its first step, and again by a step after it ended, 8 in all), "~~C" the current
// connection half-closes, "~~X" it resets (RST), "~~p" and a digit 0-7 its write size from then
// on, "~~r" what follows is the readiness reason, "~~d" the readiness details, "~~l" the
// histogram's label value, "~~v" byte values the histogram observes, "~~E" (anywhere) a crowd
// first: admin::max_connections connections that send half a request and take every place, so
// that the script's connections evict them (64 connections: a run costs ten times more). At the
// end every open connection half-closes. ADMIN_SERVER_FUZZ_TRACE=1 prints what each connection
// sent and got (to triage an input). The io_context runs the server alone: the clients are plain
// non-blocking sockets, read and written between its turns.
//
// Properties, on what each client gets: only whole HTTP/1.0 or 1.1 responses (a reset connection
// aside, whose last one may be cut), with a status the server gives (200, 404, 405, 503; 400, 413
// or 431 refusing a request it could not read, with Connection: close), exactly one
// Content-Length, no Transfer-Encoding, a body of that length (none after a HEAD, refused or not,
// whose Content-Length is the GET's); at most one response per request sent, nothing after a
// response that closes the connection. A request read (parsed here by Beast without limits) gets
// the answer its method and path call for (405 with Allow for other methods; the query ignored but
// for /readyz's `exclude=upstream` parameter, whose readiness here is always ready with the same
// details), with `Cache-Control: no-store`, its keep-alive and the body a model gives: the
// registry's text, which must parse as Prometheus text (every non-comment line
// `name{labels} value`), "ok", the readiness reason and details. A request well within the limits,
// with no Transfer-Encoding and (HTTP/1.1) one Host, is never refused. The server ends every
// connection once its client did (no hang, no deadline), counts no error (no exception), never
// crashes (ASan, UBSan, LSan) and takes a new connection afterwards; the crowd gets nothing.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "mtlsd/admin/admin_server.hpp"
#include "mtlsd/net/socket.hpp"
#include "parser_feed.hpp"

using namespace mtlsd;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// What the server serves this run: the registry and readiness the input chose.
struct served_state : prometheus::Collectable {
  std::shared_ptr<prometheus::Registry> registry;
  admin::readiness ready;
  std::vector<prometheus::MetricFamily> Collect() const override { return registry->Collect(); }
};

asio::io_context* ioc = nullptr;
std::shared_ptr<served_state> state;
prometheus::Counter* errors = nullptr;  // the server's error count: stays 0
struct listening {
  std::unique_ptr<admin::server> server;
  net::stream_endpoint endpoint;
};
listening tcp_server, unix_server;
std::string unix_path;
bool trace = false;

// A parser that keeps what the checks need of each message: status or method and target,
// version, the fields they look at, the body. Calls put again with fewer than five bytes after a
// first chunk "0\r\n" never (Beast 1.81 asserts then, boostorg/beast#2861).
template <bool isRequest>
class checker final : public http::basic_parser<isRequest> {
 public:
  checker() {
    this->header_limit(UINT32_MAX);
    this->body_limit(boost::none);
    this->eager(false);
  }
  unsigned status = 0;
  int version = 0;
  std::string method, target, body, cache_control, allow;
  std::size_t content_lengths = 0, header_bytes = 0, hosts = 0;
  bool transfer_encoding = false;
  // Parses what it can of `bytes` (the rest of a stream): how much was taken; ec an error other
  // than need_more.
  std::size_t feed(std::string_view bytes, beast::error_code& ec) {
    return fuzz::feed_parser(*this, bytes, ec, chunk_seen_, &header_bytes);
  }

 private:
  using string_view = beast::string_view;
  using error_code = beast::error_code;
  void on_request_impl(http::verb, string_view m, string_view t, int v, error_code&) override {
    method.assign(m.data(), m.size());
    target.assign(t.data(), t.size());
    version = v;
  }
  void on_response_impl(int code, string_view, int v, error_code&) override {
    status = static_cast<unsigned>(code);
    version = v;
  }
  void on_field_impl(http::field f, string_view, string_view value, error_code&) override {
    const std::string v(value.data(), value.size());
    if (f == http::field::content_length) ++content_lengths;
    if (f == http::field::transfer_encoding) transfer_encoding = true;
    if (f == http::field::host) ++hosts;
    if (f == http::field::cache_control) cache_control = v;
    if (f == http::field::allow) allow = v;
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(string_view b, error_code&) override {
    body.append(b.data(), b.size());
    return b.size();
  }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {
    chunk_seen_ = true;
  }
  std::size_t on_chunk_body_impl(std::uint64_t, string_view b, error_code&) override {
    return b.size();
  }
  void on_finish_impl(error_code&) override {}
  bool chunk_seen_ = false;
};

// Prometheus text format 0.0.4, as far as a line goes: comments, or `name{label="value",...}
// value [timestamp]` with the escapes \\, \" and \n only, every line ended by a newline.
bool is_metric_name(std::string_view s, bool label) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(c == ':' && !label) && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool prometheus_line_ok(std::string_view line) {
  if (line.empty()) return false;
  if (line.front() == '#') return true;
  std::size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ')
    ++i;
  if (!is_metric_name(line.substr(0, i), false)) return false;
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (i < line.size() && line[i] != '}') {
      const std::size_t eq = line.find('=', i);
      if (eq == line.npos || !is_metric_name(line.substr(i, eq - i), true)) return false;
      if (eq + 1 >= line.size() || line[eq + 1] != '"') return false;
      i = eq + 2;
      for (;; ++i) {
        if (i >= line.size()) return false;
        if (line[i] == '"') break;
        if (line[i] != '\\') continue;
        if (++i >= line.size() || std::string_view("\\\"n").find(line[i]) == line.npos)
          return false;
      }
      ++i;
      if (i < line.size() && line[i] == ',') ++i;
    }
    if (i >= line.size()) return false;
    ++i;
  }
  if (i >= line.size() || line[i] != ' ') return false;
  std::string_view rest = line.substr(i + 1);
  const std::size_t space = rest.find(' ');
  const std::string value(rest.substr(0, space));
  char* end = nullptr;
  std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size()) return false;
  if (space == rest.npos) return true;
  rest.remove_prefix(space + 1);
  if (rest.starts_with('-')) rest.remove_prefix(1);
  return !rest.empty() && rest.find_first_not_of("0123456789") == rest.npos;
}

bool prometheus_text_ok(std::string_view text) {
  if (text.empty()) return true;
  if (text.back() != '\n') return false;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t nl = text.find('\n', start);
    if (!prometheus_line_ok(text.substr(start, nl - start))) return false;
    start = nl + 1;
  }
  return true;
}

// What the readiness function serves for /readyz?exclude=upstream: ready, with `r`'s details.
admin::readiness without_upstream(const admin::readiness& r) {
  return {true, {}, r.details};
}

// What the server answers a request it read: its status and body (admin_server.cpp's respond).
struct answer {
  unsigned status;
  std::string body;
};
answer model(const std::string& method, std::string_view target, const std::string& metrics) {
  if (method != "GET" && method != "HEAD") return {405, "method not allowed\n"};
  // Absolute form (RFC 9112 3.2.2): the path after the scheme and authority.
  for (std::string_view scheme : {"http://", "https://"})
    if (target.size() >= scheme.size() && beast::iequals(target.substr(0, scheme.size()), scheme)) {
      target.remove_prefix(scheme.size());
      const auto path = target.find_first_of("/?");
      target = path == target.npos || target[path] == '?' ? "/" : target.substr(path);
      break;
    }
  const auto mark = target.find('?');
  std::string_view query = mark == target.npos ? std::string_view() : target.substr(mark + 1);
  target = target.substr(0, mark);
  if (target == "/metrics") return {200, metrics};
  if (target == "/healthz") return {200, "ok\n"};
  if (target == "/readyz") {
    bool excluded = false;  // a parameter of the query is exactly exclude=upstream
    while (!excluded) {
      const auto end = query.find('&');
      excluded = query.substr(0, end) == "exclude=upstream";
      if (end == query.npos) break;
      query.remove_prefix(end + 1);
    }
    const auto r = excluded ? without_upstream(state->ready) : state->ready;
    return {r.ready ? 200u : 503u,
            (r.ready ? "ready\n" : "not ready: " + r.why + "\n") + r.details};
  }
  return {404, "not found; try /metrics, /healthz or /readyz\n"};
}

// A request as the client sent it: what the server answers it with, and whether it may be
// refused (any Transfer-Encoding, an HTTP/1.1 request without exactly one Host, or near the
// server's header or body limit).
struct sent_request {
  std::string method, target;
  bool keep_alive = true;
  bool may_be_refused = false;
};

// The requests in what a client sent, as far as they are whole; `more`: bytes after them,
// `more_head`: those begin as a HEAD request (whose refusal has no body either).
std::vector<sent_request> requests_in(std::string_view sent, bool& more, bool& more_head) {
  std::vector<sent_request> out;
  while (!sent.empty()) {
    checker<true> p;
    beast::error_code ec;
    const std::size_t n = p.feed(sent, ec);
    if (ec || !p.is_done()) break;
    sent.remove_prefix(n);
    out.push_back({p.method, p.target, p.keep_alive(),
                   p.chunked() || p.transfer_encoding || (p.version >= 11 && p.hosts != 1) ||
                       p.header_bytes > 7 * 1024 || p.content_length().value_or(0) > 3 * 1024});
  }
  more = !sent.empty();
  more_head = sent.starts_with("HEAD ");
  return out;
}

constexpr std::size_t write_sizes[] = {0, 1, 2, 3, 7, 64, 512, 4096};

enum class step_kind : std::uint8_t { data, close, reset };
struct step {
  unsigned index;  // the client connection, 0-7
  step_kind kind;
  std::string_view bytes;
};

struct input {
  bool unix_socket = false, crowd = false;
  std::vector<step> steps;
  admin::readiness ready;
  std::string label;
  std::vector<double> observations;
  unsigned counter = 0;
};

// The script's steps, each data step cut into writes of its connection's size (scale: each
// size times this, to keep the steps few).
std::vector<step> parse_script(std::string_view s, std::size_t first_size, std::size_t scale,
                               input& in) {
  std::vector<step> out;
  std::array<std::size_t, 8> size;
  size.fill(first_size);
  unsigned current = 0;
  char section = '0';  // a connection's bytes, or 'r', 'd', 'l', 'v'
  auto add = [&](std::string_view bytes) {
    switch (section) {
      case 'r':
        in.ready.why.append(bytes);
        return;
      case 'd':
        in.ready.details.append(bytes);
        return;
      case 'l':
        in.label.append(bytes);
        return;
      case 'v':
        for (const unsigned char b : bytes)
          in.observations.push_back(b == 255 ? 1e300 : (b - 100) / 8.0);
        return;
      default:
        break;
    }
    const std::size_t piece = size[current] * scale;
    while (!bytes.empty()) {
      const std::size_t n = piece == 0 ? bytes.size() : std::min(piece, bytes.size());
      out.push_back({current, step_kind::data, bytes.substr(0, n)});
      bytes.remove_prefix(n);
    }
  };
  std::size_t start = 0;
  for (std::size_t i = 0; i + 2 < s.size();) {
    const char tag = s[i + 2];
    if (s[i] != '~' || s[i + 1] != '~' ||
        std::string_view("01234567CXEprdlv").find(tag) == s.npos) {
      ++i;
      continue;
    }
    add(s.substr(start, i - start));
    i += 3;
    if (tag >= '0' && tag <= '7') {
      current = static_cast<unsigned>(tag - '0');
      section = '0';
    } else if (tag == 'C' || tag == 'X') {
      out.push_back({current, tag == 'C' ? step_kind::close : step_kind::reset, {}});
      section = '0';
    } else if (tag == 'E') {
      in.crowd = true;
      section = '0';
    } else if (tag == 'p') {
      if (i < s.size()) size[current] = write_sizes[static_cast<unsigned char>(s[i++]) & 7];
      section = '0';
    } else {
      section = tag;
    }
    start = i;
  }
  add(s.substr(start));
  return out;
}

// A client: a plain non-blocking socket, outside the io_context (which runs the server alone),
// so that a write of the script costs a system call, not a coroutine.
struct connection {
  connection() = default;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() {
    if (fd >= 0) ::close(fd);
  }
  int fd = -1;
  std::string sent, got;
  std::string pending;        // written by the script, not yet taken by the socket
  bool broken = false;        // a write failed: nothing more goes
  bool closed = false;        // half-closed or reset by the client
  bool reset = false;         // reset by the client
  bool done_reading = false;  // the server ended it (or the client reset)
  bool crowd = false;         // one of the crowd, which sent half a request
  bool busy() const { return !pending.empty(); }
};

class harness {
 public:
  explicit harness(const input& in) : in_(in), server_(in.unix_socket ? unix_server : tcp_server) {}

  void run() {
    if (in_.crowd) {
      for (std::size_t i = 0; i < admin::max_connections; ++i) {
        connection& c = open();
        c.crowd = true;
        write(c, "GET /metrics HTTP/1.1\r\n");
      }
    }
    live_.reserve(conns_.size() + 8);
    for (;;) {
      settle();
      if (pump()) continue;
      if (advance()) continue;
      if (all_done()) break;
      if (wait_for_progress()) continue;
      print_trace();
      fuzz::check(false, "the server ends every connection once its client did (no hang)");
    }
    if (trace) print_trace();
    for (const auto& c : conns_)
      check(*c);
    probe();
  }

 private:
  // Runs everything ready until all waits on a socket again (one poll does: it goes on until the
  // reactor finds nothing new).
  void settle() { ioc->poll(); }

  // Nothing moved: waits for the server (a handler run) or a client socket (pump) for up to 5 s
  // in all, in short slices, since a client's socket is outside the io_context: a FIN or bytes
  // the kernel delivers to it late wake no handler (review). False when neither moved: the
  // server's only timer left is its 10 s deadline, a hang.
  bool wait_for_progress() {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    do {
      if (ioc->run_one_for(std::chrono::milliseconds(50)) > 0 || pump()) return true;
    } while (std::chrono::steady_clock::now() < until);
    return false;
  }

  connection& open() {
    auto& c = *conns_.emplace_back(std::make_unique<connection>());
    live_.push_back(&c);
    const sockaddr* addr = server_.endpoint.data();
    c.fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fuzz::check(c.fd >= 0 && ::connect(c.fd, addr, server_.endpoint.size()) == 0,
                "a client connects to the admin listener");
    ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) | O_NONBLOCK);
    if (!in_.unix_socket) {
      const int one = 1;
      ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return c;
  }

  // Hands the socket what it takes of c.pending; true if anything changed.
  static bool flush(connection& c) {
    bool moved = false;
    while (!c.pending.empty()) {
      const ssize_t n = ::send(c.fd, c.pending.data(), c.pending.size(), MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0 && errno == EINTR) continue;
      moved = true;
      if (n <= 0) {
        c.broken = true;  // the server closed: the rest cannot go
        c.pending.clear();
        break;
      }
      c.pending.erase(0, static_cast<std::size_t>(n));
    }
    return moved;
  }

  // Reads what the server sent; true if anything arrived or the stream ended.
  static bool drain(connection& c) {
    bool moved = false;
    std::array<char, 16 * 1024> buf;
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf.data(), buf.size(), 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return moved;
      if (n < 0 && errno == EINTR) continue;
      moved = true;
      if (n <= 0) {  // the end, or a reset by the server
        c.done_reading = true;
        return true;
      }
      c.got.append(buf.data(), static_cast<std::size_t>(n));
    }
  }

  // Every client that still reads or writes reads what it can and writes what it can; true if
  // anything moved. The crowd only once the script is done: it waits, or was evicted.
  bool pump() {
    polled_.clear();
    which_.clear();
    const bool crowd_too = next_ == in_.steps.size();
    std::size_t kept = 0;
    for (connection* c : live_) {
      if (c->fd < 0 || (c->done_reading && !c->busy())) continue;  // no longer live
      live_[kept++] = c;
      if (c->crowd && !crowd_too) continue;
      const short events =
          static_cast<short>((c->done_reading ? 0 : POLLIN) | (c->busy() ? POLLOUT : 0));
      polled_.push_back({c->fd, events, 0});
      which_.push_back(c);
    }
    live_.resize(kept);
    if (polled_.empty() || ::poll(polled_.data(), polled_.size(), 0) <= 0) return false;
    bool moved = false;
    for (std::size_t i = 0; i < polled_.size(); ++i) {
      if (polled_[i].revents == 0) continue;
      connection& c = *which_[i];
      if (c.busy()) moved = flush(c) || moved;
      if (!c.done_reading) moved = drain(c) || moved;
    }
    return moved;
  }

  void write(connection& c, std::string_view bytes) {
    c.sent.append(bytes);
    c.pending.append(bytes);
    flush(c);
  }

  static void half_close(connection& c) {
    c.closed = true;
    ::shutdown(c.fd, SHUT_WR);
  }

  static void reset(connection& c) {
    c.closed = c.reset = c.done_reading = true;
    const linger zero{1, 0};
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &zero, sizeof zero);
    ::close(c.fd);
    c.fd = -1;
  }

  // One step of the script, or a close at its end; false when none can go now.
  bool advance() {
    for (std::size_t i = next_; i < in_.steps.size(); ++i) {
      if (done_[i]) continue;
      const step& s = in_.steps[i];
      connection*& c = current_[s.index];
      if (c && c->busy()) continue;  // its later steps wait too
      done_[i] = true;
      while (next_ < in_.steps.size() && done_[next_])
        ++next_;
      if (!c || c->closed) {
        if (opened_ == max_script_connections) return true;  // the step is dropped
        ++opened_;
        c = &open();
      }
      if (s.kind == step_kind::reset)
        reset(*c);
      else if (s.kind == step_kind::close)
        half_close(*c);
      else if (!c->broken)
        write(*c, s.bytes);
      return true;
    }
    if (next_ < in_.steps.size()) return false;  // steps wait on writes
    bool closed = false;
    for (auto& c : conns_)
      if (!c->closed && !c->busy()) {
        half_close(*c);
        closed = true;
      }
    return closed;
  }

  bool all_done() const {
    if (next_ < in_.steps.size()) return false;
    for (const auto& c : conns_)
      if (!c->closed || c->busy() || !c->done_reading) return false;
    return true;
  }

  void print_trace() const {
    for (std::size_t i = 0; i < conns_.size(); ++i) {
      const auto& c = *conns_[i];
      if (c.crowd && c.got.empty()) continue;
      std::fprintf(stderr,
                   "--- connection %zu%s%s%s: sent %zu bytes:\n%s\n--- got %zu bytes:\n%s\n", i,
                   c.crowd ? " (crowd)" : "", c.reset ? " (reset)" : "",
                   c.done_reading ? "" : " (still reading)", c.sent.size(), c.sent.c_str(),
                   c.got.size(), c.got.c_str());
    }
  }

  void check(const connection& c) {
    bool more = false, more_head = false;
    const auto requests = requests_in(c.sent, more, more_head);
    std::string_view rest = c.got;
    std::size_t answered = 0;
    while (!rest.empty()) {
      const sent_request* req = answered < requests.size() ? &requests[answered] : nullptr;
      fuzz::check(req || (more && answered == requests.size()),
                  "at most one response per request sent");
      checker<false> p;
      const bool head = req ? req->method == "HEAD" : more_head;
      if (head) p.skip(true);
      beast::error_code ec;
      rest.remove_prefix(p.feed(rest, ec));
      if (!ec && !p.is_done() && c.reset) return;  // cut by the client's own reset
      fuzz::check(!ec && p.is_done(), "only whole, well-formed responses");
      ++answered;
      fuzz::check(p.version == 10 || p.version == 11, "HTTP/1.0 or HTTP/1.1 responses");
      const auto length = p.content_length();
      fuzz::check(p.content_lengths == 1 && !p.transfer_encoding && length,
                  "one Content-Length, no Transfer-Encoding");
      const unsigned s = p.status;
      const bool refusal = s == 400 || s == 413 || s == 431;
      fuzz::check(refusal || s == 200 || s == 404 || s == 405 || s == 503,
                  "a status the admin server gives");
      if (refusal) {
        fuzz::check(!p.keep_alive(), "a refusal closes the connection");
        fuzz::check(!req || req->may_be_refused, "a request within the limits is not refused");
      } else {
        fuzz::check(req != nullptr, "a response that is no refusal answers a whole request");
        if (metrics_.empty())  // what the registry serves, unchanged during the run
          metrics_ = prometheus::TextSerializer().Serialize(state->Collect());
        const answer a = model(req->method, req->target, metrics_);
        fuzz::check(s == a.status, "the status the method and path call for");
        fuzz::check(p.cache_control == "no-store", "Cache-Control: no-store");
        fuzz::check(p.keep_alive() == req->keep_alive, "the request's keep-alive");
        if (s == 405) fuzz::check(p.allow == "GET, HEAD", "a 405 says Allow: GET, HEAD");
        if (head)
          fuzz::check(*length == a.body.size(), "a HEAD's Content-Length is the GET's");
        else
          fuzz::check(p.body == a.body, "the body the model gives");
        if (!head && req->target.substr(0, req->target.find('?')) == "/metrics" && s == 200)
          fuzz::check(prometheus_text_ok(p.body), "/metrics answers parse as Prometheus text");
      }
      if (!head) fuzz::check(p.body.size() == *length, "a body of its Content-Length");
      fuzz::check(rest.empty() || p.keep_alive(),
                  "nothing after a response that closes the connection");
    }
    if (c.crowd) fuzz::check(c.got.empty(), "half a request gets no answer");
  }

  // Afterwards the listener still takes connections: a new one that sends nothing and
  // half-closes is accepted, read to its end and closed (a request would cost as much again).
  void probe() {
    connection& c = open();
    half_close(c);
    while (!c.done_reading) {
      settle();
      if (pump() || c.done_reading) continue;
      if (!wait_for_progress()) {
        print_trace();
        fuzz::check(false, "the admin listener takes a new connection afterwards");
      }
    }
    fuzz::check(c.got.empty(), "nothing for a connection that sent nothing");
  }

  static constexpr std::size_t max_script_connections = 8;  // each costs about a request
  std::size_t opened_ = 0;
  const input& in_;
  const listening& server_;
  std::vector<std::unique_ptr<connection>> conns_;
  std::array<connection*, 8> current_{};
  std::vector<bool> done_ = std::vector<bool>(in_.steps.size());
  std::size_t next_ = 0;
  std::string metrics_;
  std::vector<connection*> live_, which_;  // conns_ that still read or write; those polled
  std::vector<pollfd> polled_;
};

listening listen_at(const std::string& text) {
  auto parsed = config::parse_address(text);
  fuzz::check(std::holds_alternative<config::address>(parsed), "the fuzz admin address parses");
  listening l;
  l.server = std::make_unique<admin::server>(
      *ioc, std::get<config::address>(parsed), state, [](admin::readiness_checks checks) {
        return checks == admin::readiness_checks::all ? state->ready
                                                      : without_upstream(state->ready);
      });
  l.server->count_errors_in(errors);
  l.server->start();
  auto bound = config::parse_address(l.server->bound_address());
  auto ep = net::literal_endpoint(std::get<config::address>(bound));
  fuzz::check(std::holds_alternative<net::stream_endpoint>(ep), "the admin listener is bound");
  l.endpoint = std::get<net::stream_endpoint>(ep);
  return l;
}

void remove_socket() {
  ::unlink(unix_path.c_str());
}

// libFuzzer 14's entropic schedule looks every feature of a run up in its list of rare features,
// which holds each feature seen fewer than -entropic_feature_frequency_threshold times (255): with
// the ~45,000 features of this target (Asio, Beast and the coroutines behind each connection) that
// search took two thirds of the time (perf: InputCorpus::UpdateFeatureFrequency), 44 runs/s. At 4,
// only the really rare features are kept: about 130 runs/s, and as much coverage in the same time
// (30 s runs: 10,374 edges at 4, 10,340 at 255). A flag on the command line still wins: it comes
// later.
void default_flags(int* argc, char*** argv) {
  static std::vector<char*> args;
  static char threshold[] = "-entropic_feature_frequency_threshold=4";
  args.assign(*argv, *argv + *argc);
  args.insert(args.begin() + 1, threshold);
  args.push_back(nullptr);
  *argc = static_cast<int>(args.size()) - 1;
  *argv = args.data();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  default_flags(argc, argv);
  fuzz::quiet_logs();
  std::signal(SIGPIPE, SIG_IGN);  // a client may write after the server closed
  trace = std::getenv("ADMIN_SERVER_FUZZ_TRACE") != nullptr;
  ioc = new asio::io_context;
  state = std::make_shared<served_state>();
  state->registry = std::make_shared<prometheus::Registry>();
  static auto own = std::make_shared<prometheus::Registry>();
  errors = &prometheus::BuildCounter().Name("fuzz_internal_errors_total").Register(*own).Add({});
  tcp_server = listen_at("127.0.0.1:0");
  unix_path = "/tmp/admin_server_fuzz." + std::to_string(::getpid()) + ".sock";
  unix_server = listen_at("unix:" + unix_path);
  std::atexit(remove_socket);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::restart_interrupted_calls();
  if (size < 2) return 0;
  constexpr std::size_t max_steps = 32;  // each costs a turn of the io_context or more
  const std::string_view script(reinterpret_cast<const char*>(data) + 2, size - 2);
  input in;
  in.unix_socket = (data[0] & 1) != 0;
  for (std::size_t scale = 1;; scale *= 2) {
    in.ready = {};
    in.label.clear();
    in.observations.clear();
    in.steps = parse_script(script, write_sizes[(data[0] >> 3) & 7], scale, in);
    if (in.steps.size() <= max_steps) break;
    if (scale > 4096) return 0;  // too many steps of their own
  }
  in.ready.ready = (data[0] & 2) != 0;
  in.counter = data[1];

  // This run's registry: a counter and a histogram with a label. Its help texts are plain, as
  // mtlsd's are: prometheus-cpp 1.0.1 writes HELP unescaped (a backslash or a newline there would
  // break the text format), and only label values escape.
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("fuzz_requests_total")
      .Help("Requests seen by the fuzz target.")
      .Register(*registry)
      .Add({{"listener", "public"}})
      .Increment(in.counter);
  auto& histogram =
      prometheus::BuildHistogram()
          .Name("fuzz_duration_seconds")
          .Help("Durations, \"quoted\".")
          .Register(*registry)
          .Add({{"route", in.label}}, prometheus::Histogram::BucketBoundaries{0.005, 0.1, 1, 10});
  for (std::size_t i = 0; i < (data[1] & 15u); ++i)
    histogram.Observe(in.observations.empty() ? 0.05 * static_cast<double>(i)
                                              : in.observations[i % in.observations.size()]);
  state->registry = registry;
  state->ready = in.ready;

  const double errors_before = errors->Value();
  {
    harness h(in);
    h.run();
  }
  fuzz::check(errors->Value() == errors_before, "the admin server counts no error");
  return 0;
}
