// `dsv3-train export` (train_export_cmd.h): flags, then engine/model's checkpoint loading and
// model-directory writing. No checkpoint logic here.
#include "cli/train_export_cmd.h"

#include <map>

#include "absl/strings/str_format.h"
#include "cli/train_flags.h"
#include "engine/model/checkpoint_export.h"
#include "engine/model/model_io.h"

namespace dsv3::cli {

const char kExportSynopsis[] = "export --checkpoint=DIR --out=DIR";

namespace {

constexpr char kUsage[] =
    "usage: dsv3-train export --checkpoint=DIR --out=DIR\n"
    "Writes the model of a committed checkpoint (DIR = <checkpoint root>/step-<N>) as a Hugging\n"
    "Face-layout model directory: --out/config.json and --out/model.safetensors (float32), which\n"
    "dsv3-train eval and tests/reference/deepseek_v3_ref.py eval read. Every file is verified\n"
    "against the checkpoint's manifest first. Optimizer and rank state are not exported.\n"
    "Exit codes: 0 success, 1 output failure, 2 bad usage or a checkpoint that cannot be "
    "exported.\n";

}  // namespace

int RunExportCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::map<std::string, std::string>> flags =
      ParseVerbFlags(args, {"checkpoint", "out"}, {});
  if (!flags.ok()) {
    err << "dsv3-train export: " << flags.status().message() << " (see --help)\n";
    return 2;
  }
  if (flags->count("help")) {
    out << kUsage;
    return 0;
  }
  if (!flags->count("checkpoint") || !flags->count("out") || flags->at("checkpoint").empty() ||
      flags->at("out").empty()) {
    err << "dsv3-train export: --checkpoint and --out are required (see --help)\n";
    return 2;
  }
  const std::string& out_dir = flags->at("out");
  absl::StatusOr<model::CheckpointModel> m = model::LoadCheckpointModel(flags->at("checkpoint"));
  if (!m.ok()) {
    err << "dsv3-train export: " << m.status().message() << "\n";
    return 2;
  }
  if (absl::Status s = model::WriteModelDir(out_dir, m->config, m->params); !s.ok()) {
    err << "dsv3-train export: " << s.message() << "\n";
    return 1;
  }
  out << absl::StrFormat("exported step %d (%d ranks): %d tensors, %d parameters -> %s\n", m->step,
                         m->world_size, m->params.layout.params().size(),
                         m->params.layout.total_size(), out_dir);
  return 0;
}

}  // namespace dsv3::cli
