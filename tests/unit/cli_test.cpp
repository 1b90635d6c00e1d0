// cli::parse_time, the `--at` argument of `mtlsd verify`: RFC 3339 or @EPOCH; the key-permission
// warning of `mtlsd check` and reloads; config::print of `mtlsd check --print`.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "mtlsd/cli/cli.hpp"
#include "mtlsd/runtime/key_permissions.hpp"

namespace mtlsd::cli {
namespace {

// 2026-01-02T03:04:05Z, computed independently (Python calendar.timegm).
constexpr long long k20260102 = 1'767'323'045;

TEST(ParseTime, UtcWithZ) {
  EXPECT_EQ(parse_time("2026-01-02T03:04:05Z"), k20260102);
  EXPECT_EQ(parse_time("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_time("2000-02-29T12:00:00Z"), 951'825'600);  // leap day
  EXPECT_EQ(parse_time("1969-12-31T23:59:59Z"), -1);
}

TEST(ParseTime, LowerCaseAndSpaceSeparatorsAsRfc3339Allows) {
  EXPECT_EQ(parse_time("2026-01-02t03:04:05z"), k20260102);
  EXPECT_EQ(parse_time("2026-01-02 03:04:05Z"), k20260102);
}

TEST(ParseTime, Offsets) {
  EXPECT_EQ(parse_time("2026-01-02T05:04:05+02:00"), k20260102);
  EXPECT_EQ(parse_time("2026-01-01T22:04:05-05:00"), k20260102);
  EXPECT_EQ(parse_time("2026-01-02T08:34:05+05:30"), k20260102);
  EXPECT_EQ(parse_time("2026-01-02T03:04:05+00:00"), k20260102);
  EXPECT_EQ(parse_time("2026-01-02T03:04:05-00:00"), k20260102);
}

TEST(ParseTime, FractionalSecondsAreIgnored) {
  EXPECT_EQ(parse_time("2026-01-02T03:04:05.999Z"), k20260102);
  EXPECT_EQ(parse_time("2026-01-02T03:04:05.123456789+02:00"), k20260102 - 7200);
  EXPECT_EQ(parse_time("2026-01-02T03:04:05.5Z"), k20260102);
}

TEST(ParseTime, Epoch) {
  EXPECT_EQ(parse_time("@0"), 0);
  EXPECT_EQ(parse_time("@1767323045"), k20260102);
  EXPECT_EQ(parse_time("@4102444800"), 4'102'444'800LL);  // 2100, past 2038
}

TEST(ParseTime, RejectsGarbage) {
  for (const char* bad : {"",
                          "@",
                          "@abc",
                          "@12x",
                          "@-5",
                          "@1.5",
                          "yesterday",
                          "1767323045",
                          "2026-01-02",
                          "2026-01-02T03:04Z",
                          "2026-01-02T03:04:05",       // no zone
                          "2026-01-02T03:04:05+0200",  // offset without colon
                          "2026-01-02T03:04:05+02",
                          "2026-01-02T03:04:05 Z",
                          "2026-01-02T03:04:05Zjunk",
                          "2026-01-02T03:04:05.Zjunk",
                          "2026-01-02X03:04:05Z",
                          "2026-13-02T03:04:05Z",
                          "2026-00-02T03:04:05Z",
                          "2026-01-00T03:04:05Z",
                          "2026-01-32T03:04:05Z",
                          "2026-01-02T24:00:00Z",
                          "2026-01-02T03:60:05Z",
                          "2026-01-02T03:04:61Z"}) {
    EXPECT_EQ(parse_time(bad), std::nullopt) << "'" << bad << "'";
  }
}

// BUG (src/cli/verify.cpp, parse_time): sscanf("%4d-%2d-%2d...") and timegm() accept text that
// is not RFC 3339 and silently move the time: a non-existent date is normalised (2026-02-31 ->
// 2026-03-03), one-digit fields and leading blanks are accepted, the offset is not range-checked
// ("+99:99", "+-1:00") and a '.' without digits passes. `mtlsd verify --at` then judges the
// certificate at a time the operator did not ask for, without a word.
TEST(ParseTime, RejectsMalformedRfc3339) {
  for (const char* bad :
       {"2026-02-31T00:00:00Z", "2026-04-31T00:00:00Z", "2026-1-2T3:4:5Z", " 2026-01-02T03:04:05Z",
        "2026-01-02T03:04:05+99:99", "2026-01-02T03:04:05+-1:00", "2026-01-02T03:04:05.Z"}) {
    EXPECT_EQ(parse_time(bad), std::nullopt) << "'" << bad << "'";
  }
}

// BUG (src/cli/verify.cpp, parse_time): "@" followed by more digits than fit in a long long is
// passed to std::stoll, which throws std::out_of_range instead of returning nullopt. `mtlsd
// verify --at @99999999999999999999` therefore terminates with an uncaught exception instead of
// printing the usage error.
TEST(ParseTime, HugeEpochIsRejectedNotThrown) {
  std::optional<long long> r;
  EXPECT_NO_THROW(r = parse_time("@99999999999999999999"));
  EXPECT_EQ(r, std::nullopt);
}

}  // namespace
}  // namespace mtlsd::cli

// The key-permission warning of `mtlsd check` and of start-up/reload.

namespace mtlsd::runtime {
namespace {

TEST(KeyExposure, OwnerOnlyIsFine) {
  EXPECT_EQ(key_exposure(0600, 1000, {1000}), std::nullopt);
  EXPECT_EQ(key_exposure(0400, 1234, {1000}), std::nullopt);
}

TEST(KeyExposure, ReadableByOwnGroupIsFine) {
  // Kubernetes fsGroup / the systemd key group: 0640 with a group the process is in.
  EXPECT_EQ(key_exposure(0640, 2000, {1000, 2000}), std::nullopt);
  EXPECT_EQ(key_exposure(0440, 1000, {1000}), std::nullopt);
}

TEST(KeyExposure, ReadableByAnotherGroupIsReported) {
  auto why = key_exposure(0640, 3000, {1000, 2000});
  ASSERT_TRUE(why);
  EXPECT_EQ(*why, "is accessible by group 3000, which mtlsd is not in");
}

TEST(KeyExposure, WorldAccessIsReportedWhateverTheGroup) {
  for (mode_t m : {0644, 0604, 0601, 0666})
    EXPECT_EQ(key_exposure(m, 1000, {1000}), "is accessible by others") << std::oct << m;
}

TEST(KeyPermissionWarning, OncePerFileAndModeNotAtEveryReload) {
  auto dir =
      std::filesystem::temp_directory_path() / ("mtlsd-keyperm-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = (dir / "loose.key").string();
  std::ofstream(path) << "not really a key\n";
  config::file_ref key{path, {"/etc/mtlsd/mtlsd.yaml", 7, 12}};

  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(key_permission_warning_once(key), std::nullopt);

  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto first = key_permission_warning_once(key);
  ASSERT_TRUE(first);
  EXPECT_TRUE(first->warning);
  EXPECT_EQ(first->str(), "/etc/mtlsd/mtlsd.yaml:7:12: warning: " + path +
                              ": private key file is accessible by others (mode 0644); chmod 600 "
                              "it, or 640 with a group mtlsd runs in");
  EXPECT_EQ(key_permission_warning_once(key), std::nullopt) << "repeated for the same file";

  // A different loosening of the same file is news.
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  EXPECT_TRUE(key_permission_warning_once(key));
  EXPECT_EQ(key_permission_warning_once(key), std::nullopt);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mtlsd::runtime
