#include "mtlsd/admin/admin_server.hpp"

#include <prometheus/text_serializer.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <list>
#include <memory>
#include <stdexcept>

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
       std::function<readiness()> f)
      : acceptor(ioc), registry(std::move(r)), ready(std::move(f)) {}

  net::stream_acceptor acceptor;
  std::shared_ptr<prometheus::Collectable> registry;
  std::function<readiness()> ready;
  std::string bound;
  prometheus::Counter* errors = nullptr;  // mtlsd_internal_errors_total{component="admin"}
  // A connection's place among max_connections; `idle` while it waits for its next request.
  struct slot {
    net::stream_socket* sock = nullptr;
    bool idle = true;
    std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
  };
  std::list<std::shared_ptr<slot>> slots;
  static constexpr std::size_t max_connections = 64;  // scrapers and probes, not the public

  // All places taken: the connection idle the longest gives its place up (closed), so that
  // keep-alive connections, however well they behave, cannot keep a probe out. False when every
  // connection is in the middle of a request (each bounded by the 10 s deadline).
  bool evict_longest_idle() {
    auto oldest = slots.end();
    for (auto it = slots.begin(); it != slots.end(); ++it)
      if ((*it)->idle && (oldest == slots.end() || (*it)->idle_since < (*oldest)->idle_since))
        oldest = it;
    if (oldest == slots.end()) return false;
    boost::system::error_code ignored;
    (*oldest)->sock->close(ignored);  // its pending read ends with operation_aborted
    slots.erase(oldest);
    return true;
  }

  http::response<http::string_body> respond(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(req.keep_alive());
    res.set(http::field::server, "mtlsd");
    res.set(http::field::cache_control, "no-store");
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
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
      readiness r = ready();
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

  asio::awaitable<void> serve_connection(net::stream_socket sock, std::shared_ptr<slot> me) {
    using namespace asio::experimental::awaitable_operators;
    me->sock = &sock;
    beast::flat_buffer buffer;
    asio::steady_timer timer(sock.get_executor());
    for (;;) {
      me->idle = buffer.size() == 0;  // a pipelined request already read is no wait
      me->idle_since = std::chrono::steady_clock::now();
      http::request<http::string_body> req;
      http::request_parser<http::string_body> parser;
      parser.body_limit(4096);
      // One deadline for reading a request and writing its answer: a client that is slow, idle
      // or does not read what it asked for (pipelined scrapes into a full socket) does not hold
      // one of the few slots beyond it.
      timer.expires_after(std::chrono::seconds(10));
      auto result = co_await (http::async_read(sock, buffer, parser, as_tuple(use_awaitable)) ||
                              timer.async_wait(as_tuple(use_awaitable)));
      if (result.index() != 0) co_return;
      auto [ec, n] = std::get<0>(result);
      if (ec) co_return;
      me->idle = false;
      req = parser.release();
      auto res = respond(req);
      auto written = co_await (http::async_write(sock, res, as_tuple(use_awaitable)) ||
                               timer.async_wait(as_tuple(use_awaitable)));
      if (written.index() != 0 || std::get<0>(std::get<0>(written)) || !res.keep_alive()) break;
    }
    boost::system::error_code ignored;
    sock.shutdown(net::stream_socket::shutdown_send, ignored);
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
        // Out of descriptors, the connection stays queued: pause rather than spin.
        if (errors) errors->Increment();
        if (auto now = std::chrono::steady_clock::now(); now - last_warning > 1s) {
          log::warn("admin: accept failed", {{"error", ec.message()}});
          last_warning = now;
        }
        asio::steady_timer backoff(ex, std::chrono::milliseconds(100));
        co_await backoff.async_wait(as_tuple(use_awaitable));
        continue;
      }
      if (slots.size() >= max_connections && !evict_longest_idle()) continue;  // closes it
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
               std::shared_ptr<prometheus::Collectable> registry, std::function<readiness()> ready)
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
}

const std::string& server::bound_address() const {
  return impl_->bound;
}

}  // namespace mtlsd::admin
