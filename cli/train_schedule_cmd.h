// `dsv3-train schedule`: prints a pipeline schedule's per-rank op lists in the notation of spec
// Appendix A, and optionally its simulated timeline. A thin command over engine/parallel; it never
// exits the process, so tests run it in-process into strings.
#ifndef DSV3_CLI_TRAIN_SCHEDULE_CMD_H_
#define DSV3_CLI_TRAIN_SCHEDULE_CMD_H_

#include <ostream>
#include <string>
#include <vector>

namespace dsv3::cli {

// One-line synopsis of the verb's flags, for dsv3-train's usage text.
extern const char kScheduleSynopsis[];

// Runs `dsv3-train schedule ARGS...` (`args` are the arguments after the verb):
//   --kind=dualpipe|dualpipev|1f1b  --ranks=N  --micro_batches=C   (all required)
//   --[no]comm        print comm batches (default on; --nocomm prints compute ops only)
//   --timeline        also print the simulated timeline (Appendix A.1 timing notation)
//   --costs=F,B,W,FB  op costs for --timeline (default 1,2,1,3)
//   --timing=dataflow|rendezvous   timing model for --timeline (default dataflow)
//   --help            this text
// Flags take "--name=value" or "--name value". Writes the schedule to `out`, one line per rank
// ("rank R : OPS"), and a one-line message to `err` on failure. Returns 0 on success, 2 for bad
// usage or a (ranks, micro_batches) the schedule rejects (the message names the rule), 1 if the
// built schedule fails its simulation (a bug).
int RunScheduleCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_SCHEDULE_CMD_H_
