#pragma once
// The revocation service on a thread of its own: OCSP requests and CRL downloads never run on a
// worker, and the service's caches are touched by this one thread only. The thread starts with
// the workers, after the sandbox is entered (so that it is inside it); work posted before waits.
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <thread>

#include "mtlsd/metrics/metrics.hpp"
#include "mtlsd/tls/revocation/service.hpp"

namespace mtlsd::daemon {

class revocation_thread {
 public:
  explicit revocation_thread(metrics::registry& m);
  ~revocation_thread();
  revocation_thread(const revocation_thread&) = delete;
  revocation_thread& operator=(const revocation_thread&) = delete;

  void start();
  tls::revocation::service& service() { return service_; }

 private:
  boost::asio::io_context ioc_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  tls::revocation::service service_;
  std::thread thread_;
};

}  // namespace mtlsd::daemon
