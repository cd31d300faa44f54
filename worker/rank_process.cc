// RankProcess; see rank_process.h.
#include "worker/rank_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "spdlog/spdlog.h"

extern char** environ;

namespace dsv3::worker {
namespace {

namespace fs = std::filesystem;

// The last `n` non-empty lines of the file at `path` (at most 4 KiB read).
std::string Tail(const std::string& path, int n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > 4096 ? size - 4096 : 0;
  in.seekg(from);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> lines = absl::StrSplit(ss.str(), '\n', absl::SkipWhitespace());
  if (static_cast<int>(lines.size()) > n) lines.erase(lines.begin(), lines.end() - n);
  return absl::StrJoin(lines, "\n");
}

}  // namespace

absl::StatusOr<std::unique_ptr<RankProcess>> RankProcess::Start(const v1::Assignment& assignment,
                                                                const RankProcessOptions& options,
                                                                ReportFn on_report) {
  std::unique_ptr<RankProcess> p(new RankProcess(assignment, options, std::move(on_report)));
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create the rank directory ", options.dir, ": ", ec.message()));
  }
  std::string spec_json;
  google::protobuf::util::JsonPrintOptions json;
  json.preserve_proto_field_names = true;
  json.add_whitespace = true;
  if (auto s = google::protobuf::util::MessageToJsonString(assignment.spec(), &spec_json, json);
      !s.ok()) {
    return absl::InternalError(absl::StrCat("cannot write the job spec as JSON: ", s.ToString()));
  }
  const std::string spec_path = options.dir + "/spec.json";
  {
    std::ofstream out(spec_path, std::ios::trunc);
    out << spec_json;
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", spec_path));
  }
  const int64_t rank = assignment.rank().rank();
  const int64_t world = assignment.placement().world_size();
  p->metrics_path_ = absl::StrCat(options.dir, "/metrics-", rank, ".jsonl");
  p->stderr_path_ = options.dir + "/stderr.log";
  p->progress_path_ = options.dir + "/progress.json";
  fs::remove(p->progress_path_, ec);
  fs::remove(p->metrics_path_, ec);  // a re-run of the same epoch starts a fresh file

  std::vector<std::string> args = {options.train_binary, "run", "--spec=" + spec_path,
                                   absl::StrCat("--threads=", options.threads),
                                   "--metrics=" + options.dir + "/metrics-{rank}.jsonl",
                                   "--progress=" + p->progress_path_};
  // Resume from exactly the checkpoint the coordinator committed (every rank acknowledged it),
  // not from whatever is newest under checkpoint.dir: ranks of an earlier epoch may have written
  // later ones before their stop took effect. resume_step -1 (none committed yet) means from the
  // seed, which is --resume_step=0.
  args.push_back(absl::StrCat("--resume_step=", std::max<int64_t>(assignment.resume_step(), 0)));
  if (world > 1) {
    args.push_back(absl::StrCat("--world_size=", world));
    args.push_back(absl::StrCat("--rank=", rank));
    args.push_back(absl::StrCat("--store=coordinator://", options.coordinator_address, "/",
                                assignment.job_id(), "/", assignment.epoch()));
  }
  std::vector<std::string> env;
  bool has_omp_policy = false;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (absl::StartsWith(entry, "DSV3_AUTH_TOKEN=")) continue;
    if (absl::StartsWith(entry, "OMP_WAIT_POLICY=")) has_omp_policy = true;
    env.push_back(entry);
  }
  // oneDNN's OpenMP threads spin by default and starve the other ranks sharing the cores.
  if (!has_omp_policy) env.push_back("OMP_WAIT_POLICY=passive");
  if (!options.auth_token.empty()) env.push_back("DSV3_AUTH_TOKEN=" + options.auth_token);

  // The child is forked by the monitor thread, which lives as long as the child is supervised:
  // PR_SET_PDEATHSIG is tied to the forking thread, so the child dies with the worker (and
  // only then), even after a kill -9 of the worker.
  absl::Notification forked;
  std::string fork_error;
  RankProcess* self = p.get();
  self->monitor_ = std::thread([self, args, env, &forked, &fork_error] {
    std::vector<char*> argv, envp;
    std::vector<std::string> a = args, e = env;
    for (std::string& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    for (std::string& s : e) envp.push_back(s.data());
    envp.push_back(nullptr);
    const std::string out_path = self->options_.dir + "/stdout.log";
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int err = open(self->stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const pid_t parent = getpid();
    const pid_t pid = (out < 0 || err < 0) ? -1 : fork();
    if (pid == 0) {
      // The worker blocks SIGTERM/SIGINT (a thread waits for them); the child must not inherit
      // that, or a stop could only SIGKILL it.
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // the worker died before prctl took effect
      dup2(out, 1);
      dup2(err, 2);
      execve(argv[0], argv.data(), envp.data());
      const char msg[] = "dsv3-worker: cannot execute the training binary\n";
      (void)!write(2, msg, sizeof(msg) - 1);
      _exit(127);
    }
    if (out >= 0) close(out);
    if (err >= 0) close(err);
    if (pid < 0) {
      fork_error = absl::StrCat("cannot start ", args[0], ": ", std::strerror(errno));
      forked.Notify();
      return;
    }
    self->pid_ = pid;
    forked.Notify();
    self->Monitor();
  });
  forked.WaitForNotification();
  if (!fork_error.empty()) {
    self->monitor_.join();
    return absl::InternalError(fork_error);
  }
  spdlog::info("started rank {} of {} epoch {} as pid {}: {}", rank, assignment.job_id(),
               assignment.epoch(), p->pid_, absl::StrJoin(args, " "));
  return p;
}

RankProcess::~RankProcess() { Stop(absl::Seconds(3)); }

void RankProcess::Stop(absl::Duration grace) {
  if (stopping_.exchange(true)) {
    if (monitor_.joinable()) monitor_.join();
    return;
  }
  if (!exited_.load() && pid_ > 0) {
    kill(pid_, grace > absl::ZeroDuration() ? SIGTERM : SIGKILL);
    const absl::Time deadline = absl::Now() + grace;
    while (!exited_.load() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    if (!exited_.load()) kill(pid_, SIGKILL);
  }
  stop_.Notify();
  if (monitor_.joinable()) monitor_.join();
}

void RankProcess::ReadMetrics() {
  std::ifstream in(metrics_path_, std::ios::binary);
  if (!in) return;
  in.seekg(metrics_offset_);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string chunk = ss.str();
  metrics_offset_ += static_cast<int64_t>(chunk.size());
  partial_line_ += chunk;
  size_t start = 0;
  for (size_t nl; (nl = partial_line_.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = partial_line_.substr(start, nl - start);
    if (line.empty()) continue;
    v1::RankReport report;
    google::protobuf::util::JsonParseOptions parse;
    parse.ignore_unknown_fields = true;
    if (auto s = google::protobuf::util::JsonStringToMessage(line, &report, parse); !s.ok()) {
      spdlog::warn("rank {}: unreadable metrics line ({}): {}", assignment_.rank().rank(),
                   s.ToString(), line.substr(0, 200));
      continue;
    }
    report.set_job_id(assignment_.job_id());
    report.set_epoch(assignment_.epoch());
    report.set_rank(assignment_.rank().rank());
    on_report_(report);
  }
  partial_line_.erase(0, start);
}

std::string CollectiveText(const RankPositionSnapshot& p) {
  if (p.collective_seq < 0) return "";
  return absl::StrCat(", last collective #", p.collective_seq,
                      p.collective_group.empty() ? "" : " of group " + p.collective_group);
}

RankPositionSnapshot RankProcess::position() const {
  absl::MutexLock lock(&position_mu_);
  return position_;
}

void RankProcess::ReadProgress() {
  std::ifstream in(progress_path_);
  if (!in) return;
  std::stringstream ss;
  ss << in.rdbuf();
  google::protobuf::Struct fields;
  if (!google::protobuf::util::JsonStringToMessage(ss.str(), &fields).ok()) return;
  auto number = [&](const char* key) -> int64_t {
    auto it = fields.fields().find(key);
    return it == fields.fields().end() ? 0 : static_cast<int64_t>(it->second.number_value());
  };
  const absl::Time now = absl::Now();
  RankPositionSnapshot snap;
  {
    absl::MutexLock lock(&position_mu_);
    snap.step = number("step");
    snap.micro_batch = number("micro_batch");
    snap.ticks = number("ticks");
    snap.waiting = number("waiting");
    snap.collective_seq = fields.fields().contains("collective_seq") ? number("collective_seq") : -1;
    if (auto it = fields.fields().find("collective_group"); it != fields.fields().end()) {
      snap.collective_group = it->second.string_value();
    }
    if (snap.ticks != position_.ticks || last_tick_change_ == absl::InfinitePast()) {
      last_tick_change_ = now;
    }
    snap.stalled = now - last_tick_change_;
    position_ = snap;
  }
  if (hang_reported_ || snap.waiting > 0 || snap.stalled < options_.hang_timeout) return;
  hang_reported_ = true;
  v1::RankReport hung;
  hung.set_job_id(assignment_.job_id());
  hung.set_epoch(assignment_.epoch());
  hung.set_rank(assignment_.rank().rank());
  hung.set_event("hung");
  hung.set_step(snap.step);
  hung.set_detail(absl::StrCat(
      "no progress for ", absl::FormatDuration(absl::Trunc(snap.stalled, absl::Milliseconds(100))),
      " after step ", snap.step, " (op ", snap.micro_batch, CollectiveText(snap),
      "), not waiting for a peer: the rank is stuck"));
  spdlog::warn("rank {} of {} epoch {} (pid {}): {}", hung.rank(), hung.job_id(), hung.epoch(),
               pid_, hung.detail());
  on_report_(hung);
}

void RankProcess::Monitor() {
  int status = 0;
  while (true) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) break;
    ReadMetrics();
    ReadProgress();
    if (stop_.WaitForNotificationWithTimeout(options_.poll)) {
      waitpid(pid_, &status, 0);  // Stop has killed it
      break;
    }
  }
  exited_.store(true);
  ReadMetrics();
  if (stopping_.load()) return;  // stopped on purpose: the coordinator knows
  v1::RankReport exit;
  exit.set_job_id(assignment_.job_id());
  exit.set_epoch(assignment_.epoch());
  exit.set_rank(assignment_.rank().rank());
  exit.set_event("exit");
  exit.set_exit_code(WIFEXITED(status) ? WEXITSTATUS(status)
                                       : (WIFSIGNALED(status) ? -WTERMSIG(status) : -1));
  exit.set_detail(Tail(stderr_path_, 3));
  spdlog::info("rank {} of {} epoch {} (pid {}) exited with {}{}", exit.rank(), exit.job_id(),
               exit.epoch(), pid_, exit.exit_code(),
               exit.detail().empty() ? "" : absl::StrCat(": ", exit.detail()));
  on_report_(exit);
}

}  // namespace dsv3::worker
