// Tests of the NCCL backend with one rank on one GPU (NCCL refuses two ranks on one device;
// multi-rank semantics are tested on the CPU backends): every operation on device buffers against
// closed-form results, split, abort, and argument checks. Skipped (never failed) without a GPU.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "common/status_matchers.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/in_process_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dsv3::parallel {
namespace {

using ::dsv3::testing::StatusIs;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(60);

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// A device buffer of T, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess);
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  T* get() { return static_cast<T*>(ptr_); }
  std::vector<T> Host() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaMemcpy(out.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

class NcclOneRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
    CommunicatorOptions options;
    options.backend = Backend::kNccl;
    options.store = std::make_shared<InProcessStore>();
    options.timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<Communicator>> c = CreateCommunicator(options);
    ASSERT_OK(c);
    comm_ = std::move(*c);
  }
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclOneRankTest, AllReduceOfOneRankIsItsInput) {
  std::vector<float> x(1000);
  std::iota(x.begin(), x.end(), 0.0f);
  DeviceBuffer<float> in(x), out(x.size());
  ASSERT_OK(comm_->AllReduce(in.get(), out.get(), x.size(), DataType::kFloat32)->Wait(kWait));
  EXPECT_THAT(out.Host(), ElementsAreArray(x));
  std::vector<int64_t> y = {5, -7, 9};
  DeviceBuffer<int64_t> iy(y);
  ASSERT_OK(comm_->AllReduce(iy.get(), iy.get(), 3, DataType::kInt64)->Wait(kWait));
  EXPECT_THAT(iy.Host(), ElementsAreArray(y));
}

TEST_F(NcclOneRankTest, ReduceScatterAllGatherAndAllToAllMoveTheOnlyBlock) {
  std::vector<double> x = {1.5, 2.5, 3.5};
  DeviceBuffer<double> in(x), rs(3), ag(3), a2a(3);
  ASSERT_OK(comm_->ReduceScatter(in.get(), rs.get(), 3, DataType::kFloat64)->Wait(kWait));
  EXPECT_THAT(rs.Host(), ElementsAreArray(x));
  ASSERT_OK(comm_->AllGather(in.get(), ag.get(), 3, DataType::kFloat64)->Wait(kWait));
  EXPECT_THAT(ag.Host(), ElementsAreArray(x));
  const size_t counts[1] = {3};
  ASSERT_OK(comm_->AllToAll(in.get(), counts, a2a.get(), counts, DataType::kFloat64)->Wait(kWait));
  EXPECT_THAT(a2a.Host(), ElementsAreArray(x));
}

TEST_F(NcclOneRankTest, BarrierAndAnEmptyBatchComplete) {
  ASSERT_OK(comm_->Barrier()->Wait(kWait));
  ASSERT_OK(comm_->SendRecv({}, {})->Wait(kWait));
}

TEST_F(NcclOneRankTest, ManyQueuedOperationsCompleteInOrder) {
  DeviceBuffer<int32_t> x(std::vector<int32_t>(256, 3));
  std::vector<std::unique_ptr<Work>> works;
  for (int i = 0; i < 50; ++i) {
    works.push_back(comm_->AllReduce(x.get(), x.get(), 256, DataType::kInt32));
  }
  for (auto& w : works) ASSERT_OK(w->Wait(kWait));
  EXPECT_THAT(x.Host(), ::testing::Each(3));
}

TEST_F(NcclOneRankTest, SplitGivesAOneRankGroupOrNothing) {
  absl::StatusOr<std::unique_ptr<Communicator>> sub = comm_->Split(0, 0);
  ASSERT_OK(sub);
  ASSERT_NE(*sub, nullptr);
  EXPECT_EQ((*sub)->size(), 1);
  EXPECT_EQ((*sub)->rank(), 0);
  DeviceBuffer<float> x(std::vector<float>{4.0f});
  ASSERT_OK((*sub)->AllReduce(x.get(), x.get(), 1, DataType::kFloat32)->Wait(kWait));
  EXPECT_THAT(x.Host(), ElementsAreArray({4.0f}));
  absl::StatusOr<std::unique_ptr<Communicator>> none = comm_->Split(-1, 0);
  ASSERT_OK(none);
  EXPECT_EQ(*none, nullptr);
}

TEST_F(NcclOneRankTest, AfterAbortEveryOperationFailsQuotingTheReason) {
  comm_->Abort(absl::CancelledError("re-planning"));
  DeviceBuffer<float> x(1);
  EXPECT_THAT(comm_->AllReduce(x.get(), x.get(), 1, DataType::kFloat32)->Wait(kWait),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-planning")));
}

TEST_F(NcclOneRankTest, InvalidArgumentsAreRejectedBeforeReachingNccl) {
  EXPECT_THAT(comm_->AllReduce(nullptr, nullptr, 4, DataType::kFloat32)->Wait(kWait),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("null")));
  EXPECT_THAT(comm_->SendRecv({{0, nullptr, 0, DataType::kFloat32}}, {})->Wait(kWait),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not another rank")));
}

TEST(NcclBackendTest, WithoutAGpuCreationFailsWithFailedPrecondition) {
  if (HaveGpu()) GTEST_SKIP() << "a CUDA device is present";
  CommunicatorOptions options;
  options.backend = Backend::kNccl;
  options.store = std::make_shared<InProcessStore>();
  EXPECT_THAT(CreateCommunicator(options),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("CUDA device")));
}

}  // namespace
}  // namespace dsv3::parallel
