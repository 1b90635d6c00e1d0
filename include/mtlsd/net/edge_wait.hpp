#pragma once
// Waiting for a socket that the caller has just found empty (or full), without the epoll_ctl that
// Asio's async_wait makes on every call.
//
// Asio registers each socket with epoll once, edge-triggered. Its async_wait cannot know whether
// the edge it should wait for was already consumed (reported by epoll while nobody waited), so it
// re-arms the registration (EPOLL_CTL_MOD, which also re-reports a ready socket) every time: one
// syscall per wait, two per request in HTTP mode (bench/run.sh --syscalls http). nginx, also
// edge-triggered, makes none: it knows that a socket it has just emptied raises a new edge when
// data comes. So does a caller of this function.
//
// How: a reactor operation of our own, queued like Asio's reads, which does no I/O. Asio offers a
// new operation a try at once ("speculative") when epoll reported an event since the last one;
// ours declines it and is queued (no syscall), then completes at the next event for its
// direction.
//
// Precondition, which the caller keeps: its last read on the socket found it empty (EAGAIN, or
// OpenSSL's WANT_READ from a socket BIO) — for a write wait, its last write would block — AND it
// has not yielded to the event loop since; or, for a read wait, net::known_drained says so
// (net/read_drain.hpp, which also covers a yield since). A short read alone is not enough: a FIN
// queued with the last bytes raises no edge of its own, and the wait would sleep until the idle
// timeout. The
// worker's io_context runs on one thread, so no epoll_wait can consume the edge of data that
// came after that read before this wait is queued: the edge is still to be reported. A caller that
// yielded in between (a write that waited, a turn through the scheduler), or that stopped reading
// with data left, must use the socket's own async_wait: data that is already there raises no new
// edge, and this wait would sleep until more comes.
//
// Asio's reactor internals differ between versions; this relies on Boost 1.81's (Debian 12) and
// falls back to async_wait on any other version, so a Boost upgrade costs a syscall, never a hang.

#include <boost/asio/async_result.hpp>
#include <boost/asio/basic_socket.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/version.hpp>
#include <memory>
#include <utility>

#if BOOST_VERSION == 108100 && defined(__linux__)
#define MTLSD_EDGE_WAIT 1
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>
#else
#define MTLSD_EDGE_WAIT 0
#endif

namespace mtlsd::net {

#if MTLSD_EDGE_WAIT
namespace edge_wait_detail {

namespace ad = boost::asio::detail;

// A wait that does no I/O: declines the reactor's try at once (see the file comment); done when
// the reactor performs it on an event. Done, not "done and exhausted": that would stop the
// reactor at this operation, and another one queued behind it in the same direction (Asio's
// wait of the other pump on the same socket) would sleep until a new edge — after EPOLLOUT,
// perhaps never — and it would make Asio's next read there skip its try.
template <typename Handler, typename IoExecutor>
class wait_op : public ad::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(wait_op);

  wait_op(const boost::system::error_code& success_ec, Handler& handler, const IoExecutor& io_ex)
      : reactor_op(success_ec, &wait_op::do_perform, &wait_op::do_complete),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static status do_perform(reactor_op* base) {
    return static_cast<wait_op*>(base)->queued_ ? done : not_done;
  }

  // Set once the reactor has the operation: a perform() before that is the try at once.
  bool queued_ = false;

  // As Asio's reactive_wait_op: free the operation before the upcall, which may start the next.
  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&,
                          std::size_t) {
    auto* o = static_cast<wait_op*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    ad::binder1<Handler, boost::system::error_code> handler(o->handler_, o->ec_);
    p.h = std::addressof(handler.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation (awaitable operators, parallel groups), as Asio's own socket waits.
class cancellation {
 public:
  cancellation(ad::reactor* r, ad::reactor::per_descriptor_data* d, int fd, int op_type)
      : reactor_(r), data_(d), fd_(fd), op_type_(op_type) {}
  void operator()(boost::asio::cancellation_type_t type) {
    using boost::asio::cancellation_type;
    if (!!(type &
           (cancellation_type::terminal | cancellation_type::partial | cancellation_type::total)))
      reactor_->cancel_ops_by_key(fd_, *data_, op_type_, this);
  }

 private:
  ad::reactor* reactor_;
  ad::reactor::per_descriptor_data* data_;
  int fd_;
  int op_type_;
};

// The socket's implementation (descriptor and reactor registration), which basic_socket keeps
// protected: a pointer to the member, taken from a derived class, reads it legally.
template <typename Socket>
struct internals : Socket {
  static auto& of(Socket& s) { return (s.*(&internals::impl_)).get_implementation(); }
};

// The reactor that registered a socket, as its registration record names it (read_drain.cpp,
// which reads the reactor's private members); null without a record (a closed socket).
ad::reactor* registering_reactor(ad::reactor::per_descriptor_data data) noexcept;

// The reactor serving `socket`: the one that registered it, else (a closed socket has no record)
// the io_context's, looked up. Not looked up every time: use_service takes the service
// registry's mutex and compares type names on each call, ~0.55k instructions of an HTTP-mode
// request's ~39.8k over its waits (bench/run.sh --instructions http, 3 runs each way).
template <typename Socket>
ad::reactor& reactor_of(Socket& socket) {
  if (auto* registered = registering_reactor(internals<Socket>::of(socket).reactor_data_))
    return *registered;
  return boost::asio::use_service<ad::reactor>(
      boost::asio::query(socket.get_executor(), boost::asio::execution::context));
}

template <typename Socket, typename Handler>
void start(Socket& socket, boost::asio::socket_base::wait_type direction, Handler handler) {
  using executor_type = typename Socket::executor_type;
  using op = wait_op<Handler, executor_type>;
  auto& impl = internals<Socket>::of(socket);
  auto& reactor = reactor_of(socket);
  const int op_type = direction == boost::asio::socket_base::wait_write ? ad::reactor::write_op
                                                                        : ad::reactor::read_op;
  const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
  auto slot = boost::asio::get_associated_cancellation_slot(handler);
  typename op::ptr p = {std::addressof(handler), op::ptr::allocate(handler), nullptr};
  p.p = new (p.v) op(boost::system::error_code(), handler, socket.get_executor());
  if (slot.is_connected())
    p.p->cancellation_key_ =
        &slot.template emplace<cancellation>(&reactor, &impl.reactor_data_, impl.socket_, op_type);
  // Speculative, so that Asio neither re-arms (it does for a non-speculative read) nor tries I/O
  // (ours declines). Single-threaded: the operation cannot run before queued_ is set below; when
  // start_op posted it at once instead (descriptor closed), it completes with its error.
  op* started = p.p;
  reactor.start_op(op_type, impl.socket_, impl.reactor_data_, p.p, is_continuation,
                   /*allow_speculative=*/true);
  started->queued_ = true;
  p.v = p.p = nullptr;
}

}  // namespace edge_wait_detail
#endif

// Completes (with an error_code) when `socket` is ready in `direction` again. See the file
// comment for the precondition; without it, use socket.async_wait.
template <typename Socket, typename CompletionToken>
auto async_wait_drained(Socket& socket, boost::asio::socket_base::wait_type direction,
                        CompletionToken&& token) {
#if MTLSD_EDGE_WAIT
  return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
      [&socket, direction](auto handler) {
        edge_wait_detail::start(socket, direction, std::move(handler));
      },
      token);
#else
  return socket.async_wait(direction, std::forward<CompletionToken>(token));
#endif
}

}  // namespace mtlsd::net
