// Internal: runs one block-scaled FP8 GEMM problem, or a batch of them (the grouped GEMMs), on
// ctx's threads; the common core of the FP8 entries of gemm.h and grouped_gemm.h. Arguments are
// validated by those entries. Not a public API.
#ifndef DSV3_KERNELS_CPU_GEMM_FP8_ENGINE_H_
#define DSV3_KERNELS_CPU_GEMM_FP8_ENGINE_H_

#include <cstdint>
#include <vector>

#include "kernels/cpu/context.h"

namespace dsv3::kernels::internal {

// How the B operand (the one whose rows or columns are the output columns) is stored.
enum class Fp8BLayout {
  // codes [n, k] row-major, 128x128 block scales [NumTiles(n), NumTiles(k)] (a weight, Fprop)
  kRowsBlockScaled,
  // codes [k, n] row-major, 128x128 block scales [NumTiles(k), NumTiles(n)] (a weight, Dgrad)
  kColsBlockScaled,
  // codes [n, k] row-major, 1x128 scales along k [n, NumTiles(k)] (a transposed activation, Wgrad)
  kRowsRowScaled,
};

// c[m, n] = sum over K blocks kb of P_kb[m, n] · a_scales[m, kb] · (B's scale of (n, kb)), with the
// exact order of gemm_fp8_kernels.h, starting from 0 (or from c itself when `accumulate`).
//   a: codes [m, k] row-major, a_scales: [m, NumTiles(k)] (1x128 tiles along k)
//   c: [m, n] row-major FP32
struct Fp8Problem {
  const std::uint8_t* a = nullptr;
  const float* a_scales = nullptr;
  const std::uint8_t* b = nullptr;
  const float* b_scales = nullptr;
  Fp8BLayout b_layout = Fp8BLayout::kRowsBlockScaled;
  int64_t m = 0, n = 0, k = 0;
  bool accumulate = false;
  float* c = nullptr;
};

// Runs all problems; outputs must not overlap each other or any input. Any sizes >= 0.
void RunFp8Gemms(const CpuContext& ctx, const std::vector<Fp8Problem>& problems);

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_GEMM_FP8_ENGINE_H_
