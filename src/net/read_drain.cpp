#include "mtlsd/net/read_drain.hpp"

#include <cerrno>

#include "mtlsd/net/edge_wait.hpp"

#if MTLSD_EDGE_WAIT
#include <sys/epoll.h>

#include <boost/asio/detail/epoll_reactor.hpp>
#endif

namespace mtlsd::net {

#if MTLSD_EDGE_WAIT
namespace {

namespace ad = boost::asio::detail;
using state = ad::epoll_reactor::descriptor_state;

// The reactor keeps these members private. An explicit instantiation may name them (access
// checks do not apply there), and hands out pointers to them through a friend function.
template <class Tag, typename Tag::type Member>
struct expose {
  friend typename Tag::type member(Tag) { return Member; }
};
struct registered_events_tag {
  using type = uint32_t state::*;
  friend type member(registered_events_tag);
};
struct try_speculative_tag {
  using type = bool (state::*)[ad::epoll_reactor::max_ops];
  friend type member(try_speculative_tag);
};
// The events of the last epoll report for the socket (set_ready_events), kept by its base.
struct task_result_tag {
  using type = unsigned int ad::scheduler_operation::*;
  friend type member(task_result_tag);
};
struct epoll_fd_tag {
  using type = int ad::epoll_reactor::*;
  friend type member(epoll_fd_tag);
};
struct reactor_tag {
  using type = ad::epoll_reactor* state::*;
  friend type member(reactor_tag);
};
template struct expose<registered_events_tag, &state::registered_events_>;
template struct expose<try_speculative_tag, &state::try_speculative_>;
template struct expose<task_result_tag, &ad::scheduler_operation::task_result_>;
template struct expose<epoll_fd_tag, &ad::epoll_reactor::epoll_fd_>;
template struct expose<reactor_tag, &state::reactor_>;

state* record_of(stream_socket& s) {
  return edge_wait_detail::internals<stream_socket>::of(s).reactor_data_;
}

bool tracked(const state* d) {
  return d && (d->*member(registered_events_tag{}) & EPOLLRDHUP) != 0;
}

// The last report named a FIN, a hang-up, an error, or TCP urgent data (EPOLLPRI, reported until
// the urgent mark is read past: a read stops short at the mark with bytes still behind it). Only a
// C-style cast converts to a private base ([expr.cast]); reinterpret_cast would not adjust the
// pointer if the layout ever needed it.
bool last_report_ends(const state* d) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
  const auto* base = (const ad::scheduler_operation*)d;
#pragma GCC diagnostic pop
  return (base->*member(task_result_tag{}) & (EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI)) != 0;
}

}  // namespace

bool track_read_drain(stream_socket& s) {
  state* d = record_of(s);
  if (!d) return false;
  uint32_t& registered = d->*member(registered_events_tag{});
  if (registered & EPOLLRDHUP) return true;
  if (registered == 0) return false;             // not in epoll (the reactor could not register it)
  auto& reactor = *(d->*member(reactor_tag{}));  // no use_service (edge_wait.hpp's reactor_of)
  epoll_event ev{};
  ev.events = registered | EPOLLRDHUP;
  ev.data.ptr = d;
  // Re-arming reports the socket again if it is readable now: a report sets the mark, never
  // clears it, so this is safe at any point.
  if (::epoll_ctl(reactor.*member(epoll_fd_tag{}), EPOLL_CTL_MOD, s.native_handle(), &ev) != 0)
    return false;
  registered = ev.events;  // Asio's later re-arms (EPOLLOUT) start from this and keep it
  return true;
}

void note_read(stream_socket& s, std::size_t asked, ssize_t got, int err) {
  state* d = record_of(s);
  if (!tracked(d)) return;
  const bool emptied = got > 0 ? static_cast<std::size_t>(got) < asked
                               : got < 0 && (err == EAGAIN || err == EWOULDBLOCK);
  if (emptied && !last_report_ends(d))
    (d->*member(try_speculative_tag{}))[ad::epoll_reactor::read_op] = false;
}

bool known_drained(stream_socket& s) {
  const state* d = record_of(s);
  return tracked(d) && !(d->*member(try_speculative_tag{}))[ad::epoll_reactor::read_op] &&
         !last_report_ends(d);
}

// Set with the registration record itself, before the socket can be waited on
// (register_descriptor).
ad::reactor* edge_wait_detail::registering_reactor(ad::reactor::per_descriptor_data data) noexcept {
  return data ? data->*member(reactor_tag{}) : nullptr;
}

#else

bool track_read_drain(stream_socket&) {
  return false;
}
void note_read(stream_socket&, std::size_t, ssize_t, int) {}
bool known_drained(stream_socket&) {
  return false;
}

#endif

}  // namespace mtlsd::net
