// Quantisers of quantize.h: argument checks, a split of the tiles over threads, and per-tile loops
// over the span kernels (fp8_span.h), which do the arithmetic.

#include "kernels/cpu/quantize.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <initializer_list>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/check.h"
#include "kernels/cpu/fp8_span.h"

namespace dsv3::kernels {
namespace {

using internal::SpanKernels;

// Rows (of about 1-4K elements) per thread chunk in row-wise loops: keep chunks >= ~64K elements.
int64_t RowGrain(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(cols, 1));
}

void CheckShape(const char* op, int64_t rows, int64_t cols) {
  DSV3_KERNEL_CHECK(rows >= 0 && cols >= 0, "%s: rows=%lld and cols=%lld must be >= 0", op,
                    static_cast<long long>(rows), static_cast<long long>(cols));
}

// One buffer argument: its name, pointer and size in bytes.
struct Buffer {
  const char* name;
  const void* data;
  int64_t bytes;
};

// Non-null when non-empty, and no two buffers overlap.
void CheckBuffers(const char* op, std::initializer_list<Buffer> buffers) {
  for (const Buffer& b : buffers) {
    DSV3_KERNEL_CHECK(b.bytes == 0 || b.data != nullptr, "%s: %s is null but needs %lld bytes", op,
                      b.name, static_cast<long long>(b.bytes));
  }
  for (auto a = buffers.begin(); a != buffers.end(); ++a) {
    for (auto b = a + 1; b != buffers.end(); ++b) {
      DSV3_KERNEL_CHECK(!internal::Overlaps(a->data, a->bytes, b->data, b->bytes),
                        "%s: %s and %s overlap", op, a->name, b->name);
    }
  }
}

#if defined(__SSE2__)
// dst[c, r] = src[r, c] for a 16x16 byte block (SSE2, part of every x86-64). Four rounds of
// interleaving rows pairwise (bytes, then 2, 4 and 8-byte units) leave column bitreverse4(v) in
// vector v.
inline void Transpose16x16Bytes(const std::uint8_t* src, int64_t src_ld, std::uint8_t* dst,
                                int64_t dst_ld) {
  __m128i x[16];
  __m128i t[16];
  for (int64_t r = 0; r < 16; ++r) {
    x[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + r * src_ld));
  }
  for (int64_t i = 0; i < 8; ++i) {
    t[i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
    t[i + 8] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
  }
  for (int64_t i = 0; i < 8; ++i) {
    x[i] = _mm_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
    x[i + 8] = _mm_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
  }
  for (int64_t i = 0; i < 8; ++i) {
    t[i] = _mm_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    t[i + 8] = _mm_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  for (int64_t i = 0; i < 8; ++i) {
    x[i] = _mm_unpacklo_epi64(t[2 * i], t[2 * i + 1]);
    x[i + 8] = _mm_unpackhi_epi64(t[2 * i], t[2 * i + 1]);
  }
  constexpr int64_t kBitReverse4[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  for (int64_t v = 0; v < 16; ++v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + kBitReverse4[v] * dst_ld), x[v]);
  }
}
constexpr int64_t kTransposeBlock = 16;
#endif

// dst[c, r] = src[r, c] for a [rows, cols] byte matrix; row strides src_ld and dst_ld.
void TransposeBytes(const std::uint8_t* src, int64_t src_ld, int64_t rows, int64_t cols,
                    std::uint8_t* dst, int64_t dst_ld) {
  int64_t rows_done = 0;  // Rows and columns covered by whole blocks.
  int64_t cols_done = 0;
#if defined(__SSE2__)
  rows_done = rows - rows % kTransposeBlock;
  cols_done = cols - cols % kTransposeBlock;
  for (int64_t r = 0; r < rows_done; r += kTransposeBlock) {
    for (int64_t c = 0; c < cols_done; c += kTransposeBlock) {
      Transpose16x16Bytes(src + r * src_ld + c, src_ld, dst + c * dst_ld + r, dst_ld);
    }
  }
#endif
  for (int64_t c = 0; c < cols; ++c) {  // The ragged edges.
    for (int64_t r = (c < cols_done ? rows_done : 0); r < rows; ++r) {
      dst[c * dst_ld + r] = src[r * src_ld + c];
    }
  }
}

// Quantises one strip of at most 128 rows x 128 columns in 128x1 tiles (one tile per column) and
// writes it transposed.
//   src:      [nr, nc] with row stride src_ld, FP32
//   q_t:      [nc, nr] with row stride q_t_ld, E4M3 codes (the strip's place in X^T)
//   scales_t: [nc] with stride scales_t_ld
void QuantizeStripTransposed(const SpanKernels& k, ScaleFormat format, const float* src,
                             int64_t src_ld, int64_t nr, int64_t nc, std::uint8_t* q_t,
                             int64_t q_t_ld, float* scales_t, int64_t scales_t_ld) {
  std::uint32_t amax[kQuantTile] = {};
  for (int64_t r = 0; r < nr; ++r) {
    k.abs_max_bits_into(src + r * src_ld, nc, amax);
  }
  float inv[kQuantTile];
  for (int64_t c = 0; c < nc; ++c) {
    const float s = ScaleFromAmax(std::bit_cast<float>(amax[c]), format);
    scales_t[c * scales_t_ld] = s;
    inv[c] = 1.0f / s;
  }
  std::uint8_t codes[kQuantTile][kQuantTile];  // [row][column] of the strip
  for (int64_t r = 0; r < nr; ++r) {
    k.scale_each_encode_e4m3(src + r * src_ld, inv, nc, codes[r]);
  }
  TransposeBytes(&codes[0][0], kQuantTile, nr, nc, q_t, q_t_ld);
}

}  // namespace

float RoundScaleToUe8m0(float s) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(s);
  const std::uint32_t exponent = bits >> 23;  // s > 0: no sign bit
  const std::uint32_t mantissa = bits & 0x7FFFFFu;
  if (exponent == 0xFFu) {
    return s;  // inf or NaN
  }
  if (exponent == 0) {  // Subnormal: the next power of two of the mantissa bits.
    return std::bit_cast<float>(std::bit_ceil(mantissa));
  }
  return std::bit_cast<float>((exponent + (mantissa != 0 ? 1u : 0u)) << 23);
}

float ScaleFromAmax(float amax, ScaleFormat format) {
  const float clamped = amax < kAmaxFloor ? kAmaxFloor : amax;  // NaN stays NaN
  const float s = clamped / kE4M3Max;
  return format == ScaleFormat::kUe8m0 ? RoundScaleToUe8m0(s) : s;
}

void Quantize1x128(const CpuContext& ctx, const QuantOptions& options, const float* x, int64_t rows,
                   int64_t cols, std::uint8_t* q, float* scales) {
  CheckShape("Quantize1x128", rows, cols);
  const int64_t tiles = NumTiles(cols);
  CheckBuffers(
      "Quantize1x128",
      {{"x", x, rows * cols * 4}, {"q", q, rows * cols}, {"scales", scales, rows * tiles * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  const ScaleFormat format = options.scale_format;
  ParallelFor(ctx, rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t c0 = t * kQuantTile;
        const int64_t n = std::min(kQuantTile, cols - c0);
        const float* in = x + r * cols + c0;
        const float s = ScaleFromAmax(std::bit_cast<float>(k.abs_max_bits(in, n)), format);
        scales[r * tiles + t] = s;
        k.scale_encode_e4m3(in, n, 1.0f / s, q + r * cols + c0);
      }
    }
  });
}

void Quantize128x128(const CpuContext& ctx, const QuantOptions& options, const float* w,
                     int64_t rows, int64_t cols, std::uint8_t* q, float* scales) {
  CheckShape("Quantize128x128", rows, cols);
  const int64_t row_tiles = NumTiles(rows);
  const int64_t col_tiles = NumTiles(cols);
  CheckBuffers("Quantize128x128", {{"w", w, rows * cols * 4},
                                   {"q", q, rows * cols},
                                   {"scales", scales, row_tiles * col_tiles * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  const ScaleFormat format = options.scale_format;
  ParallelFor(ctx, row_tiles * col_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t r0 = (block / col_tiles) * kQuantTile;
      const int64_t c0 = (block % col_tiles) * kQuantTile;
      const int64_t nr = std::min(kQuantTile, rows - r0);
      const int64_t nc = std::min(kQuantTile, cols - c0);
      std::uint32_t amax = 0;
      for (int64_t r = r0; r < r0 + nr; ++r) {
        amax = std::max(amax, k.abs_max_bits(w + r * cols + c0, nc));
      }
      const float s = ScaleFromAmax(std::bit_cast<float>(amax), format);
      scales[block] = s;
      const float inv = 1.0f / s;
      for (int64_t r = r0; r < r0 + nr; ++r) {
        k.scale_encode_e4m3(w + r * cols + c0, nc, inv, q + r * cols + c0);
      }
    }
  });
}

void Quantize128x1Transposed(const CpuContext& ctx, const QuantOptions& options, const float* x,
                             int64_t rows, int64_t cols, std::uint8_t* q_t, float* scales_t) {
  CheckShape("Quantize128x1Transposed", rows, cols);
  const int64_t row_tiles = NumTiles(rows);
  const int64_t col_strips = NumTiles(cols);
  CheckBuffers("Quantize128x1Transposed", {{"x", x, rows * cols * 4},
                                           {"q_t", q_t, rows * cols},
                                           {"scales_t", scales_t, cols * row_tiles * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, row_tiles * col_strips, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t rt = item / col_strips;
      const int64_t r0 = rt * kQuantTile;
      const int64_t c0 = (item % col_strips) * kQuantTile;
      QuantizeStripTransposed(k, options.scale_format, x + r0 * cols + c0, cols,
                              std::min(kQuantTile, rows - r0), std::min(kQuantTile, cols - c0),
                              q_t + c0 * rows + r0, rows, scales_t + c0 * row_tiles + rt,
                              row_tiles);
    }
  });
}

void Requantize128x1Transposed(const CpuContext& ctx, const QuantOptions& options,
                               const std::uint8_t* q, const float* scales, int64_t rows,
                               int64_t cols, std::uint8_t* q_t, float* scales_t) {
  CheckShape("Requantize128x1Transposed", rows, cols);
  const int64_t row_tiles = NumTiles(rows);
  const int64_t col_tiles = NumTiles(cols);
  CheckBuffers("Requantize128x1Transposed", {{"q", q, rows * cols},
                                             {"scales", scales, rows * col_tiles * 4},
                                             {"q_t", q_t, rows * cols},
                                             {"scales_t", scales_t, cols * row_tiles * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, row_tiles * col_tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> strip(kQuantTile * kQuantTile);  // The dequantised strip, [nr, nc].
    for (int64_t item = begin; item < end; ++item) {
      const int64_t rt = item / col_tiles;
      const int64_t ct = item % col_tiles;  // The strip is exactly input tile column ct.
      const int64_t r0 = rt * kQuantTile;
      const int64_t c0 = ct * kQuantTile;
      const int64_t nr = std::min(kQuantTile, rows - r0);
      const int64_t nc = std::min(kQuantTile, cols - c0);
      for (int64_t r = 0; r < nr; ++r) {
        k.decode_scale_e4m3(q + (r0 + r) * cols + c0, nc, scales[(r0 + r) * col_tiles + ct],
                            strip.data() + r * nc);
      }
      QuantizeStripTransposed(k, options.scale_format, strip.data(), nc, nr, nc,
                              q_t + c0 * rows + r0, rows, scales_t + c0 * row_tiles + rt,
                              row_tiles);
    }
  });
}

void Dequantize1x128(const CpuContext& ctx, const std::uint8_t* q, const float* scales,
                     int64_t rows, int64_t cols, float* x) {
  CheckShape("Dequantize1x128", rows, cols);
  const int64_t tiles = NumTiles(cols);
  CheckBuffers(
      "Dequantize1x128",
      {{"q", q, rows * cols}, {"scales", scales, rows * tiles * 4}, {"x", x, rows * cols * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t t = 0; t < tiles; ++t) {
        const int64_t c0 = t * kQuantTile;
        k.decode_scale_e4m3(q + r * cols + c0, std::min(kQuantTile, cols - c0),
                            scales[r * tiles + t], x + r * cols + c0);
      }
    }
  });
}

void Dequantize128x128(const CpuContext& ctx, const std::uint8_t* q, const float* scales,
                       int64_t rows, int64_t cols, float* w) {
  CheckShape("Dequantize128x128", rows, cols);
  const int64_t col_tiles = NumTiles(cols);
  CheckBuffers("Dequantize128x128", {{"q", q, rows * cols},
                                     {"scales", scales, NumTiles(rows) * col_tiles * 4},
                                     {"w", w, rows * cols * 4}});
  const SpanKernels& k = internal::SpanKernelsFor(ctx);
  ParallelFor(ctx, rows, RowGrain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* block_scales = scales + (r / kQuantTile) * col_tiles;
      for (int64_t t = 0; t < col_tiles; ++t) {
        const int64_t c0 = t * kQuantTile;
        k.decode_scale_e4m3(q + r * cols + c0, std::min(kQuantTile, cols - c0), block_scales[t],
                            w + r * cols + c0);
      }
    }
  });
}

}  // namespace dsv3::kernels
