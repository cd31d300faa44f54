// Cost estimate, MFU and cost helpers, and the Table 1-shaped cost table (see cost.h).
// Arithmetic and formatting only; the figures it formats are computed or measured elsewhere.
#include "engine/accounting/cost.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace dsv3::accounting {
namespace {

constexpr double kSecondsPerHour = 3600.0;
constexpr double kHoursPerDay = 24.0;
constexpr double kTokensPerTrillion = 1e12;
constexpr double kFlopsPerTflop = 1e12;

std::string Printf(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

// `value` with at most `decimals` decimals, trailing zeros (and a trailing point) removed.
std::string Trimmed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  std::string s = buffer;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

// The unit one row of figures is written in, chosen from the row's largest magnitude.
enum class Scale { kOne, kThousand, kMillion };

Scale HoursScale(double max_abs) {
  if (max_abs >= 1e7) return Scale::kMillion;
  if (max_abs >= 1e3) return Scale::kThousand;
  return Scale::kOne;
}

Scale UsdScale(double max_abs) {
  if (max_abs >= 1e6) return Scale::kMillion;
  if (max_abs >= 1e3) return Scale::kThousand;
  return Scale::kOne;
}

// Hours as the report writes them: whole thousands ("2664K", "5K"), millions to 3 decimals, and
// small figures plainly ("12.5", "0.125").
std::string HoursIn(double hours, Scale scale) {
  switch (scale) {
    case Scale::kMillion:
      return Trimmed(hours / 1e6, 3) + "M";
    case Scale::kThousand:
      return Trimmed(hours / 1e3, std::fabs(hours) >= 1e3 ? 0 : 3) + "K";
    case Scale::kOne:
      break;
  }
  return Trimmed(hours, std::fabs(hours) >= 1 ? 2 : 4);
}

// Dollars as the report writes them: "$5.328M", "$0.01M"; "$12.5K"; "$0.50"; a fraction of a cent
// (small CPU jobs) to 4 decimals, "$0.0041".
std::string UsdIn(double usd, Scale scale) {
  switch (scale) {
    case Scale::kMillion:
      return "$" + Trimmed(usd / 1e6, 3) + "M";
    case Scale::kThousand:
      return "$" + Trimmed(usd / 1e3, 3) + "K";
    case Scale::kOne:
      break;
  }
  if (usd != 0 && std::fabs(usd) < 0.01) return "$" + Trimmed(usd, 4);
  return Printf("$%.2f", usd);
}

// Days to one decimal ("54.2", "0.1"), or to 4 decimals in a row whose figures are all below a day.
std::string DaysIn(double days, double row_max_abs, bool exact) {
  if (exact) return Printf("%.3f", days);
  return row_max_abs >= 1 ? Printf("%.1f", days) : Trimmed(days, 4);
}

}  // namespace

std::string ValidateCostInputs(const CostInputs& in) {
  // Written as !(x > 0) so that NaN is rejected too.
  if (!(in.flops_per_token > 0)) {
    return "flops_per_token=" + Printf("%g", in.flops_per_token) + " must be > 0";
  }
  if (!(in.tokens >= 0)) return "tokens=" + Printf("%g", in.tokens) + " must be >= 0";
  if (in.devices <= 0) return "devices=" + std::to_string(in.devices) + " must be > 0";
  if (!(in.peak_tflops > 0)) return "peak_tflops=" + Printf("%g", in.peak_tflops) + " must be > 0";
  if (!(in.mfu > 0 && in.mfu <= 1)) return "mfu=" + Printf("%g", in.mfu) + " must be in (0, 1]";
  if (!(in.price_per_device_hour >= 0)) {
    return "price_per_device_hour=" + Printf("%g", in.price_per_device_hour) + " must be >= 0";
  }
  return "";
}

CostEstimate EstimateCost(const CostInputs& in) {
  if (const std::string error = ValidateCostInputs(in); !error.empty()) {
    std::fprintf(stderr, "EstimateCost: %s\n", error.c_str());
    std::abort();
  }
  const double achieved_flops_per_device = in.peak_tflops * kFlopsPerTflop * in.mfu;  // FLOP/s
  CostEstimate e;
  e.tokens_per_second = in.devices * achieved_flops_per_device / in.flops_per_token;
  e.device_hours = in.tokens * in.flops_per_token / achieved_flops_per_device / kSecondsPerHour;
  e.wall_clock_days = e.device_hours / in.devices / kHoursPerDay;
  e.usd = CostUsd(e.device_hours, in.price_per_device_hour);
  e.device_hours_per_trillion_tokens = DeviceHoursPerTrillionTokens(e.device_hours, in.tokens);
  return e;
}

double Mfu(double tokens_per_second, double flops_per_token, int64_t devices, double peak_tflops) {
  if (devices <= 0 || !(peak_tflops > 0) || !(tokens_per_second > 0) || !(flops_per_token > 0)) {
    return 0;
  }
  return tokens_per_second * flops_per_token / (devices * peak_tflops * kFlopsPerTflop);
}

double CostUsd(double device_hours, double price_per_device_hour) {
  return device_hours * price_per_device_hour;
}

double DeviceHoursPerTrillionTokens(double device_hours, double tokens) {
  if (!(tokens > 0)) return 0;
  return device_hours / (tokens / kTokensPerTrillion);
}

std::vector<CostColumn> BuildCostTable(const std::vector<StageUsage>& stages,
                                       const CostTableOptions& options) {
  auto fill_derived = [&](CostColumn& c, bool tokens_known) {
    c.usd = CostUsd(c.device_hours, options.price_per_device_hour);
    if (tokens_known && c.tokens > 0) {
      c.device_hours_per_trillion_tokens = DeviceHoursPerTrillionTokens(c.device_hours, c.tokens);
    }
    if (options.devices > 0) {
      c.days = c.device_hours / options.devices / kHoursPerDay;
      if (c.device_hours_per_trillion_tokens) {
        c.days_per_trillion_tokens =
            *c.device_hours_per_trillion_tokens / options.devices / kHoursPerDay;
      }
    }
  };

  std::vector<CostColumn> columns;
  CostColumn total{.stage = "Total"};
  bool all_tokens_known = true;
  for (const StageUsage& s : stages) {
    CostColumn c{.stage = s.stage, .device_hours = s.device_hours, .tokens = s.tokens};
    fill_derived(c, /*tokens_known=*/true);
    columns.push_back(c);
    total.device_hours += s.device_hours;
    total.tokens += s.tokens;
    if (s.device_hours > 0 && !(s.tokens > 0)) all_tokens_known = false;
  }
  fill_derived(total, all_tokens_known);
  columns.push_back(total);
  return columns;
}

std::string RenderCostTable(const std::vector<StageUsage>& stages,
                            const CostTableOptions& options) {
  const std::vector<CostColumn> columns = BuildCostTable(stages, options);
  const bool exact = options.exact;
  const std::string& label = options.device_label;

  // Each row: a label and one cell per column ("-" where the figure is not available).
  struct Row {
    std::string label;
    std::vector<std::string> cells;
  };
  std::vector<Row> rows;

  // Adds a row of the figures get(column) (nullopt: "-"), each written by format(figure,
  // row_max_abs), so that one row shares one unit chosen from its largest figure.
  auto add_row = [&](const std::string& row_label, auto get, auto format) {
    double row_max_abs = 0;
    for (const CostColumn& c : columns) {
      if (std::optional<double> v = get(c)) row_max_abs = std::max(row_max_abs, std::fabs(*v));
    }
    Row row{row_label, {}};
    for (const CostColumn& c : columns) {
      const std::optional<double> v = get(c);
      row.cells.push_back(v ? format(*v, row_max_abs) : "-");
    }
    rows.push_back(row);
  };
  auto hours = [exact](double v, double row_max_abs) {
    return exact ? Printf("%.2f", v) : HoursIn(v, HoursScale(row_max_abs));
  };
  auto usd = [exact](double v, double row_max_abs) {
    return exact ? Printf("$%.2f", v) : UsdIn(v, UsdScale(row_max_abs));
  };
  auto days = [exact](double v, double row_max_abs) { return DaysIn(v, row_max_abs, exact); };

  add_row(
      label + "-hours", [](const CostColumn& c) -> std::optional<double> { return c.device_hours; },
      hours);
  add_row(
      "USD at $" + Trimmed(options.price_per_device_hour, 4) + "/" + label + "-hour",
      [](const CostColumn& c) -> std::optional<double> { return c.usd; }, usd);
  add_row(
      label + "-hours per trillion tokens",
      [](const CostColumn& c) { return c.device_hours_per_trillion_tokens; }, hours);
  if (options.devices > 0) {
    const std::string on_devices = " on " + std::to_string(options.devices) + " " + label + "s";
    add_row(
        "Days" + on_devices, [](const CostColumn& c) { return c.days; }, days);
    add_row(
        "Days per trillion tokens" + on_devices,
        [](const CostColumn& c) { return c.days_per_trillion_tokens; }, days);
  }

  // Layout: labels left-aligned, figures right-aligned under their column titles.
  size_t label_width = 0;
  for (const Row& r : rows) label_width = std::max(label_width, r.label.size());
  std::vector<size_t> widths;
  for (size_t i = 0; i < columns.size(); ++i) {
    size_t w = columns[i].stage.size();
    for (const Row& r : rows) w = std::max(w, r.cells[i].size());
    widths.push_back(w);
  }
  auto line = [&](const std::string& first, const std::vector<std::string>& cells) {
    std::string out = first + std::string(label_width - first.size(), ' ');
    for (size_t i = 0; i < cells.size(); ++i) {
      out += "  " + std::string(widths[i] - cells[i].size(), ' ') + cells[i];
    }
    return out + "\n";
  };

  std::vector<std::string> titles;
  for (const CostColumn& c : columns) titles.push_back(c.stage);
  std::string out = line("", titles);
  for (const Row& r : rows) out += line(r.label, r.cells);
  return out;
}

std::string FormatDeviceHours(double hours) { return HoursIn(hours, HoursScale(std::fabs(hours))); }

std::string FormatUsd(double usd) { return UsdIn(usd, UsdScale(std::fabs(usd))); }

}  // namespace dsv3::accounting
