// Test helper: a communicator group of n ranks made on n threads of this process (any backend that
// works within one process: in-process or Gloo over loopback), rendezvousing through an in-memory
// store. A rank whose communicator could not be made is null (and an EXPECT fails).
#ifndef DSV3_ENGINE_PARALLEL_TESTING_GROUPS_H_
#define DSV3_ENGINE_PARALLEL_TESTING_GROUPS_H_

#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/status_matchers.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/in_process_store.h"
#include "gtest/gtest.h"

namespace dsv3::parallel::testing {

inline std::vector<std::unique_ptr<Communicator>> MakeGroup(Backend backend, int n,
                                                            absl::Duration timeout) {
  auto store = std::make_shared<InProcessStore>();
  std::vector<std::unique_ptr<Communicator>> comms(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      CommunicatorOptions o;
      o.backend = backend;
      o.rank = r;
      o.world_size = n;
      o.store = store;
      o.timeout = timeout;
      absl::StatusOr<std::unique_ptr<Communicator>> c = CreateCommunicator(o);
      EXPECT_OK(c) << "rank " << r;
      if (c.ok()) comms[r] = std::move(*c);
    });
  }
  for (auto& t : threads) t.join();
  return comms;
}

}  // namespace dsv3::parallel::testing

#endif  // DSV3_ENGINE_PARALLEL_TESTING_GROUPS_H_
