#include "scheduler/plugins/node_affinity.h"

#include <algorithm>

namespace skiff::scheduler::plugins {
namespace {

const std::vector<std::string> kPodReasons{std::string(NodeAffinity::kReasonPod)};
const std::vector<std::string> kEnforcedReasons{std::string(NodeAffinity::kReasonEnforced)};

int64_t preferred_score(const std::vector<PreferredSchedulingTerm>& terms, const Node& node) {
  int64_t sum = 0;
  for (const PreferredSchedulingTerm& t : terms) {
    if (t.weight == 0) continue;
    if (t.term.matches(node.labels, node.name)) sum += t.weight;
  }
  return sum;
}

}  // namespace

Result<std::unique_ptr<Plugin>> NodeAffinity::create(const nlohmann::json& args) {
  auto p = std::make_unique<NodeAffinity>();
  if (args.is_object()) {
    auto added = args.find("addedAffinity");
    if (added != args.end() && added->is_object()) {
      auto req = added->find("requiredDuringSchedulingIgnoredDuringExecution");
      if (req != added->end() && !req->is_null()) {
        p->added_required_ = NodeSelector::from_json(*req);
        for (const NodeSelectorTerm& t : p->added_required_->terms()) {
          if (!t.valid()) {
            return Status(StatusCode::kInvalidArgument, "addedAffinity: " + t.error());
          }
        }
      }
      auto pref = added->find("preferredDuringSchedulingIgnoredDuringExecution");
      if (pref != added->end() && pref->is_array()) {
        for (const nlohmann::json& t : *pref) {
          PreferredSchedulingTerm term;
          term.weight = t.value("weight", 0);
          term.term = NodeSelectorTerm::from_json(t.value("preference", nlohmann::json()));
          if (!term.term.valid()) {
            return Status(StatusCode::kInvalidArgument, "addedAffinity: " + term.term.error());
          }
          p->added_preferred_.push_back(std::move(term));
        }
      }
    }
  }
  return std::unique_ptr<Plugin>(std::move(p));
}

PluginStatus NodeAffinity::pre_filter(CycleState&, const PodInfo& pod, const NodeLister&,
                                      PreFilterResult& result) const {
  if (!added_required_ && !pod.has_required_node_constraints()) return PluginStatus::skip();
  if (!pod.required_node_affinity) return {};
  std::optional<std::vector<std::string>> names;
  for (const NodeSelectorTerm& term : pod.required_node_affinity->terms()) {
    std::optional<std::vector<std::string>> term_names = term.node_names();
    // A term without a name restriction may match any node: the terms are ORed.
    if (!term_names) return {};
    if (!names) {
      names = std::move(term_names);
    } else {
      std::vector<std::string> both;
      std::set_union(names->begin(), names->end(), term_names->begin(), term_names->end(),
                     std::back_inserter(both));
      names = std::move(both);
    }
  }
  if (!names) return {};
  if (names->empty()) return {Code::kUnschedulableAndUnresolvable, std::string(kReasonConflict)};
  result.all_nodes = false;
  result.node_names = std::move(*names);
  return {};
}

PluginStatus NodeAffinity::filter(const CycleState&, const PodInfo& pod,
                                  const NodeInfo& node_info) const {
  const Node& node = *node_info.node();
  if (added_required_ && !added_required_->matches(node.labels, node.name)) {
    return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kEnforcedReasons);
  }
  if (!pod.matches_node_selector_and_affinity(node.labels, node.name)) {
    return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kPodReasons);
  }
  return {};
}

PluginStatus NodeAffinity::pre_score(CycleState&, const PodInfo& pod,
                                     std::span<const NodeInfo* const>, const NodeLister&) const {
  if (pod.preferred_node_affinity.empty() && added_preferred_.empty()) {
    return PluginStatus::skip();
  }
  return {};
}

PluginStatus NodeAffinity::score(const CycleState&, const PodInfo& pod, const NodeInfo& node,
                                 int64_t& score) const {
  score = preferred_score(pod.preferred_node_affinity, *node.node()) +
          preferred_score(added_preferred_, *node.node());
  return {};
}

PluginStatus NodeAffinity::normalize(const CycleState&, const PodInfo&,
                                     std::span<NodeScore> scores) const {
  default_normalize_score(kMaxNodeScore, false, scores);
  return {};
}

std::vector<ClusterEventWithHint> NodeAffinity::events_to_register() const {
  const NodeAffinity* self = this;
  auto hint = [self](const PodInfo& pod, const ClusterEvent& e) {
    if (e.node == nullptr) return true;
    if (self->added_required_ && !self->added_required_->matches(e.node->labels, e.node->name)) {
      return false;
    }
    return pod.matches_node_selector_and_affinity(e.node->labels, e.node->name);
  };
  return {on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeLabel, hint)};
}

}  // namespace skiff::scheduler::plugins
