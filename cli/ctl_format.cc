// Text formatting for dsv3ctl (see ctl_format.h): tables, progress bar, durations, ETA and counts.
// Pure string arithmetic; nothing here knows about jobs, protobuf or the terminal.
#include "cli/ctl_format.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3::cli {
namespace {

// Display width of UTF-8 text: code points, not bytes (continuation bytes are 10xxxxxx).
size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++width;
  }
  return width;
}

// `value` to `decimals` decimals with trailing zeros (and a bare point) removed; "-0" reads "0".
std::string Trimmed(double value, int decimals) {
  std::string s = absl::StrFormat("%.*f", decimals, value);
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

// Three significant digits of a magnitude below 1000 (trailing zeros trimmed).
std::string ThreeSignificant(double value) {
  const double magnitude = std::fabs(value);
  if (magnitude == 0) return "0";
  const int exponent = static_cast<int>(std::floor(std::log10(magnitude)));
  const int decimals = std::clamp(2 - exponent, 0, 6);
  return Trimmed(value, decimals);
}

// Divides `value` by 1000 until it is below 999.5 (so that rounding to three digits cannot reach
// 1000) or the prefixes run out; returns the scaled value and the prefix index.
std::pair<double, size_t> Scale(double value, size_t prefixes) {
  size_t index = 0;
  while (std::fabs(value) >= 999.5 && index + 1 < prefixes) {
    value /= 1000;
    ++index;
  }
  return {value, index};
}

}  // namespace

std::string RenderTable(const TextTable& table) {
  const size_t columns = table.header.size();
  std::vector<size_t> widths(columns, 0);
  for (size_t i = 0; i < columns; ++i) widths[i] = DisplayWidth(table.header[i]);
  for (const auto& row : table.rows) {
    for (size_t i = 0; i < columns && i < row.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  auto is_right = [&](size_t i) {
    return std::find(table.right_aligned.begin(), table.right_aligned.end(), i) !=
           table.right_aligned.end();
  };
  auto render_line = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < columns; ++i) {
      const std::string cell = i < cells.size() ? cells[i] : "";
      const std::string pad(widths[i] - DisplayWidth(cell), ' ');
      if (i > 0) line += "  ";
      line += is_right(i) ? pad + cell : cell + pad;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line + "\n";
  };
  std::string out = render_line(table.header);
  for (const auto& row : table.rows) out += render_line(row);
  return out;
}

std::string ProgressBar(int64_t step, int64_t total, int width) {
  width = std::max(width, 1);
  int filled = 0;
  if (total > 0) {
    const int64_t clamped = std::clamp<int64_t>(step, 0, total);
    filled = static_cast<int>(clamped * width / total);
  }
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

std::string ProgressPercent(int64_t step, int64_t total) {
  if (total <= 0) return "-";
  const double percent = 100.0 * std::clamp<int64_t>(step, 0, total) / total;
  return absl::StrFormat("%.1f%%", percent);
}

std::string FormatDuration(double seconds) {
  if (std::isnan(seconds) || std::isinf(seconds)) return "-";
  const int64_t s = seconds > 0 ? static_cast<int64_t>(seconds) : 0;
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::string FormatAgo(int64_t now_ms, int64_t then_ms) {
  if (then_ms <= 0) return "-";
  if (then_ms > now_ms) return "just now";
  return FormatDuration((now_ms - then_ms) / 1000.0) + " ago";
}

std::string FormatCount(double value) {
  if (std::isnan(value) || std::isinf(value)) return "-";
  static constexpr const char* kSuffixes[] = {"", "K", "M", "B", "T"};
  if (std::fabs(value) < 999.5 && value == std::floor(value)) return Trimmed(value, 0);
  const auto [scaled, index] = Scale(value, std::size(kSuffixes));
  return ThreeSignificant(scaled) + kSuffixes[index];
}

std::string FormatSi(double value, absl::string_view unit) {
  if (std::isnan(value) || std::isinf(value)) return absl::StrCat("- ", unit);
  static constexpr const char* kPrefixes[] = {"", "k", "M", "G", "T", "P", "E"};
  const auto [scaled, index] = Scale(value, std::size(kPrefixes));
  return absl::StrCat(ThreeSignificant(scaled), " ", kPrefixes[index], unit);
}

std::string FormatFraction(double fraction) {
  if (std::isnan(fraction)) return "-";
  if (fraction > 0 && fraction < 0.0001) return "<0.01%";
  return absl::StrFormat("%.2f%%", fraction * 100);
}

std::string FormatPrice(double usd) { return "$" + Trimmed(usd, 4); }

absl::StatusOr<double> ParseCount(absl::string_view text) {
  absl::string_view body = absl::StripAsciiWhitespace(text);
  double multiplier = 1;
  if (!body.empty()) {
    switch (absl::ascii_tolower(static_cast<unsigned char>(body.back()))) {
      case 'k':
        multiplier = 1e3;
        break;
      case 'm':
        multiplier = 1e6;
        break;
      case 'b':
      case 'g':
        multiplier = 1e9;
        break;
      case 't':
        multiplier = 1e12;
        break;
      default:
        break;
    }
    if (multiplier != 1) body.remove_suffix(1);
  }
  double value = 0;
  if (body.empty() || !absl::SimpleAtod(body, &value) || !std::isfinite(value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a count (examples: 14.8T, 14.8e12, 500B, 20K, 1000000)"));
  }
  return value * multiplier;
}

void EtaEstimator::Observe(double time_s, int64_t step) {
  if (!samples_.empty() && step < samples_.back().step) samples_.clear();
  samples_.push_back({time_s, step});
  while (samples_.size() > 2 && time_s - samples_.front().time_s > window_s_) {
    samples_.pop_front();
  }
}

std::optional<double> EtaEstimator::StepsPerSecond() const {
  if (samples_.size() < 2) return std::nullopt;
  const double seconds = samples_.back().time_s - samples_.front().time_s;
  const int64_t steps = samples_.back().step - samples_.front().step;
  if (seconds <= 0 || steps <= 0) return std::nullopt;
  return steps / seconds;
}

std::optional<double> EtaEstimator::SecondsLeft(int64_t total) const {
  if (total <= 0 || samples_.empty()) return std::nullopt;
  if (samples_.back().step >= total) return 0.0;
  const std::optional<double> rate = StepsPerSecond();
  if (!rate) return std::nullopt;
  return (total - samples_.back().step) / *rate;
}

std::string FormatEta(std::optional<double> seconds_left) {
  if (!seconds_left) return "ETA -";
  if (*seconds_left <= 0) return "done";
  return "ETA " + FormatDuration(*seconds_left);
}

}  // namespace dsv3::cli
