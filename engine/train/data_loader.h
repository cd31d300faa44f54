// The training data order: which token windows of a shard make up the global batch of each step,
// and which rows of it a (micro-batch, data-parallel rank) takes. The order is a pure function of
// (seed, step) and the shard — never of the parallel layout — so a re-planned job continues on the
// same trajectory, and resuming needs only (seed, step). Also the fixed validation batches. Not the
// shard format (token_shard.h) and not the trainer loop.
//
// Sampling (docs/data.md has it with a worked example):
//   * The shard of N tokens holds W = (N - 1) / T windows; window w is tokens [w*T, w*T + T] (T+1
//     tokens: inputs t_0..t_{T-1}, targets t_1..t_T). Windows overlap only in that boundary token;
//     the last (N - 1) % T tokens are never used.
//   * The training stream is epoch 0's permutation of the W windows, then epoch 1's, and so on;
//     epoch e's permutation is a Fisher-Yates shuffle driven by SplitMix64 seeded with
//     EpochSeed(seed, e). Within an epoch no window repeats.
//   * Step s's global batch is stream positions [s*B, s*B + B) in order (B = sequences per global
//     batch); a batch may straddle two epochs.
//   * Rank r of D data-parallel ranks takes rows [r*B/D, (r+1)*B/D); its micro-batch m of M takes
//     rows r*B/D + m*B/(D*M) onwards, B/(D*M) of them. Every layout partitions the same rows.
#ifndef DSV3_ENGINE_TRAIN_DATA_LOADER_H_
#define DSV3_ENGINE_TRAIN_DATA_LOADER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "engine/train/token_shard.h"

namespace dsv3::train {

// The SplitMix64 generator (Steele, Lea, Flood 2014; the reference in xoshiro's splitmix64.c):
// state += 0x9e3779b97f4a7c15, then the output is Mix64(state).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next();
  // Uniform in [0, bound), bound >= 1, unbiased: draws x until x >= 2^64 mod bound, returns
  // x mod bound.
  uint64_t Uniform(uint64_t bound);

 private:
  uint64_t state_;
};

// SplitMix64's output function (a bijective 64-bit mixer).
uint64_t Mix64(uint64_t z);

// The generator seed of epoch `epoch`'s permutation: Mix64(Mix64(seed) ^ (epoch + 1)).
uint64_t EpochSeed(uint64_t seed, int64_t epoch);

// The permutation of [0, n) used for one epoch: starting from the identity, for i = n-1 down to 1,
// swap element i with element j = Uniform(i + 1) drawn from SplitMix64(EpochSeed(seed, epoch)).
std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n);

// B token rows of T+1 tokens each.
struct TokenBatch {
  int64_t rows = 0;              // B (or the slice's row count)
  int64_t row_length = 0;        // T + 1
  std::vector<int32_t> tokens;   // [rows, row_length] row-major: inputs [:, :T], targets [:, 1:]
  std::vector<int64_t> windows;  // [rows] the window index of each row (its tokens start at
                                 // window * T in the shard)
};

// Rows [begin, begin + count) of a batch of `batch_size` rows that data-parallel rank `dp_rank` of
// `dp_size` takes for micro-batch `micro_batch` of `num_micro_batches` (the rule in the file
// comment). INVALID_ARGUMENT, naming the values, unless 0 <= micro_batch < num_micro_batches,
// 0 <= dp_rank < dp_size and dp_size * num_micro_batches divides batch_size.
struct RowRange {
  int64_t begin = 0;
  int64_t count = 0;
};
absl::StatusOr<RowRange> SliceRows(int64_t batch_size, int micro_batch, int num_micro_batches,
                                   int dp_rank, int dp_size);

struct DataLoaderOptions {
  int64_t seq_len = 0;     // T: a row holds T+1 tokens
  int64_t batch_size = 0;  // B: sequences per global batch (global_batch_tokens / seq_len)
  uint64_t seed = 0;       // the job seed
};

// The training order over one shard. Thread-safe: every method is const, and the cache of epoch
// permutations is guarded by a mutex. The state needed to resume is (seed, step), nothing more.
class DataLoader {
 public:
  // INVALID_ARGUMENT unless seq_len >= 1, batch_size >= 1 and the shard holds at least one window
  // (seq_len + 1 tokens); messages name the values. The shard is shared, not copied.
  static absl::StatusOr<std::unique_ptr<DataLoader>> Create(std::shared_ptr<const TokenShard> shard,
                                                            const DataLoaderOptions& options);

  int64_t num_windows() const { return num_windows_; }
  int64_t seq_len() const { return options_.seq_len; }
  int64_t batch_size() const { return options_.batch_size; }
  uint64_t seed() const { return options_.seed; }

  // The epoch that stream position `step * B` (the first row of step `step`) falls in.
  int64_t EpochOfStep(int64_t step) const;

  // The window of stream position `position` (>= 0): EpochPermutation(seed, position / W, W)
  // [position % W]. Aborts on a negative position (a programmer error).
  int64_t WindowAt(int64_t position) const;

  // The B window indices of step `step`'s global batch, in row order. INVALID_ARGUMENT for a
  // negative step or one whose stream position overflows int64.
  absl::StatusOr<std::vector<int64_t>> GlobalBatchWindows(int64_t step) const;

  // Step `step`'s global batch: [B, T+1] tokens. Errors as GlobalBatchWindows.
  absl::StatusOr<TokenBatch> GlobalBatch(int64_t step) const;

  // The rows of step `step`'s global batch that micro-batch `micro_batch` on data-parallel rank
  // `dp_rank` trains on: [B / (dp_size * num_micro_batches), T+1]. Errors: those of GlobalBatch
  // and SliceRows.
  absl::StatusOr<TokenBatch> Slice(int64_t step, int micro_batch, int num_micro_batches,
                                   int dp_rank, int dp_size) const;

 private:
  DataLoader(std::shared_ptr<const TokenShard> shard, const DataLoaderOptions& options);
  // The permutation of `epoch`, from the cache or computed (the cache keeps the two most recent).
  std::shared_ptr<const std::vector<int64_t>> Permutation(int64_t epoch) const;
  absl::Status CheckStep(int64_t step) const;
  TokenBatch ReadWindows(const std::vector<int64_t>& windows) const;

  std::shared_ptr<const TokenShard> shard_;
  DataLoaderOptions options_;
  int64_t num_windows_ = 0;
  mutable absl::Mutex mu_;
  mutable std::map<int64_t, std::shared_ptr<const std::vector<int64_t>>> permutations_
      ABSL_GUARDED_BY(mu_);
};

// The validation batches of a shard: fixed and sequential, the same for every seed and step.
// Batch i holds windows i*B .. i*B + B - 1 (windows as in DataLoader); only whole batches are used.
// Thread-safe for the random-access methods; Next()/Reset() keep a cursor and are not.
class ValidationIterator {
 public:
  // max_batches > 0 caps the number of batches; 0 takes every whole batch. INVALID_ARGUMENT unless
  // seq_len >= 1, batch_size >= 1 and the shard holds at least one whole batch
  // (batch_size * seq_len + 1 tokens), naming the values.
  static absl::StatusOr<std::unique_ptr<ValidationIterator>> Create(
      std::shared_ptr<const TokenShard> shard, int64_t seq_len, int64_t batch_size,
      int64_t max_batches = 0);

  int64_t num_batches() const { return num_batches_; }

  // Batch `index`, 0 <= index < num_batches() (aborts otherwise: a programmer error).
  TokenBatch Batch(int64_t index) const;

  // The rows of batch `index` for one micro-batch on one data-parallel rank (SliceRows's rule).
  // INVALID_ARGUMENT for an index outside [0, num_batches()) and the errors of SliceRows.
  absl::StatusOr<TokenBatch> Slice(int64_t index, int micro_batch, int num_micro_batches,
                                   int dp_rank, int dp_size) const;

  // The next batch in order, or nullopt after the last one (until Reset()).
  std::optional<TokenBatch> Next();
  void Reset() { cursor_ = 0; }

 private:
  ValidationIterator(std::shared_ptr<const TokenShard> shard, int64_t seq_len, int64_t batch_size,
                     int64_t num_batches);

  std::shared_ptr<const TokenShard> shard_;
  int64_t seq_len_;
  int64_t batch_size_;
  int64_t num_batches_;
  int64_t cursor_ = 0;
};

}  // namespace dsv3::train

#endif  // DSV3_ENGINE_TRAIN_DATA_LOADER_H_
