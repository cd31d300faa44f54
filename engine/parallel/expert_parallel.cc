// Expert-parallel dispatch and combine (see expert_parallel.h).
#include "engine/parallel/expert_parallel.h"

#include <cstring>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/quantize.h"

namespace dsv3::parallel {
namespace {

using model::FloatBuffer;

absl::Status Wait(std::unique_ptr<Work> work) { return work->Wait(absl::InfiniteDuration()); }

// What one rank receives for its experts: counts[p * experts + j] rows from source rank p for
// local expert j. Received rows arrive source-major ([p][j]); the experts want them expert-major
// ([j][p]).
struct RecvLayout {
  int peers = 0;
  int64_t experts = 0;
  std::vector<int64_t> counts;          // [peers, experts]
  std::vector<int64_t> rows_per_expert;  // [experts]: sum over sources
  std::vector<size_t> elems_per_peer;    // [peers]: floats from each source
  int64_t total = 0;                     // rows
};

// Copies the [p][j] row blocks of `src` into [j][p] order (expert_major) or back.
void Reorder(const RecvLayout& l, int64_t hidden, bool expert_major, const float* src,
             float* dst) {
  // Offsets of block (p, j) in source-major and in expert-major order.
  std::vector<int64_t> source_major(l.counts.size()), expert_major_off(l.counts.size());
  int64_t at = 0;
  for (int p = 0; p < l.peers; ++p) {
    for (int64_t j = 0; j < l.experts; ++j) {
      source_major[p * l.experts + j] = at;
      at += l.counts[p * l.experts + j];
    }
  }
  at = 0;
  for (int64_t j = 0; j < l.experts; ++j) {
    for (int p = 0; p < l.peers; ++p) {
      expert_major_off[p * l.experts + j] = at;
      at += l.counts[p * l.experts + j];
    }
  }
  for (size_t b = 0; b < l.counts.size(); ++b) {
    const int64_t from = expert_major ? source_major[b] : expert_major_off[b];
    const int64_t to = expert_major ? expert_major_off[b] : source_major[b];
    std::memcpy(dst + to * hidden, src + from * hidden, l.counts[b] * hidden * sizeof(float));
  }
}

struct EpCache : model::ExpertExecutor::Cache {
  RecvLayout recv;
  std::vector<size_t> send_elems;  // [peers]: floats this rank sent to each expert owner
  model::LocalExperts::Cache experts;
};

// FP8 rows on the wire (spec §5.7): a row is its d E4M3 codes, then one byte per 1x128 tile, the
// biased exponent of the tile's power-of-two scale (its FP32 bits >> 23: UE8M0 scales are exact
// powers of two, positive and normal, so the byte is the whole scale; a NaN or infinite scale
// comes back infinite, which dequantises the tile's codes to the same NaNs and infinities).
int64_t Fp8RowBytes(int64_t d) { return d + kernels::NumTiles(d); }

void PackFp8Rows(const kernels::CpuContext& ctx, const float* x, int64_t rows, int64_t d,
                 uint8_t* out) {
  const int64_t tiles = kernels::NumTiles(d);
  std::vector<uint8_t> q(static_cast<size_t>(rows * d));
  std::vector<float> scales(static_cast<size_t>(rows * tiles));
  kernels::Quantize1x128(ctx, {.scale_format = kernels::ScaleFormat::kUe8m0}, x, rows, d,
                         q.data(), scales.data());
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = out + r * Fp8RowBytes(d);
    std::memcpy(row, q.data() + r * d, static_cast<size_t>(d));
    for (int64_t t = 0; t < tiles; ++t) {
      uint32_t bits;
      std::memcpy(&bits, &scales[r * tiles + t], sizeof(bits));
      row[d + t] = static_cast<uint8_t>(bits >> 23);
    }
  }
}

void UnpackFp8Rows(const kernels::CpuContext& ctx, const uint8_t* in, int64_t rows, int64_t d,
                   float* x) {
  const int64_t tiles = kernels::NumTiles(d);
  std::vector<uint8_t> q(static_cast<size_t>(rows * d));
  std::vector<float> scales(static_cast<size_t>(rows * tiles));
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = in + r * Fp8RowBytes(d);
    std::memcpy(q.data() + r * d, row, static_cast<size_t>(d));
    for (int64_t t = 0; t < tiles; ++t) {
      const uint32_t bits = static_cast<uint32_t>(row[d + t]) << 23;
      std::memcpy(&scales[r * tiles + t], &bits, sizeof(bits));
    }
  }
  kernels::Dequantize1x128(ctx, q.data(), scales.data(), rows, d, x);
}

// Rows [r, d] from send_rows[p] rows per peer to recv_rows[p] per peer: FP32, or FP8 packed as
// above (the FP8 recipe's dispatch direction).
absl::Status ExchangeRows(const kernels::CpuContext& ctx, Communicator* comm, bool fp8,
                          const float* send, const std::vector<size_t>& send_elems, float* recv,
                          const std::vector<size_t>& recv_elems, int64_t d) {
  if (!fp8) {
    return Wait(comm->AllToAll(send, send_elems, recv, recv_elems, DataType::kFloat32));
  }
  const int64_t rb = Fp8RowBytes(d);
  std::vector<size_t> send_bytes(send_elems.size()), recv_bytes(recv_elems.size());
  int64_t send_rows = 0, recv_rows = 0;
  for (size_t p = 0; p < send_elems.size(); ++p) {
    send_bytes[p] = send_elems[p] / d * rb;
    recv_bytes[p] = recv_elems[p] / d * rb;
    send_rows += static_cast<int64_t>(send_elems[p]) / d;
    recv_rows += static_cast<int64_t>(recv_elems[p]) / d;
  }
  std::vector<uint8_t> out(static_cast<size_t>(send_rows * rb));
  std::vector<uint8_t> in(static_cast<size_t>(recv_rows * rb));
  PackFp8Rows(ctx, send, send_rows, d, out.data());
  RETURN_IF_ERROR(
      Wait(comm->AllToAll(out.data(), send_bytes, in.data(), recv_bytes, DataType::kUint8)));
  UnpackFp8Rows(ctx, in.data(), recv_rows, d, recv);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExpertRange> ExpertsOfRank(int64_t n_experts, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size || n_experts % size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("expert parallelism: rank ", rank, " of ", size,
                                                   " cannot own an equal share of ", n_experts,
                                                   " experts (the size must divide it)"));
  }
  const int64_t count = n_experts / size;
  return ExpertRange{rank * count, count};
}

absl::StatusOr<std::shared_ptr<ExpertParallelExecutor>> ExpertParallelExecutor::Create(
    Communicator* comm, const ModelConfig& config, model::ParameterSet* params,
    const std::string& prefix, model::GemmMode mode, Communicator* backward_comm) {
  ASSIGN_OR_RETURN(const ExpertRange range,
                   ExpertsOfRank(config.n_routed_experts, comm->rank(), comm->size()));
  if (backward_comm == nullptr) backward_comm = comm;
  if (backward_comm->rank() != comm->rank() || backward_comm->size() != comm->size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert parallelism: the backward communicator is rank ", backward_comm->rank(), " of ",
        backward_comm->size(), ", the forward one rank ", comm->rank(), " of ", comm->size()));
  }
  model::LocalExperts experts(config, params, prefix, mode, range.first, range.count);
  return std::shared_ptr<ExpertParallelExecutor>(
      new ExpertParallelExecutor(comm, backward_comm, range, config.hidden_size,
                                 mode == model::GemmMode::kFp8, std::move(experts)));
}

absl::Status ExpertParallelExecutor::Forward(const kernels::CpuContext& ctx, FloatBuffer u_perm,
                                             const int64_t* rows_per_expert, int64_t rows,
                                             float* eo, std::unique_ptr<Cache>* cache) {
  const int peers = comm_->size();
  const int64_t el = range_.count;
  const int64_t d = hidden_;
  auto c = std::make_unique<EpCache>();
  RecvLayout& l = c->recv;
  l.peers = peers;
  l.experts = el;
  l.counts.resize(static_cast<size_t>(peers * el));
  // 1. Counts: peer p gets the counts of its experts, rows_per_expert[p*el .. (p+1)*el).
  const std::vector<size_t> count_blocks(static_cast<size_t>(peers), static_cast<size_t>(el));
  RETURN_IF_ERROR(Wait(comm_->AllToAll(rows_per_expert, count_blocks, l.counts.data(),
                                       count_blocks, DataType::kInt64)));
  c->send_elems.resize(static_cast<size_t>(peers));
  l.elems_per_peer.resize(static_cast<size_t>(peers));
  l.rows_per_expert.assign(static_cast<size_t>(el), 0);
  int64_t sent = 0;
  for (int p = 0; p < peers; ++p) {
    int64_t out = 0, in = 0;
    for (int64_t j = 0; j < el; ++j) {
      out += rows_per_expert[p * el + j];
      in += l.counts[p * el + j];
      l.rows_per_expert[j] += l.counts[p * el + j];
    }
    c->send_elems[p] = static_cast<size_t>(out * d);
    l.elems_per_peer[p] = static_cast<size_t>(in * d);
    sent += out;
    l.total += in;
  }
  if (sent != rows) {
    return absl::InternalError(absl::StrCat("expert dispatch: the counts add up to ", sent,
                                            " rows, the batch has ", rows));
  }
  // 2. Dispatch: the rows are already grouped by owner (experts are contiguous per rank).
  FloatBuffer received = model::Floats(l.total * d);
  RETURN_IF_ERROR(ExchangeRows(ctx, comm_, fp8_dispatch_, u_perm.data(), c->send_elems,
                               received.data(), l.elems_per_peer, d));
  model::FreeBuffer(&u_perm);
  FloatBuffer x = model::Floats(l.total * d);
  Reorder(l, d, /*expert_major=*/true, received.data(), x.data());
  // 3. This rank's experts on everything it received.
  FloatBuffer y = model::Floats(l.total * d);
  experts_.Forward(ctx, std::move(x), l.rows_per_expert.data(), l.total, y.data(), &c->experts);
  // 4. Combine: outputs back to the tokens' ranks, in the order they were sent.
  Reorder(l, d, /*expert_major=*/false, y.data(), received.data());
  RETURN_IF_ERROR(Wait(comm_->AllToAll(received.data(), l.elems_per_peer, eo, c->send_elems,
                                       DataType::kFloat32)));
  *cache = std::move(c);
  return absl::OkStatus();
}

absl::Status ExpertParallelExecutor::Backward(const kernels::CpuContext& ctx, const float* d_eo,
                                              const int64_t* rows_per_expert, int64_t rows,
                                              Cache* cache, float* du_perm) {
  (void)rows_per_expert;
  (void)rows;
  EpCache* c = static_cast<EpCache*>(cache);
  const RecvLayout& l = c->recv;
  const int64_t d = hidden_;
  // Output gradients travel like the dispatch, input gradients like the combine.
  FloatBuffer received = model::Floats(l.total * d);
  RETURN_IF_ERROR(ExchangeRows(ctx, backward_comm_, fp8_dispatch_, d_eo, c->send_elems,
                               received.data(), l.elems_per_peer, d));
  FloatBuffer dy = model::Floats(l.total * d);
  Reorder(l, d, /*expert_major=*/true, received.data(), dy.data());
  FloatBuffer dx = model::Floats(l.total * d);
  experts_.Backward(ctx, dy.data(), l.rows_per_expert.data(), l.total, &c->experts, dx.data());
  Reorder(l, d, /*expert_major=*/false, dx.data(), received.data());
  return Wait(backward_comm_->AllToAll(received.data(), l.elems_per_peer, du_perm, c->send_elems,
                                       DataType::kFloat32));
}

}  // namespace dsv3::parallel
