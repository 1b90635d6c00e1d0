#include "service_state.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mtlsd::tls::revocation {
namespace {

constexpr auto failure_hold_off = std::chrono::seconds(1);
constexpr auto max_sleep = std::chrono::seconds(60);
constexpr std::size_t max_recent_failures = 1024;

}  // namespace

std::time_t backoff(int failures) {
  const int exp = std::clamp(failures - 1, 0, 9);
  return std::min<std::time_t>(std::time_t{1} << exp, 300);
}

boost::asio::awaitable<void> service_state::sleep_for(steady::duration d) {
  boost::asio::steady_timer t(ex, std::min<steady::duration>(d, max_sleep));
  sleeping_.insert(&t);
  co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  sleeping_.erase(&t);
}

void service_state::stop() {
  stopping = true;
  for (auto* t : sleeping_)
    t->cancel();
}

const std::string* service_state::recently_failed(const std::string& key) {
  auto it = recent_failures_.find(key);
  if (it == recent_failures_.end()) return nullptr;
  if (steady::now() >= it->second.first) {
    recent_failures_.erase(it);
    return nullptr;
  }
  return &it->second.second;
}

void service_state::record_failure(const std::string& key, const std::string& error) {
  if (recent_failures_.size() > max_recent_failures) recent_failures_.clear();
  recent_failures_[key] = {steady::now() + failure_hold_off, error};
}

}  // namespace mtlsd::tls::revocation
