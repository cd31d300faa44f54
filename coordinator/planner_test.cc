// Tests of the planner (planner.h): layouts for several worker counts of the DESIGN.md example job
// (P=2, expert_parallel 2, 16 experts, S=16 sequences per micro-batch, max_workers 8), node
// grouping, spares, errors, epochs and determinism. Expected layouts are worked out by hand from
// docs/planner.md; coverage checks recompute rank = stage x R + dp x EP + shard independently.
#include "coordinator/planner.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::coordinator {
namespace {

using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

// The DESIGN.md example, as ValidateJobSpec resolves it (only what the planner reads).
v1::JobSpec DesignSpec() {
  v1::JobSpec spec;
  spec.set_name("brown-tiny");
  spec.mutable_model()->set_n_routed_experts(16);
  v1::ParallelSpec* parallel = spec.mutable_parallel();
  parallel->set_pipeline_parallel(2);
  parallel->set_expert_parallel(2);
  parallel->set_schedule("dualpipe");
  parallel->set_micro_batches(8);
  parallel->set_min_workers(2);
  parallel->set_max_workers(8);
  spec.mutable_train()->set_seq_len(128);
  spec.mutable_train()->set_global_batch_tokens(16384);  // S = 16384 / 128 / 8 = 16
  return spec;
}

// The same job with S sequences per micro-batch.
v1::JobSpec WithSequencesPerMicroBatch(v1::JobSpec spec, int64_t s) {
  spec.mutable_train()->set_global_batch_tokens(s * 128 * 8);
  return spec;
}

// `n` workers named w00, w01, ... with ids id-00, ...; worker i is on nodes[i % nodes.size()].
std::vector<PlannerWorker> Workers(int n, const std::vector<std::string>& nodes = {"node-a"}) {
  std::vector<PlannerWorker> workers;
  workers.reserve(n);
  for (int i = 0; i < n; ++i) {
    workers.push_back(PlannerWorker{absl::StrFormat("id-%02d", i), absl::StrFormat("w%02d", i),
                                    nodes[i % nodes.size()]});
  }
  return workers;
}

struct Shape {
  int64_t world, ep, dp;
};

void ExpectShape(const v1::Placement& p, Shape shape) {
  EXPECT_EQ(p.world_size(), shape.world);
  EXPECT_EQ(p.pipeline_parallel(), 2);
  EXPECT_EQ(p.expert_parallel(), shape.ep);
  EXPECT_EQ(p.data_parallel(), shape.dp);
  EXPECT_EQ(p.ranks_size(), shape.world);
}

// Every rank 0..world-1 once, on distinct workers, with stage/dp/shard consistent with its number,
// and each (stage, dp) group's expert ranges tiling [0, experts) in shard order.
void ExpectWellFormed(const v1::Placement& p, int64_t experts) {
  const int64_t ep = p.expert_parallel();
  const int64_t r = ep * p.data_parallel();
  ASSERT_EQ(p.world_size(), p.pipeline_parallel() * r);
  ASSERT_EQ(p.ranks_size(), p.world_size());
  std::set<std::string> workers;
  for (int i = 0; i < p.ranks_size(); ++i) {
    const v1::RankPlacement& rank = p.ranks(i);
    SCOPED_TRACE(rank.ShortDebugString());
    EXPECT_EQ(rank.rank(), i);  // listed in rank order, each once
    EXPECT_TRUE(workers.insert(rank.worker_id()).second) << "worker used twice";
    EXPECT_EQ(rank.pipeline_stage(), i / r);
    EXPECT_EQ(rank.dp_replica(), (i % r) / ep);
    EXPECT_EQ(rank.expert_shard(), i % ep);
    EXPECT_EQ(rank.state(), v1::ASSIGNED);
    if (rank.expert_shard() == 0) {
      EXPECT_EQ(rank.expert_begin(), 0);
    } else {
      EXPECT_EQ(rank.expert_begin(), p.ranks(i - 1).expert_end());
    }
    if (rank.expert_shard() == ep - 1) {
      EXPECT_EQ(rank.expert_end(), experts);
    }
    EXPECT_EQ(rank.expert_end() - rank.expert_begin(), experts / ep);
  }
}

absl::StatusOr<v1::Placement> Plan(const v1::JobSpec& spec, const std::vector<PlannerWorker>& w,
                                   int64_t previous_epoch = 0) {
  return PlanPlacement(spec, w, previous_epoch);
}

// ---------------------------------------------------------------------------------------------
// Layouts of the DESIGN.md example by worker count.

TEST(PlannerTest, TwoWorkersGiveOneRankPerStageWithAllExpertsEach) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(2));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 2, .ep = 1, .dp = 1});
  ExpectWellFormed(*p, 16);
  EXPECT_EQ(p->ranks(0).expert_end(), 16);
  EXPECT_EQ(p->ranks(1).pipeline_stage(), 1);
}

TEST(PlannerTest, ThreeWorkersUseTwoAndLeaveOneSpare) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(3));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 2, .ep = 1, .dp = 1});
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, FourWorkersReachTheExpertParallelTarget) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(4));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 4, .ep = 2, .dp = 1});
  ExpectWellFormed(*p, 16);
  // Rank 3: stage 1, shard 1, experts [8, 16).
  EXPECT_EQ(p->ranks(3).pipeline_stage(), 1);
  EXPECT_EQ(p->ranks(3).expert_shard(), 1);
  EXPECT_EQ(p->ranks(3).expert_begin(), 8);
  EXPECT_EQ(p->ranks(3).expert_end(), 16);
}

TEST(PlannerTest, FiveWorkersUseFourAndLeaveOneSpare) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(5));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 4, .ep = 2, .dp = 1});
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, SixWorkersUseFourBecauseThreeRanksPerStageWouldNotDivideTheBatch) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(6));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 4, .ep = 2, .dp = 1});  // 3 does not divide S=16
}

TEST(PlannerTest, EightWorkersAddASecondDataParallelReplica) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(8));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 8, .ep = 2, .dp = 2});
  ExpectWellFormed(*p, 16);
  // Rank 6 = stage 1 x 4 + dp 1 x 2 + shard 0.
  EXPECT_EQ(p->ranks(6).pipeline_stage(), 1);
  EXPECT_EQ(p->ranks(6).dp_replica(), 1);
  EXPECT_EQ(p->ranks(6).expert_shard(), 0);
  EXPECT_EQ(p->ranks(6).expert_begin(), 0);
  EXPECT_EQ(p->ranks(6).expert_end(), 8);
}

TEST(PlannerTest, NineWorkersAreCappedAtMaxWorkers) {
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(9));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 8, .ep = 2, .dp = 2});
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, RaisingMaxWorkersLetsMoreWorkersIn) {
  v1::JobSpec spec = DesignSpec();
  spec.mutable_parallel()->set_max_workers(32);
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(32));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 32, .ep = 2, .dp = 8});  // R = 16 = S
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, RanksPerStageNeverExceedSequencesPerMicroBatch) {
  v1::JobSpec spec = WithSequencesPerMicroBatch(DesignSpec(), 2);
  spec.mutable_parallel()->set_max_workers(100);
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(20));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 4, .ep = 2, .dp = 1});
}

// ---------------------------------------------------------------------------------------------
// Ranks per stage divide S; expert parallelism falls back to a common divisor.

TEST(PlannerTest, RanksPerStageIsTheLargestDivisorOfTheSequencesThatFits) {
  v1::JobSpec spec = WithSequencesPerMicroBatch(DesignSpec(), 6);
  spec.mutable_parallel()->set_max_workers(16);
  absl::StatusOr<PlacementLayout> layout = PlanLayout(spec, 16);  // 8 per stage fit; 6 divides 6
  ASSERT_THAT(layout, IsOk());
  EXPECT_EQ(layout->sequences_per_micro_batch, 6);
  EXPECT_EQ(layout->ranks_per_stage, 6);
  EXPECT_EQ(layout->expert_parallel, 2);
  EXPECT_EQ(layout->data_parallel, 3);
  EXPECT_EQ(layout->world_size, 12);
}

TEST(PlannerTest, ExpertParallelFallsBackToOneWhenRanksPerStageIsOdd) {
  v1::JobSpec spec = WithSequencesPerMicroBatch(DesignSpec(), 3);
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(6));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 6, .ep = 1, .dp = 3});
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, ExpertParallelFallsBackToTheLargestCommonDivisor) {
  v1::JobSpec spec = WithSequencesPerMicroBatch(DesignSpec(), 6);
  spec.mutable_parallel()->set_expert_parallel(4);  // 4 does not divide R=6; 3 not 16; 2 both
  spec.mutable_parallel()->set_max_workers(12);
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(12));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 12, .ep = 2, .dp = 3});
  ExpectWellFormed(*p, 16);
}

TEST(PlannerTest, AbsentParallelDefaultsMatchTheValidator) {
  v1::JobSpec spec = DesignSpec();
  spec.mutable_parallel()->clear_expert_parallel();  // 1
  spec.mutable_parallel()->clear_min_workers();      // P = 2
  spec.mutable_parallel()->clear_max_workers();      // max(2, 2 x 1) = 2
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(8));
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 2, .ep = 1, .dp = 1});
}

// ---------------------------------------------------------------------------------------------
// Nodes.

std::map<std::pair<int64_t, int64_t>, std::set<std::string>> NodesPerGroup(const v1::Placement& p) {
  std::map<std::pair<int64_t, int64_t>, std::set<std::string>> nodes;
  for (const v1::RankPlacement& r : p.ranks()) {
    nodes[{r.pipeline_stage(), r.dp_replica()}].insert(r.node());
  }
  return nodes;
}

TEST(PlannerTest, ExpertGroupsStayOnOneNodeWhenNamesInterleaveNodes) {
  // w00 on a, w01 on b, w02 on a, ...: name order alone would split every group across nodes.
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), Workers(8, {"node-a", "node-b"}));
  ASSERT_THAT(p, IsOk());
  ExpectWellFormed(*p, 16);
  for (const auto& [group, nodes] : NodesPerGroup(*p)) {
    EXPECT_EQ(nodes.size(), 1u) << "stage " << group.first << " dp " << group.second;
  }
}

TEST(PlannerTest, AsManyExpertGroupsAsTheNodesHoldStayOnOneNode) {
  // node-a holds 3 workers, node-b 5: at most 1 + 2 groups of 2 fit on one node; the 4th spans
  // both.
  std::vector<PlannerWorker> w = Workers(8, {"node-b"});
  for (int i : {0, 3, 6}) {
    w[i].node = "node-a";
  }
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), w);
  ASSERT_THAT(p, IsOk());
  ExpectWellFormed(*p, 16);
  int single_node = 0;
  for (const auto& [group, nodes] : NodesPerGroup(*p)) {
    single_node += nodes.size() == 1;
  }
  EXPECT_EQ(single_node, 3);
}

TEST(PlannerTest, AGroupSpanningNodesGivesEachNodeWholeRoutingGroups) {
  // 16 experts in 2 routing groups of 8; expert parallel 4 (4 experts a shard): a routing group is
  // 2 shards. Nodes a and b hold 3 workers each, so the group spans both; 3 + 1 would cut routing
  // group 1 in two, so each node takes 2 shards and a token's 1 chosen group stays on one node.
  v1::JobSpec spec = DesignSpec();
  spec.mutable_model()->set_n_group(2);
  spec.mutable_parallel()->set_pipeline_parallel(1);
  spec.mutable_parallel()->set_expert_parallel(4);
  spec.mutable_parallel()->set_max_workers(4);
  absl::StatusOr<v1::Placement> p = Plan(spec, Workers(6, {"node-a", "node-b"}));
  ASSERT_THAT(p, IsOk());
  EXPECT_EQ(p->world_size(), 4);
  EXPECT_EQ(p->expert_parallel(), 4);
  std::map<int64_t, std::set<std::string>> nodes_of_routing_group;
  for (const v1::RankPlacement& r : p->ranks()) {
    for (int64_t e = r.expert_begin(); e < r.expert_end(); ++e) {
      nodes_of_routing_group[e / 8].insert(r.node());
    }
  }
  ASSERT_EQ(nodes_of_routing_group.size(), 2u);
  for (const auto& [g, nodes] : nodes_of_routing_group) {
    EXPECT_EQ(nodes.size(), 1u) << "routing group " << g;
  }
  EXPECT_NE(*nodes_of_routing_group[0].begin(), *nodes_of_routing_group[1].begin());
}

TEST(PlannerTest, SparesAreTakenFromNodesThatCannotHoldAGroup) {
  std::vector<PlannerWorker> w = Workers(8, {"node-b", "node-c"});
  w.push_back(PlannerWorker{"id-lonely", "lonely", "node-a"});  // a node with one worker
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), w);
  ASSERT_THAT(p, IsOk());
  ExpectShape(*p, {.world = 8, .ep = 2, .dp = 2});
  for (const v1::RankPlacement& r : p->ranks()) {
    EXPECT_NE(r.worker_id(), "id-lonely");
  }
  for (const auto& [group, nodes] : NodesPerGroup(*p)) {
    EXPECT_EQ(nodes.size(), 1u);
  }
}

TEST(PlannerTest, WorkerNameAndNodeAreCopiedIntoTheirRank) {
  std::vector<PlannerWorker> w = {{"id-x", "alpha", "n1"}, {"id-y", "beta", "n2"}};
  absl::StatusOr<v1::Placement> p = Plan(DesignSpec(), w);
  ASSERT_THAT(p, IsOk());
  // Sorted by node: n1 (alpha) holds rank 0.
  EXPECT_EQ(p->ranks(0).worker_id(), "id-x");
  EXPECT_EQ(p->ranks(0).worker_name(), "alpha");
  EXPECT_EQ(p->ranks(0).node(), "n1");
  EXPECT_EQ(p->ranks(1).worker_id(), "id-y");
  EXPECT_EQ(p->ranks(1).node(), "n2");
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST(PlannerTest, FewerWorkersThanPipelineStagesIsAFailedPrecondition) {
  EXPECT_THAT(Plan(DesignSpec(), Workers(1)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("at least 2 workers"), HasSubstr("1 idle worker is"))));
}

TEST(PlannerTest, FewerWorkersThanMinWorkersIsAFailedPrecondition) {
  v1::JobSpec spec = DesignSpec();
  spec.mutable_parallel()->set_min_workers(4);
  EXPECT_THAT(Plan(spec, Workers(3)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("at least 4 workers"), HasSubstr("parallel.min_workers=4"),
                             HasSubstr("3 idle workers are"))));
}

TEST(PlannerTest, NoWorkersIsAFailedPrecondition) {
  EXPECT_THAT(Plan(DesignSpec(), {}), StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(PlannerTest, RepeatedWorkerIdIsRejected) {
  std::vector<PlannerWorker> w = Workers(3);
  w[2].worker_id = w[0].worker_id;
  EXPECT_THAT(Plan(DesignSpec(), w),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"id-00\"")));
}

TEST(PlannerTest, NegativePreviousEpochIsRejected) {
  EXPECT_THAT(Plan(DesignSpec(), Workers(2), -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("previous_epoch=-1")));
}

TEST(PlannerTest, UnvalidatedSpecIsRejected) {
  v1::JobSpec spec = DesignSpec();
  spec.mutable_parallel()->clear_pipeline_parallel();
  EXPECT_THAT(Plan(spec, Workers(2)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("parallel.pipeline_parallel=0 must be positive")));
}

// ---------------------------------------------------------------------------------------------
// Epochs and determinism.

TEST(PlannerTest, EpochIsOneMoreThanThePreviousEpoch) {
  absl::StatusOr<v1::Placement> first = Plan(DesignSpec(), Workers(4), 0);
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->epoch(), 1);
  absl::StatusOr<v1::Placement> next = Plan(DesignSpec(), Workers(3), first->epoch());
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->epoch(), 2);
}

TEST(PlannerTest, SameInputGivesTheSamePlacement) {
  const std::vector<PlannerWorker> w = Workers(7, {"a", "b", "c"});
  absl::StatusOr<v1::Placement> one = Plan(DesignSpec(), w, 4);
  absl::StatusOr<v1::Placement> two = Plan(DesignSpec(), w, 4);
  ASSERT_THAT(one, IsOk());
  ASSERT_THAT(two, IsOk());
  EXPECT_EQ(one->SerializeAsString(), two->SerializeAsString());
}

TEST(PlannerTest, WorkerOrderDoesNotChangeThePlacement) {
  std::vector<PlannerWorker> w = Workers(9, {"a", "b", "c"});
  absl::StatusOr<v1::Placement> reference = Plan(DesignSpec(), w);
  ASSERT_THAT(reference, IsOk());
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(absl::StrFormat("shuffle seed %d", seed));
    std::mt19937 rng(seed);
    std::shuffle(w.begin(), w.end(), rng);
    absl::StatusOr<v1::Placement> shuffled = Plan(DesignSpec(), w);
    ASSERT_THAT(shuffled, IsOk());
    EXPECT_EQ(shuffled->ShortDebugString(), reference->ShortDebugString());
  }
}

TEST(PlannerTest, EveryRankAndExpertIsCoveredOnceForAnyWorkerCount) {
  for (int64_t s : {1, 2, 6, 12, 16}) {
    for (int64_t ep : {1, 2, 4, 8}) {
      v1::JobSpec spec = WithSequencesPerMicroBatch(DesignSpec(), s);
      spec.mutable_parallel()->set_expert_parallel(ep);
      spec.mutable_parallel()->set_max_workers(40);
      for (int n = 2; n <= 40; ++n) {
        SCOPED_TRACE(absl::StrFormat("S=%d expert_parallel=%d workers=%d", s, ep, n));
        absl::StatusOr<v1::Placement> p = Plan(spec, Workers(n, {"a", "b", "c"}));
        ASSERT_THAT(p, IsOk());
        ExpectWellFormed(*p, 16);
        const int64_t r = p->world_size() / 2;
        EXPECT_EQ(s % r, 0) << "R=" << r << " must divide S";
        EXPECT_LE(p->world_size(), n);
        EXPECT_LE(p->expert_parallel(), ep);
        // R is the largest fitting divisor: the next divisor of S up would not fit in n workers.
        for (int64_t bigger = r + 1; bigger <= s; ++bigger) {
          if (s % bigger == 0) {
            EXPECT_GT(2 * bigger, n) << "R=" << bigger << " would fit";
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::coordinator
