// Tests of the Communicator contract on every CPU backend (in-process, and Gloo over real TCP on
// 127.0.0.1), with the ranks as threads of this process: every operation for world sizes 1-4
// against closed-form results, split groups, ordering of asynchronous operations, and failures:
// ranks that disagree (desync), a rank that hangs or dies (FaultyCommunicator), timeouts, Abort.
#include "engine/parallel/communicator.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/rank_position.h"
#include "common/status_matchers.h"
#include "engine/parallel/faulty_communicator.h"
#include "engine/parallel/in_process_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::IsOk;
using ::dsv3::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// Bound for waiting on a Work in tests: longer than any communicator timeout used here, so the
// operation's own error is what a test sees.
constexpr absl::Duration kWait = absl::Seconds(30);

// Creates the `n` ranks of a group concurrently (creation blocks until all have joined).
std::vector<std::unique_ptr<Communicator>> MakeGroup(Backend backend, int n, absl::Duration timeout,
                                                     std::shared_ptr<Store> store = nullptr) {
  if (store == nullptr) store = std::make_shared<InProcessStore>();
  std::vector<std::unique_ptr<Communicator>> comms(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions options;
      options.backend = backend;
      options.rank = r;
      options.world_size = n;
      options.store = store;
      options.timeout = timeout;
      absl::StatusOr<std::unique_ptr<Communicator>> c = CreateCommunicator(options);
      EXPECT_OK(c) << "rank " << r;
      if (c.ok()) comms[r] = std::move(*c);
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

// Runs fn(rank) on one thread per rank and joins them.
void OnRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

template <typename T>
DataType TypeOf();
template <>
DataType TypeOf<float>() {
  return DataType::kFloat32;
}
template <>
DataType TypeOf<double>() {
  return DataType::kFloat64;
}
template <>
DataType TypeOf<int32_t>() {
  return DataType::kInt32;
}
template <>
DataType TypeOf<int64_t>() {
  return DataType::kInt64;
}

// ---- Every operation, every backend, world sizes 1-4 ----------------------------------------

class CollectiveTest : public ::testing::TestWithParam<std::tuple<Backend, int>> {
 protected:
  void SetUp() override {
    comms_ = MakeGroup(backend(), n(), absl::Seconds(20));
    for (const auto& c : comms_) ASSERT_NE(c, nullptr);
  }
  Backend backend() const { return std::get<0>(GetParam()); }
  int n() const { return std::get<1>(GetParam()); }
  Communicator& comm(int r) { return *comms_[r]; }

  // Rank i contributes element j = i + j, so the sum is n(n-1)/2 + n*j.
  template <typename T>
  void CheckAllReduce(bool in_place) {
    constexpr size_t kCount = 1000;
    OnRanks(n(), [&](int r) {
      std::vector<T> send(kCount), recv(kCount, T(-1));
      for (size_t j = 0; j < kCount; ++j) send[j] = static_cast<T>(r + j);
      T* out = in_place ? send.data() : recv.data();
      ASSERT_OK(comm(r).AllReduce(send.data(), out, kCount, TypeOf<T>())->Wait(kWait));
      std::vector<T> want(kCount);
      for (size_t j = 0; j < kCount; ++j) want[j] = static_cast<T>(n() * (n() - 1) / 2 + n() * j);
      EXPECT_THAT(std::vector<T>(out, out + kCount), ElementsAreArray(want)) << "rank " << r;
    });
  }

  std::vector<std::unique_ptr<Communicator>> comms_;
};

TEST_P(CollectiveTest, AllReduceSumsEveryTypeInPlaceOrNot) {
  CheckAllReduce<float>(/*in_place=*/false);
  CheckAllReduce<double>(/*in_place=*/true);
  CheckAllReduce<int32_t>(/*in_place=*/false);
  CheckAllReduce<int64_t>(/*in_place=*/true);
}

TEST_P(CollectiveTest, ReduceScatterGivesEachRankTheSumOfItsBlock) {
  // Rank i sends block r, element j = 100*i + 10*r + j; rank r gets sum_i = 100*n(n-1)/2 +
  // n*(10*r + j).
  constexpr size_t kBlock = 7;
  OnRanks(n(), [&](int r) {
    std::vector<float> send(kBlock * n()), recv(kBlock, -1);
    for (int b = 0; b < n(); ++b) {
      for (size_t j = 0; j < kBlock; ++j) send[b * kBlock + j] = 100 * r + 10 * b + j;
    }
    ASSERT_OK(
        comm(r).ReduceScatter(send.data(), recv.data(), kBlock, DataType::kFloat32)->Wait(kWait));
    std::vector<float> want(kBlock);
    for (size_t j = 0; j < kBlock; ++j) want[j] = 100 * n() * (n() - 1) / 2 + n() * (10 * r + j);
    EXPECT_THAT(recv, ElementsAreArray(want)) << "rank " << r;
  });
}

TEST_P(CollectiveTest, AllGatherYieldsEveryRankInOrder) {
  OnRanks(n(), [&](int r) {
    const int64_t mine[2] = {r, 10 * r};
    std::vector<int64_t> all(2 * n(), -1);
    ASSERT_OK(comm(r).AllGather(mine, all.data(), 2, DataType::kInt64)->Wait(kWait));
    std::vector<int64_t> want;
    for (int i = 0; i < n(); ++i) {
      want.push_back(i);
      want.push_back(10 * i);
    }
    EXPECT_THAT(all, ElementsAreArray(want)) << "rank " << r;
  });
}

TEST_P(CollectiveTest, AllToAllDeliversPerPeerCountsOfDifferentSizes) {
  // Rank i sends rank j (i + j) elements, each 1000*i + j (rank 0 sends itself nothing).
  OnRanks(n(), [&](int r) {
    std::vector<size_t> send_counts(n()), recv_counts(n());
    std::vector<int32_t> send;
    for (int j = 0; j < n(); ++j) {
      send_counts[j] = r + j;
      recv_counts[j] = j + r;
      for (int k = 0; k < r + j; ++k) send.push_back(1000 * r + j);
    }
    std::vector<int32_t> recv(std::accumulate(recv_counts.begin(), recv_counts.end(), size_t{0}),
                              -1);
    ASSERT_OK(comm(r)
                  .AllToAll(send.data(), send_counts, recv.data(), recv_counts, DataType::kInt32)
                  ->Wait(kWait));
    std::vector<int32_t> want;
    for (int i = 0; i < n(); ++i) {
      for (int k = 0; k < i + r; ++k) want.push_back(1000 * i + r);
    }
    EXPECT_THAT(recv, ElementsAreArray(want)) << "rank " << r;
  });
}

TEST_P(CollectiveTest, ABatchOfSendsAndReceivesMovesARingBothWays) {
  // Like a pipeline step: each rank sends forward and backward and receives from both sides, with
  // two messages of different types to the next rank (matched in order).
  if (n() == 1) {
    ASSERT_OK(comm(0).SendRecv({}, {})->Wait(kWait));
    return;
  }
  OnRanks(n(), [&](int r) {
    const int next = (r + 1) % n(), prev = (r + n() - 1) % n();
    std::vector<float> fwd1(5, 1.0f * r), back(3, 100.0f + r);
    std::vector<int64_t> fwd2(2, 7 * r);
    std::vector<float> got_fwd1(5, -1), got_back(3, -1);
    std::vector<int64_t> got_fwd2(2, -1);
    std::vector<PeerSend> sends = {{next, fwd1.data(), 5, DataType::kFloat32},
                                   {next, fwd2.data(), 2, DataType::kInt64},
                                   {prev, back.data(), 3, DataType::kFloat32}};
    std::vector<PeerRecv> recvs = {{prev, got_fwd1.data(), 5, DataType::kFloat32},
                                   {prev, got_fwd2.data(), 2, DataType::kInt64},
                                   {next, got_back.data(), 3, DataType::kFloat32}};
    ASSERT_OK(comm(r).SendRecv(sends, recvs)->Wait(kWait));
    EXPECT_THAT(got_fwd1, ::testing::Each(1.0f * prev)) << "rank " << r;
    EXPECT_THAT(got_fwd2, ::testing::Each(7 * prev)) << "rank " << r;
    EXPECT_THAT(got_back, ::testing::Each(100.0f + next)) << "rank " << r;
  });
}

TEST_P(CollectiveTest, BarrierWaitsForTheLastRank) {
  constexpr absl::Duration kLate = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  OnRanks(n(), [&](int r) {
    if (r == n() - 1) absl::SleepFor(kLate);
    ASSERT_OK(comm(r).Barrier()->Wait(kWait));
    if (n() > 1) {
      EXPECT_GE(absl::Now() - start, kLate) << "rank " << r;
    }
  });
}

TEST_P(CollectiveTest, ManyAsynchronousOperationsCompleteInIssueOrder) {
  constexpr int kOps = 20;
  OnRanks(n(), [&](int r) {
    std::vector<std::vector<int64_t>> bufs(kOps);
    std::vector<std::unique_ptr<Work>> works;
    for (int k = 0; k < kOps; ++k) {
      bufs[k].assign(4, k * 10 + r);
      if (k % 2 == 0) {
        works.push_back(comm(r).AllReduce(bufs[k].data(), bufs[k].data(), 4, DataType::kInt64));
      } else {
        works.push_back(comm(r).Barrier());
      }
    }
    for (int k = kOps - 1; k >= 0; --k) ASSERT_OK(works[k]->Wait(kWait)) << "op " << k;
    for (int k = 0; k < kOps; k += 2) {
      EXPECT_THAT(bufs[k], ::testing::Each(k * 10 * n() + n() * (n() - 1) / 2)) << "op " << k;
    }
  });
}

TEST_P(CollectiveTest, TheProcessPositionNamesTheLastCollectiveEntered) {
  // What the worker's heartbeats and hang reports quote (common/rank_position.h). The ranks of
  // this test share one process and issue the same collectives, so they store the same values.
  const RankPosition& position = GlobalRankPosition();
  int64_t first = -1;
  OnRanks(n(), [&](int r) {
    int64_t v = r;
    std::unique_ptr<Work> w = comm(r).AllReduce(&v, &v, 1, DataType::kInt64);
    ASSERT_OK(w->Wait(kWait));
    if (r == 0) first = position.collective_seq.load();
  });
  EXPECT_GE(first, 0);
  EXPECT_EQ(CollectiveGroupName(position.collective_group.load()), comm(0).name());
  OnRanks(n(), [&](int r) {
    ASSERT_OK(comm(r).Barrier()->Wait(kWait));
    ASSERT_OK(comm(r).Barrier()->Wait(kWait));
  });
  EXPECT_EQ(position.collective_seq.load(), first + 2) << "two more collectives";
  EXPECT_EQ(CollectiveGroupId(comm(0).name()), position.collective_group.load());
}

TEST_P(CollectiveTest, SplitMakesGroupsOrderedByKey) {
  // Color = rank parity; key = -rank, so each group lists its ranks in reverse order.
  std::vector<std::unique_ptr<Communicator>> subs(n());
  OnRanks(n(), [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> sub = comm(r).Split(r % 2, -r);
    ASSERT_OK(sub);
    subs[r] = std::move(*sub);
  });
  OnRanks(n(), [&](int r) {
    ASSERT_NE(subs[r], nullptr);
    std::vector<int> members;
    for (int i = n() - 1; i >= 0; --i) {
      if (i % 2 == r % 2) members.push_back(i);
    }
    EXPECT_EQ(subs[r]->size(), static_cast<int>(members.size()));
    EXPECT_EQ(subs[r]->rank(), std::find(members.begin(), members.end(), r) - members.begin());
    int64_t v = r;
    ASSERT_OK(subs[r]->AllReduce(&v, &v, 1, DataType::kInt64)->Wait(kWait));
    EXPECT_EQ(v, std::accumulate(members.begin(), members.end(), int64_t{0})) << "rank " << r;
  });
  // The parent still works after the split.
  OnRanks(n(), [&](int r) { ASSERT_OK(comm(r).Barrier()->Wait(kWait)); });
}

TEST_P(CollectiveTest, NewGroupLeavesOutTheRanksNotListed) {
  const std::vector<int> listed = n() == 1 ? std::vector<int>{0} : std::vector<int>{n() - 1, 0};
  std::vector<std::unique_ptr<Communicator>> subs(n());
  OnRanks(n(), [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> sub = comm(r).NewGroup(listed);
    ASSERT_OK(sub);
    subs[r] = std::move(*sub);
  });
  OnRanks(n(), [&](int r) {
    const auto it = std::find(listed.begin(), listed.end(), r);
    if (it == listed.end()) {
      EXPECT_EQ(subs[r], nullptr);
      return;
    }
    ASSERT_NE(subs[r], nullptr);
    EXPECT_EQ(subs[r]->rank(), it - listed.begin());
    const int32_t mine = r;
    std::vector<int32_t> all(listed.size(), -1);
    ASSERT_OK(subs[r]->AllGather(&mine, all.data(), 1, DataType::kInt32)->Wait(kWait));
    EXPECT_THAT(all, ElementsAreArray(listed));
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, CollectiveTest,
                         ::testing::Combine(::testing::Values(Backend::kInProcess, Backend::kGloo),
                                            ::testing::Values(1, 2, 3, 4)),
                         [](const ::testing::TestParamInfo<std::tuple<Backend, int>>& info) {
                           return absl::StrCat(BackendName(std::get<0>(info.param)), "_world",
                                               std::get<1>(info.param));
                         });

// ---- Failures -------------------------------------------------------------------------------

class FailureTest : public ::testing::TestWithParam<Backend> {
 protected:
  std::vector<std::unique_ptr<Communicator>> Group(int n, absl::Duration timeout) {
    std::vector<std::unique_ptr<Communicator>> comms = MakeGroup(GetParam(), n, timeout);
    for (const auto& c : comms) EXPECT_NE(c, nullptr);
    return comms;
  }
};

TEST_P(FailureTest, RanksCallingDifferentOpsFailAtOnceNamingEachOther) {
  auto comms = Group(2, absl::Seconds(20));
  std::vector<absl::Status> results(2);
  const absl::Time start = absl::Now();
  OnRanks(2, [&](int r) {
    std::vector<float> a(10, 1), b(20, 0);
    results[r] = r == 0
                     ? comms[r]->AllReduce(a.data(), a.data(), 10, DataType::kFloat32)->Wait(kWait)
                     : comms[r]->AllGather(a.data(), b.data(), 10, DataType::kFloat32)->Wait(kWait);
  });
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));  // detected, not timed out
  EXPECT_THAT(results[0],
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("rank 0"), HasSubstr("all_reduce #0 (float32 x 10)"),
                             HasSubstr("rank 1, which issued all_gather #0 (float32 x 10)"))));
  EXPECT_THAT(results[1],
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("all_gather #0"), HasSubstr("rank 0, which issued "
                                                                   "all_reduce #0"))));
}

TEST_P(FailureTest, RanksDisagreeingOnTheSizeFailNamingBothSizes) {
  auto comms = Group(3, absl::Seconds(20));
  std::vector<absl::Status> results(3);
  OnRanks(3, [&](int r) {
    const size_t count = r == 2 ? 12 : 10;
    std::vector<double> a(count, 1);
    results[r] = comms[r]->AllReduce(a.data(), a.data(), count, DataType::kFloat64)->Wait(kWait);
  });
  EXPECT_THAT(results[0], StatusIs(absl::StatusCode::kFailedPrecondition,
                                   AllOf(HasSubstr("float64 x 10"), HasSubstr("rank 2"),
                                         HasSubstr("float64 x 12"))));
  EXPECT_THAT(results[2],
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not match rank 0")));
}

TEST_P(FailureTest, AnOpSkippedByOneRankIsReportedAtTheNextOp) {
  auto comms = Group(2, absl::Seconds(20));
  std::vector<absl::Status> results(2);
  OnRanks(2, [&](int r) {
    float x = 1;
    // Rank 0 issues barrier #0 then all_reduce #1; rank 1 skips the barrier.
    if (r == 0) results[r] = comms[r]->Barrier()->Wait(kWait);
    absl::Status s = comms[r]->AllReduce(&x, &x, 1, DataType::kFloat32)->Wait(kWait);
    if (r == 1) results[r] = s;
  });
  EXPECT_THAT(results[0],
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("barrier #0"), HasSubstr("which issued all_reduce #0"))));
  EXPECT_THAT(results[1],
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("all_reduce #0"), HasSubstr("which issued barrier #0"))));
}

TEST_P(FailureTest, AllToAllCountsThatDoNotMatchBetweenAPairFailOnBothSides) {
  auto comms = Group(2, absl::Seconds(20));
  std::vector<absl::Status> results(2);
  const absl::Time start = absl::Now();
  OnRanks(2, [&](int r) {
    std::vector<int32_t> send(10, r), recv(10, -1);
    // Rank 0 sends rank 1 three elements; rank 1 expects four.
    const std::vector<size_t> send_counts =
        r == 0 ? std::vector<size_t>{1, 3} : std::vector<size_t>{3, 1};
    const std::vector<size_t> recv_counts =
        r == 0 ? std::vector<size_t>{1, 3} : std::vector<size_t>{4, 1};
    results[r] =
        comms[r]
            ->AllToAll(send.data(), send_counts, recv.data(), recv_counts, DataType::kInt32)
            ->Wait(kWait);
  });
  const absl::Duration took = absl::Now() - start;
  EXPECT_LT(took, absl::Seconds(5));  // both sides see it at once
  EXPECT_THAT(results[1], StatusIs(absl::StatusCode::kFailedPrecondition,
                                   AllOf(HasSubstr("all_to_all #0 (int32: 3 to rank 0, 4 from it)"),
                                         HasSubstr("rank 0, which issued all_to_all #0 (int32: "
                                                   "3 to rank 1, 3 from it)"))));
  EXPECT_THAT(results[0],
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not match rank 1")));
}

TEST_P(FailureTest, ABatchWhoseMessagesDoNotMatchFailsNamingThePeer) {
  auto comms = Group(2, absl::Seconds(20));
  std::vector<absl::Status> results(2);
  OnRanks(2, [&](int r) {
    std::vector<float> a(8, 1), b(8, 0);
    if (r == 0) {
      results[r] = comms[r]
                       ->SendRecv({{1, a.data(), 4, DataType::kFloat32},
                                   {1, a.data() + 4, 4, DataType::kFloat32}},
                                  {})
                       ->Wait(kWait);
    } else {
      results[r] = comms[r]->SendRecv({}, {{0, b.data(), 8, DataType::kFloat32}})->Wait(kWait);
    }
  });
  EXPECT_THAT(results[1],
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("rank 1: send_recv #0 (nothing to rank 0, 1 message/8 "
                                       "elements from it)"),
                             HasSubstr("rank 0, which issued send_recv #0 (2 messages/8 elements "
                                       "to rank 1, nothing from it)"))));
  EXPECT_THAT(results[0],
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not match rank 1")));
}

TEST_P(FailureTest, AHungRankMakesTheOthersTimeOutNamingIt) {
  constexpr absl::Duration kTimeout = absl::Seconds(1);
  auto comms = Group(3, kTimeout);
  auto faulty = std::make_unique<FaultyCommunicator>(std::move(comms[2]),
                                                     FaultPlan{FaultPlan::Kind::kHang, 1});
  Communicator* ranks[3] = {comms[0].get(), comms[1].get(), faulty.get()};
  std::vector<absl::Status> results(3);
  std::vector<absl::Duration> took(3);
  OnRanks(3, [&](int r) {
    float x = 1;
    ASSERT_OK(ranks[r]->AllReduce(&x, &x, 1, DataType::kFloat32)->Wait(kWait));  // op 0 works
    const absl::Time start = absl::Now();
    // Rank 2 hangs here: its Work never completes, so wait for it only a little past the timeout.
    results[r] =
        ranks[r]->AllReduce(&x, &x, 1, DataType::kFloat32)->Wait(r == 2 ? 3 * kTimeout : kWait);
    took[r] = absl::Now() - start;
  });
  for (int r : {0, 1}) {
    EXPECT_THAT(results[r],
                StatusIs(absl::StatusCode::kDeadlineExceeded,
                         AllOf(HasSubstr("all_reduce #1"), HasSubstr("waiting for rank 2"),
                               HasSubstr("post-mortem: rank 2 did not report"))))
        << "rank " << r;
    EXPECT_GE(took[r], kTimeout - absl::Milliseconds(50)) << "rank " << r;
    // The timeout, then at most one timeout more for the post-mortem.
    EXPECT_LT(took[r], 2 * kTimeout + absl::Seconds(1)) << "rank " << r;
  }
  EXPECT_THAT(results[2], StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_P(FailureTest, ARankThatDiesMidRunMakesTheOthersFailPromptlyNamingIt) {
  constexpr absl::Duration kTimeout = absl::Seconds(20);
  auto comms = Group(3, kTimeout);
  auto faulty = std::make_unique<FaultyCommunicator>(std::move(comms[2]),
                                                     FaultPlan{FaultPlan::Kind::kDie, 2});
  Communicator* ranks[3] = {comms[0].get(), comms[1].get(), faulty.get()};
  std::vector<absl::Status> results(3);
  const absl::Time start = absl::Now();
  OnRanks(3, [&](int r) {
    std::vector<float> x(100, 1);
    ASSERT_OK(ranks[r]->AllReduce(x.data(), x.data(), 100, DataType::kFloat32)->Wait(kWait));
    ASSERT_OK(ranks[r]->Barrier()->Wait(kWait));
    results[r] = ranks[r]->AllReduce(x.data(), x.data(), 100, DataType::kFloat32)->Wait(kWait);
  });
  EXPECT_LT(absl::Now() - start, kTimeout / 2);  // noticed from the closed connection
  for (int r : {0, 1}) {
    EXPECT_THAT(results[r], StatusIs(absl::StatusCode::kUnavailable,
                                     AllOf(HasSubstr("all_reduce #2"), HasSubstr("rank 2"),
                                           HasSubstr("post-mortem: rank 2 did not report"))))
        << "rank " << r;
  }
  EXPECT_THAT(results[2], StatusIs(absl::StatusCode::kUnavailable, HasSubstr("dead")));
}

TEST_P(FailureTest, AfterAFailureEveryLaterOpFailsAtOnceQuotingTheFirstError) {
  auto comms = Group(2, absl::Seconds(20));
  OnRanks(2, [&](int r) {
    float x = 1;
    std::vector<float> y(2);
    const absl::Status first =
        r == 0 ? comms[r]->AllReduce(&x, &x, 1, DataType::kFloat32)->Wait(kWait)
               : comms[r]->AllGather(&x, y.data(), 1, DataType::kFloat32)->Wait(kWait);
    EXPECT_THAT(first, StatusIs(absl::StatusCode::kFailedPrecondition));
    const absl::Time start = absl::Now();
    EXPECT_THAT(comms[r]->Barrier()->Wait(kWait),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         AllOf(HasSubstr("barrier #1 not run"), HasSubstr("broken since"),
                               HasSubstr(first.message()))));
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  });
}

TEST_P(FailureTest, InvalidArgumentsAreRejectedWithoutUsingASequenceNumber) {
  auto comms = Group(2, absl::Seconds(20));
  OnRanks(2, [&](int r) {
    float x = 1;
    EXPECT_THAT(comms[r]->AllReduce(nullptr, &x, 1, DataType::kFloat32)->Wait(kWait),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
    EXPECT_THAT(comms[r]->AllReduce(&x, &x, 1, DataType::kUint8)->Wait(kWait),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uint8")));
    const size_t counts[1] = {1};
    EXPECT_THAT(comms[r]->AllToAll(&x, counts, &x, counts, DataType::kFloat32)->Wait(kWait),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 ranks")));
    EXPECT_THAT(comms[r]->SendRecv({{r, &x, 1, DataType::kFloat32}}, {})->Wait(kWait),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not another rank")));
    EXPECT_THAT(comms[r]->NewGroup({0, 0}), StatusIs(absl::StatusCode::kInvalidArgument));
    // Nothing above was issued: the group is still in step at sequence number 0.
    float y = static_cast<float>(r);
    ASSERT_OK(comms[r]->AllReduce(&y, &y, 1, DataType::kFloat32)->Wait(kWait));
    EXPECT_EQ(y, 1.0f);
  });
}

TEST_P(FailureTest, WaitReturnsDeadlineExceededWhileAPeerIsLateAndTheResultOnceItCame) {
  auto comms = Group(2, absl::Seconds(20));
  int64_t x0 = 5, x1 = 7;
  std::unique_ptr<Work> w0 = comms[0]->AllReduce(&x0, &x0, 1, DataType::kInt64);
  EXPECT_THAT(w0->Wait(absl::Milliseconds(50)), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_FALSE(w0->IsCompleted());
  ASSERT_OK(comms[1]->AllReduce(&x1, &x1, 1, DataType::kInt64)->Wait(kWait));
  ASSERT_OK(w0->Wait(kWait));
  EXPECT_TRUE(w0->IsCompleted());
  EXPECT_EQ(x0, 12);
}

TEST_P(FailureTest, AbortEndsAnOperationInFlightAndTellsThePeers) {
  constexpr absl::Duration kTimeout = absl::Seconds(20);
  auto comms = Group(2, kTimeout);
  float x = 1;
  const absl::Time start = absl::Now();
  // Rank 1 never issues this op; rank 0 aborts while waiting for it.
  std::unique_ptr<Work> w = comms[0]->AllReduce(&x, &x, 1, DataType::kFloat32);
  absl::SleepFor(absl::Milliseconds(100));
  comms[0]->Abort(absl::CancelledError("re-planning"));
  EXPECT_THAT(w->Wait(kWait), ::testing::Not(IsOk()));
  EXPECT_THAT(comms[0]->Barrier()->Wait(kWait),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-planning")));
  // The peer's next op fails because rank 0's connection is closed.
  float y = 1;
  EXPECT_THAT(comms[1]->AllReduce(&y, &y, 1, DataType::kFloat32)->Wait(kWait),
              ::testing::Not(IsOk()));
  EXPECT_LT(absl::Now() - start, kTimeout);
}

TEST_P(FailureTest, ARankThatNeverJoinsMakesCreationFailNamingIt) {
  auto store = std::make_shared<InProcessStore>();
  std::vector<absl::Status> results(2);
  const absl::Time start = absl::Now();
  OnRanks(2, [&](int r) {
    CommunicatorOptions options;
    options.backend = GetParam();
    options.rank = r;
    options.world_size = 3;
    options.store = store;
    options.timeout = absl::Milliseconds(300);
    results[r] = CreateCommunicator(options).status();
  });
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  for (int r : {0, 1}) {
    EXPECT_THAT(results[r], StatusIs(absl::StatusCode::kDeadlineExceeded,
                                     HasSubstr("rank 2 of 3 did not join")))
        << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, FailureTest,
                         ::testing::Values(Backend::kInProcess, Backend::kGloo),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return std::string(BackendName(info.param));
                         });

// ---- Options --------------------------------------------------------------------------------

TEST(CreateCommunicatorTest, BadOptionsAreRejected) {
  CommunicatorOptions options;
  options.store = std::make_shared<InProcessStore>();
  options.world_size = 2;
  options.rank = 2;
  EXPECT_THAT(CreateCommunicator(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank=2")));
  options.rank = 0;
  options.timeout = absl::ZeroDuration();
  EXPECT_THAT(CreateCommunicator(options), StatusIs(absl::StatusCode::kInvalidArgument));
  options.timeout = absl::Seconds(1);
  options.store = nullptr;
  EXPECT_THAT(CreateCommunicator(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("store")));
}

TEST(CreateCommunicatorTest, AGlooRankGivenAnUnknownInterfaceFailsClearly) {
  CommunicatorOptions options;
  options.backend = Backend::kGloo;
  options.store = std::make_shared<InProcessStore>();
  options.interface = "no-such-if0";
  options.timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Communicator>> c = CreateCommunicator(options);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("no-such-if0"));
}

}  // namespace
}  // namespace dsv3::parallel
