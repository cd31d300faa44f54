// Types and constants of the FP8 recipe shared by the CPU kernels and their CUDA twins: the FP8
// formats, the tile size of fine-grained scaling (spec §5.2) and the scale format. No code here:
// the conversions are in kernels/cpu/fp8.h and the quantisers in kernels/cpu/quantize.h.
#ifndef DSV3_KERNELS_FP8_TYPES_H_
#define DSV3_KERNELS_FP8_TYPES_H_

#include <cstdint>

namespace dsv3::kernels {

// An FP8 value is stored as its 8-bit code (std::uint8_t); a BF16 value as its 16 bits
// (std::uint16_t). Buffers of either are plain arrays of those integers.
enum class Fp8Format {
  kE4M3,  // 1.4.3, bias 7, max 448, no infinities, NaN = S.1111.111 ("e4m3fn", OCP/NVIDIA)
  kE5M2,  // 1.5.2, bias 15, max 57344, +-inf = S.11111.00, NaN = S.11111.{01,10,11}
};

inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE5M2Max = 57344.0f;

// Fine-grained quantisation (spec §5.2): activations in 1x128 tiles along K, weights in 128x128
// blocks. The last tile of a dimension that is not a multiple of 128 is partial.
inline constexpr int64_t kQuantTile = 128;
// The tile amax is clamped from below to this value before the scale is taken (spec §5.2).
inline constexpr float kAmaxFloor = 1e-4f;

// Number of tiles along a dimension of `size` elements: ceil(size / 128).
constexpr int64_t NumTiles(int64_t size) { return (size + kQuantTile - 1) / kQuantTile; }

enum class ScaleFormat {
  kFp32,   // s = max(amax, 1e-4) / 448 in FP32 (V3 training and checkpoints)
  kUe8m0,  // s rounded up to a power of two, 2^ceil(log2(s)) (V3.1 "scale_fmt": "ue8m0")
};

struct QuantOptions {
  ScaleFormat scale_format = ScaleFormat::kFp32;
};

}  // namespace dsv3::kernels

#endif  // DSV3_KERNELS_FP8_TYPES_H_
