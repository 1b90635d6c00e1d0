#pragma once
// Gives freed heap memory back to the kernel once a burst of connections is over. glibc keeps
// freed chunks in its arenas (one per worker thread) and returns only the top of each heap by
// itself, so after 2,000 connections come and go RSS would stay at its peak. The control loop
// looks every `period`: once the open connections fell to half of the peak seen since the last
// trim (and by at least `min_drop`), malloc_trim(0) releases the free pages (madvise). The period
// is short because a burst ends fast (500 silent sockets closed at once are gone in ~100 ms, and
// their closing allocated more than they held): at 2 s the memory stayed for seconds after, and
// a look costs one atomic load.
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>

namespace mtlsd::daemon {

class memory_trimmer {
 public:
  static constexpr std::chrono::milliseconds period{250};
  static constexpr int min_drop = 64;

  // `open_connections` is read on the control loop.
  memory_trimmer(boost::asio::io_context& control, std::function<int()> open_connections);
  void start();

 private:
  void tick();

  boost::asio::steady_timer timer_;
  std::function<int()> open_connections_;
  int peak_ = 0;
};

}  // namespace mtlsd::daemon
