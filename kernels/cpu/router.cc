// Router selection, gate-weight backward, sequence-wise balance loss and bias update on the CPU.
// Tokens (or, for the balance loss, sequences) in parallel; all orders fixed, so every result is
// identical for any thread count.

#include "kernels/cpu/router.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/ops_common.h"

namespace dsv3::kernels {
namespace {

using internal::SigmoidF64;

// The ranking used everywhere: larger value first, equal values by lower index, NaN last.
struct RankGreater {
  const float* v;
  bool operator()(int32_t a, int32_t b) const {
    const float x = v[a];
    const float y = v[b];
    const bool nx = std::isnan(x);
    const bool ny = std::isnan(y);
    if (nx || ny) return nx == ny ? a < b : ny;
    if (x != y) return x > y;
    return a < b;
  }
};

// The indices of the k best values of v[0..n), best first, into out[0..k). idx is scratch [n].
void TopK(const float* v, int32_t n, int32_t k, int32_t* idx, int32_t* out) {
  std::iota(idx, idx + n, 0);
  std::partial_sort(idx, idx + k, idx + n, RankGreater{v});
  std::copy(idx, idx + k, out);
}

void CheckRouterConfig(const char* op, const RouterConfig& c) {
  DSV3_KERNEL_CHECK(c.n_experts >= 1 && c.n_experts <= (1 << 20),
                    "%s: n_experts=%lld must be in [1, 2^20]", op,
                    static_cast<long long>(c.n_experts));
  DSV3_KERNEL_CHECK(c.n_groups >= 1 && c.n_experts % c.n_groups == 0,
                    "%s: n_groups=%lld must be >= 1 and divide n_experts=%lld", op,
                    static_cast<long long>(c.n_groups), static_cast<long long>(c.n_experts));
  DSV3_KERNEL_CHECK(c.topk_groups >= 1 && c.topk_groups <= c.n_groups,
                    "%s: topk_groups=%lld must be in [1, n_groups=%lld]", op,
                    static_cast<long long>(c.topk_groups), static_cast<long long>(c.n_groups));
  const int64_t eligible = c.topk_groups * (c.n_experts / c.n_groups);
  DSV3_KERNEL_CHECK(c.top_k >= 1 && c.top_k <= eligible,
                    "%s: top_k=%lld must be in [1, topk_groups * n_experts / n_groups = %lld]", op,
                    static_cast<long long>(c.top_k), static_cast<long long>(eligible));
}

}  // namespace

void RouterForward(const CpuContext& ctx, const RouterConfig& config, const float* logits,
                   const float* bias, int64_t tokens, int32_t* expert_ids, float* weights,
                   int64_t* load) {
  CheckRouterConfig("RouterForward", config);
  DSV3_KERNEL_CHECK(tokens >= 0, "RouterForward: tokens=%lld must be >= 0",
                    static_cast<long long>(tokens));
  const int64_t n = config.n_experts;
  const int64_t k = config.top_k;
  DSV3_KERNEL_CHECK(bias != nullptr, "RouterForward: null bias");
  if (tokens > 0) {
    DSV3_KERNEL_CHECK(logits != nullptr && expert_ids != nullptr && weights != nullptr,
                      "RouterForward: null logits, expert_ids or weights with tokens=%lld",
                      static_cast<long long>(tokens));
    const int64_t nl = tokens * n;
    const int64_t nk = tokens * k;
    DSV3_KERNEL_CHECK(
        !internal::Overlaps(expert_ids, nk * 4, weights, nk * 4) &&
            !internal::Overlaps(expert_ids, nk * 4, logits, nl * 4) &&
            !internal::Overlaps(weights, nk * 4, logits, nl * 4) &&
            !internal::Overlaps(expert_ids, nk * 4, bias, n * 4) &&
            !internal::Overlaps(weights, nk * 4, bias, n * 4) &&
            (load == nullptr || (!internal::Overlaps(load, n * 8, expert_ids, nk * 4) &&
                                 !internal::Overlaps(load, n * 8, weights, nk * 4))),
        "RouterForward: output buffers overlap each other or the inputs");
  }
  const int32_t group_size = static_cast<int32_t>(n / config.n_groups);
  const int32_t n_groups = static_cast<int32_t>(config.n_groups);
  const int32_t top_groups = static_cast<int32_t>(config.topk_groups);
  const float scale = config.routed_scaling_factor;

  ParallelFor(ctx, tokens, internal::RowGrain(n * 8), [&](int64_t begin, int64_t end) {
    std::vector<float> s(n), masked(n), group_score(n_groups);
    std::vector<int32_t> idx(n), best_groups(n_groups);
    std::vector<char> keep(n_groups);
    int32_t pair[2];
    for (int64_t t = begin; t < end; ++t) {
      const float* lt = logits + t * n;
      for (int64_t i = 0; i < n; ++i) {
        s[i] = static_cast<float>(SigmoidF64(static_cast<double>(lt[i])));
        masked[i] = s[i] + bias[i];
      }
      if (n_groups > 1) {
        const int32_t take = std::min<int32_t>(2, group_size);
        for (int32_t g = 0; g < n_groups; ++g) {
          const float* v = masked.data() + static_cast<int64_t>(g) * group_size;
          TopK(v, group_size, take, idx.data(), pair);
          group_score[g] = take == 2 ? v[pair[0]] + v[pair[1]] : v[pair[0]];
        }
        TopK(group_score.data(), n_groups, top_groups, idx.data(), best_groups.data());
        std::fill(keep.begin(), keep.end(), 0);
        for (int32_t g = 0; g < top_groups; ++g) keep[best_groups[g]] = 1;
        for (int64_t i = 0; i < n; ++i) {
          if (!keep[i / group_size]) masked[i] = -std::numeric_limits<float>::infinity();
        }
      }
      int32_t* ids = expert_ids + t * k;
      float* w = weights + t * k;
      TopK(masked.data(), static_cast<int32_t>(n), static_cast<int32_t>(k), idx.data(), ids);
      float z = 0.0f;
      for (int64_t j = 0; j < k; ++j) z += s[ids[j]];
      for (int64_t j = 0; j < k; ++j) w[j] = (s[ids[j]] / z) * scale;
    }
  });

  if (load != nullptr) {
    for (int64_t i = 0; i < tokens * k; ++i) ++load[expert_ids[i]];
  }
}

void RouterBackward(const CpuContext& ctx, const RouterConfig& config, const float* logits,
                    const int32_t* expert_ids, const float* dweights, int64_t tokens,
                    float* dlogits) {
  CheckRouterConfig("RouterBackward", config);
  DSV3_KERNEL_CHECK(tokens >= 0, "RouterBackward: tokens=%lld must be >= 0",
                    static_cast<long long>(tokens));
  if (tokens == 0) return;
  const int64_t n = config.n_experts;
  const int64_t k = config.top_k;
  DSV3_KERNEL_CHECK(
      logits != nullptr && expert_ids != nullptr && dweights != nullptr && dlogits != nullptr,
      "RouterBackward: null logits, expert_ids, dweights or dlogits");
  const int64_t nl = tokens * n;
  const int64_t nk = tokens * k;
  DSV3_KERNEL_CHECK(!internal::Overlaps(dlogits, nl * 4, logits, nl * 4) &&
                        !internal::Overlaps(dlogits, nl * 4, expert_ids, nk * 4) &&
                        !internal::Overlaps(dlogits, nl * 4, dweights, nk * 4),
                    "RouterBackward: dlogits overlaps an input");
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t* ids = expert_ids + t * k;
    for (int64_t j = 0; j < k; ++j) {
      DSV3_KERNEL_CHECK(
          ids[j] >= 0 && ids[j] < n, "RouterBackward: expert_ids[%lld, %lld]=%d outside [0, %lld)",
          static_cast<long long>(t), static_cast<long long>(j), ids[j], static_cast<long long>(n));
      for (int64_t i = 0; i < j; ++i) {
        DSV3_KERNEL_CHECK(ids[i] != ids[j], "RouterBackward: token %lld chose expert %d twice",
                          static_cast<long long>(t), ids[j]);
      }
    }
  }
  const double scale = config.routed_scaling_factor;
  ParallelFor(ctx, tokens, internal::RowGrain(n), [&](int64_t begin, int64_t end) {
    std::vector<double> s(k);
    for (int64_t t = begin; t < end; ++t) {
      const float* lt = logits + t * n;
      const int32_t* ids = expert_ids + t * k;
      const float* dw = dweights + t * k;
      float* dl = dlogits + t * n;
      std::memset(dl, 0, n * sizeof(float));
      double z = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        s[j] = SigmoidF64(static_cast<double>(lt[ids[j]]));
        z += s[j];
      }
      double dot = 0.0;
      for (int64_t j = 0; j < k; ++j) dot += static_cast<double>(dw[j]) * s[j];
      const double inv_z = 1.0 / z;
      for (int64_t j = 0; j < k; ++j) {
        const double ds = scale * inv_z * (static_cast<double>(dw[j]) - dot * inv_z);
        dl[ids[j]] = static_cast<float>(ds * s[j] * (1.0 - s[j]));
      }
    }
  });
}

double SequenceBalanceLoss(const CpuContext& ctx, const BalanceLossConfig& c, const float* logits,
                           float* dlogits) {
  DSV3_KERNEL_CHECK(
      c.n_experts >= 1 && c.n_experts <= (1 << 20) && c.top_k >= 1 && c.top_k <= c.n_experts,
      "SequenceBalanceLoss: n_experts=%lld must be in [1, 2^20] and top_k=%lld in "
      "[1, n_experts]",
      static_cast<long long>(c.n_experts), static_cast<long long>(c.top_k));
  DSV3_KERNEL_CHECK(c.rows >= 0 && c.seq_len >= 1 && c.mean_over_rows >= 0,
                    "SequenceBalanceLoss: rows=%lld and mean_over_rows=%lld must be >= 0, "
                    "seq_len=%lld >= 1",
                    static_cast<long long>(c.rows), static_cast<long long>(c.mean_over_rows),
                    static_cast<long long>(c.seq_len));
  const int64_t divisor = c.mean_over_rows == 0 ? c.rows : c.mean_over_rows;
  if (c.rows == 0) return 0.0;
  const int64_t n = c.n_experts;
  const int64_t k = c.top_k;
  const int64_t tlen = c.seq_len;
  const int64_t nl = c.rows * tlen * n;
  DSV3_KERNEL_CHECK(logits != nullptr, "SequenceBalanceLoss: null logits");
  DSV3_KERNEL_CHECK(dlogits == nullptr || !internal::ViewsOverlap(dlogits, nl, logits, nl),
                    "SequenceBalanceLoss: dlogits overlaps logits");

  const double f_norm = static_cast<double>(n) / (static_cast<double>(k) * tlen);
  const double grad_coef = c.grad_scale * c.alpha / (static_cast<double>(divisor) * tlen);
  std::vector<double> row_loss(c.rows);
  ParallelFor(ctx, c.rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s32(n);
    std::vector<double> s(n), f(n), p(n);
    std::vector<int32_t> idx(n), top(k);
    std::vector<int64_t> count(n);
    for (int64_t r = begin; r < end; ++r) {
      std::fill(count.begin(), count.end(), 0);
      std::fill(p.begin(), p.end(), 0.0);
      for (int64_t t = 0; t < tlen; ++t) {
        const float* lt = logits + (r * tlen + t) * n;
        double z = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          s[i] = SigmoidF64(static_cast<double>(lt[i]));
          s32[i] = static_cast<float>(s[i]);
          z += s[i];
        }
        TopK(s32.data(), static_cast<int32_t>(n), static_cast<int32_t>(k), idx.data(), top.data());
        for (int64_t j = 0; j < k; ++j) ++count[top[j]];
        for (int64_t i = 0; i < n; ++i) p[i] += s[i] / z;
      }
      double loss = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        f[i] = f_norm * static_cast<double>(count[i]);
        loss += f[i] * (p[i] / static_cast<double>(tlen));
      }
      row_loss[r] = loss;
      if (dlogits == nullptr) continue;
      for (int64_t t = 0; t < tlen; ++t) {
        const float* lt = logits + (r * tlen + t) * n;
        float* dl = dlogits + (r * tlen + t) * n;
        double z = 0.0;
        double fs = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          s[i] = SigmoidF64(static_cast<double>(lt[i]));
          z += s[i];
          fs += f[i] * s[i];
        }
        const double mean_f = fs / z;
        for (int64_t i = 0; i < n; ++i) {
          const double g = grad_coef * (f[i] - mean_f) / z * s[i] * (1.0 - s[i]);
          dl[i] = static_cast<float>(static_cast<double>(dl[i]) + g);
        }
      }
    }
  });
  double total = 0.0;
  for (int64_t r = 0; r < c.rows; ++r) total += row_loss[r];
  return divisor == 0 ? 0.0 : c.alpha * total / static_cast<double>(divisor);
}

void UpdateRouterBias(const CpuContext& ctx, const int64_t* load, int64_t n_experts, float gamma,
                      float* bias) {
  DSV3_KERNEL_CHECK(n_experts >= 1, "UpdateRouterBias: n_experts=%lld must be >= 1",
                    static_cast<long long>(n_experts));
  DSV3_KERNEL_CHECK(load != nullptr && bias != nullptr, "UpdateRouterBias: null load or bias");
  DSV3_KERNEL_CHECK(!internal::Overlaps(load, n_experts * 8, bias, n_experts * 4),
                    "UpdateRouterBias: bias overlaps load");
  int64_t total = 0;
  for (int64_t i = 0; i < n_experts; ++i) {
    DSV3_KERNEL_CHECK(load[i] >= 0, "UpdateRouterBias: load[%lld]=%lld must be >= 0",
                      static_cast<long long>(i), static_cast<long long>(load[i]));
    total += load[i];
  }
  for (int64_t i = 0; i < n_experts; ++i) {
    // sign(total / n - load_i) == sign(total - load_i * n), exactly.
    const __int128 diff = static_cast<__int128>(total) - static_cast<__int128>(load[i]) * n_experts;
    if (diff > 0) {
      bias[i] = bias[i] + gamma;
    } else if (diff < 0) {
      bias[i] = bias[i] - gamma;
    }
  }
}

}  // namespace dsv3::kernels
