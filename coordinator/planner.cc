// The planner (see planner.h and docs/planner.md): chooses the layout (ranks per stage, expert- and
// data-parallel sizes) for a worker count, then gives each rank a worker, keeping each
// expert-parallel group on one node where it can. Pure: no clock, no randomness, no I/O; the output
// depends only on the spec, the set of workers and the previous epoch.
#include "coordinator/planner.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace dsv3::coordinator {
namespace {

absl::Status RequirePositive(int64_t value, const char* name) {
  if (value > 0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("cannot plan: %s=%d must be positive (is the spec validated?)", name, value));
}

// Workers of one node, in (name, worker_id) order; `next` is the first unassigned one.
struct NodeWorkers {
  std::string node;
  std::vector<const PlannerWorker*> workers;
  size_t next = 0;
  size_t free() const { return workers.size() - next; }
};

}  // namespace

absl::StatusOr<PlacementLayout> PlanLayout(const v1::JobSpec& spec, int64_t worker_count) {
  const v1::ParallelSpec& parallel = spec.parallel();
  const int64_t pp = parallel.pipeline_parallel();
  const int64_t ep_target = parallel.has_expert_parallel() ? parallel.expert_parallel() : 1;
  const int64_t min_workers = parallel.has_min_workers() ? parallel.min_workers() : pp;
  const int64_t max_workers =
      parallel.has_max_workers() ? parallel.max_workers() : std::max(min_workers, pp * ep_target);
  const int64_t experts = spec.model().n_routed_experts();
  RETURN_IF_ERROR(RequirePositive(pp, "parallel.pipeline_parallel"));
  RETURN_IF_ERROR(RequirePositive(ep_target, "parallel.expert_parallel"));
  RETURN_IF_ERROR(RequirePositive(parallel.micro_batches(), "parallel.micro_batches"));
  RETURN_IF_ERROR(RequirePositive(max_workers, "parallel.max_workers"));
  RETURN_IF_ERROR(RequirePositive(experts, "model.n_routed_experts"));
  RETURN_IF_ERROR(RequirePositive(spec.train().seq_len(), "train.seq_len"));
  const int64_t tokens_per_micro_batch_row = spec.train().seq_len() * parallel.micro_batches();
  const int64_t global_batch = spec.train().global_batch_tokens();
  if (global_batch <= 0 || global_batch % tokens_per_micro_batch_row != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cannot plan: train.global_batch_tokens=%d is not a positive multiple of train.seq_len x "
        "parallel.micro_batches = %d (is the spec validated?)",
        global_batch, tokens_per_micro_batch_row));
  }

  const int64_t needed = std::max(min_workers, pp);
  if (worker_count < needed) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the job needs at least %d workers (parallel.min_workers=%d, "
        "parallel.pipeline_parallel=%d) but %d idle %s available",
        needed, min_workers, pp, worker_count, worker_count == 1 ? "worker is" : "workers are"));
  }

  PlacementLayout layout;
  layout.pipeline_parallel = pp;
  layout.sequences_per_micro_batch = global_batch / tokens_per_micro_batch_row;
  const int64_t usable = std::min(worker_count, max_workers);
  int64_t r = std::min(usable / pp, layout.sequences_per_micro_batch);
  while (layout.sequences_per_micro_batch % r != 0) {
    --r;  // r = 1 always divides
  }
  int64_t e = std::min(r, ep_target);
  while (r % e != 0 || experts % e != 0) {
    --e;  // e = 1 always divides
  }
  layout.ranks_per_stage = r;
  layout.expert_parallel = e;
  layout.data_parallel = r / e;
  layout.world_size = pp * r;
  return layout;
}

absl::StatusOr<v1::Placement> PlanPlacement(const v1::JobSpec& spec,
                                            const std::vector<PlannerWorker>& workers,
                                            int64_t previous_epoch) {
  if (previous_epoch < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("previous_epoch=%d must not be negative", previous_epoch));
  }
  // Deterministic order: node, then name, then id. Ids must be unique.
  std::vector<const PlannerWorker*> sorted;
  sorted.reserve(workers.size());
  for (const PlannerWorker& w : workers) {
    sorted.push_back(&w);
  }
  std::sort(sorted.begin(), sorted.end(), [](const PlannerWorker* a, const PlannerWorker* b) {
    return std::tie(a->node, a->name, a->worker_id) < std::tie(b->node, b->name, b->worker_id);
  });
  {
    std::vector<const std::string*> ids;
    ids.reserve(sorted.size());
    for (const PlannerWorker* w : sorted) {
      ids.push_back(&w->worker_id);
    }
    std::sort(ids.begin(), ids.end(), [](auto* a, auto* b) { return *a < *b; });
    for (size_t i = 1; i < ids.size(); ++i) {
      if (*ids[i] == *ids[i - 1]) {
        return absl::InvalidArgumentError(
            absl::StrFormat("worker_id \"%s\" appears more than once among the workers", *ids[i]));
      }
    }
  }

  ASSIGN_OR_RETURN(const PlacementLayout layout,
                   PlanLayout(spec, static_cast<int64_t>(workers.size())));

  std::vector<NodeWorkers> nodes;
  for (const PlannerWorker* w : sorted) {
    if (nodes.empty() || nodes.back().node != w->node) {
      nodes.push_back(NodeWorkers{w->node, {}});
    }
    nodes.back().workers.push_back(w);
  }

  const int64_t ep = layout.expert_parallel;
  const int64_t experts = spec.model().n_routed_experts();
  // Shards that together hold one routing group (model.n_group contiguous blocks of experts): 1
  // when a shard holds whole groups, or when group and shard boundaries cannot line up anyway.
  const int64_t group_experts = experts / std::max<int64_t>(1, spec.model().n_group());
  const int64_t shard_experts = experts / ep;
  const int64_t shards_per_routing_group =
      group_experts > shard_experts && group_experts % shard_experts == 0
          ? group_experts / shard_experts
          : 1;
  v1::Placement placement;
  placement.set_epoch(previous_epoch + 1);
  placement.set_world_size(layout.world_size);
  placement.set_pipeline_parallel(layout.pipeline_parallel);
  placement.set_expert_parallel(ep);
  placement.set_data_parallel(layout.data_parallel);

  for (int64_t stage = 0; stage < layout.pipeline_parallel; ++stage) {
    for (int64_t dp = 0; dp < layout.data_parallel; ++dp) {
      // The group's workers, shard by shard. Best fit: the node with the fewest free workers that
      // still holds the whole group (earliest node on ties), so larger nodes stay whole for later
      // groups and spares collect on them.
      std::vector<const PlannerWorker*> group;
      NodeWorkers* fit = nullptr;
      for (NodeWorkers& n : nodes) {
        if (n.free() >= static_cast<size_t>(ep) && (fit == nullptr || n.free() < fit->free())) {
          fit = &n;
        }
      }
      if (fit != nullptr) {
        for (int64_t k = 0; k < ep; ++k) {
          group.push_back(fit->workers[fit->next++]);
        }
      } else {
        // No node holds the group: span as few nodes as possible, most free first, giving each
        // node whole routing groups where it can hold one, so that a token limited to topk_group
        // routing groups reaches at most topk_group nodes (spec §3.2's node-limited routing).
        while (static_cast<int64_t>(group.size()) < ep) {
          NodeWorkers* most = nullptr;
          for (NodeWorkers& n : nodes) {
            if (n.free() > 0 && (most == nullptr || n.free() > most->free())) {
              most = &n;
            }
          }
          // PlanLayout guarantees world_size <= workers.size(), so a free worker exists.
          int64_t take = std::min(static_cast<int64_t>(most->free()),
                                  ep - static_cast<int64_t>(group.size()));
          if (take >= shards_per_routing_group) take -= take % shards_per_routing_group;
          for (int64_t i = 0; i < take; ++i) group.push_back(most->workers[most->next++]);
        }
      }
      for (int64_t shard = 0; shard < ep; ++shard) {
        const PlannerWorker& w = *group[shard];
        v1::RankPlacement* rank = placement.add_ranks();
        rank->set_rank(stage * layout.ranks_per_stage + dp * ep + shard);
        rank->set_worker_id(w.worker_id);
        rank->set_worker_name(w.name);
        rank->set_node(w.node);
        rank->set_pipeline_stage(stage);
        rank->set_expert_shard(shard);
        rank->set_expert_begin(shard * experts / ep);
        rank->set_expert_end((shard + 1) * experts / ep);
        rank->set_dp_replica(dp);
        rank->set_state(v1::ASSIGNED);
      }
    }
  }
  return placement;
}

}  // namespace dsv3::coordinator
