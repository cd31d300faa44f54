// dsv3ctl report: folds several jobs' accounting into the columns of the DeepSeek-V3 report's
// Table 1 (one per stage: pre-training, context extension, post-training, then the total), projects
// the measured rate to a target token count, and renders both as text or JSON. The table itself is
// drawn by engine/accounting/cost.h (RenderCostTable), the same renderer the coordinator's estimate
// uses. Pure functions of the JobStatus messages; fetching them is the caller's job.
#ifndef DSV3_CLI_CTL_REPORT_H_
#define DSV3_CLI_CTL_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dsv3/v1/job.pb.h"

namespace dsv3::cli {

// One job as the report sees it.
struct ReportJob {
  std::string job_id;
  std::string name;
  std::string stage;    // "pre_training", "context_extension", "post_training" (or another label)
  std::string state;    // "RUNNING", ...
  int64_t devices = 0;  // ranks in its placement (0 = not placed yet)
  double tokens = 0;    // committed tokens
  double device_hours = 0;
  double cost_usd = 0;
  std::string device_kind;  // "cpu", "cuda" or "" (no accounting yet)
};

// The sum over the jobs of one stage (or of all of them, for the total).
struct StageTotals {
  std::string stage;  // "pre_training", ..., or "total"
  std::string
      title;  // the column title: "Pre-training", "Context extension", "Post-training", "Total"
  int jobs = 0;
  double tokens = 0;
  double device_hours = 0;
  double cost_usd = 0;  // as the coordinator charged it
};

struct Report {
  std::vector<ReportJob> jobs;      // in the order given
  std::vector<StageTotals> stages;  // the three report stages in order, then other labels as met
  StageTotals total;
  // USD per device-hour the table uses: total cost / total device-hours when something was charged
  // (exactly the jobs' price when they share one), else the first job's spec price, else 2.0.
  double price_per_device_hour = 2.0;
  bool mixed_prices = false;  // the jobs were charged different prices
  int64_t devices = 0;        // the largest job's device count; 0 = unknown
  std::string device_label;   // "GPU", "CPU device" or "device" (mixed or unknown)
};

// Folds `jobs` into a Report. A job's stage is JobStatus.stage, else spec.stage, else pre_training;
// its devices are placement.world_size, else its worker count, else spec.parallel.max_workers or
// min_workers. The stage columns add up to the total: sum of tokens, device-hours and USD. Errors:
// none (an empty list gives an all-zero report).
Report BuildReport(const std::vector<dsv3::v1::JobStatus>& jobs);

// The measured rate applied to `target_tokens` tokens.
struct Projection {
  double target_tokens = 0;
  double device_hours_per_trillion_tokens = 0;  // measured: total device-hours / total tokens
  double device_hours = 0;                      // rate x target_tokens
  int64_t devices = 0;                          // Report::devices
  std::optional<double> days;                   // device_hours / devices / 24; needs devices > 0
  double usd = 0;                               // device_hours x price_per_device_hour
};

// nullopt when no tokens have been committed yet (there is no rate to project).
std::optional<Projection> Project(const Report& report, double target_tokens);

// The text report: a line per job, the Table 1-shaped table (with a Tokens row), and the projection
// when `target_tokens` is set (or why there is none). Ends in '\n'.
std::string RenderReport(const Report& report, std::optional<double> target_tokens);

// The report as JSON (snake_case keys: jobs, stages, total, price_per_device_hour, devices,
// device_label, projection), indented. Ends in '\n'.
std::string ReportToJson(const Report& report, std::optional<double> target_tokens);

// Inserts a row into a table drawn by accounting::RenderCostTable: `label` at the left and
// `cells[i]` right-aligned under `titles[i]` (the table's column titles, in order), after line
// `after_line` (0 = the header). nullopt when the titles are not found in the header or a cell does
// not fit its column. Used for the Tokens row, which RenderCostTable does not draw.
std::optional<std::string> InsertAlignedRow(const std::string& table, size_t after_line,
                                            const std::string& label,
                                            const std::vector<std::string>& cells,
                                            const std::vector<std::string>& titles);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_REPORT_H_
