// dsv3-coordinator: the coordinator daemon. Serves JobService, WorkerService and StoreService (plus
// gRPC health and reflection) on --host:--port, keeps its state in --state_dir, and shuts down
// cleanly on SIGTERM or SIGINT.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/auth_token.h"
#include "common/logging.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "coordinator/services.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "address to bind (0.0.0.0 for every interface)");
ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one (see --port_file)");
ABSL_FLAG(std::string, port_file, "", "write the chosen port to this file once listening");
ABSL_FLAG(std::string, state_dir, "", "directory for the durable state (required)");
ABSL_FLAG(int, lease_ms, 3000, "worker lease; a worker silent for 3 leases is declared dead");
ABSL_FLAG(int, metrics_port, -1, "serve Prometheus /metrics on this port (0 = any free; -1 = off)");
ABSL_FLAG(std::string, auth_token_file, "",
          "require 'authorization: Bearer <token>' on every call, token read from this file");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error");
ABSL_FLAG(std::string, log_file, "", "also log to this file");

namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "dsv3-coordinator: %s\n", message.c_str());
  return 2;
}

// Writes `text` to `path` atomically (temporary file + rename), so readers never see half a port.
bool WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "dsv3-coordinator --state_dir=DIR [--port=N] [--port_file=F] [--lease_ms=3000] "
      "[--metrics_port=N] [--auth_token_file=F]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "'"));

  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  if (absl::Status s = dsv3::InitLogging({.role = "coordinator",
                                          .id = "-",
                                          .level = absl::GetFlag(FLAGS_log_level),
                                          .file = absl::GetFlag(FLAGS_log_file)});
      !s.ok()) {
    return Fail(std::string(s.message()));
  }
  if (absl::GetFlag(FLAGS_state_dir).empty()) return Fail("--state_dir is required");
  if (absl::GetFlag(FLAGS_lease_ms) < 10) return Fail("--lease_ms must be at least 10");
  const int port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) return Fail(absl::StrCat("--port=", port, " is out of range"));

  std::string token;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::string> t = dsv3::ReadAuthTokenFile(path);
    if (!t.ok()) return Fail(std::string(t.status().message()));
    token = *t;
  }

  dsv3::coordinator::CoordinatorOptions options;
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.lease = absl::Milliseconds(absl::GetFlag(FLAGS_lease_ms));
  absl::StatusOr<std::unique_ptr<dsv3::coordinator::Coordinator>> coordinator =
      dsv3::coordinator::Coordinator::Create(options);
  if (!coordinator.ok()) return Fail(coordinator.status().ToString());
  dsv3::SetLogId((*coordinator)->coordinator_id().substr(0, 8));

  dsv3::coordinator::ServerOptions server_options;
  server_options.address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", port);
  server_options.auth_token = token;
  absl::StatusOr<std::unique_ptr<dsv3::coordinator::CoordinatorServer>> server =
      dsv3::coordinator::CoordinatorServer::Start(coordinator->get(), server_options);
  if (!server.ok()) return Fail(server.status().ToString());
  (*coordinator)->Start();

  std::unique_ptr<dsv3::coordinator::MetricsExporter> metrics;
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    absl::StatusOr<std::unique_ptr<dsv3::coordinator::MetricsExporter>> m =
        dsv3::coordinator::MetricsExporter::Start(
            coordinator->get(), absl::StrCat(absl::GetFlag(FLAGS_host), ":", metrics_port));
    if (!m.ok()) return Fail(m.status().ToString());
    metrics = std::move(*m);
    spdlog::info("metrics on http://{}:{}/metrics", absl::GetFlag(FLAGS_host), metrics->port());
  }

  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() &&
      !WriteFileAtomically(port_file, absl::StrCat((*server)->port(), "\n"))) {
    return Fail(absl::StrCat("cannot write --port_file ", port_file));
  }
  spdlog::info("listening on {}:{} (state in {}, lease {} ms{})", absl::GetFlag(FLAGS_host),
               (*server)->port(), options.state_dir, absl::GetFlag(FLAGS_lease_ms),
               token.empty() ? "" : ", token auth");

  int signal = 0;
  sigwait(&stop_signals, &signal);
  spdlog::info("signal {} received; shutting down", signal);
  metrics.reset();
  (*server)->Shutdown(absl::Seconds(2));
  (*coordinator)->Stop();
  spdlog::info("stopped");
  return 0;
}
