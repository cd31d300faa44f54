// dsv3-data's boundary to SentencePiece: BPE training and encoding/decoding. This header and
// data_tokenizer.cc use only the standard library, because SentencePiece's header declares
// absl::string_view and so cannot share a translation unit with abseil (DESIGN.md, Dependencies);
// errors therefore come back as strings. Nothing else in dsv3 links SentencePiece.
#ifndef DSV3_CLI_DATA_TOKENIZER_H_
#define DSV3_CLI_DATA_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dsv3::cli {

// The trainer settings dsv3-data uses (recorded in the manifest). Ids: 0 <unk>, 1 <s>, 2 </s>
// (the end-of-document token), then the pieces; no padding id.
struct BpeTrainOptions {
  int vocab_size = 4096;
  int num_threads = 2;
  double character_coverage = 1.0;  // every character of the corpus gets a piece; no <unk> in it
  int64_t input_sentence_size = 0;  // sentences sampled for training; 0 = all of them
  int max_sentence_length = 16384;  // bytes; longer training sentences would be skipped
  uint32_t random_seed = 1;         // SentencePiece's generator (only used when sampling)
};

// Trains a BPE model on `sentences` (one training sentence each, no newlines). On success returns
// true and sets `model` to the serialized ModelProto (the bytes of a .model file). On failure
// returns false and sets `error` to SentencePiece's message, e.g. "Vocabulary size too high
// (300000). Please set it to a value <= 109477.". Quiet: SentencePiece's INFO logs are switched
// off.
bool TrainBpeTokenizer(const std::vector<std::string>& sentences, const BpeTrainOptions& options,
                       std::string* model, std::string* error);

// A loaded SentencePiece model. Immutable after loading; Encode/Decode are thread-compatible.
class Tokenizer {
 public:
  // From the bytes of a .model file. nullptr and `error` set if they are not a valid model.
  static std::unique_ptr<Tokenizer> FromSerialized(const std::string& model, std::string* error);
  // From a .model file. nullptr and `error` set if it cannot be read or is not a model.
  static std::unique_ptr<Tokenizer> Load(const std::string& path, std::string* error);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  int vocab_size() const;
  int unk_id() const;
  int bos_id() const;
  int eos_id() const;

  // Token ids of `text` (SentencePiece adds the leading "▁" word-boundary marker itself).
  std::vector<int> Encode(const std::string& text) const;
  // Text of `ids`; control pieces (<s>, </s>) decode to nothing. Ids outside the vocabulary
  // decode as " ⁇ " (SentencePiece's unknown marker).
  std::string Decode(const std::vector<int>& ids) const;
  std::string IdToPiece(int id) const;

  // The .vocab text spm_train writes: "piece\tscore\n" for every id in order.
  std::string VocabText() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv3::cli

#endif  // DSV3_CLI_DATA_TOKENIZER_H_
