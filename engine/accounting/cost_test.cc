// Tests of the cost estimate, MFU and the Table 1-shaped cost table against DeepSeek-V3's published
// figures (TR Table 1, ISCA Table 4; spec §8.5, oracles 32-33) and against hand-computed
// arithmetic.
#include "engine/accounting/cost.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "engine/accounting/flops.h"

namespace dsv3::accounting {
namespace {

ModelConfig DeepSeekV3() { return DeepSeekV3Config(); }

// V3 pre-training as published: 14.8T tokens on 2048 H800 (989 TFLOP/s BF16 dense) at 38.94% MFU,
// $2/h.
CostInputs PublishedPreTraining(double flops_per_token) {
  return CostInputs{.flops_per_token = flops_per_token,
                    .tokens = 14.8e12,
                    .devices = 2048,
                    .peak_tflops = 989,
                    .mfu = 0.3894,
                    .price_per_device_hour = 2.0};
}

double MainFlops() { return TrainingFlopsPerToken(DeepSeekV3(), 4096).MainModel(); }

// ---- The published pre-training cost (TR Table 1) ----

TEST(EstimateCost, PreTrainingDeviceHoursAreWithinThreePercentOf2664K) {
  const CostEstimate e = EstimateCost(PublishedPreTraining(MainFlops()));
  EXPECT_NEAR(e.device_hours, 2664e3, 2664e3 * 0.03);
}

TEST(EstimateCost, PreTrainingCostIsWithinThreePercentOf5Point328MillionDollars) {
  const CostEstimate e = EstimateCost(PublishedPreTraining(MainFlops()));
  EXPECT_NEAR(e.usd, 5.328e6, 5.328e6 * 0.03);
}

TEST(EstimateCost, PreTrainingTakesAbout180KDeviceHoursPerTrillionTokens) {
  const CostEstimate e = EstimateCost(PublishedPreTraining(MainFlops()));
  EXPECT_NEAR(e.device_hours_per_trillion_tokens, 180e3, 180e3 * 0.03);
}

TEST(EstimateCost, PreTrainingTakesAbout54DaysOn2048Devices) {
  // ISCA: 272.8B tokens per day, so 14.8T tokens take 54.25 days.
  const CostEstimate e = EstimateCost(PublishedPreTraining(MainFlops()));
  EXPECT_NEAR(e.wall_clock_days, 54.25, 54.25 * 0.03);
}

TEST(EstimateCost, PublishedHoursLandOnlyWhenTheMtpFlopsAreLeftOut) {
  // The published MFU counts the main model only: adding the MTP module's FLOPs overshoots by > 3%.
  const double with_mtp = TrainingFlopsPerToken(DeepSeekV3(), 4096).MainModelPlusMtp();
  const CostEstimate e = EstimateCost(PublishedPreTraining(with_mtp));
  EXPECT_GT(e.device_hours, 2664e3 * 1.03);
}

// ---- The arithmetic, on round numbers ----

TEST(EstimateCost, ArithmeticFollowsTheClosedForm) {
  // 1.8e9 tokens x 1e9 FLOP = 1.8e18 FLOP; each device does 100e12 x 0.5 = 5e13 FLOP/s, so 36000
  // device-seconds = 10 device-hours; on 5 devices 2 hours = 1/12 day; at $3/h $30.
  const CostEstimate e = EstimateCost(CostInputs{.flops_per_token = 1e9,
                                                 .tokens = 1.8e9,
                                                 .devices = 5,
                                                 .peak_tflops = 100,
                                                 .mfu = 0.5,
                                                 .price_per_device_hour = 3});
  EXPECT_DOUBLE_EQ(e.device_hours, 10.0);
  EXPECT_DOUBLE_EQ(e.wall_clock_days, 1.0 / 12);
  EXPECT_DOUBLE_EQ(e.usd, 30.0);
  EXPECT_DOUBLE_EQ(e.tokens_per_second, 5 * 5e13 / 1e9);
  EXPECT_DOUBLE_EQ(e.device_hours_per_trillion_tokens, 10.0 / 1.8e-3);
}

TEST(EstimateCost, CostIsHoursTimesPrice) {
  const CostEstimate e = EstimateCost(PublishedPreTraining(MainFlops()));
  EXPECT_DOUBLE_EQ(e.usd, e.device_hours * 2.0);
}

TEST(CostUsd, IsHoursTimesPrice) { EXPECT_DOUBLE_EQ(CostUsd(2788e3, 2.0), 5.576e6); }

TEST(DeviceHoursPerTrillionTokens, Gives180KForThePublishedPreTraining) {
  EXPECT_DOUBLE_EQ(DeviceHoursPerTrillionTokens(2664e3, 14.8e12), 180e3);
}

TEST(DeviceHoursPerTrillionTokens, IsZeroBeforeAnyTokenIsTrained) {
  EXPECT_EQ(DeviceHoursPerTrillionTokens(3.5, 0), 0.0);
}

// ---- Validation ----

TEST(ValidateCostInputs, AcceptsThePublishedInputs) {
  EXPECT_EQ(ValidateCostInputs(PublishedPreTraining(250e9)), "");
}

TEST(ValidateCostInputs, NamesAnMfuAboveOne) {
  CostInputs in = PublishedPreTraining(250e9);
  in.mfu = 1.5;
  EXPECT_EQ(ValidateCostInputs(in), "mfu=1.5 must be in (0, 1]");
}

TEST(ValidateCostInputs, NamesAZeroDeviceCount) {
  CostInputs in = PublishedPreTraining(250e9);
  in.devices = 0;
  EXPECT_EQ(ValidateCostInputs(in), "devices=0 must be > 0");
}

TEST(ValidateCostInputs, NamesAnUnknownPeak) {
  CostInputs in = PublishedPreTraining(250e9);
  in.peak_tflops = 0;
  EXPECT_EQ(ValidateCostInputs(in), "peak_tflops=0 must be > 0");
}

TEST(EstimateCostDeathTest, AbortsOnInvalidInputs) {
  CostInputs in = PublishedPreTraining(250e9);
  in.mfu = 0;
  EXPECT_DEATH(EstimateCost(in), "mfu=0");
}

// ---- MFU ----

TEST(Mfu, OfThePublishedThroughputIsNearThePublished38Point94Percent) {
  // ISCA Table 4: 272.8B tokens per day on 2048 GPUs of 989 TFLOP/s, MFU 38.94% (causal).
  const double tokens_per_second = 272.8e9 / 86400;
  EXPECT_NEAR(Mfu(tokens_per_second, MainFlops(), 2048, 989), 0.3894, 0.3894 * 0.02);
}

TEST(Mfu, FollowsTheClosedForm) {
  // 1000 tokens/s x 1e9 FLOP = 1e12 FLOP/s on 2 devices of 1 TFLOP/s: half the peak.
  EXPECT_DOUBLE_EQ(Mfu(1000, 1e9, 2, 1), 0.5);
}

TEST(Mfu, IsZeroWhenThePeakIsUnknown) { EXPECT_EQ(Mfu(1000, 1e9, 2, 0), 0.0); }

TEST(Mfu, IsZeroWithoutDevices) { EXPECT_EQ(Mfu(1000, 1e9, 0, 989), 0.0); }

// ---- The cost table ----

// The report's Table 1 usage: pre-training tokens are known (14.8T), the other stages' are not.
std::vector<StageUsage> PublishedTable1() {
  return {{kPreTraining, 2664e3, 14.8e12}, {kContextExtension, 119e3, 0}, {kPostTraining, 5e3, 0}};
}

// The cells of the row of `table` that starts with `label` (labels contain single spaces, cells
// none).
std::vector<std::string> Cells(const std::string& table, const std::string& label) {
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(label + "  ", 0) != 0) continue;
    std::istringstream rest(line.substr(label.size()));
    std::vector<std::string> cells;
    for (std::string cell; rest >> cell;) cells.push_back(cell);
    return cells;
  }
  ADD_FAILURE() << "no row \"" << label << "\" in:\n" << table;
  return {};
}

CostTableOptions H800On2048() {
  return CostTableOptions{
      .device_label = "H800 GPU", .price_per_device_hour = 2.0, .devices = 2048};
}

TEST(RenderCostTable, WritesThePublishedDeviceHoursAsTheReportDoes) {
  const std::string table = RenderCostTable(PublishedTable1(), H800On2048());
  EXPECT_EQ(Cells(table, "H800 GPU-hours"),
            (std::vector<std::string>{"2664K", "119K", "5K", "2788K"}));
}

TEST(RenderCostTable, WritesThePublishedDollarsAsTheReportDoes) {
  const std::string table = RenderCostTable(PublishedTable1(), H800On2048());
  EXPECT_EQ(Cells(table, "USD at $2/H800 GPU-hour"),
            (std::vector<std::string>{"$5.328M", "$0.238M", "$0.01M", "$5.576M"}));
}

TEST(RenderCostTable, Writes180KPerTrillionTokensAndADashWhereTokensAreUnknown) {
  const std::string table = RenderCostTable(PublishedTable1(), H800On2048());
  EXPECT_EQ(Cells(table, "H800 GPU-hours per trillion tokens"),
            (std::vector<std::string>{"180K", "-", "-", "-"}));
}

TEST(RenderCostTable, WritesThePublished3Point7DaysPerTrillionTokensOn2048Gpus) {
  // 180K / 2048 / 24 = 3.66 days; pre-training 2664K / 2048 / 24 = 54.2 days.
  const std::string table = RenderCostTable(PublishedTable1(), H800On2048());
  EXPECT_EQ(Cells(table, "Days per trillion tokens on 2048 H800 GPUs"),
            (std::vector<std::string>{"3.7", "-", "-", "-"}));
  EXPECT_EQ(Cells(table, "Days on 2048 H800 GPUs"),
            (std::vector<std::string>{"54.2", "2.4", "0.1", "56.7"}));
}

TEST(RenderCostTable, HeadsTheColumnsWithTheStagesThenTotal) {
  const std::string table = RenderCostTable(PublishedTable1(), H800On2048());
  const std::string header = table.substr(0, table.find('\n'));
  const size_t pre = header.find("Pre-training");
  const size_t ext = header.find("Context extension");
  const size_t post = header.find("Post-training");
  const size_t total = header.find("Total");
  ASSERT_NE(total, std::string::npos) << header;
  EXPECT_LT(pre, ext);
  EXPECT_LT(ext, post);
  EXPECT_LT(post, total);
}

TEST(RenderCostTable, LeavesOutTheDaysRowsWithoutADeviceCount) {
  CostTableOptions options = H800On2048();
  options.devices = 0;
  EXPECT_EQ(RenderCostTable(PublishedTable1(), options).find("Days"), std::string::npos);
}

TEST(RenderCostTable, WritesExactFiguresOnRequest) {
  CostTableOptions options = H800On2048();
  options.exact = true;
  const std::string table = RenderCostTable(PublishedTable1(), options);
  EXPECT_EQ(Cells(table, "H800 GPU-hours"),
            (std::vector<std::string>{"2664000.00", "119000.00", "5000.00", "2788000.00"}));
  EXPECT_EQ(Cells(table, "USD at $2/H800 GPU-hour"),
            (std::vector<std::string>{"$5328000.00", "$238000.00", "$10000.00", "$5576000.00"}));
}

TEST(RenderCostTable, WritesASmallCpuJobPlainly) {
  const std::string table =
      RenderCostTable({{kPreTraining, 0.125, 4e6}},
                      CostTableOptions{.device_label = "device", .price_per_device_hour = 0.4});
  EXPECT_EQ(Cells(table, "device-hours"), (std::vector<std::string>{"0.125", "0.125"}));
  EXPECT_EQ(Cells(table, "USD at $0.4/device-hour"), (std::vector<std::string>{"$0.05", "$0.05"}));
  // 0.125 h / 4e-6 T = 31250 h per trillion tokens.
  EXPECT_EQ(Cells(table, "device-hours per trillion tokens"),
            (std::vector<std::string>{"31K", "31K"}));
}

TEST(BuildCostTable, TotalSumsTheStagesAndCostIsHoursTimesPrice) {
  const std::vector<CostColumn> columns = BuildCostTable(PublishedTable1(), H800On2048());
  ASSERT_EQ(columns.size(), 4u);
  EXPECT_EQ(columns[3].stage, "Total");
  EXPECT_DOUBLE_EQ(columns[3].device_hours, 2788e3);
  for (const CostColumn& c : columns) EXPECT_DOUBLE_EQ(c.usd, c.device_hours * 2.0) << c.stage;
  EXPECT_DOUBLE_EQ(columns[3].usd, 5.576e6);
}

TEST(BuildCostTable, TotalHasAPerTrillionFigureWhenEveryStageKnowsItsTokens) {
  const std::vector<CostColumn> columns =
      BuildCostTable({{kPreTraining, 180.0, 1e12}, {kContextExtension, 60.0, 0.5e12}}, {});
  ASSERT_TRUE(columns[2].device_hours_per_trillion_tokens.has_value());
  EXPECT_DOUBLE_EQ(*columns[2].device_hours_per_trillion_tokens, 240.0 / 1.5);
}

// ---- Single figures ----

TEST(FormatDeviceHours, WritesThousandsAsK) { EXPECT_EQ(FormatDeviceHours(2664e3), "2664K"); }

TEST(FormatDeviceHours, WritesSmallFiguresPlainly) { EXPECT_EQ(FormatDeviceHours(0.125), "0.125"); }

TEST(FormatUsd, WritesMillionsWithThreeDecimals) { EXPECT_EQ(FormatUsd(5.328e6), "$5.328M"); }

TEST(FormatUsd, WritesThousandsAsK) { EXPECT_EQ(FormatUsd(12500), "$12.5K"); }

TEST(FormatUsd, WritesCentsBelowAThousand) { EXPECT_EQ(FormatUsd(0.5), "$0.50"); }

TEST(FormatUsd, WritesFractionsOfACentWithFourDecimals) { EXPECT_EQ(FormatUsd(0.0041), "$0.0041"); }

}  // namespace
}  // namespace dsv3::accounting
