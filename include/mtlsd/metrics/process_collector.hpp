#pragma once
// The Prometheus client conventions' process_* metrics (start time, CPU, memory, descriptors,
// threads), read from /proc/self at each scrape, as client_golang's process collector does.
// Works inside the sandbox: /proc/self is readable there and getrlimit/getdents64 are allowed.
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <functional>
#include <memory>
#include <vector>

namespace mtlsd::metrics {

class process_collector : public prometheus::Collectable {
 public:
  // Reads the start time once, now (from /proc/stat's btime, which the sandbox does not expose
  // later; the start time never changes).
  process_collector();
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  double start_time_;  // Unix seconds
};

// A scrape source made of several collectables (the metric registry and process_collector),
// serialised one after the other. `before` runs first at each scrape (the registry moves its
// lock-free histograms' observations into their series).
class collectables : public prometheus::Collectable {
 public:
  explicit collectables(std::vector<std::shared_ptr<prometheus::Collectable>> parts,
                        std::function<void()> before = {})
      : parts_(std::move(parts)), before_(std::move(before)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::vector<std::shared_ptr<prometheus::Collectable>> parts_;
  std::function<void()> before_;
};

}  // namespace mtlsd::metrics
