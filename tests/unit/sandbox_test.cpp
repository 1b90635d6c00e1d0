// The sandbox's file-system view and its reload check (pure functions; entering the sandbox
// itself is covered by tests/integration/test_sandbox.py on the real binary).
#include "mtlsd/daemon/sandbox.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_pki.hpp"

namespace mtlsd::daemon::sandbox {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::HasSubstr;

config::configuration config_in(const fs::path& conf_dir, const fs::path& cert_dir) {
  config::configuration c;
  c.file = (conf_dir / "mtlsd.yaml").string();
  config::listener l;
  l.name = "inbound";
  l.tls.cert.path = (cert_dir / "tls.crt").string();
  l.tls.key.path = "tls.key";  // relative: to the configuration file's directory
  c.listeners.push_back(l);
  return c;
}

state started_with(const config::configuration& c) {
  state s;
  s.active = true;
  for (const auto& r : paths_for(c).read)
    s.read_roots.push_back(fs::weakly_canonical(r));
  for (const auto& r : paths_for(c).sockets)
    s.socket_roots.push_back(fs::weakly_canonical(r));
  return s;
}

TEST(SandboxPaths, NameTheDirectoriesAsWrittenAndWhereSymlinksLead) {
  test::pki_dir d;
  fs::create_directories(d.path() / "conf");
  fs::create_directories(d.path() / "real");
  fs::create_directories(d.path() / "certs");
  d.write("real/tls.crt", "not checked here");
  fs::create_symlink(d.path() / "real" / "tls.crt", d.path() / "certs" / "tls.crt");
  const paths p = paths_for(config_in(d.path() / "conf", d.path() / "certs"));
  const auto base = fs::weakly_canonical(d.path());
  EXPECT_THAT(p.read, Contains((d.path() / "conf").string()));
  EXPECT_THAT(p.read, Contains((d.path() / "certs").string()));
  EXPECT_THAT(p.read, Contains((base / "real").string()));
  EXPECT_TRUE(p.write.empty());
  EXPECT_TRUE(p.sockets.empty());
}

TEST(SandboxReload, SameDirectoriesAndKubernetesSwapsAreFine) {
  test::pki_dir d;
  const auto c = config_in(d.path() / "conf", d.path() / "certs");
  const auto s = started_with(c);
  EXPECT_EQ(check_reload(s, c), "");
  // A `..data`-style subdirectory created after start-up is beneath a named directory.
  auto next = c;
  fs::create_directories(d.path() / "certs" / "..2026_01_01");
  next.listeners[0].client_auth.ca.push_back(
      {(d.path() / "certs" / "..2026_01_01" / "ca.crt").string(), {}});
  EXPECT_EQ(check_reload(s, next), "");
}

TEST(SandboxReload, AFileOutsideNeedsARestart) {
  test::pki_dir d;
  const auto c = config_in(d.path() / "conf", d.path() / "certs");
  auto next = c;
  next.listeners[0].client_auth.ca.push_back({(d.path() / "elsewhere" / "ca.crt").string(), {}});
  const std::string why = check_reload(started_with(c), next);
  EXPECT_THAT(why, HasSubstr((d.path() / "elsewhere" / "ca.crt").string()));
  EXPECT_THAT(why, HasSubstr("needs a restart"));
  // Without the sandbox nothing is refused.
  EXPECT_EQ(check_reload(state{}, next), "");
}

TEST(SandboxReload, ASymlinkLeadingOutsideNeedsARestart) {
  test::pki_dir d;
  const auto c = config_in(d.path() / "conf", d.path() / "certs");
  const auto s = started_with(c);
  fs::create_directories(d.path() / "certs");
  fs::create_directories(d.path() / "elsewhere");
  d.write("elsewhere/ca.crt", "not checked here");
  fs::create_symlink(d.path() / "elsewhere" / "ca.crt", d.path() / "certs" / "ca.crt");
  auto next = c;
  next.listeners[0].client_auth.ca.push_back({(d.path() / "certs" / "ca.crt").string(), {}});
  EXPECT_THAT(check_reload(s, next), HasSubstr("needs a restart"));
}

TEST(SandboxReload, AUnixListenerInANewDirectoryNeedsARestart) {
  test::pki_dir d;
  auto c = config_in(d.path() / "conf", d.path() / "certs");
  c.listeners[0].listen.type = config::address::kind::unix_socket;
  c.listeners[0].listen.path = (d.path() / "run" / "in.sock").string();
  const auto s = started_with(c);
  EXPECT_EQ(check_reload(s, c), "");
  auto next = c;
  next.listeners[0].listen.path = (d.path() / "other" / "in.sock").string();
  EXPECT_THAT(check_reload(s, next), HasSubstr("needs a restart"));
}

}  // namespace
}  // namespace mtlsd::daemon::sandbox
