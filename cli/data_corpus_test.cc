// Tests of data_corpus: tag stripping (slashes inside words), joining words into text, paragraph
// parsing in the Brown file layout, the train/val rule, FNV-1a against its published test vectors,
// and the corpus errors.
#include "cli/data_corpus.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;
using ::dsv3::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(StripTagTest, RemovesTheTagAfterTheLastSlash) {
  EXPECT_EQ(StripTag("The/at"), "The");
  EXPECT_EQ(StripTag("Atlanta's/np$"), "Atlanta's");
  EXPECT_EQ(StripTag("Fulton/np-tl"), "Fulton");
  EXPECT_EQ(StripTag("./."), ".");
  EXPECT_EQ(StripTag("``/``"), "``");
}

TEST(StripTagTest, KeepsSlashesThatBelongToTheWord) {
  EXPECT_EQ(StripTag("1/2/cd"), "1/2");
  EXPECT_EQ(StripTag("14-1/2/cd"), "14-1/2");
  EXPECT_EQ(StripTag("and/or/cc"), "and/or");
  EXPECT_EQ(StripTag("mg/l/hr/nn"), "mg/l/hr");
  EXPECT_EQ(StripTag("//in"), "/");
  EXPECT_EQ(StripTag("AAb//nn"), "AAb/");
  EXPECT_EQ(StripTag("untagged"), "untagged");
}

TEST(JoinWordsTest, AttachesPunctuationAndQuotes) {
  EXPECT_EQ(JoinWords({"``", "Only", "a", "handful", "''", ",", "the", "jury", "said", "."}),
            "\"Only a handful\", the jury said.");
  EXPECT_EQ(JoinWords({"It", "(", "the", "bill", ")", "passed", ";", "why", "?", "Yes", "!"}),
            "It (the bill) passed; why? Yes!");
  EXPECT_EQ(JoinWords({"a", "--", "b", ":", "1/2"}), "a -- b: 1/2");
  EXPECT_EQ(JoinWords({}), "");
}

TEST(ParseBrownTextTest, LinesAreSentencesAndBlankLinesEndParagraphs) {
  const std::string raw =
      "\n\n\tThe/at jury/nn said/vbd ./.\nIt/pps was/bedz 1/2/cd done/vbn ./.\n\n\n"
      "\tA/at new/jj paragraph/nn ./.\n\n";
  const BrownDocument doc = ParseBrownText("ca01", raw);
  EXPECT_EQ(doc.name, "ca01");
  EXPECT_EQ(doc.words, 13);
  ASSERT_EQ(doc.paragraphs.size(), 2u);
  EXPECT_THAT(doc.paragraphs[0], ElementsAre("The jury said.", "It was 1/2 done."));
  EXPECT_THAT(doc.paragraphs[1], ElementsAre("A new paragraph."));
  EXPECT_EQ(ParagraphText(doc.paragraphs[0]), "The jury said. It was 1/2 done.");
}

TEST(SplitTest, OneTenthOfFiveHundredIsEveryTenthText) {
  EXPECT_EQ(ValidationDocumentCount(500, 0.1), 50);
  std::vector<int> val;
  for (int i = 0; i < 500; ++i) {
    if (IsValidationDocument(i, 500, 50)) val.push_back(i);
  }
  ASSERT_EQ(val.size(), 50u);
  for (int k = 0; k < 50; ++k) EXPECT_EQ(val[k], 10 * k + 9);
}

TEST(SplitTest, AnyFractionGivesExactlyItsCountEvenlySpaced) {
  for (double fraction : {0.002, 0.05, 0.25, 0.3333, 0.5, 0.9}) {
    const int num_val = ValidationDocumentCount(500, fraction);
    int count = 0, longest_gap = 0, gap = 0;
    for (int i = 0; i < 500; ++i) {
      if (IsValidationDocument(i, 500, num_val)) {
        ++count;
        gap = 0;
      } else {
        longest_gap = std::max(longest_gap, ++gap);
      }
    }
    EXPECT_EQ(count, num_val) << "fraction " << fraction;
    EXPECT_LE(longest_gap, 500 / num_val) << "fraction " << fraction;
  }
}

TEST(ChecksumTest, Fnv1a64MatchesThePublishedTestVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
  EXPECT_EQ(Fnv1a64("bar", Fnv1a64("foo")), Fnv1a64("foobar"));
  EXPECT_EQ(FormatChecksum(0xaf63dc4c8601ec8cULL), "fnv1a64:af63dc4c8601ec8c");
}

class CorpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/data_corpus_test.XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

TEST_F(CorpusTest, AMissingDirectorySaysToRunBootstrap) {
  EXPECT_THAT(ListBrownCorpus(dir_ + "/none").status(),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("does not exist"), HasSubstr("scripts/bootstrap.sh"))));
}

TEST_F(CorpusTest, TooFewTextsIsAnIncompleteCorpus) {
  Write("ca01", "The/at cat/nn ./.\n");
  Write("ca02", "The/at dog/nn ./.\n");
  Write("README", "not a text");
  EXPECT_THAT(ListBrownCorpus(dir_).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("holds 2 Brown texts"), HasSubstr("expected 500"),
                             HasSubstr("scripts/bootstrap.sh"))));
}

TEST_F(CorpusTest, ListingSortsTheTextsAndTheChecksumFollowsTheContents) {
  Write("cb01", "b/nn ./.\n");
  Write("ca01", "a/nn ./.\n");
  const BrownCorpusOptions options{.expected_texts = 2, .min_words_per_text = 1};
  absl::StatusOr<BrownCorpusListing> listing = ListBrownCorpus(dir_, options);
  ASSERT_OK(listing);
  EXPECT_THAT(listing->names, ElementsAre("ca01", "cb01"));
  EXPECT_EQ(listing->bytes, 18);
  const std::string before = listing->checksum;
  EXPECT_EQ(ListBrownCorpus(dir_, options)->checksum, before);
  Write("cb01", "c/nn ./.\n");
  EXPECT_NE(ListBrownCorpus(dir_, options)->checksum, before);
}

TEST_F(CorpusTest, ATruncatedTextIsNamed) {
  Write("ca01", "a/at b/nn c/vb ./.\n");
  Write("ca02", "a/at ./.\n");
  const BrownCorpusOptions options{.expected_texts = 2, .min_words_per_text = 3};
  absl::StatusOr<BrownCorpusListing> listing = ListBrownCorpus(dir_, options);
  ASSERT_OK(listing);
  EXPECT_THAT(ReadBrownCorpus(*listing, options).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("ca02 holds 2 tagged words"), HasSubstr("truncated"))));
}

}  // namespace
}  // namespace dsv3::cli
