// metrics::registry: per-listener series live as long as some runtime holds them.
#include <gtest/gtest.h>

#include <string>

#include "mtlsd/metrics/metrics.hpp"

namespace {

using mtlsd::metrics::registry;

// Samples of every family whose `listener` label is `name`.
int series_of(const registry& r, const std::string& name) {
  int n = 0;
  for (const auto& family : r.collectable()->Collect())
    for (const auto& metric : family.metric)
      for (const auto& label : metric.label)
        if (label.name == "listener" && label.value == name) ++n;
  return n;
}

TEST(MetricsRegistry, ListenerSeriesGoWithTheLastHolder) {
  registry r;
  auto first = r.for_listener("old");
  auto second = r.for_listener("old");  // a reload that keeps the listener
  EXPECT_EQ(first.get(), second.get());
  first->accepted->Increment();
  EXPECT_GT(series_of(r, "old"), 10);
  first.reset();
  EXPECT_GT(series_of(r, "old"), 10);  // still held by the newer runtime
  second.reset();
  EXPECT_EQ(series_of(r, "old"), 0);

  // Back again: fresh series from 0.
  auto again = r.for_listener("old");
  EXPECT_GT(series_of(r, "old"), 10);
  EXPECT_EQ(again->accepted->Value(), 0);
}

// The value of mtlsd_revocation_checks_total{listener=name, method, result}, -1 when absent.
double revocation_checks(const registry& r, const std::string& name, const std::string& method,
                         const std::string& result) {
  for (const auto& family : r.collectable()->Collect()) {
    if (family.name != "mtlsd_revocation_checks_total") continue;
    for (const auto& metric : family.metric) {
      int matched = 0;
      for (const auto& label : metric.label)
        matched += (label.name == "listener" && label.value == name) ||
                   (label.name == "method" && label.value == method) ||
                   (label.name == "result" && label.value == result);
      if (matched == 3) return metric.counter.value;
    }
  }
  return -1;
}

TEST(MetricsRegistry, RevocationChecksAreCountedByMethodAndResult) {
  registry r;
  auto m = r.for_listener("l");
  m->revocation_check(mtlsd::revocation_method::ocsp, mtlsd::revocation_status::unknown);
  m->revocation_check(mtlsd::revocation_method::crl, mtlsd::revocation_status::revoked);
  m->revocation_check(mtlsd::revocation_method::crl, mtlsd::revocation_status::not_checked);
  EXPECT_EQ(revocation_checks(r, "l", "ocsp", "unknown"), 1);
  EXPECT_EQ(revocation_checks(r, "l", "crl", "revoked"), 1);
  EXPECT_EQ(revocation_checks(r, "l", "crl", "good"), 0);  // present from the start, at 0
  EXPECT_EQ(revocation_checks(r, "l", "crl", "not_checked"), -1);
}

TEST(MetricsRegistry, ProcessMetricsAndReloadGaugeAreExposed) {
  registry r;
  bool start = false, fds = false, reload_ok = false;
  for (const auto& family : r.collectable()->Collect()) {
    if (family.name == "process_start_time_seconds") start = family.metric.at(0).gauge.value > 0;
    if (family.name == "process_open_fds") fds = family.metric.at(0).gauge.value >= 3;
    if (family.name == "mtlsd_config_last_reload_successful")
      reload_ok = family.metric.at(0).gauge.value == 1;
  }
  EXPECT_TRUE(start);
  EXPECT_TRUE(fds);
  EXPECT_TRUE(reload_ok);
  r.last_reload_successful().Set(0);
  for (const auto& family : r.collectable()->Collect()) {
    if (family.name == "mtlsd_config_last_reload_successful") {
      EXPECT_EQ(family.metric.at(0).gauge.value, 0);
    }
  }
}

}  // namespace
