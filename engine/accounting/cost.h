// Device-hours, MFU and dollars: the cost estimate for a planned run, the helpers that turn a
// running job's measurements into MFU and cost, and the cost table in the shape of the DeepSeek-V3
// report's Table 1. Plain arithmetic and string formatting; FLOPs per token come from flops.h,
// measurements from the caller. No I/O, no clocks, no dependencies beyond the C++ standard library.
#ifndef DSV3_ENGINE_ACCOUNTING_COST_H_
#define DSV3_ENGINE_ACCOUNTING_COST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dsv3::accounting {

// Which FLOPs per token to pass below. DeepSeek's published figures (ISCA Table 4: 385 TFLOP/s per
// GPU, MFU 38.94% causal; TR Table 1: 2664K GPU-hours for 14.8T tokens) use the main model's ~250
// GFLOP/token, i.e. TrainingFlops::MainModel(), without the MTP module (which adds ~10 GFLOP/token,
// 4%). Whatever convention measured an MFU must also be used to turn that MFU back into hours.

// Inputs of a cost estimate for training on `tokens` tokens.
struct CostInputs {
  double flops_per_token = 0;  // training FLOP per token (forward + backward)
  double tokens = 0;           // N, tokens to train on
  int64_t devices = 0;         // D, devices running at once
  double peak_tflops = 0;      // one device's peak, 1e12 FLOP/s (989 for H800/H100 dense BF16)
  double mfu = 0;              // model FLOPs utilization, in (0, 1]
  double price_per_device_hour = 0;  // USD per device-hour, >= 0
};

struct CostEstimate {
  double tokens_per_second = 0;                 // whole cluster: D * peak * MFU / flops_per_token
  double device_hours = 0;                      // N * flops_per_token / (peak * MFU) / 3600
  double wall_clock_days = 0;                   // device_hours / D / 24
  double usd = 0;                               // device_hours * price_per_device_hour
  double device_hours_per_trillion_tokens = 0;  // device_hours / (N / 1e12)
};

// Returns "" when `inputs` can be estimated, else a message naming the first offending field and
// value (e.g. "mfu=1.5 must be in (0, 1]"); callers turn it into INVALID_ARGUMENT.
std::string ValidateCostInputs(const CostInputs& inputs);

// Estimates the device-hours, wall-clock days and dollars of training on inputs.tokens tokens.
// Precondition: ValidateCostInputs(inputs) is empty; aborts with that message otherwise.
CostEstimate EstimateCost(const CostInputs& inputs);

// Model FLOPs utilization from a measurement: tokens_per_second (whole job, all devices) x
// flops_per_token / (devices x peak_tflops x 1e12). Returns 0 when devices <= 0 or peak_tflops <= 0
// (the peak of the device is unknown, e.g. a CPU device with device_peak_tflops 0) or when
// tokens_per_second or flops_per_token is not positive.
double Mfu(double tokens_per_second, double flops_per_token, int64_t devices, double peak_tflops);

// Dollars for device_hours at price_per_device_hour (USD): their product. Errors: none.
double CostUsd(double device_hours, double price_per_device_hour);

// Device-hours per 1e12 tokens. Returns 0 when tokens <= 0 (nothing trained yet).
double DeviceHoursPerTrillionTokens(double device_hours, double tokens);

// ---- The cost table (DeepSeek-V3 report, Table 1) ----

// Column titles of the report's three stages (JobSpec.stage pre_training, context_extension,
// post_training).
inline constexpr char kPreTraining[] = "Pre-training";
inline constexpr char kContextExtension[] = "Context extension";
inline constexpr char kPostTraining[] = "Post-training";

// One stage's usage: one column of the table.
struct StageUsage {
  std::string stage;        // column title, e.g. kPreTraining
  double device_hours = 0;  // device-hours spent on the stage
  double tokens = 0;  // tokens trained in the stage; 0 = unknown (its per-trillion cell shows "-")
};

struct CostTableOptions {
  // Rows read "<label>-hours": "H800 GPU" gives "H800 GPU-hours".
  std::string device_label = "device";
  double price_per_device_hour = 2.0;  // USD
  int64_t devices = 0;  // D for the "days on D <label>s" rows; <= 0 leaves those rows out
  bool exact = false;   // true: plain full-precision figures instead of "2664K" / "$5.328M"
};

// The table's figures, per column; the last column is the Total. Unavailable cells are nullopt.
struct CostColumn {
  std::string stage;
  double device_hours = 0;
  double usd = 0;
  double tokens = 0;
  std::optional<double> device_hours_per_trillion_tokens;  // needs tokens > 0
  std::optional<double> days;                              // device_hours / D / 24; needs D > 0
  std::optional<double> days_per_trillion_tokens;          // needs both
};

// Computes the table's figures: one column per stage, in order, then "Total" (sums of hours,
// dollars and tokens; its per-trillion cell is present only if every stage that used device-hours
// has known tokens). Errors: none.
std::vector<CostColumn> BuildCostTable(const std::vector<StageUsage>& stages,
                                       const CostTableOptions& options);

// Renders BuildCostTable(stages, options) as text: a header line, then the rows "<label>-hours",
// "USD at $P/<label>-hour", "<label>-hours per trillion tokens" and, when options.devices > 0,
// "Days on D <label>s" and "Days per trillion tokens on D <label>s"; each line ends in '\n'. Each
// row uses one unit (K/M), the one that suits its largest figure, as the report does
// ("2664K ... 5K", "$5.328M ... $0.01M"). Errors: none.
std::string RenderCostTable(const std::vector<StageUsage>& stages, const CostTableOptions& options);

// Human-friendly single figures, as in the report: FormatDeviceHours(2664000) == "2664K",
// FormatUsd(5328000) == "$5.328M", FormatUsd(0.5) == "$0.50", FormatUsd(0.0041) == "$0.0041",
// FormatDeviceHours(0.125) == "0.125". Errors: none.
std::string FormatDeviceHours(double hours);
std::string FormatUsd(double usd);

}  // namespace dsv3::accounting

#endif  // DSV3_ENGINE_ACCOUNTING_COST_H_
