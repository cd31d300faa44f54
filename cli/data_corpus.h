// The Brown corpus as dsv3-data reads it: the 500 texts ca01..cr09 of "word/TAG" tokens (one
// sentence per line, paragraphs separated by blank lines), turned into plain text with the
// part-of-speech tags stripped; the corpus checksum; and the deterministic train/val split by
// document. Not tokenization (data_tokenizer.h) and not the output files (data_prepare.h).
#ifndef DSV3_CLI_DATA_CORPUS_H_
#define DSV3_CLI_DATA_CORPUS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace dsv3::cli {

// "word/TAG" -> "word", splitting at the last '/' so words with a slash survive ("1/2/cd" ->
// "1/2", "and/or/cc" -> "and/or", "//in" -> "/"). A token without '/' is returned unchanged.
std::string StripTag(std::string_view token);

// Joins the words of one sentence into text: single spaces, except none before , . ; : ? ! ) and
// closing quotes, and none after ( and opening quotes; Brown's `` and '' become ".
std::string JoinWords(const std::vector<std::string>& words);

// One Brown text as plain text.
struct BrownDocument {
  std::string name;                                  // "ca01"
  std::vector<std::vector<std::string>> paragraphs;  // paragraphs of sentences (plain text)
  int64_t words = 0;                                 // tagged tokens read
};

// Parses the raw text of one Brown file. Lines are sentences; one or more blank lines end a
// paragraph; leading tabs/spaces are ignored.
BrownDocument ParseBrownText(std::string name, std::string_view raw);

// Paragraph p of `doc` as one line: its sentences joined by single spaces.
std::string ParagraphText(const std::vector<std::string>& sentences);

// What ReadBrownCorpus expects; the defaults describe the real corpus.
struct BrownCorpusOptions {
  int expected_texts = 500;           // files named c[a-r][0-9][0-9]
  int64_t min_words_per_text = 1000;  // the real texts hold 2148..2587; fewer means truncated
};

// The corpus files' names and the checksum of their contents, without parsing them.
struct BrownCorpusListing {
  std::string dir;
  std::vector<std::string> names;  // sorted: ca01, ca02, ..., cr09
  int64_t bytes = 0;               // total size of the texts
  std::string checksum;            // "fnv1a64:<16 hex>" over each name, size and content in order
};

// Lists and checksums the texts in `dir`. Errors (each says to run scripts/bootstrap.sh):
// NOT_FOUND if `dir` does not exist or is not a directory; FAILED_PRECONDITION if it holds a number
// of texts other than options.expected_texts; INTERNAL if a file cannot be read.
absl::StatusOr<BrownCorpusListing> ListBrownCorpus(const std::string& dir,
                                                   const BrownCorpusOptions& options = {});

// Reads and parses every text of `listing`, calling `progress(done, total)` after each.
// FAILED_PRECONDITION, naming the file, if a text has fewer than options.min_words_per_text tagged
// words (a truncated corpus); INTERNAL if a file cannot be read.
absl::StatusOr<std::vector<BrownDocument>> ReadBrownCorpus(
    const BrownCorpusListing& listing, const BrownCorpusOptions& options = {},
    const std::function<void(int, int)>& progress = nullptr);

// The number of validation documents for `val_fraction` of `num_documents`: round(F * N).
int ValidationDocumentCount(int num_documents, double val_fraction);

// Whether document `index` (0-based, in name order) of `num_documents` is a validation document
// when `num_val` of them are: the ones where floor((index + 1) * num_val / N) steps up, i.e. evenly
// spaced (for 50 of 500: every 10th, ca10, ca20, ...).
bool IsValidationDocument(int index, int num_documents, int num_val);

// FNV-1a 64-bit hash, continued from `hash` (start with kFnvOffset).
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
uint64_t Fnv1a64(std::string_view bytes, uint64_t hash = kFnvOffset);

// "fnv1a64:<16 lowercase hex digits>".
std::string FormatChecksum(uint64_t hash);

// The checksum of a file's contents in that format. INTERNAL (NOT_FOUND if missing) on failure.
absl::StatusOr<std::string> FileChecksum(const std::string& path);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_DATA_CORPUS_H_
