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
