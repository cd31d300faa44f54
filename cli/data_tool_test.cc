// In-process tests of dsv3-data (RunData) on a small synthetic corpus in the Brown layout: prepare
// writes shards, tokenizer and manifest that agree with each other and decode back to the corpus
// text; re-runs are no-ops; changed arguments or damaged outputs rebuild; every bad input exits 2
// with one line; inspect and order print what they promise. The real corpus is exercised by
// tests/integration/data_test.py.
#include "cli/data_tool.h"

#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/data_tokenizer.h"
#include "common/status_matchers.h"
#include "engine/train/data_loader.h"
#include "engine/train/token_shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using json = nlohmann::json;

constexpr int kTexts = 500;
const BrownCorpusOptions kSmallCorpus{.expected_texts = kTexts, .min_words_per_text = 20};

// Text `index`'s words, drawn deterministically from a small vocabulary, plus Brown's quirks
// (slashes inside words, `` '' quotes). Tagged in the Brown layout by TaggedText.
std::vector<std::vector<std::vector<std::string>>> SyntheticText(int index) {
  static const std::vector<std::string> kWords = {
      "the",  "jury",    "said",   "that",   "election", "was",    "city",  "county",
      "of",   "in",      "a",      "report", "which",    "had",    "been",  "charged",
      "with", "Atlanta", "Fulton", "new",    "program",  "school", "state", "law",
      "1/2",  "and/or",  "money",  "vote",   "mayor",    "court"};
  uint64_t state = 1000 + index;
  auto next = [&state](uint64_t bound) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % bound;
  };
  std::vector<std::vector<std::vector<std::string>>> paragraphs(3);
  for (auto& paragraph : paragraphs) {
    paragraph.resize(2 + next(2));
    for (auto& sentence : paragraph) {
      const bool quoted = next(4) == 0;
      if (quoted) sentence.push_back("``");
      const int n = 6 + static_cast<int>(next(8));
      for (int i = 0; i < n; ++i) sentence.push_back(kWords[next(kWords.size())]);
      if (quoted) sentence.push_back("''");
      sentence.push_back(".");
    }
  }
  return paragraphs;
}

std::string TaggedText(int index) {
  std::string raw = "\n\n";
  for (const auto& paragraph : SyntheticText(index)) {
    raw += "\t";
    for (const auto& sentence : paragraph) {
      for (const std::string& word : sentence) {
        const std::string tag = word == "." ? "." : word == "``" || word == "''" ? word : "nn";
        raw += word + "/" + tag + " ";
      }
      raw += "\n";
    }
    raw += "\n\n";
  }
  return raw;
}

// Text `index` with all whitespace removed and Brown's quotes as '"': what any faithful decoding
// must give once its whitespace is removed too.
std::string Squeezed(int index) {
  std::string text;
  for (const auto& paragraph : SyntheticText(index)) {
    for (const auto& sentence : paragraph) {
      for (const std::string& word : sentence) text += word == "``" || word == "''" ? "\"" : word;
    }
  }
  return text;
}

std::string Squeeze(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c))) out += c;
  }
  return out;
}

std::string TextName(int index) {
  // ca01..ca99, cb01.., as many as needed.
  return absl::StrFormat("c%c%02d", 'a' + index / 99, index % 99 + 1);
}

struct Outcome {
  int code = -1;
  std::string out, err;
};

class DataToolTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = ::testing::TempDir() + "/data_tool_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    corpus_ = root_ + "/corpus";
    fs::create_directories(corpus_);
    for (int i = 0; i < kTexts; ++i) std::ofstream(corpus_ + "/" + TextName(i)) << TaggedText(i);
    std::ofstream(corpus_ + "/README") << "not a text\n";
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  Outcome Data(std::vector<std::string> args) {
    args.insert(args.begin(), "dsv3-data");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    std::ostringstream out, err;
    Outcome run;
    run.code = RunData(static_cast<int>(argv.size()), argv.data(), out, err, kSmallCorpus);
    run.out = out.str();
    run.err = err.str();
    return run;
  }

  Outcome Prepare(const std::string& out, int vocab, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"prepare", "--out=" + out, "--corpus=" + corpus_,
                                     absl::StrCat("--vocab_size=", vocab)};
    args.insert(args.end(), extra.begin(), extra.end());
    return Data(args);
  }

  static json Manifest(const std::string& out) {
    std::ifstream in(out + "/manifest.json");
    return json::parse(in);
  }

  static std::vector<uint32_t> Tokens(const std::string& path) {
    auto shard = train::TokenShard::Open(path);
    EXPECT_OK(shard);
    std::vector<uint32_t> tokens;
    for (int64_t i = 0; i < (*shard)->size(); ++i) tokens.push_back((*shard)->At(i));
    return tokens;
  }

  static std::string root_;
  static std::string corpus_;
};

std::string DataToolTest::root_;
std::string DataToolTest::corpus_;

TEST_F(DataToolTest, PrepareWritesShardsTokenizerAndAManifestThatAgree) {
  const std::string out = root_ + "/p1";
  const Outcome run = Prepare(out, 200);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("prepared " + out));
  EXPECT_THAT(run.err, HasSubstr("[1/6]"));
  EXPECT_THAT(run.err, HasSubstr("100%"));
  EXPECT_THAT(run.err, HasSubstr("[6/6] writing manifest.json"));

  const json m = Manifest(out);
  EXPECT_EQ(m["tool_version"], 1);
  EXPECT_EQ(m["vocab_size"], 200);
  EXPECT_EQ(m["end_of_document_id"], 2);
  EXPECT_EQ(m["shard_version"], 1);
  EXPECT_EQ(m["corpus"]["texts"], kTexts);
  EXPECT_EQ(m["splits"]["train"]["documents"], 450);
  EXPECT_EQ(m["splits"]["val"]["documents"], 50);
  EXPECT_EQ(m["splits"]["val"]["texts"][0], TextName(9));

  for (const char* split : {"train", "val"}) {
    const std::string path = out + "/" + split + ".bin";
    absl::StatusOr<train::TokenShardInfo> info = train::ReadTokenShardInfo(path);
    ASSERT_OK(info);
    EXPECT_EQ(info->version, 1);
    EXPECT_EQ(info->num_tokens, m["splits"][split]["tokens"].get<int64_t>()) << split;
    EXPECT_OK(train::TokenShard::Open(path, {.vocab_size = 200}));
  }
  // One end-of-document id per text, the last token being one.
  const std::vector<uint32_t> val = Tokens(out + "/val.bin");
  EXPECT_EQ(std::count(val.begin(), val.end(), 2u), 50);
  EXPECT_EQ(val.back(), 2u);
  const std::vector<uint32_t> train = Tokens(out + "/train.bin");
  EXPECT_EQ(std::count(train.begin(), train.end(), 2u), 450);

  // Decoding each validation text gives its words back (compared without whitespace).
  std::string error;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::Load(out + "/tokenizer.model", &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  EXPECT_EQ(tokenizer->vocab_size(), 200);
  std::vector<int> doc;
  int text = 0;
  for (uint32_t id : val) {
    if (id != 2u) {
      doc.push_back(static_cast<int>(id));
      continue;
    }
    const int index = 10 * text + 9;
    EXPECT_EQ(Squeeze(tokenizer->Decode(doc)), Squeezed(index)) << "text " << TextName(index);
    doc.clear();
    ++text;
  }
  // tokenizer.vocab lists every piece in id order.
  std::ifstream vocab(out + "/tokenizer.vocab");
  std::string line;
  int lines = 0;
  while (std::getline(vocab, line)) {
    if (lines == 2) {
      EXPECT_EQ(line, "</s>\t0");
    }
    ++lines;
  }
  EXPECT_EQ(lines, 200);
}

TEST_F(DataToolTest, ASecondRunWithTheSameArgumentsIsANoOp) {
  const std::string out = root_ + "/p2";
  ASSERT_EQ(Prepare(out, 200).code, 0);
  const auto before = fs::last_write_time(out + "/train.bin");
  const Outcome again = Prepare(out, 200);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_THAT(again.out, HasSubstr("already up to date"));
  EXPECT_THAT(again.err, Not(HasSubstr("training")));
  EXPECT_EQ(fs::last_write_time(out + "/train.bin"), before);
}

TEST_F(DataToolTest, ChangedArgumentsRebuildAndSayWhy) {
  const std::string out = root_ + "/p3";
  ASSERT_EQ(Prepare(out, 200).code, 0);
  const Outcome bigger = Prepare(out, 240);
  ASSERT_EQ(bigger.code, 0) << bigger.err;
  EXPECT_THAT(bigger.err, HasSubstr("vocab_size changed (200 -> 240)"));
  EXPECT_EQ(Manifest(out)["vocab_size"], 240);
  const Outcome split = Prepare(out, 240, {"--val_fraction=0.2"});
  ASSERT_EQ(split.code, 0) << split.err;
  EXPECT_THAT(split.err, HasSubstr("val_fraction changed"));
  EXPECT_EQ(Manifest(out)["splits"]["val"]["documents"], 100);
}

TEST_F(DataToolTest, DamagedOrHalfWrittenOutputIsRebuilt) {
  const std::string out = root_ + "/p4";
  ASSERT_EQ(Prepare(out, 200).code, 0);
  const std::vector<uint32_t> val = Tokens(out + "/val.bin");
  fs::resize_file(out + "/val.bin", 1024 + 2 * 10);  // truncated
  Outcome run = Prepare(out, 200);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.err, HasSubstr("val.bin changed size"));
  EXPECT_EQ(Tokens(out + "/val.bin"), val);  // deterministic: the same tokens again

  fs::remove(out + "/manifest.json");  // as if a run died before its last step
  run = Prepare(out, 200);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.err, HasSubstr("no manifest.json"));

  std::ofstream(out + "/manifest.json") << "{\"tool_version\": 1, \"settings\": 3";
  run = Prepare(out, 200);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.err, HasSubstr("not valid JSON"));
  // No temporary file is left behind.
  for (const auto& entry : fs::directory_iterator(out)) {
    EXPECT_THAT(entry.path().filename().string(), Not(HasSubstr(".tmp")));
  }
}

TEST_F(DataToolTest, AChangedCorpusRebuilds) {
  const std::string corpus = root_ + "/corpus-copy";
  fs::copy(corpus_, corpus);
  const std::string out = root_ + "/p5";
  std::vector<std::string> args = {"prepare", "--out=" + out, "--corpus=" + corpus,
                                   "--vocab_size=200"};
  ASSERT_EQ(Data(args).code, 0);
  std::ofstream(corpus + "/ca05", std::ios::app) << "\tAn/at extra/jj sentence/nn ./.\n";
  const Outcome run = Data(args);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.err, HasSubstr("the corpus changed"));
}

TEST_F(DataToolTest, BadInputExitsTwoWithOneLine) {
  const std::string out = root_ + "/bad";
  fs::create_directories(root_ + "/afile-parent");
  std::ofstream(root_ + "/afile") << "x";
  fs::create_directories(root_ + "/short");
  std::ofstream(root_ + "/short/ca01") << "a/at ./.\n";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"prepare", "--corpus=" + corpus_}, "--out is required"},
      {{"prepare", "--out=" + out, "--corpus=" + root_ + "/none"}, "scripts/bootstrap.sh"},
      {{"prepare", "--out=" + out, "--corpus=" + root_ + "/short"}, "holds 1 Brown texts"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--vocab_size=20"},
       "--vocab_size=20 is too small: SentencePiece needs at least"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--vocab_size=100000"},
       "--vocab_size=100000 does not fit this corpus"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--vocab_size=0"}, "must be positive"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--vocab_size=abc"},
       "--vocab_size=abc is not an integer"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--val_fraction=0"}, "between 0 and 1"},
      {{"prepare", "--out=" + out, "--corpus=" + corpus_, "--val_fraction=0.0001"},
       "both splits need at least one"},
      {{"prepare", "--out=" + root_ + "/afile/sub", "--corpus=" + corpus_}, "cannot create --out"},
      {{"prepare", "--out=" + out, "--vocab=4"}, "unknown flag --vocab"},
      {{"prepare", "extra", "--out=" + out}, "takes no arguments"},
      {{"frobnicate"}, "unknown verb 'frobnicate'"},
      {{"inspect"}, "takes one shard"},
      {{"inspect", root_ + "/afile"}, "shorter than the 1024-byte"},
      {{"order", root_ + "/afile", "--seq_len=4"}, "--batch_size is required"},
  };
  for (const Case& c : cases) {
    const Outcome run = Data(c.args);
    EXPECT_EQ(run.code, 2) << absl::StrJoin(c.args, " ") << "\n" << run.err;
    EXPECT_THAT(run.err, HasSubstr(c.message)) << absl::StrJoin(c.args, " ");
    EXPECT_EQ(run.err.back(), '\n');
    // One line of error (progress lines of prepare may precede it).
    const std::vector<std::string> lines = absl::StrSplit(run.err, '\n', absl::SkipEmpty());
    EXPECT_THAT(lines.back(), ::testing::StartsWith("dsv3-data: ")) << run.err;
  }
  EXPECT_FALSE(fs::exists(out + "/manifest.json"));
}

TEST_F(DataToolTest, HelpPrintsTheUsage) {
  const Outcome run = Data({"help"});
  EXPECT_EQ(run.code, 0);
  EXPECT_THAT(run.out, HasSubstr("prepare --out=DIR [--vocab_size=N]"));
  EXPECT_EQ(Data({}).code, 2);
}

TEST_F(DataToolTest, InspectPrintsTheHeaderIdsAndDecodedText) {
  const std::string out = root_ + "/p6";
  ASSERT_EQ(Prepare(out, 200).code, 0);
  const std::vector<uint32_t> val = Tokens(out + "/val.bin");
  const Outcome run = Data({"inspect", out + "/val.bin", "--count=20"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.out, HasSubstr("version 1 (uint16 tokens)"));
  EXPECT_THAT(run.out, HasSubstr(absl::StrCat("tokens     ", val.size(), "\n")));
  EXPECT_THAT(run.out, HasSubstr("tokenizer  " + out + "/tokenizer.model (vocab 200"));
  std::string ids = absl::StrFormat("%10d:", 0);
  for (int i = 0; i < 16; ++i) absl::StrAppend(&ids, " ", val[i]);
  EXPECT_THAT(run.out, HasSubstr(ids + "\n"));
  EXPECT_THAT(run.out, HasSubstr("text [0, 20):\n"));

  // Across a document boundary the marker appears.
  int64_t eos = std::find(val.begin(), val.end(), 2u) - val.begin();
  const Outcome boundary = Data({"inspect", out + "/val.bin", absl::StrCat("--offset=", eos - 3),
                                 "--count=6", "--tokenizer=" + out + "/tokenizer.model"});
  ASSERT_EQ(boundary.code, 0) << boundary.err;
  EXPECT_THAT(boundary.out, HasSubstr("<end of document>\n"));

  // Without a tokenizer beside it: ids only.
  fs::copy_file(out + "/val.bin", root_ + "/lonely.bin", fs::copy_options::overwrite_existing);
  const Outcome lonely = Data({"inspect", root_ + "/lonely.bin"});
  ASSERT_EQ(lonely.code, 0) << lonely.err;
  EXPECT_THAT(lonely.out, HasSubstr("ids only"));
  EXPECT_THAT(lonely.out, Not(HasSubstr("text [")));
}

TEST_F(DataToolTest, OrderPrintsTheLoadersWindows) {
  const std::string out = root_ + "/p7";
  ASSERT_EQ(Prepare(out, 200).code, 0);
  const Outcome run = Data({"order", out + "/train.bin", "--seq_len=16", "--batch_size=4",
                            "--seed=3", "--step=5", "--steps=2"});
  ASSERT_EQ(run.code, 0) << run.err;
  auto shard = train::TokenShard::Open(out + "/train.bin");
  ASSERT_OK(shard);
  auto loader =
      train::DataLoader::Create(std::shared_ptr<const train::TokenShard>(std::move(*shard)),
                                {.seq_len = 16, .batch_size = 4, .seed = 3});
  ASSERT_OK(loader);
  for (int64_t step : {5, 6}) {
    std::string line = absl::StrFormat("step %d epoch %d:", step, (*loader)->EpochOfStep(step));
    absl::StatusOr<std::vector<int64_t>> windows = (*loader)->GlobalBatchWindows(step);
    ASSERT_OK(windows);
    for (int64_t w : *windows) absl::StrAppend(&line, " ", w);
    EXPECT_THAT(run.out, HasSubstr(line + "\n"));
  }
}

TEST(TokenizerTest, EncodingThenDecodingGivesTheTextBack) {
  std::vector<std::string> sentences;
  for (int i = 0; i < 300; ++i) {
    for (const auto& paragraph : SyntheticText(i)) {
      for (const auto& sentence : paragraph) sentences.push_back(absl::StrJoin(sentence, " "));
    }
  }
  std::string model, error;
  ASSERT_TRUE(TrainBpeTokenizer(sentences, {.vocab_size = 150}, &model, &error)) << error;
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::FromSerialized(model, &error);
  ASSERT_NE(tokenizer, nullptr) << error;
  EXPECT_EQ(tokenizer->vocab_size(), 150);
  EXPECT_EQ(tokenizer->IdToPiece(2), "</s>");
  const std::string text = "the jury said that 1/2 of the county vote was new.";
  const std::vector<int> ids = tokenizer->Encode(text);
  EXPECT_FALSE(ids.empty());
  EXPECT_EQ(tokenizer->Decode(ids), text);
  EXPECT_EQ(Tokenizer::FromSerialized("garbage", &error), nullptr);
  EXPECT_THAT(error, HasSubstr("not a SentencePiece model"));
}

}  // namespace
}  // namespace dsv3::cli
