// What dsv3ctl shows people for the coordinator's messages: the jobs and workers tables, the status
// block of one job, and watch's one-line and live views. Pure functions of the messages and the
// current time (passed in); the JSON output (--json) is in ToJson. No I/O, no RPCs.
#ifndef DSV3_CLI_CTL_VIEWS_H_
#define DSV3_CLI_CTL_VIEWS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "dsv3/v1/job.pb.h"
#include "dsv3/v1/job_service.pb.h"
#include "google/protobuf/message.h"

namespace dsv3::cli {

// "RUNNING", "WAITING_FOR_ENGINE", ...; "UNKNOWN(<n>)" for a value this build does not know.
std::string JobStateName(dsv3::v1::JobState state);
std::string RankStateName(dsv3::v1::RankState state);

// SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(dsv3::v1::JobState state);

// watch's exit code for the state the job was last seen in: 1 for FAILED, 0 otherwise.
int ExitCodeForJobState(dsv3::v1::JobState state);

// `message` in proto3 JSON with the .proto field names and every primitive field (zeros included);
// indented when `pretty`, else on one line. Ends in '\n'.
std::string ToJson(const google::protobuf::Message& message, bool pretty);

// The rows' label for a device kind: "GPU" for "cuda", "CPU device" for "cpu", else "device".
std::string DeviceLabel(const std::string& device_kind);

// `jobs`: ID, NAME, STATE, STEP (step/total), LOSS, DEVICE-H, COST, AGE; "No jobs." when empty.
std::string RenderJobsTable(const dsv3::v1::ListJobsResponse& jobs, int64_t now_ms);

// `workers`: NAME, ID, NODE, DEVICE, STATE, JOB, RANK, HEARTBEAT (time since the last one);
// "No workers." when empty.
std::string RenderWorkersTable(const dsv3::v1::ListWorkersResponse& workers, int64_t now_ms);

// `status`: the readable block: job, state and message, epoch, step/total with a progress bar (and
// the coordinator's ETA while RUNNING), loss, and once the ranks report training figures
// (JobStatus.progress) the loss terms, lr, grad norm, tokens/s, expert load balance and the last
// validation; the last committed checkpoint, accounting, placement (every rank: worker, node,
// stage, experts, replica, state, detail) and the events. Ends in '\n'.
std::string RenderJobStatus(const dsv3::v1::JobStatus& job, int64_t now_ms);

// watch figures that come from the client's own observation, not from the message.
struct WatchFigures {
  // From EtaEstimator; nullopt = unknown, and then a RUNNING job's progress.eta_seconds (the
  // coordinator's estimate from the recent step times) is shown when it has one.
  std::optional<double> seconds_left;
  int64_t now_ms = 0;
};

// watch when stdout is not a terminal: one line per update, e.g.
// "12:03:04 RUNNING step 120/300 (40.0%) loss 3.4521 lr 2.95e-03 val 3.5102 ckpt 100 1.23K tok/s
//  MFU 0.12% 0.214 device-h $0.43 ETA 3m05s | training: step 120/300, ...". lr, val and ckpt
// appear once known. Ends in '\n'.
std::string RenderWatchLine(const dsv3::v1::JobStatus& job, const WatchFigures& figures);

// What a person watching the job would notice changing: state, epoch, step, loss, the last
// validation and checkpoint, message and the ranks' states, but not the accounting figures that
// grow with every heartbeat. watch prints a line when this changes (or every kWatchLineEveryS
// seconds), not for every update of the stream.
std::string WatchChangeKey(const dsv3::v1::JobStatus& job);
inline constexpr double kWatchLineEveryS = 10;

// watch on a terminal: a compact block redrawn in place, each line ending in '\n': name, state
// and epoch; progress bar, ETA; loss and the figures; once the ranks report, the loss terms with
// lr, grad norm, tokens/s and load balance, and the last validation and checkpoint; the message;
// the ranks' states.
std::string RenderWatchPanel(const dsv3::v1::JobStatus& job, const WatchFigures& figures);

// A summary of the ranks' states in RankState order, e.g.
// "4 ranks: 1 WAITING_FOR_ENGINE, 3 TRAINING"; "no ranks".
std::string SummarizeRanks(const dsv3::v1::JobStatus& job);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_CTL_VIEWS_H_
