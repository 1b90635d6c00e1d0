#pragma once
// A read edge wait (net/edge_wait.hpp) that a second waiter can join while it is queued: one
// reactor operation completes both, one after the other, in one completion.
//
// Why: two operations queued on one socket and direction both complete on its next event, but
// Asio runs only the first in that event's completion and posts the second. Its scheduler puts a
// completion posted there behind its own next poll of epoll, which does not wait (epoll_wait with
// a timeout of 0) because a completion is queued, and usually finds nothing. HTTP mode's upstream
// watch stays queued while a request goes up (http_relay.cpp): the response's read that queued
// behind it cost such a poll and a pass through the queue on every request
// (bench/run.sh --syscalls http). Joining the watch costs neither. (An event that also completes
// a write queued on the socket completes that write first and posts this wait, as before.)
//
// The joined handler is owned by the reactor operation, like any handler Asio holds: destroying
// the io_context with the wait queued destroys it (and a coroutine it would resume) as Asio's own
// would. Relies on Boost 1.81's reactor as edge_wait.hpp does; on any other version nothing is
// ever joinable (queued() is false) and callers start waits of their own.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <cassert>
#include <optional>
#include <type_traits>
#include <utility>

#include "mtlsd/net/edge_wait.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <tuple>

namespace mtlsd::net {

namespace shared_edge_wait_detail {
using io_executor = boost::asio::any_io_executor;
// Any joining handler, type-erased: converting its executor for the erasure allocates (three
// allocations, ~0.7k – 0.9k instructions a join in HTTP mode, callgrind).
using any_joiner = boost::asio::any_completion_handler<void(boost::system::error_code)>;
// The handler of a coroutine's `co_await async_join(as_tuple(use_awaitable))`, held as it is.
using awaitable_joiner = boost::asio::detail::as_tuple_handler<
    boost::asio::detail::awaitable_handler<io_executor, std::tuple<boost::system::error_code>>>;
}  // namespace shared_edge_wait_detail

#if MTLSD_EDGE_WAIT
template <typename Joiner>
class basic_shared_edge_wait;

namespace shared_edge_wait_detail {

namespace ad = boost::asio::detail;

// What a join adds to the operation, whatever the first handler's type.
template <typename Joiner>
struct op_base : ad::reactor_op {
  using ad::reactor_op::reactor_op;
  // Until the completion runs or the owner lets go.
  basic_shared_edge_wait<Joiner>* owner = nullptr;
  bool started = false;  // the reactor has it (edge_wait's queued_): a perform() before is the try
  std::optional<Joiner> second;
  std::optional<ad::handler_work<Joiner, io_executor>> second_work;
};

// Handler: the first handler (the name BOOST_ASIO_DEFINE_HANDLER_PTR expects).
template <typename Joiner, typename Handler>
class op : public op_base<Joiner> {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(op);

  op(Handler& first, const io_executor& io_ex)
      : op_base<Joiner>(boost::system::error_code(), &op::do_perform, &op::do_complete),
        first_(std::move(first)),
        work_(first_, io_ex) {}

  // As edge_wait's wait_op: declines the try at once, then done (not exhausted) on an event.
  static ad::reactor_op::status do_perform(ad::reactor_op* base) {
    return static_cast<op*>(base)->started ? ad::reactor_op::done : ad::reactor_op::not_done;
  }

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&,
                          std::size_t);

 private:
  Handler first_;
  ad::handler_work<Handler, io_executor> work_;
};

}  // namespace shared_edge_wait_detail

// Joiner: the type a joining handler is held as (any_joiner, or one handler type as it is).
template <typename Joiner>
class basic_shared_edge_wait {
 public:
  basic_shared_edge_wait() = default;
  basic_shared_edge_wait(const basic_shared_edge_wait&) = delete;
  basic_shared_edge_wait& operator=(const basic_shared_edge_wait&) = delete;
  // A wait still queued stays queued and completes its handlers; it no longer reports to this.
  ~basic_shared_edge_wait() {
    if (op_) op_->owner = nullptr;
  }

  // Starts a read wait on `socket`, which async_wait_drained's precondition (edge_wait.hpp)
  // must hold for; `first` is completed with its error code. Only while !queued(); a cancelled
  // wait whose completion is still on its way is let go.
  template <typename Socket, typename First>
  void start(Socket& socket, First first) {
    static_assert(
        std::is_same_v<typename Socket::executor_type, shared_edge_wait_detail::io_executor>);
    using op = shared_edge_wait_detail::op<Joiner, First>;
    auto& impl = edge_wait_detail::internals<Socket>::of(socket);
    reactor_ = &edge_wait_detail::reactor_of(socket);
    data_ = &impl.reactor_data_;
    fd_ = impl.socket_;
    io_ex_ = socket.get_executor();
    typename op::ptr p = {std::addressof(first), op::ptr::allocate(first), nullptr};
    p.p = new (p.v) op(first, io_ex_);
    if (op_) op_->owner = nullptr;  // only now: nothing above may leave op_ let go yet kept
    op_ = p.p;
    op_->owner = this;
    // As edge_wait's start(): speculative, so that Asio neither re-arms nor tries I/O; `started`
    // is set after, as nothing runs in between on the worker's one thread. Posted at once instead
    // (descriptor closed), the operation completes with its error.
    auto* const o = p.p;
    reactor_->start_op(edge_wait_detail::ad::reactor::read_op, fd_, *data_, p.p,
                       /*is_continuation=*/false, /*allow_speculative=*/true);
    o->started = true;
    p.v = p.p = nullptr;
  }

  // Started, not cancelled, and its completion has not run yet (it may be on its way: the event
  // came, and a join then completes at once). A cancelled wait (the socket's cancel(), a
  // cancellation through a joined handler's slot) is not joinable while its completion is on its
  // way: it would end the joined waiter with operation_aborted from a cancellation that came
  // before it started, where a wait of its own would not have been reached.
  bool queued() const noexcept { return op_ != nullptr && !op_->ec_; }
  // Queued, and nobody joined it yet: async_join may be called. For a wait two readers could
  // reach (tls_stream's reads and writes both wait for input when OpenSSL asks), the second
  // then waits on its own instead of breaking the one-join rule.
  bool joinable() const noexcept { return queued() && !op_->second; }

  // Completes with the error code `first` gets, right after `first`, in the same completion.
  // Only while queued(), once per wait. A cancellation through the token's slot cancels the
  // whole wait: `first` sees operation_aborted too (as after the socket's cancel()).
  template <typename CompletionToken>
  auto async_join(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [this](auto handler) {
          assert(queued() && !op_->second);  // one join per wait, while it is queued
          static_assert(std::is_constructible_v<Joiner, decltype(handler)&&>,
                        "this wait holds joining handlers of another type");
          auto& second = op_->second.emplace(std::move(handler));
          op_->second_work.emplace(second, io_ex_);
          // The held handler's slot. An erased handler has its own: erasing it chained a
          // cancellation state to the caller's slot, which emplacing there directly would
          // destroy under it.
          auto slot = boost::asio::get_associated_cancellation_slot(second);
          if (slot.is_connected())
            op_->cancellation_key_ = &slot.template emplace<edge_wait_detail::cancellation>(
                reactor_, data_, fd_, edge_wait_detail::ad::reactor::read_op);
        },
        token);
  }

 private:
  template <typename, typename>
  friend class shared_edge_wait_detail::op;

  shared_edge_wait_detail::op_base<Joiner>* op_ = nullptr;
  edge_wait_detail::ad::reactor* reactor_ = nullptr;
  edge_wait_detail::ad::reactor::per_descriptor_data* data_ = nullptr;
  int fd_ = -1;
  shared_edge_wait_detail::io_executor io_ex_;
};

namespace shared_edge_wait_detail {

// As Asio's reactive_wait_op: the operation is freed before the upcalls, which may start the next
// wait. The owner is told first: destroying the handlers (owner null: the io_context is going)
// may destroy it.
template <typename Joiner, typename Handler>
void op<Joiner, Handler>::do_complete(void* owner, ad::operation* base,
                                      const boost::system::error_code&, std::size_t) {
  auto* o = static_cast<op*>(base);
  if (o->owner) o->owner->op_ = nullptr;
  ptr p = {std::addressof(o->first_), o, o};
  ad::handler_work<Handler, io_executor> w(std::move(o->work_));
  ad::binder1<Handler, boost::system::error_code> first(o->first_, o->ec_);
  std::optional<ad::binder1<Joiner, boost::system::error_code>> second;
  std::optional<ad::handler_work<Joiner, io_executor>> second_work;
  if (o->second) {
    second.emplace(*o->second, o->ec_);  // moves the handler out
    second_work.emplace(std::move(*o->second_work));
  }
  p.h = std::addressof(first.handler_);
  p.reset();
  if (owner) {
    ad::fenced_block b(ad::fenced_block::half);
    w.complete(first, first.handler_);
    if (second) second_work->complete(*second, second->handler_);
  }
}

}  // namespace shared_edge_wait_detail

#else  // no edge waits on this Boost: never joinable, and the wait is Asio's own

template <typename Joiner>
class basic_shared_edge_wait {
 public:
  template <typename Socket, typename First>
  void start(Socket& socket, First first) {
    async_wait_drained(socket, boost::asio::socket_base::wait_read, std::move(first));
  }
  bool queued() const noexcept { return false; }
  bool joinable() const noexcept { return false; }
  // Never called (nothing is ever queued); here so that callers compile.
  template <typename CompletionToken>
  auto async_join(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler) { std::move(handler)(boost::asio::error::operation_not_supported); },
        token);
  }
};

#endif

// Joins of any handler type.
using shared_edge_wait = basic_shared_edge_wait<shared_edge_wait_detail::any_joiner>;
// Joins of a coroutine's as_tuple(use_awaitable) alone, held without type erasure.
using awaitable_shared_edge_wait =
    basic_shared_edge_wait<shared_edge_wait_detail::awaitable_joiner>;

}  // namespace mtlsd::net
