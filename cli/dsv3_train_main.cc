// dsv3-train: the local training tool, a verb dispatcher. `dsv3-train VERB [FLAGS]` runs the verb's
// command function; each verb lives in its own cli/train_*_cmd.{h,cc}. To add one, include its
// header and add a row to kVerbs.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cli/train_eval_cmd.h"
#include "cli/train_export_cmd.h"
#include "cli/train_run_cmd.h"
#include "cli/train_schedule_cmd.h"

namespace {

using VerbFn = int (*)(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

struct Verb {
  const char* name;
  const char* synopsis;  // shown in the usage text after "dsv3-train "
  VerbFn run;
};

const Verb kVerbs[] = {
    {"run", dsv3::cli::kRunSynopsis, dsv3::cli::RunTrainCommand},
    {"schedule", dsv3::cli::kScheduleSynopsis, dsv3::cli::RunScheduleCommand},
    {"eval", dsv3::cli::kEvalSynopsis, dsv3::cli::RunEvalCommand},
    {"export", dsv3::cli::kExportSynopsis, dsv3::cli::RunExportCommand},
};

void PrintUsage(std::ostream& os) {
  os << "usage: dsv3-train VERB [FLAGS]   (dsv3-train VERB --help for a verb's flags)\n";
  for (const Verb& v : kVerbs) os << "  dsv3-train " << v.synopsis << "\n";
  os << "Exit codes: 0 success, 1 failure, 2 bad usage or bad input.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    PrintUsage(std::cerr);
    return 2;
  }
  const std::string verb = argv[1];
  if (verb == "help" || verb == "--help" || verb == "-h") {
    PrintUsage(std::cout);
    return 0;
  }
  for (const Verb& v : kVerbs) {
    if (verb == v.name)
      return v.run(std::vector<std::string>(argv + 2, argv + argc), std::cout, std::cerr);
  }
  std::cerr << "dsv3-train: unknown verb \"" << verb << "\" (see dsv3-train help)\n";
  return 2;
}
