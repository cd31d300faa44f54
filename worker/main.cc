// dsv3-worker: the worker daemon. Attaches to the coordinator at --coordinator, serves one rank at a
// time, and detaches cleanly on SIGTERM or SIGINT.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/auth_token.h"
#include "common/logging.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "spdlog/spdlog.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, coordinator, "",
          "coordinator address HOST:PORT (default: the DSV3_COORDINATOR environment variable)");
ABSL_FLAG(std::string, name, "", "worker name, unique among live workers (default HOST-PID)");
ABSL_FLAG(std::string, node, "", "machine grouping for node-limited routing (default: host name)");
ABSL_FLAG(std::string, device, "cpu", "cpu or cuda");
ABSL_FLAG(std::string, work_dir, ".", "directory for this worker's files");
ABSL_FLAG(std::string, train_binary, "",
          "the dsv3-train executable that runs a rank (default: dsv3-train next to this binary, "
          "or ../cli/dsv3-train from it as in a build tree)");
ABSL_FLAG(int, threads, 1, "kernel threads of each rank process");
ABSL_FLAG(std::string, auth_token_file, "", "bearer token for the coordinator, read from this file");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");
ABSL_FLAG(std::string, log_file, "", "also log to this file");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "dsv3-worker: %s\n", message.c_str());
  return 2;
}

// dsv3-train next to this executable, or in ../cli/ from it (the build tree's layout); "" if
// neither exists.
std::string DefaultTrainBinary() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  for (const auto& candidate :
       {self.parent_path() / "dsv3-train", self.parent_path() / ".." / "cli" / "dsv3-train"}) {
    if (std::filesystem::exists(candidate, ec)) {
      return std::filesystem::weakly_canonical(candidate, ec).string();
    }
  }
  return "";
}

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dsv3-worker --coordinator=HOST:PORT [--name=NAME] [--node=NODE] [--device=cpu|cuda] "
      "[--work_dir=DIR] [--auth_token_file=F] [--train_binary=PATH] [--threads=N]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  dsv3::worker::WorkerOptions options;
  options.name = absl::GetFlag(FLAGS_name);
  if (options.name.empty()) options.name = absl::StrCat(HostName(), "-", getpid());
  options.node = absl::GetFlag(FLAGS_node).empty() ? HostName() : absl::GetFlag(FLAGS_node);
  options.device = absl::GetFlag(FLAGS_device);
  options.work_dir = absl::GetFlag(FLAGS_work_dir);
  options.threads = absl::GetFlag(FLAGS_threads);
  if (options.threads < 1) return Fail("--threads must be at least 1");
  options.train_binary = absl::GetFlag(FLAGS_train_binary);
  if (options.train_binary.empty()) options.train_binary = DefaultTrainBinary();
  if (options.train_binary.empty() || access(options.train_binary.c_str(), X_OK) != 0) {
    return Fail(absl::StrCat("cannot run the training binary '", options.train_binary,
                             "' (give --train_binary=PATH to dsv3-train)"));
  }

  if (absl::Status s = dsv3::InitLogging({.role = "worker",
                                          .id = options.name,
                                          .level = absl::GetFlag(FLAGS_log_level),
                                          .file = absl::GetFlag(FLAGS_log_file)});
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  std::string address = absl::GetFlag(FLAGS_coordinator);
  if (address.empty() && std::getenv("DSV3_COORDINATOR") != nullptr) {
    address = std::getenv("DSV3_COORDINATOR");
  }
  if (address.empty()) return Fail("--coordinator=HOST:PORT (or DSV3_COORDINATOR) is required");
  if (options.device != "cpu" && options.device != "cuda") {
    return Fail(absl::StrCat("--device must be cpu or cuda, got '", options.device, "'"));
  }
  if (options.device == "cuda") {
    return Fail("--device=cuda: this worker build has no CUDA training engine yet");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.work_dir, ec);
  if (ec) return Fail(absl::StrCat("cannot create --work_dir ", options.work_dir, ": ", ec.message()));
  options.work_dir = std::filesystem::absolute(options.work_dir).lexically_normal().string();
  options.coordinator_address = address;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = dsv3::ReadAuthTokenFile(path);
    if (!token.ok()) return Fail(std::string(token.status().message()));
    options.auth_token = *token;
  }

  // Reconnect quickly after a coordinator restart: gRPC's default reconnect backoff starts at 1 s
  // and grows to 120 s, far slower than the worker's own retry loop.
  grpc::ChannelArguments channel_args;
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  dsv3::worker::Worker worker(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), channel_args),
      options);
  std::thread signals([&] {
    int signal = 0;
    sigwait(&stop_signals, &signal);
    spdlog::info("signal {} received; detaching", signal);
    worker.Shutdown();
  });
  spdlog::info("worker {} (node {}, {}) connecting to {}", options.name, options.node,
               options.device, address);
  absl::Status s = worker.Run();
  if (!s.ok()) {
    spdlog::error("{}", s.ToString());
    std::fprintf(stderr, "dsv3-worker: %s\n", std::string(s.message()).c_str());
    // Wake the signal thread so the process can exit.
    pthread_kill(signals.native_handle(), SIGTERM);
    signals.join();
    return 1;
  }
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  spdlog::info("stopped");
  return 0;
}
