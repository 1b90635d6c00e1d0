#include "mtlsd/metrics/fast_histogram.hpp"

#include <algorithm>
#include <stdexcept>

namespace mtlsd::metrics {

fast_histogram::fast_histogram(const std::vector<double>& bounds, prometheus::Histogram* target)
    : bounds_(bounds), target_(target) {
  if (bounds.size() + 1 > max_buckets) throw std::logic_error("fast_histogram: too many buckets");
}

void fast_histogram::observe(double value) {
  const auto bucket = static_cast<std::size_t>(
      std::distance(bounds_.begin(), std::lower_bound(bounds_.begin(), bounds_.end(), value)));
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

void fast_histogram::drain() {
  auto* target = target_.load(std::memory_order_acquire);
  if (!target) return;  // nothing observed yet: the target is set before the first observe
  std::lock_guard lock(drain_mu_);
  std::vector<double> increments(bounds_.size() + 1);
  bool any = false;
  for (std::size_t i = 0; i < increments.size(); ++i) {
    const auto n = counts_[i].exchange(0, std::memory_order_relaxed);
    increments[i] = static_cast<double>(n);
    any = any || n != 0;
  }
  const double sum = sum_.exchange(0, std::memory_order_relaxed);
  if (any || sum != 0) target->ObserveMultiple(increments, sum);
}

}  // namespace mtlsd::metrics
