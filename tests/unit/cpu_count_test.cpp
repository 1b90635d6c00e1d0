// workers: 0 counts the CPUs this process may use: the affinity mask, capped by the cgroup v2
// CPU limit (cpu.max, rounded up) of its cgroup and of those above it.
#include "mtlsd/daemon/cpu_count.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace mtlsd::daemon {
namespace {

namespace fs = std::filesystem;

TEST(CpuMax, NoLimit) {
  EXPECT_EQ(parse_cpu_max("max 100000"), std::nullopt);
  EXPECT_EQ(parse_cpu_max("max 100000\n"), std::nullopt);
}

TEST(CpuMax, QuotaOverPeriodRoundedUp) {
  EXPECT_EQ(parse_cpu_max("150000 100000\n"), 2u);
  EXPECT_EQ(parse_cpu_max("200000 100000"), 2u);
  EXPECT_EQ(parse_cpu_max("400000 100000"), 4u);
  EXPECT_EQ(parse_cpu_max("100001 100000"), 2u);
}

TEST(CpuMax, AtLeastOne) {
  EXPECT_EQ(parse_cpu_max("50000 100000"), 1u);
  EXPECT_EQ(parse_cpu_max("1000 100000"), 1u);
  EXPECT_EQ(parse_cpu_max("0 100000"), 1u);
}

TEST(CpuMax, NotTwoNumbersIsNoLimit) {
  for (const char* text : {"", "\n", "150000", "150000 0", "-1 100000", "1.5 1", "a b",
                           "150000 100000 1", "150000  x"})
    EXPECT_EQ(parse_cpu_max(text), std::nullopt) << '"' << text << '"';
}

TEST(CgroupPath, TheUnifiedHierarchysLine) {
  EXPECT_EQ(cgroup_v2_path("0::/system.slice/mtlsd.service\n"), "/system.slice/mtlsd.service");
  EXPECT_EQ(cgroup_v2_path("0::/\n"), "/");
  // A hybrid host: v1 controllers' lines first.
  EXPECT_EQ(cgroup_v2_path("12:cpu,cpuacct:/x\n1:name=systemd:/y\n0::/z"), "/z");
  EXPECT_EQ(cgroup_v2_path("4:cpu,cpuacct:/x\n1:name=systemd:/y\n"), "");
  EXPECT_EQ(cgroup_v2_path(""), "");
}

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("mtlsd-cpu-count-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "kubepods" / "pod1" / "ctr");
  }
  void TearDown() override { fs::remove_all(root_); }
  void write(const fs::path& dir, const std::string& text) {
    std::ofstream(root_ / dir / "cpu.max") << text;
  }
  fs::path root_;
};

TEST_F(CgroupTree, TheProcessCgroupsOwnLimit) {
  write("kubepods/pod1/ctr", "150000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods/pod1/ctr"), 2u);
}

TEST_F(CgroupTree, TheTightestOnTheWayUp) {
  write("kubepods/pod1/ctr", "max 100000\n");
  write("kubepods/pod1", "50000 100000\n");
  write("kubepods", "800000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods/pod1/ctr"), 1u);
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods"), 8u);
}

TEST_F(CgroupTree, NoFileOrMaxIsNoLimit) {
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods/pod1/ctr"), std::nullopt);
  write("kubepods/pod1", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods/pod1/ctr"), std::nullopt);
  EXPECT_EQ(cgroup_cpu_limit(root_, "/not/there"), std::nullopt);
}

TEST_F(CgroupTree, TheRootItselfAsInAContainersNamespace) {
  write(".", "300000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root_, "/"), 3u);
  EXPECT_EQ(cgroup_cpu_limit(root_, "/kubepods/pod1/ctr"), 3u);
}

TEST_F(CgroupTree, APathLeavingTheRootIsNotFollowed) {
  write(".", "300000 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root_ / "kubepods", "/../../.."), std::nullopt);
}

TEST(CountCpus, TheAffinityMaskBoundsIt) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(::sched_getaffinity(0, sizeof set, &set), 0);
  const auto c = count_cpus();
  EXPECT_EQ(c.allowed, static_cast<unsigned>(CPU_COUNT(&set)));
  EXPECT_GE(c.usable, 1u);
  EXPECT_LE(c.usable, c.allowed);
  if (c.quota) {
    EXPECT_LE(c.usable, *c.quota);
  }
}

}  // namespace
}  // namespace mtlsd::daemon
