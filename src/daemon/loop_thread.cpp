#include "mtlsd/daemon/loop_thread.hpp"

#include <exception>

namespace mtlsd::daemon {

std::thread start_loop_thread(boost::asio::io_context& ioc,
                              std::function<void(const std::string& error)> on_error) {
  return std::thread([&ioc, on_error = std::move(on_error)] {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        on_error(e.what());
      }
    }
  });
}

}  // namespace mtlsd::daemon
