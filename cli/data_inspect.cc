// `dsv3-data inspect` and `dsv3-data order`: read-only views of a token shard and of the training
// order over it. The contracts are in data_inspect.h.
#include "cli/data_inspect.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/data_tokenizer.h"
#include "common/status_macros.h"
#include "engine/train/data_loader.h"
#include "engine/train/token_shard.h"

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;

// The tokenizer to decode with: the explicit one (which must load), else tokenizer.model beside
// the shard if present and loadable, else none.
absl::StatusOr<std::unique_ptr<Tokenizer>> FindTokenizer(const InspectOptions& options,
                                                         std::string* path) {
  std::string error;
  if (!options.tokenizer.empty()) {
    *path = options.tokenizer;
    std::unique_ptr<Tokenizer> tokenizer = Tokenizer::Load(options.tokenizer, &error);
    if (tokenizer == nullptr) return absl::InvalidArgumentError(error);
    return tokenizer;
  }
  const fs::path beside = fs::path(options.shard).parent_path() / "tokenizer.model";
  std::error_code ec;
  if (!fs::exists(beside, ec)) return nullptr;
  *path = beside.string();
  return Tokenizer::Load(beside.string(), &error);  // nullptr if it does not load: ids only
}

}  // namespace

absl::Status Inspect(const InspectOptions& options, std::ostream& out) {
  if (options.offset < 0 || options.count < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--offset=%d and --count=%d must not be negative", options.offset, options.count));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<train::TokenShard> shard,
                   train::TokenShard::Open(options.shard));
  if (options.offset > shard->size() || (options.offset == shard->size() && shard->size() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--offset=%d is past the end of %s (%d tokens)", options.offset,
                        options.shard, shard->size()));
  }
  std::string tokenizer_path;
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, FindTokenizer(options, &tokenizer_path));
  const uint32_t max_id = shard->MaxToken();
  out << absl::StrFormat("file       %s\n", options.shard);
  out << absl::StrFormat("format     llm.c token shard, version %d (%s tokens)\n", shard->version(),
                         shard->version() == 1 ? "uint16" : "uint32");
  out << absl::StrFormat("tokens     %d\n", shard->size());
  out << absl::StrFormat("bytes      %d\n", shard->info().file_bytes);
  out << absl::StrFormat("max id     %d\n", max_id);
  if (tokenizer != nullptr) {
    out << absl::StrFormat("tokenizer  %s (vocab %d, end of document = %d)\n", tokenizer_path,
                           tokenizer->vocab_size(), tokenizer->eos_id());
    if (static_cast<int64_t>(max_id) >= tokenizer->vocab_size()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s holds id %d, outside the vocabulary of %s (%d pieces): a different tokenizer?",
          options.shard, max_id, tokenizer_path, tokenizer->vocab_size()));
    }
  } else {
    out << "tokenizer  none ("
        << (tokenizer_path.empty() ? "no tokenizer.model beside the shard"
                                   : tokenizer_path + " does not load")
        << "; ids only)\n";
  }
  const int64_t count = std::min(options.count, shard->size() - options.offset);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  shard->Read(options.offset, absl::MakeSpan(ids));
  out << absl::StrFormat("ids [%d, %d):\n", options.offset, options.offset + count);
  for (int64_t i = 0; i < count; i += 16) {
    out << absl::StrFormat("%10d:", options.offset + i);
    for (int64_t j = i; j < std::min(count, i + 16); ++j) out << " " << ids[j];
    out << "\n";
  }
  if (tokenizer != nullptr) {
    out << absl::StrFormat("text [%d, %d):\n", options.offset, options.offset + count);
    std::vector<int> segment;
    for (int64_t i = 0; i <= count; ++i) {
      if (i == count || ids[i] == tokenizer->eos_id()) {
        const std::string text = tokenizer->Decode(segment);
        if (!text.empty()) out << text << "\n";
        if (i < count) out << "<end of document>\n";
        segment.clear();
      } else {
        segment.push_back(ids[i]);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status PrintOrder(const OrderOptions& options, std::ostream& out) {
  if (options.steps < 0 || options.first_step < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--step=%d and --steps=%d must not be negative", options.first_step, options.steps));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<train::TokenShard> opened,
                   train::TokenShard::Open(options.shard));
  std::shared_ptr<const train::TokenShard> shard(std::move(opened));
  ASSIGN_OR_RETURN(std::unique_ptr<train::DataLoader> loader,
                   train::DataLoader::Create(shard, {.seq_len = options.seq_len,
                                                     .batch_size = options.batch_size,
                                                     .seed = options.seed}));
  out << absl::StrFormat(
      "%s: %d tokens, %d windows of %d+1 tokens, %d sequences per step, seed %d\n", options.shard,
      shard->size(), loader->num_windows(), options.seq_len, options.batch_size, options.seed);
  for (int64_t s = options.first_step; s < options.first_step + options.steps; ++s) {
    ASSIGN_OR_RETURN(std::vector<int64_t> windows, loader->GlobalBatchWindows(s));
    out << absl::StrFormat("step %d epoch %d:", s, loader->EpochOfStep(s));
    for (int64_t w : windows) out << " " << w;
    out << "\n";
  }
  return absl::OkStatus();
}

}  // namespace dsv3::cli
