// The verbs of dsv3ctl, each a function of the parsed options, a JobClient and the two output
// streams, returning the process exit code (ctl_errors.h). They print results on `out` and one-line
// errors on `err`. Argument splitting and flag parsing happen before, in ctl.cc.
#ifndef DSV3_CLI_CTL_COMMANDS_H_
#define DSV3_CLI_CTL_COMMANDS_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cli/ctl_args.h"
#include "cli/ctl_client.h"

namespace dsv3::cli {

// Everything the verbs take from the command line, already validated.
struct CtlOptions {
  std::string coordinator;  // HOST:PORT, for messages (the client already holds the channel)
  int timeout_s = 30;
  bool json = false;
  int events = 10;                      // status: recent events to show
  double retry_s = 60;                  // watch: how long to retry an unreachable coordinator
  std::optional<double> target_tokens;  // report
  EstimateOverrides estimate;           // estimate
  bool out_is_terminal = false;         // watch redraws in place only on a terminal
};

// Runs `verb` with its positional `args` (the verb itself excluded). `verb` is not "help".
int RunVerb(const VerbInfo& verb, const std::vector<std::string>& args, const CtlOptions& options,
            JobClient& client, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_COMMANDS_H_
