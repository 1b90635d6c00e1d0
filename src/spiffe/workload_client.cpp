// FetchX509SVID over gRPC (Debian's libgrpc++, the unsecure variant: the agent's unix socket needs
// no TLS). The synchronous API on one thread per socket is the simplest correct shape: a
// server-streaming call that blocks in Read() until the agent sends, cancelled by
// ClientContext::TryCancel() from the daemon's thread (stop) or from the client's watchdog
// thread (an agent that has gone quiet for too long).
#include "mtlsd/spiffe/workload_client.hpp"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>
#include <tuple>

#include "mtlsd/log/log.hpp"
#include "mtlsd/tls/credentials.hpp"
#include "workload.grpc.pb.h"

namespace mtlsd::spiffe {
namespace {

using namespace std::chrono_literals;

constexpr auto kFirstBackoff = 500ms;
constexpr auto kMaxBackoff = 30s;
// An agent answers a call once it has attested the caller (an unregistered workload gets
// PermissionDenied). One that says nothing for this long may be stuck: call again. A call made
// again is attested again; SPIRE's Kubernetes attestor waits for the kubelet to list the
// container, which a new call does not set back. (Envoy's SDS stops waiting after 15 s too,
// initial_fetch_timeout, but keeps the stream.)
constexpr auto kFirstUpdateWithin = 15s;
// After a message, the next is due by the time the SVID is 3/4 through its lifetime (SPIRE
// rotates at 1/2), but never sooner than this after the last one: an agent that is alive but
// cannot rotate (its server unreachable) sends the same SVID again on each call, and is not
// called more often than this.
constexpr auto kQuietAtLeast = 30s;
// And never later than this: a stream quiet for a day is called again anyway.
constexpr auto kQuietAtMost = 24h;

void grpc_log_line(gpr_log_func_args* args) {
  // gRPC's errors about a lost connection are what on_error reports anyway: warn, not error.
  const auto level =
      args->severity == GPR_LOG_SEVERITY_ERROR ? spdlog::level::warn : spdlog::level::debug;
  log::write(level, args->message ? args->message : "",
             {{"component", "grpc"}, {"file", args->file ? args->file : ""}, {"line", args->line}});
}

// gRPC's name for a status code (grpc::StatusCode has none to print).
const char* status_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN_CODE";
  }
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

std::chrono::seconds next_update_due_in(const std::string& svid_der) {
  const auto* p = reinterpret_cast<const unsigned char*>(svid_der.data());
  X509* leaf = d2i_X509(nullptr, &p, static_cast<long>(svid_der.size()));
  ERR_clear_error();  // what failed to decode must not show up in the next refusal's message
  if (!leaf) return kQuietAtLeast;  // refused by the daemon; the agent may send a good one
  const std::time_t from = tls::not_before_of(leaf);
  const std::time_t due_at = from + (tls::not_after_of(leaf) - from) / 4 * 3;
  X509_free(leaf);
  return std::clamp(std::chrono::seconds(due_at - std::time(nullptr)),
                    std::chrono::seconds(kQuietAtLeast), std::chrono::seconds(kQuietAtMost));
}

void route_grpc_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    gpr_set_log_function(grpc_log_line);
    gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
  });
}

struct workload_client::impl {
  using clock = std::chrono::steady_clock;

  std::string socket_path;
  callbacks cb;
  std::thread thread;
  std::thread watchdog;
  std::mutex mutex;  // guards everything below
  std::condition_variable wake;
  std::condition_variable watch_wake;
  bool stopping = false;
  grpc::ClientContext* call = nullptr;   // the call in flight, for TryCancel
  std::optional<clock::time_point> due;  // the call in flight is given up if nothing comes by
  std::string due_why;                   // what to say then
  std::string gave_up;                   // said by the watchdog when it cancelled the call

  void expect_message_by(clock::time_point when, std::string why) {
    std::lock_guard lock(mutex);
    due = when;
    due_why = std::move(why);
    watch_wake.notify_all();
  }

  // Cancels the call in flight once its message is overdue; its Read() then fails and
  // stream_once() reports `gave_up`.
  void watch() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      if (call && due && clock::now() >= *due) {
        gave_up = due_why;
        due.reset();
        call->TryCancel();
      }
      if (due) {
        const clock::time_point deadline = *due;  // `due` may change while the lock is let go
        watch_wake.wait_until(lock, deadline);
      } else
        watch_wake.wait(lock);
    }
  }

  // One FetchX509SVID call, until it ends. Returns why it ended and whether a message came.
  struct stream_end {
    std::string why;
    bool received = false;  // a message came
    bool denied = false;    // the agent gives this workload no identity
  };
  stream_end stream_once() {
    auto channel = grpc::CreateChannel("unix:" + socket_path, grpc::InsecureChannelCredentials());
    auto stub = SpiffeWorkloadAPI::NewStub(channel);
    grpc::ClientContext ctx;
    // Required by the spec: a server refuses calls without it (a browser's request forged
    // through some proxy cannot carry it).
    ctx.AddMetadata("workload.spiffe.io", "true");
    {
      std::lock_guard lock(mutex);
      if (stopping) return {"stopping"};
      call = &ctx;
      gave_up.clear();
    }
    // However this call ends (an exception from a callback included), the watchdog must not
    // cancel `ctx` after it is gone.
    struct forget_call {
      impl& self;
      ~forget_call() {
        std::lock_guard lock(self.mutex);
        self.call = nullptr;
        self.due.reset();
      }
    } forget{*this};
    expect_message_by(clock::now() + kFirstUpdateWithin,
                      "the Workload API sent nothing within " +
                          std::to_string(std::chrono::seconds(kFirstUpdateWithin).count()) +
                          "s of the call");
    auto reader = stub->FetchX509SVID(&ctx, X509SVIDRequest{});
    X509SVIDResponse response;
    bool received = false;
    while (reader->Read(&response)) {
      if (response.svids_size() == 0) {
        cb.on_error("the Workload API sent an update with no X.509-SVID", true);
        continue;
      }
      received = true;
      expect_message_by(clock::now() + next_update_due_in(response.svids(0).x509_svid()),
                        "the Workload API sent no new X.509-SVID by 3/4 of the last one's "
                        "lifetime (the stream may be stuck)");
      cb.on_update(to_raw(response));
      // The keys' bytes in the message, copied out above: wiped before the next read reuses
      // or frees them (gRPC's own receive buffers are beyond mtlsd's reach; README, Secrets).
      for (auto& svid : *response.mutable_svids()) {
        std::string& key = *svid.mutable_x509_svid_key();
        OPENSSL_cleanse(key.data(), key.size());
      }
    }
    const grpc::Status status = reader->Finish();
    std::string watchdog_why;
    {
      std::lock_guard lock(mutex);
      watchdog_why = std::move(gave_up);
    }
    // The watchdog's reason only when its cancel is what ended the call (not a failure or an
    // end of stream that came just before it).
    if (!watchdog_why.empty() && status.error_code() == grpc::StatusCode::CANCELLED)
      return {watchdog_why, received};
    if (status.ok()) return {"the Workload API ended the stream", received};
    // SPIRE answers PERMISSION_DENIED ("no identity issued") when no registration entry
    // matches the caller, also mid-stream once its entry is deleted: no agent trouble.
    const bool denied = status.error_code() == grpc::StatusCode::PERMISSION_DENIED;
    std::string why = std::string("FetchX509SVID failed: ") + status_name(status.error_code()) +
                      " (" + status.error_message() + ")";
    if (denied) why += ": no registration entry matches this workload, or it was removed";
    return {why, received, denied};
  }

  void run() {
    auto backoff = std::chrono::milliseconds(kFirstBackoff);
    for (;;) {
      stream_end end;
      try {
        end = stream_once();
      } catch (const std::exception& e) {  // a callback's; the next call may do better
        end.why = std::string("the Workload API client failed: ") + e.what();
      }
      std::unique_lock lock(mutex);
      if (stopping) return;
      if (end.received) backoff = kFirstBackoff;
      lock.unlock();
      cb.on_error(end.why + "; retrying in " + std::to_string(backoff.count()) + "ms", end.denied);
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
  impl_->watch_wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
}

void workload_client::start() {
  route_grpc_logs();
  impl_->watchdog = std::thread([this] { impl_->watch(); });
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
