#include "mtlsd/admin/admin_server.hpp"

#include <prometheus/text_serializer.h>

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>

#include "mtlsd/log/log.hpp"
#include "mtlsd/net/socket.hpp"
#include "mtlsd/util/exception.hpp"

namespace mtlsd::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using namespace std::chrono_literals;

struct server::impl : std::enable_shared_from_this<impl> {
  impl(asio::io_context& ioc, std::shared_ptr<prometheus::Collectable> r,
       std::function<readiness(readiness_checks)> f)
      : acceptor(ioc), registry(std::move(r)), ready(std::move(f)) {}

  net::stream_acceptor acceptor;
  std::shared_ptr<prometheus::Collectable> registry;
  std::function<readiness(readiness_checks)> ready;
  std::string bound;
  // A unix socket's file, and which file it is (device, inode): removed on stop unless another
  // process has bound the path since.
  std::string socket_file;
  struct stat socket_file_id {};
  prometheus::Counter* errors = nullptr;  // mtlsd_internal_errors_total{component="admin"}
  // A connection's place among max_connections (admin_server.hpp). `reading` while it waits for
  // a request or reads one, `since` when that wait (or else the answer) began.
  struct slot {
    net::stream_socket* sock = nullptr;
    bool reading = true;
    std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
  };
  std::list<std::shared_ptr<slot>> slots;

  // All places taken: one is closed for the new connection, so that no max_connections
  // connections, however they behave, keep a probe out. The one that has waited longest for (or
  // in) a request gives way, a half-sent request too: a probe sends its request at once, so only
  // a client that holds its place by sending slowly or nothing loses it (review: one byte of a
  // next request made a connection unevictable, and max_connections such held every place).
  // With none reading, every place is writing an answer its client has not taken yet: the
  // oldest answer gives way.
  void evict_for_new_connection() {
    auto oldest = slots.end();
    const auto older = [](const slot& a, const slot& b) {
      return a.reading != b.reading ? a.reading : a.since < b.since;
    };
    for (auto it = slots.begin(); it != slots.end(); ++it)
      if (oldest == slots.end() || older(**it, **oldest)) oldest = it;
    if (oldest == slots.end()) return;
    boost::system::error_code ignored;
    (*oldest)->sock->close(ignored);  // its pending read or write ends with operation_aborted
    slots.erase(oldest);
  }

  static constexpr std::size_t request_header_limit = 8 * 1024;
  static constexpr std::size_t request_body_limit = 4 * 1024;

  // `head_request`: the length the body has, without the body.
  static http::response<http::string_body> error_response(http::status status,
                                                          const std::string& why,
                                                          bool head_request) {
    http::response<http::string_body> res{status, 11};
    res.set(http::field::server, "mtlsd");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::cache_control, "no-store");  // as every other answer
    res.keep_alive(false);
    res.body() = std::string(http::obsolete_reason(status)) + ": " + why + "\n";
    res.prepare_payload();
    if (head_request) res.body().clear();
    return res;
  }

  // `keep_alive`: the parser's reading of every Connection field (the message's own reads only
  // the first: `Connection: x, ` then `Connection: close` on another line answered, and read the
  // next request, as if kept alive; admin_server_fuzz).
  http::response<http::string_body> respond(const http::request<http::string_body>& req,
                                            bool keep_alive) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(keep_alive);
    res.set(http::field::server, "mtlsd");
    res.set(http::field::cache_control, "no-store");
    const auto [target, query] = parts_of(req.target());
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "method not allowed\n";
    } else if (target == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      res.body() = prometheus::TextSerializer().Serialize(registry->Collect());
    } else if (target == "/healthz") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "ok\n";
    } else if (target == "/readyz") {
      readiness r = ready(checks_asked(query));
      res.result(r.ready ? http::status::ok : http::status::service_unavailable);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = (r.ready ? "ready\n" : "not ready: " + r.why + "\n") + r.details;
    } else {
      res.result(http::status::not_found);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "not found; try /metrics, /healthz or /readyz\n";
    }
    res.prepare_payload();
    // HEAD: the length GET would have, without the body (prepare_payload after clearing it
    // said 0; review).
    if (req.method() == http::verb::head) res.body().clear();
    return res;
  }

  // The path and the query (after the `?`) a request target names: origin form ("/readyz?x") as
  // it is, absolute form ("http://127.0.0.1:9901/readyz?x"), which RFC 9112 3.2.2 has a server
  // accept, without its scheme and authority.
  struct target_parts {
    std::string_view path, query;
  };
  static target_parts parts_of(beast::string_view raw) {
    std::string_view target(raw.data(), raw.size());
    for (std::string_view scheme : {"http://", "https://"})
      if (target.size() >= scheme.size() &&
          beast::iequals(target.substr(0, scheme.size()), scheme)) {
        target.remove_prefix(scheme.size());
        const auto path = target.find_first_of("/?");
        target = path == std::string_view::npos ? "/" : target.substr(path);
        if (target.starts_with('?')) target = "/";
        break;
      }
    const auto mark = target.find('?');
    if (mark == std::string_view::npos) return {target, {}};
    return {target.substr(0, mark), target.substr(mark + 1)};
  }

  // /readyz leaves the upstream checks out when one of the query's `&`-separated parameters is
  // exactly `exclude=upstream` (Kubernetes' apiserver also takes several `exclude=`). Any other
  // query is ignored, as every query always was: a probe with one gets what plain /readyz says.
  static readiness_checks checks_asked(std::string_view query) {
    for (;;) {
      const auto end = query.find('&');
      if (query.substr(0, end) == "exclude=upstream") return readiness_checks::all_but_upstream;
      if (end == std::string_view::npos) return readiness_checks::all;
      query.remove_prefix(end + 1);
    }
  }

  // What makes a request head unanswerable though Beast parsed it, or "". Any Transfer-Encoding:
  // no admin request has a body, and one that is not chunked leaves the body's end unknown (RFC
  // 9112 6.3: 400, then close; Beast took `gzip` for no body and read the body as the next
  // request). Host: HTTP/1.1 requires exactly one (RFC 9112 3.2).
  static std::string head_problem(const http::request_parser<http::string_body>& parser) {
    const auto& head = parser.get();
    if (head.count(http::field::transfer_encoding) > 0)
      return "Transfer-Encoding on a request to the admin server (none takes a body)";
    if (head.version() >= 11 && head.count(http::field::host) != 1)
      return head.count(http::field::host) == 0 ? "HTTP/1.1 request without Host"
                                                : "more than one Host field";
    return {};
  }

  // The answer to a request that could not be read: what was wrong with it, then the close.
  static std::optional<http::status> refusal_of(const boost::system::error_code& ec,
                                                bool header_done) {
    if (ec == http::error::header_limit || (ec == http::error::buffer_overflow && !header_done))
      return http::status::request_header_fields_too_large;
    if (ec == http::error::body_limit) return http::status::payload_too_large;
    if (ec == http::error::end_of_stream || ec == http::error::partial_message)
      return std::nullopt;  // the client went away
    if (ec.category() == make_error_code(http::error::bad_method).category())
      return http::status::bad_request;  // malformed (an endless chunk line too): said why
    return std::nullopt;                 // a socket error
  }

  asio::awaitable<void> serve_connection(net::stream_socket sock, std::shared_ptr<slot> me) {
    using namespace asio::experimental::awaitable_operators;
    me->sock = &sock;
    // Bounded: Beast's header and body limits do not cover the buffer itself, which held
    // whatever a client sent as an endless chunk-size or chunk-extension line or trailers
    // (review: 200 MB from one connection in 2 s). Room for a whole request at the limits.
    beast::flat_buffer buffer(request_header_limit + request_body_limit + 4096);
    asio::steady_timer timer(sock.get_executor());
    for (;;) {
      me->reading = true;
      me->since = std::chrono::steady_clock::now();
      http::request<http::string_body> req;
      http::request_parser<http::string_body> parser;
      parser.header_limit(request_header_limit);
      parser.body_limit(request_body_limit);
      // One deadline for reading a request and writing its answer: a client that is slow, idle
      // or does not read what it asked for (pipelined scrapes into a full socket) does not hold
      // one of the few slots beyond it.
      timer.expires_after(std::chrono::seconds(10));
      auto result =
          co_await (http::async_read_header(sock, buffer, parser, as_tuple(use_awaitable)) ||
                    timer.async_wait(as_tuple(use_awaitable)));
      if (result.index() != 0) co_return;
      auto [ec, n] = std::get<0>(result);
      // A head refused is refused before its body is read: no admin request needs one, and a
      // chunked one must not reach Beast's body reading (Boost 1.81's aborts a debug build on
      // some chunked bodies sent a byte at a time, boostorg/beast#2861; the data path parses
      // through framing_base::put_body instead). The lingering close drops what was sent.
      const std::string refused_head = ec ? std::string() : head_problem(parser);
      if (!ec && refused_head.empty() && !parser.is_done()) {
        auto body = co_await (http::async_read(sock, buffer, parser, as_tuple(use_awaitable)) ||
                              timer.async_wait(as_tuple(use_awaitable)));
        if (body.index() != 0) co_return;
        std::tie(ec, n) = std::get<0>(body);
      }
      me->reading = false;
      me->since = std::chrono::steady_clock::now();
      // A refusal of a HEAD has no body either (RFC 9110 9.3.2): the client would read its bytes
      // as the start of the next response (admin_server_fuzz). Beast reads the request line
      // before the fields (a 431 or 413 knows the method); one it could not read is still first
      // in the buffer.
      const bool head_request =
          parser.get().method_string().empty()
              ? std::string_view(static_cast<const char*>(buffer.data().data()), buffer.size())
                    .starts_with("HEAD ")
              : parser.get().method() == http::verb::head;
      http::response<http::string_body> res;
      if (!refused_head.empty()) {
        res = error_response(http::status::bad_request, refused_head, head_request);
      } else if (ec) {
        const auto status = refusal_of(ec, parser.is_header_done());
        if (!status) co_return;
        res = error_response(*status, ec.message(), head_request);
      } else {
        const bool keep_alive = parser.keep_alive();
        req = parser.release();
        res = respond(req, keep_alive);
      }
      auto written = co_await (http::async_write(sock, res, as_tuple(use_awaitable)) ||
                               timer.async_wait(as_tuple(use_awaitable)));
      if (written.index() != 0 || std::get<0>(std::get<0>(written))) co_return;
      if (!res.keep_alive()) break;
    }
    co_await linger(sock, timer, *me);
  }

  // The answer went out; the client may have sent more (a refused body, a pipelined request).
  // Closing with those bytes unread would send a reset, which can make the client's stack drop
  // the answer it has not read yet (RFC 9112 9.6; review). So: FIN first, then what arrives is
  // read and dropped until the client closes too, for at most a second (nginx's lingering
  // close). Evictable meanwhile, as a connection waiting for a request.
  static asio::awaitable<void> linger(net::stream_socket& sock, asio::steady_timer& timer,
                                      slot& me) {
    using namespace asio::experimental::awaitable_operators;
    boost::system::error_code ignored;
    sock.shutdown(net::stream_socket::shutdown_send, ignored);
    me.reading = true;
    me.since = std::chrono::steady_clock::now();
    timer.expires_after(std::chrono::seconds(1));
    std::array<char, 4096> dropped;
    for (;;) {
      auto read = co_await (sock.async_read_some(asio::buffer(dropped), as_tuple(use_awaitable)) ||
                            timer.async_wait(as_tuple(use_awaitable)));
      if (read.index() != 0 || std::get<0>(std::get<0>(read))) co_return;
    }
  }

  // Logs and counts an error that must not pass silently; the caller goes on.
  void report(std::string_view what, const std::string& error) {
    if (errors) errors->Increment();
    log::error(what, {{"error", error}});
  }

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    auto ex = acceptor.get_executor();
    auto last_warning = std::chrono::steady_clock::time_point{};
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      if (ec) {
        // Out of descriptors (EMFILE, ENFILE), the connection stays queued: pause rather than
        // spin. A condition of the system, as on the proxy listeners (which count it in
        // mtlsd_accept_errors_total): logged, but no internal error, which counts exceptions
        // that should not happen. Any other accept error is one.
        const bool out_of_fds = ec == asio::error::no_descriptors || ec.value() == ENFILE;
        if (errors && !out_of_fds) errors->Increment();
        if (auto now = std::chrono::steady_clock::now(); now - last_warning > 1s) {
          log::warn("admin: accept failed", {{"error", ec.message()}});
          last_warning = now;
        }
        asio::steady_timer backoff(ex, std::chrono::milliseconds(100));
        co_await backoff.async_wait(as_tuple(use_awaitable));
        continue;
      }
      // A small send buffer bounds what one connection can make mtlsd produce ahead of its
      // client: a write completes once the kernel holds it, and loopback send buffers autotune
      // to 4 MB, so clients that pipeline scrapes and never read had the control thread
      // serialize /metrics over and over (review: 132 MB queued from 64 connections, 3.4 s of
      // CPU, /healthz answered in 1.8 s). 64 KiB (the kernel doubles it for its bookkeeping)
      // holds any answer but a large /metrics whole and sends a scrape in a few windows; once a
      // client's receive window is full, the next answer waits in memory, one per connection.
      boost::system::error_code ignored;
      sock.set_option(asio::socket_base::send_buffer_size(64 * 1024), ignored);
      if (slots.size() >= max_connections) evict_for_new_connection();
      auto place = slots.emplace_back(std::make_shared<slot>());
      asio::co_spawn(ex, serve_connection(std::move(sock), place),
                     [self, place](std::exception_ptr e) {
                       self->slots.remove(place);  // unless evicted already
                       if (e) self->report("admin: request failed", util::message_of(e));
                     });
    }
  }

  // Runs accept_loop; should it ever throw, reports it and starts it again after a pause.
  void start_accepting() {
    auto self = shared_from_this();
    asio::co_spawn(acceptor.get_executor(), accept_loop(), [self](std::exception_ptr e) {
      if (!e) return;
      self->report("admin: accept loop failed; restarting it", util::message_of(e));
      if (!self->acceptor.is_open()) return;
      auto pause = std::make_shared<asio::steady_timer>(self->acceptor.get_executor(), 100ms);
      pause->async_wait([self, pause](boost::system::error_code) {
        if (self->acceptor.is_open()) self->start_accepting();
      });
    });
  }
};

server::server(asio::io_context& ioc, const config::address& address,
               std::shared_ptr<prometheus::Collectable> registry,
               std::function<readiness(readiness_checks)> ready)
    : impl_(std::make_shared<impl>(ioc, std::move(registry), std::move(ready))) {
  auto literal = net::literal_endpoint(address);
  auto* ep = std::get_if<net::stream_endpoint>(&literal);
  // Plain messages: a system_error's what() would show Boost's source location to the operator.
  if (!ep)
    throw std::runtime_error("admin.address: " + address.str() +
                             ": must be an IP address or unix: path, not a host name");
  try {
    impl_->acceptor = net::open_acceptor(ioc, *ep, false);
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("admin.address: cannot listen on " + address.str() + ": " +
                             e.code().message());
  }
  impl_->bound = net::format_endpoint(impl_->acceptor.local_endpoint());
  if (address.is_unix() && ::lstat(address.path.c_str(), &impl_->socket_file_id) == 0)
    impl_->socket_file = address.path;
}

server::~server() {
  stop();
}

void server::start() {
  impl_->start_accepting();
}

void server::count_errors_in(prometheus::Counter* errors) {
  impl_->errors = errors;
}

void server::stop() {
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  // The socket file goes with the socket (as a clean exit of nginx or Envoy leaves none): one
  // left would look like a server to tools that test the path, until the next start removes it.
  struct stat now {};
  if (!impl_->socket_file.empty() && ::lstat(impl_->socket_file.c_str(), &now) == 0 &&
      S_ISSOCK(now.st_mode) && now.st_dev == impl_->socket_file_id.st_dev &&
      now.st_ino == impl_->socket_file_id.st_ino)
    ::unlink(impl_->socket_file.c_str());
  impl_->socket_file.clear();
}

const std::string& server::bound_address() const {
  return impl_->bound;
}

}  // namespace mtlsd::admin
