#pragma once
// A histogram the connection path observes without a lock. prometheus-cpp 1.1's Histogram takes
// its own mutex on every Observe (one per handshake, per connection, per HTTP request, from
// every worker); here an observation is two atomic additions, and what was observed is moved
// into the registered prometheus::Histogram (ObserveMultiple) when /metrics is scraped. The
// exported series (name, labels, buckets, `le` values) are prometheus-cpp's own, unchanged.
#include <prometheus/histogram.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace mtlsd::metrics {

class fast_histogram {
 public:
  // The buckets of the series it feeds (the same list, which must outlive it). `target` may be
  // set later (a series created at first use); drain() keeps the counts until it is.
  explicit fast_histogram(const std::vector<double>& bounds,
                          prometheus::Histogram* target = nullptr);
  fast_histogram(const fast_histogram&) = delete;
  fast_histogram& operator=(const fast_histogram&) = delete;

  // The bucket is chosen as prometheus::Histogram::Observe does (the first bound >= value).
  void observe(double value);

  prometheus::Histogram* target() const { return target_.load(std::memory_order_acquire); }
  void set_target(prometheus::Histogram* target) {
    target_.store(target, std::memory_order_release);
  }

  // Moves the observations made since the last drain into the target. Called at scrape time.
  // An observation racing with it may have its bucket in this scrape and its sum in the next:
  // _sum can lag _count by the observations in flight, never for longer than one scrape.
  void drain();

  static constexpr std::size_t max_buckets = 16;  // bounds + the +Inf bucket

 private:
  const std::vector<double>& bounds_;
  std::array<std::atomic<std::uint64_t>, max_buckets> counts_{};
  std::atomic<double> sum_{0};
  std::atomic<prometheus::Histogram*> target_;
  std::mutex drain_mu_;  // two scrapes at once add each observation once
};

}  // namespace mtlsd::metrics
