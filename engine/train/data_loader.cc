// The deterministic training order (seeded per-epoch permutations of T+1-token windows), the
// layout-independent slicing of a global batch, and the fixed validation batches. The rules are in
// data_loader.h; this file only implements them.
#include "engine/train/data_loader.h"

#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dsv3::train {
namespace {

// Rows of `seq_len + 1` tokens starting at window * seq_len, one per window.
TokenBatch ReadRows(const TokenShard& shard, int64_t seq_len, std::vector<int64_t> windows) {
  TokenBatch batch;
  batch.rows = static_cast<int64_t>(windows.size());
  batch.row_length = seq_len + 1;
  batch.tokens.resize(static_cast<size_t>(batch.rows * batch.row_length));
  for (int64_t r = 0; r < batch.rows; ++r) {
    shard.Read(windows[r] * seq_len, absl::MakeSpan(batch.tokens.data() + r * batch.row_length,
                                                    static_cast<size_t>(batch.row_length)));
  }
  batch.windows = std::move(windows);
  return batch;
}

}  // namespace

// ---- SplitMix64 and the permutation ----

uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::Next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  return Mix64(state_);
}

uint64_t SplitMix64::Uniform(uint64_t bound) {
  // 2^64 mod bound, computed in 64 bits as (2^64 - bound) mod bound.
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    const uint64_t x = Next();
    if (x >= threshold) return x % bound;
  }
}

uint64_t EpochSeed(uint64_t seed, int64_t epoch) {
  return Mix64(Mix64(seed) ^ static_cast<uint64_t>(epoch + 1));
}

std::vector<int64_t> EpochPermutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  SplitMix64 rng(EpochSeed(seed, epoch));
  for (int64_t i = n - 1; i >= 1; --i) {
    const int64_t j = static_cast<int64_t>(rng.Uniform(static_cast<uint64_t>(i) + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

absl::StatusOr<RowRange> SliceRows(int64_t batch_size, int micro_batch, int num_micro_batches,
                                   int dp_rank, int dp_size) {
  if (num_micro_batches < 1 || micro_batch < 0 || micro_batch >= num_micro_batches) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "micro_batch=%d is not in [0, num_micro_batches=%d)", micro_batch, num_micro_batches));
  }
  if (dp_size < 1 || dp_rank < 0 || dp_rank >= dp_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dp_rank=%d is not in [0, dp_size=%d)", dp_rank, dp_size));
  }
  const int64_t parts = int64_t{dp_size} * num_micro_batches;
  if (batch_size % parts != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "dp_size=%d x num_micro_batches=%d = %d does not divide the batch of %d sequences", dp_size,
        num_micro_batches, parts, batch_size));
  }
  const int64_t rows = batch_size / parts;
  return RowRange{(int64_t{dp_rank} * num_micro_batches + micro_batch) * rows, rows};
}

// ---- DataLoader ----

DataLoader::DataLoader(std::shared_ptr<const TokenShard> shard, const DataLoaderOptions& options)
    : shard_(std::move(shard)),
      options_(options),
      num_windows_((shard_->size() - 1) / options.seq_len) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(
    std::shared_ptr<const TokenShard> shard, const DataLoaderOptions& options) {
  if (shard == nullptr) return absl::InvalidArgumentError("DataLoader: no token shard");
  if (options.seq_len < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DataLoader: seq_len=%d must be >= 1", options.seq_len));
  }
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DataLoader: batch_size=%d must be >= 1", options.batch_size));
  }
  if (shard->size() < options.seq_len + 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("DataLoader: %s holds %d tokens, fewer than seq_len+1 = %d (one window)",
                        shard->path(), shard->size(), options.seq_len + 1));
  }
  return std::unique_ptr<DataLoader>(new DataLoader(std::move(shard), options));
}

std::shared_ptr<const std::vector<int64_t>> DataLoader::Permutation(int64_t epoch) const {
  {
    absl::MutexLock lock(&mu_);
    auto it = permutations_.find(epoch);
    if (it != permutations_.end()) return it->second;
  }
  // Computed outside the lock; two threads may both compute it, and they get equal results.
  auto perm = std::make_shared<const std::vector<int64_t>>(
      EpochPermutation(options_.seed, epoch, num_windows_));
  absl::MutexLock lock(&mu_);
  permutations_.emplace(epoch, perm);
  while (permutations_.size() > 2) {
    // Drop the epoch farthest from the one just used (training moves forward; eval may jump).
    auto first = permutations_.begin();
    auto last = std::prev(permutations_.end());
    permutations_.erase(epoch - first->first >= last->first - epoch ? first : last);
  }
  return perm;
}

int64_t DataLoader::WindowAt(int64_t position) const {
  if (position < 0) {
    std::fprintf(stderr, "DataLoader::WindowAt: negative stream position %ld\n",
                 static_cast<long>(position));
    std::abort();
  }
  return (*Permutation(position / num_windows_))[position % num_windows_];
}

int64_t DataLoader::EpochOfStep(int64_t step) const {
  return step * options_.batch_size / num_windows_;
}

absl::Status DataLoader::CheckStep(int64_t step) const {
  if (step < 0) return absl::InvalidArgumentError(absl::StrFormat("step=%d is negative", step));
  if (step > (std::numeric_limits<int64_t>::max() - options_.batch_size) / options_.batch_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "step=%d x batch_size=%d overflows the stream position", step, options_.batch_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> DataLoader::GlobalBatchWindows(int64_t step) const {
  RETURN_IF_ERROR(CheckStep(step));
  std::vector<int64_t> windows(static_cast<size_t>(options_.batch_size));
  const int64_t first = step * options_.batch_size;
  std::shared_ptr<const std::vector<int64_t>> perm;
  int64_t perm_epoch = -1;
  for (int64_t b = 0; b < options_.batch_size; ++b) {
    const int64_t position = first + b;
    const int64_t epoch = position / num_windows_;
    if (epoch != perm_epoch) {
      perm = Permutation(epoch);
      perm_epoch = epoch;
    }
    windows[b] = (*perm)[position % num_windows_];
  }
  return windows;
}

absl::StatusOr<TokenBatch> DataLoader::GlobalBatch(int64_t step) const {
  ASSIGN_OR_RETURN(std::vector<int64_t> windows, GlobalBatchWindows(step));
  return ReadRows(*shard_, options_.seq_len, std::move(windows));
}

absl::StatusOr<TokenBatch> DataLoader::Slice(int64_t step, int micro_batch, int num_micro_batches,
                                             int dp_rank, int dp_size) const {
  ASSIGN_OR_RETURN(const RowRange range, SliceRows(options_.batch_size, micro_batch,
                                                   num_micro_batches, dp_rank, dp_size));
  ASSIGN_OR_RETURN(std::vector<int64_t> windows, GlobalBatchWindows(step));
  std::vector<int64_t> mine(windows.begin() + range.begin,
                            windows.begin() + range.begin + range.count);
  return ReadRows(*shard_, options_.seq_len, std::move(mine));
}

// ---- ValidationIterator ----

ValidationIterator::ValidationIterator(std::shared_ptr<const TokenShard> shard, int64_t seq_len,
                                       int64_t batch_size, int64_t num_batches)
    : shard_(std::move(shard)),
      seq_len_(seq_len),
      batch_size_(batch_size),
      num_batches_(num_batches) {}

absl::StatusOr<std::unique_ptr<ValidationIterator>> ValidationIterator::Create(
    std::shared_ptr<const TokenShard> shard, int64_t seq_len, int64_t batch_size,
    int64_t max_batches) {
  if (shard == nullptr) return absl::InvalidArgumentError("ValidationIterator: no token shard");
  if (seq_len < 1 || batch_size < 1 || max_batches < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ValidationIterator: seq_len=%d and batch_size=%d must be >= 1, max_batches=%d >= 0",
        seq_len, batch_size, max_batches));
  }
  const int64_t windows = (shard->size() - 1) / seq_len;
  int64_t batches = windows / batch_size;
  if (batches < 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ValidationIterator: %s holds %d tokens, fewer than batch_size x seq_len + 1 = %d (one "
        "batch)",
        shard->path(), shard->size(), batch_size * seq_len + 1));
  }
  if (max_batches > 0 && max_batches < batches) batches = max_batches;
  return std::unique_ptr<ValidationIterator>(
      new ValidationIterator(std::move(shard), seq_len, batch_size, batches));
}

TokenBatch ValidationIterator::Batch(int64_t index) const {
  if (index < 0 || index >= num_batches_) {
    std::fprintf(stderr, "ValidationIterator::Batch: index %ld not in [0, %ld)\n",
                 static_cast<long>(index), static_cast<long>(num_batches_));
    std::abort();
  }
  std::vector<int64_t> windows(static_cast<size_t>(batch_size_));
  for (int64_t b = 0; b < batch_size_; ++b) windows[b] = index * batch_size_ + b;
  return ReadRows(*shard_, seq_len_, std::move(windows));
}

absl::StatusOr<TokenBatch> ValidationIterator::Slice(int64_t index, int micro_batch,
                                                     int num_micro_batches, int dp_rank,
                                                     int dp_size) const {
  if (index < 0 || index >= num_batches_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("validation batch %d is not in [0, num_batches=%d)", index, num_batches_));
  }
  ASSIGN_OR_RETURN(const RowRange range,
                   SliceRows(batch_size_, micro_batch, num_micro_batches, dp_rank, dp_size));
  std::vector<int64_t> windows(static_cast<size_t>(range.count));
  for (int64_t b = 0; b < range.count; ++b) windows[b] = index * batch_size_ + range.begin + b;
  return ReadRows(*shard_, seq_len_, std::move(windows));
}

std::optional<TokenBatch> ValidationIterator::Next() {
  if (cursor_ >= num_batches_) return std::nullopt;
  return Batch(cursor_++);
}

}  // namespace dsv3::train
