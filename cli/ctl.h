// dsv3ctl's entry point as a function, so tests run the whole client in-process against a fake
// server. main() in dsv3ctl_main.cc only calls it. The verbs themselves are in ctl_commands.h.
#ifndef DSV3_CLI_CTL_H_
#define DSV3_CLI_CTL_H_

#include <ostream>

namespace dsv3::cli {

// Runs `dsv3ctl ARGS...` (argv[0] is the program name): parses the flags (before or after the
// verb), checks the usage, connects to the coordinator and runs the verb. Results go to `out`,
// one-line errors to `err`. Returns the exit code: 0 success, 1 server-side error, 2 bad usage or
// input. Every call first resets dsv3ctl's flags to their defaults, so it can be called repeatedly
// in one process; not safe to call from two threads at once (the flags are global).
int RunCtl(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_H_
