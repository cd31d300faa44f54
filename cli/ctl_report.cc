// dsv3ctl report (see ctl_report.h): aggregation per stage, projection, and rendering through
// accounting::RenderCostTable. No RPCs and no clocks.
#include "cli/ctl_report.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/ctl_format.h"
#include "cli/ctl_views.h"
#include "engine/accounting/cost.h"
#include "nlohmann/json.hpp"

namespace dsv3::cli {
namespace {

constexpr char kDefaultStage[] = "pre_training";

struct StageName {
  const char* label;
  const char* title;
};
constexpr StageName kReportStages[] = {
    {"pre_training", accounting::kPreTraining},
    {"context_extension", accounting::kContextExtension},
    {"post_training", accounting::kPostTraining},
};

std::string StageOf(const dsv3::v1::JobStatus& job) {
  if (!job.stage().empty()) return job.stage();
  if (!job.spec().stage().empty()) return job.spec().stage();
  return kDefaultStage;
}

int64_t DevicesOf(const dsv3::v1::JobStatus& job) {
  if (job.placement().world_size() > 0) return job.placement().world_size();
  if (job.placement().ranks_size() > 0) return job.placement().ranks_size();
  if (job.workers_size() > 0) return job.workers_size();
  if (job.spec().parallel().max_workers() > 0) return job.spec().parallel().max_workers();
  return std::max<int64_t>(job.spec().parallel().min_workers(), 0);
}

void Add(StageTotals& totals, const ReportJob& job) {
  ++totals.jobs;
  totals.tokens += job.tokens;
  totals.device_hours += job.device_hours;
  totals.cost_usd += job.cost_usd;
}

// `label` with "-hours": "GPU" -> "GPU-hours".
std::string Hours(const std::string& label) { return label + "-hours"; }

nlohmann::json TotalsJson(const StageTotals& s, double price) {
  nlohmann::json j = {{"stage", s.stage},
                      {"title", s.title},
                      {"jobs", s.jobs},
                      {"tokens", s.tokens},
                      {"device_hours", s.device_hours},
                      {"cost_usd", s.cost_usd},
                      {"usd_at_price", s.device_hours * price}};
  j["device_hours_per_trillion_tokens"] =
      s.tokens > 0
          ? nlohmann::json(accounting::DeviceHoursPerTrillionTokens(s.device_hours, s.tokens))
          : nlohmann::json(nullptr);
  return j;
}

}  // namespace

Report BuildReport(const std::vector<dsv3::v1::JobStatus>& jobs) {
  Report report;
  for (const StageName& s : kReportStages) report.stages.push_back({s.label, s.title});
  report.total = {"total", "Total"};

  std::optional<double> first_spec_price;
  std::string device_kind;
  bool kinds_differ = false;
  for (const dsv3::v1::JobStatus& status : jobs) {
    const dsv3::v1::Accounting& acc = status.accounting();
    ReportJob job{status.job_id(),    status.name(),
                  StageOf(status),    JobStateName(status.state()),
                  DevicesOf(status),  static_cast<double>(acc.tokens()),
                  acc.device_hours(), acc.cost_usd(),
                  acc.device_kind()};
    if (!first_spec_price && status.spec().accounting().has_price_per_device_hour()) {
      first_spec_price = status.spec().accounting().price_per_device_hour();
    }
    if (!job.device_kind.empty()) {
      if (device_kind.empty()) device_kind = job.device_kind;
      if (job.device_kind != device_kind) kinds_differ = true;
    }
    auto stage = std::find_if(report.stages.begin(), report.stages.end(),
                              [&](const StageTotals& s) { return s.stage == job.stage; });
    if (stage == report.stages.end()) {
      report.stages.push_back({job.stage, job.stage});
      stage = report.stages.end() - 1;
    }
    Add(*stage, job);
    Add(report.total, job);
    report.devices = std::max(report.devices, job.devices);
    report.jobs.push_back(std::move(job));
  }

  if (report.total.device_hours > 0 && report.total.cost_usd > 0) {
    report.price_per_device_hour = report.total.cost_usd / report.total.device_hours;
    for (const ReportJob& job : report.jobs) {
      if (job.device_hours <= 0) continue;
      const double price = job.cost_usd / job.device_hours;
      if (std::fabs(price - report.price_per_device_hour) > 1e-6 * report.price_per_device_hour) {
        report.mixed_prices = true;
      }
    }
  } else if (first_spec_price) {
    report.price_per_device_hour = *first_spec_price;
  }
  report.device_label = kinds_differ ? "device" : DeviceLabel(device_kind);
  return report;
}

std::optional<Projection> Project(const Report& report, double target_tokens) {
  if (!(report.total.tokens > 0)) return std::nullopt;
  Projection p;
  p.target_tokens = target_tokens;
  p.device_hours_per_trillion_tokens =
      accounting::DeviceHoursPerTrillionTokens(report.total.device_hours, report.total.tokens);
  p.device_hours = report.total.device_hours / report.total.tokens * target_tokens;
  p.devices = report.devices;
  if (p.devices > 0) p.days = p.device_hours / p.devices / 24.0;
  p.usd = accounting::CostUsd(p.device_hours, report.price_per_device_hour);
  return p;
}

std::optional<std::string> InsertAlignedRow(const std::string& table, size_t after_line,
                                            const std::string& label,
                                            const std::vector<std::string>& cells,
                                            const std::vector<std::string>& titles) {
  std::vector<std::string> lines = absl::StrSplit(table, '\n');
  if (lines.empty() || after_line >= lines.size() || cells.size() != titles.size()) {
    return std::nullopt;
  }
  // Each title is right-aligned, so where it ends is where its column ends.
  std::vector<size_t> ends;
  size_t from = 0;
  for (const std::string& title : titles) {
    const size_t at = lines[0].find(title, from);
    if (at == std::string::npos) return std::nullopt;
    ends.push_back(at + title.size());
    from = ends.back();
  }
  std::string row = label;
  for (size_t i = 0; i < cells.size(); ++i) {
    const size_t earliest = (i == 0 ? label.size() : ends[i - 1]) + 2;
    if (cells[i].size() > ends[i] || ends[i] - cells[i].size() < earliest) return std::nullopt;
    row += std::string(ends[i] - cells[i].size() - row.size(), ' ') + cells[i];
  }
  lines.insert(lines.begin() + after_line + 1, row);
  return absl::StrJoin(lines, "\n");
}

std::string RenderReport(const Report& report, std::optional<double> target_tokens) {
  const std::string& label = report.device_label;
  std::string out = absl::StrCat(
      "Cost report: ", report.jobs.size(), report.jobs.size() == 1 ? " job" : " jobs", ", ",
      FormatPrice(report.price_per_device_hour), "/", label, "-hour",
      report.mixed_prices ? " (average: the jobs were charged different prices)" : "", "\n\n");

  TextTable jobs{{"JOB", "NAME", "STAGE", "STATE", "DEVICES", "TOKENS", "DEVICE-HOURS", "USD"},
                 {},
                 {4, 5, 6, 7}};
  for (const ReportJob& job : report.jobs) {
    jobs.rows.push_back({job.job_id, job.name, job.stage, job.state,
                         job.devices > 0 ? absl::StrCat(job.devices) : "-", FormatCount(job.tokens),
                         accounting::FormatDeviceHours(job.device_hours),
                         accounting::FormatUsd(job.cost_usd)});
  }
  absl::StrAppend(&out, RenderTable(jobs), "\n");

  // The table in the shape of the report's Table 1 (no "days" rows: those belong to the
  // projection).
  std::vector<accounting::StageUsage> usage;
  std::vector<std::string> titles;
  std::vector<std::string> token_cells;
  for (const StageTotals& s : report.stages) {
    usage.push_back({s.title, s.device_hours, s.tokens});
    titles.push_back(s.title);
    token_cells.push_back(s.jobs > 0 ? FormatCount(s.tokens) : "-");
  }
  titles.push_back(report.total.title);
  token_cells.push_back(FormatCount(report.total.tokens));
  accounting::CostTableOptions options;
  options.device_label = label;
  options.price_per_device_hour = report.price_per_device_hour;
  options.devices = 0;
  const std::string table = accounting::RenderCostTable(usage, options);
  if (std::optional<std::string> with_tokens =
          InsertAlignedRow(table, /*after_line=*/2, "Tokens", token_cells, titles)) {
    out += *with_tokens;
  } else {
    std::vector<std::string> parts;
    for (size_t i = 0; i < titles.size(); ++i) parts.push_back(titles[i] + " " + token_cells[i]);
    absl::StrAppend(&out, table, "Tokens: ", absl::StrJoin(parts, ", "), "\n");
  }

  if (!target_tokens) return out;
  const std::optional<Projection> p = Project(report, *target_tokens);
  if (!p) {
    absl::StrAppend(&out, "\nNo projection to ", FormatCount(*target_tokens),
                    " tokens: no committed tokens yet, so there is no measured rate.\n");
    return out;
  }
  absl::StrAppend(&out, "\nProjection to ", FormatCount(p->target_tokens),
                  " tokens at the measured ",
                  accounting::FormatDeviceHours(p->device_hours_per_trillion_tokens), " ",
                  Hours(label), " per trillion tokens:\n");
  TextTable projection{{}, {}, {1}};
  projection.header = {"", ""};
  projection.rows.push_back({Hours(label), accounting::FormatDeviceHours(p->device_hours)});
  if (p->days) {
    projection.rows.push_back(
        {absl::StrCat("Days on ", p->devices, " ", label, "s"), absl::StrFormat("%.1f", *p->days)});
  }
  projection.rows.push_back(
      {absl::StrCat("USD at ", FormatPrice(report.price_per_device_hour), "/", label, "-hour"),
       accounting::FormatUsd(p->usd)});
  const std::string rendered = RenderTable(projection);
  for (absl::string_view line : absl::StrSplit(rendered, '\n', absl::SkipWhitespace())) {
    absl::StrAppend(&out, "  ", line, "\n");
  }
  return out;
}

std::string ReportToJson(const Report& report, std::optional<double> target_tokens) {
  nlohmann::json j;
  j["jobs"] = nlohmann::json::array();
  for (const ReportJob& job : report.jobs) {
    j["jobs"].push_back({{"job_id", job.job_id},
                         {"name", job.name},
                         {"stage", job.stage},
                         {"state", job.state},
                         {"devices", job.devices},
                         {"tokens", job.tokens},
                         {"device_hours", job.device_hours},
                         {"cost_usd", job.cost_usd},
                         {"device_kind", job.device_kind}});
  }
  j["stages"] = nlohmann::json::array();
  for (const StageTotals& s : report.stages) {
    j["stages"].push_back(TotalsJson(s, report.price_per_device_hour));
  }
  j["total"] = TotalsJson(report.total, report.price_per_device_hour);
  j["price_per_device_hour"] = report.price_per_device_hour;
  j["mixed_prices"] = report.mixed_prices;
  j["devices"] = report.devices;
  j["device_label"] = report.device_label;
  j["projection"] = nullptr;
  if (target_tokens) {
    if (const std::optional<Projection> p = Project(report, *target_tokens)) {
      j["projection"] = {{"target_tokens", p->target_tokens},
                         {"device_hours_per_trillion_tokens", p->device_hours_per_trillion_tokens},
                         {"device_hours", p->device_hours},
                         {"devices", p->devices},
                         {"days", p->days ? nlohmann::json(*p->days) : nlohmann::json(nullptr)},
                         {"usd", p->usd}};
    }
  }
  return j.dump(2) + "\n";
}

}  // namespace dsv3::cli
