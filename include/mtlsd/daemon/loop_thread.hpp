#pragma once
// An io_context run on a thread of its own (each worker, the revocation service).
#include <boost/asio/io_context.hpp>
#include <functional>
#include <string>
#include <thread>

namespace mtlsd::daemon {

// Runs `ioc` on a new thread until it is stopped or runs out of work. Completion handlers do not
// throw by design; when one does, `on_error` gets its message (to log it) and the loop goes on:
// one bad handler must not stop a thread that serves everything else.
std::thread start_loop_thread(boost::asio::io_context& ioc,
                              std::function<void(const std::string& error)> on_error);

}  // namespace mtlsd::daemon
