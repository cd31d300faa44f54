// comm_bench: Gloo all-reduce and all-to-all bandwidth on 127.0.0.1 (ranks as threads of this
// process, each with its own TCP device) against the raw loopback TCP bandwidth of one socket,
// measured in the same run. Prints one table row per (op, ranks): the op's bus bandwidth, the raw
// TCP baseline and their ratio. Results are checked against closed forms before timing.
// Not a test. Usage: comm_bench [megabytes per rank, default 32] [iterations, default 5]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/in_process_store.h"

namespace dsv3::parallel {
namespace {

constexpr absl::Duration kWait = absl::Seconds(120);

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "comm_bench: %s\n", what.c_str());
  std::exit(1);
}

// One TCP stream over loopback: bytes per second from the first write to the last byte read.
double RawTcpBytesPerSecond(size_t bytes) {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Die("cannot listen on 127.0.0.1");
  }
  absl::Time done;
  std::thread receiver([&] {
    const int fd = ::accept(listener, nullptr, nullptr);
    std::vector<char> buf(1 << 20);
    size_t got = 0;
    while (got < bytes) {
      const ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n <= 0) Die("loopback read failed");
      got += static_cast<size_t>(n);
    }
    done = absl::Now();
    ::close(fd);
  });
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect failed");
  std::vector<char> buf(1 << 20, 'x');
  const absl::Time start = absl::Now();
  size_t sent = 0;
  while (sent < bytes) {
    const ssize_t n = ::write(fd, buf.data(), std::min(buf.size(), bytes - sent));
    if (n <= 0) Die("loopback write failed");
    sent += static_cast<size_t>(n);
  }
  receiver.join();
  ::close(fd);
  ::close(listener);
  return static_cast<double>(bytes) / absl::ToDoubleSeconds(done - start);
}

std::vector<std::unique_ptr<Communicator>> GlooGroup(int n) {
  auto store = std::make_shared<InProcessStore>();
  std::vector<std::unique_ptr<Communicator>> comms(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions options;
      options.backend = Backend::kGloo;
      options.rank = r;
      options.world_size = n;
      options.store = store;
      options.timeout = absl::Seconds(60);
      absl::StatusOr<std::unique_ptr<Communicator>> c = CreateCommunicator(options);
      if (!c.ok()) Die(std::string(c.status().message()));
      comms[r] = std::move(*c);
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

// Runs body(rank) on every rank `iters` times after a barrier; returns the median of the
// slowest rank's time per iteration.
absl::Duration Time(std::vector<std::unique_ptr<Communicator>>& comms, int iters,
                    const std::function<void(int)>& body) {
  const int n = static_cast<int>(comms.size());
  std::vector<absl::Duration> times;
  for (int it = 0; it < iters; ++it) {
    std::vector<absl::Duration> took(n);
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
      threads.emplace_back([&, r] {
        if (!comms[r]->Barrier()->Wait(kWait).ok()) Die("barrier failed");
        const absl::Time start = absl::Now();
        body(r);
        took[r] = absl::Now() - start;
      });
    }
    for (auto& t : threads) t.join();
    times.push_back(*std::max_element(took.begin(), took.end()));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void Row(const char* op, int n, size_t bytes, double bus_factor, absl::Duration t, double tcp) {
  const double bus = static_cast<double>(bytes) * bus_factor / absl::ToDoubleSeconds(t);
  std::printf("%-11s %5d %9.1f %10.3f %12.2f %12.2f %7.2f\n", op, n,
              static_cast<double>(bytes) / (1 << 20), absl::ToDoubleMilliseconds(t), bus / 1e9,
              tcp / 1e9, bus / tcp);
}

int Main(int argc, char** argv) {
  const size_t megabytes = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 32;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 5;
  const size_t bytes = megabytes << 20;
  const size_t count = bytes / sizeof(float);

  double tcp = 0;
  for (int i = 0; i < 3; ++i) tcp = std::max(tcp, RawTcpBytesPerSecond(4 * bytes));
  std::printf(
      "comm_bench: %zu MiB per rank, %d iterations (median); bus bandwidth as in "
      "nccl-tests\n",
      megabytes, iters);
  std::printf("%-11s %5s %9s %10s %12s %12s %7s\n", "op", "ranks", "MiB/rank", "ms", "bus GB/s",
              "raw TCP GB/s", "ratio");

  for (int n : {2, 4}) {
    std::vector<std::unique_ptr<Communicator>> comms = GlooGroup(n);
    std::vector<std::vector<float>> data(n, std::vector<float>(count));
    auto fill = [&](int r) { std::fill(data[r].begin(), data[r].end(), static_cast<float>(r)); };
    // Correctness first: the sum of the ranks is n(n-1)/2 everywhere.
    for (int r = 0; r < n; ++r) fill(r);
    Time(comms, 1, [&](int r) {
      if (!comms[r]
               ->AllReduce(data[r].data(), data[r].data(), count, DataType::kFloat32)
               ->Wait(kWait)
               .ok()) {
        Die("all_reduce failed");
      }
    });
    for (int r = 0; r < n; ++r) {
      if (std::any_of(data[r].begin(), data[r].end(),
                      [&](float v) { return v != n * (n - 1) / 2.0f; })) {
        Die("all_reduce gave a wrong sum");
      }
    }
    const absl::Duration ar = Time(comms, iters, [&](int r) {
      if (!comms[r]
               ->AllReduce(data[r].data(), data[r].data(), count, DataType::kFloat32)
               ->Wait(kWait)
               .ok()) {
        Die("all_reduce failed");
      }
    });
    Row("all_reduce", n, bytes, 2.0 * (n - 1) / n, ar, tcp);

    // All-to-all: rank r sends block j (bytes/n) filled with r to rank j.
    std::vector<std::vector<float>> out(n, std::vector<float>(count));
    const std::vector<size_t> counts(n, count / n);
    for (int r = 0; r < n; ++r) fill(r);
    auto a2a = [&](int r) {
      if (!comms[r]
               ->AllToAll(data[r].data(), counts, out[r].data(), counts, DataType::kFloat32)
               ->Wait(kWait)
               .ok()) {
        Die("all_to_all failed");
      }
    };
    Time(comms, 1, a2a);
    for (int r = 0; r < n; ++r) {
      for (int j = 0; j < n; ++j) {
        if (out[r][j * (count / n)] != static_cast<float>(j)) Die("all_to_all misrouted");
      }
    }
    const absl::Duration aa = Time(comms, iters, a2a);
    Row("all_to_all", n, bytes, (n - 1.0) / n, aa, tcp);
  }
  return 0;
}

}  // namespace
}  // namespace dsv3::parallel

int main(int argc, char** argv) { return dsv3::parallel::Main(argc, argv); }
