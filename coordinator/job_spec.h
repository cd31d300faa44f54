// Job spec parsing, defaulting and validation: JSON text -> dsv3.v1.JobSpec -> a resolved JobSpec
// (every default filled, relative paths made absolute) or INVALID_ARGUMENT naming the field and the
// rule. Called once, at submit (and by `estimate`). It does not place a job (planner.h) nor store
// it; the rules, their order and the defaults are listed in docs/job-spec.md.
#ifndef DSV3_COORDINATOR_JOB_SPEC_H_
#define DSV3_COORDINATOR_JOB_SPEC_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "dsv3/v1/job.pb.h"

namespace dsv3::coordinator {

// The largest spec text ParseJobSpec accepts, in bytes.
inline constexpr int64_t kMaxJobSpecBytes = int64_t{1} << 20;

// Parses a job spec from its proto3 JSON form (original snake_case names and lowerCamelCase names
// both accepted). Does not validate values or fill defaults (see ValidateJobSpec).
// Errors: INVALID_ARGUMENT, with a message naming the problem:
//   - more than kMaxJobSpecBytes of text;
//   - malformed JSON, with its line and column;
//   - a top level that is not an object;
//   - an unknown field, by its path: `unknown field "model.hiden_size"` (plus a suggestion when a
//     known field is one or two edits away);
//   - a value of the wrong JSON type, by its path:
//     `field "train.steps": expected an integer, got "ten"`.
absl::StatusOr<v1::JobSpec> ParseJobSpec(std::string_view json);

struct ValidateOptions {
  // Directory that relative data and checkpoint paths resolve against (SubmitJobRequest.base_dir).
  // Empty: the process's working directory. A relative base_dir is itself made absolute first.
  std::string base_dir;
  // Open and check the token shards named in `data` (existence, header, size). Only tests and
  // tools that validate a spec away from its data turn this off; the coordinator never does.
  bool check_data_files = true;
};

// Validates a parsed spec and returns it resolved: every default filled in (docs/job-spec.md lists
// them), data and checkpoint paths absolute and normalised. The input is not modified.
// Errors: INVALID_ARGUMENT for the first rule the spec breaks, in the fixed order of
// docs/job-spec.md (name, stage, precision, model, stage-vs-model, parallel, train, checkpoint,
// accounting, data files). The message names the field(s) and the rule, e.g.
// `parallel.expert_parallel=3 does not divide model.n_routed_experts=16`.
absl::StatusOr<v1::JobSpec> ValidateJobSpec(const v1::JobSpec& spec, const ValidateOptions& opts);

// Validates what a cost estimate needs: the model section (as ValidateJobSpec does, so a released
// Hugging Face DeepSeek-V3 config.json pasted in as "model" passes, rope_scaling included), the
// parallel section if present, `stage` if set and `train.seq_len` if set. Name, train, data,
// checkpoint and the stage-vs-rope_scaling rule are not checked; no file is opened.
// Errors: INVALID_ARGUMENT as for ValidateJobSpec.
absl::Status ValidateForEstimate(const v1::JobSpec& spec);

// The engine's view of a model section. A field the section leaves out keeps ModelConfig's default
// (rms_norm_eps 1e-6, rope_theta 10000, n_group 1, ...). Does not validate: call it on a spec that
// ValidateJobSpec or ValidateForEstimate accepted.
ModelConfig ToModelConfig(const v1::ModelSpec& model);

}  // namespace dsv3::coordinator

#endif  // DSV3_COORDINATOR_JOB_SPEC_H_
