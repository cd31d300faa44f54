// `dsv3-train eval`: runs the C++ model once on a token batch and writes the files of DESIGN.md
// "Model I/O" (loss.json, logits.npy, experts.npy, grads.safetensors) -- the same files
// tests/reference/deepseek_v3_ref.py `eval` writes, so the two can be compared. A thin command over
// engine/model; it never exits the process, so tests run it in-process. Not a training step: no
// optimizer, no bias update, expert loads are not counted.
#ifndef DSV3_CLI_TRAIN_EVAL_CMD_H_
#define DSV3_CLI_TRAIN_EVAL_CMD_H_

#include <ostream>
#include <string>
#include <vector>

namespace dsv3::cli {

// One-line synopsis of the verb's flags, for dsv3-train's usage text.
extern const char kEvalSynopsis[];

// Runs `dsv3-train eval ARGS...` (`args` are the arguments after the verb):
//   --model=DIR          a model directory: config.json (HF keys) + model.safetensors (required)
//   --tokens=FILE.npy    int32 [B, T+1] token ids (required)
//   --out=DIR            output directory, created if needed (required)
//   --precision=fp32|bf16|fp8      (default fp32)
//   --mtp_loss_weight=X  lambda (default 0.3)
//   --seq_aux_loss_alpha=X         alpha (default 1e-4)
//   --threads=N          kernel threads (default: the hardware concurrency)
//   --no_grads           forward only: no backward, no grads.safetensors
//   --help               usage text
// Writes one summary line to `out` and a one-line message to `err` on failure. Returns 0 on
// success; 2 for bad usage or bad input (flags, an invalid config.json, weights that do not match
// the config or are corrupt, a token file of the wrong dtype or rank or with ids outside
// [0, vocab_size)); 1 when the model fails or an output cannot be written.
int RunEvalCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace dsv3::cli

#endif  // DSV3_CLI_TRAIN_EVAL_CMD_H_
