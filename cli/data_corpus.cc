// Reading the Brown corpus: listing and checksumming the 500 texts, stripping the POS tags,
// joining words into text, and the train/val rule. The contracts are in data_corpus.h.
#include "cli/data_corpus.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dsv3::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kBootstrapHint[] = "run scripts/bootstrap.sh to fetch the Brown corpus";

bool IsBrownName(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' && name[2] >= '0' &&
         name[2] <= '9' && name[3] >= '0' && name[3] <= '9';
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::InternalError(absl::StrCat("reading ", path, " failed"));
  return std::move(bytes).str();
}

bool NoSpaceBefore(const std::string& word) {
  return word == "," || word == "." || word == ";" || word == ":" || word == "?" || word == "!" ||
         word == ")" || word == "''";
}

bool NoSpaceAfter(const std::string& word) { return word == "(" || word == "``"; }

}  // namespace

std::string StripTag(std::string_view token) {
  const size_t slash = token.rfind('/');
  if (slash == std::string_view::npos) return std::string(token);
  return std::string(token.substr(0, slash));
}

std::string JoinWords(const std::vector<std::string>& words) {
  std::string text;
  bool glue_next = true;  // no space before the first word
  for (const std::string& word : words) {
    if (word.empty()) continue;
    if (!glue_next && !NoSpaceBefore(word)) text += ' ';
    text += (word == "``" || word == "''") ? std::string("\"") : word;
    glue_next = NoSpaceAfter(word);
  }
  return text;
}

BrownDocument ParseBrownText(std::string name, std::string_view raw) {
  BrownDocument doc;
  doc.name = std::move(name);
  std::vector<std::string> paragraph;
  auto end_paragraph = [&] {
    if (!paragraph.empty()) doc.paragraphs.push_back(std::move(paragraph));
    paragraph.clear();
  };
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t eol = raw.find('\n', pos);
    if (eol == std::string_view::npos) eol = raw.size();
    const std::string_view line = raw.substr(pos, eol - pos);
    pos = eol + 1;
    std::vector<std::string> words;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
      size_t j = i;
      while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
      if (j > i) {
        ++doc.words;
        std::string word = StripTag(line.substr(i, j - i));
        if (!word.empty()) words.push_back(std::move(word));
      }
      i = j;
    }
    if (words.empty()) {
      end_paragraph();  // a blank line
    } else {
      std::string sentence = JoinWords(words);
      if (!sentence.empty()) paragraph.push_back(std::move(sentence));
    }
  }
  end_paragraph();
  return doc;
}

std::string ParagraphText(const std::vector<std::string>& sentences) {
  std::string text;
  for (const std::string& sentence : sentences) {
    if (!text.empty()) text += ' ';
    text += sentence;
  }
  return text;
}

absl::StatusOr<BrownCorpusListing> ListBrownCorpus(const std::string& dir,
                                                   const BrownCorpusOptions& options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrFormat("the Brown corpus directory %s does not exist: %s", dir, kBootstrapHint));
  }
  BrownCorpusListing listing;
  listing.dir = dir;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsBrownName(name) && it->is_regular_file()) listing.names.push_back(name);
  }
  if (ec) {
    return absl::InternalError(absl::StrFormat("cannot list %s: %s", dir, ec.message()));
  }
  std::sort(listing.names.begin(), listing.names.end());
  if (static_cast<int>(listing.names.size()) != options.expected_texts) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s holds %d Brown texts (files ca01..cr09), expected %d; the corpus is incomplete: %s",
        dir, listing.names.size(), options.expected_texts, kBootstrapHint));
  }
  uint64_t hash = kFnvOffset;
  for (const std::string& name : listing.names) {
    absl::StatusOr<std::string> bytes = ReadWholeFile((fs::path(dir) / name).string());
    if (!bytes.ok()) return bytes.status();
    hash = Fnv1a64(name, hash);
    hash = Fnv1a64(absl::StrCat(":", bytes->size(), ":"), hash);
    hash = Fnv1a64(*bytes, hash);
    listing.bytes += static_cast<int64_t>(bytes->size());
  }
  listing.checksum = FormatChecksum(hash);
  return listing;
}

absl::StatusOr<std::vector<BrownDocument>> ReadBrownCorpus(
    const BrownCorpusListing& listing, const BrownCorpusOptions& options,
    const std::function<void(int, int)>& progress) {
  std::vector<BrownDocument> docs;
  docs.reserve(listing.names.size());
  const int total = static_cast<int>(listing.names.size());
  for (const std::string& name : listing.names) {
    const std::string path = (fs::path(listing.dir) / name).string();
    absl::StatusOr<std::string> raw = ReadWholeFile(path);
    if (!raw.ok()) return raw.status();
    BrownDocument doc = ParseBrownText(name, *raw);
    if (doc.words < options.min_words_per_text) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s holds %d tagged words, fewer than the %d of any Brown text: the corpus is "
          "truncated; %s",
          path, doc.words, options.min_words_per_text, kBootstrapHint));
    }
    docs.push_back(std::move(doc));
    if (progress) progress(static_cast<int>(docs.size()), total);
  }
  return docs;
}

int ValidationDocumentCount(int num_documents, double val_fraction) {
  return static_cast<int>(std::llround(val_fraction * num_documents));
}

bool IsValidationDocument(int index, int num_documents, int num_val) {
  const int64_t before = int64_t{index} * num_val / num_documents;
  const int64_t after = (int64_t{index} + 1) * num_val / num_documents;
  return after > before;
}

uint64_t Fnv1a64(std::string_view bytes, uint64_t hash) {
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string FormatChecksum(uint64_t hash) { return absl::StrFormat("fnv1a64:%016x", hash); }

absl::StatusOr<std::string> FileChecksum(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat(path, " does not exist"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InternalError(absl::StrCat("cannot open ", path));
  uint64_t hash = kFnvOffset;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    hash = Fnv1a64(std::string_view(buffer.data(), static_cast<size_t>(in.gcount())), hash);
  }
  if (in.bad()) return absl::InternalError(absl::StrCat("reading ", path, " failed"));
  return FormatChecksum(hash);
}

}  // namespace dsv3::cli
