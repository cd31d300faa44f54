// Prometheus /metrics for the coordinator: jobs by state, workers by state, and per-job progress and
// accounting gauges, computed from the Coordinator at each scrape (nothing is cached here).
#ifndef DSV3_COORDINATOR_METRICS_H_
#define DSV3_COORDINATOR_METRICS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/coordinator.h"

namespace prometheus {
class Exposer;
class Collectable;
}  // namespace prometheus

namespace dsv3::coordinator {

class MetricsExporter {
 public:
  // Serves http://<address>/metrics. UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(Coordinator* coordinator,
                                                                const std::string& address);
  ~MetricsExporter();
  int port() const { return port_; }

 private:
  MetricsExporter() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Collectable> collector_;
  int port_ = 0;
};

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_METRICS_H_
