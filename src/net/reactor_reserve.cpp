#include "mtlsd/net/reactor_reserve.hpp"

#include <boost/version.hpp>
#include <vector>

#if BOOST_VERSION == 108100 && defined(__linux__)
#include <boost/asio/detail/reactor.hpp>
#define MTLSD_RESERVE_RECORDS 1
#else
#define MTLSD_RESERVE_RECORDS 0
#endif

namespace mtlsd::net {

void reserve_reactor_records([[maybe_unused]] boost::asio::io_context& ioc,
                             [[maybe_unused]] std::size_t count) {
#if MTLSD_RESERVE_RECORDS
  namespace ad = boost::asio::detail;
  auto& reactor = boost::asio::use_service<ad::reactor>(ioc);
  std::vector<ad::reactor::per_descriptor_data> records(count);
  // Registering descriptor -1 makes the record, then fails in epoll_ctl (EBADF): no socket, no
  // epoll entry, only the record, which cleanup_descriptor_data puts on the reactor's free list.
  for (auto& record : records)
    reactor.register_descriptor(-1, record);
  for (auto& record : records)
    reactor.cleanup_descriptor_data(record);
#endif
}

}  // namespace mtlsd::net
