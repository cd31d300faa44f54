// Membership bookkeeping; see membership.h.
#include "coordinator/membership.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace dsv3::coordinator {

std::string Membership::NewId() {
  while (true) {
    std::string id = absl::StrFormat("w-%08x", absl::Uniform<uint32_t>(rng_));
    if (!by_id_.contains(id)) return id;
  }
}

const WorkerRecord& Membership::Attach(WorkerRecord worker, absl::Time now,
                                       std::string* replaced_id) {
  replaced_id->clear();
  for (auto& [id, old] : by_id_) {
    if (old.alive && old.name == worker.name) {
      old.alive = false;
      old.dead_reason = "re-attached under the same name";
      *replaced_id = id;
    }
  }
  worker.id = NewId();
  worker.attached = now;
  worker.last_heartbeat = now;
  worker.alive = true;
  worker.job_id.clear();
  worker.rank = -1;
  auto [it, inserted] = by_id_.emplace(worker.id, std::move(worker));
  return it->second;
}

bool Membership::Heartbeat(const std::string& id, absl::Time now) {
  auto it = by_id_.find(id);
  if (it == by_id_.end() || !it->second.alive) return false;
  it->second.last_heartbeat = std::max(it->second.last_heartbeat, now);
  return true;
}

std::vector<std::string> Membership::Expire(absl::Time now) {
  std::vector<std::string> dead;
  for (auto& [id, w] : by_id_) {
    if (w.alive && now - w.last_heartbeat > kLeasesBeforeDead * lease_) {
      w.alive = false;
      w.dead_reason = absl::StrFormat("no heartbeat for %s (lease %s)",
                                      absl::FormatDuration(now - w.last_heartbeat),
                                      absl::FormatDuration(lease_));
      dead.push_back(id);
    }
  }
  return dead;
}

bool Membership::MarkDead(const std::string& id, const std::string& reason) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  if (it->second.alive) {
    it->second.alive = false;
    it->second.dead_reason = reason;
  }
  return true;
}

WorkerRecord* Membership::Find(const std::string& id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

const WorkerRecord* Membership::FindLiveByName(const std::string& name) const {
  for (const auto& [id, w] : by_id_) {
    if (w.alive && w.name == name) return &w;
  }
  return nullptr;
}

std::vector<const WorkerRecord*> Membership::Idle() const {
  std::vector<const WorkerRecord*> idle;
  for (const auto& [id, w] : by_id_) {
    if (w.alive && w.job_id.empty()) idle.push_back(&w);
  }
  std::sort(idle.begin(), idle.end(),
            [](const WorkerRecord* a, const WorkerRecord* b) { return a->name < b->name; });
  return idle;
}

std::vector<const WorkerRecord*> Membership::All() const {
  std::vector<const WorkerRecord*> all;
  for (const auto& [id, w] : by_id_) all.push_back(&w);
  std::sort(all.begin(), all.end(), [](const WorkerRecord* a, const WorkerRecord* b) {
    if (a->alive != b->alive) return a->alive;
    if (a->name != b->name) return a->name < b->name;
    return a->attached > b->attached;
  });
  return all;
}

void Membership::ForgetDeadBefore(absl::Time cutoff) {
  for (auto it = by_id_.begin(); it != by_id_.end();) {
    if (!it->second.alive && it->second.last_heartbeat < cutoff) {
      it = by_id_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace dsv3::coordinator
