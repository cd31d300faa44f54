// Tests of data_loader: SplitMix64 against its published test vector, the permutation against an
// independent Python implementation of the documented rule, the loader against a simple model of
// the stream (LevelDB's ModelDB pattern), layout independence, resumption, coverage, validation
// batches and argument errors.
#include "engine/train/data_loader.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status_matchers.h"
#include "engine/train/token_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::train {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(SplitMix64Test, MatchesThePublishedTestVector) {
  // The reference outputs of splitmix64.c for seed 1234567.
  SplitMix64 rng(1234567);
  EXPECT_EQ(rng.Next(), 6457827717110365317ULL);
  EXPECT_EQ(rng.Next(), 3203168211198807973ULL);
  EXPECT_EQ(rng.Next(), 9817491932198370423ULL);
  EXPECT_EQ(rng.Next(), 4593380528125082431ULL);
  EXPECT_EQ(rng.Next(), 16408922859458223821ULL);
}

TEST(SplitMix64Test, UniformStaysBelowItsBound) {
  SplitMix64 rng(7);
  for (uint64_t bound : {1ULL, 2ULL, 3ULL, 10ULL, 1ULL << 63, (1ULL << 63) + 1}) {
    for (int i = 0; i < 100; ++i) ASSERT_LT(rng.Uniform(bound), bound) << "bound " << bound;
  }
}

TEST(EpochPermutationTest, MatchesAnIndependentPythonImplementation) {
  // From the rule in data_loader.h, implemented in Python (docs/data.md has the script):
  // perm(1, 0, 10), perm(1, 1, 10), perm(2, 0, 10); EpochSeed(1, 0) and EpochSeed(0, 0).
  EXPECT_THAT(EpochPermutation(1, 0, 10), ElementsAre(2, 8, 1, 6, 4, 3, 0, 7, 9, 5));
  EXPECT_THAT(EpochPermutation(1, 1, 10), ElementsAre(3, 6, 5, 7, 9, 1, 4, 8, 0, 2));
  EXPECT_THAT(EpochPermutation(2, 0, 10), ElementsAre(3, 4, 6, 2, 9, 8, 1, 0, 5, 7));
  EXPECT_EQ(EpochSeed(1, 0), 9506087726907147786ULL);
  EXPECT_EQ(EpochSeed(0, 0), 6238072747940578789ULL);
}

TEST(EpochPermutationTest, IsAPermutationForEverySize) {
  for (int64_t n : {0, 1, 2, 3, 17, 1000}) {
    std::vector<int64_t> perm = EpochPermutation(42, 3, n);
    std::sort(perm.begin(), perm.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(perm[i], i) << "n=" << n;
  }
}

TEST(SliceRowsTest, RanksTakeContiguousBlocksAndMicroBatchesSplitThem) {
  // B = 16, D = 2, M = 4: rank 1's micro-batch 2 is rows 8 + 2*2 = 12, 13.
  absl::StatusOr<RowRange> range = SliceRows(16, 2, 4, 1, 2);
  ASSERT_OK(range);
  EXPECT_EQ(range->begin, 12);
  EXPECT_EQ(range->count, 2);
}

TEST(SliceRowsTest, RejectsLayoutsThatDoNotDivideTheBatch) {
  EXPECT_THAT(SliceRows(12, 0, 5, 0, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dp_size=1 x num_micro_batches=5 = 5 does not divide the batch "
                                 "of 12 sequences")));
  EXPECT_THAT(SliceRows(12, 3, 3, 0, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("micro_batch=3")));
  EXPECT_THAT(SliceRows(12, 0, 1, 2, 2).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dp_rank=2")));
  EXPECT_THAT(SliceRows(12, 0, 0, 0, 1).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SliceRows(12, 0, 1, -1, 1).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Step `step`'s windows by value (a range-for over `*loader.GlobalBatchWindows(s)` would dangle).
std::vector<int64_t> Windows(const DataLoader& loader, int64_t step) {
  absl::StatusOr<std::vector<int64_t>> windows = loader.GlobalBatchWindows(step);
  EXPECT_OK(windows);
  return windows.ok() ? *windows : std::vector<int64_t>{};
}

class DataLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/data_loader_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A shard of `n` tokens whose token i is (i * 31 + 7) mod 65536, and those tokens.
  std::shared_ptr<const TokenShard> MakeShard(int64_t n, std::vector<uint32_t>* tokens = nullptr) {
    std::vector<uint32_t> t(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) t[i] = static_cast<uint32_t>((i * 31 + 7) % 65536);
    const std::string path = dir_ + "/shard" + std::to_string(n) + ".bin";
    EXPECT_OK(WriteTokenShard(path, t, 1));
    absl::StatusOr<std::unique_ptr<TokenShard>> shard = TokenShard::Open(path);
    EXPECT_OK(shard);
    if (tokens != nullptr) *tokens = std::move(t);
    return std::shared_ptr<const TokenShard>(std::move(*shard));
  }

  std::unique_ptr<DataLoader> MakeLoader(std::shared_ptr<const TokenShard> shard, int64_t seq_len,
                                         int64_t batch, uint64_t seed) {
    absl::StatusOr<std::unique_ptr<DataLoader>> loader = DataLoader::Create(
        std::move(shard), {.seq_len = seq_len, .batch_size = batch, .seed = seed});
    EXPECT_OK(loader);
    return std::move(*loader);
  }

  std::string dir_;
};

// The model: the stream is epoch 0's permutation, then epoch 1's, ...; step s is stream positions
// [s*B, s*B+B); row = tokens [w*T, w*T+T] of the token vector itself.
struct ModelStream {
  std::vector<int64_t> positions;
  ModelStream(uint64_t seed, int64_t windows, int64_t length) {
    for (int64_t e = 0; static_cast<int64_t>(positions.size()) < length; ++e) {
      for (int64_t w : EpochPermutation(seed, e, windows)) positions.push_back(w);
    }
  }
};

TEST_F(DataLoaderTest, GlobalBatchesMatchASimpleModelOfTheStreamAcrossEpochs) {
  const uint64_t seed = 1234;
  std::vector<uint32_t> tokens;
  // 1001 tokens, T = 8: W = 125 windows; B = 6 does not divide 125, so batches straddle epochs.
  auto shard = MakeShard(1001, &tokens);
  auto loader = MakeLoader(shard, 8, 6, seed);
  ASSERT_EQ(loader->num_windows(), 125);
  const int64_t steps = 130;  // ~6 epochs
  ModelStream model(seed, 125, steps * 6);
  for (int64_t s = 0; s < steps; ++s) {
    absl::StatusOr<TokenBatch> batch = loader->GlobalBatch(s);
    ASSERT_OK(batch);
    ASSERT_EQ(batch->rows, 6);
    ASSERT_EQ(batch->row_length, 9);
    for (int64_t r = 0; r < 6; ++r) {
      const int64_t w = model.positions[s * 6 + r];
      ASSERT_EQ(batch->windows[r], w) << "step " << s << " row " << r;
      for (int64_t j = 0; j < 9; ++j) {
        ASSERT_EQ(batch->tokens[r * 9 + j], static_cast<int32_t>(tokens[w * 8 + j]))
            << "step " << s << " row " << r << " column " << j;
      }
    }
  }
}

TEST_F(DataLoaderTest, TheWorkedExampleOfDocsDataMdHolds) {
  // 41 tokens, T = 4: W = 10 windows; seed 1, B = 4 (docs/data.md, "The data order").
  auto loader = MakeLoader(MakeShard(41), 4, 4, 1);
  EXPECT_THAT(Windows(*loader, 0), ElementsAre(2, 8, 1, 6));
  EXPECT_THAT(Windows(*loader, 1), ElementsAre(4, 3, 0, 7));
  EXPECT_THAT(Windows(*loader, 2), ElementsAre(9, 5, 3, 6));  // straddles epochs 0 and 1
  EXPECT_THAT(Windows(*loader, 3), ElementsAre(5, 7, 9, 1));
  EXPECT_EQ(loader->EpochOfStep(2), 0);
  EXPECT_EQ(loader->EpochOfStep(3), 1);
  EXPECT_THAT(loader->Slice(0, 1, 2, 1, 2)->windows, ElementsAre(6));  // rank 1, micro-batch 1
  EXPECT_THAT(loader->Slice(0, 1, 2, 0, 1)->windows, ElementsAre(1, 6));
}

TEST_F(DataLoaderTest, TheSameSeedAndStepGiveTheSameBatchInAnyCallOrder) {
  auto shard = MakeShard(5000);
  auto a = MakeLoader(shard, 16, 8, 1);
  auto b = MakeLoader(shard, 16, 8, 1);
  std::vector<TokenBatch> forward;
  for (int64_t s = 0; s < 200; ++s) forward.push_back(*a->GlobalBatch(s));
  for (int64_t s = 199; s >= 0; --s) {
    absl::StatusOr<TokenBatch> batch = b->GlobalBatch(s);
    ASSERT_OK(batch);
    ASSERT_EQ(batch->tokens, forward[s].tokens) << "step " << s;
    ASSERT_EQ(batch->windows, forward[s].windows) << "step " << s;
  }
}

TEST_F(DataLoaderTest, ADifferentSeedGivesADifferentOrder) {
  auto shard = MakeShard(5000);
  auto a = MakeLoader(shard, 16, 8, 1);
  auto b = MakeLoader(shard, 16, 8, 2);
  EXPECT_NE(Windows(*a, 0), Windows(*b, 0));
}

TEST_F(DataLoaderTest, EveryLayoutPartitionsTheSameGlobalBatchInOrder) {
  auto shard = MakeShard(20000);
  auto loader = MakeLoader(shard, 32, 48, 9);
  const std::vector<std::pair<int, int>> layouts = {
      // (micro-batches, data-parallel ranks)
      {1, 1}, {48, 1}, {1, 48}, {2, 3}, {3, 2}, {4, 4}, {8, 2}, {6, 8}, {12, 1}};
  for (int64_t step : {0, 1, 7, 40}) {
    const TokenBatch global = *loader->GlobalBatch(step);
    for (auto [micro, dp] : layouts) {
      std::vector<int32_t> tokens;
      std::vector<int64_t> windows;
      for (int r = 0; r < dp; ++r) {
        for (int m = 0; m < micro; ++m) {
          absl::StatusOr<TokenBatch> slice = loader->Slice(step, m, micro, r, dp);
          ASSERT_OK(slice);
          ASSERT_EQ(slice->rows, 48 / (micro * dp));
          tokens.insert(tokens.end(), slice->tokens.begin(), slice->tokens.end());
          windows.insert(windows.end(), slice->windows.begin(), slice->windows.end());
        }
      }
      EXPECT_EQ(tokens, global.tokens) << "step " << step << " M=" << micro << " D=" << dp;
      EXPECT_EQ(windows, global.windows) << "step " << step << " M=" << micro << " D=" << dp;
    }
  }
}

TEST_F(DataLoaderTest, ResumingAtAStepGivesTheSameBatchesAsRunningThrough) {
  auto shard = MakeShard(3000);
  auto through = MakeLoader(shard, 10, 7, 5);
  std::vector<TokenBatch> batches;
  for (int64_t s = 0; s < 120; ++s) batches.push_back(*through->GlobalBatch(s));
  for (int64_t k : {1, 42, 43, 100}) {
    auto resumed = MakeLoader(shard, 10, 7, 5);  // a fresh process: only (seed, step) carried over
    for (int64_t s = k; s < 120; ++s) {
      absl::StatusOr<TokenBatch> batch = resumed->Slice(s, 0, 1, 0, 1);
      ASSERT_OK(batch);
      ASSERT_EQ(batch->tokens, batches[s].tokens) << "resumed at " << k << ", step " << s;
    }
  }
}

TEST_F(DataLoaderTest, NoWindowRepeatsWithinAnEpochAndEveryWindowIsUsed) {
  // T = 4, 401 tokens: W = 100; B = 10 divides W, so steps 10e..10e+9 are exactly epoch e.
  auto shard = MakeShard(401);
  auto loader = MakeLoader(shard, 4, 10, 77);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> seen;
    for (int64_t s = epoch * 10; s < epoch * 10 + 10; ++s) {
      EXPECT_EQ(loader->EpochOfStep(s), epoch);
      for (int64_t w : Windows(*loader, s)) {
        EXPECT_TRUE(seen.insert(w).second) << "window " << w << " repeated in epoch " << epoch;
      }
    }
    EXPECT_EQ(seen.size(), 100u);
    EXPECT_EQ(*seen.begin(), 0);
    EXPECT_EQ(*seen.rbegin(), 99);
  }
  // Epochs are reshuffled, not repeated.
  EXPECT_NE(Windows(*loader, 0), Windows(*loader, 10));
}

TEST_F(DataLoaderTest, RowsAreConsecutiveTokensWithTheTargetsShiftedByOne) {
  std::vector<uint32_t> tokens;
  auto shard = MakeShard(100, &tokens);
  auto loader = MakeLoader(shard, 9, 11, 3);  // W = 99 / 9 = 11 windows: one batch is one epoch
  const TokenBatch batch = *loader->GlobalBatch(0);
  for (int64_t r = 0; r < batch.rows; ++r) {
    const int64_t start = batch.windows[r] * 9;
    for (int64_t j = 0; j < 10; ++j) {
      ASSERT_EQ(batch.tokens[r * 10 + j], static_cast<int32_t>(tokens[start + j]));
    }
  }
  // Window w's last token (its last target) is window w+1's first input.
  std::vector<int64_t> sorted = batch.windows;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_THAT(sorted, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10));
}

TEST_F(DataLoaderTest, ConcurrentReadersSeeTheSameBatches) {
  auto shard = MakeShard(4000);
  auto loader = MakeLoader(shard, 16, 4, 11);  // W = 249: epochs change every ~62 steps
  std::vector<std::vector<int64_t>> expected;
  {
    auto reference = MakeLoader(shard, 16, 4, 11);
    for (int64_t s = 0; s < 400; ++s) expected.push_back(Windows(*reference, s));
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t i = 0; i < 400; ++i) {
        const int64_t s = (i * 37 + t * 101) % 400;  // every thread jumps between epochs
        if (Windows(*loader, s) != expected[s]) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST_F(DataLoaderTest, CreateRejectsBadOptionsAndTooSmallShards) {
  auto shard = MakeShard(100);
  EXPECT_THAT(DataLoader::Create(shard, {.seq_len = 0, .batch_size = 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("seq_len=0")));
  EXPECT_THAT(DataLoader::Create(shard, {.seq_len = 8, .batch_size = 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch_size=0")));
  EXPECT_THAT(DataLoader::Create(shard, {.seq_len = 100, .batch_size = 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds 100 tokens, fewer than seq_len+1 = 101")));
  EXPECT_OK(DataLoader::Create(shard, {.seq_len = 99, .batch_size = 1}));
  EXPECT_THAT(DataLoader::Create(nullptr, {.seq_len = 8, .batch_size = 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(DataLoaderTest, StepsAndSlicesAreValidated) {
  auto loader = MakeLoader(MakeShard(1000), 8, 12, 1);
  EXPECT_THAT(loader->GlobalBatch(-1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("step=-1")));
  EXPECT_THAT(loader->GlobalBatch(int64_t{1} << 62).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("overflows")));
  EXPECT_THAT(loader->Slice(0, 0, 5, 0, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not divide")));
}

TEST_F(DataLoaderTest, ValidationBatchesAreFixedSequentialWindows) {
  std::vector<uint32_t> tokens;
  auto shard = MakeShard(1000, &tokens);  // T = 10: 99 windows; B = 4: 24 whole batches
  absl::StatusOr<std::unique_ptr<ValidationIterator>> val =
      ValidationIterator::Create(shard, 10, 4);
  ASSERT_OK(val);
  ASSERT_EQ((*val)->num_batches(), 24);
  int64_t count = 0;
  while (std::optional<TokenBatch> batch = (*val)->Next()) {
    EXPECT_THAT(batch->windows,
                ElementsAre(count * 4, count * 4 + 1, count * 4 + 2, count * 4 + 3));
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t j = 0; j < 11; ++j) {
        ASSERT_EQ(batch->tokens[r * 11 + j],
                  static_cast<int32_t>(tokens[(count * 4 + r) * 10 + j]));
      }
    }
    ++count;
  }
  EXPECT_EQ(count, 24);
  EXPECT_FALSE((*val)->Next().has_value());
  (*val)->Reset();
  EXPECT_EQ((*val)->Next()->windows, (*val)->Batch(0).windows);
}

TEST_F(DataLoaderTest, ValidationSlicesPartitionTheirBatchAndMaxBatchesCaps) {
  auto shard = MakeShard(1000);
  auto val = *ValidationIterator::Create(shard, 10, 4, /*max_batches=*/3);
  EXPECT_EQ(val->num_batches(), 3);
  std::vector<int32_t> joined;
  for (int r = 0; r < 2; ++r) {
    for (int m = 0; m < 2; ++m) {
      absl::StatusOr<TokenBatch> slice = val->Slice(2, m, 2, r, 2);
      ASSERT_OK(slice);
      joined.insert(joined.end(), slice->tokens.begin(), slice->tokens.end());
    }
  }
  EXPECT_EQ(joined, val->Batch(2).tokens);
  EXPECT_THAT(val->Slice(3, 0, 1, 0, 1).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("validation batch 3")));
}

TEST_F(DataLoaderTest, ValidationNeedsOneWholeBatch) {
  auto shard = MakeShard(40);
  EXPECT_THAT(ValidationIterator::Create(shard, 10, 4).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("fewer than batch_size x seq_len + 1 = 41")));
  EXPECT_OK(ValidationIterator::Create(shard, 13, 3));
}

}  // namespace
}  // namespace dsv3::train
