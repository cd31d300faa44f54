// Dispatch maps (a serial counting sort) and the row copies / weighted combines, tokens or rows in
// parallel. Every output element is produced by one thread in a fixed order.

#include "kernels/cpu/permute.h"

#include <cstring>
#include <limits>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

using internal::ViewsOverlap;

void CheckSlots(const char* op, int64_t tokens, int64_t top_k, int64_t hidden) {
  DSV3_KERNEL_CHECK(tokens >= 0 && top_k >= 1 && hidden >= 1,
                    "%s: tokens=%lld must be >= 0, top_k=%lld >= 1, hidden=%lld >= 1", op,
                    static_cast<long long>(tokens), static_cast<long long>(top_k),
                    static_cast<long long>(hidden));
  DSV3_KERNEL_CHECK(tokens * top_k < std::numeric_limits<int32_t>::max(),
                    "%s: tokens * top_k = %lld must be < 2^31", op,
                    static_cast<long long>(tokens * top_k));
}

void CheckSlotRows(const char* op, const int32_t* slot_row, int64_t n, int64_t rows) {
  for (int64_t i = 0; i < n; ++i) {
    DSV3_KERNEL_CHECK(slot_row[i] >= -1 && slot_row[i] < rows,
                      "%s: slot_row[%lld]=%d outside [-1, rows=%lld)", op,
                      static_cast<long long>(i), slot_row[i], static_cast<long long>(rows));
  }
}

}  // namespace

int64_t BuildDispatchMaps(const CpuContext& ctx, const int32_t* expert_ids, int64_t tokens,
                          int64_t top_k, int64_t n_experts, int64_t* expert_offsets,
                          int32_t* row_token, int32_t* slot_row) {
  CheckSlots("BuildDispatchMaps", tokens, top_k, 1);
  DSV3_KERNEL_CHECK(n_experts >= 1, "BuildDispatchMaps: n_experts=%lld must be >= 1",
                    static_cast<long long>(n_experts));
  DSV3_KERNEL_CHECK(expert_offsets != nullptr, "BuildDispatchMaps: null expert_offsets");
  const int64_t nk = tokens * top_k;
  if (nk > 0) {
    DSV3_KERNEL_CHECK(expert_ids != nullptr && row_token != nullptr && slot_row != nullptr,
                      "BuildDispatchMaps: null expert_ids, row_token or slot_row");
    DSV3_KERNEL_CHECK(
        !internal::Overlaps(row_token, nk * 4, slot_row, nk * 4) &&
            !internal::Overlaps(row_token, nk * 4, expert_ids, nk * 4) &&
            !internal::Overlaps(slot_row, nk * 4, expert_ids, nk * 4) &&
            !internal::Overlaps(expert_offsets, (n_experts + 1) * 8, expert_ids, nk * 4) &&
            !internal::Overlaps(expert_offsets, (n_experts + 1) * 8, row_token, nk * 4) &&
            !internal::Overlaps(expert_offsets, (n_experts + 1) * 8, slot_row, nk * 4),
        "BuildDispatchMaps: buffers overlap");
  }
  std::vector<int64_t> next(n_experts, 0);
  for (int64_t i = 0; i < nk; ++i) {
    const int32_t e = expert_ids[i];
    DSV3_KERNEL_CHECK(e >= -1 && e < n_experts,
                      "BuildDispatchMaps: expert_ids[%lld]=%d outside [-1, n_experts=%lld)",
                      static_cast<long long>(i), e, static_cast<long long>(n_experts));
    if (e >= 0) ++next[e];
  }
  int64_t total = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    expert_offsets[e] = total;
    const int64_t count = next[e];
    next[e] = total;
    total += count;
  }
  expert_offsets[n_experts] = total;
  // (token, slot) in increasing order: within an expert, rows come out by token, then slot.
  for (int64_t i = 0; i < nk; ++i) {
    const int32_t e = expert_ids[i];
    if (e < 0) {
      slot_row[i] = -1;
      continue;
    }
    const int64_t p = next[e]++;
    slot_row[i] = static_cast<int32_t>(p);
    row_token[p] = static_cast<int32_t>(i / top_k);
  }
  for (int64_t p = total; p < nk; ++p) row_token[p] = -1;
  return total;
}

void PermuteForward(const CpuContext& ctx, const float* x, int64_t tokens, int64_t hidden,
                    const int32_t* row_token, int64_t rows, float* x_perm) {
  DSV3_KERNEL_CHECK(tokens >= 0 && hidden >= 1 && rows >= 0,
                    "PermuteForward: tokens=%lld and rows=%lld must be >= 0, hidden=%lld >= 1",
                    static_cast<long long>(tokens), static_cast<long long>(rows),
                    static_cast<long long>(hidden));
  if (rows == 0) return;
  DSV3_KERNEL_CHECK(x != nullptr && row_token != nullptr && x_perm != nullptr,
                    "PermuteForward: null x, row_token or x_perm");
  DSV3_KERNEL_CHECK(!ViewsOverlap(x, tokens * hidden, x_perm, rows * hidden),
                    "PermuteForward: x_perm overlaps x");
  for (int64_t p = 0; p < rows; ++p) {
    DSV3_KERNEL_CHECK(row_token[p] >= 0 && row_token[p] < tokens,
                      "PermuteForward: row_token[%lld]=%d outside [0, tokens=%lld)",
                      static_cast<long long>(p), row_token[p], static_cast<long long>(tokens));
  }
  ParallelFor(ctx, rows, internal::RowGrain(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      std::memcpy(x_perm + p * hidden, x + static_cast<int64_t>(row_token[p]) * hidden,
                  hidden * sizeof(float));
    }
  });
}

void PermuteBackward(const CpuContext& ctx, const float* dx_perm, int64_t rows,
                     const int32_t* slot_row, int64_t tokens, int64_t top_k, int64_t hidden,
                     float* dx) {
  CheckSlots("PermuteBackward", tokens, top_k, hidden);
  DSV3_KERNEL_CHECK(rows >= 0, "PermuteBackward: rows=%lld must be >= 0",
                    static_cast<long long>(rows));
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(slot_row != nullptr && dx != nullptr && (rows == 0 || dx_perm != nullptr),
                    "PermuteBackward: null dx_perm, slot_row or dx");
  DSV3_KERNEL_CHECK(!ViewsOverlap(dx, tokens * hidden, dx_perm, rows * hidden),
                    "PermuteBackward: dx overlaps dx_perm");
  CheckSlotRows("PermuteBackward", slot_row, tokens * top_k, rows);
  ParallelFor(ctx, tokens, internal::RowGrain(hidden * top_k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* d = dx + t * hidden;
      std::memset(d, 0, hidden * sizeof(float));
      for (int64_t k = 0; k < top_k; ++k) {
        const int32_t p = slot_row[t * top_k + k];
        if (p < 0) continue;
        const float* src = dx_perm + static_cast<int64_t>(p) * hidden;
        for (int64_t j = 0; j < hidden; ++j) d[j] += src[j];
      }
    }
  });
}

void UnpermuteForward(const CpuContext& ctx, const float* expert_out, int64_t rows,
                      const float* weights, const int32_t* slot_row, int64_t tokens, int64_t top_k,
                      int64_t hidden, float* y) {
  CheckSlots("UnpermuteForward", tokens, top_k, hidden);
  DSV3_KERNEL_CHECK(rows >= 0, "UnpermuteForward: rows=%lld must be >= 0",
                    static_cast<long long>(rows));
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(weights != nullptr && slot_row != nullptr && y != nullptr &&
                        (rows == 0 || expert_out != nullptr),
                    "UnpermuteForward: null expert_out, weights, slot_row or y");
  DSV3_KERNEL_CHECK(!ViewsOverlap(y, tokens * hidden, expert_out, rows * hidden) &&
                        !ViewsOverlap(y, tokens * hidden, weights, tokens * top_k),
                    "UnpermuteForward: y overlaps an input");
  CheckSlotRows("UnpermuteForward", slot_row, tokens * top_k, rows);
  ParallelFor(ctx, tokens, internal::RowGrain(hidden * top_k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* out = y + t * hidden;
      std::memset(out, 0, hidden * sizeof(float));
      for (int64_t k = 0; k < top_k; ++k) {
        const int32_t p = slot_row[t * top_k + k];
        if (p < 0) continue;
        const float w = weights[t * top_k + k];
        const float* src = expert_out + static_cast<int64_t>(p) * hidden;
        for (int64_t j = 0; j < hidden; ++j) out[j] += w * src[j];
      }
    }
  });
}

void UnpermuteBackward(const CpuContext& ctx, const float* dy, const float* expert_out,
                       int64_t rows, const float* weights, const int32_t* slot_row, int64_t tokens,
                       int64_t top_k, int64_t hidden, float* d_expert_out, float* dweights) {
  CheckSlots("UnpermuteBackward", tokens, top_k, hidden);
  DSV3_KERNEL_CHECK(rows >= 0, "UnpermuteBackward: rows=%lld must be >= 0",
                    static_cast<long long>(rows));
  if (tokens == 0) return;
  DSV3_KERNEL_CHECK(dy != nullptr && weights != nullptr && slot_row != nullptr &&
                        dweights != nullptr &&
                        (rows == 0 || (expert_out != nullptr && d_expert_out != nullptr)),
                    "UnpermuteBackward: null buffer");
  const int64_t th = tokens * hidden;
  const int64_t rh = rows * hidden;
  const int64_t tk = tokens * top_k;
  DSV3_KERNEL_CHECK(
      !ViewsOverlap(d_expert_out, rh, dy, th) && !ViewsOverlap(d_expert_out, rh, expert_out, rh) &&
          !ViewsOverlap(d_expert_out, rh, weights, tk) &&
          !ViewsOverlap(d_expert_out, rh, dweights, tk) && !ViewsOverlap(dweights, tk, dy, th) &&
          !ViewsOverlap(dweights, tk, expert_out, rh) && !ViewsOverlap(dweights, tk, weights, tk),
      "UnpermuteBackward: an output overlaps another buffer");
  CheckSlotRows("UnpermuteBackward", slot_row, tk, rows);
  // Each row must be the target of exactly one slot, or some d_expert_out rows would stay stale.
  std::vector<char> seen(rows, 0);
  int64_t used = 0;
  for (int64_t i = 0; i < tk; ++i) {
    const int32_t p = slot_row[i];
    if (p < 0) continue;
    DSV3_KERNEL_CHECK(!seen[p], "UnpermuteBackward: row %d is the target of two slots", p);
    seen[p] = 1;
    ++used;
  }
  DSV3_KERNEL_CHECK(used == rows, "UnpermuteBackward: %lld used slots for rows=%lld",
                    static_cast<long long>(used), static_cast<long long>(rows));
  ParallelFor(ctx, tokens, internal::RowGrain(hidden * top_k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* d = dy + t * hidden;
      for (int64_t k = 0; k < top_k; ++k) {
        const int32_t p = slot_row[t * top_k + k];
        if (p < 0) {
          dweights[t * top_k + k] = 0.0f;
          continue;
        }
        const float w = weights[t * top_k + k];
        const float* e = expert_out + static_cast<int64_t>(p) * hidden;
        float* de = d_expert_out + static_cast<int64_t>(p) * hidden;
        for (int64_t j = 0; j < hidden; ++j) de[j] = w * d[j];
        dweights[t * top_k + k] = internal::DotF32(d, e, hidden);
      }
    }
  });
}

}  // namespace dsv3::kernels
