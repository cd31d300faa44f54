// Internal: a vector exp for AVX-512 (F) code compiled through function target attributes, shared by
// the attention and cross-entropy kernels. Include only from x86-64 GCC/Clang translation units that
// include <immintrin.h>; callers mark their functions with the same target.
#ifndef DSV3_KERNELS_CPU_AVX512_EXP_H_
#define DSV3_KERNELS_CPU_AVX512_EXP_H_

#include <immintrin.h>

namespace dsv3::kernels::internal {

// exp(x) for every lane, within 2 ulp of the exact value on the range softmax uses: the Cephes
// expf reduction x = n ln2 + r, |r| <= ln2 / 2, a degree-7 polynomial in r, then a scale by 2^n
// that underflows gracefully. exp(-inf) = 0 exactly (inputs below -200 are clamped there, whose
// exp is 0 in FP32); NaN stays NaN.
__attribute__((target("avx512f,avx512dq"))) inline __m512 Avx512Exp(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-200.0f), x);  // The NaN operand is returned when x is NaN.
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 y = _mm512_set1_ps(1.9875691500e-4f);
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
  y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

}  // namespace dsv3::kernels::internal

#endif  // DSV3_KERNELS_CPU_AVX512_EXP_H_
