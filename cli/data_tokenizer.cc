// The only translation unit that includes SentencePiece headers: BPE training from in-memory
// sentences and a thin wrapper around SentencePieceProcessor. No abseil here (see the header).
#include "cli/data_tokenizer.h"

#include <fstream>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "sentencepiece_processor.h"
#include "sentencepiece_trainer.h"

// Exported by libsentencepiece but not declared in its installed headers.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}  // namespace sentencepiece::logging

namespace dsv3::cli {
namespace {

// Feeds the training sentences from memory instead of a file.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& sentences)
      : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  const std::vector<std::string>& sentences_;
  size_t index_ = 0;
};

}  // namespace

bool TrainBpeTokenizer(const std::vector<std::string>& sentences, const BpeTrainOptions& options,
                       std::string* model, std::string* error) {
  sentencepiece::logging::SetMinLogLevel(2);  // errors only; failures come back as a Status
  sentencepiece::SetRandomGeneratorSeed(options.random_seed);
  std::ostringstream coverage;
  coverage << options.character_coverage;
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"character_coverage", coverage.str()},
      {"num_threads", std::to_string(options.num_threads)},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
  };
  VectorSentenceIterator iterator(sentences);
  const sentencepiece::util::Status status =
      sentencepiece::SentencePieceTrainer::Train(args, &iterator, model);
  if (!status.ok()) {
    *error = status.message();
    return false;
  }
  return true;
}

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::FromSerialized(const std::string& model, std::string* error) {
  auto impl = std::make_unique<Impl>();
  const sentencepiece::util::Status status = impl->processor.LoadFromSerializedProto(model);
  if (!status.ok()) {
    *error = "not a SentencePiece model: " + std::string(status.message());
    return nullptr;
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

std::unique_ptr<Tokenizer> Tokenizer::Load(const std::string& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open the tokenizer model " + path;
    return nullptr;
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::unique_ptr<Tokenizer> tokenizer = FromSerialized(bytes.str(), error);
  if (tokenizer == nullptr) *error = path + ": " + *error;
  return tokenizer;
}

int Tokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }
int Tokenizer::unk_id() const { return impl_->processor.unk_id(); }
int Tokenizer::bos_id() const { return impl_->processor.bos_id(); }
int Tokenizer::eos_id() const { return impl_->processor.eos_id(); }

std::vector<int> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  impl_->processor.Encode(text, &ids).IgnoreError();  // fails only without a model
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int>& ids) const {
  std::vector<int> valid(ids);
  for (int& id : valid) {
    if (id < 0 || id >= vocab_size()) id = unk_id();
  }
  std::string text;
  impl_->processor.Decode(valid, &text).IgnoreError();
  return text;
}

std::string Tokenizer::IdToPiece(int id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return impl_->processor.IdToPiece(id);
}

std::string Tokenizer::VocabText() const {
  std::ostringstream out;
  for (int id = 0; id < vocab_size(); ++id) {
    out << impl_->processor.IdToPiece(id) << '\t' << impl_->processor.GetScore(id) << '\n';
  }
  return out.str();
}

}  // namespace dsv3::cli
