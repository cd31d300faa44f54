// Unit tests of dsv3_cli_lib without a server: exit codes and error lines, progress bar, ETA,
// durations, counts, tables, the report's aggregation and projection, the token file, argument
// handling and estimate's defaults. The in-process client/server tests are in
// dsv3ctl_server_test.cc.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "cli/ctl_args.h"
#include "cli/ctl_errors.h"
#include "cli/ctl_format.h"
#include "cli/ctl_report.h"
#include "cli/ctl_views.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int, timeout_s);
ABSL_DECLARE_FLAG(std::string, coordinator);

namespace dsv3::cli {
namespace {

using ::dsv3::testing::IsOkAndHolds;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// ---- Exit codes and error lines ----

TEST(ExitCode, OkIsZero) { EXPECT_EQ(ExitCodeForServerStatus(absl::StatusCode::kOk), 0); }

TEST(ExitCode, InvalidArgumentFromTheServerIsBadInputTwo) {
  EXPECT_EQ(ExitCodeForServerStatus(absl::StatusCode::kInvalidArgument), 2);
}

TEST(ExitCode, EveryOtherServerCodeIsOne) {
  for (absl::StatusCode code :
       {absl::StatusCode::kCancelled, absl::StatusCode::kUnknown,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kNotFound,
        absl::StatusCode::kAlreadyExists, absl::StatusCode::kPermissionDenied,
        absl::StatusCode::kResourceExhausted, absl::StatusCode::kFailedPrecondition,
        absl::StatusCode::kAborted, absl::StatusCode::kOutOfRange, absl::StatusCode::kUnimplemented,
        absl::StatusCode::kInternal, absl::StatusCode::kUnavailable, absl::StatusCode::kDataLoss,
        absl::StatusCode::kUnauthenticated}) {
    EXPECT_EQ(ExitCodeForServerStatus(code), 1) << absl::StatusCodeToString(code);
  }
}

TEST(ExitCode, WatchExitsOneOnlyForAFailedJob) {
  EXPECT_EQ(ExitCodeForJobState(dsv3::v1::SUCCEEDED), 0);
  EXPECT_EQ(ExitCodeForJobState(dsv3::v1::CANCELLED), 0);
  EXPECT_EQ(ExitCodeForJobState(dsv3::v1::FAILED), 1);
}

TEST(ErrorLine, UnavailableSaysTheCoordinatorCannotBeReached) {
  EXPECT_EQ(ServerErrorLine({"jobs", "127.0.0.1:50051", 30},
                            absl::UnavailableError("failed to connect to all addresses")),
            "dsv3ctl: cannot reach the coordinator at 127.0.0.1:50051 (is dsv3-coordinator "
            "running?)");
}

TEST(ErrorLine, ServerMessageIsShownAfterTheVerb) {
  EXPECT_EQ(ServerErrorLine({"submit", "h:1", 30},
                            absl::InvalidArgumentError("parallel.expert_parallel=3 does not divide "
                                                       "model.n_routed_experts=16")),
            "dsv3ctl: submit: parallel.expert_parallel=3 does not divide "
            "model.n_routed_experts=16");
}

TEST(ErrorLine, MultiLineMessageIsPrintedOnOneLine) {
  EXPECT_EQ(ServerErrorLine({"status", "h:1", 30}, absl::InternalError("first\n  second\n")),
            "dsv3ctl: status: first; second");
}

TEST(ErrorLine, DeadlineExceededNamesTheTimeout) {
  EXPECT_THAT(ServerErrorLine({"jobs", "h:1", 7}, absl::DeadlineExceededError("")),
              HasSubstr("within 7s"));
}

TEST(ErrorLine, UnauthenticatedPointsAtTheTokenFile) {
  EXPECT_THAT(ServerErrorLine({"jobs", "h:1", 7}, absl::UnauthenticatedError("bad token")),
              HasSubstr("bad token (check --auth_token_file)"));
}

TEST(ErrorLine, EmptyServerMessageShowsTheCodeName) {
  EXPECT_EQ(ServerErrorLine({"cancel", "h:1", 7}, absl::FailedPreconditionError("")),
            "dsv3ctl: cancel: FAILED_PRECONDITION");
}

// ---- Progress bar and percentage ----

TEST(ProgressBar, IsEmptyAtStepZero) { EXPECT_EQ(ProgressBar(0, 300, 10), "[..........]"); }

TEST(ProgressBar, IsEmptyWhenTheTotalIsUnknown) {
  EXPECT_EQ(ProgressBar(5, 0, 10), "[..........]");
  EXPECT_EQ(ProgressPercent(5, 0), "-");
}

TEST(ProgressBar, IsFullWhenDone) {
  EXPECT_EQ(ProgressBar(300, 300, 10), "[##########]");
  EXPECT_EQ(ProgressPercent(300, 300), "100.0%");
}

TEST(ProgressBar, ClampsStepsBeyondTheTotalAndBelowZero) {
  EXPECT_EQ(ProgressBar(400, 300, 4), "[####]");
  EXPECT_EQ(ProgressBar(-1, 300, 4), "[....]");
  EXPECT_EQ(ProgressPercent(400, 300), "100.0%");
}

TEST(ProgressBar, FillsInProportionRoundingDown) {
  EXPECT_EQ(ProgressBar(5, 10, 10), "[#####.....]");
  EXPECT_EQ(ProgressBar(299, 300, 10), "[#########.]");
  EXPECT_EQ(ProgressPercent(1, 3), "33.3%");
}

// ---- ETA ----

TEST(Eta, IsUnknownBeforeTwoObservations) {
  EtaEstimator eta;
  EXPECT_EQ(eta.SecondsLeft(100), std::nullopt);
  eta.Observe(0, 10);
  EXPECT_EQ(eta.SecondsLeft(100), std::nullopt);
  EXPECT_EQ(FormatEta(eta.SecondsLeft(100)), "ETA -");
}

TEST(Eta, IsUnknownWhenTheTotalIsZero) {
  EtaEstimator eta;
  eta.Observe(0, 0);
  eta.Observe(10, 10);
  EXPECT_EQ(eta.SecondsLeft(0), std::nullopt);
}

TEST(Eta, IsUnknownAtZeroStepsAndWhenStepsDoNotAdvance) {
  EtaEstimator eta;
  eta.Observe(0, 0);
  eta.Observe(10, 0);
  EXPECT_EQ(eta.StepsPerSecond(), std::nullopt);
  EXPECT_EQ(eta.SecondsLeft(100), std::nullopt);
}

TEST(Eta, IsDoneAtTheLastStep) {
  EtaEstimator eta;
  eta.Observe(0, 300);
  EXPECT_EQ(eta.SecondsLeft(300), 0.0);
  EXPECT_EQ(FormatEta(eta.SecondsLeft(300)), "done");
}

TEST(Eta, FollowsTheRateOfSteps) {
  EtaEstimator eta;
  eta.Observe(100, 0);
  eta.Observe(110, 20);  // 2 steps/s
  ASSERT_EQ(eta.StepsPerSecond(), 2.0);
  EXPECT_EQ(eta.SecondsLeft(390), 185.0);
  EXPECT_EQ(FormatEta(eta.SecondsLeft(390)), "ETA 3m05s");
}

TEST(Eta, UsesOnlyTheRecentWindow) {
  EtaEstimator eta(/*window_s=*/10);
  eta.Observe(0, 0);
  eta.Observe(100, 10);  // slow start: 0.1 step/s
  eta.Observe(105, 60);  // now 10 steps/s; the first sample is out of the window
  EXPECT_EQ(eta.StepsPerSecond(), 10.0);
}

TEST(Eta, RestartsAfterARollbackToACheckpoint) {
  EtaEstimator eta;
  eta.Observe(0, 0);
  eta.Observe(10, 100);
  eta.Observe(11, 50);  // recovered from the checkpoint at step 50
  EXPECT_EQ(eta.StepsPerSecond(), std::nullopt);
  eta.Observe(15, 70);
  EXPECT_EQ(eta.StepsPerSecond(), 5.0);
}

// ---- Durations ----

TEST(Duration, UsesAtMostTwoUnits) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(42.9), "42s");
  EXPECT_EQ(FormatDuration(185), "3m05s");
  EXPECT_EQ(FormatDuration(2 * 3600 + 3 * 60 + 59), "2h03m");
  EXPECT_EQ(FormatDuration(3 * 86400 + 4 * 3600 + 10), "3d04h");
}

TEST(Duration, NegativeAndNonFiniteDurationsAreSafe) {
  EXPECT_EQ(FormatDuration(-5), "0s");
  EXPECT_EQ(FormatDuration(INFINITY), "-");
}

TEST(Duration, AgoHandlesNeverAndClockSkew) {
  EXPECT_EQ(FormatAgo(100000, 0), "-");
  EXPECT_EQ(FormatAgo(100000, 90000), "10s ago");
  EXPECT_EQ(FormatAgo(100000, 100500), "just now");
}

// ---- Numbers ----

TEST(Count, KeepsSmallIntegersExact) {
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(-42), "-42");
}

TEST(Count, UsesThreeSignificantDigitsWithSuffixes) {
  EXPECT_EQ(FormatCount(1234), "1.23K");
  EXPECT_EQ(FormatCount(4.92e6), "4.92M");
  EXPECT_EQ(FormatCount(671e9), "671B");
  EXPECT_EQ(FormatCount(14.8e12), "14.8T");
  EXPECT_EQ(FormatCount(1200), "1.2K");
}

TEST(Count, RoundingUpMovesToTheNextSuffix) {
  EXPECT_EQ(FormatCount(999600), "1M");
  EXPECT_EQ(FormatCount(999400), "999K");
}

TEST(Count, FractionsKeepThreeSignificantDigits) {
  EXPECT_EQ(FormatCount(0.125), "0.125");
  EXPECT_EQ(FormatCount(12.5), "12.5");
  EXPECT_EQ(FormatCount(1.5e-3), "0.0015");
}

TEST(Count, SiQuantitiesHaveAPrefixAndAUnit) {
  EXPECT_EQ(FormatSi(2.5e11, "FLOP"), "250 GFLOP");
  EXPECT_EQ(FormatSi(950, "FLOP"), "950 FLOP");
  EXPECT_EQ(FormatSi(1.04e10, "FLOP"), "10.4 GFLOP");
}

TEST(Count, FractionsArePercentages) {
  EXPECT_EQ(FormatFraction(0.3894), "38.94%");
  EXPECT_EQ(FormatFraction(0), "0.00%");
  EXPECT_EQ(FormatFraction(1e-6), "<0.01%");
}

TEST(ParseCount, AcceptsSuffixesAndScientificNotation) {
  EXPECT_THAT(ParseCount("14.8T"), IsOkAndHolds(14.8e12));
  EXPECT_THAT(ParseCount("500B"), IsOkAndHolds(500e9));
  EXPECT_THAT(ParseCount("2g"), IsOkAndHolds(2e9));
  EXPECT_THAT(ParseCount("20k"), IsOkAndHolds(20e3));
  EXPECT_THAT(ParseCount("1.5M"), IsOkAndHolds(1.5e6));
  EXPECT_THAT(ParseCount("14.8e12"), IsOkAndHolds(14.8e12));
  EXPECT_THAT(ParseCount(" 1000 "), IsOkAndHolds(1000.0));
}

TEST(ParseCount, RejectsGarbageNegativesAndInfinity) {
  for (const char* text : {"", "T", "abc", "-5", "1.5X", "inf", "nan", "1e400"}) {
    EXPECT_THAT(ParseCount(text), StatusIs(absl::StatusCode::kInvalidArgument)) << text;
  }
}

// ---- Tables ----

TEST(Table, AlignsColumnsAndRightAlignsNumbers) {
  TextTable table{{"NAME", "STEPS"}, {{"a", "5"}, {"longer", "120"}}, {1}};
  EXPECT_EQ(RenderTable(table),
            "NAME    STEPS\n"
            "a           5\n"
            "longer    120\n");
}

TEST(Table, HasNoTrailingSpacesAndPadsShortRows) {
  TextTable table{{"A", "B", "C"}, {{"x"}, {"yy", "z", ""}}, {}};
  EXPECT_EQ(RenderTable(table),
            "A   B  C\n"
            "x\n"
            "yy  z\n");
}

// ---- Views ----

dsv3::v1::JobStatus ViewJob() {
  dsv3::v1::JobStatus job;
  job.set_job_id("j-1");
  job.set_name("tiny");
  job.set_state(dsv3::v1::RUNNING);
  job.set_step(150);
  job.set_total_steps(300);
  job.set_last_loss(2.5);
  job.set_message("training on 2 workers");
  job.mutable_accounting()->set_tokens_per_second(2000);
  job.mutable_accounting()->set_device_kind("cuda");
  for (dsv3::v1::RankState state :
       {dsv3::v1::TRAINING, dsv3::v1::TRAINING, dsv3::v1::WAITING_FOR_ENGINE}) {
    job.mutable_placement()->add_ranks()->set_state(state);
  }
  return job;
}

TEST(Views, WatchPanelShowsProgressEtaFiguresMessageAndRanks) {
  const std::string panel = RenderWatchPanel(ViewJob(), {/*seconds_left=*/65.0, 0});
  EXPECT_EQ(std::count(panel.begin(), panel.end(), '\n'), 5);
  EXPECT_THAT(panel, HasSubstr("[###############...............] 150/300  50.0%  ETA 1m05s"));
  EXPECT_THAT(panel, HasSubstr("loss 2.5000"));
  EXPECT_THAT(panel, HasSubstr("2K tok/s"));
  EXPECT_THAT(panel, HasSubstr("GPU-h"));
  EXPECT_THAT(panel, HasSubstr("training on 2 workers"));
  EXPECT_THAT(panel, HasSubstr("3 ranks: 1 WAITING_FOR_ENGINE, 2 TRAINING"));
}

TEST(Views, WatchLineIsOneLineWithTheEta) {
  const std::string line = RenderWatchLine(ViewJob(), {std::nullopt, 0});
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  EXPECT_THAT(line, HasSubstr("RUNNING step 150/300 (50.0%) loss 2.5000"));
  EXPECT_THAT(line, HasSubstr("ETA -"));
}

TEST(Views, WatchChangeKeyIgnoresGrowingAccountingButNotProgress) {
  dsv3::v1::JobStatus job = ViewJob();
  const std::string key = WatchChangeKey(job);
  job.mutable_accounting()->set_device_hours(1.5);
  job.mutable_accounting()->set_cost_usd(3);
  EXPECT_EQ(WatchChangeKey(job), key);
  job.set_step(151);
  EXPECT_NE(WatchChangeKey(job), key);
  job = ViewJob();
  job.mutable_placement()->mutable_ranks(2)->set_state(dsv3::v1::TRAINING);
  EXPECT_NE(WatchChangeKey(job), key);
}

// ViewJob once its ranks report: rank 0's figures, a validation and a committed checkpoint.
constexpr int64_t kReportMs = 1'700'000'000'000;
dsv3::v1::JobStatus TrainingJob() {
  dsv3::v1::JobStatus job = ViewJob();
  job.set_last_checkpoint_step(100);
  dsv3::v1::TrainingProgress* p = job.mutable_progress();
  p->set_main_loss(2.5);
  p->set_mtp_loss(2.7);
  p->set_balance_loss(0.0001234);
  p->set_loss(3.31);
  p->set_lr(0.003);
  p->set_grad_norm(0.634);
  p->set_tokens_per_second(2048);
  p->set_load_max_over_mean(1.25);
  p->set_val_step(100);
  p->set_val_loss(2.75);
  p->set_val_next_token_accuracy(0.3125);
  p->set_val_mtp_next_next_accuracy(0.125);
  p->set_eta_seconds(3725);
  p->set_last_report_unix_ms(kReportMs);
  return job;
}

TEST(Views, StatusShowsTheLossTermsFiguresValidationAndTheCoordinatorsEta) {
  const std::string out = RenderJobStatus(TrainingJob(), kReportMs + 2000);
  EXPECT_THAT(out, HasSubstr("150/300 steps  50.0%  ETA 1h02m\n"));
  EXPECT_THAT(out,
              HasSubstr("Loss        2.5000 main (MTP 2.7000, balance 1.234e-04, total 3.3100)\n"));
  EXPECT_THAT(out, HasSubstr("Training    lr 3.00e-03, grad norm 0.634, 2.05K tokens/s, expert "
                             "load max/mean 1.25 (reported 2s ago)\n"));
  EXPECT_THAT(out, HasSubstr("Validation  step 100: loss 2.7500, next-token accuracy 31.25%, MTP "
                             "next-next accuracy 12.50%\n"));
  EXPECT_THAT(out, HasSubstr("Checkpoint  step 100 (last committed)\n"));
}

TEST(Views, StatusLeavesOutWhatIsNotReportedYet) {
  const std::string before = RenderJobStatus(ViewJob(), 0);
  EXPECT_THAT(before, HasSubstr("Loss        2.5000\n"));
  EXPECT_THAT(before, Not(HasSubstr("Training")));
  EXPECT_THAT(before, Not(HasSubstr("Validation")));
  EXPECT_THAT(before, Not(HasSubstr("ETA ")));
  // No validation yet, no MTP module.
  dsv3::v1::JobStatus job = TrainingJob();
  job.mutable_progress()->set_val_step(0);
  job.mutable_progress()->set_mtp_loss(0);
  const std::string out = RenderJobStatus(job, kReportMs);
  EXPECT_THAT(out, HasSubstr("Validation  none yet\n"));
  EXPECT_THAT(out, HasSubstr("2.5000 main (balance 1.234e-04, total 3.3100)"));
  // Without an MTP module the validation has no MTP accuracy (-1).
  job = TrainingJob();
  job.mutable_progress()->set_val_mtp_next_next_accuracy(-1);
  EXPECT_THAT(RenderJobStatus(job, kReportMs), HasSubstr("next-token accuracy 31.25%\nCheckpoint"));
  // An ended job shows no ETA.
  job.set_state(dsv3::v1::SUCCEEDED);
  EXPECT_THAT(RenderJobStatus(job, kReportMs), Not(HasSubstr("ETA ")));
}

TEST(Views, WatchPanelAddsTheLossTermsValidationAndCheckpointOnceReported) {
  const std::string panel = RenderWatchPanel(TrainingJob(), {std::nullopt, kReportMs});
  EXPECT_EQ(std::count(panel.begin(), panel.end(), '\n'), 7);
  EXPECT_THAT(panel, HasSubstr("150/300  50.0%  ETA 1h02m\n")) << "the coordinator's ETA";
  EXPECT_THAT(panel, HasSubstr("\nMTP 2.7000  balance 1.234e-04  lr 3.00e-03  gnorm 0.634  load "
                               "1.25\n"));
  EXPECT_THAT(panel,
              HasSubstr("\nval @100 loss 2.7500  acc 31.25%  MTP acc 12.50%  ckpt step 100\n"));
  for (absl::string_view line : absl::StrSplit(panel, '\n')) {
    EXPECT_LE(line.size(), 80u) << "a wrapped line spoils the redraw: " << line;
  }
  // The client's own estimate, when it has one, comes first.
  EXPECT_THAT(RenderWatchPanel(TrainingJob(), {65.0, kReportMs}), HasSubstr("ETA 1m05s"));
}

TEST(Views, WatchLineShowsLrValidationAndCheckpointOnceKnown) {
  const std::string line = RenderWatchLine(TrainingJob(), {std::nullopt, kReportMs});
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  EXPECT_THAT(
      line, HasSubstr("RUNNING step 150/300 (50.0%) loss 2.5000 lr 3.00e-03 val 2.7500 ckpt 100 "));
  EXPECT_THAT(line, HasSubstr("ETA 1h02m"));
  EXPECT_THAT(RenderWatchLine(ViewJob(), {std::nullopt, 0}), Not(HasSubstr(" lr ")));
}

TEST(Views, WatchChangeKeyChangesWithAValidationOrACheckpoint) {
  dsv3::v1::JobStatus job = TrainingJob();
  const std::string key = WatchChangeKey(job);
  job.mutable_progress()->set_val_step(150);
  EXPECT_NE(WatchChangeKey(job), key);
  job = TrainingJob();
  job.set_last_checkpoint_step(150);
  EXPECT_NE(WatchChangeKey(job), key);
  job = TrainingJob();
  job.mutable_progress()->set_lr(0.002);  // figures that move with every step alone: no new line
  job.mutable_progress()->set_grad_norm(0.5);
  EXPECT_EQ(WatchChangeKey(job), key);
}

TEST(Views, EmptyListsSaySoInsteadOfAnEmptyTable) {
  EXPECT_EQ(RenderJobsTable({}, 0), "No jobs.\n");
  EXPECT_EQ(RenderWorkersTable({}, 0), "No workers.\n");
}

TEST(Views, JsonKeepsTheProtoFieldNamesAndPrintsZeros) {
  const nlohmann::json j = nlohmann::json::parse(ToJson(ViewJob(), /*pretty=*/false));
  EXPECT_EQ(j["job_id"], "j-1");
  EXPECT_TRUE(j.contains("last_checkpoint_step"));
  EXPECT_EQ(j["accounting"]["cost_usd"], 0);
}

TEST(Views, RankStatesHaveTheirEnumNames) {
  EXPECT_EQ(RankStateName(dsv3::v1::WAITING_FOR_ENGINE), "WAITING_FOR_ENGINE");
  EXPECT_EQ(JobStateName(static_cast<dsv3::v1::JobState>(99)), "UNKNOWN(99)");
}

// ---- Report ----

dsv3::v1::JobStatus ReportJobStatus(const std::string& id, const std::string& stage, int64_t tokens,
                                    double device_hours, double cost_usd, int64_t world_size) {
  dsv3::v1::JobStatus job;
  job.set_job_id(id);
  job.set_name("name-" + id);
  job.set_stage(stage);
  job.set_state(dsv3::v1::SUCCEEDED);
  job.mutable_accounting()->set_tokens(tokens);
  job.mutable_accounting()->set_device_hours(device_hours);
  job.mutable_accounting()->set_cost_usd(cost_usd);
  job.mutable_accounting()->set_device_kind("cuda");
  job.mutable_placement()->set_world_size(world_size);
  return job;
}

// Four jobs over the three stages at $2/hour; the sums are written out by hand.
std::vector<dsv3::v1::JobStatus> FourJobs() {
  std::vector<dsv3::v1::JobStatus> jobs = {
      ReportJobStatus("a", "pre_training", 1'000'000, 2, 4, 4),
      ReportJobStatus("b", "pre_training", 3'000'000, 6, 12, 8),
      ReportJobStatus("c", "context_extension", 1'000'000, 1, 2, 2),
      ReportJobStatus("d", "", 2'000'000, 1, 2, 2),
  };
  jobs[3].mutable_spec()->set_stage("post_training");  // stage only in the spec
  return jobs;
}

TEST(Report, SumsEachStageAndTheStagesAddUpToTheTotal) {
  const Report report = BuildReport(FourJobs());
  ASSERT_EQ(report.stages.size(), 3u);
  EXPECT_EQ(report.stages[0].stage, "pre_training");
  EXPECT_EQ(report.stages[0].jobs, 2);
  EXPECT_EQ(report.stages[0].tokens, 4e6);
  EXPECT_EQ(report.stages[0].device_hours, 8);
  EXPECT_EQ(report.stages[0].cost_usd, 16);
  EXPECT_EQ(report.stages[1].stage, "context_extension");
  EXPECT_EQ(report.stages[1].tokens, 1e6);
  EXPECT_EQ(report.stages[1].device_hours, 1);
  EXPECT_EQ(report.stages[2].stage, "post_training");
  EXPECT_EQ(report.stages[2].tokens, 2e6);
  EXPECT_EQ(report.stages[2].cost_usd, 2);
  EXPECT_EQ(report.total.jobs, 4);
  EXPECT_EQ(report.total.tokens, 7e6);
  EXPECT_EQ(report.total.device_hours, 10);
  EXPECT_EQ(report.total.cost_usd, 20);
  EXPECT_EQ(report.price_per_device_hour, 2.0);
  EXPECT_FALSE(report.mixed_prices);
  EXPECT_EQ(report.devices, 8);
  EXPECT_EQ(report.device_label, "GPU");
}

TEST(Report, JobsWithoutAStageArePreTraining) {
  const Report report = BuildReport({ReportJobStatus("a", "", 10, 1, 2, 1)});
  EXPECT_EQ(report.jobs[0].stage, "pre_training");
  EXPECT_EQ(report.stages[0].jobs, 1);
}

TEST(Report, AnUnknownStageLabelGetsItsOwnColumnBeforeTheTotal) {
  const Report report = BuildReport({ReportJobStatus("a", "rlhf", 10, 1, 2, 1)});
  ASSERT_EQ(report.stages.size(), 4u);
  EXPECT_EQ(report.stages[3].title, "rlhf");
  EXPECT_EQ(report.stages[3].device_hours, 1);
  EXPECT_EQ(report.total.device_hours, 1);
}

TEST(Report, DifferentPricesAreAveragedAndFlagged) {
  const Report report = BuildReport({ReportJobStatus("a", "pre_training", 10, 1, 2, 1),
                                     ReportJobStatus("b", "pre_training", 10, 1, 4, 1)});
  EXPECT_TRUE(report.mixed_prices);
  EXPECT_EQ(report.price_per_device_hour, 3.0);
}

TEST(Report, PriceFallsBackToTheSpecThenToTwoDollars) {
  dsv3::v1::JobStatus job = ReportJobStatus("a", "pre_training", 0, 0, 0, 1);
  EXPECT_EQ(BuildReport({job}).price_per_device_hour, 2.0);
  job.mutable_spec()->mutable_accounting()->set_price_per_device_hour(1.5);
  EXPECT_EQ(BuildReport({job}).price_per_device_hour, 1.5);
}

TEST(Report, DevicesComeFromThePlacementThenTheWorkersThenTheSpec) {
  dsv3::v1::JobStatus job = ReportJobStatus("a", "pre_training", 0, 0, 0, 0);
  job.mutable_spec()->mutable_parallel()->set_min_workers(3);
  EXPECT_EQ(BuildReport({job}).devices, 3);
  job.mutable_spec()->mutable_parallel()->set_max_workers(5);
  EXPECT_EQ(BuildReport({job}).devices, 5);
  job.add_workers();
  job.add_workers();
  EXPECT_EQ(BuildReport({job}).devices, 2);
  job.mutable_placement()->set_world_size(6);
  EXPECT_EQ(BuildReport({job}).devices, 6);
}

TEST(Report, ProjectionAppliesTheMeasuredRateToTheTarget) {
  const Report report = BuildReport(FourJobs());  // 10 device-hours for 7M tokens, 8 devices, $2
  const std::optional<Projection> p = Project(report, 14.8e12);
  ASSERT_TRUE(p.has_value());
  const double hours = 10.0 / 7e6 * 14.8e12;
  EXPECT_DOUBLE_EQ(p->device_hours, hours);
  EXPECT_DOUBLE_EQ(p->device_hours_per_trillion_tokens, 10.0 / 7e6 * 1e12);
  EXPECT_EQ(p->devices, 8);
  ASSERT_TRUE(p->days.has_value());
  EXPECT_DOUBLE_EQ(*p->days, hours / 8 / 24);
  EXPECT_DOUBLE_EQ(p->usd, hours * 2);
}

TEST(Report, ThereIsNoProjectionWithoutCommittedTokens) {
  const Report report = BuildReport({ReportJobStatus("a", "pre_training", 0, 1, 2, 1)});
  EXPECT_EQ(Project(report, 1e12), std::nullopt);
  EXPECT_THAT(RenderReport(report, 1e12), HasSubstr("No projection"));
}

TEST(Report, TextHasTheTable1ColumnsATokensRowAndTheProjection) {
  const std::string text = RenderReport(BuildReport(FourJobs()), 14.8e12);
  EXPECT_THAT(text, HasSubstr("Pre-training"));
  EXPECT_THAT(text, HasSubstr("Context extension"));
  EXPECT_THAT(text, HasSubstr("Post-training"));
  EXPECT_THAT(text, HasSubstr("Total"));
  EXPECT_THAT(text, HasSubstr("GPU-hours per trillion tokens"));
  EXPECT_THAT(text, HasSubstr("USD at $2/GPU-hour"));
  EXPECT_THAT(text, HasSubstr("Projection to 14.8T tokens"));
  EXPECT_THAT(text, HasSubstr("Days on 8 GPUs"));
  // The Tokens row lines up under the titles: its last cell ends where "Total" ends.
  const size_t header_at = text.find("Pre-training");
  const size_t header_start = text.rfind('\n', header_at) + 1;
  const std::string header = text.substr(header_start, text.find('\n', header_at) - header_start);
  const size_t tokens_at = text.find("\nTokens ");
  ASSERT_NE(tokens_at, std::string::npos);
  const std::string tokens_row =
      text.substr(tokens_at + 1, text.find('\n', tokens_at + 1) - tokens_at - 1);
  EXPECT_EQ(tokens_row.size(), header.size());
  EXPECT_EQ(tokens_row.substr(tokens_row.size() - 3), " 7M");
}

TEST(Report, InsertAlignedRowPutsCellsUnderTheirTitles) {
  const std::string table =
      "            Alpha  Beta\n"
      "row one        10    20\n";
  EXPECT_EQ(InsertAlignedRow(table, 0, "new", {"1.5K", "7"}, {"Alpha", "Beta"}),
            "            Alpha  Beta\n"
            "new          1.5K     7\n"
            "row one        10    20\n");
}

TEST(Report, InsertAlignedRowRefusesCellsThatDoNotFit) {
  const std::string table = "   A  B\nx  1  2\n";
  EXPECT_EQ(InsertAlignedRow(table, 0, "x", {"too wide", "1"}, {"A", "B"}), std::nullopt);
  EXPECT_EQ(InsertAlignedRow(table, 0, "x", {"1", "1"}, {"A", "Missing"}), std::nullopt);
}

TEST(Report, JsonStagesAddUpToTheTotal) {
  const nlohmann::json j = nlohmann::json::parse(ReportToJson(BuildReport(FourJobs()), 1e12));
  double hours = 0, tokens = 0, usd = 0;
  for (const auto& stage : j["stages"]) {
    hours += stage["device_hours"].get<double>();
    tokens += stage["tokens"].get<double>();
    usd += stage["cost_usd"].get<double>();
  }
  EXPECT_EQ(hours, j["total"]["device_hours"].get<double>());
  EXPECT_EQ(tokens, j["total"]["tokens"].get<double>());
  EXPECT_EQ(usd, j["total"]["cost_usd"].get<double>());
  EXPECT_EQ(j["jobs"].size(), 4u);
  EXPECT_TRUE(j["projection"].is_object());
  EXPECT_TRUE(j["stages"][1]["device_hours_per_trillion_tokens"].is_number());
}

// ---- Token file and files ----

TEST(AuthToken, SurroundingWhitespaceIsTrimmed) {
  EXPECT_THAT(ParseAuthToken("  abc.DEF-123_x=\n\n"), IsOkAndHolds(std::string("abc.DEF-123_x=")));
  EXPECT_THAT(ParseAuthToken("tok"), IsOkAndHolds(std::string("tok")));
}

TEST(AuthToken, AnEmptyFileIsRejected) {
  EXPECT_THAT(ParseAuthToken(" \n\t"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
}

TEST(AuthToken, TwoTokensOrInnerWhitespaceAreRejected) {
  EXPECT_THAT(ParseAuthToken("abc def"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseAuthToken("abc\ndef\n"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Files, AMissingFileIsNotFoundAndNamed) {
  EXPECT_THAT(ReadTextFile("/nonexistent/spec.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/spec.json")));
}

TEST(Files, ADirectoryIsRejected) {
  EXPECT_THAT(ReadTextFile(std::filesystem::temp_directory_path().string()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("directory")));
}

// ---- Arguments ----

TEST(Args, CoordinatorComesFromTheFlagThenTheEnvironmentThenTheDefault) {
  EXPECT_EQ(ResolveCoordinator("a:1", "b:2"), "a:1");
  EXPECT_EQ(ResolveCoordinator("", "b:2"), "b:2");
  EXPECT_EQ(ResolveCoordinator("", ""), "127.0.0.1:50051");
}

// Runs SplitCommandLine over `args` (argv[0] added) with every dsv3ctl flag known and reset.
absl::StatusOr<CommandLine> Split(std::vector<std::string> args) {
  args.insert(args.begin(), "dsv3ctl");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  std::vector<absl::string_view> known = GlobalFlags();
  for (const VerbInfo& verb : Verbs())
    known.insert(known.end(), verb.flags.begin(), verb.flags.end());
  ResetFlags(known);
  return SplitCommandLine(static_cast<int>(argv.size()), argv.data(), known);
}

TEST(Args, FlagsMayComeBeforeOrAfterTheVerb) {
  const absl::StatusOr<CommandLine> cl =
      Split({"--coordinator=h:9", "status", "j-1", "--json", "--timeout_s", "5"});
  ASSERT_OK(cl);
  EXPECT_THAT(cl->positional, ElementsAre("status", "j-1"));
  EXPECT_THAT(cl->flags_set, ElementsAre("coordinator", "json", "timeout_s"));
  EXPECT_EQ(absl::GetFlag(FLAGS_coordinator), "h:9");
  EXPECT_TRUE(absl::GetFlag(FLAGS_json));
  EXPECT_EQ(absl::GetFlag(FLAGS_timeout_s), 5);
}

TEST(Args, BoolFlagsCanBeNegatedAndDoubleDashEndsFlags) {
  const absl::StatusOr<CommandLine> cl = Split({"--json", "--nojson", "status", "--", "--odd-id"});
  ASSERT_OK(cl);
  EXPECT_FALSE(absl::GetFlag(FLAGS_json));
  EXPECT_THAT(cl->positional, ElementsAre("status", "--odd-id"));
}

TEST(Args, UnknownFlagsMissingValuesAndBadValuesAreRejected) {
  EXPECT_THAT(Split({"jobs", "--frobnicate=1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown flag --frobnicate")));
  EXPECT_THAT(Split({"jobs", "--timeout_s"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--timeout_s needs a value")));
  EXPECT_THAT(Split({"jobs", "--timeout_s=soon"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad value for --timeout_s")));
}

TEST(Args, HelpIsRecognisedInEveryForm) {
  for (const char* help : {"--help", "-h", "-help", "--helpfull"}) {
    const absl::StatusOr<CommandLine> cl = Split({help});
    ASSERT_OK(cl);
    EXPECT_TRUE(cl->help) << help;
  }
}

TEST(Args, VerbUsageChecksArgumentCountsAndVerbFlags) {
  CommandLine cl;
  cl.positional = {"status"};
  EXPECT_THAT(CheckVerbUsage(*FindVerb("status"), cl),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("missing JOB")));
  cl.positional = {"jobs", "extra"};
  EXPECT_THAT(
      CheckVerbUsage(*FindVerb("jobs"), cl),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unexpected argument 'extra'")));
  cl.positional = {"report", "a", "b", "c"};
  EXPECT_OK(CheckVerbUsage(*FindVerb("report"), cl));
  cl.flags_set = {"tokens"};
  EXPECT_THAT(CheckVerbUsage(*FindVerb("report"), cl),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("applies to: estimate")));
  cl.flags_set = {"coordinator", "json", "target_tokens"};
  EXPECT_OK(CheckVerbUsage(*FindVerb("report"), cl));
}

TEST(Args, UsageTextListsEveryVerbAndEstimatesDefaults) {
  const std::string usage = UsageText();
  for (const VerbInfo& verb : Verbs()) EXPECT_THAT(usage, HasSubstr("  " + std::string(verb.name)));
  for (const char* text : {"989", "0.3894", "max_workers", "DSV3_COORDINATOR", "Exit codes"}) {
    EXPECT_THAT(usage, HasSubstr(text));
  }
}

// ---- estimate's defaults ----

constexpr char kSpec[] = R"({
  "name": "x", "stage": "pre_training",
  "model": {"hidden_size": 64, "some_future_key": 1},
  "parallel": {"pipeline_parallel": 2, "min_workers": 2, "max_workers": 8},
  "train": {"seq_len": 128, "global_batch_tokens": 16384, "steps": 300},
  "accounting": {"price_per_device_hour": 2.5}
})";

TEST(Estimate, DefaultsComeFromTheSpec) {
  const absl::StatusOr<dsv3::v1::EstimateCostRequest> r = BuildEstimateRequest(kSpec, {});
  ASSERT_OK(r);
  EXPECT_EQ(r->spec_json(), kSpec);
  EXPECT_EQ(r->tokens(), 300.0 * 16384);
  EXPECT_EQ(r->devices(), 8);
  EXPECT_EQ(r->peak_tflops(), 989);
  EXPECT_EQ(r->mfu(), 0.3894);
  EXPECT_EQ(r->price_per_device_hour(), 2.5);
}

TEST(Estimate, FlagsOverrideTheDefaults) {
  EstimateOverrides o{14.8e12, 2048, 1979, 0.5, 1.0};
  const absl::StatusOr<dsv3::v1::EstimateCostRequest> r = BuildEstimateRequest(kSpec, o);
  ASSERT_OK(r);
  EXPECT_EQ(r->tokens(), 14.8e12);
  EXPECT_EQ(r->devices(), 2048);
  EXPECT_EQ(r->peak_tflops(), 1979);
  EXPECT_EQ(r->mfu(), 0.5);
  EXPECT_EQ(r->price_per_device_hour(), 1.0);
}

TEST(Estimate, DevicesFallBackToMinWorkersThenOneAndPriceToTwoDollars) {
  absl::StatusOr<dsv3::v1::EstimateCostRequest> r =
      BuildEstimateRequest(R"({"parallel": {"min_workers": 3}})", {.tokens = 1e9});
  ASSERT_OK(r);
  EXPECT_EQ(r->devices(), 3);
  EXPECT_EQ(r->price_per_device_hour(), 2.0);
  r = BuildEstimateRequest("{}", {.tokens = 1e9});
  ASSERT_OK(r);
  EXPECT_EQ(r->devices(), 1);
}

TEST(Estimate, TokensAreRequiredWhenTheSpecCannotGiveThem) {
  EXPECT_THAT(BuildEstimateRequest(R"({"train": {"steps": 10}})", {}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--tokens is required")));
}

TEST(Estimate, OutOfRangeValuesAreRejectedByFlagName) {
  EXPECT_THAT(BuildEstimateRequest(kSpec, {.mfu = 1.5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--mfu=1.5")));
  EXPECT_THAT(BuildEstimateRequest(kSpec, {.devices = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--devices=0")));
  EXPECT_THAT(BuildEstimateRequest(kSpec, {.peak_tflops = 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--peak_tflops")));
  EXPECT_THAT(BuildEstimateRequest(kSpec, {.price_per_device_hour = -1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--price")));
}

TEST(Estimate, TextThatIsNotJsonIsRejected) {
  EXPECT_THAT(BuildEstimateRequest("{not json", {.tokens = 1}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a job spec")));
}

}  // namespace
}  // namespace dsv3::cli
