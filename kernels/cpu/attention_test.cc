// Tests of the flash-style causal attention (attention.h): forward and backward against PyTorch
// autograd in float64 (tests/reference/attention_ref.py, one run for all cases, its results cached
// in the test temp dir), float64 closed forms, bit-exact independence from the thread count,
// memory linear in the row length, and the argument checks. Both the AVX-512 and the portable
// paths are checked against the references.

#include "kernels/cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/attention_kernels.h"
#include "kernels/cpu/test_util.h"
#include "kernels/testing/npy.h"
#include "kernels/testing/torch_reference.h"

// ---- Allocation tracking (for the memory test) -------------------------------------------------
// Every operator new of this binary records its size in a 16-byte header, so the peak of live
// heap bytes during a window can be measured.
namespace {
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};

void* TrackedAlloc(std::size_t n) {
  void* raw = std::malloc(n + 16);
  if (raw == nullptr) return nullptr;
  *static_cast<std::size_t*>(raw) = n;
  const int64_t live = g_live_bytes.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
  int64_t peak = g_peak_bytes.load();
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
  return static_cast<char*>(raw) + 16;
}
void TrackedFree(void* p) {
  if (p == nullptr) return;
  void* raw = static_cast<char*>(p) - 16;
  g_live_bytes.fetch_sub(static_cast<int64_t>(*static_cast<std::size_t*>(raw)));
  std::free(raw);
}
void* TrackedAllocOrThrow(std::size_t n) {
  void* p = TrackedAlloc(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return TrackedAllocOrThrow(n); }
void* operator new[](std::size_t n) { return TrackedAllocOrThrow(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return TrackedAlloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return TrackedAlloc(n); }
void operator delete(void* p) noexcept { TrackedFree(p); }
void operator delete[](void* p) noexcept { TrackedFree(p); }
void operator delete(void* p, std::size_t) noexcept { TrackedFree(p); }
void operator delete[](void* p, std::size_t) noexcept { TrackedFree(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { TrackedFree(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { TrackedFree(p); }

namespace dsv3::kernels {
namespace {

// FP32 kernel against a float64 reference, inputs ~ N(0, 1): errors come from FP32 rounding of
// sums over up to T * d terms. Scores and outputs are O(1); gradients sum over up to T rows. A
// logit's rounding error grows with the logits' spread sigma = scale * sqrt(qk_dim), and the
// softmax passes it on, so both tolerances are multiplied by LogitSpread() = max(1, sigma).
constexpr double kForwardRtol = 2e-5, kForwardAtol = 2e-6;
constexpr double kBackwardRtol = 5e-5, kBackwardAtol = 1e-5;

struct Case {
  std::string name;
  AttentionParams params;
};

AttentionParams Shape(int64_t b, int64_t t, int64_t h, int64_t dqk, int64_t dv, double scale = 0) {
  return {.batch = b,
          .seq_len = t,
          .heads = h,
          .qk_dim = dqk,
          .v_dim = dv,
          .softmax_scale =
              static_cast<float>(scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(dqk)))};
}

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {"T=1", Shape(1, 1, 1, 16, 16)},
      {"odd T, small dims 24/16, several heads and rows", Shape(2, 7, 3, 24, 16)},
      {"T one past the tile", Shape(1, 65, 2, 24, 16)},
      {"MLA head dims 192/128, T=150 (partial third tile)", Shape(2, 150, 2, 192, 128)},
      {"dims not multiples of 16 (40/24)", Shape(1, 129, 3, 40, 24)},
      {"tiny odd dims 5/3", Shape(3, 33, 1, 5, 3)},
      {"YaRN-scaled softmax, dims 96/64", Shape(1, 200, 2, 96, 64, 1.873856 / std::sqrt(96.0))},
      {"large logits (scale 3)", Shape(1, 70, 2, 32, 32, 3.0)},
      {"long row T=2048", Shape(1, 2048, 1, 16, 16)},
  };
  return *cases;
}

double LogitSpread(const AttentionParams& p) {
  return std::max(1.0, std::fabs(p.softmax_scale) * std::sqrt(static_cast<double>(p.qk_dim)));
}

int64_t QkSize(const AttentionParams& p) { return p.batch * p.seq_len * p.heads * p.qk_dim; }
int64_t VSize(const AttentionParams& p) { return p.batch * p.seq_len * p.heads * p.v_dim; }
int64_t LseSize(const AttentionParams& p) { return p.batch * p.heads * p.seq_len; }
std::vector<int64_t> QkShape(const AttentionParams& p) {
  return {p.batch, p.seq_len, p.heads, p.qk_dim};
}
std::vector<int64_t> VShape(const AttentionParams& p) {
  return {p.batch, p.seq_len, p.heads, p.v_dim};
}
std::vector<int64_t> LseShape(const AttentionParams& p) { return {p.batch, p.heads, p.seq_len}; }

struct Inputs {
  std::vector<float> q, k, v, dout;
};

std::vector<float> Normal(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& e : x) e = dist(rng);
  return x;
}

Inputs RandomInputs(const AttentionParams& p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Inputs in;
  in.q = Normal(QkSize(p), rng);
  in.k = Normal(QkSize(p), rng);
  in.v = Normal(VSize(p), rng);
  in.dout = Normal(VSize(p), rng);
  return in;
}

struct Outputs {
  std::vector<float> o, lse, dq, dk, dv;
};

Outputs RunAttention(const CpuContext& ctx, const AttentionParams& p, const Inputs& in) {
  Outputs out{std::vector<float>(VSize(p)), std::vector<float>(LseSize(p)),
              std::vector<float>(QkSize(p)), std::vector<float>(QkSize(p)),
              std::vector<float>(VSize(p))};
  AttentionForward(ctx, p, in.q.data(), in.k.data(), in.v.data(), out.o.data(), out.lse.data());
  AttentionBackward(ctx, p, in.q.data(), in.k.data(), in.v.data(), out.o.data(), out.lse.data(),
                    in.dout.data(), out.dq.data(), out.dk.data(), out.dv.data());
  return out;
}

struct Reference {
  std::vector<double> o, lse, dq, dk, dv;
};

// Inputs for every case and PyTorch's results, from one run of the reference script.
struct ReferenceSet {
  std::string error;  // Empty when the script ran and every output was read.
  std::vector<Inputs> inputs;
  std::vector<Reference> refs;
};

// FNV-1a, to name the reference cache after everything that determines its contents.
uint64_t Fnv1a(const void* data, size_t bytes, uint64_t h = 14695981039346656037ull) {
  for (size_t i = 0; i < bytes; ++i) {
    h = (h ^ static_cast<const unsigned char*>(data)[i]) * 1099511628211ull;
  }
  return h;
}

// PyTorch's results depend only on the inputs and the script, so one run serves every test
// process with the same ones (ctest runs each test in its own process): they are kept in
// <test temp dir>/attention_ref_<hash of script, shapes and inputs>.
const ReferenceSet& References() {
  static const ReferenceSet* set = [] {
    auto* s = new ReferenceSet;
    const uint64_t seed = testing::TestSeed(20240611);
    std::ifstream script_file(DSV3_ATTENTION_REF_SCRIPT, std::ios::binary);
    const std::string script((std::istreambuf_iterator<char>(script_file)),
                             std::istreambuf_iterator<char>());
    uint64_t hash = Fnv1a(script.data(), script.size());
    for (size_t i = 0; i < Cases().size(); ++i) {
      const AttentionParams& p = Cases()[i].params;
      s->inputs.push_back(RandomInputs(p, seed + i));
      const double shape[] = {static_cast<double>(p.batch), static_cast<double>(p.seq_len),
                              static_cast<double>(p.heads), static_cast<double>(p.qk_dim),
                              static_cast<double>(p.v_dim), p.softmax_scale};
      hash = Fnv1a(shape, sizeof(shape), hash);
      for (const std::vector<float>* x : {&s->inputs.back().q, &s->inputs.back().k,
                                          &s->inputs.back().v, &s->inputs.back().dout}) {
        hash = Fnv1a(x->data(), x->size() * sizeof(float), hash);
      }
    }
    char name[64];
    std::snprintf(name, sizeof(name), "attention_ref_%016llx",
                  static_cast<unsigned long long>(hash));
    const std::filesystem::path cache = std::filesystem::path(::testing::TempDir()) / name;
    std::string dir = cache.string();
    if (std::filesystem::exists(cache / "complete")) {
      std::printf("[   REF    ] PyTorch results reused from %s\n", dir.c_str());
    } else {
      dir = testing::MakeExchangeDir("all_cases");
      for (size_t i = 0; i < Cases().size(); ++i) {
        const AttentionParams& p = Cases()[i].params;
        const Inputs& in = s->inputs[i];
        const std::string prefix = dir + "/case_" + std::to_string(100 + i);  // Sorts like i.
        const double scale = p.softmax_scale;
        for (const std::string& err : {WriteNpy(prefix + "_q.npy", QkShape(p), in.q.data()),
                                       WriteNpy(prefix + "_k.npy", QkShape(p), in.k.data()),
                                       WriteNpy(prefix + "_v.npy", VShape(p), in.v.data()),
                                       WriteNpy(prefix + "_dout.npy", VShape(p), in.dout.data()),
                                       WriteNpy(prefix + "_scale.npy", {1}, &scale)}) {
          if (!err.empty()) s->error += err + "\n";
        }
      }
      if (!s->error.empty()) return s;
      const ::testing::AssertionResult ran =
          testing::RunTorchReference("tests/reference/attention_ref.py", dir);
      if (!ran) {
        s->error = ran.message();
        return s;
      }
      std::ofstream(dir + "/complete") << "done\n";
      std::error_code ec;  // Another process may have filled the cache meanwhile; keep ours then.
      std::filesystem::rename(dir, cache, ec);
      if (!ec) dir = cache.string();
    }
    for (size_t i = 0; i < Cases().size(); ++i) {
      const std::string prefix = dir + "/case_" + std::to_string(100 + i);
      Reference ref;
      for (auto [name, dst] : {std::pair{"o", &ref.o},
                               {"lse", &ref.lse},
                               {"dq", &ref.dq},
                               {"dk", &ref.dk},
                               {"dv", &ref.dv}}) {
        NpyArray a;
        const std::string err = ReadNpy(prefix + "_" + name + ".npy", &a);
        if (!err.empty()) {
          s->error += err + "\n";
        } else {
          *dst = a.AsFloat64();
        }
      }
      s->refs.push_back(std::move(ref));
    }
    return s;
  }();
  return *set;
}

void ExpectForwardMatches(const CpuContext& ctx) {
  const ReferenceSet& refs = References();
  ASSERT_EQ(refs.error, "");
  ThreadPool pool(2);
  for (size_t i = 0; i < Cases().size(); ++i) {
    const AttentionParams& p = Cases()[i].params;
    SCOPED_TRACE(Cases()[i].name);
    CpuContext c = ctx;
    c.pool = &pool;
    std::vector<float> o(VSize(p)), lse(LseSize(p));
    const Inputs& in = refs.inputs[i];
    AttentionForward(c, p, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
    const double f = LogitSpread(p);
    EXPECT_TRUE(testing::AllClose("o", o.data(), refs.refs[i].o, VShape(p), f * kForwardRtol,
                                  f * kForwardAtol));
    EXPECT_TRUE(testing::AllClose("lse", lse.data(), refs.refs[i].lse, LseShape(p),
                                  f * kForwardRtol, f * kForwardAtol));
  }
}

void ExpectBackwardMatches(const CpuContext& ctx) {
  const ReferenceSet& refs = References();
  ASSERT_EQ(refs.error, "");
  ThreadPool pool(2);
  for (size_t i = 0; i < Cases().size(); ++i) {
    const AttentionParams& p = Cases()[i].params;
    SCOPED_TRACE(Cases()[i].name);
    CpuContext c = ctx;
    c.pool = &pool;
    const Outputs out = RunAttention(c, p, refs.inputs[i]);
    const Reference& ref = refs.refs[i];
    const double rtol = LogitSpread(p) * kBackwardRtol, atol = LogitSpread(p) * kBackwardAtol;
    EXPECT_TRUE(testing::AllClose("dq", out.dq.data(), ref.dq, QkShape(p), rtol, atol));
    EXPECT_TRUE(testing::AllClose("dk", out.dk.data(), ref.dk, QkShape(p), rtol, atol));
    EXPECT_TRUE(testing::AllClose("dv", out.dv.data(), ref.dv, VShape(p), rtol, atol));
  }
}

// The default context (AVX-512 where the CPU has it) and the portable path.
std::vector<std::pair<std::string, CpuContext>> Paths() {
  const std::string simd =
      internal::Avx512AttentionKernels() != nullptr ? "AVX-512 path" : "default (portable) path";
  return {{simd, CpuContext{}}, {"portable path", CpuContext{.use_simd = false}}};
}

TEST(AttentionForward, MatchesTorchOnRandomShapes) {
  for (const auto& [name, ctx] : Paths()) {
    SCOPED_TRACE(name);
    ExpectForwardMatches(ctx);
  }
}

TEST(AttentionBackward, MatchesTorchAutogradOnRandomShapes) {
  for (const auto& [name, ctx] : Paths()) {
    SCOPED_TRACE(name);
    ExpectBackwardMatches(ctx);
  }
}

// With q = 0 every visible score is 0, so p_tj = 1/(t+1): o_t is the mean of v_0..v_t,
// lse_t = log(t+1), dV_j = sum_{t>=j} dO_t/(t+1), dK = 0 exactly, and
// dQ_t = scale/(t+1) * sum_{j<=t} (dO_t.v_j - dO_t.o_t) k_j. All evaluated here in float64.
TEST(Attention, UniformScoresGiveClosedFormOutputsAndGradients) {
  const AttentionParams p = Shape(2, 97, 3, 40, 24);
  const int64_t T = p.seq_len, H = p.heads, dq = p.qk_dim, dv = p.v_dim;
  Inputs in = RandomInputs(p, testing::TestSeed(7));
  std::fill(in.q.begin(), in.q.end(), 0.0f);
  for (bool simd : {true, false}) {
    SCOPED_TRACE(simd ? "default path" : "portable path");
    ThreadPool pool(2);
    const Outputs out = RunAttention(CpuContext{.pool = &pool, .use_simd = simd}, p, in);
    std::vector<double> o(VSize(p)), lse(LseSize(p)), dqr(QkSize(p), 0.0), dvr(VSize(p), 0.0);
    auto at = [&](int64_t b, int64_t t, int64_t h, int64_t d, int64_t dim) {
      return ((b * T + t) * H + h) * dim + d;
    };
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> prefix(dv, 0.0);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t d = 0; d < dv; ++d) {
            prefix[d] += in.v[at(b, t, h, d, dv)];
            o[at(b, t, h, d, dv)] = prefix[d] / (t + 1);
          }
          lse[(b * H + h) * T + t] = std::log(static_cast<double>(t + 1));
          double d_t = 0;  // dO_t . o_t
          for (int64_t d = 0; d < dv; ++d)
            d_t += in.dout[at(b, t, h, d, dv)] * o[at(b, t, h, d, dv)];
          for (int64_t j = 0; j <= t; ++j) {
            double dp = 0;  // dO_t . v_j
            for (int64_t d = 0; d < dv; ++d) {
              dp += in.dout[at(b, t, h, d, dv)] * static_cast<double>(in.v[at(b, j, h, d, dv)]);
              dvr[at(b, j, h, d, dv)] += in.dout[at(b, t, h, d, dv)] / static_cast<double>(t + 1);
            }
            const double w = p.softmax_scale * (dp - d_t) / (t + 1);
            for (int64_t d = 0; d < dq; ++d)
              dqr[at(b, t, h, d, dq)] += w * in.k[at(b, j, h, d, dq)];
          }
        }
      }
    }
    EXPECT_TRUE(testing::AllClose("o", out.o.data(), o, VShape(p), kForwardRtol, kForwardAtol));
    EXPECT_TRUE(
        testing::AllClose("lse", out.lse.data(), lse, LseShape(p), kForwardRtol, kForwardAtol));
    EXPECT_TRUE(
        testing::AllClose("dq", out.dq.data(), dqr, QkShape(p), kBackwardRtol, kBackwardAtol));
    EXPECT_TRUE(
        testing::AllClose("dv", out.dv.data(), dvr, VShape(p), kBackwardRtol, kBackwardAtol));
    EXPECT_TRUE(testing::AllClose("dk", out.dk.data(), std::vector<double>(QkSize(p), 0.0),
                                  QkShape(p), 0, 0));
  }
}

// The split over threads changes with the thread count (and, in the backward, so does the plan:
// one item per head when heads divide among the threads, two passes over tiles otherwise); the
// order of every sum must not.
TEST(Attention, ResultsAreBitIdenticalForAnyThreadCount) {
  const uint64_t seed = testing::TestSeed(99);
  // B*H = 1 (split plan with 2 or 3 threads), 3 (split with 2, fused with 3), 6 (fused).
  for (const AttentionParams& p :
       {Shape(1, 300, 1, 192, 128), Shape(1, 130, 3, 40, 24), Shape(2, 77, 3, 24, 16)}) {
    for (bool simd : {true, false}) {
      const Inputs in = RandomInputs(p, seed);
      const Outputs one = RunAttention(CpuContext{.pool = nullptr, .use_simd = simd}, p, in);
      for (int threads : {2, 3}) {
        SCOPED_TRACE("T=" + std::to_string(p.seq_len) + " heads=" + std::to_string(p.heads) +
                     " threads=" + std::to_string(threads) + (simd ? " default" : " portable"));
        ThreadPool pool(threads);
        const Outputs many = RunAttention(CpuContext{.pool = &pool, .use_simd = simd}, p, in);
        auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
          return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
        };
        EXPECT_TRUE(same(one.o, many.o));
        EXPECT_TRUE(same(one.lse, many.lse));
        EXPECT_TRUE(same(one.dq, many.dq));
        EXPECT_TRUE(same(one.dk, many.dk));
        EXPECT_TRUE(same(one.dv, many.dv));
      }
    }
  }
}

// A [T, T] score matrix per head would be 16 MiB at T = 2048; the kernels may hold only tiles
// (the backward also keeps D, 4 bytes per query).
TEST(Attention, LongRowsNeedMemoryLinearInTheRowLength) {
  const AttentionParams p = Shape(1, 2048, 2, 64, 64);
  const Inputs in = RandomInputs(p, testing::TestSeed(5));
  Outputs out{std::vector<float>(VSize(p)), std::vector<float>(LseSize(p)),
              std::vector<float>(QkSize(p)), std::vector<float>(QkSize(p)),
              std::vector<float>(VSize(p))};
  ThreadPool pool(2);
  const CpuContext ctx{.pool = &pool};
  const int64_t before = g_live_bytes.load();
  g_peak_bytes.store(before);
  AttentionForward(ctx, p, in.q.data(), in.k.data(), in.v.data(), out.o.data(), out.lse.data());
  const int64_t forward_peak = g_peak_bytes.load() - before;
  g_peak_bytes.store(g_live_bytes.load());
  AttentionBackward(ctx, p, in.q.data(), in.k.data(), in.v.data(), out.o.data(), out.lse.data(),
                    in.dout.data(), out.dq.data(), out.dk.data(), out.dv.data());
  const int64_t backward_peak = g_peak_bytes.load() - before;
  const int64_t square = p.seq_len * p.seq_len * 4;
  std::printf(
      "[   INFO   ] extra heap: forward %lld B, backward %lld B; one T x T matrix: %lld B\n",
      static_cast<long long>(forward_peak), static_cast<long long>(backward_peak),
      static_cast<long long>(square));
  EXPECT_LT(forward_peak, square / 16);
  EXPECT_LT(backward_peak, square / 16);
  for (const std::vector<float>* x : {&out.o, &out.dq, &out.dk, &out.dv}) {
    for (float e : *x) ASSERT_TRUE(std::isfinite(e));
  }
}

TEST(Attention, EmptyBatchOrRowsTouchNothing) {
  for (const AttentionParams& p : {Shape(0, 5, 2, 8, 8), Shape(3, 0, 2, 8, 8)}) {
    AttentionForward(CpuContext{}, p, nullptr, nullptr, nullptr, nullptr, nullptr);
    AttentionBackward(CpuContext{}, p, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                      nullptr, nullptr, nullptr);
  }
}

TEST(AttentionDeathTest, BadArgumentsAbortWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const AttentionParams p = Shape(1, 4, 2, 8, 8);
  std::vector<float> q(QkSize(p)), k(QkSize(p)), v(VSize(p)), o(VSize(p)), lse(LseSize(p));
  std::vector<float> dq(QkSize(p)), dk(QkSize(p)), dv(VSize(p)), dout(VSize(p));
  const CpuContext ctx;
  AttentionParams bad = p;
  bad.heads = 0;
  EXPECT_DEATH(AttentionForward(ctx, bad, q.data(), k.data(), v.data(), o.data(), lse.data()),
               "AttentionForward: heads=0");
  bad = p;
  bad.softmax_scale = NAN;
  EXPECT_DEATH(AttentionForward(ctx, bad, q.data(), k.data(), v.data(), o.data(), lse.data()),
               "softmax_scale=nan must be finite");
  EXPECT_DEATH(AttentionForward(ctx, p, q.data(), nullptr, v.data(), o.data(), lse.data()),
               "AttentionForward: k is null");
  EXPECT_DEATH(AttentionForward(ctx, p, q.data(), k.data(), v.data(), q.data(), lse.data()),
               "AttentionForward: output o overlaps q");
  EXPECT_DEATH(AttentionBackward(ctx, p, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                 dout.data(), dq.data(), dq.data() + 1, dv.data()),
               "AttentionBackward: output dq overlaps dk");
  EXPECT_DEATH(AttentionBackward(ctx, p, q.data(), k.data(), v.data(), o.data(), lse.data(),
                                 nullptr, dq.data(), dk.data(), dv.data()),
               "AttentionBackward: dout is null");
}

}  // namespace
}  // namespace dsv3::kernels
