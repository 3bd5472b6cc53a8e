#include "scheduler/plugins/default_preemption.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <unordered_map>

#include "scheduler/node_info.h"

namespace skiff::scheduler::plugins {
namespace {

constexpr char kNoVictims[] = "No preemption victims found for incoming pod";
constexpr char kNotHelpful[] = "Preemption is not helpful for scheduling";

// When a pod started: status.startTime; a pod not started yet counts as starting now, i.e.
// after every started one ("~" sorts after any timestamp).
std::string start_time(const PodInfo& pod) {
  if (pod.object && pod.object->is_object()) {
    auto status = pod.object->find("status");
    if (status != pod.object->end() && status->is_object()) {
      auto t = status->find("startTime");
      if (t != status->end() && t->is_string()) return t->get<std::string>();
    }
  }
  return "~";
}

// Upstream's MoreImportantPod: higher priority, then the one that started first.
bool more_important(const PodRef& a, const PodRef& b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return start_time(*a) < start_time(*b);
}

struct Candidate {
  const NodeInfo* node = nullptr;
  std::vector<PodRef> victims;  // most important first
};

// The victims on `node`, or the status saying why evicting cannot make the pod fit there
// (upstream's SelectVictimsOnNode). The filters run on a copy of the node and a clone of the
// cycle's state kept in line with it, so that counts PreFilter took (inter-pod affinity, topology
// spread) see the pods removed and given back.
PluginStatus select_victims(const CycleState& cycle_state, const PodInfo& pod, const NodeInfo& node,
                            const PostFilterContext& ctx, std::vector<PodRef>& victims) {
  std::vector<PodRef> lower;
  for (const PodRef& p : node.pods()) {
    if (p->priority < pod.priority) lower.push_back(p);
  }
  if (lower.empty()) return {Code::kUnschedulableAndUnresolvable, kNoVictims};
  NodeInfo trial = node;
  CycleState state = cycle_state.clone();
  auto remove = [&](const PodRef& p) {
    trial.remove_pod(p->uid);
    return ctx.framework.run_pre_filter_extension_remove_pod(state, pod, *p, trial);
  };
  auto add = [&](const PodRef& p) {
    trial.add_pod(p);
    return ctx.framework.run_pre_filter_extension_add_pod(state, pod, *p, trial);
  };
  for (const PodRef& p : lower) {
    if (PluginStatus s = remove(p); !s.is_success()) return s;
  }
  PluginStatus fits = ctx.filter(state, pod, trial);
  if (!fits.is_success()) return fits;
  std::sort(lower.begin(), lower.end(), more_important);
  for (const PodRef& p : lower) {
    if (PluginStatus s = add(p); !s.is_success()) return s;
    if (!ctx.filter(state, pod, trial).is_success()) {
      if (PluginStatus s = remove(p); !s.is_success()) return s;
      victims.push_back(p);
    }
  }
  return {};
}

// Upstream's pickOneNodeForPreemption, without the PodDisruptionBudget criterion.
const Candidate* pick(const std::vector<Candidate>& candidates) {
  const Candidate* best = nullptr;
  auto sum_of = [](const Candidate& c) {
    int64_t sum = 0;
    // Shifted so that negative priorities still add up to more than nothing, as upstream.
    for (const PodRef& v : c.victims) sum += int64_t{v->priority} + INT32_MAX + 1;
    return sum;
  };
  auto earliest_top_start = [](const Candidate& c) {
    std::string earliest = "~";
    for (const PodRef& v : c.victims) {
      if (v->priority != c.victims.front()->priority) break;
      earliest = std::min(earliest, start_time(*v));
    }
    return earliest;
  };
  for (const Candidate& c : candidates) {
    if (!best) {
      best = &c;
      continue;
    }
    int32_t top = c.victims.front()->priority;
    int32_t best_top = best->victims.front()->priority;
    if (top != best_top) {
      if (top < best_top) best = &c;
      continue;
    }
    int64_t sum = sum_of(c), best_sum = sum_of(*best);
    if (sum != best_sum) {
      if (sum < best_sum) best = &c;
      continue;
    }
    if (c.victims.size() != best->victims.size()) {
      if (c.victims.size() < best->victims.size()) best = &c;
      continue;
    }
    if (earliest_top_start(c) > earliest_top_start(*best)) best = &c;
  }
  return best;
}

}  // namespace

PluginStatus DefaultPreemption::post_filter(CycleState& state, const PodInfo& pod,
                                            const NodeToStatus& failed_nodes,
                                            const PostFilterContext& ctx,
                                            std::string& nominated_node) const {
  // As upstream: a pod not eligible to preempt keeps the node it was nominated to (if any); one
  // for which no candidate is found loses it.
  nominated_node = pod.nominated_node_name;
  if (!pod.preempts) {
    return {Code::kUnschedulable, "preemption: not eligible due to preemptionPolicy=Never."};
  }
  std::unordered_map<std::string_view, const PluginStatus*> failed;
  failed.reserve(failed_nodes.size());
  for (const auto& [name, status] : failed_nodes) failed.emplace(name, &status);

  if (!pod.nominated_node_name.empty()) {
    auto it = failed.find(pod.nominated_node_name);
    const NodeInfo* nominated = ctx.nodes.get(pod.nominated_node_name);
    if (it != failed.end() && it->second->code() == Code::kUnschedulable && nominated) {
      for (const PodRef& p : nominated->pods()) {
        if (p->terminating && p->priority < pod.priority) {
          return {Code::kUnschedulable,
                  "preemption: not eligible due to a terminating pod on the nominated node."};
        }
      }
    }
  }

  const std::vector<const NodeInfo*>& all = ctx.nodes.list();
  const size_t wanted =
      std::min(all.size(), std::max<size_t>(100, all.size() / 10));  // upstream's 10%, >= 100
  std::vector<Candidate> candidates;
  std::map<std::string, int> reasons;  // why each node that is not a candidate is not
  for (const NodeInfo* node : all) {
    auto it = failed.find(node->name());
    if (it == failed.end() || it->second->code() != Code::kUnschedulable) {
      reasons[kNotHelpful]++;
      continue;
    }
    if (candidates.size() >= wanted) continue;
    Candidate c{node, {}};
    PluginStatus s = select_victims(state, pod, *node, ctx, c.victims);
    if (!s.is_success()) {
      if (s.code() == Code::kError) return s;
      for (const std::string& r : s.reasons()) reasons[r]++;
      continue;
    }
    if (c.victims.empty()) {
      // It fits as it is: the pods it failed on went while this cycle ran. Nothing to evict.
      nominated_node = node->name();
      return {};
    }
    candidates.push_back(std::move(c));
  }
  if (candidates.empty()) {
    std::vector<std::string> histogram;
    for (const auto& [reason, count] : reasons) {
      histogram.push_back(std::to_string(count) + " " + reason);
    }
    std::sort(histogram.begin(), histogram.end());
    std::string msg = "preemption: 0/" + std::to_string(all.size()) + " nodes are available:";
    for (size_t i = 0; i < histogram.size(); ++i) msg += (i ? ", " : " ") + histogram[i];
    nominated_node.clear();
    return {Code::kUnschedulableAndUnresolvable, msg + "."};
  }
  const Candidate* best = pick(candidates);
  Status evicted = evict_(pod, best->node->name(), best->victims);
  if (!evicted.is_ok()) return PluginStatus::error("preemption: " + evicted.message());
  nominated_node = best->node->name();
  return {};
}

}  // namespace skiff::scheduler::plugins
