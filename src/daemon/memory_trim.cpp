#include "mtlsd/daemon/memory_trim.hpp"

#include <malloc.h>

#include <algorithm>

namespace mtlsd::daemon {

memory_trimmer::memory_trimmer(boost::asio::io_context& control,
                               std::function<int()> open_connections)
    : timer_(control), open_connections_(std::move(open_connections)) {}

void memory_trimmer::start() {
  timer_.expires_after(period);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

void memory_trimmer::tick() {
  const int open = open_connections_();
  peak_ = std::max(peak_, open);
  if (peak_ - open >= min_drop && open <= peak_ / 2) {
    ::malloc_trim(0);
    peak_ = open;
  }
  start();
}

}  // namespace mtlsd::daemon
