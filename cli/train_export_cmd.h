// `dsv3-train export`: a committed training checkpoint to a Hugging Face-layout model directory
// (config.json + model.safetensors, F32) that `dsv3-train eval` and the PyTorch reference load.
// A thin command over engine/model/checkpoint_export.h; it never exits the process, so tests run
// it in-process. Optimizer and rank state are not exported.
#ifndef DSV3_CLI_TRAIN_EXPORT_CMD_H_
#define DSV3_CLI_TRAIN_EXPORT_CMD_H_

#include <ostream>
#include <string>
#include <vector>

namespace dsv3::cli {

// One-line synopsis of the verb's flags, for dsv3-train's usage text.
extern const char kExportSynopsis[];

// Runs `dsv3-train export ARGS...` (`args` are the arguments after the verb):
//   --checkpoint=DIR  a committed checkpoint directory (<root>/step-<N>, with MANIFEST.json)
//   --out=DIR         the model directory to write (created if needed; config.json and
//                     model.safetensors in it are replaced)
//   --help            usage text
// Writes one summary line to `out` and a one-line message to `err` on failure. Returns 0 on
// success; 2 for bad usage or a checkpoint that cannot be exported (missing, not committed,
// corrupt, ranks disagreeing about a tensor, tensors not matching the manifest's model config);
// 1 when the output cannot be written.
int RunExportCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_EXPORT_CMD_H_
