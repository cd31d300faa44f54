// Internal: AVX-512 per-row kernels of the cross-entropy (cross_entropy_kernels.h), compiled through
// function target attributes so the rest of the library needs no -mavx512 flag.

#include "kernels/cpu/cross_entropy_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx512_exp.h"

#define DSV3_HAVE_AVX512_CROSS_ENTROPY 1
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

#include <limits>

namespace dsv3::kernels::internal {

#ifdef DSV3_HAVE_AVX512_CROSS_ENTROPY
namespace {

#define DSV3_AVX512 __attribute__((target("avx512f,avx512dq")))

DSV3_AVX512 inline __mmask16 TailMask(int64_t remaining) {
  return remaining >= 16 ? static_cast<__mmask16>(0xFFFF)
                         : static_cast<__mmask16>((1u << remaining) - 1u);
}

DSV3_AVX512 double MaxExpSum(const float* x, int64_t n, float* e, float* m_out) {
  __m512 mv = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = TailMask(n - j);
    mv = _mm512_mask_max_ps(mv, k, mv, _mm512_maskz_loadu_ps(k, x + j));
  }
  const float m = _mm512_reduce_max_ps(mv);
  const __m512 mb = _mm512_set1_ps(m);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = TailMask(n - j);
    const __m512 v =
        _mm512_maskz_mov_ps(k, Avx512Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mb)));
    if (e != nullptr) _mm512_mask_storeu_ps(e + j, k, v);
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(
                               _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  alignas(64) double lanes[16];
  _mm512_store_pd(lanes, lo);
  _mm512_store_pd(lanes + 8, hi);
  double sum = 0.0;
  for (double l : lanes) sum += l;
  *m_out = m;
  return sum;
}

DSV3_AVX512 void Scale(float* d, int64_t n, float inv_sum, float factor) {
  const __m512 a = _mm512_set1_ps(inv_sum), b = _mm512_set1_ps(factor);
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 k = TailMask(n - j);
    const __m512 v = _mm512_maskz_loadu_ps(k, d + j);
    _mm512_mask_storeu_ps(d + j, k, _mm512_mul_ps(_mm512_mul_ps(v, a), b));
  }
}

constexpr CrossEntropyRowKernels kAvx512 = {MaxExpSum, Scale};

}  // namespace

const CrossEntropyRowKernels* Avx512CrossEntropyRowKernels() {
  const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  return supported ? &kAvx512 : nullptr;
}

#else

const CrossEntropyRowKernels* Avx512CrossEntropyRowKernels() { return nullptr; }

#endif

}  // namespace dsv3::kernels::internal
