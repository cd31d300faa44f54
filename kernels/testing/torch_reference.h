// Helpers for tests that check a kernel against PyTorch: a per-test exchange directory, running a
// reference script under Debian's Python (which has torch 1.13), and an element-wise comparison that
// reports the worst element, its index and the shape. The scripts live in tests/reference/ and read
// and write .npy files in the exchange directory. Tests only.
#ifndef DSV3_KERNELS_TESTING_TORCH_REFERENCE_H_
#define DSV3_KERNELS_TESTING_TORCH_REFERENCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace dsv3::kernels::testing {

// A new empty directory under the test temp dir, named after the running test and `tag`.
std::string MakeExchangeDir(const std::string& tag = "");

// Runs `python3 <repo>/<script> <dir> [args...]` with the torch-capable interpreter. Success when
// the script exits 0; otherwise the failure carries the script's output.
::testing::AssertionResult RunTorchReference(const std::string& script, const std::string& dir,
                                             const std::vector<std::string>& args = {});

// |got - want| <= atol + rtol * |want| element-wise; on failure names the worst element (largest
// excess over its tolerance), its multi-index, the shape, and how many elements failed.
::testing::AssertionResult AllClose(const std::string& what, const float* got,
                                    const std::vector<double>& want,
                                    const std::vector<int64_t>& shape, double rtol, double atol);

// Relative error of a whole tensor: ||got - want||_2 / max(||want||_2, tiny). Reported with `what`
// when above `max_rel`.
::testing::AssertionResult RelativeErrorBelow(const std::string& what, const float* got,
                                              const std::vector<double>& want, double max_rel);

}  // namespace dsv3::kernels::testing

#endif  // DSV3_KERNELS_TESTING_TORCH_REFERENCE_H_
