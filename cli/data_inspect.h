// `dsv3-data inspect` (a shard's header and tokens, decoded when a tokenizer is at hand) and
// `dsv3-data order` (the windows each training step reads, from engine/train/data_loader). Tools
// for people and for cross-checking the data order; they change nothing.
#ifndef DSV3_CLI_DATA_INSPECT_H_
#define DSV3_CLI_DATA_INSPECT_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace dsv3::cli {

struct InspectOptions {
  std::string shard;      // FILE.bin
  std::string tokenizer;  // a .model; empty: tokenizer.model beside the shard if there is one
  int64_t offset = 0;     // first token shown
  int64_t count = 64;     // tokens shown (clipped to the shard)
};

// Prints the header (version, token count, bytes, largest id), tokens [offset, offset + count) and,
// with a tokenizer, their text (a "<end of document>" line at each end-of-document id). Errors:
// those of TokenShard::Open; INVALID_ARGUMENT for a negative offset/count, an offset past the end,
// an explicit --tokenizer that cannot be loaded, or ids the tokenizer's vocabulary cannot hold.
absl::Status Inspect(const InspectOptions& options, std::ostream& out);

struct OrderOptions {
  std::string shard;
  int64_t seq_len = 0;     // T
  int64_t batch_size = 0;  // B, sequences per global batch
  uint64_t seed = 0;
  int64_t first_step = 0;
  int64_t steps = 1;
};

// Prints, for each step, "step S epoch E: w_0 w_1 ... w_{B-1}" (the global batch's window indices;
// window w is tokens [w*T, w*T+T]), after a line with the window count. Errors: those of
// TokenShard::Open and DataLoader::Create; INVALID_ARGUMENT for a negative step count.
absl::Status PrintOrder(const OrderOptions& options, std::ostream& out);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_DATA_INSPECT_H_
