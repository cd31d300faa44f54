// Flash-style causal attention on the CPU (see attention.h): argument checks, tiling, the online
// softmax and the gradient recurrences, and the split over threads. The arithmetic inside a tile is
// in attention_kernels_{scalar,avx512}.cc.
//
// Forward: one work item per (batch, head, query tile); keys are visited tile by tile in order.
// Backward: per key tile, the query tiles at or below the diagonal are visited in order, giving
// dK and dV of the key tile and adding dS K into dQ. That runs one work item per (batch, head)
// when there are enough of them for the threads ("fused"); otherwise in two passes, one item per
// (batch, head, key tile) for dK and dV and one per (batch, head, query tile) for dQ ("split"),
// which recomputes the scores once more but keeps every thread busy. Both visit every sum in the
// same order with the same tile shapes, so they give the same bits.

#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include "kernels/check.h"
#include "kernels/cpu/attention_kernels.h"

namespace dsv3::kernels {
namespace internal {

AttentionTiles ChooseAttentionTiles(const AttentionParams& params) {
  // 64 x 64 was best or within noise of it for T = 128..2048 and head dims 96/64 and 192/128 among
  // {32, 64, 96, 128}^2 (AVX-512, one thread); smaller tiles waste less on the diagonal but run
  // the register tiles less full.
  (void)params;
  return {.q_block = 64, .k_block = 64};
}

}  // namespace internal

namespace {

using internal::AttentionKernels;
using internal::AttentionTiles;
using internal::Band;
using internal::BandKind;

constexpr int64_t kMaxElements = int64_t{1} << 60;

void CheckProduct(const char* op, const char* what, std::initializer_list<int64_t> factors) {
  int64_t n = 1;
  for (int64_t f : factors) {
    DSV3_KERNEL_CHECK(!__builtin_mul_overflow(n, f, &n) && n < kMaxElements,
                      "%s: %s has too many elements", op, what);
  }
}

// Checks the shapes and returns false when there is nothing to do (batch or seq_len is 0).
bool CheckParams(const char* op, const AttentionParams& p) {
  DSV3_KERNEL_CHECK(p.batch >= 0 && p.seq_len >= 0, "%s: batch=%lld and seq_len=%lld must be >= 0",
                    op, static_cast<long long>(p.batch), static_cast<long long>(p.seq_len));
  DSV3_KERNEL_CHECK(p.heads >= 1 && p.qk_dim >= 1 && p.v_dim >= 1,
                    "%s: heads=%lld, qk_dim=%lld and v_dim=%lld must be >= 1", op,
                    static_cast<long long>(p.heads), static_cast<long long>(p.qk_dim),
                    static_cast<long long>(p.v_dim));
  DSV3_KERNEL_CHECK(std::isfinite(p.softmax_scale), "%s: softmax_scale=%g must be finite", op,
                    static_cast<double>(p.softmax_scale));
  CheckProduct(op, "q", {p.batch, p.seq_len, p.heads, p.qk_dim});
  CheckProduct(op, "v", {p.batch, p.seq_len, p.heads, p.v_dim});
  return p.batch > 0 && p.seq_len > 0;
}

struct Buffer {
  const char* name;
  const void* data;
  int64_t bytes;
};

// Every buffer non-null; every output disjoint from every other buffer.
void CheckBuffers(const char* op, std::initializer_list<Buffer> inputs,
                  std::initializer_list<Buffer> outputs) {
  for (const auto* list : {&inputs, &outputs}) {
    for (const Buffer& b : *list) {
      DSV3_KERNEL_CHECK(b.data != nullptr, "%s: %s is null", op, b.name);
    }
  }
  for (const Buffer& out : outputs) {
    for (const auto* list : {&inputs, &outputs}) {
      for (const Buffer& other : *list) {
        if (&other == &out) continue;
        DSV3_KERNEL_CHECK(!internal::Overlaps(out.data, out.bytes, other.data, other.bytes),
                          "%s: output %s overlaps %s", op, out.name, other.name);
      }
    }
  }
}

// Tile scratch of the calling thread: grow-only and kept between calls (a few hundred KiB at
// most), so tiles neither allocate nor touch fresh pages. A thread runs one tile at a time
// (ParallelFor bodies cannot nest), so one buffer per thread serves forward and backward.
float* ThreadScratch(int64_t floats) {
  thread_local std::unique_ptr<float[]> buffer;
  thread_local int64_t size = 0;
  if (size < floats) {
    buffer.reset(new float[floats]);
    size = floats;
  }
  return buffer.get();
}

// One (batch, head): base pointers and row strides (consecutive tokens of one head are
// heads * dim floats apart). Token t of the head is row t.
struct Head {
  const float* q;
  const float* k;
  const float* v;
  int64_t qs;  // heads * qk_dim
  int64_t vs;  // heads * v_dim
};

// Offset of (b, t = 0, h) in rows of one head's dim: ((b * T + 0) * H + h).
int64_t HeadRow(const AttentionParams& p, int64_t bh) {
  return (bh / p.heads) * p.seq_len * p.heads + bh % p.heads;
}

Head HeadAt(const AttentionParams& p, const float* q, const float* k, const float* v, int64_t bh) {
  const int64_t row = HeadRow(p, bh);
  return {q + row * p.qk_dim, k + row * p.qk_dim, v + row * p.v_dim, p.heads * p.qk_dim,
          p.heads * p.v_dim};
}

// Tile order inside a head: 0, n-1, 1, n-2, ... so that any run of consecutive items (one
// thread's share) mixes cheap tiles with expensive ones.
int64_t ZigZag(int64_t i, int64_t n) { return i % 2 == 0 ? i / 2 : n - 1 - i / 2; }

// ---- Forward ------------------------------------------------------------------------------------

struct ForwardScratch {
  ForwardScratch(const AttentionParams& p, const AttentionTiles& t) {
    const int64_t bq = t.q_block;
    float* next = ThreadScratch(p.qk_dim * bq + t.k_block * bq + bq * p.v_dim + 4 * bq);
    auto take = [&](int64_t n) { return std::exchange(next, next + n); };
    qt = take(p.qk_dim * bq);
    st = take(t.k_block * bq);
    acc = take(bq * p.v_dim);
    m = take(bq);
    l = take(bq);
    alpha = take(bq);
    inv_l = take(bq);
  }
  float* qt;     // [qk_dim][q_block]: the query tile, transposed
  float* st;     // [k_block][q_block]: scores, then probabilities, transposed
  float* acc;    // [q_block][v_dim]: unnormalised output
  float* m;      // [q_block]: running max
  float* l;      // [q_block]: running sum
  float* alpha;  // [q_block]: rescale factor of the running sums
  float* inv_l;  // [q_block]: 1 / l
};

// Rows [i0, i0 + nq) of one head's output (rows vs apart) and log-sum-exp ([T]).
void ForwardQueryTile(const AttentionKernels& kern, const AttentionParams& p,
                      const AttentionTiles& tiles, const Head& hd, int64_t i0, int64_t nq, float* o,
                      float* lse, const ForwardScratch& s) {
  const int64_t dq = p.qk_dim, dv = p.v_dim, ldq = tiles.q_block;
  kern.transpose(hd.q + i0 * hd.qs, nq, dq, hd.qs, s.qt, ldq);
  std::fill_n(s.m, nq, -std::numeric_limits<float>::infinity());
  std::fill_n(s.l, nq, 0.0f);
  const int64_t key_end = i0 + nq;  // Keys at or past this are hidden from the whole tile.
  for (int64_t j0 = 0; j0 < key_end; j0 += tiles.k_block) {
    const int64_t nk = std::min(tiles.k_block, key_end - j0);
    // S^T[nk][nq] = K Q^T; key j0 + m is seen by queries i0 + n >= j0 + m only.
    kern.gemm({.shape = {nk, nq, dq},
               .a = {hd.k + j0 * hd.qs, hd.qs, 1},
               .b = {s.qt, ldq},
               .c = {s.st, ldq},
               .band = {BandKind::kCUpper, j0 - i0}});
    kern.online_softmax(s.st, ldq, nk, nq, p.softmax_scale, j0, i0, s.m, s.l, s.alpha);
    // acc[nq][dv] = alpha * acc + P V, P read from its transpose; P[m][k] = 0 past the diagonal.
    kern.gemm({.shape = {nq, dv, nk},
               .a = {s.st, 1, ldq},
               .b = {hd.v + j0 * hd.vs, hd.vs},
               .c = {s.acc, dv},
               .accumulate = j0 > 0,
               .row_scale = s.alpha,
               .band = {BandKind::kALower, i0 - j0}});
  }
  for (int64_t c = 0; c < nq; ++c) {
    s.inv_l[c] = 1.0f / s.l[c];
    lse[i0 + c] = s.m[c] + std::log(s.l[c]);
  }
  kern.scale_rows(s.acc, dv, nq, dv, s.inv_l, o + i0 * hd.vs, hd.vs);
}

// ---- Backward -----------------------------------------------------------------------------------

struct BackwardHead {
  Head in;
  const float* dout;  // rows vs apart
  const float* lse;   // [T]
  const float* d;     // [T]: rowsum(dout * o)
  float* dq;          // rows qs apart
  float* dk;          // rows qs apart
  float* dv;          // rows vs apart
};

struct BackwardScratch {
  BackwardScratch(const AttentionParams& p, const AttentionTiles& t) {
    const int64_t bk = t.k_block;
    float* next = ThreadScratch((p.qk_dim + p.v_dim) * bk + 2 * t.q_block * bk);
    auto take = [&](int64_t n) { return std::exchange(next, next + n); };
    kt = take(p.qk_dim * bk);
    vt = take(p.v_dim * bk);
    s = take(t.q_block * bk);
    ds = take(t.q_block * bk);
  }
  float* kt;  // [qk_dim][k_block]: the key tile, transposed
  float* vt;  // [v_dim][k_block]: the value tile, transposed
  float* s;   // [q_block][k_block]: scores, then P
  float* ds;  // [q_block][k_block]: dO V^T, then dS (the gradient of the raw scores q.k)
};

void PackKeyTile(const AttentionKernels& kern, const AttentionParams& p,
                 const AttentionTiles& tiles, const Head& hd, int64_t j0, int64_t nk,
                 const BackwardScratch& s) {
  kern.transpose(hd.k + j0 * hd.qs, nk, p.qk_dim, hd.qs, s.kt, tiles.k_block);
  kern.transpose(hd.v + j0 * hd.vs, nk, p.v_dim, hd.vs, s.vt, tiles.k_block);
}

// s := P and ds := dS for queries [i0, i0 + nq) and the packed key tile at j0.
void TileProbabilitiesAndGrad(const AttentionKernels& kern, const AttentionParams& p,
                              const AttentionTiles& tiles, const BackwardHead& hd, int64_t i0,
                              int64_t nq, int64_t j0, int64_t nk, const BackwardScratch& s) {
  const int64_t ld = tiles.k_block;
  const Band seen = {BandKind::kCLower, i0 - j0};  // Query i0 + m sees keys j0 + n <= i0 + m.
  kern.gemm({.shape = {nq, nk, p.qk_dim},
             .a = {hd.in.q + i0 * hd.in.qs, hd.in.qs, 1},
             .b = {s.kt, ld},
             .c = {s.s, ld},
             .band = seen});
  kern.gemm({.shape = {nq, nk, p.v_dim},
             .a = {hd.dout + i0 * hd.in.vs, hd.in.vs, 1},
             .b = {s.vt, ld},
             .c = {s.ds, ld},
             .band = seen});
  kern.softmax_grad(s.s, s.ds, ld, nq, nk, p.softmax_scale, j0, i0, hd.lse + i0, hd.d + i0);
}

// dQ[nq][qk_dim] (+)= dS K for the tile; the first key tile (j0 = 0) starts the sum.
void AddQueryGrad(const AttentionKernels& kern, const AttentionParams& p,
                  const AttentionTiles& tiles, const BackwardHead& hd, int64_t i0, int64_t nq,
                  int64_t j0, int64_t nk, const BackwardScratch& s) {
  kern.gemm({.shape = {nq, p.qk_dim, nk},
             .a = {s.ds, tiles.k_block, 1},
             .b = {hd.in.k + j0 * hd.in.qs, hd.in.qs},
             .c = {hd.dq + i0 * hd.in.qs, hd.in.qs},
             .accumulate = j0 > 0,
             .band = {BandKind::kALower, i0 - j0}});  // dS[m][k] = 0 past the diagonal.
}

// dK and dV of keys [j0, j0 + nk), and (with_dq) dS K added into dQ of every query tile they touch.
void BackwardKeyTile(const AttentionKernels& kern, const AttentionParams& p,
                     const AttentionTiles& tiles, const BackwardHead& hd, int64_t j0, bool with_dq,
                     const BackwardScratch& s) {
  const int64_t T = p.seq_len, ld = tiles.k_block, qs = hd.in.qs, vs = hd.in.vs;
  const int64_t nk = std::min(tiles.k_block, T - j0);
  PackKeyTile(kern, p, tiles, hd.in, j0, nk, s);
  const int64_t first_i0 = j0 / tiles.q_block * tiles.q_block;
  for (int64_t i0 = first_i0; i0 < T; i0 += tiles.q_block) {
    const int64_t nq = std::min(tiles.q_block, T - i0);
    TileProbabilitiesAndGrad(kern, p, tiles, hd, i0, nq, j0, nk, s);
    // dV[nk][dv] (+)= P^T dO and dK[nk][dq] (+)= dS^T Q, P and dS read transposed, straight into
    // the outputs; key j0 + m gets nothing from queries i0 + k < j0 + m.
    const Band seen_by = {BandKind::kAUpper, j0 - i0};
    kern.gemm({.shape = {nk, p.v_dim, nq},
               .a = {s.s, 1, ld},
               .b = {hd.dout + i0 * vs, vs},
               .c = {hd.dv + j0 * vs, vs},
               .accumulate = i0 != first_i0,
               .band = seen_by});
    kern.gemm({.shape = {nk, p.qk_dim, nq},
               .a = {s.ds, 1, ld},
               .b = {hd.in.q + i0 * qs, qs},
               .c = {hd.dk + j0 * qs, qs},
               .accumulate = i0 != first_i0,
               .band = seen_by});
    if (with_dq) AddQueryGrad(kern, p, tiles, hd, i0, nq, j0, nk, s);
  }
}

// dQ of queries [i0, i0 + nq) alone: the same tiles, in the same order, as BackwardKeyTile.
void BackwardQueryTile(const AttentionKernels& kern, const AttentionParams& p,
                       const AttentionTiles& tiles, const BackwardHead& hd, int64_t i0,
                       const BackwardScratch& s) {
  const int64_t T = p.seq_len;
  const int64_t nq = std::min(tiles.q_block, T - i0);
  for (int64_t j0 = 0; j0 < i0 + nq; j0 += tiles.k_block) {
    const int64_t nk = std::min(tiles.k_block, T - j0);  // As in BackwardKeyTile.
    PackKeyTile(kern, p, tiles, hd.in, j0, nk, s);
    TileProbabilitiesAndGrad(kern, p, tiles, hd, i0, nq, j0, nk, s);
    AddQueryGrad(kern, p, tiles, hd, i0, nq, j0, nk, s);
  }
}

}  // namespace

void AttentionForward(const CpuContext& ctx, const AttentionParams& params, const float* q,
                      const float* k, const float* v, float* o, float* lse) {
  constexpr const char* kOp = "AttentionForward";
  if (!CheckParams(kOp, params)) return;
  const AttentionParams& p = params;
  const int64_t rows = p.batch * p.seq_len * p.heads;  // (token, head) pairs
  const int64_t qk_bytes = rows * p.qk_dim * 4, v_bytes = rows * p.v_dim * 4;
  CheckBuffers(kOp, {{"q", q, qk_bytes}, {"k", k, qk_bytes}, {"v", v, v_bytes}},
               {{"o", o, v_bytes}, {"lse", lse, rows * 4}});

  const AttentionKernels& kern = internal::AttentionKernelsFor(ctx);
  const AttentionTiles tiles = internal::ChooseAttentionTiles(p);
  const int64_t q_tiles = (p.seq_len + tiles.q_block - 1) / tiles.q_block;
  ParallelFor(ctx, p.batch * p.heads * q_tiles, 1, [&](int64_t begin, int64_t end) {
    const ForwardScratch scratch(p, tiles);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / q_tiles;
      const int64_t i0 = ZigZag(item % q_tiles, q_tiles) * tiles.q_block;
      ForwardQueryTile(kern, p, tiles, HeadAt(p, q, k, v, bh), i0,
                       std::min(tiles.q_block, p.seq_len - i0), o + HeadRow(p, bh) * p.v_dim,
                       lse + bh * p.seq_len, scratch);
    }
  });
}

void AttentionBackward(const CpuContext& ctx, const AttentionParams& params, const float* q,
                       const float* k, const float* v, const float* o, const float* lse,
                       const float* dout, float* dq, float* dk, float* dv) {
  constexpr const char* kOp = "AttentionBackward";
  if (!CheckParams(kOp, params)) return;
  const AttentionParams& p = params;
  const int64_t T = p.seq_len, heads_total = p.batch * p.heads;
  const int64_t rows = p.batch * T * p.heads;  // (token, head) pairs
  const int64_t qk_bytes = rows * p.qk_dim * 4, v_bytes = rows * p.v_dim * 4;
  CheckBuffers(kOp,
               {{"q", q, qk_bytes},
                {"k", k, qk_bytes},
                {"v", v, v_bytes},
                {"o", o, v_bytes},
                {"lse", lse, rows * 4},
                {"dout", dout, v_bytes}},
               {{"dq", dq, qk_bytes}, {"dk", dk, qk_bytes}, {"dv", dv, v_bytes}});

  const AttentionKernels& kern = internal::AttentionKernelsFor(ctx);
  const AttentionTiles tiles = internal::ChooseAttentionTiles(p);

  // D[b, h, t] = dout[b, t, h, :] . o[b, t, h, :], one token (all heads) at a time.
  std::unique_ptr<float[]> d(new float[heads_total * T]);
  ParallelFor(ctx, p.batch * T, 64, [&](int64_t begin, int64_t end) {
    for (int64_t token = begin; token < end; ++token) {
      const int64_t b = token / T, t = token % T;
      kern.row_dots(dout + token * p.heads * p.v_dim, o + token * p.heads * p.v_dim, p.heads,
                    p.v_dim, d.get() + b * p.heads * T + t, T);
    }
  });

  auto head_at = [&](int64_t bh) {
    const int64_t row = HeadRow(p, bh);
    return BackwardHead{HeadAt(p, q, k, v, bh), dout + row * p.v_dim, lse + bh * T,
                        d.get() + bh * T,       dq + row * p.qk_dim,  dk + row * p.qk_dim,
                        dv + row * p.v_dim};
  };
  const int64_t q_tiles = (T + tiles.q_block - 1) / tiles.q_block;
  const int64_t k_tiles = (T + tiles.k_block - 1) / tiles.k_block;
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  if (heads_total % threads == 0 || heads_total >= 4 * threads) {  // Fused.
    ParallelFor(ctx, heads_total, 1, [&](int64_t begin, int64_t end) {
      const BackwardScratch scratch(p, tiles);
      for (int64_t bh = begin; bh < end; ++bh) {
        const BackwardHead hd = head_at(bh);
        for (int64_t j0 = 0; j0 < T; j0 += tiles.k_block) {
          BackwardKeyTile(kern, p, tiles, hd, j0, /*with_dq=*/true, scratch);
        }
      }
    });
    return;
  }
  ParallelFor(ctx, heads_total * k_tiles, 1, [&](int64_t begin, int64_t end) {
    const BackwardScratch scratch(p, tiles);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t j0 = ZigZag(item % k_tiles, k_tiles) * tiles.k_block;
      BackwardKeyTile(kern, p, tiles, head_at(item / k_tiles), j0, /*with_dq=*/false, scratch);
    }
  });
  ParallelFor(ctx, heads_total * q_tiles, 1, [&](int64_t begin, int64_t end) {
    const BackwardScratch scratch(p, tiles);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i0 = ZigZag(item % q_tiles, q_tiles) * tiles.q_block;
      BackwardQueryTile(kern, p, tiles, head_at(item / q_tiles), i0, scratch);
    }
  });
}

}  // namespace dsv3::kernels
