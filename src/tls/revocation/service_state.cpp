#include "service_state.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace mtlsd::tls::revocation {
namespace {

constexpr auto failure_hold_off = std::chrono::seconds(1);
constexpr auto max_sleep = std::chrono::seconds(60);
constexpr std::size_t max_failed_urls = 1024;

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

const std::string* service_state::recently_failed(const std::string& url) {
  auto it = failed_urls_.find(url);
  if (it == failed_urls_.end()) return nullptr;
  if (steady::now() >= it->second.first) {
    failed_urls_.erase(it);
    return nullptr;
  }
  return &it->second.second;
}

void service_state::record_failure(const std::string& url, const std::string& error) {
  if (failed_urls_.size() > max_failed_urls) failed_urls_.clear();
  failed_urls_[url] = {steady::now() + failure_hold_off, error};
}

}  // namespace mtlsd::tls::revocation
