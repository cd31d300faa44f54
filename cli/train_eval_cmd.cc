// `dsv3-train eval` (train_eval_cmd.h): flags, the model directory and token file, one Run of the
// engine's model, and the output files. No model logic here.
#include "cli/train_eval_cmd.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/train_flags.h"
#include "cli/train_model_dir.h"
#include "engine/model/model.h"
#include "engine/model/model_io.h"
#include "engine/train/posix_file.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/testing/npy.h"

namespace dsv3::cli {

const char kEvalSynopsis[] =
    "eval --model=DIR --tokens=FILE.npy --out=DIR [--precision=fp32|bf16|fp8] "
    "[--mtp_loss_weight=0.3] [--seq_aux_loss_alpha=1e-4] [--threads=N] [--no_grads]";

namespace {

constexpr char kUsage[] =
    "usage: dsv3-train eval --model=DIR --tokens=FILE.npy --out=DIR [--precision=fp32|bf16|fp8]\n"
    "                       [--mtp_loss_weight=0.3] [--seq_aux_loss_alpha=1e-4] [--threads=N]\n"
    "                       [--no_grads]\n"
    "Runs the model of DIR (config.json + model.safetensors, Hugging Face DeepSeek-V3 layout) on\n"
    "a token batch (int32 .npy [B, T+1]) and writes to --out:\n"
    "  loss.json          loss, main_loss, mtp_loss, balance_loss\n"
    "  logits.npy         float32 [B, T, V], the main head's logits\n"
    "  experts.npy        int32 [moe layers, B*T, K], the chosen experts (MTP layer last)\n"
    "  grads.safetensors  float32 gradient of loss for every parameter (not with --no_grads)\n"
    "  --precision           fp32 (default), bf16 or fp8 GEMMs (spec section 11.9)\n"
    "  --mtp_loss_weight     lambda of loss = main + lambda * mtp + balance (default 0.3)\n"
    "  --seq_aux_loss_alpha  alpha of the sequence-wise balance loss (default 1e-4)\n"
    "  --threads             kernel threads (default: all hardware threads)\n"
    "  --no_grads            forward only\n"
    "Exit codes: 0 success, 1 model or output failure, 2 bad usage or bad input.\n";

// A failure with its exit code.
struct Failure {
  int exit_code;
  std::string message;
};

Failure BadInput(const absl::Status& s) { return {2, std::string(s.message())}; }
Failure BadInput(std::string message) { return {2, std::move(message)}; }

struct Options {
  std::string model_dir;
  std::string tokens_path;
  std::string out_dir;
  model::ModelOptions model;
  int threads = 1;
  bool grads = true;
};

std::optional<Failure> ParseOptions(const std::map<std::string, std::string>& flags, Options* o) {
  for (const char* required : {"model", "tokens", "out"}) {
    if (!flags.count(required) || flags.at(required).empty()) {
      return BadInput("--model, --tokens and --out are required (see --help)");
    }
  }
  o->model_dir = flags.at("model");
  o->tokens_path = flags.at("tokens");
  o->out_dir = flags.at("out");
  if (auto it = flags.find("precision"); it != flags.end()) {
    absl::StatusOr<model::Precision> p = model::ParsePrecision(it->second);
    if (!p.ok()) return BadInput(p.status());
    o->model.precision = *p;
  }
  for (const auto& [name, field] :
       {std::pair<const char*, double*>{"mtp_loss_weight", &o->model.mtp_loss_weight},
        std::pair<const char*, double*>{"seq_aux_loss_alpha", &o->model.seq_aux_loss_alpha}}) {
    auto it = flags.find(name);
    if (it == flags.end()) continue;
    if (!absl::SimpleAtod(it->second, field) || !std::isfinite(*field) || *field < 0) {
      return BadInput(
          absl::StrCat("--", name, " needs a finite number >= 0, got \"", it->second, "\""));
    }
  }
  o->threads = std::max(1u, std::thread::hardware_concurrency());
  if (auto it = flags.find("threads"); it != flags.end()) {
    if (!absl::SimpleAtoi(it->second, &o->threads) || o->threads < 1 || o->threads > 4096) {
      return BadInput(
          absl::StrCat("--threads needs an integer in [1, 4096], got \"", it->second, "\""));
    }
  }
  if (auto it = flags.find("no_grads"); it != flags.end()) o->grads = it->second != "true";
  return std::nullopt;
}

// The token batch: int32 [B, T+1], ids in [0, vocab_size), T >= 1 (>= 2 with MTP).
struct Tokens {
  std::vector<int32_t> ids;
  int64_t rows = 0;
  int64_t seq_len = 0;  // T
};

absl::StatusOr<Tokens> ReadTokens(const std::string& path, const ModelConfig& config) {
  kernels::NpyArray array;
  if (std::string error = kernels::ReadNpy(path, &array); !error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--tokens: ", error));
  }
  if (array.dtype != kernels::NpyDtype::kInt32 || array.shape.size() != 2) {
    std::string shape;
    for (int64_t d : array.shape) absl::StrAppend(&shape, shape.empty() ? "" : ", ", d);
    const char* dtype = array.dtype == kernels::NpyDtype::kFloat32   ? "float32"
                        : array.dtype == kernels::NpyDtype::kFloat64 ? "float64"
                        : array.dtype == kernels::NpyDtype::kInt32   ? "int32"
                        : array.dtype == kernels::NpyDtype::kInt64   ? "int64"
                                                                     : "uint8";
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected int32 [B, T+1], got ", dtype, " [", shape, "]"));
  }
  Tokens t;
  t.rows = array.shape[0];
  t.seq_len = array.shape[1] - 1;
  const int64_t min_cols = config.num_nextn_predict_layers > 0 ? 3 : 2;
  if (t.rows < 1 || t.seq_len + 1 < min_cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: shape [%d, %d] needs B >= 1 and T+1 >= %d columns (T >= %d predicted positions%s)",
        path, array.shape[0], array.shape[1], min_cols, min_cols - 1,
        min_cols == 3 ? "; MTP predicts two ahead" : ""));
  }
  t.ids = array.AsInt32();
  for (int64_t i = 0; i < static_cast<int64_t>(t.ids.size()); ++i) {
    if (t.ids[i] < 0 || t.ids[i] >= config.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tokens[%d, %d]=%d is outside [0, vocab_size=%d)", path,
                          i / (t.seq_len + 1), i % (t.seq_len + 1), t.ids[i], config.vocab_size));
    }
  }
  return t;
}

// A double as JSON, exactly (17 significant digits); NaN and infinities as Python's json writes
// them.
std::string JsonDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return absl::StrFormat("%.17g", v);
}

std::string LossJson(const model::LossTerms& l) {
  return absl::StrCat("{\n  \"loss\": ", JsonDouble(l.loss),
                      ",\n  \"main_loss\": ", JsonDouble(l.main_loss),
                      ",\n  \"mtp_loss\": ", JsonDouble(l.mtp_loss),
                      ",\n  \"balance_loss\": ", JsonDouble(l.balance_loss), "\n}\n");
}

std::optional<Failure> Eval(const Options& o, std::ostream& out) {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<ModelDir> dir = ReadModelDir(o.model_dir);
  if (!dir.ok()) return BadInput(dir.status());
  const ModelConfig& config = dir->config;
  absl::StatusOr<Tokens> tokens = ReadTokens(o.tokens_path, config);
  if (!tokens.ok()) return BadInput(tokens.status());

  kernels::ThreadPool pool(o.threads);
  absl::StatusOr<std::unique_ptr<model::Model>> m = model::Model::Create(config, o.model, &pool);
  if (!m.ok()) {
    return Failure{m.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                   absl::StrCat(o.model_dir, ": ", m.status().message())};
  }
  model::Model& model = **m;
  if (absl::Status s = model::LoadWeights(dir->weights_path, &model.parameters()); !s.ok()) {
    return BadInput(s);
  }

  const int64_t b = tokens->rows, t = tokens->seq_len, v = config.vocab_size;
  const int64_t k = config.num_experts_per_tok, layers = model.num_moe_layers();
  std::vector<float> logits(static_cast<size_t>(b * t * v));
  std::vector<int32_t> experts(static_cast<size_t>(layers * b * t * k));
  model::RunOptions run;
  run.backward = o.grads;
  run.count_loads = false;
  run.logits = logits.data();
  run.experts = experts.data();
  model.parameters().ZeroGrads();
  absl::StatusOr<model::LossTerms> loss =
      model.Run(model::TokenRows{tokens->ids.data(), b, t}, run);
  if (!loss.ok()) {
    return Failure{loss.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1,
                   std::string(loss.status().message())};
  }

  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return Failure{1, absl::StrCat("cannot create ", o.out_dir, ": ", ec.message())};
  const auto path = [&](const char* name) { return (fs::path(o.out_dir) / name).string(); };
  if (absl::Status s = train::WriteFileAtomically(path("loss.json"), LossJson(*loss)); !s.ok()) {
    return Failure{1, std::string(s.message())};
  }
  if (std::string e = kernels::WriteNpy(path("logits.npy"), {b, t, v}, logits.data()); !e.empty()) {
    return Failure{1, e};
  }
  if (std::string e = kernels::WriteNpy(path("experts.npy"), {layers, b * t, k}, experts.data());
      !e.empty()) {
    return Failure{1, e};
  }
  if (o.grads) {
    if (absl::Status s = model::WriteParameters(model.parameters(), model::ParameterBuffer::kGrads,
                                                path("grads.safetensors"));
        !s.ok()) {
      return Failure{1, std::string(s.message())};
    }
  } else {
    fs::remove(path("grads.safetensors"), ec);  // never leave a stale one next to new outputs
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out << absl::StrFormat(
      "loss %.9g main_loss %.9g mtp_loss %.9g balance_loss %.9g (%s, B=%d T=%d, %d threads, "
      "%.1f s) -> %s\n",
      loss->loss, loss->main_loss, loss->mtp_loss, loss->balance_loss,
      std::string(model::PrecisionName(o.model.precision)), b, t, o.threads, seconds, o.out_dir);
  return std::nullopt;
}

}  // namespace

int RunEvalCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::map<std::string, std::string>> flags = ParseVerbFlags(
      args,
      {"model", "tokens", "out", "precision", "mtp_loss_weight", "seq_aux_loss_alpha", "threads"},
      {"no_grads"});
  if (!flags.ok()) {
    err << "dsv3-train eval: " << flags.status().message() << " (see --help)\n";
    return 2;
  }
  if (flags->count("help")) {
    out << kUsage;
    return 0;
  }
  Options options;
  std::optional<Failure> failure = ParseOptions(*flags, &options);
  if (!failure) failure = Eval(options, out);
  if (failure) {
    err << "dsv3-train eval: " << failure->message << "\n";
    return failure->exit_code;
  }
  return 0;
}

}  // namespace dsv3::cli
