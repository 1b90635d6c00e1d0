// metrics::registry: per-listener series live as long as some runtime holds them.
#include <gtest/gtest.h>

#include <prometheus/text_serializer.h>

#include <string>
#include <thread>
#include <vector>

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
}

// Review: the configuration files and each Workload API socket reload on their own, and an SVID
// rotation set the gauge back to 1 while a failed file reload still stood.
TEST(MetricsRegistry, LastReloadSuccessfulHoldsUntilEveryFailingSourceSucceeds) {
  mtlsd::metrics::registry r;
  const auto gauge = [&r] {
    for (const auto& family : r.collectable()->Collect())
      if (family.name == "mtlsd_config_last_reload_successful")
        return family.metric.at(0).gauge.value;
    return -1.0;
  };
  const auto reloads = [&r](const std::string& result) {
    for (const auto& family : r.collectable()->Collect())
      if (family.name == "mtlsd_config_reloads_total")
        for (const auto& m : family.metric)
          if (m.label.at(0).value == result) return m.counter.value;
    return -1.0;
  };
  EXPECT_EQ(gauge(), 1);
  r.reload_outcome("config", false);
  EXPECT_EQ(gauge(), 0);
  r.reload_outcome("spiffe:/run/agent.sock", true);  // a rotation: the file's failure stands
  EXPECT_EQ(gauge(), 0);
  r.reload_outcome("spiffe:/run/agent.sock", false);
  r.reload_outcome("config", true);  // the file is fixed: the socket's failure stands
  EXPECT_EQ(gauge(), 0);
  r.forget_reload_source("spiffe:/run/agent.sock");  // no listener uses it any more
  EXPECT_EQ(gauge(), 1);
  EXPECT_EQ(reloads("success"), 2);
  EXPECT_EQ(reloads("failure"), 2);
}

// The lock-free histogram exports exactly what prometheus-cpp's own Histogram would for the
// same observations: same buckets (a value on a bound counts in that bound's bucket), count, sum.
TEST(MetricsRegistry, FastHistogramMatchesPrometheusHistogram) {
  const std::vector<double> bounds = {0.001, 0.01, 0.1, 1};
  prometheus::Histogram reference(bounds), fed(bounds);
  mtlsd::metrics::fast_histogram fast(bounds, &fed);
  const std::vector<double> values = {0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 1, 1.5, 1e9};
  for (double v : values) {
    reference.Observe(v);
    fast.observe(v);
  }
  fast.drain();
  fast.drain();  // nothing new: adds nothing
  const auto want = reference.Collect().histogram;
  const auto got = fed.Collect().histogram;
  EXPECT_EQ(got.sample_count, want.sample_count);
  EXPECT_DOUBLE_EQ(got.sample_sum, want.sample_sum);
  ASSERT_EQ(got.bucket.size(), want.bucket.size());
  for (std::size_t i = 0; i < want.bucket.size(); ++i) {
    EXPECT_EQ(got.bucket[i].cumulative_count, want.bucket[i].cumulative_count) << i;
    EXPECT_EQ(got.bucket[i].upper_bound, want.bucket[i].upper_bound) << i;
  }
}

// Observations from several threads, drained by scrapes meanwhile: none lost or counted twice.
TEST(MetricsRegistry, HandshakeHistogramCountsEveryObservationAcrossThreadsAndScrapes) {
  registry r;
  auto m = r.for_listener("l");
  constexpr int per_thread = 20000;
  auto count_in_scrape = [&] {
    for (const auto& family : r.collectable()->Collect())
      if (family.name == "mtlsd_handshake_duration_seconds")
        for (const auto& metric : family.metric)
          return metric.histogram.sample_count;
    return std::uint64_t{0};
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t)
    workers.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i)
        m->handshake_duration->observe(0.002);
    });
  std::uint64_t last = 0;
  for (int i = 0; i < 20; ++i) {
    const auto now = count_in_scrape();
    EXPECT_GE(now, last);  // a counter never goes back
    last = now;
  }
  for (auto& w : workers)
    w.join();
  EXPECT_EQ(count_in_scrape(), 2u * per_thread);
  // The text a scrape serves: the series and its bucket bounds, as before.
  const auto text = prometheus::TextSerializer().Serialize(r.collectable()->Collect());
  EXPECT_NE(
      text.find("mtlsd_handshake_duration_seconds_bucket{listener=\"l\",le=\"0.0025\"} 40000"),
      std::string::npos);
  EXPECT_NE(text.find("mtlsd_handshake_duration_seconds_count{listener=\"l\"} 40000"),
            std::string::npos);
}

}  // namespace
