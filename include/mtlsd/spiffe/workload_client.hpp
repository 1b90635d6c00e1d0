#pragma once
// A client of the SPIFFE Workload API (FetchX509SVID over a unix socket) on a thread of its own.
// The stream stays open: each message the agent sends is handed to `on_update`; when the stream
// fails or ends (agent restarted, socket gone, refused) `on_error` is told why and the call is
// made again after a backoff (0.5 s doubling to 30 s, back to 0.5 s after a message). A stream
// that stays quiet too long is given up and the call made again: no message within 15 s of the
// call, or none since the last SVID by 3/4 of its lifetime (next_update_due_in): a stuck agent
// must not let the last SVID expire unnoticed.
//
// gRPC and protobuf stay behind this header (pimpl): only workload_client.cpp and the generated
// code see them. gRPC starts threads of its own, so start() must come after sandbox::enter.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "mtlsd/tls/spiffe/x509_context.hpp"

namespace mtlsd::spiffe {

class workload_client {
 public:
  struct callbacks {
    // Both run on the client's thread; they must not block for long (post the work elsewhere).
    std::function<void(tls::spiffe::raw_x509_svid)> on_update;
    // `denied`: the agent gives this workload no identity (PERMISSION_DENIED, or an update
    // without an SVID), as opposed to a stream that failed.
    std::function<void(const std::string& why, bool denied)> on_error;
  };

  // `socket_path` is absolute (config::spiffe_options::socket_path).
  workload_client(std::string socket_path, callbacks cb);
  // Cancels the call in flight and joins the thread.
  ~workload_client();
  workload_client(const workload_client&) = delete;
  workload_client& operator=(const workload_client&) = delete;

  void start();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// How long after an X.509-SVID (DER, leaf first) the next message is due: until 3/4 of the leaf's
// lifetime, at least 30 s (also when it does not parse) and at most 24 h. Exposed for tests.
std::chrono::seconds next_update_due_in(const std::string& svid_der);

// Routes gRPC's own log lines into mtlsd's log (JSON-safe, levelled), once per process. Called by
// workload_client::start(); exposed for tests.
void route_grpc_logs();

}  // namespace mtlsd::spiffe
