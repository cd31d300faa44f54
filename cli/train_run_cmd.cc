// `dsv3-train run` (train_run_cmd.h): flags, the job spec -> TrainerOptions, and the progress
// lines. The loop itself is engine/train/trainer.h.
#include "cli/train_run_cmd.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "cli/train_flags.h"
#include "common/rank_position.h"
#include "coordinator/job_spec.h"
#include "coordinator/planner.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/store_file.h"
#include "engine/train/checkpoint.h"
#include "engine/train/trainer.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "worker/coordinator_store.h"

namespace dsv3::cli {

const char kRunSynopsis[] =
    "run --spec=SPEC.json [--threads=N] [--steps=N] [--recompute] [--metrics=FILE] "
    "[--resume_step=S] [--world_size=N --rank=R --store=DIR]";

namespace {

constexpr char kUsage[] =
    "usage: dsv3-train run --spec=SPEC.json [--threads=N] [--steps=N] [--recompute]\n"
    "                      [--metrics=FILE] [--resume_step=S]\n"
    "                      [--world_size=1 --rank=0 --store=DIR]\n"
    "Trains the job of SPEC.json (docs/job-spec.md) in this process, without the service, and\n"
    "resumes from the newest committed checkpoint under its checkpoint.dir.\n"
    "  --spec        the job spec; relative paths in it resolve against the current directory\n"
    "  --threads     kernel threads (default: all hardware threads)\n"
    "  --steps       override train.steps for a quick try (warm-up capped at it)\n"
    "  --recompute   recompute norms and MLA up-projections in the backward (less memory)\n"
    "  --metrics     append one JSON object per line for every step, validation and checkpoint\n"
    "                (full precision): {\"event\": \"step\", \"step\": 1, \"loss\": ...}; rank 0\n"
    "                only, or every rank to its own file when FILE contains {rank} (each rank's\n"
    "                checkpoint line comes once the checkpoint is committed)\n"
    "  --resume_step resume from the committed checkpoint of exactly step S under checkpoint.dir\n"
    "                (0: from the seed); the checkpoints of later steps there are discarded\n"
    "                first (this run trains those steps again). Exit 2 when step S has no\n"
    "                committed checkpoint\n"
    "  --progress    rewrite FILE every 200 ms with this rank's position for liveness checks:\n"
    "                {\"step\": S, \"micro_batch\": M, \"ticks\": T, \"waiting\": W,\n"
    "                \"collective_seq\": C, \"collective_group\": \"G\", \"unix_ms\": ...}\n"
    "  --world_size, --rank, --store   one rank of a job of N processes on this machine (Gloo on\n"
    "                127.0.0.1, bootstrapped through the file store DIR, created if missing, or\n"
    "                the coordinator's store: --store=coordinator://HOST:PORT/JOB_ID/EPOCH);\n"
    "                start one process per rank 0..N-1 with the same spec. The ranks are laid\n"
    "                out as the service's planner does (docs/planner.md): P =\n"
    "                parallel.pipeline_parallel stages running parallel.schedule, R = N / P\n"
    "                ranks per stage (expert parallel x data parallel), rank = stage x R +\n"
    "                replica x EP + shard; optimizer state sharded over all N (ZeRO-1).\n"
    "                Only rank 0 prints progress; the others print errors only.\n"
    "In one process parallel.pipeline_parallel and expert_parallel are ignored;\n"
    "parallel.micro_batches is the schedule's micro-batch count (the gradient accumulation\n"
    "without a pipeline). One line per step:\n"
    "  step  loss  main  mtp  balance  lr  gnorm (before clipping)  tok/s  load max/mean\n"
    "  (load: the busiest expert's load over the mean, in the worst MoE layer; 1 = balanced)\n"
    "Ctrl-C (SIGINT) or SIGTERM stops after the current step with a checkpoint.\n"
    "Exit codes: 0 done, 1 training failed or stopped, 2 bad usage or bad input.\n";

struct Failure {
  int exit_code;
  std::string message;
};

Failure BadInput(const std::string& message) { return {2, message}; }

// Exit code of a Trainer::Create error: problems with the spec, its data or its checkpoint are
// bad input (2); anything else (I/O, internal) is a failure (1).
int CreateExitCode(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kPermissionDenied:
      return 2;
    default:
      return 1;
  }
}

std::string Grouped(int64_t n) {
  std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

// `text` as a JSON string literal (quotes, backslashes and control characters escaped).
std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct Flags {
  std::string spec;
  int threads = 0;
  std::optional<int64_t> steps;
  bool recompute = false;
  std::string metrics;
  std::string progress;
  int world_size = 1;
  int rank = 0;
  std::string store;
  std::optional<int64_t> resume_step;  // --resume_step; absent: the newest committed checkpoint
};

std::optional<Failure> ParseFlags(const std::map<std::string, std::string>& f, Flags* flags) {
  auto it = f.find("spec");
  if (it == f.end() || it->second.empty()) return BadInput("--spec is required (see --help)");
  flags->spec = it->second;
  if (auto t = f.find("threads"); t != f.end()) {
    if (!absl::SimpleAtoi(t->second, &flags->threads) || flags->threads < 1) {
      return BadInput(absl::StrCat("--threads needs a positive integer, got \"", t->second, "\""));
    }
  }
  if (auto s = f.find("steps"); s != f.end()) {
    int64_t steps = 0;
    if (!absl::SimpleAtoi(s->second, &steps) || steps < 1) {
      return BadInput(absl::StrCat("--steps needs a positive integer, got \"", s->second, "\""));
    }
    flags->steps = steps;
  }
  flags->recompute = f.count("recompute") && f.at("recompute") == "true";
  if (auto m = f.find("metrics"); m != f.end()) {
    if (m->second.empty()) return BadInput("--metrics needs a file name");
    flags->metrics = m->second;
  }
  if (auto p = f.find("progress"); p != f.end()) {
    if (p->second.empty()) return BadInput("--progress needs a file name");
    flags->progress = p->second;
  }
  int& world_size = flags->world_size;
  if (auto w = f.find("world_size"); w != f.end()) {
    if (!absl::SimpleAtoi(w->second, &world_size) || world_size < 1) {
      return BadInput(
          absl::StrCat("--world_size needs a positive integer, got \"", w->second, "\""));
    }
  }
  if (auto r = f.find("rank"); r != f.end()) {
    if (world_size == 1 && r->second != "0") {
      return BadInput(
          absl::StrCat("--rank=", r->second, " with --world_size=1: the only rank is 0"));
    }
    if (!absl::SimpleAtoi(r->second, &flags->rank) || flags->rank < 0 ||
        flags->rank >= world_size) {
      return BadInput(
          absl::StrCat("--rank=", r->second, " must be in [0, --world_size=", world_size, ")"));
    }
  } else if (world_size > 1) {
    return BadInput(
        absl::StrCat("--world_size=", world_size, " needs --rank=R (0..", world_size - 1, ")"));
  }
  if (auto st = f.find("store"); st != f.end()) flags->store = st->second;
  if (auto rs = f.find("resume_step"); rs != f.end()) {
    int64_t step = -1;
    if (!absl::SimpleAtoi(rs->second, &step) || step < 0) {
      return BadInput(
          absl::StrCat("--resume_step needs a step >= 0 (0: from the seed), got \"", rs->second,
                       "\""));
    }
    flags->resume_step = step;
  }
  if (world_size > 1 && flags->store.empty()) {
    return BadInput(absl::StrCat("--world_size=", world_size,
                                 " needs --store=DIR (a directory every rank can reach)"));
  }
  return std::nullopt;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read --spec=", path, ": ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The placement epoch of --store=coordinator://HOST:PORT/JOB_ID/EPOCH (how a worker starts its
// rank); 0 for any other store or none (OpenStore reports a malformed address).
int64_t CoordinatorStoreEpoch(const std::string& store) {
  constexpr absl::string_view kScheme = "coordinator://";
  if (!absl::StartsWith(store, kScheme)) return 0;
  const std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(store).substr(kScheme.size()), '/');
  int64_t epoch = 0;
  return parts.size() == 3 && absl::SimpleAtoi(parts[2], &epoch) && epoch >= 0 ? epoch : 0;
}

// The resolved spec's fields the trainer needs.
absl::StatusOr<train::TrainerOptions> ToTrainerOptions(const v1::JobSpec& spec, const Flags& f) {
  train::TrainerOptions o;
  o.model = coordinator::ToModelConfig(spec.model());
  absl::StatusOr<model::Precision> precision = model::ParsePrecision(spec.precision());
  if (!precision.ok()) return precision.status();
  o.precision = *precision;
  o.recompute = f.recompute;
  const v1::TrainSpec& t = spec.train();
  o.seq_len = t.seq_len();
  o.global_batch_tokens = t.global_batch_tokens();
  o.micro_batches = static_cast<int>(spec.parallel().micro_batches());
  if (!spec.parallel().schedule().empty()) {
    absl::StatusOr<parallel::ScheduleKind> kind =
        parallel::ParseScheduleKind(spec.parallel().schedule());
    if (!kind.ok()) return kind.status();
    o.schedule = *kind;
  }
  o.steps = f.steps ? *f.steps : t.steps();
  o.lr = t.lr();
  o.min_lr = t.min_lr();
  o.warmup_steps = std::min(t.warmup_steps(), o.steps);
  o.weight_decay = t.weight_decay();
  o.grad_clip = t.grad_clip();
  o.seed = static_cast<uint64_t>(t.seed());
  o.mtp_loss_weight = t.mtp_loss_weight();
  o.bias_update_speed = t.bias_update_speed();
  o.seq_aux_loss_alpha = t.seq_aux_loss_alpha();
  o.val_every_steps = t.val_every_steps();
  o.val_tokens = t.val_tokens();
  o.train_data = spec.data().train();
  o.val_data = spec.data().val();
  o.checkpoint_dir = spec.checkpoint().dir();
  o.checkpoint_every_steps = spec.checkpoint().every_steps();
  o.checkpoint_keep = static_cast<int>(spec.checkpoint().keep());
  // In the service the checkpoints carry the placement's epoch (docs/checkpoints.md).
  o.checkpoint_epoch = CoordinatorStoreEpoch(f.store);
  o.threads = f.threads;
  return o;
}

// `discarded`: the directories of later steps that --resume_step removed.
void PrintHeader(const v1::JobSpec& spec, const std::string& spec_path, const Flags& flags,
                 const train::Trainer& trainer, const std::vector<std::string>& discarded,
                 std::ostream& out) {
  const train::TrainerOptions& o = trainer.options();
  const ModelConfig& c = o.model;
  const int64_t rows = trainer.batch_rows();
  out << absl::StrFormat("dsv3-train run: job %s (%s)\n", spec.name(), spec_path);
  out << absl::StrFormat(
      "  model        %d layers (%d dense, %d MoE%s), hidden %d, %d routed experts top-%d, "
      "%s parameters, precision %s\n",
      c.num_hidden_layers, c.first_k_dense_replace, c.num_moe_layers(),
      c.num_nextn_predict_layers > 0 ? " + MTP" : "", c.hidden_size, c.n_routed_experts,
      c.num_experts_per_tok, Grouped(trainer.num_parameters()),
      std::string(model::PrecisionName(o.precision)));
  out << absl::StrFormat("  data         train %s", o.train_data);
  if (o.val_data.empty()) {
    out << "; no validation data\n";
  } else {
    out << absl::StrFormat("; val %s (%s tokens per pass, %s)\n", o.val_data,
                           Grouped(o.val_tokens > 0 ? o.val_tokens : o.global_batch_tokens),
                           o.val_every_steps > 0
                               ? absl::StrCat("every ", o.val_every_steps, " steps and at the end")
                               : std::string("at the end"));
  }
  out << absl::StrFormat(
      "  batch        %d sequences x %d tokens = %s tokens per step in %d micro-batch%s; %d steps, "
      "lr %g -> %g (warm-up %d)\n",
      rows, o.seq_len, Grouped(o.global_batch_tokens), o.micro_batches,
      o.micro_batches == 1 ? "" : "es", o.steps, o.lr, o.min_lr, o.warmup_steps);
  if (flags.steps) {
    out << absl::StrFormat("  note         --steps=%d overrides train.steps=%d\n", *flags.steps,
                           spec.train().steps());
  }
  if (flags.world_size > 1) {
    const int pp = trainer.pp_size();
    const int ep = trainer.ep_size();
    const int per_stage = flags.world_size / pp;
    if (pp > 1) {
      out << absl::StrFormat(
          "  parallel     %d ranks: pipeline %d (%s, %d stages) x %d rank%s per stage (expert "
          "parallel %d x data parallel %d); ZeRO-1 over all %d; store %s\n",
          flags.world_size, pp, parallel::ScheduleKindName(o.schedule),
          trainer.num_pipeline_stages(), per_stage, per_stage == 1 ? "" : "s", ep,
          per_stage / ep, flags.world_size, flags.store);
    } else {
      out << absl::StrFormat(
          "  parallel     %d data-parallel ranks (ZeRO-1: optimizer state sharded; expert "
          "parallel %d), store %s\n",
          flags.world_size, ep, flags.store);
    }
  } else if (spec.parallel().pipeline_parallel() != 1 || spec.parallel().expert_parallel() != 1) {
    out << absl::StrFormat(
        "  note         parallel.pipeline_parallel=%d and expert_parallel=%d are ignored: one "
        "process runs the whole model (start ranks with --world_size to use them)\n",
        spec.parallel().pipeline_parallel(), spec.parallel().expert_parallel());
  }
  out << absl::StrFormat(
      "  checkpoints  %s, %s, keep %d\n", o.checkpoint_dir,
      o.checkpoint_every_steps > 0
          ? absl::StrCat("every ", o.checkpoint_every_steps, " steps and at the end")
          : std::string("at the end"),
      o.checkpoint_keep);
  if (trainer.resumed_from().empty()) {
    out << absl::StrFormat("  start        from seed %d (%s)\n", o.seed,
                           flags.resume_step ? "--resume_step=0" : "no committed checkpoint");
  } else {
    out << absl::StrFormat("  resume       from %s (step %d, %s tokens seen)\n",
                           trainer.resumed_from(), trainer.step(), Grouped(trainer.tokens_seen()));
    if (trainer.step() >= o.steps) {
      out << absl::StrFormat("  note         the job is at step %d of %d: nothing to train\n",
                             trainer.step(), o.steps);
    }
  }
  if (!discarded.empty()) {
    constexpr size_t kMaxNames = 6;
    std::vector<std::string> names;
    for (size_t i = 0; i < discarded.size() && i < kMaxNames; ++i) {
      names.push_back(discarded[i].substr(discarded[i].find_last_of('/') + 1));
    }
    if (discarded.size() > kMaxNames) names.push_back("...");
    out << absl::StrFormat(
        "  note         --resume_step=%d: discarded %d later checkpoint director%s (%s); this "
        "run trains those steps again\n",
        *flags.resume_step, discarded.size(), discarded.size() == 1 ? "y" : "ies",
        absl::StrJoin(names, ", "));
  }
}

constexpr char kColumns[] = "%13s %9s %9s %9s %10s %9s %8s %9s  %s\n";

// The worst MoE layer's balance, named by its layer index ("layer 3") or "MTP".
std::string LoadColumn(const train::StepProgress& p, const ModelConfig& c) {
  if (p.load_worst_layer < 0) return "-";
  const int64_t main_moe_layers = c.num_moe_layers();
  return absl::StrFormat("%.2f (%s)", p.load_max_over_mean,
                         p.load_worst_layer < main_moe_layers
                             ? absl::StrCat("layer ", c.first_k_dense_replace + p.load_worst_layer)
                             : std::string("MTP"));
}

std::string StepLine(const train::StepProgress& p, const ModelConfig& c) {
  return absl::StrFormat("%13s %9.4f %9.4f %9.4f %10.3e %9.2e %8.3f %9.0f  %s\n",
                         absl::StrCat(p.step, "/", p.steps), p.loss.loss, p.loss.main_loss,
                         p.loss.mtp_loss, p.loss.balance_loss, p.lr, p.grad_norm,
                         p.tokens_per_second, LoadColumn(p, c));
}

std::string ValidationLine(const train::ValidationResult& v, int64_t steps) {
  std::string accuracy = absl::StrFormat("next acc %.3f", v.next_token_accuracy);
  if (v.mtp_next_next_accuracy >= 0) {
    absl::StrAppendFormat(&accuracy, "  mtp next-next acc %.3f", v.mtp_next_next_accuracy);
  }
  return absl::StrFormat(
      "val   step %d/%d: loss %.4f  main %.4f  mtp %.4f  balance %.3e  %s  (%d rows, %s tokens, "
      "%.1f s)\n",
      v.step, steps, v.loss.loss, v.loss.main_loss, v.loss.mtp_loss, v.loss.balance_loss,
      accuracy, v.rows, Grouped(v.tokens), v.seconds);
}

std::string CheckpointLine(const train::CheckpointEvent& e, int64_t steps) {
  std::string line =
      absl::StrFormat("ckpt  step %d/%d: %s (%.1f s", e.step, steps, e.path, e.seconds);
  if (!e.pruned.empty()) {
    std::vector<std::string> names;
    for (const std::string& p : e.pruned) names.push_back(p.substr(p.find_last_of('/') + 1));
    absl::StrAppend(&line, "; removed ", absl::StrJoin(names, ", "));
  }
  return line + ")\n";
}

// SIGINT / SIGTERM ask the trainer to stop after the current step.
std::atomic<bool> stop_requested{false};
extern "C" void OnStopSignal(int) { stop_requested.store(true); }

class StopSignals {
 public:
  StopSignals() {
    stop_requested.store(false);
    struct sigaction sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_;
  struct sigaction old_term_;
};

// --progress=FILE: a thread that rewrites FILE (write a temporary, then rename) every 200 ms with
// the process's RankPosition, so a supervisor can tell progress, a wait for a peer and a hang
// apart even while the training thread is blocked. Does nothing for an empty path.
class ProgressPublisher {
 public:
  explicit ProgressPublisher(std::string path) : path_(std::move(path)) {
    if (path_.empty()) return;
    thread_ = std::thread([this] {
      do {
        const RankPosition& p = GlobalRankPosition();
        const std::string tmp = path_ + ".tmp";
        {
          std::ofstream out(tmp, std::ios::trunc);
          // Group names come from this program (e.g. "world4-g0/ep"); anything that would need
          // escaping in JSON is dropped.
          std::string group = CollectiveGroupName(p.collective_group.load());
          std::erase_if(group, [](char ch) { return ch == '"' || ch == '\\' || ch < 0x20; });
          out << absl::StrFormat(
              R"({"step": %d, "micro_batch": %d, "ticks": %d, "waiting": %d, )"
              R"("collective_seq": %d, "collective_group": "%s", "unix_ms": %d})",
              p.step.load(), p.micro_batch.load(), p.ticks.load(), p.waiting.load(),
              p.collective_seq.load(), group, absl::ToUnixMillis(absl::Now()))
              << "\n";
        }
        std::rename(tmp.c_str(), path_.c_str());
      } while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(200)));
    });
  }
  ~ProgressPublisher() {
    if (!thread_.joinable()) return;
    done_.Notify();
    thread_.join();
  }

 private:
  const std::string path_;
  absl::Notification done_;
  std::thread thread_;
};

// The group of all ranks of a multi-process run: a FileStore at --store, Gloo on 127.0.0.1. Each
// launch of the N processes gets a group name of its own ("world<N>-g<k>" for the k-th launch of N
// ranks, from a counter per N in the store that every rank bumps once; launches of another size
// count apart, so they never mix), so a store dir can be reused by a later launch
// (e.g. to resume) without meeting the previous launch's keys.
// With --store=coordinator://HOST:PORT/JOB_ID/EPOCH (how a worker starts its rank) the store is
// the coordinator's StoreService under that job and epoch (worker/coordinator_store.h), with the
// bearer token of the DSV3_AUTH_TOKEN environment variable when it is set.
absl::StatusOr<std::shared_ptr<parallel::Store>> OpenStore(const std::string& spec) {
  constexpr absl::string_view kScheme = "coordinator://";
  if (!absl::StartsWith(spec, kScheme)) {
    absl::StatusOr<std::unique_ptr<parallel::FileStore>> store = parallel::FileStore::Open(spec);
    if (!store.ok()) return store.status();
    return std::shared_ptr<parallel::Store>(*std::move(store));
  }
  const std::vector<std::string> parts =
      absl::StrSplit(absl::string_view(spec).substr(kScheme.size()), '/');
  int64_t epoch = 0;
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() ||
      !absl::SimpleAtoi(parts[2], &epoch) || epoch < 0) {
    return absl::InvalidArgumentError(
        "a coordinator store is coordinator://HOST:PORT/JOB_ID/EPOCH");
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  worker::CoordinatorStoreOptions options;
  options.job_id = parts[1];
  options.epoch = epoch;
  if (const char* token = std::getenv("DSV3_AUTH_TOKEN"); token != nullptr) {
    options.auth_token = token;
  }
  return std::shared_ptr<parallel::Store>(std::make_shared<worker::CoordinatorStore>(
      grpc::CreateCustomChannel(parts[0], grpc::InsecureChannelCredentials(), channel_args),
      options));
}

absl::StatusOr<std::shared_ptr<parallel::Communicator>> ConnectWorld(const Flags& flags) {
  absl::StatusOr<std::shared_ptr<parallel::Store>> store = OpenStore(flags.store);
  if (!store.ok()) {
    return absl::Status(store.status().code(),
                        absl::StrCat("--store=", flags.store, ": ", store.status().message()));
  }
  std::shared_ptr<parallel::Store> shared = *std::move(store);
  absl::StatusOr<int64_t> joined =
      shared->Add(absl::StrCat("dsv3-train-run/launches-of-", flags.world_size), 1);
  if (!joined.ok()) return joined.status();
  parallel::CommunicatorOptions options;
  options.backend = parallel::Backend::kGloo;
  options.rank = flags.rank;
  options.world_size = flags.world_size;
  options.store = shared;
  options.name = absl::StrCat("world", flags.world_size, "-g", (*joined - 1) / flags.world_size);
  options.host = "127.0.0.1";
  absl::StatusOr<std::unique_ptr<parallel::Communicator>> comm =
      parallel::CreateCommunicator(options);
  if (!comm.ok()) {
    return absl::Status(comm.status().code(),
                        absl::StrCat("rank ", flags.rank, " of ", flags.world_size,
                                     " could not join the group through --store=", flags.store,
                                     ": ", comm.status().message()));
  }
  return std::shared_ptr<parallel::Communicator>(*std::move(comm));
}

std::optional<Failure> Run(const Flags& flags, std::ostream& rank0_out) {
  // Only rank 0 prints progress (a stream without a buffer drops what is written to it).
  std::ostream discard(nullptr);
  std::ostream& out = flags.rank == 0 ? rank0_out : discard;
  absl::StatusOr<std::string> text = ReadFile(flags.spec);
  if (!text.ok()) return BadInput(std::string(text.status().message()));
  absl::StatusOr<v1::JobSpec> parsed = coordinator::ParseJobSpec(*text);
  if (!parsed.ok()) {
    return BadInput(absl::StrCat(flags.spec, ": ", parsed.status().message()));
  }
  coordinator::ValidateOptions validate;  // base_dir empty: the current directory
  absl::StatusOr<v1::JobSpec> spec = coordinator::ValidateJobSpec(*parsed, validate);
  if (!spec.ok()) return BadInput(absl::StrCat(flags.spec, ": ", spec.status().message()));
  absl::StatusOr<train::TrainerOptions> options = ToTrainerOptions(*spec, flags);
  if (!options.ok()) return BadInput(absl::StrCat(flags.spec, ": ", options.status().message()));
  // --resume_step=S: step S must have a committed checkpoint (checked before the ranks connect,
  // so that every rank fails at once; and again by the resume itself).
  if (flags.resume_step && *flags.resume_step > 0) {
    absl::StatusOr<train::CommittedCheckpoint> found =
        train::FindCommitted(options->checkpoint_dir, *flags.resume_step);
    if (!found.ok()) {
      return BadInput(
          absl::StrCat("--resume_step=", *flags.resume_step, ": ", found.status().message()));
    }
  }
  // --resume_step=S: the trainer resumes from the newest committed checkpoint, so the later ones
  // go first. They are a run's that went on past S (in the service: ranks of an epoch that was
  // rolled back to S, or that trained on until their stop took effect); this run writes those
  // steps again. Done after the ranks have connected: by then every rank of this launch has
  // started, so in the service no rank of an earlier epoch on these workers is still writing.
  // With several ranks, rank 0 discards and the others wait for it at a barrier, so none
  // resumes while a later checkpoint is still there.
  std::vector<std::string> discarded;
  std::string discard_error;
  auto discard_later = [&]() {
    absl::StatusOr<std::vector<std::string>> removed =
        train::DiscardAfter(options->checkpoint_dir, *flags.resume_step);
    if (removed.ok()) {
      discarded = *std::move(removed);
    } else {
      discard_error = absl::StrCat("--resume_step=", *flags.resume_step,
                                   ": discarding the later checkpoints: ",
                                   removed.status().message());
    }
  };
  if (flags.resume_step && flags.world_size == 1) discard_later();
  if (flags.world_size > 1) {
    // The planner's layout for N workers (docs/planner.md): rank = stage x R + dp x EP + shard.
    // The worker bounds are for the service; here the N ranks asked for are the bounds.
    v1::JobSpec plan = *spec;
    plan.mutable_parallel()->set_min_workers(flags.world_size);
    plan.mutable_parallel()->set_max_workers(flags.world_size);
    absl::StatusOr<coordinator::PlacementLayout> layout =
        coordinator::PlanLayout(plan, flags.world_size);
    if (!layout.ok()) {
      return BadInput(absl::StrCat("--world_size=", flags.world_size, ": ",
                                   layout.status().message()));
    }
    if (layout->world_size != flags.world_size) {
      return BadInput(absl::StrCat(
          "--world_size=", flags.world_size, " does not lay out whole: with parallel."
          "pipeline_parallel=", layout->pipeline_parallel, " the ranks per stage must divide the ",
          layout->sequences_per_micro_batch, " sequences of a micro-batch, so ",
          "the planner would use ", layout->world_size, " ranks; start that many"));
    }
    absl::StatusOr<std::shared_ptr<parallel::Communicator>> comm = ConnectWorld(flags);
    if (!comm.ok()) return Failure{1, std::string(comm.status().message())};
    std::shared_ptr<parallel::Communicator> world = *std::move(comm);
    if (flags.resume_step) {
      int64_t failed = 0;
      if (flags.rank == 0) {
        discard_later();
        failed = discard_error.empty() ? 0 : 1;
      }
      const absl::Status barrier =
          world->AllReduce(&failed, &failed, 1, parallel::DataType::kInt64)
              ->Wait(absl::InfiniteDuration());
      if (!barrier.ok()) {
        return Failure{1, absl::StrCat("rank ", flags.rank, ": --resume_step barrier: ",
                                       barrier.message())};
      }
      if (failed != 0 && discard_error.empty()) {
        discard_error = absl::StrCat("--resume_step=", *flags.resume_step,
                                     ": rank 0 could not discard the later checkpoints (see its "
                                     "output)");
      }
    }
    const int per_stage = static_cast<int>(layout->ranks_per_stage);
    const int ep = static_cast<int>(layout->expert_parallel);
    const int stage = flags.rank / per_stage, j = flags.rank % per_stage;
    absl::Status split_status;
    auto split = [&](int color, int key) -> std::shared_ptr<parallel::Communicator> {
      if (!split_status.ok()) return nullptr;
      absl::StatusOr<std::unique_ptr<parallel::Communicator>> group = world->Split(color, key);
      if (!group.ok()) {
        split_status = group.status();
        return nullptr;
      }
      return std::shared_ptr<parallel::Communicator>(std::move(*group));
    };
    std::shared_ptr<parallel::Communicator> pipeline = split(j, stage);
    std::shared_ptr<parallel::Communicator> mates = split(stage, j);
    std::shared_ptr<parallel::Communicator> experts = split(flags.rank / ep, flags.rank % ep);
    // The same group again for the backward's all-to-alls, so F&B pairs can overlap.
    std::shared_ptr<parallel::Communicator> experts_backward =
        split(flags.rank / ep, flags.rank % ep);
    if (!split_status.ok()) {
      return Failure{1, absl::StrCat("rank ", flags.rank, ": forming the pipeline, data- and "
                                     "expert-parallel groups: ", split_status.message())};
    }
    options->data_parallel = std::move(mates);
    if (ep > 1) {
      options->expert_parallel = std::move(experts);
      options->expert_parallel_backward = std::move(experts_backward);
    }
    if (layout->pipeline_parallel > 1) {
      options->pipeline = std::move(pipeline);
      options->world = std::move(world);
    }
  }

  if (!discard_error.empty()) return Failure{1, discard_error};
  absl::StatusOr<std::unique_ptr<train::Trainer>> trainer = train::Trainer::Create(*options);
  if (!trainer.ok()) {
    return Failure{CreateExitCode(trainer.status()), std::string(trainer.status().message())};
  }
  if (flags.resume_step && (*trainer)->step() != *flags.resume_step) {
    // Step S vanished between the check above and the resume (another process pruned it).
    return BadInput(absl::StrCat(
        "--resume_step=", *flags.resume_step, ": the checkpoint of step ", *flags.resume_step,
        " under ", options->checkpoint_dir, " is gone; the newest one left is ",
        (*trainer)->resumed_from().empty() ? std::string("none")
                                           : (*trainer)->resumed_from(),
        "; nothing was trained"));
  }
  PrintHeader(*spec, flags.spec, flags, **trainer, discarded, out);
  out << absl::StrFormat(kColumns, "step", "loss", "main", "mtp", "balance", "lr", "gnorm", "tok/s",
                         "load max/mean");
  out.flush();

  // "{rank}" in the name gives every rank a file of its own; without it only rank 0 writes.
  std::ofstream metrics;
  const bool per_rank_metrics = absl::StrContains(flags.metrics, "{rank}");
  if (!flags.metrics.empty() && (flags.rank == 0 || per_rank_metrics)) {
    const std::string path =
        absl::StrReplaceAll(flags.metrics, {{"{rank}", absl::StrCat(flags.rank)}});
    metrics.open(path, std::ios::app);
    if (!metrics) {
      return BadInput(absl::StrCat("--metrics=", path, ": cannot open for appending: ",
                                   std::strerror(errno)));
    }
  }
  auto record = [&](const std::string& line) {
    if (metrics.is_open()) metrics << line << "\n" << std::flush;
  };
  const int64_t steps = options->steps;
  train::TrainerCallbacks callbacks;
  callbacks.on_step = [&](const train::StepProgress& p) {
    out << StepLine(p, options->model) << std::flush;
    record(absl::StrFormat(
        R"({"event": "step", "step": %d, "steps": %d, "loss": %.17g, "main_loss": %.17g, )"
        R"("mtp_loss": %.17g, "balance_loss": %.17g, "lr": %.17g, "grad_norm": %.17g, )"
        R"("seconds": %.6f, "tokens_per_second": %.3f, "tokens_seen": %d, )"
        R"("load_max_over_mean": %.17g})",
        p.step, p.steps, p.loss.loss, p.loss.main_loss, p.loss.mtp_loss, p.loss.balance_loss,
        p.lr, p.grad_norm, p.seconds, p.tokens_per_second, p.tokens_seen, p.load_max_over_mean));
  };
  callbacks.on_validation = [&](const train::ValidationResult& v) {
    out << ValidationLine(v, steps) << std::flush;
    record(absl::StrFormat(
        R"({"event": "validation", "step": %d, "loss": %.17g, "main_loss": %.17g, )"
        R"("mtp_loss": %.17g, "balance_loss": %.17g, "tokens": %d, )"
        R"("next_token_accuracy": %.17g, "mtp_next_next_accuracy": %.17g})",
        v.step, v.loss.loss, v.loss.main_loss, v.loss.mtp_loss, v.loss.balance_loss, v.tokens,
        v.next_token_accuracy, v.mtp_next_next_accuracy));
  };
  callbacks.on_checkpoint = [&](const train::CheckpointEvent& e) {
    out << CheckpointLine(e, steps) << std::flush;
    record(absl::StrFormat(R"({"event": "checkpoint", "step": %d, "path": %s})", e.step,
                           JsonString(e.path)));
  };
  // Test-only fault (DSV3_TEST_HANG=R:S): rank R stops making progress after step S, alive, as a
  // rank stuck in a kernel or a driver would; used to test hang detection.
  if (const char* hang = std::getenv("DSV3_TEST_HANG"); hang != nullptr) {
    int hang_rank = -1;
    int64_t hang_step = -1;
    const std::vector<std::string> parts = absl::StrSplit(hang, ':');
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &hang_rank) ||
        !absl::SimpleAtoi(parts[1], &hang_step)) {
      return BadInput(absl::StrCat("DSV3_TEST_HANG=", hang, " must be RANK:STEP"));
    }
    if (hang_rank == flags.rank) {
      callbacks.on_step = [inner = callbacks.on_step, hang_step](const train::StepProgress& p) {
        inner(p);
        if (p.step == hang_step) {
          std::fprintf(stderr, "dsv3-train run: DSV3_TEST_HANG: hanging after step %lld\n",
                       static_cast<long long>(hang_step));
          while (true) pause();
        }
      };
    }
  }
  ProgressPublisher publisher(flags.progress);
  absl::StatusOr<train::TrainSummary> summary;
  {
    StopSignals signals;
    summary = (*trainer)->Run(callbacks, &stop_requested);
  }
  if (!summary.ok()) {
    return Failure{1, absl::StrCat("training stopped at step ", (*trainer)->step(), ": ",
                                   summary.status().message())};
  }
  const train::TrainSummary& s = *summary;
  std::string line =
      absl::StrFormat("%s  %d/%d steps", s.stopped ? "stopped" : "done", s.last_step, steps);
  if (s.first_step > 0) absl::StrAppend(&line, " (resumed at ", s.first_step, ")");
  absl::StrAppend(
      &line, absl::StrFormat(
                 ": %s tokens this run in %.1f s (%s tokens/s), %s in all",
                 Grouped(s.tokens_this_run), s.seconds,
                 Grouped(static_cast<int64_t>(s.seconds > 0 ? s.tokens_this_run / s.seconds : 0)),
                 Grouped(s.tokens_seen)));
  if (s.final_validation) {
    absl::StrAppend(
        &line, absl::StrFormat("; final val loss %.4f (main), %.4f (total)",
                               s.final_validation->loss.main_loss, s.final_validation->loss.loss));
  }
  if (s.last_checkpoint) absl::StrAppend(&line, "; checkpoint ", s.last_checkpoint->path);
  out << line << "\n";
  if (s.stopped) {
    return Failure{1, absl::StrCat("stopped by a signal at step ", s.last_step, " of ", steps,
                                   "; run the same command again to resume")};
  }
  return std::nullopt;
}

}  // namespace

int RunTrainCommand(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<std::map<std::string, std::string>> flags = ParseVerbFlags(
      args,
      {"spec", "threads", "steps", "metrics", "progress", "world_size", "rank", "store",
       "resume_step"},
      {"recompute"});
  if (!flags.ok()) {
    err << "dsv3-train run: " << flags.status().message() << " (see --help)\n";
    return 2;
  }
  if (flags->count("help")) {
    out << kUsage;
    return 0;
  }
  Flags parsed;
  std::optional<Failure> failure = ParseFlags(*flags, &parsed);
  if (!failure) failure = Run(parsed, out);
  if (failure) {
    err << "dsv3-train run: " << failure->message << "\n";
    return failure->exit_code;
  }
  return 0;
}

}  // namespace dsv3::cli
