// mtlsd_loadgen: an mTLS (TLS 1.3, client certificate) HTTP/1.1 load generator for bench/run.sh.
//
// wrk, h2load and ab cannot present a client certificate, so the benchmark brings its own client.
// It is deliberately simple: blocking sockets, one thread per concurrent connection, OpenSSL 3.
//
// Modes (each prints exactly one JSON line on stdout; diagnostics go to stderr):
//   handshakes  T threads loop: connect, full mTLS handshake (never resumed), one small request
//               with "Connection: close", read the response and the server's close, close.
//   requests    C persistent connections (one thread each) loop request/response (keep-alive).
//   bulk        C persistent connections (default 1) loop downloading a large body.
//   idle        open K connections (handshake + one request each), hold them idle, and report how
//               much the server's resident memory grew per connection.
//   flood       T threads loop: connect, send a PROXY v1 header naming one source, wait for the
//               server to close, close. No TLS at all: what is measured is what a refusal before
//               the handshake costs the server. --hold N first opens N such connections and keeps
//               them (the flooder fills its per-source places, as a real one would), so that every
//               further connection is over the limit.
//
// With --proxy-src the handshakes/requests/bulk modes also begin each connection with a PROXY v1
// header (thread i names source i modulo the list), so one loopback client plays several sources;
// with --rate they pace themselves to a total number of operations per second (a client that
// "keeps its rate" instead of going as fast as it can).
//
// The measured window starts after --warmup seconds and ends after --duration seconds or --count
// operations, whichever comes first. When --server-pid is given, the CPU time (utime + stime) of
// that process and all its descendants is sampled at both ends of the window, so rates can be
// expressed per server CPU-second: that figure is far less sensitive to a busy machine than a
// plain rate.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "loadgen_connection.hpp"
#include "loadgen_options.hpp"
#include "loadgen_output.hpp"
#include "loadgen_pending.hpp"
#include "loadgen_proc.hpp"

namespace {

using loadgen::connection;
using loadgen::g_counters;
using loadgen::line_writer;
using loadgen::on_new_session;
using loadgen::options;
using loadgen::proxy_v1_header;
using loadgen::self_cpu_seconds;
using loadgen::send_all;
using loadgen::set_timeouts;
using loadgen::still_open;
using loadgen::still_open_peek;
using loadgen::ticket_slot;
using loadgen::tree_cpu_seconds;
using loadgen::tree_pss_kib;
using loadgen::tree_rss_kib;

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

// ---------------------------------------------------------------------------------------------
// Shared run state

enum class phase : int { warmup = 0, measuring = 1, stopped = 2 };

struct run_state {
  std::atomic<int> ph{static_cast<int>(phase::warmup)};
  std::atomic<std::uint64_t> ops{0};               // completed operations inside the window
  std::atomic<std::uint64_t> errors{0};            // failed operations (any time)
  std::atomic<std::uint64_t> window_errors{0};     // failed operations inside the window
  std::atomic<std::uint64_t> refused{0};           // flood: closed by the server, inside the window
  std::atomic<bool> signalled{false};              // resumed --hup-pid: the signal was sent
  std::atomic<bool> old_tickets_due{false};        // ... and --hup-wait has passed
  std::atomic<std::uint64_t> old_ticket_tries{0};  // pre-signal tickets offered after it
  std::atomic<std::uint64_t> old_ticket_resumed{0};  // ... and accepted
  // Mode resumed, inside the window, pooled-ticket tries excluded: handshakes and how many of
  // them were resumed, before the signal (or without one) and after it.
  std::atomic<std::uint64_t> before_signal_ops{0};
  std::atomic<std::uint64_t> window_resumed{0};
  std::atomic<std::uint64_t> after_signal_ops{0};
  std::atomic<std::uint64_t> after_signal_resumed{0};
  std::mutex err_mu;
  std::map<std::string, std::uint64_t> error_kinds;

  bool measuring() const { return ph.load(std::memory_order_relaxed) == 1; }
  bool stopped() const { return ph.load(std::memory_order_relaxed) == 2; }

  void error(const std::string& what) {
    errors.fetch_add(1, std::memory_order_relaxed);
    if (measuring()) window_errors.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(err_mu);
    if (++error_kinds[what] == 1) std::fprintf(stderr, "loadgen: error: %s\n", what.c_str());
  }
};

run_state g_state;

// ---------------------------------------------------------------------------------------------
// Modes

// Per thread: its index and the latencies it measured.
struct latencies {
  std::size_t index = 0;
  std::vector<double> ms;
};

// The PROXY source thread `index` plays, or "" when there is no header.
std::string proxy_src_for(const options& o, std::size_t index) {
  return o.proxy_srcs.empty() ? std::string() : o.proxy_srcs[index % o.proxy_srcs.size()];
}

// Paces one thread to its share of --rate (threads are offset evenly within one interval). A
// thread that falls behind does not burst to catch up: the offered rate is a ceiling. With
// keep_schedule (mode latency) it does: every operation has its intended start on a fixed
// schedule, and wait() returns it, so a stalled response delays the operations queued behind it
// and their latency, measured from the intended start, shows that delay (no coordinated
// omission: a stall is not hidden by the client politely waiting for it).
class pacer {
 public:
  pacer(const options& o, int nthreads, std::size_t index, bool keep_schedule = false)
      : keep_schedule_(keep_schedule) {
    if (o.rate <= 0) return;
    interval_ = std::chrono::duration_cast<clock_type::duration>(
        std::chrono::duration<double>(static_cast<double>(nthreads) / o.rate));
    next_ = clock_type::now() + interval_ * static_cast<long>(index) / std::max(1, nthreads);
  }
  clock_type::time_point wait() {
    if (interval_ == clock_type::duration::zero()) return clock_type::now();
    const auto now = clock_type::now();
    if (next_ > now) {
      std::this_thread::sleep_until(next_);
    } else if (!keep_schedule_ && now - next_ > interval_) {
      next_ = now;
    }
    const auto intended = next_;
    next_ += interval_;
    return keep_schedule_ ? intended : clock_type::now();
  }

 private:
  bool keep_schedule_ = false;
  clock_type::duration interval_{};
  clock_type::time_point next_{};
};

void record(latencies& lat, clock_type::time_point started) {
  if (!g_state.measuring()) return;
  g_state.ops.fetch_add(1, std::memory_order_relaxed);
  lat.ms.push_back(seconds_since(started) * 1e3);
}

void backoff() {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

void handshake_loop(SSL_CTX* ctx, const options& o, const sockaddr_in& addr, latencies& lat) {
  const std::string req =
      "GET " + o.path + " HTTP/1.1\r\nHost: " + o.server_name + "\r\nConnection: close\r\n\r\n";
  std::string err;
  const std::string src = proxy_src_for(o, lat.index);
  pacer pace(o, o.threads, lat.index);
  while (!g_state.stopped()) {
    pace.wait();
    if (g_state.stopped()) break;
    const auto t = clock_type::now();
    connection c;
    if (c.open(ctx, o, addr, err, src) && c.write_all(req, err) && c.read_response(err) &&
        c.await_close(err)) {
      c.close();
      record(lat, t);
    } else {
      g_state.error(err);
      backoff();
    }
  }
}

// Mode resumed: like handshakes, but each handshake resumes with the newest ticket this thread
// received (its first one is full). With --hup-pid, every other ticket issued before the signal
// goes unused into a pool (so those handshakes alternate full and resumed), and once --hup-wait
// has passed after the signal each pooled ticket is offered once: how many the server accepts
// says whether tickets survive a reload.
void resumed_loop(SSL_CTX* ctx, const options& o, const sockaddr_in& addr, latencies& lat) {
  constexpr std::size_t kPoolSize = 32;
  const std::string req =
      "GET " + o.path + " HTTP/1.1\r\nHost: " + o.server_name + "\r\nConnection: close\r\n\r\n";
  std::string err;
  const std::string src = proxy_src_for(o, lat.index);
  pacer pace(o, o.threads, lat.index);
  ticket_slot slot;
  std::uint64_t done = 0;
  while (!g_state.stopped()) {
    pace.wait();
    if (g_state.stopped()) break;
    SSL_SESSION* old = nullptr;
    if (g_state.old_tickets_due.load() && !slot.pool.empty()) {
      old = slot.pool.back();
      slot.pool.pop_back();
    }
    const bool after_signal = g_state.signalled.load();
    const auto t = clock_type::now();
    connection c;
    const bool opened = c.open(ctx, o, addr, err, src, &slot, old);
    const bool resumed = opened && c.resumed();
    const bool ok = opened && c.write_all(req, err) && c.read_response(err) && c.await_close(err);
    if (old != nullptr) {
      g_state.old_ticket_tries.fetch_add(1);
      if (resumed) g_state.old_ticket_resumed.fetch_add(1);
      SSL_SESSION_free(old);
    }
    if (!ok) {
      g_state.error(err);
      backoff();
      continue;
    }
    c.close();
    if (g_state.measuring() && old == nullptr) {
      (after_signal ? g_state.after_signal_ops : g_state.before_signal_ops).fetch_add(1);
      if (resumed)
        (after_signal ? g_state.after_signal_resumed : g_state.window_resumed).fetch_add(1);
    }
    record(lat, t);
    if (o.hup_pid > 0 && !after_signal && ++done % 2 == 0 && slot.pool.size() < kPoolSize &&
        slot.latest != nullptr) {
      slot.pool.push_back(slot.latest);
      slot.latest = nullptr;
    }
  }
}

void keepalive_loop(SSL_CTX* ctx, const options& o, const sockaddr_in& addr, latencies& lat) {
  const std::string req = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.server_name + "\r\n\r\n";
  std::string err;
  const std::string src = proxy_src_for(o, lat.index);
  // Mode latency: latency from the intended start (see pacer); requests: from the actual one.
  pacer pace(o, o.connections, lat.index, o.mode == "latency");
  while (!g_state.stopped()) {
    connection c;
    if (!c.open(ctx, o, addr, err, src)) {
      g_state.error(err);
      backoff();
      continue;
    }
    while (!g_state.stopped()) {
      const auto t = pace.wait();
      if (!c.write_all(req, err) || !c.read_response(err)) {
        g_state.error(err);
        break;
      }
      record(lat, t);
    }
  }
}

// One flood connection: connect, PROXY header, then wait for the server to close. Refused = the
// server closed (FIN or RST) without sending a byte; anything else (a byte, a timeout) means it
// was let in, which is counted as an error with its kind.
enum class flood_outcome { refused, admitted, failed };

flood_outcome flood_once(const options& o, const sockaddr_in& addr, const std::string& src,
                         std::string& err) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return flood_outcome::failed;
  }
  set_timeouts(fd, o.timeout);
  flood_outcome out = flood_outcome::failed;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    err = std::string("connect: ") + std::strerror(errno);
  } else if (!send_all(fd, proxy_v1_header(fd, src, o.port))) {
    // Closed before the header was even sent (e.g. at accept): a refusal too.
    out = errno == ECONNRESET || errno == EPIPE ? flood_outcome::refused : flood_outcome::failed;
    err = std::string("send: ") + std::strerror(errno);
  } else {
    char b = 0;
    const ssize_t n = ::recv(fd, &b, 1, 0);
    if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE))) {
      out = flood_outcome::refused;
    } else if (n > 0) {
      out = flood_outcome::admitted;
      err = "flood connection: the server sent data";
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      out = flood_outcome::admitted;
      err = "flood connection: not refused within --timeout";
    } else {
      err = std::string("recv: ") + std::strerror(errno);
    }
  }
  ::close(fd);
  return out;
}

void flood_loop(SSL_CTX*, const options& o, const sockaddr_in& addr, latencies& lat) {
  const std::string& src = o.proxy_srcs.front();
  pacer pace(o, o.threads, lat.index);
  std::string err;
  while (!g_state.stopped()) {
    pace.wait();
    if (g_state.stopped()) break;
    const auto t = clock_type::now();
    const bool in_window = g_state.measuring();
    if (flood_once(o, addr, src, err) == flood_outcome::refused) {
      if (in_window) {  // ops = connections offered; latency = time until refused
        g_state.ops.fetch_add(1, std::memory_order_relaxed);
        g_state.refused.fetch_add(1, std::memory_order_relaxed);
        lat.ms.push_back(seconds_since(t) * 1e3);
      }
    } else {
      if (in_window) g_state.ops.fetch_add(1, std::memory_order_relaxed);
      g_state.error(err);
    }
  }
}

// flood --hold: a connection that sends the header and then stays silent, holding its place.
int open_hold(const options& o, const sockaddr_in& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      !send_all(fd, proxy_v1_header(fd, o.proxy_srcs.front(), o.port))) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::uint64_t still_held(const std::vector<int>& fds) {
  return static_cast<std::uint64_t>(std::count_if(fds.begin(), fds.end(), still_open));
}

// Opens --hold connections and waits --settle for the server to read their headers. A hold
// the server refused (the places of the previous run not yet released) is opened again, a few
// times, so the flood that follows finds the places taken.
std::vector<int> open_holds(const options& o, const sockaddr_in& addr) {
  std::vector<int> fds(static_cast<std::size_t>(std::max(0, o.hold)), -1);
  for (int attempt = 0; attempt < 5; ++attempt) {
    for (int& fd : fds) {
      if (fd >= 0 && still_open(fd)) continue;
      if (fd >= 0) ::close(fd);
      fd = open_hold(o, addr);
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.settle));
    if (std::all_of(fds.begin(), fds.end(), [](int fd) { return fd >= 0 && still_open(fd); })) {
      break;
    }
  }
  std::erase_if(fds, [](int fd) {
    if (fd >= 0 && still_open(fd)) return false;
    if (fd >= 0) ::close(fd);
    return true;
  });
  if (fds.size() < static_cast<std::size_t>(std::max(0, o.hold))) {
    std::fprintf(stderr, "loadgen: only %zu of %d held connections stayed open\n", fds.size(),
                 o.hold);
  }
  return fds;
}

struct window {
  double wall_s = 0;
  double server_cpu_s = 0;
  double upstream_cpu_s = 0;
  double client_cpu_s = 0;
};

// Runs the workers, opens the window after the warm-up, closes it on duration or count.
window run_window(const options& o, int nthreads,
                  void (*loop)(SSL_CTX*, const options&, const sockaddr_in&, latencies&),
                  SSL_CTX* ctx, const sockaddr_in& addr, std::vector<latencies>& lats) {
  lats.resize(static_cast<std::size_t>(nthreads));
  for (std::size_t i = 0; i < lats.size(); ++i)
    lats[i].index = i;
  std::vector<std::thread> threads;
  for (int i = 0; i < nthreads; ++i) {
    threads.emplace_back(loop, ctx, std::cref(o), std::cref(addr),
                         std::ref(lats[static_cast<std::size_t>(i)]));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
  window w;
  const double s0 = o.server_pids.empty() ? 0 : tree_cpu_seconds(o.server_pids);
  const double u0 = o.upstream_pids.empty() ? 0 : tree_cpu_seconds(o.upstream_pids);
  const double c0 = self_cpu_seconds();
  const auto t0 = clock_type::now();
  g_state.ph.store(static_cast<int>(phase::measuring));
  g_counters.counting_body.store(true);
  auto signalled_at = t0;
  while (seconds_since(t0) < o.duration && (o.count == 0 || g_state.ops.load() < o.count)) {
    if (o.hup_pid > 0 && !g_state.signalled.load() && seconds_since(t0) >= o.hup_at) {
      if (::kill(o.hup_pid, SIGHUP) != 0) std::perror("loadgen: kill(SIGHUP)");
      signalled_at = clock_type::now();
      g_state.signalled.store(true);
    }
    if (g_state.signalled.load() && seconds_since(signalled_at) >= o.hup_wait) {
      g_state.old_tickets_due.store(true);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  g_state.ph.store(static_cast<int>(phase::stopped));
  g_counters.counting_body.store(false);
  w.wall_s = seconds_since(t0);
  w.server_cpu_s = o.server_pids.empty() ? 0 : tree_cpu_seconds(o.server_pids) - s0;
  w.upstream_cpu_s = o.upstream_pids.empty() ? 0 : tree_cpu_seconds(o.upstream_pids) - u0;
  w.client_cpu_s = self_cpu_seconds() - c0;
  for (auto& t : threads)
    t.join();
  return w;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double ratio(double a, double b) {
  return b > 0 ? a / b : 0;
}

int run_load(const options& o, SSL_CTX* ctx, const sockaddr_in& addr) {
  std::vector<latencies> lats;
  window w;
  int nthreads = 0;
  std::vector<int> holds;
  std::uint64_t held = 0;
  if (o.mode == "handshakes") {
    nthreads = o.threads;
    w = run_window(o, nthreads, handshake_loop, ctx, addr, lats);
  } else if (o.mode == "resumed") {
    nthreads = o.threads;
    w = run_window(o, nthreads, resumed_loop, ctx, addr, lats);
  } else if (o.mode == "flood") {
    holds = open_holds(o, addr);
    nthreads = o.threads;
    w = run_window(o, nthreads, flood_loop, ctx, addr, lats);
    held = still_held(holds);
    for (const int fd : holds)
      ::close(fd);
  } else {
    nthreads = o.connections;
    w = run_window(o, nthreads, keepalive_loop, ctx, addr, lats);
  }
  std::vector<double> all;
  for (auto& l : lats)
    all.insert(all.end(), l.ms.begin(), l.ms.end());
  const double ops = static_cast<double>(g_state.ops.load());
  const double mb = static_cast<double>(g_counters.body_bytes.load()) / 1e6;
  const auto hs = g_counters.handshakes.load();

  const double window_errors = static_cast<double>(g_state.window_errors.load());
  line_writer out(o.format == "json");
  out.str("label", o.label)
      .str("mode", o.mode)
      .str("scenario", o.scenario)
      .str("target", o.host + ":" + std::to_string(o.port))
      .str("path", o.path)
      .num("rate", o.rate, 1)
      .integer("sources", o.proxy_srcs.size())
      .integer("concurrency", static_cast<std::uint64_t>(nthreads))
      .num("window_s", w.wall_s)
      .integer("ops", g_state.ops.load())
      .integer("errors", g_state.errors.load())
      .integer("window_errors", g_state.window_errors.load())
      .num("success_pct", 100.0 * ratio(ops, ops + window_errors), 2)
      .num("ops_per_s", ratio(ops, w.wall_s), 1)
      .num("mb_per_s", ratio(mb, w.wall_s), 1)
      .num("server_cpu_s", w.server_cpu_s, 4)
      .num("server_cores_busy", ratio(w.server_cpu_s, w.wall_s), 2)
      .num("ops_per_server_cpu_s", ratio(ops, w.server_cpu_s), 1)
      .num("mb_per_server_cpu_s", ratio(mb, w.server_cpu_s), 1)
      .num("upstream_cpu_s", w.upstream_cpu_s, 2)
      .num("client_cpu_s", w.client_cpu_s, 2)
      .num("lat_p50_ms", percentile(all, 0.50))
      .num("lat_p99_ms", percentile(all, 0.99))
      .integer("handshakes", hs)
      .num("tickets_per_handshake",
           ratio(static_cast<double>(g_counters.tickets.load()), static_cast<double>(hs)), 2)
      .num("lat_p999_ms", percentile(all, 0.999))
      .num("lat_max_ms", all.empty() ? 0 : *std::max_element(all.begin(), all.end()));
  if (o.mode == "resumed") {
    const auto pct = [](const std::atomic<std::uint64_t>& part,
                        const std::atomic<std::uint64_t>& whole) {
      return 100.0 * ratio(static_cast<double>(part.load()), static_cast<double>(whole.load()));
    };
    out.integer("resumed", g_counters.resumed.load())
        .num("resumed_pct", pct(g_state.window_resumed, g_state.before_signal_ops), 2);
    if (o.hup_pid > 0) {
      out.integer("signalled", g_state.signalled.load() ? 1 : 0)
          .num("resumed_pct_after_signal",
               pct(g_state.after_signal_resumed, g_state.after_signal_ops), 2)
          .integer("old_ticket_tries", g_state.old_ticket_tries.load())
          .integer("old_ticket_resumed", g_state.old_ticket_resumed.load())
          .num("old_ticket_resumed_pct", pct(g_state.old_ticket_resumed, g_state.old_ticket_tries),
               2);
    }
  }
  if (o.mode == "latency") out.num("offered_rate", o.rate, 1);
  if (o.mode == "flood") {
    // ops = connections offered in the window (refused or not); the server's CPU in the window
    // divided by the refusals is the cost of one (an upper bound if it served others meanwhile).
    const double refused = static_cast<double>(g_state.refused.load());
    out.integer("refused", g_state.refused.load())
        .num("offered_per_s", ratio(ops, w.wall_s), 1)
        .num("refused_per_s", ratio(refused, w.wall_s), 1)
        .num("server_cpu_us_per_refused", 1e6 * ratio(w.server_cpu_s, refused), 1)
        .integer("hold", static_cast<std::uint64_t>(o.hold))
        .integer("held", held);
  }
  std::printf("%s\n", out.finish().c_str());
  return ops > 0 ? 0 : 1;
}

// Opens n connections (handshake + one keep-alive request each) with `threads` openers.
std::vector<std::unique_ptr<connection>> open_many(SSL_CTX* ctx, const options& o,
                                                   const sockaddr_in& addr, int n) {
  std::vector<std::unique_ptr<connection>> conns(static_cast<std::size_t>(n));
  std::atomic<int> next{0};
  const std::string req = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.server_name + "\r\n\r\n";
  std::vector<std::thread> threads;
  for (int t = 0; t < std::min(o.threads, n); ++t) {
    threads.emplace_back([&] {
      std::string err;
      for (int i = next++; i < n; i = next++) {
        auto c = std::make_unique<connection>();
        if (c->open(ctx, o, addr, err) && c->write_all(req, err) && c->read_response(err)) {
          conns[static_cast<std::size_t>(i)] = std::move(c);
        } else {
          g_state.error(err);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  std::erase(conns, nullptr);
  return conns;
}

// What the modes idle and pending hold open: mTLS connections, or sockets that never finish
// their handshake.
struct held_set {
  std::vector<std::unique_ptr<connection>> conns;
  std::vector<int> fds;

  // Those the server still keeps, looked at when the memory is sampled: an idle timeout may
  // have closed idle connections (review: one of 3 s closed all 500 before the sample, and
  // the growth was divided by 500 still), a handshake timeout or a cap pending sockets.
  std::size_t open() const {
    const auto conn_open = [](const std::unique_ptr<connection>& c) {
      return still_open_peek(c->fd());
    };
    return static_cast<std::size_t>(std::count_if(conns.begin(), conns.end(), conn_open) +
                                    std::count_if(fds.begin(), fds.end(), still_open));
  }
  std::size_t size() const { return conns.size() + fds.size(); }
  void close_all() {
    conns.clear();
    for (const int fd : fds)
      ::close(fd);
    fds.clear();
  }
};

held_set open_held(SSL_CTX* ctx, const options& o, const sockaddr_in& addr, int n,
                   const std::string& pending_prefix) {
  held_set h;
  if (o.mode != "pending") {
    h.conns = open_many(ctx, o, addr, n);
    for (auto& c : h.conns)
      c->drop_buffer();
    return h;
  }
  for (int i = 0; i < n; ++i) {
    const int fd = loadgen::open_pending(addr, pending_prefix);
    if (fd >= 0) {
      h.fds.push_back(fd);
    } else {
      g_state.error(std::string("pending connection: ") + std::strerror(errno));
    }
  }
  return h;
}

struct memory_sample {
  std::uint64_t rss_kib = 0;
  std::uint64_t pss_kib = 0;
};

memory_sample sample_memory(const options& o) {
  if (o.server_pids.empty()) return {};
  return {tree_rss_kib(o.server_pids), tree_pss_kib(o.server_pids)};
}

// Modes idle and pending: how much the server's memory grows per connection held open, and how
// much of that growth it keeps once they are all closed (a burst's memory given back or not).
int run_idle(const options& o, SSL_CTX* ctx, const sockaddr_in& addr) {
  const auto settle = std::chrono::duration<double>(o.settle);
  std::string prefix;  // pending: what each socket sends before falling silent
  if (o.mode == "pending" && o.pending == "half") {
    const std::string hello = loadgen::client_hello_bytes(ctx, o.server_name);
    if (hello.size() < 2) {
      std::fputs("loadgen: cannot make a ClientHello\n", stderr);
      return 2;
    }
    prefix = hello.substr(0, hello.size() / 2);
  }
  // Warm the server up (allocator arenas, per-thread OpenSSL state) so the delta below is the
  // per-connection cost, not one-time start-up cost.
  open_held(ctx, o, addr, std::min(o.connections, 64), prefix).close_all();
  std::this_thread::sleep_for(settle);
  const memory_sample before = sample_memory(o);
  const auto t0 = clock_type::now();
  held_set held = open_held(ctx, o, addr, o.connections, prefix);
  const double open_s = seconds_since(t0);
  std::this_thread::sleep_for(settle);
  const memory_sample peak = sample_memory(o);
  const std::size_t n = held.open();
  const std::size_t closed = held.size() - n;  // by the server, before the sample
  if (closed > 0 && o.mode == "idle") {
    std::fprintf(stderr,
                 "loadgen: the server closed %zu of %zu idle connections before the sample: "
                 "the growth is divided by the %zu it held\n",
                 closed, held.size(), n);
  }
  held.close_all();
  std::this_thread::sleep_for(2 * settle);
  const memory_sample after = sample_memory(o);

  const auto per_conn = [n](std::uint64_t to, std::uint64_t from) {
    return n > 0 ? (static_cast<double>(to) - static_cast<double>(from)) / static_cast<double>(n)
                 : 0.0;
  };
  const double growth = static_cast<double>(peak.pss_kib) - static_cast<double>(before.pss_kib);
  const double kept = static_cast<double>(after.pss_kib) - static_cast<double>(before.pss_kib);
  line_writer out(o.format == "json");
  out.str("label", o.label)
      .str("mode", o.mode)
      .str("pending", o.mode == "pending" ? o.pending : "")
      .str("target", o.host + ":" + std::to_string(o.port))
      .integer("requested", static_cast<std::uint64_t>(o.connections))
      .integer("connections", n)
      .integer("closed", closed)
      .integer("errors", g_state.errors.load())
      .num("open_s", open_s, 2)
      .integer("rss_before_kib", before.rss_kib)
      .integer("rss_after_kib", peak.rss_kib)
      .integer("rss_after_close_kib", after.rss_kib)
      .integer("pss_before_kib", before.pss_kib)
      .integer("pss_peak_kib", peak.pss_kib)
      .integer("pss_after_close_kib", after.pss_kib)
      .num("kib_per_conn", per_conn(peak.rss_kib, before.rss_kib), 1)
      .num("pss_kib_per_conn", per_conn(peak.pss_kib, before.pss_kib), 1)
      .num("retained_pct", growth > 0 ? 100.0 * kept / growth : 0, 1)
      .integer("handshakes", g_counters.handshakes.load())
      .num("tickets_per_handshake",
           ratio(static_cast<double>(g_counters.tickets.load()),
                 static_cast<double>(g_counters.handshakes.load())),
           2);
  std::printf("%s\n", out.finish().c_str());
  return n > 0 ? 0 : 1;
}

SSL_CTX* make_ctx(const options& o) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // One suite offered, so every server negotiates the same (bench/lib/servers.sh checks it:
  // BENCH_SUITE). With OpenSSL's default offer (AES-256 first) mtlsd picked AES-128 by its own
  // preference while nginx and HAProxy took the client's order, AES-256-GCM: ~2-6% more crypto
  // per MB for them in bulk (review).
  if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, o.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, o.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1 ||
      SSL_CTX_load_verify_locations(ctx, o.ca.c_str(), nullptr) != 1) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // Tickets are counted (to show each server's configuration) but never used: every handshake
  // is a full one.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  return ctx;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = loadgen::parse(argc, argv);

  // Many connections (idle mode) need many descriptors.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  std::signal(SIGPIPE, SIG_IGN);

  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "loadgen: --host must be an IPv4 literal: %s\n", o.host.c_str());
    return 2;
  }
  SSL_CTX* ctx = make_ctx(o);
  if (ctx == nullptr) {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    std::fprintf(stderr, "loadgen: cannot load client credentials: %s\n", buf);
    return 2;
  }
  const int rc =
      o.mode == "idle" || o.mode == "pending" ? run_idle(o, ctx, addr) : run_load(o, ctx, addr);
  SSL_CTX_free(ctx);
  return rc;
}
