// mtlsd_idle_floor: what OpenSSL alone costs per idle server-side TLS 1.3 connection, with and
// without a client certificate: the floor under any proxy built on OpenSSL (issue 13 asks mtlsd
// to hold an idle mTLS connection in <= 12 KiB). Links OpenSSL and libc only, no mtlsd code.
//
// The server is this program re-executed (`--serve`, a fresh address space: a forked child would
// share copy-on-write pages with the client, and the client's writes would move the server's PSS).
// It is what a proxy must at least do with OpenSSL: one SSL_CTX set up as mtlsd's listener
// (src/tls/context.cpp: TLS 1.3, X25519:P-256:P-384, SSL_MODE_RELEASE_BUFFERS,
// SSL_OP_NO_RENEGOTIATION, mtlsd's default of one ticket) with an ECDSA P-256 certificate and,
// for mTLS, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT against the CA; non-blocking
// sockets and level-triggered epoll; each connection does the handshake, reads a 64-byte request,
// writes a 64-byte answer, reads again until SSL_ERROR_WANT_READ and then stays idle. Per
// connection it holds the socket, its SSL* and a 16-byte slot of a table allocated at start.
//
// The client (this process) opens 64 warm-up connections and closes them (allocator arenas,
// OpenSSL's lazily built state: as mtlsd_loadgen's idle mode), samples the server, opens N
// connections one at a time (handshake with the client certificate, 64 bytes out, 64 back; then
// it frees its own SSL* and keeps only the socket, which the server cannot tell), samples again,
// and prints the growth per connection: PSS and RSS from /proc/PID/smaps_rollup, the heap in use
// (glibc mallinfo2: uordblks + hblkhd) and what OpenSSL itself has allocated and not yet freed
// (counted through CRYPTO_set_mem_functions, as malloc_usable_size).
//
//   mtlsd_idle_floor --pki DIR [--connections 2000,8000] [--tickets 0|1] [--warmup 64]
//
// DIR holds scripts/gen-pki.sh's server.crt, server.key, ca.crt, client.crt and client.key.
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t message_size = 64;              // the request and the answer
constexpr const char* groups = "X25519:P-256:P-384";  // mtlsd's default_groups
constexpr const char* suites =                        // mtlsd's default_tls13_suites
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// --- what OpenSSL has allocated and not freed (CRYPTO_set_mem_functions) -----------------------
std::atomic<std::int64_t> g_ossl_bytes{0};
std::atomic<std::int64_t> g_ossl_blocks{0};
bool g_ossl_counted = false;

void* counted_malloc(std::size_t n, const char*, int) {
  void* p = std::malloc(n);
  if (p != nullptr) {
    g_ossl_bytes += static_cast<std::int64_t>(malloc_usable_size(p));
    ++g_ossl_blocks;
  }
  return p;
}

void counted_free(void* p, const char*, int) {
  if (p == nullptr) return;
  g_ossl_bytes -= static_cast<std::int64_t>(malloc_usable_size(p));
  --g_ossl_blocks;
  std::free(p);
}

void* counted_realloc(void* p, std::size_t n, const char* file, int line) {
  if (p == nullptr) return counted_malloc(n, file, line);
  if (n == 0) {
    counted_free(p, file, line);
    return nullptr;
  }
  const auto old = static_cast<std::int64_t>(malloc_usable_size(p));
  void* q = std::realloc(p, n);
  if (q != nullptr) g_ossl_bytes += static_cast<std::int64_t>(malloc_usable_size(q)) - old;
  return q;
}

// --- the server (`--serve`) ---------------------------------------------------------------------
struct stats {                // the server's answer to 's' on the control socket
  std::int64_t live = 0;      // connections it holds
  std::int64_t answered = 0;  // ... of which have had their answer and wait, idle
  std::int64_t ossl_bytes = 0;
  std::int64_t ossl_blocks = 0;
  std::int64_t heap_bytes = 0;       // mallinfo2: uordblks + hblkhd
  std::int64_t cached_sessions = 0;  // SSL_CTX_sess_number: must stay 0 (stateless tickets)
};

struct conn {  // the server's whole per-connection state besides the socket and the SSL
  SSL* ssl = nullptr;
  std::uint32_t got = 0;  // request bytes read
  bool answered = false;
  bool want_write = false;
};

SSL_CTX* server_ctx(const std::string& pki, bool mtls, int tickets) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_max_early_data(ctx, 0);
  if (SSL_CTX_set_ciphersuites(ctx, suites) != 1 || SSL_CTX_set1_groups_list(ctx, groups) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, (pki + "/server.crt").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, (pki + "/server.key").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  if (mtls) {
    if (SSL_CTX_load_verify_locations(ctx, (pki + "/ca.crt").c_str(), nullptr) != 1) {
      SSL_CTX_free(ctx);
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  // A resumable session must name its context when peers are verified (mtlsd binds it to the
  // listener and its trust: bind_session_context).
  static const unsigned char sid_ctx[] = "mtlsd_idle_floor";
  SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
  if (tickets > 0) {  // mtlsd's default, session_resumption: true
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_num_tickets(ctx, static_cast<std::size_t>(tickets));
  } else {  // session_resumption: false (the bench's idle workloads)
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  return ctx;
}

class server {
 public:
  server(SSL_CTX* ctx, int listen_fd, int control_fd, std::size_t max_fds)
      : ctx_(ctx), listen_fd_(listen_fd), control_fd_(control_fd), conns_(max_fds) {}

  int run() {
    epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0 || !watch(listen_fd_, EPOLL_CTL_ADD, EPOLLIN) ||
        !watch(control_fd_, EPOLL_CTL_ADD, EPOLLIN))
      return 1;
    std::vector<epoll_event> events(256);
    for (;;) {
      const int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return 1;
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<std::size_t>(i)].data.fd;
        if (fd == listen_fd_) {
          accept_all();
        } else if (fd == control_fd_) {
          if (!control()) return 0;
        } else {
          drive(fd);
        }
      }
    }
  }

 private:
  bool watch(int fd, int op, std::uint32_t what) {
    epoll_event ev{};
    ev.events = what;
    ev.data.fd = fd;
    return ::epoll_ctl(epfd_, op, fd, &ev) == 0;
  }

  void accept_all() {
    for (;;) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN (or a failed accept: the client reports the loss)
      if (static_cast<std::size_t>(fd) >= conns_.size()) {
        ::close(fd);
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      SSL* ssl = SSL_new(ctx_);
      if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 || !watch(fd, EPOLL_CTL_ADD, EPOLLIN)) {
        SSL_free(ssl);
        ::close(fd);
        continue;
      }
      SSL_set_accept_state(ssl);
      conns_[static_cast<std::size_t>(fd)] = conn{ssl};
      ++live_;
    }
  }

  void drop(int fd) {
    conn& c = conns_[static_cast<std::size_t>(fd)];
    if (c.answered) --answered_;
    SSL_free(c.ssl);  // no close_notify: the peer has gone, or this is the end of the run
    c = conn{};
    ::close(fd);  // also leaves the epoll set
    --live_;
  }

  // false when the connection cannot go on; otherwise it waits for what OpenSSL wants
  bool blocked(int fd, conn& c, int rc) {
    const int err = SSL_get_error(c.ssl, rc);
    if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) return false;
    const bool want_write = err == SSL_ERROR_WANT_WRITE;
    if (want_write != c.want_write) {
      c.want_write = want_write;
      watch(fd, EPOLL_CTL_MOD, want_write ? EPOLLIN | EPOLLOUT : EPOLLIN);
    }
    ERR_clear_error();
    return true;
  }

  void drive(int fd) {
    conn& c = conns_[static_cast<std::size_t>(fd)];
    if (c.ssl == nullptr) return;
    if (!SSL_is_init_finished(c.ssl)) {
      const int rc = SSL_do_handshake(c.ssl);
      if (rc != 1) {
        if (!blocked(fd, c, rc)) drop(fd);
        return;
      }
    }
    static const char answer[message_size] = "answer";
    for (;;) {
      if (c.got >= message_size && !c.answered) {
        const int rc = SSL_write(c.ssl, answer, static_cast<int>(message_size));
        if (rc <= 0) {
          if (!blocked(fd, c, rc)) drop(fd);
          return;
        }
        c.answered = true;
        ++answered_;
      }
      char buf[message_size];
      const int rc = SSL_read(c.ssl, buf, static_cast<int>(sizeof buf));
      if (rc <= 0) {  // WANT_READ: idle now (its record buffers released); else closed or failed
        if (!blocked(fd, c, rc)) drop(fd);
        return;
      }
      c.got += static_cast<std::uint32_t>(rc);
    }
  }

  bool control() {  // 's': send the stats; 'q' or end of file: quit
    char cmd = 0;
    if (::read(control_fd_, &cmd, 1) != 1 || cmd != 's') return false;
    const struct mallinfo2 mi = ::mallinfo2();
    stats s;
    s.live = live_;
    s.answered = answered_;
    s.ossl_bytes = g_ossl_bytes.load();
    s.ossl_blocks = g_ossl_blocks.load();
    s.heap_bytes = static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
    s.cached_sessions = SSL_CTX_sess_number(ctx_);
    return ::write(control_fd_, &s, sizeof s) == static_cast<ssize_t>(sizeof s);
  }

  SSL_CTX* ctx_;
  int listen_fd_;
  int control_fd_;
  int epfd_ = -1;
  std::vector<conn> conns_;  // by fd, allocated before any connection
  std::int64_t live_ = 0;
  std::int64_t answered_ = 0;
};

int serve(const std::string& pki, bool mtls, int tickets, int listen_fd, int control_fd) {
  SSL_CTX* ctx = server_ctx(pki, mtls, tickets);
  if (ctx == nullptr) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  server s(ctx, listen_fd, control_fd, static_cast<std::size_t>(rl.rlim_cur));
  const int rc = s.run();
  SSL_CTX_free(ctx);
  return rc;
}

// --- the client ---------------------------------------------------------------------------------
SSL_CTX* client_ctx(const std::string& pki) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (SSL_CTX_set1_groups_list(ctx, groups) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, (pki + "/client.crt").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, (pki + "/client.key").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx, (pki + "/ca.crt").c_str(), nullptr) != 1) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return ctx;
}

// One connection: handshake (the certificate is sent when the server asks for it), 64 bytes
// each way. Returns the socket, kept open; the SSL is freed without a close_notify.
int open_one(SSL_CTX* ctx, const sockaddr_in& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  SSL* ssl = SSL_new(ctx);
  bool ok = ssl != nullptr && SSL_set_fd(ssl, fd) == 1 && SSL_set1_host(ssl, "localhost") == 1 &&
            SSL_connect(ssl) == 1;
  char msg[message_size] = "request";
  ok = ok && SSL_write(ssl, msg, static_cast<int>(sizeof msg)) == static_cast<int>(sizeof msg);
  std::size_t got = 0;
  while (ok && got < message_size) {
    const int rc = SSL_read(ssl, msg, static_cast<int>(sizeof msg - got));
    ok = rc > 0;
    if (ok) got += static_cast<std::size_t>(rc);
  }
  SSL_free(ssl);
  if (!ok) {
    ERR_print_errors_fp(stderr);
    ::close(fd);
    return -1;
  }
  return fd;
}

struct sample {
  stats s;
  std::int64_t pss_kib = 0;
  std::int64_t rss_kib = 0;
};

std::int64_t kib_field(const std::string& file, const std::string& key) {
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size()));
  }
  return -1;
}

bool ask(int control_fd, stats& out) {
  const char cmd = 's';
  return ::write(control_fd, &cmd, 1) == 1 &&
         ::read(control_fd, &out, sizeof out) == static_cast<ssize_t>(sizeof out);
}

// The server's stats once it holds `live` connections (it may still be reading the closes of
// others), and its memory then.
bool sample_server(pid_t pid, int control_fd, std::int64_t live, sample& out) {
  for (int i = 0; i < 500; ++i) {
    if (!ask(control_fd, out.s)) return false;
    if (out.s.live == live) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string rollup = "/proc/" + std::to_string(pid) + "/smaps_rollup";
  out.pss_kib = kib_field(rollup, "Pss:");
  out.rss_kib = kib_field(rollup, "Rss:");
  return out.s.live == live && out.pss_kib >= 0;
}

struct result {
  bool mtls = false;
  int requested = 0;
  int held = 0;
  sample before, after;
  bool ok = false;
};

// A fresh server; `warmup` connections opened and closed; `n` opened and held; the server sampled
// before and after the n.
result measure(const std::string& self, const std::string& pki, SSL_CTX* cctx, bool mtls,
               int tickets, int n, int warmup) {
  result r;
  r.mtls = mtls;
  r.requested = n;
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int ctl[2] = {-1, -1};
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, 4096) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      ::socketpair(AF_UNIX, SOCK_STREAM, 0, ctl) != 0) {
    std::perror("idle_floor: listen");
    return r;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(ctl[0]);
    const std::string lfd_s = std::to_string(lfd), cfd_s = std::to_string(ctl[1]);
    const std::string mtls_s = mtls ? "1" : "0", tickets_s = std::to_string(tickets);
    ::execl(self.c_str(), self.c_str(), "--serve", pki.c_str(), mtls_s.c_str(), tickets_s.c_str(),
            lfd_s.c_str(), cfd_s.c_str(), static_cast<char*>(nullptr));
    std::perror("idle_floor: exec");
    ::_exit(127);
  }
  ::close(lfd);
  ::close(ctl[1]);
  std::vector<int> fds;
  const auto open_n = [&](int count) {
    for (int i = 0; i < count; ++i) {
      const int fd = open_one(cctx, addr);
      if (fd >= 0) fds.push_back(fd);
    }
  };
  const auto close_all = [&] {
    for (const int fd : fds)
      ::close(fd);
    fds.clear();
  };
  if (pid > 0) {
    open_n(warmup);
    close_all();
    if (sample_server(pid, ctl[0], 0, r.before)) {
      open_n(n);
      r.held = static_cast<int>(fds.size());
      r.ok = sample_server(pid, ctl[0], r.held, r.after) && r.after.s.answered == r.held;
    }
  }
  ::close(ctl[0]);  // the server quits
  if (pid > 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
  } else {
    std::perror("idle_floor: fork");
  }
  close_all();
  return r;
}

std::string openssl_version() {
  return OpenSSL_version(OPENSSL_VERSION);
}

void print_table(const std::vector<result>& results, int tickets, int warmup) {
  std::printf(
      "idle floor: %s alone (server side, TLS 1.3, ECDSA P-256,\n"
      "X25519, %d ticket(s), SSL_MODE_RELEASE_BUFFERS): growth per connection held idle after a\n"
      "handshake and 64 B each way; %d warm-up connections opened and closed first\n\n",
      openssl_version().c_str(), tickets, warmup);
  std::printf("%-22s %6s %9s %9s %10s %14s %7s\n", "client certificate", "conns", "PSS KiB",
              "RSS KiB", "heap KiB", "OpenSSL KiB", "blocks");
  for (const result& r : results) {
    const char* what = r.mtls ? "required (mTLS)" : "none (server-only TLS)";
    if (!r.ok) {
      std::printf("%-22s %6d  failed: %d of %d connections held\n", what, r.requested, r.held,
                  r.requested);
      continue;
    }
    const double n = r.held;
    const auto per = [n](std::int64_t a, std::int64_t b) { return static_cast<double>(a - b) / n; };
    std::printf("%-22s %6d %9.1f %9.1f %10.1f %14.1f %7.1f\n", what, r.held,
                per(r.after.pss_kib, r.before.pss_kib), per(r.after.rss_kib, r.before.rss_kib),
                per(r.after.s.heap_bytes, r.before.s.heap_bytes) / 1024,
                per(r.after.s.ossl_bytes, r.before.s.ossl_bytes) / 1024,
                per(r.after.s.ossl_blocks, r.before.s.ossl_blocks));
    if (r.after.s.cached_sessions != 0)
      std::printf("  (warning: %lld sessions in the server's cache)\n",
                  static_cast<long long>(r.after.s.cached_sessions));
  }
  std::printf(
      "\nper connection: PSS and RSS from /proc/PID/smaps_rollup; heap = glibc mallinfo2 in use\n"
      "(uordblks + hblkhd, every allocation); OpenSSL = bytes OpenSSL allocated and still holds\n"
      "(malloc_usable_size, CRYPTO_set_mem_functions), blocks = how many. The kernel's socket,\n"
      "TCP and epoll memory is not in PSS at all. PSS below heap: the new connections reuse heap\n"
      "pages the warm-up left free (less so the more connections).\n");
}

int usage() {
  std::fputs(
      "usage: mtlsd_idle_floor --pki DIR [--connections 2000,8000] [--tickets 0|1] "
      "[--warmup 64]\n",
      stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before OpenSSL allocates anything (it refuses afterwards).
  g_ossl_counted = CRYPTO_set_mem_functions(counted_malloc, counted_realloc, counted_free) == 1;
  if (argc == 7 && std::strcmp(argv[1], "--serve") == 0) {
    return serve(argv[2], std::strcmp(argv[3], "1") == 0, std::atoi(argv[4]), std::atoi(argv[5]),
                 std::atoi(argv[6]));
  }
  std::string pki;
  std::vector<int> counts = {2000, 8000};
  int tickets = 1;  // mtlsd's default (session_resumption: true)
  int warmup = 64;  // as mtlsd_loadgen's idle mode
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    const std::string v = argv[++i];
    if (a == "--pki") {
      pki = v;
    } else if (a == "--connections") {
      counts.clear();
      std::istringstream in(v);
      std::string item;
      while (std::getline(in, item, ','))
        counts.push_back(std::atoi(item.c_str()));
    } else if (a == "--tickets") {
      tickets = std::atoi(v.c_str());
    } else if (a == "--warmup") {
      warmup = std::atoi(v.c_str());
    } else {
      return usage();
    }
  }
  if (pki.empty()) return usage();
  if (!g_ossl_counted) std::fputs("idle_floor: cannot count OpenSSL's allocations\n", stderr);

  // Client and server each hold one socket per connection (plus a few): the hard limit.
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &rl);
  ::getrlimit(RLIMIT_NOFILE, &rl);

  SSL_CTX* cctx = client_ctx(pki);
  if (cctx == nullptr) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  const std::string self = "/proc/self/exe";
  std::vector<result> results;
  for (const int n : counts) {
    if (n <= 0) return usage();
    if (static_cast<rlim_t>(n) + 64 > rl.rlim_cur) {
      std::fprintf(stderr, "idle_floor: %d connections need more than RLIMIT_NOFILE (%llu)\n", n,
                   static_cast<unsigned long long>(rl.rlim_cur));
      continue;
    }
    for (const bool mtls : {true, false})
      results.push_back(measure(self, pki, cctx, mtls, tickets, n, warmup));
  }
  SSL_CTX_free(cctx);
  print_table(results, tickets, warmup);
  for (const result& r : results) {
    if (!r.ok) return 1;
  }
  return 0;
}
