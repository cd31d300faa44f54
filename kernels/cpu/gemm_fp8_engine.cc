// Internal: RunFp8Gemms (gemm_fp8_engine.h). A single problem (every GEMM of gemm.h) is cut into
// at most one block per thread, and each thread packs and computes its block alone (RunSplit). A
// batch of problems (the grouped GEMMs) runs in three phases over one workspace: plan (buffer
// offsets, tile sizes), pack (every A row panel of every problem decoded to BF16 with its scales,
// and the B panels of problems whose tiles share them), compute (every output tile; a problem with
// a single row of tiles packs its B panels inside its tiles, chunk by chunk, so that small-M GEMMs
// never write decoded weights to memory). Both parallel phases hand out items from an atomic
// counter, so uneven problems (experts with different token counts) balance. No element's
// arithmetic depends on the tiling or on the thread that computes it.

#include "kernels/cpu/gemm_fp8_engine.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>

#include "kernels/check.h"
#include "kernels/cpu/gemm_fp8_kernels.h"
#include "kernels/fp8_types.h"

namespace dsv3::kernels::internal {
namespace {

// K blocks per cache chunk: a B panel chunk (64 x 256 BF16 = 32 KB) stays in L1 while the row
// panels of a tile stream past it.
constexpr int64_t kKcBlocks = 2;

int64_t RoundUp(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

struct Plan {
  int64_t kb_count = 0, kpad = 0, rows_pad = 0, panels = 0;
  size_t a_off = 0, as_off = 0, b_off = 0, bs_off = 0;  // byte offsets into the workspace
  // The first row panel (A) and column panel (B) that the workspace holds: a thread's own
  // workspace holds only its block's.
  int64_t ws_row_panel0 = 0, ws_col_panel0 = 0;
  int64_t row_panels_per_tile = 0, panels_per_tile = 0;
  // With a single row tile each B panel is used by one tile only: it is packed there, chunk by
  // chunk, into a buffer that stays in L1, instead of through the workspace (and memory).
  bool prepack_b = true;
  int64_t row_tiles() const {
    return (rows_pad / kFp8Mr + row_panels_per_tile - 1) / row_panels_per_tile;
  }
  int64_t col_tiles() const { return (panels + panels_per_tile - 1) / panels_per_tile; }
};

struct Item {
  int32_t problem;
  int32_t kind;  // pack: 0 = A row panels [i, j), 1 = K block j of B panel i; compute: unused
  int64_t i, j;
};

// Calls fn(begin, end) on ranges that cover [0, n), handed out to ctx's threads from a shared
// counter. Each claim takes 1/(2 x threads) of what is left (at least one item): a thread comes
// back only a few times, because every claim moves the counter's cache line between cores, which
// costs as much as a small item (a third of a microsecond here), and the last claims are small,
// so that the threads finish together.
void ParallelDynamic(const CpuContext& ctx, int64_t n,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  if (threads == 1) {
    fn(0, n);
    return;
  }
  alignas(64) std::atomic<int64_t> next{0};
  ParallelFor(ctx, std::min<int64_t>(threads, n), 1, [&next, &fn, n, threads](int64_t, int64_t) {
    int64_t begin = next.load(std::memory_order_relaxed);
    while (begin < n) {
      const int64_t end = begin + std::max<int64_t>(1, (n - begin) / (2 * threads));
      if (next.compare_exchange_weak(begin, end, std::memory_order_relaxed)) {
        fn(begin, end);
        begin = next.load(std::memory_order_relaxed);
      }
    }
  });
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

void PackA(const Fp8GemmKernels& kern, const Fp8Problem& pr, const Plan& plan, std::byte* ws,
           int64_t panel) {
  auto* a = reinterpret_cast<std::uint16_t*>(ws + plan.a_off);
  auto* as = reinterpret_cast<float*>(ws + plan.as_off);
  const int64_t tiles = NumTiles(pr.k);
  for (int64_t r = panel * kFp8Mr; r < (panel + 1) * kFp8Mr; ++r) {
    const int64_t ws_row = r - plan.ws_row_panel0 * kFp8Mr;
    std::uint16_t* dst = a + ws_row * plan.kpad;
    float* s = as + ws_row * plan.kb_count;
    if (r < pr.m) {
      kern.decode_row(pr.a + r * pr.k, pr.k, plan.kpad, dst);
      std::memcpy(s, pr.a_scales + r * tiles, sizeof(float) * tiles);
    } else {
      std::memset(dst, 0, sizeof(std::uint16_t) * plan.kpad);
      std::memset(s, 0, sizeof(float) * plan.kb_count);
    }
  }
}

// Packs K blocks [kb_begin, kb_end) of B panel `panel` into b ([kb, 64, 64] pairs) and bs
// ([kb, 64] scales), block kb_begin first.
void PackBPanel(const Fp8GemmKernels& kern, const Fp8Problem& pr, int64_t panel, int64_t kb_begin,
                int64_t kb_end, std::uint32_t* b, float* bs) {
  const int64_t col0 = panel * kFp8Nr;
  const int64_t cols = std::min(kFp8Nr, pr.n - col0);
  const int64_t k0 = kb_begin * kQuantTile;
  const int64_t kpad = (kb_end - kb_begin) * kQuantTile;
  const int64_t k_valid = std::min(pr.k - k0, kpad);
  const int64_t k_tiles = NumTiles(pr.k), n_tiles = NumTiles(pr.n);
  switch (pr.b_layout) {
    case Fp8BLayout::kRowsBlockScaled:
    case Fp8BLayout::kRowsRowScaled:
      kern.pack_b_rows(pr.b + col0 * pr.k + k0, pr.k, cols, k_valid, kpad, b);
      break;
    case Fp8BLayout::kColsBlockScaled:
      kern.pack_b_cols(pr.b + k0 * pr.n + col0, pr.n, cols, k_valid, kpad, b);
      break;
  }
  for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
    float* dst = bs + (kb - kb_begin) * kFp8Nr;
    for (int64_t j = 0; j < kFp8Nr; ++j) {
      const int64_t col = col0 + j;
      float s = 0.0f;
      if (j < cols) {
        switch (pr.b_layout) {
          case Fp8BLayout::kRowsBlockScaled:
            s = pr.b_scales[(col / kQuantTile) * k_tiles + kb];
            break;
          case Fp8BLayout::kColsBlockScaled:
            s = pr.b_scales[kb * n_tiles + col / kQuantTile];
            break;
          case Fp8BLayout::kRowsRowScaled:
            s = pr.b_scales[col * k_tiles + kb];
            break;
        }
      }
      dst[j] = s;
    }
  }
}

// Packs K block kb of B panel `panel` into the workspace.
void PackB(const Fp8GemmKernels& kern, const Fp8Problem& pr, const Plan& plan, std::byte* ws,
           int64_t panel, int64_t kb) {
  const int64_t ws_panel = panel - plan.ws_col_panel0;
  auto* b = reinterpret_cast<std::uint32_t*>(ws + plan.b_off) +
            (ws_panel * (plan.kpad / 2) + kb * kFp8PairsPerBlock) * kFp8Nr;
  auto* bs = reinterpret_cast<float*>(ws + plan.bs_off) + (ws_panel * plan.kb_count + kb) * kFp8Nr;
  PackBPanel(kern, pr, panel, kb, kb + 1, b, bs);
}

// Asks for the codes of K blocks [kb_begin, kb_end) of B panel `panel` to be brought into the
// cache while the current chunk is computed (64 strided rows defeat the hardware prefetchers).
void PrefetchBChunk(const Fp8Problem& pr, int64_t panel, int64_t kb_begin, int64_t kb_end) {
  if (kb_begin >= kb_end) return;
  const int64_t col0 = panel * kFp8Nr;
  const int64_t cols = std::min(kFp8Nr, pr.n - col0);
  const int64_t k0 = kb_begin * kQuantTile, k1 = std::min(pr.k, kb_end * kQuantTile);
  if (pr.b_layout == Fp8BLayout::kColsBlockScaled) {
    for (int64_t k = k0; k < k1; ++k) __builtin_prefetch(pr.b + k * pr.n + col0, 0, 1);
    return;
  }
  for (int64_t j = 0; j < cols; ++j) {
    for (int64_t k = k0; k < k1; k += 64) __builtin_prefetch(pr.b + (col0 + j) * pr.k + k, 0, 1);
  }
}

// Runs the micro-kernel over row panels [rp_begin, rp_end) against one B panel chunk holding K
// blocks [kb0, kb1) (b, bs point at block kb0).
void MicroPanels(const Fp8GemmKernels& kern, const Fp8Problem& pr, const Plan& plan,
                 const std::uint16_t* a, const float* as, int64_t rp_begin, int64_t rp_end,
                 int64_t cp, const std::uint32_t* b, const float* bs, int64_t kb0, int64_t kb1) {
  const bool c_is_zero = !pr.accumulate && kb0 == 0;
  // Pairs of the chunk's last block that hold data (the rest is zero padding).
  const int64_t tail_pairs =
      kb1 == plan.kb_count ? (pr.k - (kb1 - 1) * kQuantTile + 1) / 2 : kFp8PairsPerBlock;
  alignas(64) float edge[kFp8Mr * kFp8Nr];
  const int64_t col0 = cp * kFp8Nr;
  const int64_t cols = std::min(kFp8Nr, pr.n - col0);
  const int kernel_cols = static_cast<int>(RoundUp(cols, 16));  // the micro-kernel's 16, 32, 48, 64
  for (int64_t rp = rp_begin; rp < rp_end; ++rp) {
    const int64_t row0 = rp * kFp8Mr;
    const int rows = static_cast<int>(std::min(kFp8Mr, pr.m - row0));
    // The micro-kernel indexes A and its scales by block from kb0 on.
    const int64_t ws_row = row0 - plan.ws_row_panel0 * kFp8Mr;
    const std::uint16_t* a_panel = a + ws_row * plan.kpad + kb0 * kQuantTile;
    const float* as_panel = as + ws_row * plan.kb_count + kb0;
    float* c = pr.c + row0 * pr.n + col0;
    if (cols == kernel_cols) {  // the micro-kernel computes (and touches) only the panel's rows
      kern.micro_kernel(rows, kernel_cols, a_panel, plan.kpad, as_panel, plan.kb_count, b, bs, 0,
                        kb1 - kb0, tail_pairs, c_is_zero, c, pr.n);
      continue;
    }
    // Edge tile: work on a zero-padded copy; the padding columns' results are dropped.
    std::memset(edge, 0, sizeof(edge));
    if (!c_is_zero) {
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(edge + r * kFp8Nr, c + r * pr.n, sizeof(float) * cols);
      }
    }
    kern.micro_kernel(rows, kernel_cols, a_panel, plan.kpad, as_panel, plan.kb_count, b, bs, 0,
                      kb1 - kb0, tail_pairs, c_is_zero, edge, kFp8Nr);
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(c + r * pr.n, edge + r * kFp8Nr, sizeof(float) * cols);
    }
  }
}

// Computes row panels [rp_begin, rp_end) x column panels [cp_begin, cp_end) of the output, with B
// taken from the workspace (packed there before) or packed here, chunk by chunk.
void ComputeBlock(const Fp8GemmKernels& kern, const Fp8Problem& pr, const Plan& plan,
                  const std::byte* ws, bool b_packed, int64_t rp_begin, int64_t rp_end,
                  int64_t cp_begin, int64_t cp_end) {
  const auto* a = reinterpret_cast<const std::uint16_t*>(ws + plan.a_off);
  const auto* as = reinterpret_cast<const float*>(ws + plan.as_off);
  if (b_packed) {
    const auto* b = reinterpret_cast<const std::uint32_t*>(ws + plan.b_off);
    const auto* bs = reinterpret_cast<const float*>(ws + plan.bs_off);
    for (int64_t kb0 = 0; kb0 < plan.kb_count; kb0 += kKcBlocks) {
      const int64_t kb1 = std::min(kb0 + kKcBlocks, plan.kb_count);
      for (int64_t cp = cp_begin; cp < cp_end; ++cp) {
        const int64_t ws_panel = cp - plan.ws_col_panel0;
        MicroPanels(kern, pr, plan, a, as, rp_begin, rp_end, cp,
                    b + (ws_panel * (plan.kpad / 2) + kb0 * kFp8PairsPerBlock) * kFp8Nr,
                    bs + (ws_panel * plan.kb_count + kb0) * kFp8Nr, kb0, kb1);
      }
    }
    return;
  }
  alignas(64) std::uint32_t b_chunk[kKcBlocks * kFp8PairsPerBlock * kFp8Nr];
  alignas(64) float bs_chunk[kKcBlocks * kFp8Nr];
  for (int64_t cp = cp_begin; cp < cp_end; ++cp) {
    for (int64_t kb0 = 0; kb0 < plan.kb_count; kb0 += kKcBlocks) {
      const int64_t kb1 = std::min(kb0 + kKcBlocks, plan.kb_count);
      PackBPanel(kern, pr, cp, kb0, kb1, b_chunk, bs_chunk);
      PrefetchBChunk(pr, cp, kb1, std::min(kb1 + kKcBlocks, plan.kb_count));
      MicroPanels(kern, pr, plan, a, as, rp_begin, rp_end, cp, b_chunk, bs_chunk, kb0, kb1);
    }
  }
}

// Computes output tile (row_tile, col_tile) of the plan's grid.
void ComputeTile(const Fp8GemmKernels& kern, const Fp8Problem& pr, const Plan& plan,
                 const std::byte* ws, int64_t row_tile, int64_t col_tile) {
  const int64_t rp_begin = row_tile * plan.row_panels_per_tile;
  const int64_t cp_begin = col_tile * plan.panels_per_tile;
  ComputeBlock(kern, pr, plan, ws, plan.prepack_b, rp_begin,
               std::min(rp_begin + plan.row_panels_per_tile, plan.rows_pad / kFp8Mr), cp_begin,
               std::min(cp_begin + plan.panels_per_tile, plan.panels));
}

// Buffers laid out one after another in a workspace, each 64-byte aligned.
struct WorkspaceLayout {
  size_t bytes = 0;
  size_t Take(size_t n) {  // returns the new buffer's byte offset
    const size_t off = bytes;
    bytes += (n + 63) / 64 * 64;
    return off;
  }
};

// The calling thread's workspace, kept between calls so that large ones are not mapped and
// faulted in again every time (it holds the largest size asked for so far).
std::byte* Workspace(size_t bytes) {
  thread_local std::unique_ptr<std::byte, FreeDeleter> buffer;
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    buffer.reset();
    capacity = (bytes + 4095) / 4096 * 4096;
    buffer.reset(static_cast<std::byte*>(std::aligned_alloc(64, capacity)));
    DSV3_KERNEL_CHECK(buffer != nullptr, "FP8 GEMM: cannot allocate a %zu-byte workspace",
                      capacity);
  }
  return buffer.get();
}

// Decoding one FP8 element costs about as much as 32 multiply-adds of the micro-kernel (0.07 ns
// against 0.002 ns here); RunSplit weighs the two when it chooses how to cut a GEMM.
constexpr int64_t kDecodeCostInMacs = 32;

// Runs one problem: the output is cut into a grid of blocks, at most one per thread, and each
// thread decodes what its block needs (its rows of A, its panels of B) into its own workspace and
// computes the block, so that no thread reads what another decoded. On this machine moving decoded
// data between cores costs more than decoding it again: a shared pack made small GEMMs slower on
// two threads than on one (see docs/benchmarks.md). The grid is the one with the least work for its
// largest block, counting the operands that blocks side by side decode again.
void RunSplit(const CpuContext& ctx, const Fp8GemmKernels& kern, const Fp8Problem& pr, Plan plan) {
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int64_t row_panels = plan.rows_pad / kFp8Mr;
  int64_t grid_rows = 1, grid_cols = 1, best = -1;
  for (int64_t gr = 1; gr <= std::min<int64_t>(threads, row_panels); ++gr) {
    const int64_t gc = std::min<int64_t>(threads / gr, plan.panels);
    const int64_t rows = (row_panels + gr - 1) / gr * kFp8Mr;
    const int64_t cols = (plan.panels + gc - 1) / gc * kFp8Nr;
    const int64_t cost = rows * cols + kDecodeCostInMacs * (rows + cols);
    if (best < 0 || cost < best) best = cost, grid_rows = gr, grid_cols = gc;
  }
  // The workspace holds the largest block's rows of A and, when its rows span more than one tile
  // (so that each B panel is used more than once), its B panels, decoded once.
  const int64_t block_row_panels = (row_panels + grid_rows - 1) / grid_rows;
  const int64_t block_panels = (plan.panels + grid_cols - 1) / grid_cols;
  WorkspaceLayout layout;
  plan.a_off = layout.Take(sizeof(std::uint16_t) * block_row_panels * kFp8Mr * plan.kpad);
  plan.as_off = layout.Take(sizeof(float) * block_row_panels * kFp8Mr * plan.kb_count);
  if (block_row_panels > plan.row_panels_per_tile) {
    plan.b_off = layout.Take(sizeof(std::uint32_t) * block_panels * (plan.kpad / 2) * kFp8Nr);
    plan.bs_off = layout.Take(sizeof(float) * block_panels * plan.kb_count * kFp8Nr);
  }
  ParallelFor(ctx, grid_rows * grid_cols, 1, [&](int64_t part_begin, int64_t part_end) {
    std::byte* ws = Workspace(layout.bytes);  // this thread's own
    for (int64_t part = part_begin; part < part_end; ++part) {
      const int64_t gr = part / grid_cols, gc = part % grid_cols;
      const int64_t rp0 = gr * row_panels / grid_rows, rp1 = (gr + 1) * row_panels / grid_rows;
      const int64_t cp0 = gc * plan.panels / grid_cols, cp1 = (gc + 1) * plan.panels / grid_cols;
      Plan block = plan;
      block.ws_row_panel0 = rp0;
      block.ws_col_panel0 = cp0;
      for (int64_t rp = rp0; rp < rp1; ++rp) PackA(kern, pr, block, ws, rp);
      const bool b_packed = rp1 - rp0 > plan.row_panels_per_tile;
      if (b_packed) {
        for (int64_t cp = cp0; cp < cp1; ++cp) {
          for (int64_t kb = 0; kb < plan.kb_count; ++kb) PackB(kern, pr, block, ws, cp, kb);
        }
      }
      for (int64_t r = rp0; r < rp1; r += plan.row_panels_per_tile) {
        for (int64_t c = cp0; c < cp1; c += plan.panels_per_tile) {
          ComputeBlock(kern, pr, block, ws, b_packed, r,
                       std::min(r + plan.row_panels_per_tile, rp1), c,
                       std::min(c + plan.panels_per_tile, cp1));
        }
      }
    }
  });
}

}  // namespace

void RunFp8Gemms(const CpuContext& ctx, const std::vector<Fp8Problem>& problems) {
  const Fp8GemmKernels& kern = Fp8GemmKernelsFor(ctx);
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;

  // Plan: sizes and tiles, and empty problems handled at once.
  std::vector<Plan> plans(problems.size());
  for (size_t i = 0; i < problems.size(); ++i) {
    const Fp8Problem& pr = problems[i];
    Plan& plan = plans[i];
    if (pr.m == 0 || pr.n == 0) continue;
    if (pr.k == 0) {
      if (!pr.accumulate) std::memset(pr.c, 0, sizeof(float) * pr.m * pr.n);
      continue;
    }
    plan.kb_count = NumTiles(pr.k);
    plan.kpad = plan.kb_count * kQuantTile;
    plan.rows_pad = RoundUp(pr.m, kFp8Mr);
    plan.panels = (pr.n + kFp8Nr - 1) / kFp8Nr;
    plan.row_panels_per_tile = 32;  // 192 rows
    plan.panels_per_tile = 4;       // 256 columns
  }
  if (problems.size() == 1) {
    if (plans[0].kb_count > 0) RunSplit(ctx, kern, problems[0], plans[0]);
    return;
  }
  // Smaller tiles while there are too few to keep every thread busy.
  auto count_tiles = [&] {
    int64_t n = 0;
    for (const Plan& plan : plans) n += plan.kb_count > 0 ? plan.row_tiles() * plan.col_tiles() : 0;
    return n;
  };
  while (count_tiles() < 4 * threads) {
    bool shrunk = false;
    for (Plan& plan : plans) {
      if (plan.kb_count == 0) continue;
      if (plan.panels_per_tile > 1) {
        plan.panels_per_tile /= 2;
        shrunk = true;
      } else if (plan.row_panels_per_tile > 1) {
        plan.row_panels_per_tile /= 2;
        shrunk = true;
      }
    }
    if (!shrunk) break;
  }
  // One shared workspace: every problem's A, and the B panels of those packed once for all tiles.
  WorkspaceLayout layout;
  for (Plan& plan : plans) {
    if (plan.kb_count == 0) continue;
    plan.a_off = layout.Take(sizeof(std::uint16_t) * plan.rows_pad * plan.kpad);
    plan.as_off = layout.Take(sizeof(float) * plan.rows_pad * plan.kb_count);
    plan.prepack_b = plan.row_tiles() > 1;
    if (plan.prepack_b) {
      plan.b_off = layout.Take(sizeof(std::uint32_t) * plan.panels * (plan.kpad / 2) * kFp8Nr);
      plan.bs_off = layout.Take(sizeof(float) * plan.panels * plan.kb_count * kFp8Nr);
    }
  }

  std::vector<Item> pack_items, tile_items;
  for (size_t i = 0; i < problems.size(); ++i) {
    const Plan& plan = plans[i];
    if (plan.kb_count == 0) continue;
    const auto p = static_cast<int32_t>(i);
    // Pack items of about equal cost, a 64 x 128 block of B each, so that handing them out by
    // count balances the threads.
    if (plan.prepack_b) {
      for (int64_t j = 0; j < plan.panels; ++j) {
        for (int64_t kb = 0; kb < plan.kb_count; ++kb) pack_items.push_back({p, 1, j, kb});
      }
    }
    const int64_t row_panels = plan.rows_pad / kFp8Mr;
    const int64_t a_group = std::max<int64_t>(1, kFp8Nr * kQuantTile / (kFp8Mr * plan.kpad));
    for (int64_t r = 0; r < row_panels; r += a_group) {
      pack_items.push_back({p, 0, r, std::min(r + a_group, row_panels)});
    }
    for (int64_t r = 0; r < plan.row_tiles(); ++r) {
      for (int64_t c = 0; c < plan.col_tiles(); ++c) tile_items.push_back({p, 0, r, c});
    }
  }
  if (tile_items.empty()) return;

  std::byte* ws = Workspace(layout.bytes);

  ParallelDynamic(ctx, static_cast<int64_t>(pack_items.size()), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const Item& item = pack_items[idx];
      if (item.kind == 1) {
        PackB(kern, problems[item.problem], plans[item.problem], ws, item.i, item.j);
      } else {
        for (int64_t r = item.i; r < item.j; ++r) {
          PackA(kern, problems[item.problem], plans[item.problem], ws, r);
        }
      }
    }
  });
  ParallelDynamic(ctx, static_cast<int64_t>(tile_items.size()), [&](int64_t begin, int64_t end) {
    for (int64_t idx = begin; idx < end; ++idx) {
      const Item& item = tile_items[idx];
      ComputeTile(kern, problems[item.problem], plans[item.problem], ws, item.i, item.j);
    }
  });
}

}  // namespace dsv3::kernels::internal
