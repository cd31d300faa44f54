// The pipeline executor against one process: for DualPipe, DualPipeV and 1F1B on 2 and 4 ranks
// (threads with the in-process and Gloo backends), one step's loss terms, summed over the ranks,
// and the parameter gradients, summed over the ranks (the trainer's reduction), equal those of
// the whole model run on the same micro-batches; a dead peer fails the step with an error.
#include "engine/parallel/pipeline_executor.h"

#include <cmath>
#include <random>
#include <thread>

#include "common/status_matchers.h"
#include "engine/parallel/in_process_store.h"
#include "engine/parallel/testing_groups.h"
#include "engine/parallel/schedule_factory.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

ModelConfig Config(int64_t layers) {
  ModelConfig c;
  c.vocab_size = 53;
  c.hidden_size = 32;
  c.num_hidden_layers = layers;
  c.first_k_dense_replace = 1;
  c.intermediate_size = 40;
  c.moe_intermediate_size = 16;
  c.n_routed_experts = 8;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 2;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.num_attention_heads = 2;
  c.q_lora_rank = 16;
  c.kv_lora_rank = 16;
  c.qk_nope_head_dim = 8;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 8;
  c.num_nextn_predict_layers = 1;
  return c;
}

std::unique_ptr<model::Model> MakeModel(const ModelConfig& c) {
  absl::StatusOr<std::unique_ptr<model::Model>> m = model::Model::Create(c, {}, nullptr);
  EXPECT_OK(m);
  model::InitParameters(11, 0.08, &(*m)->parameters());
  return std::move(*m);
}

using testing::MakeGroup;

double RelErr(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

struct Case {
  ScheduleKind kind;
  int ranks;
  int micro_batches;
  Backend backend;
  bool overlap = true;
  bool overlap_chunks = true;  // F&B chunks on two threads taking turns
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << ScheduleKindName(c.kind) << " N=" << c.ranks << " C=" << c.micro_batches << " "
      << BackendName(c.backend) << (c.overlap ? "" : " no overlap")
      << (c.overlap_chunks ? "" : " sequential F&B");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return std::string(info.param.kind == ScheduleKind::kOneFOneB ? "OneFOneB"
                     : info.param.kind == ScheduleKind::kDualPipe ? "DualPipe"
                                                                  : "DualPipeV") +
         "_N" + std::to_string(info.param.ranks) + "_C" +
         std::to_string(info.param.micro_batches) + "_" + BackendName(info.param.backend) +
         (info.param.overlap ? "" : "_no_overlap") +
         (info.param.overlap_chunks ? "" : "_sequential_fb");
}

class PipelineEquivalenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(PipelineEquivalenceTest, OneStepEqualsTheWholeModel) {
  const Case& tc = GetParam();
  ASSERT_OK_AND_ASSIGN(Schedule schedule,
                       BuildSchedule(tc.kind, tc.ranks, tc.micro_batches));
  // As many layers as stages, plus one, so some stages hold two layers.
  const ModelConfig c = Config(schedule.layout.num_stages + 1);
  constexpr int64_t kRows = 2, kSeq = 5;
  const int m = tc.micro_batches;
  std::mt19937 rng(5);
  std::vector<int32_t> tokens(static_cast<size_t>(m * kRows * (kSeq + 1)));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  auto micro_batch = [&](int i) {
    return model::TokenRows{tokens.data() + i * kRows * (kSeq + 1), kRows, kSeq};
  };

  // One process: every micro-batch through the whole model.
  std::unique_ptr<model::Model> whole = MakeModel(c);
  model::LossTerms want;
  for (int i = 0; i < m; ++i) {
    model::RunOptions o;
    o.normalizer_rows = m * kRows;
    ASSERT_OK_AND_ASSIGN(model::LossTerms l, whole->Run(micro_batch(i), o));
    want.loss += l.loss;
    want.main_loss += l.main_loss;
    want.mtp_loss += l.mtp_loss;
    want.balance_loss += l.balance_loss;
  }

  std::vector<std::unique_ptr<Communicator>> comms =
      MakeGroup(tc.backend, tc.ranks, absl::Seconds(60));
  std::vector<std::unique_ptr<model::Model>> models(tc.ranks);
  std::vector<absl::StatusOr<PipelineStepResult>> got(tc.ranks, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int r = 0; r < tc.ranks; ++r) {
    ASSERT_NE(comms[r], nullptr);
    models[r] = MakeModel(c);
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<PipelineExecutor>> ex =
          PipelineExecutor::Create(schedule, models[r].get(), comms[r].get(),
                                   {.overlap_communication = tc.overlap,
                                    .overlap_chunks = tc.overlap_chunks});
      if (!ex.ok()) {
        got[r] = ex.status();
        return;
      }
      got[r] = (*ex)->RunStep(
          [&](int i) -> absl::StatusOr<model::TokenRows> { return micro_batch(i); }, m * kRows);
    });
  }
  for (auto& t : threads) t.join();

  model::LossTerms sum;
  int forwards = 0, backwards = 0;
  std::vector<int64_t> loads(whole->expert_loads().size(), 0);
  for (int r = 0; r < tc.ranks; ++r) {
    ASSERT_OK(got[r].status()) << "rank " << r;
    sum.loss += got[r]->loss.loss;
    sum.main_loss += got[r]->loss.main_loss;
    sum.mtp_loss += got[r]->loss.mtp_loss;
    sum.balance_loss += got[r]->loss.balance_loss;
    forwards += got[r]->forward_chunks;
    backwards += got[r]->backward_chunks;
    for (size_t i = 0; i < loads.size(); ++i) loads[i] += models[r]->expert_loads()[i];
  }
  // Every micro-batch ran every stage forward and backward exactly once.
  EXPECT_EQ(forwards, m * schedule.layout.num_stages);
  for (int r = 0; r < tc.ranks; ++r) {
    EXPECT_GT(got[r]->seconds_compute, 0) << "rank " << r;
    EXPECT_LE(got[r]->seconds_compute + got[r]->seconds_waiting, got[r]->seconds * 1.001 + 1e-4);
  }
  EXPECT_EQ(backwards, m * schedule.layout.num_stages);
  EXPECT_NEAR(sum.loss, want.loss, 1e-6 * want.loss);
  EXPECT_NEAR(sum.main_loss, want.main_loss, 1e-6 * want.main_loss);
  EXPECT_NEAR(sum.mtp_loss, want.mtp_loss, 1e-6 * want.mtp_loss);
  EXPECT_NEAR(sum.balance_loss, want.balance_loss, 1e-6 * want.balance_loss);
  // The stages compute the same forward bits, so routing (and thus loads) agrees exactly.
  EXPECT_EQ(loads, whole->expert_loads());
  const model::ParameterSet& wp = whole->parameters();
  for (const model::ParamInfo& p : wp.layout.params()) {
    std::vector<float> total(static_cast<size_t>(p.size), 0.0f);
    for (int r = 0; r < tc.ranks; ++r) {
      for (int64_t i = 0; i < p.size; ++i) {
        total[i] += models[r]->parameters().grads[p.offset + i];
      }
    }
    EXPECT_LT(RelErr(total.data(), wp.grads.data() + p.offset, p.size), 1e-5) << p.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Schedules, PipelineEquivalenceTest,
    ::testing::Values(Case{ScheduleKind::kOneFOneB, 2, 4, Backend::kInProcess},
                      Case{ScheduleKind::kOneFOneB, 4, 6, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipe, 2, 4, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipe, 4, 8, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipe, 4, 10, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipeV, 2, 4, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipeV, 3, 7, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipeV, 4, 8, Backend::kInProcess},
                      Case{ScheduleKind::kDualPipe, 2, 4, Backend::kGloo},
                      Case{ScheduleKind::kDualPipeV, 2, 4, Backend::kGloo},
                      Case{ScheduleKind::kOneFOneB, 2, 4, Backend::kGloo},
                      Case{ScheduleKind::kDualPipe, 4, 8, Backend::kGloo, false},
                      Case{ScheduleKind::kDualPipe, 4, 8, Backend::kInProcess, true, false},
                      Case{ScheduleKind::kDualPipe, 4, 8, Backend::kGloo, true, false}),
    CaseName);

TEST(PipelineExecutorTest, OverlappedChunkPairsGiveTheBitsOfSequentialOnes) {
  // The two chunks of an F&B never compute at the same time, so how they interleave cannot change
  // a bit: every rank's loss share and gradients equal those of running them one after the other.
  ASSERT_OK_AND_ASSIGN(Schedule schedule, BuildSchedule(ScheduleKind::kDualPipe, 4, 8));
  const ModelConfig c = Config(schedule.layout.num_stages + 1);
  constexpr int64_t kRows = 2, kSeq = 5;
  std::mt19937 rng(6);
  std::vector<int32_t> tokens(static_cast<size_t>(8 * kRows * (kSeq + 1)));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  auto run = [&](bool overlap_chunks) {
    std::vector<std::unique_ptr<Communicator>> comms =
        MakeGroup(Backend::kGloo, 4, absl::Seconds(60));
    std::vector<std::unique_ptr<model::Model>> models(4);
    std::vector<absl::StatusOr<PipelineStepResult>> got(4, absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (int r = 0; r < 4; ++r) {
      models[r] = MakeModel(c);
      threads.emplace_back([&, r] {
        absl::StatusOr<std::unique_ptr<PipelineExecutor>> ex = PipelineExecutor::Create(
            schedule, models[r].get(), comms[r].get(), {.overlap_chunks = overlap_chunks});
        if (!ex.ok()) {
          got[r] = ex.status();
          return;
        }
        got[r] = (*ex)->RunStep(
            [&](int i) -> absl::StatusOr<model::TokenRows> {
              return model::TokenRows{tokens.data() + i * kRows * (kSeq + 1), kRows, kSeq};
            },
            8 * kRows);
      });
    }
    for (auto& t : threads) t.join();
    std::vector<std::pair<double, std::vector<float>>> out;
    for (int r = 0; r < 4; ++r) {
      EXPECT_OK(got[r].status());
      out.emplace_back(got[r].ok() ? got[r]->loss.loss : 0.0,
                       std::vector<float>(models[r]->parameters().grads.begin(),
                                          models[r]->parameters().grads.end()));
    }
    return out;
  };
  const auto sequential = run(false);
  for (int attempt = 0; attempt < 3; ++attempt) {
    const auto overlapped = run(true);
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(overlapped[r].first, sequential[r].first) << "rank " << r;
      EXPECT_TRUE(overlapped[r].second == sequential[r].second) << "rank " << r;
    }
  }
}

TEST(PipelineExecutorTest, ADeadPeerFailsTheStepWithinTheTimeout) {
  ASSERT_OK_AND_ASSIGN(Schedule schedule, BuildSchedule(ScheduleKind::kDualPipe, 2, 4));
  const ModelConfig c = Config(2);
  std::vector<int32_t> tokens(2 * 6, 1);
  std::vector<std::unique_ptr<Communicator>> comms =
      MakeGroup(Backend::kGloo, 2, absl::Seconds(2));
  std::unique_ptr<model::Model> model = MakeModel(c);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PipelineExecutor> ex,
                       PipelineExecutor::Create(schedule, model.get(), comms[0].get()));
  comms[1].reset();  // rank 1 dies before the step
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<PipelineStepResult> r = ex->RunStep(
      [&](int) -> absl::StatusOr<model::TokenRows> {
        return model::TokenRows{tokens.data(), 2, 5};
      },
      8);
  EXPECT_FALSE(r.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_NE(r.status().message().find("pipeline rank 0"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("rank 1"), std::string::npos) << r.status();
}

TEST(PipelineExecutorTest, RejectsAGroupOfAnotherSize) {
  ASSERT_OK_AND_ASSIGN(Schedule schedule, BuildSchedule(ScheduleKind::kOneFOneB, 4, 4));
  std::vector<std::unique_ptr<Communicator>> comms =
      MakeGroup(Backend::kInProcess, 2, absl::Seconds(5));
  std::unique_ptr<model::Model> model = MakeModel(Config(2));
  std::vector<absl::Status> status(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      status[r] = PipelineExecutor::Create(schedule, model.get(), comms[r].get()).status();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(status[0].code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dsv3::parallel
