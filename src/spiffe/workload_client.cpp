// FetchX509SVID over gRPC (Debian's libgrpc++, the unsecure variant: the agent's unix socket needs
// no TLS). The synchronous API on one thread per socket is the simplest correct shape: a
// server-streaming call that blocks in Read() until the agent sends, cancelled from the daemon's
// thread by ClientContext::TryCancel().
#include "mtlsd/spiffe/workload_client.hpp"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "mtlsd/log/log.hpp"
#include "workload.grpc.pb.h"

namespace mtlsd::spiffe {
namespace {

using namespace std::chrono_literals;

constexpr auto kFirstBackoff = 500ms;
constexpr auto kMaxBackoff = 30s;

void grpc_log_line(gpr_log_func_args* args) {
  // gRPC's errors about a lost connection are what on_error reports anyway: warn, not error.
  const auto level =
      args->severity == GPR_LOG_SEVERITY_ERROR ? spdlog::level::warn : spdlog::level::debug;
  log::write(level, args->message ? args->message : "",
             {{"component", "grpc"}, {"file", args->file ? args->file : ""}, {"line", args->line}});
}

tls::spiffe::raw_x509_svid to_raw(const X509SVIDResponse& r) {
  tls::spiffe::raw_x509_svid raw;
  const X509SVID& s = r.svids(0);  // the default SVID comes first
  raw.spiffe_id = s.spiffe_id();
  raw.x509_svid = s.x509_svid();
  raw.x509_svid_key = s.x509_svid_key();
  raw.bundle = s.bundle();
  for (const auto& [td, der] : r.federated_bundles())
    raw.federated_bundles.emplace(td, der);
  return raw;
}

}  // namespace

void route_grpc_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    gpr_set_log_function(grpc_log_line);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
  });
}

struct workload_client::impl {
  std::string socket_path;
  callbacks cb;
  std::thread thread;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  grpc::ClientContext* call = nullptr;  // the call in flight, for TryCancel

  // One FetchX509SVID call, until it ends. Returns why it ended and whether a message came.
  std::pair<std::string, bool> stream_once() {
    auto channel = grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials());
    auto stub = SpiffeWorkloadAPI::NewStub(channel);
    grpc::ClientContext ctx;
    // Required by the spec: a server refuses calls without it (a browser's request forged
    // through some proxy cannot carry it).
    ctx.AddMetadata("workload.spiffe.io", "true");
    {
      std::lock_guard lock(mutex);
      if (stopping) return {"stopping", false};
      call = &ctx;
    }
    auto reader = stub->FetchX509SVID(&ctx, X509SVIDRequest{});
    X509SVIDResponse response;
    bool received = false;
    while (reader->Read(&response)) {
      if (response.svids_size() == 0) {
        cb.on_error("the Workload API sent an update with no X.509-SVID");
        continue;
      }
      received = true;
      cb.on_update(to_raw(response));
    }
    const grpc::Status status = reader->Finish();
    {
      std::lock_guard lock(mutex);
      call = nullptr;
    }
    std::string why = status.ok() ? "the Workload API ended the stream"
                                  : "FetchX509SVID failed: " + status.error_message() + " (code " +
                                        std::to_string(static_cast<int>(status.error_code())) + ")";
    return {why, received};
  }

  void run() {
    auto backoff = std::chrono::milliseconds(kFirstBackoff);
    for (;;) {
      auto [why, received] = stream_once();
      std::unique_lock lock(mutex);
      if (stopping) return;
      if (received) backoff = kFirstBackoff;
      lock.unlock();
      cb.on_error(why + "; retrying in " + std::to_string(backoff.count()) + "ms");
      lock.lock();
      if (wake.wait_for(lock, backoff, [this] { return stopping; })) return;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    }
  }
};

workload_client::workload_client(std::string socket_path, callbacks cb)
    : impl_(std::make_unique<impl>()) {
  impl_->socket_path = std::move(socket_path);
  impl_->cb = std::move(cb);
}

workload_client::~workload_client() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    if (impl_->call) impl_->call->TryCancel();
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void workload_client::start() {
  route_grpc_logs();
  impl_->thread = std::thread([this] {
    try {
      impl_->run();
    } catch (const std::exception& e) {
      log::error("SPIFFE Workload API client stopped",
                 {{"socket", impl_->socket_path}, {"error", e.what()}});
    }
  });
}

}  // namespace mtlsd::spiffe
