// Test-only helpers for the GEMM tests: random matrices, float64 reference products in the three
// Linear layouts, the FP8 block-by-block float64 reference, and DeepGEMM's calc_diff. Written from
// the definitions in gemm.h and spec §5.2, sharing no code with the kernels. Not linked into the
// library.
#ifndef DSV3_KERNELS_CPU_GEMM_TEST_UTIL_H_
#define DSV3_KERNELS_CPU_GEMM_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/fp8.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels::testing {

// n values ~ N(0, stddev^2).
inline std::vector<float> RandomNormal(std::mt19937_64& rng, int64_t n, float stddev = 1.0f) {
  std::normal_distribution<float> normal(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = normal(rng);
  return v;
}

inline std::vector<std::uint16_t> ToBf16(const std::vector<float>& x) {
  std::vector<std::uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = FloatToBf16(x[i]);
  return out;
}

inline std::vector<double> ToDouble(const std::vector<float>& x) {
  return std::vector<double>(x.begin(), x.end());
}

inline std::vector<double> Bf16ToDouble(const std::vector<std::uint16_t>& x) {
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = Bf16ToFloat(x[i]);
  return out;
}

// The three products of a Linear (M tokens, N outputs, K inputs) in float64, row-major.
//   Fprop: y[m, n] = sum_k x[m, k] w[n, k]
inline std::vector<double> RefFprop(const std::vector<double>& x, const std::vector<double>& w,
                                    int64_t m, int64_t n, int64_t k) {
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += x[i * k + t] * w[j * k + t];
      y[i * n + j] = s;
    }
  }
  return y;
}

//   Dgrad: dx[m, k] = sum_n dy[m, n] w[n, k]
inline std::vector<double> RefDgrad(const std::vector<double>& dy, const std::vector<double>& w,
                                    int64_t m, int64_t n, int64_t k) {
  std::vector<double> dx(static_cast<size_t>(m * k), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double d = dy[i * n + j];
      for (int64_t t = 0; t < k; ++t) dx[i * k + t] += d * w[j * k + t];
    }
  }
  return dx;
}

//   Wgrad: dw[n, k] = sum_m dy[m, n] x[m, k]
inline std::vector<double> RefWgrad(const std::vector<double>& dy, const std::vector<double>& x,
                                    int64_t m, int64_t n, int64_t k) {
  std::vector<double> dw(static_cast<size_t>(n * k), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double d = dy[i * n + j];
      for (int64_t t = 0; t < k; ++t) dw[j * k + t] += d * x[i * k + t];
    }
  }
  return dw;
}

// The largest |value| of a reference: tolerances are set relative to it.
inline double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// The block-scaled FP8 product of spec §5.2 in float64, one output (r, c) of an NT product:
//   out[r, c] = sum_kb (sum_{k in kb} dec(a[r, k]) dec(b[c, k])) * sa(r, kb) * sb(c, kb)
// a: [rows, kk] codes, b: [cols, kk] codes (both along the contraction kk); sa, sb: callables.
// Also returns abs_out = the same with every term in absolute value (the error scale).
template <typename Sa, typename Sb>
void RefFp8Nt(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, int64_t rows,
              int64_t cols, int64_t kk, const Sa& sa, const Sb& sb, std::vector<double>* out,
              std::vector<double>* abs_out) {
  out->assign(static_cast<size_t>(rows * cols), 0.0);
  abs_out->assign(static_cast<size_t>(rows * cols), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      double total = 0, total_abs = 0;
      for (int64_t kb = 0; kb < NumTiles(kk); ++kb) {
        double block = 0, block_abs = 0;
        for (int64_t t = kb * kQuantTile; t < std::min(kk, (kb + 1) * kQuantTile); ++t) {
          const double p = static_cast<double>(E4M3ToFloat(a[r * kk + t])) *
                           static_cast<double>(E4M3ToFloat(b[c * kk + t]));
          block += p;
          block_abs += std::fabs(p);
        }
        const double s = static_cast<double>(sa(r, kb)) * static_cast<double>(sb(c, kb));
        total += block * s;
        total_abs += block_abs * std::fabs(s);
      }
      (*out)[r * cols + c] = total;
      (*abs_out)[r * cols + c] = total_abs;
    }
  }
}

// [rows, cols] -> [cols, rows].
template <typename T>
std::vector<T> Transpose(const std::vector<T>& x, int64_t rows, int64_t cols) {
  std::vector<T> t(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
  }
  return t;
}

// DeepGEMM's calc_diff: 1 - 2 sum(x y) / sum(x^2 + y^2), 0 for identical tensors.
inline double CalcDiff(const float* x, const std::vector<double>& y) {
  double xy = 0, xx_yy = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    xy += static_cast<double>(x[i]) * y[i];
    xx_yy += static_cast<double>(x[i]) * x[i] + y[i] * y[i];
  }
  return 1.0 - 2.0 * xy / xx_yy;
}

}  // namespace dsv3::kernels::testing

#endif  // DSV3_KERNELS_CPU_GEMM_TEST_UTIL_H_
