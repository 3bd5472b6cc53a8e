#include "scheduler/plugins/taint_toleration.h"

namespace skiff::scheduler::plugins {
namespace {

const StateKey kPreScoreKey{"PreScoreTaintToleration"};

struct PreScoreState : StateData {
  // Tolerations with effect PreferNoSchedule or no effect.
  std::vector<Toleration> prefer_no_schedule;
};

bool blocks_scheduling(const Taint& t) {
  return t.effect == TaintEffect::kNoSchedule || t.effect == TaintEffect::kNoExecute;
}

}  // namespace

PluginStatus TaintToleration::filter(const CycleState&, const PodInfo& pod,
                                     const NodeInfo& node) const {
  const Taint* taint =
      find_untolerated_taint(node.node()->taints, pod.tolerations, blocks_scheduling);
  if (taint == nullptr) return {};
  return {Code::kUnschedulableAndUnresolvable,
          "node(s) had untolerated taint {" + taint->key + ": " + taint->value + "}"};
}

PluginStatus TaintToleration::pre_score(CycleState& state, const PodInfo& pod,
                                        std::span<const NodeInfo* const>, const NodeLister&) const {
  auto s = std::make_unique<PreScoreState>();
  for (const Toleration& t : pod.tolerations) {
    if (!t.effect || *t.effect == TaintEffect::kPreferNoSchedule)
      s->prefer_no_schedule.push_back(t);
  }
  state.write(kPreScoreKey, std::move(s));
  return {};
}

PluginStatus TaintToleration::score(const CycleState& state, const PodInfo& pod,
                                    const NodeInfo& node, int64_t& score) const {
  const auto* s = state.get<PreScoreState>(kPreScoreKey);
  if (s == nullptr) return PluginStatus::error("TaintToleration: PreScore state missing");
  int64_t intolerable = 0;
  for (const Taint& t : node.node()->taints) {
    if (t.effect != TaintEffect::kPreferNoSchedule) continue;
    if (!tolerations_tolerate(s->prefer_no_schedule, t)) ++intolerable;
  }
  score = intolerable;
  return {};
}

PluginStatus TaintToleration::normalize(const CycleState&, const PodInfo&,
                                        std::span<NodeScore> scores) const {
  default_normalize_score(kMaxNodeScore, true, scores);
  return {};
}

std::vector<ClusterEventWithHint> TaintToleration::events_to_register() const {
  auto hint = [](const PodInfo& pod, const ClusterEvent& e) {
    if (e.node == nullptr) return true;
    return find_untolerated_taint(e.node->taints, pod.tolerations, blocks_scheduling) == nullptr;
  };
  return {on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeTaint, hint)};
}

}  // namespace skiff::scheduler::plugins
