// `dsv3-train run --spec=SPEC.json`: trains a job locally in one process, without the service --
// the job spec is parsed and validated as the coordinator would (coordinator/job_spec.h), turned
// into engine/train's TrainerOptions, and run with a progress line per step. Resumes from the
// newest committed checkpoint under checkpoint.dir, or from exactly the one of --resume_step. A
// thin command: no training logic here, and it
// never exits the process, so tests run it in-process. Multi-process runs (--world_size > 1) are
// not implemented yet.
#ifndef DSV3_CLI_TRAIN_RUN_CMD_H_
#define DSV3_CLI_TRAIN_RUN_CMD_H_

#include <ostream>
#include <string>
#include <vector>

namespace dsv3::cli {

// One-line synopsis of the verb's flags, for dsv3-train's usage text.
extern const char kRunSynopsis[];

// Runs `dsv3-train run ARGS...` (`args` are the arguments after the verb):
//   --spec=SPEC.json   the job spec (required); relative paths in it resolve against the current
//                      directory
//   --threads=N        kernel threads (default: all hardware threads)
//   --steps=N          override train.steps (for quick tries; the LR schedule spans N steps and
//                      train.warmup_steps is capped at N)
//   --recompute        recompute norms and MLA up-projections in the backward (spec §2.8)
//   --metrics=FILE     one JSON line per step, validation and checkpoint ("{rank}": per rank;
//                      a rank's checkpoint line is written once the checkpoint is committed)
//   --resume_step=S    resume from the committed checkpoint of exactly step S (0: from the
//                      seed); the directories of later steps under checkpoint.dir are discarded
//                      first, since this run writes those steps again (how a worker starts the
//                      ranks of a new epoch: S is the coordinator's last committed checkpoint)
//   --world_size=N --rank=R --store=DIR   multi-process runs: only --world_size=1 (rank 0) is
//                      accepted for now
//   --help             usage text
// Writes the run's header, one line per step, validation and checkpoint lines and a summary to
// `out`; a one-line message to `err` on failure. SIGINT/SIGTERM stop the run after the current
// step with a checkpoint (the previous handlers are restored before returning).
// Returns 0 when the job's steps are complete; 2 for bad usage or bad input (flags, an unreadable,
// malformed or invalid spec, a checkpoint of another model or a corrupt one, bad token data);
// 1 when training fails (diverged, I/O errors) or was stopped by a signal. --resume_step=S
// without a committed checkpoint of step S is bad input (2, one line naming the committed steps).
int RunTrainCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_RUN_CMD_H_
