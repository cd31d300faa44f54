// dsv3-data's entry point as a function (main() in dsv3_data_main.cc only calls it), so tests run
// the whole tool in-process: the command line, the verbs prepare/inspect/order/help, and the exit
// codes. The verbs' work is in data_prepare.h and data_inspect.h.
#ifndef DSV3_CLI_DATA_TOOL_H_
#define DSV3_CLI_DATA_TOOL_H_

#include <ostream>

#include "cli/data_corpus.h"

namespace dsv3::cli {

// Runs `dsv3-data ARGS...` (argv[0] is the program name). Results go to `out`; progress and
// one-line errors ("dsv3-data: ...") to `err`. Returns the exit code: 0 success (including "already
// up to date"), 1 an internal failure (I/O, SentencePiece), 2 bad usage or bad input (unknown verb
// or flag, bad value, missing or short corpus, bad vocab size, unwritable output directory, a
// corrupt shard). `corpus` says what a complete corpus looks like (tests use a small one).
// Keeps no global state; safe to call repeatedly.
int RunData(int argc, char** argv, std::ostream& out, std::ostream& err,
            const BrownCorpusOptions& corpus = {});

}  // namespace dsv3::cli

#endif  // DSV3_CLI_DATA_TOOL_H_
