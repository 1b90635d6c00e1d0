#pragma once
// The message of an exception held by an exception_ptr: what completion handlers of co_spawn and
// threads' top-level loops log (or count) when something escaped.
#include <exception>
#include <string>

namespace mtlsd::util {

// e.what(), or "unknown exception" for one not derived from std::exception. `e` must be set.
inline std::string message_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace mtlsd::util
