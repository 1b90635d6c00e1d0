// The hourly expiry warnings (daemon::expiry_monitor) and the windows they share with `check`.
#include "mtlsd/daemon/expiry_monitor.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "mtlsd/config/config.hpp"
#include "mtlsd/config/load.hpp"
#include "mtlsd/runtime/runtime.hpp"
#include "test_pki.hpp"

namespace mtlsd {
namespace {

constexpr std::time_t expiry_day = 24 * 3600;

// A server-mode listener serving `leaf` (issued by `root`, which it trusts for clients too).
std::shared_ptr<const runtime::runtime> serving(test::pki_dir& dir, const test::credential& root,
                                                const test::credential& leaf) {
  dir.write("root.crt", test::to_pem(root.cert()), 0644);
  dir.write_pair("server", leaf);
  const std::string conf = dir.write("mtlsd.yaml",
                                     "listeners:\n"
                                     "  - name: inbound\n"
                                     "    listen: 127.0.0.1:0\n"
                                     "    upstream: 127.0.0.1:8080\n"
                                     "    client_auth:\n"
                                     "      ca: [root.crt]\n"
                                     "    tls:\n"
                                     "      cert: server.crt\n"
                                     "      key: server.key\n",
                                     0644);
  config::load_result r = config::load_file(conf);
  if (!r.config) throw std::runtime_error("test configuration does not load");
  return runtime::build(*r.config);
}

TEST(ExpiryMonitor, WarnsOnceADayAndForgetsWhatIsNoLongerServed) {
  const auto root = test::make_root_ca({.cn = "Expiry Root"});
  const auto soon = test::make_leaf(
      root,
      {.cn = "soon", .usage = test::key_usage::server, .not_after = test::now() + 10 * expiry_day});
  const auto later = test::make_leaf(root, {.cn = "later", .usage = test::key_usage::server});
  test::pki_dir dir;
  std::shared_ptr<const runtime::runtime> current = serving(dir, root, soon);
  boost::asio::io_context ioc;
  daemon::expiry_monitor monitor(ioc, [&] { return current; });
  const std::time_t now = test::now();
  EXPECT_EQ(monitor.check(now), 1);                   // the served certificate, 10 days left
  EXPECT_EQ(monitor.check(now + 3600), 0);            // once a day
  EXPECT_EQ(monitor.check(now + expiry_day + 1), 1);  // and the next day again
  // Renewed: nothing to say, and the old certificate is forgotten (review: with SVIDs rotating
  // hourly, one entry per rotation for the life of the process). Served again, it is warned of
  // at once, not a day after the last time.
  auto renewed = serving(dir, root, later);
  current = renewed;
  EXPECT_EQ(monitor.check(now + expiry_day + 2), 0);
  current = serving(dir, root, soon);
  EXPECT_EQ(monitor.check(now + expiry_day + 3), 1);
}

// What the SPIFFE Workload API rotates warns only once expired (review: the hourly monitor
// warned of every SVID, which `check` and reloads had stopped doing).
TEST(ExpiryMonitor, WindowsOfWhatRotatesByItself) {
  config::listener files;
  const auto by_files = runtime::expiry_warning_windows(files);
  EXPECT_EQ(by_files.own, 30 * expiry_day);
  EXPECT_EQ(by_files.trust, 30 * expiry_day);
  config::listener spiffe;
  spiffe.tls.spiffe.enabled = true;
  const auto by_agent = runtime::expiry_warning_windows(spiffe);
  EXPECT_EQ(by_agent.own, 0);
  EXPECT_EQ(by_agent.trust, 0);
  spiffe.client_auth.ca.push_back({});  // CA files beside it are renewed by hand
  EXPECT_EQ(runtime::expiry_warning_windows(spiffe).trust, 30 * expiry_day);
}

}  // namespace
}  // namespace mtlsd
