// The pipeline executor (pipeline_executor.h).
#include "engine/parallel/pipeline_executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/rank_position.h"
#include "absl/strings/str_format.h"
#include "engine/model/linear.h"
#include "engine/parallel/compute_token.h"
#include "engine/parallel/schedule_format.h"

namespace dsv3::parallel {
namespace {

// Where a chunk's input comes from and its output goes.
struct HopInfo {
  int route = -1;
  int hop = -1;
  bool first = false;        // the route's first hop: reads the tokens
  bool last = false;         // the route's last hop: computes the loss
  bool prev_local = false;   // the previous hop runs on this rank (hand over in memory)
  bool next_local = false;   // the next hop runs on this rank
  Direction prev_direction = Direction::kA;
  Direction next_direction = Direction::kA;
};

}  // namespace

// The buffers of one step, keyed by (direction, micro-batch of the route).
struct PipelineExecutor::StepState {
  explicit StepState(int c) : c(c) {
    const size_t n = static_cast<size_t>(2 * c);
    act_in.resize(n);
    act_out.resize(n);
    grad_in.resize(n);
    grad_out.resize(n);
    act_in_work.assign(n, -1);
    grad_in_work.assign(n, -1);
    saved.resize(n);
  }
  int Key(Direction d, int mb) const { return Index(d) * c + mb; }

  int c;
  std::vector<std::vector<float>> act_in, act_out, grad_in, grad_out;
  std::vector<int> act_in_work, grad_in_work;  // index into works, -1: none
  std::vector<std::unique_ptr<model::StageActivations>> saved;
  std::vector<std::unique_ptr<Work>> works;
  std::vector<bool> work_done;
  struct Deferred {
    Chunk chunk;
    model::DeferredWeightGrads grads;
  };
  std::deque<Deferred> deferred;
};

absl::StatusOr<std::unique_ptr<PipelineExecutor>> PipelineExecutor::Create(
    Schedule schedule, model::Model* model, Communicator* pipeline,
    PipelineExecutorOptions options) {
  if (model == nullptr || pipeline == nullptr) {
    return absl::InvalidArgumentError("pipeline executor: a model and a communicator are needed");
  }
  if (pipeline->size() != schedule.num_ranks) {
    return absl::InvalidArgumentError(
        absl::StrCat("pipeline executor: the schedule has ", schedule.num_ranks,
                     " ranks but the pipeline group has ", pipeline->size()));
  }
  if (static_cast<int>(schedule.ops.size()) != schedule.num_ranks) {
    return absl::InvalidArgumentError("pipeline executor: the schedule has no op list per rank");
  }
  std::vector<model::StageSpan> spans;
  for (int s = 0; s < schedule.layout.num_stages; ++s) {
    absl::StatusOr<model::StageSpan> span =
        model::PipelineStage(model->config(), schedule.layout.num_stages, s);
    if (!span.ok()) return span.status();
    spans.push_back(*span);
  }
  return std::unique_ptr<PipelineExecutor>(
      new PipelineExecutor(std::move(schedule), model, pipeline, std::move(spans), options));
}

PipelineExecutor::PipelineExecutor(Schedule schedule, model::Model* model, Communicator* pipeline,
                                   std::vector<model::StageSpan> spans,
                                   PipelineExecutorOptions options)
    : schedule_(std::move(schedule)),
      model_(model),
      pipeline_(pipeline),
      options_(options),
      spans_(std::move(spans)) {
  int offset = 0;
  for (const Route& route : schedule_.layout.routes) {
    route_offset_.push_back(offset);
    offset += route.micro_batches;
  }
}

absl::StatusOr<PipelineStepResult> PipelineExecutor::RunStep(const MicroBatchSource& micro_batches,
                                                             int64_t normalizer_rows) {
  const int rank = pipeline_->rank();
  const PipelineLayout& layout = schedule_.layout;
  const int64_t d = model_->config().hidden_size;
  StepState st(schedule_.num_micro_batches);
  PipelineStepResult result;
  const absl::Duration timeout = pipeline_->timeout();

  auto hop_info = [&](const Chunk& c) -> absl::StatusOr<HopInfo> {
    const PipelineLayout::HopRef ref = layout.Find(c.direction, c.stage);
    if (ref.route < 0) {
      return absl::InternalError(absl::StrCat("no route holds stage ", c.stage, " as direction ",
                                              std::string(1, DirectionLetter(c.direction))));
    }
    const Route& route = layout.routes[static_cast<size_t>(ref.route)];
    if (route.hops[static_cast<size_t>(ref.hop)].rank != rank) {
      return absl::InternalError(absl::StrCat("rank ", rank, " was scheduled stage ", c.stage,
                                              " which the layout puts on rank ",
                                              route.hops[static_cast<size_t>(ref.hop)].rank));
    }
    HopInfo h;
    h.route = ref.route;
    h.hop = ref.hop;
    h.first = ref.hop == 0;
    h.last = ref.hop + 1 == static_cast<int>(route.hops.size());
    if (!h.first) {
      const Hop& p = route.hops[static_cast<size_t>(ref.hop - 1)];
      h.prev_local = p.rank == rank;
      h.prev_direction = p.direction;
    }
    if (!h.last) {
      const Hop& n = route.hops[static_cast<size_t>(ref.hop + 1)];
      h.next_local = n.rank == rank;
      h.next_direction = n.direction;
    }
    return h;
  };
  auto wait_work = [&](int index, const char* what) -> absl::Status {
    if (index < 0) {
      return absl::InternalError(absl::StrCat("the ", what, " was never received"));
    }
    if (st.work_done[static_cast<size_t>(index)]) return absl::OkStatus();
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = st.works[static_cast<size_t>(index)]->Wait(timeout);
    result.seconds_waiting +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) return s;
    st.work_done[static_cast<size_t>(index)] = true;
    return absl::OkStatus();
  };
  // Rows of a micro-batch, fetched once per chunk (the source is cheap: a view of the batch).
  auto tokens_of = [&](const HopInfo& h, int mb) -> absl::StatusOr<model::TokenRows> {
    return micro_batches(route_offset_[static_cast<size_t>(h.route)] + mb);
  };

  auto forward = [&](const Chunk& c) -> absl::Status {
    absl::StatusOr<HopInfo> h = hop_info(c);
    if (!h.ok()) return h.status();
    absl::StatusOr<model::TokenRows> rows = tokens_of(*h, c.micro_batch);
    if (!rows.ok()) return rows.status();
    const size_t size = static_cast<size_t>(rows->rows * rows->seq_len * d);
    const int key = st.Key(c.direction, c.micro_batch);
    const float* input = nullptr;
    if (h->prev_local) {
      input = st.act_out[static_cast<size_t>(st.Key(h->prev_direction, c.micro_batch))].data();
    } else if (!h->first) {
      if (absl::Status s = wait_work(st.act_in_work[static_cast<size_t>(key)], "input activation");
          !s.ok()) {
        return s;
      }
      input = st.act_in[static_cast<size_t>(key)].data();
    }
    float* output = nullptr;
    if (!h->last) {
      st.act_out[static_cast<size_t>(key)].resize(size);
      output = st.act_out[static_cast<size_t>(key)].data();
    }
    model::RunOptions run;
    run.backward = true;
    run.count_loads = true;
    run.normalizer_rows = normalizer_rows;
    absl::StatusOr<model::LossTerms> loss =
        model_->ForwardStage(spans_[static_cast<size_t>(c.stage)], *rows, input, output, run,
                             &st.saved[static_cast<size_t>(key)]);
    if (!loss.ok()) return loss.status();
    // The input is inside the saved activations now; drop the received copy.
    if (!h->first && !h->prev_local) std::vector<float>().swap(st.act_in[static_cast<size_t>(key)]);
    result.loss.loss += loss->loss;
    result.loss.main_loss += loss->main_loss;
    result.loss.mtp_loss += loss->mtp_loss;
    result.loss.balance_loss += loss->balance_loss;
    ++result.forward_chunks;
    return absl::OkStatus();
  };

  auto backward = [&](const Chunk& c, bool defer) -> absl::Status {
    absl::StatusOr<HopInfo> h = hop_info(c);
    if (!h.ok()) return h.status();
    const int key = st.Key(c.direction, c.micro_batch);
    std::unique_ptr<model::StageActivations>& saved = st.saved[static_cast<size_t>(key)];
    if (saved == nullptr) {
      return absl::InternalError("backward before the chunk's forward");
    }
    const float* d_output = nullptr;
    if (h->next_local) {
      d_output = st.grad_out[static_cast<size_t>(st.Key(h->next_direction, c.micro_batch))].data();
    } else if (!h->last) {
      if (absl::Status s =
              wait_work(st.grad_in_work[static_cast<size_t>(key)], "output gradient");
          !s.ok()) {
        return s;
      }
      d_output = st.grad_in[static_cast<size_t>(key)].data();
    }
    float* d_input = nullptr;
    if (!h->first) {
      absl::StatusOr<model::TokenRows> rows = tokens_of(*h, c.micro_batch);
      if (!rows.ok()) return rows.status();
      st.grad_out[static_cast<size_t>(key)].resize(
          static_cast<size_t>(rows->rows * rows->seq_len * d));
      d_input = st.grad_out[static_cast<size_t>(key)].data();
    }
    absl::Status s;
    if (defer) {
      st.deferred.emplace_back();
      st.deferred.back().chunk = c;
      model::ScopedWeightGradDeferral scope(&st.deferred.back().grads);
      s = model_->BackwardStage(saved.get(), d_output, d_input);
    } else {
      s = model_->BackwardStage(saved.get(), d_output, d_input);
    }
    if (!s.ok()) return s;
    saved.reset();
    // The gradient of the output has been used; a local hand-over's buffer too.
    if (h->next_local) {
      std::vector<float>().swap(
          st.grad_out[static_cast<size_t>(st.Key(h->next_direction, c.micro_batch))]);
    } else if (!h->last) {
      std::vector<float>().swap(st.grad_in[static_cast<size_t>(key)]);
    }
    ++result.backward_chunks;
    return absl::OkStatus();
  };

  auto weight = [&](const Chunk& c) -> absl::Status {
    if (st.deferred.empty()) {
      return absl::InternalError("W with no deferred weight gradients");
    }
    if (!(st.deferred.front().chunk == c)) {
      return absl::InternalError("W runs another chunk than the oldest deferred one");
    }
    st.deferred.front().grads.Run(model_->context());
    st.deferred.pop_front();
    return absl::OkStatus();
  };

  auto comm = [&](const Op& op) -> absl::Status {
    std::vector<PeerSend> sends;
    std::vector<PeerRecv> recvs;
    std::vector<int*> recv_slots;
    const int work_index = static_cast<int>(st.works.size());
    for (const P2P& p : op.comm) {
      const int key = st.Key(p.direction, p.micro_batch);
      const bool act = p.payload == Payload::kActivation;
      if (p.send) {
        const std::vector<float>& buf = act ? st.act_out[static_cast<size_t>(key)]
                                            : st.grad_out[static_cast<size_t>(key)];
        if (buf.empty()) return absl::InternalError("send of a buffer not computed yet");
        sends.push_back({p.peer, buf.data(), buf.size(), DataType::kFloat32});
      } else {
        // The receive has the size of the chunk's activations: rows * T * d of any micro-batch.
        Chunk c{p.direction, p.micro_batch, layout.StageOf(rank, p.direction)};
        absl::StatusOr<HopInfo> h = hop_info(c);
        if (!h.ok()) return h.status();
        absl::StatusOr<model::TokenRows> rows = tokens_of(*h, p.micro_batch);
        if (!rows.ok()) return rows.status();
        std::vector<float>& buf = act ? st.act_in[static_cast<size_t>(key)]
                                      : st.grad_in[static_cast<size_t>(key)];
        buf.resize(static_cast<size_t>(rows->rows * rows->seq_len * d));
        recvs.push_back({p.peer, buf.data(), buf.size(), DataType::kFloat32});
        (act ? st.act_in_work : st.grad_in_work)[static_cast<size_t>(key)] = work_index;
      }
    }
    st.works.push_back(pipeline_->SendRecv(std::move(sends), std::move(recvs)));
    st.work_done.push_back(false);
    return absl::OkStatus();
  };

  using Clock = std::chrono::steady_clock;
  // The F&B pair on two threads taking turns (compute_token.h). The forward holds the token
  // first; the backward starts computing when the forward first waits for communication. Every
  // access to `st` and `result` happens with the token held, so the two never race.
  auto forward_backward_overlapped = [&](const Op& op) -> absl::Status {
    ComputeToken token;
    const double waiting_before = result.seconds_waiting;
    const auto start = Clock::now();
    absl::Status forward_status, backward_status;
    std::thread backward_thread;
    {
      ScopedComputeTurn turn(&token);
      backward_thread = std::thread([&] {
        ScopedComputeTurn backward_turn(&token);
        backward_status = backward(op.backward, false);
      });
      forward_status = forward(op.chunk);
    }
    backward_thread.join();
    // The rank computed while either chunk held the token; the rest of the op it waited.
    const double wall = std::chrono::duration<double>(Clock::now() - start).count();
    result.seconds_waiting = waiting_before + std::max(0.0, wall - token.held_seconds());
    return forward_status.ok() ? backward_status : forward_status;
  };

  const auto step_start = Clock::now();
  const std::vector<Op>& ops = schedule_.ops[static_cast<size_t>(rank)];
  RankPosition& position = GlobalRankPosition();
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    absl::Status s;
    position.micro_batch.store(static_cast<int64_t>(i), std::memory_order_relaxed);
    const auto op_start = Clock::now();
    const double waited_before = result.seconds_waiting;
    switch (op.kind) {
      case OpKind::kForward:
        s = forward(op.chunk);
        break;
      case OpKind::kBackward:
        s = backward(op.chunk, false);
        break;
      case OpKind::kBackwardInput:
        s = backward(op.chunk, true);
        break;
      case OpKind::kWeight:
        s = weight(op.chunk);
        break;
      case OpKind::kForwardBackward:
        s = options_.overlap_chunks ? forward_backward_overlapped(op) : forward(op.chunk);
        if (s.ok() && !options_.overlap_chunks) s = backward(op.backward, false);
        break;
      case OpKind::kCommBatch:
        s = comm(op);
        if (s.ok() && !options_.overlap_communication) {
          s = wait_work(static_cast<int>(st.works.size()) - 1, "message");
        }
        break;
    }
    position.ticks.fetch_add(1, std::memory_order_relaxed);
    if (op.is_compute()) {
      // Waiting for an input inside a compute op is not computing.
      const double busy = std::chrono::duration<double>(Clock::now() - op_start).count() -
                          (result.seconds_waiting - waited_before);
      result.seconds_compute += busy;
      result.op_seconds[static_cast<int>(op.kind)] += busy;
      ++result.op_count[static_cast<int>(op.kind)];
    }
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("pipeline rank ", rank, " op ", i, " (",
                                                 FormatOp(op), "): ", s.message()));
    }
  }
  for (size_t w = 0; w < st.works.size(); ++w) {
    if (absl::Status s = wait_work(static_cast<int>(w), "message"); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("pipeline rank ", rank,
                                                 " at the end of the step: ", s.message()));
    }
  }
  if (!st.deferred.empty()) {
    return absl::InternalError(absl::StrCat("pipeline rank ", rank, ": ", st.deferred.size(),
                                            " deferred weight gradients never ran"));
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
  return result;
}

}  // namespace dsv3::parallel
