// grpc_garbage_client: sends hostile requests to a dsv3 coordinator — random bytes as the request
// body of every RPC, empty bodies, and oversized bodies — and checks that each gets an error status
// back (never a hang). Exit 0 when every call was answered and the server still answers at the end;
// 1 otherwise. A test tool, not shipped.
//   grpc_garbage_client HOST:PORT [--calls_per_method=N] [--seed=S]
#include <cstdio>
#include <cstdlib>
#include <future>
#include <random>
#include <string>
#include <vector>

#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"

namespace {

const char* const kMethods[] = {
    "/dsv3.v1.JobService/SubmitJob",    "/dsv3.v1.JobService/GetJob",
    "/dsv3.v1.JobService/ListJobs",     "/dsv3.v1.JobService/CancelJob",
    "/dsv3.v1.JobService/EstimateCost", "/dsv3.v1.JobService/ListWorkers",
    "/dsv3.v1.WorkerService/Attach",    "/dsv3.v1.WorkerService/Detach",
    "/dsv3.v1.StoreService/Set",        "/dsv3.v1.StoreService/Get",
    "/dsv3.v1.StoreService/Wait",       "/dsv3.v1.StoreService/Add",
    "/dsv3.v1.NoSuchService/Nothing",
};

grpc::Status Call(grpc::GenericStub& stub, const std::string& method, const std::string& body) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  return done.get_future().get();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: grpc_garbage_client HOST:PORT [--calls_per_method=N] [--seed=S]\n");
    return 2;
  }
  int calls = 20;
  unsigned seed = 1;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--calls_per_method=", 0) == 0) calls = std::atoi(a.c_str() + 19);
    if (a.rfind("--seed=", 0) == 0) seed = static_cast<unsigned>(std::atoi(a.c_str() + 7));
  }
  std::printf("seed %u, %d calls per method\n", seed, calls);
  auto channel = grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  std::mt19937 rng(seed);
  int answered = 0, ok = 0, unavailable = 0, deadline = 0;
  for (const char* method : kMethods) {
    for (int i = 0; i < calls; ++i) {
      std::string body;
      if (i == 1) {
        body.assign(6 << 20, '\xff');  // large garbage, under the 8 MiB message limit
      } else if (i == 2) {
        body.assign(9 << 20, 'A');  // above the server's 8 MiB message limit
      } else if (i > 2) {
        body.resize(std::uniform_int_distribution<int>(1, 4096)(rng));
        for (char& c : body) c = static_cast<char>(rng());
      }
      grpc::Status s = Call(stub, method, body);
      ++answered;
      if (s.ok()) ++ok;
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) ++unavailable;
      if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++deadline;
    }
  }
  // The server must still answer a well-formed call.
  grpc::Status last = Call(stub, "/dsv3.v1.JobService/ListJobs", "");
  std::printf("answered %d, ok %d, unavailable %d, deadline exceeded %d; final ListJobs: %s\n",
              answered, ok, unavailable, deadline, last.ok() ? "OK" : last.error_message().c_str());
  return (unavailable == 0 && deadline == 0 && last.ok()) ? 0 : 1;
}
