// The GPU's own FP8 and BF16 conversions, run on the device, as a plain C++ interface (no CUDA
// types) so C++20 host tests can compare the CPU codecs against them. Test support only.
#ifndef DSV3_KERNELS_CUDA_FP8_CONVERT_REFERENCE_H_
#define DSV3_KERNELS_CUDA_FP8_CONVERT_REFERENCE_H_

#include <cstdint>
#include <string>

namespace dsv3::kernels::cuda_reference {

enum class Kind { kE4M3, kE5M2, kBf16 };

// True when a CUDA device can be used.
bool HaveGpu();

// Converts the n floats whose bit patterns are base, base+1, ... on the GPU with the hardware
// instructions (satfinite, round-to-nearest-even) into `out8` (FP8 codes) or `out16` (BF16 bits),
// host buffers of n elements. Returns "" or the CUDA error.
std::string EncodeRange(uint32_t base, uint32_t n, Kind kind, uint8_t* out8, uint16_t* out16);

// Decodes every code (256 for FP8, 65536 for BF16) on the GPU into `out` (host, that many floats).
std::string DecodeAll(Kind kind, float* out);

}  // namespace dsv3::kernels::cuda_reference

#endif  // DSV3_KERNELS_CUDA_FP8_CONVERT_REFERENCE_H_
