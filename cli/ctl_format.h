// Text formatting for dsv3ctl: aligned tables, the progress bar, durations, ETA, human-readable
// counts ("4.92M", "14.8T") and their parsing. Pure functions of their arguments: no clocks, no
// I/O, no protobuf. What is shown for a job or a worker is decided in ctl_views.h, not here.
#ifndef DSV3_CLI_CTL_FORMAT_H_
#define DSV3_CLI_CTL_FORMAT_H_

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace dsv3::cli {

// A table for people: a header row and data rows, columns separated by two spaces, each column as
// wide as its widest cell. Columns listed in `right_aligned` (by index) are right-aligned
// (numbers); the rest left-aligned. Rows shorter than the header are padded with empty cells. Every
// line ends in '\n' and carries no trailing spaces. An empty `rows` still renders the header.
struct TextTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> right_aligned;
};
std::string RenderTable(const TextTable& table);

// "[########............]" for step of total, `width` cells between the brackets (width >= 1).
// Clamps step to [0, total]; total <= 0 draws an empty bar (nothing is known yet).
std::string ProgressBar(int64_t step, int64_t total, int width = 20);

// "40.0%" for 40 of 100 (one decimal), clamped to [0%, 100%]; "-" when total <= 0.
std::string ProgressPercent(int64_t step, int64_t total);

// A duration for people, two units at most: "0s", "42s", "3m05s", "2h03m", "3d04h". Negative
// durations are shown as "0s"; fractions of a second are dropped.
std::string FormatDuration(double seconds);

// "12s ago" from two Unix times in milliseconds; "-" when then_ms <= 0 (never happened); a
// `then_ms` in the future (clock skew) reads "just now".
std::string FormatAgo(int64_t now_ms, int64_t then_ms);

// A count with a K/M/B/T suffix and three significant digits, as the DeepSeek-V3 report writes
// tokens and parameters: 999 -> "999", 1234 -> "1.23K", 4.92e6 -> "4.92M", 671e9 -> "671B",
// 14.8e12 -> "14.8T"; negative values keep their sign; fractional values below 1000 keep up to
// three significant digits ("0.125", "12.5").
std::string FormatCount(double value);

// An SI-prefixed quantity with a unit: FormatSi(2.5e11, "FLOP") == "250 GFLOP",
// FormatSi(950, "FLOP") == "950 FLOP". Prefixes k, M, G, T, P, E; three significant digits.
std::string FormatSi(double value, absl::string_view unit);

// "38.94%" for 0.3894: a fraction as a percentage with two decimals; values under 0.01% read
// "<0.01%" (a CPU job's MFU) unless exactly 0.
std::string FormatFraction(double fraction);

// A price as a label shows it: "$2", "$2.5", "$0.0125" (at most four decimals, no trailing zeros).
std::string FormatPrice(double usd);

// Parses a count as people type it: "14800000000000", "14.8e12", "14.8T", "500B", "20k", "1.5M"
// (suffixes K, M, B or G, T, case-insensitive; surrounding spaces ignored). INVALID_ARGUMENT,
// naming the text, for anything else, a negative value, or a non-finite one.
absl::StatusOr<double> ParseCount(absl::string_view text);

// The estimated time left from the recent rate of steps. Feed it (time, step) observations in time
// order; it keeps those of the last `window_s` seconds (at least two) and estimates
// rate = steps advanced / seconds elapsed across them.
class EtaEstimator {
 public:
  explicit EtaEstimator(double window_s = 120.0) : window_s_(window_s) {}

  // Records that the job was at `step` at time `time_s` (any monotonic seconds). A step lower than
  // the last one (a recovery rolled back to a checkpoint) restarts the estimate from this point.
  void Observe(double time_s, int64_t step);

  // Steps per second over the window; nullopt until two observations with time and steps advancing.
  std::optional<double> StepsPerSecond() const;

  // Seconds until `total` steps at that rate: 0 when the last step >= total (done); nullopt when
  // total <= 0 or the rate is unknown.
  std::optional<double> SecondsLeft(int64_t total) const;

 private:
  struct Sample {
    double time_s;
    int64_t step;
  };
  double window_s_;
  std::deque<Sample> samples_;
};

// "ETA 3m05s" for a known number of seconds left, "done" for <= 0 (as SecondsLeft returns when the
// job is at its last step), "ETA -" when unknown.
std::string FormatEta(std::optional<double> seconds_left);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_FORMAT_H_
