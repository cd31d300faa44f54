// MetricsExporter; see metrics.h.
#include "coordinator/metrics.h"

#include <exception>
#include <map>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"

namespace dsv3::coordinator {
namespace {

prometheus::ClientMetric Gauge(double value,
                               std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

class CoordinatorCollector : public prometheus::Collectable {
 public:
  explicit CoordinatorCollector(Coordinator* coordinator) : coordinator_(coordinator) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out;
    const std::vector<v1::JobStatus> jobs = coordinator_->ListJobs();
    std::map<std::string, double> by_state;
    for (int s = v1::PENDING; s <= v1::CANCELLED; ++s) {
      by_state[v1::JobState_Name(static_cast<v1::JobState>(s))] = 0;
    }
    prometheus::MetricFamily step{"dsv3_job_step", "Last step of each job", prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily hours{"dsv3_job_device_hours", "Device-hours charged to each job",
                                   prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily cost{"dsv3_job_cost_usd", "Cost of each job in USD",
                                  prometheus::MetricType::Gauge, {}};
    for (const auto& job : jobs) {
      by_state[v1::JobState_Name(job.state())] += 1;
      std::vector<prometheus::ClientMetric::Label> labels = {{"job_id", job.job_id()},
                                                             {"name", job.name()}};
      step.metric.push_back(Gauge(static_cast<double>(job.step()), labels));
      hours.metric.push_back(Gauge(job.accounting().device_hours(), labels));
      cost.metric.push_back(Gauge(job.accounting().cost_usd(), labels));
    }
    prometheus::MetricFamily job_states{"dsv3_jobs", "Jobs by state", prometheus::MetricType::Gauge, {}};
    for (const auto& [state, n] : by_state) job_states.metric.push_back(Gauge(n, {{"state", state}}));
    std::map<std::string, double> workers;
    for (const auto& w : coordinator_->ListWorkers()) workers[w.state()] += 1;
    prometheus::MetricFamily worker_states{"dsv3_workers", "Workers by state",
                                           prometheus::MetricType::Gauge, {}};
    for (const auto& [state, n] : workers) worker_states.metric.push_back(Gauge(n, {{"state", state}}));
    out.push_back(std::move(job_states));
    out.push_back(std::move(worker_states));
    out.push_back(std::move(step));
    out.push_back(std::move(hours));
    out.push_back(std::move(cost));
    return out;
  }

 private:
  Coordinator* coordinator_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsExporter>> MetricsExporter::Start(
    Coordinator* coordinator, const std::string& address) {
  std::unique_ptr<MetricsExporter> m(new MetricsExporter());
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  m->collector_ = std::make_shared<CoordinatorCollector>(coordinator);
  m->exposer_->RegisterCollectable(m->collector_);
  const std::vector<int> ports = m->exposer_->GetListeningPorts();
  m->port_ = ports.empty() ? 0 : ports.front();
  return m;
}

MetricsExporter::~MetricsExporter() = default;

}  // namespace dsv3::coordinator
