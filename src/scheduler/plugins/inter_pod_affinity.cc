#include "scheduler/plugins/inter_pod_affinity.h"

#include <algorithm>
#include <limits>

namespace skiff::scheduler::plugins {
namespace {

const std::vector<std::string> kAffinityReasons{std::string(InterPodAffinity::kReasonAffinity)};
const std::vector<std::string> kAntiAffinityReasons{
    std::string(InterPodAffinity::kReasonAntiAffinity)};
const std::vector<std::string> kExistingAntiAffinityReasons{
    std::string(InterPodAffinity::kReasonExistingAntiAffinity)};

const StateKey kPreFilterKey{"PreFilterInterPodAffinity"};
const StateKey kPreScoreKey{"PreScoreInterPodAffinity"};

struct PreFilterState : StateData {
  // Existing pods' anti-affinity terms matching the incoming pod.
  CountsOverlay existing_anti_affinity;
  // Existing pods matching all of the incoming pod's affinity terms (null without such terms).
  CountsOverlay affinity;
  // Existing pods matching each of the incoming pod's anti-affinity terms (null without).
  CountsOverlay anti_affinity;
  // Topology keys with existing anti-affinity against the incoming pod.
  std::vector<LabelKey> existing_anti_affinity_keys;
  // The incoming pod matches all of its own affinity terms.
  bool self_match = false;
  // The cycle's namespace labels (the snapshot), for the extensions' term matching.
  const NamespaceLabels* namespaces = nullptr;
};

struct PreScoreState : StateData {
  std::shared_ptr<TopologyCountsMemo> scores;
  std::vector<LabelKey> keys;  // distinct topology keys with a non-zero score
};

std::string terms_key(const std::vector<AffinityTerm>& terms) {
  std::string out;
  for (const AffinityTerm& t : terms) {
    out += t.fingerprint();
    out += '\x02';
  }
  return out;
}

std::string weighted_terms_key(const std::vector<WeightedAffinityTerm>& terms) {
  std::string out;
  for (const WeightedAffinityTerm& t : terms) {
    out += std::to_string(t.weight);
    out += ':';
    out += t.term.fingerprint();
    out += '\x02';
  }
  return out;
}

// How the incoming pod looks to other pods' terms.
std::string identity_key(const PodInfo& pod) {
  return pod.namespace_name.str() + '\x01' + pod.labels.fingerprint();
}

bool matches_all_terms(const std::vector<AffinityTerm>& terms, const PodInfo& pod,
                       const NamespaceLabels* ns) {
  if (terms.empty()) return false;
  for (const AffinityTerm& t : terms) {
    if (!t.matches(pod, ns)) return false;
  }
  return true;
}

// For queueing hints, which have no namespace labels: a term with a namespace selector may match.
bool may_match(const AffinityTerm& term, const PodInfo& pod) {
  if (term.namespace_selector && !term.namespace_selector->empty() &&
      !term.namespace_selector->matches_nothing()) {
    return term.selector.matches(pod.labels);
  }
  return term.matches(pod, nullptr);
}

bool has_pod_parse_errors(const PodInfo& pod) {
  for (const std::string& e : pod.parse_errors) {
    if (e.rfind("podAffinity", 0) == 0 || e.rfind("podAntiAffinity", 0) == 0) return true;
  }
  return false;
}

void emit_term(TopologyCountsMemo::Emitter& emit, const AffinityTerm& term, int64_t weight,
               const PodInfo& pod_to_check, const NamespaceLabels* ns, const Labels& node_labels) {
  if (weight == 0) return;
  if (!term.matches(pod_to_check, ns)) return;
  if (const HString* value = node_labels.find(term.topology_key)) {
    emit(term.topology_key, *value, weight);
  }
}

}  // namespace

Result<std::unique_ptr<Plugin>> InterPodAffinity::create(const nlohmann::json& args) {
  auto p = std::make_unique<InterPodAffinity>();
  if (args.is_object()) {
    if (args.contains("hardPodAffinityWeight")) {
      const nlohmann::json& w = args["hardPodAffinityWeight"];
      if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > 100) {
        return Status(StatusCode::kInvalidArgument,
                      "hardPodAffinityWeight: Invalid value: not in valid range [0-100]");
      }
      p->hard_pod_affinity_weight_ = w.get<int32_t>();
    }
    p->ignore_preferred_terms_of_existing_pods_ =
        args.value("ignorePreferredTermsOfExistingPods", false);
  }
  return std::unique_ptr<Plugin>(std::move(p));
}

PluginStatus InterPodAffinity::pre_filter(CycleState& state, const PodInfo& pod,
                                          const NodeLister& nodes, PreFilterResult&) const {
  if (has_pod_parse_errors(pod)) {
    return {Code::kUnschedulableAndUnresolvable, "parsing pod: " + pod.parse_errors.front()};
  }
  auto s = std::make_unique<PreFilterState>();
  s->namespaces = &nodes;
  s->existing_anti_affinity = CountsOverlay(memos_.get("EA" + identity_key(pod)));
  s->existing_anti_affinity.memo().sync(
      nodes,
      [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
        const Labels& labels = info.node()->labels;
        for (const PodRef& existing : info.pods_with_required_anti_affinity()) {
          for (const AffinityTerm& term : existing->required_anti_affinity) {
            emit_term(emit, term, 1, pod, &nodes, labels);
          }
        }
      },
      &nodes.have_pods_with_required_anti_affinity());
  if (!pod.required_affinity.empty()) {
    s->affinity = CountsOverlay(memos_.get("A" + terms_key(pod.required_affinity)));
    s->affinity.memo().sync(nodes, [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
      const Labels& labels = info.node()->labels;
      for (const PodRef& existing : info.pods()) {
        if (!matches_all_terms(pod.required_affinity, *existing, &nodes)) continue;
        for (const AffinityTerm& term : pod.required_affinity) {
          if (const HString* value = labels.find(term.topology_key))
            emit(term.topology_key, *value, 1);
        }
      }
    });
  }
  if (!pod.required_anti_affinity.empty()) {
    s->anti_affinity = CountsOverlay(memos_.get("AA" + terms_key(pod.required_anti_affinity)));
    s->anti_affinity.memo().sync(nodes,
                                 [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
                                   const Labels& labels = info.node()->labels;
                                   for (const PodRef& existing : info.pods()) {
                                     for (const AffinityTerm& term : pod.required_anti_affinity) {
                                       emit_term(emit, term, 1, *existing, &nodes, labels);
                                     }
                                   }
                                 });
  }
  if (s->existing_anti_affinity.nonzero_pairs() == 0 && pod.required_affinity.empty() &&
      pod.required_anti_affinity.empty()) {
    return PluginStatus::skip();
  }
  s->self_match = matches_all_terms(pod.required_affinity, pod, &nodes);
  s->existing_anti_affinity_keys = s->existing_anti_affinity.memo().nonzero_keys();
  state.write(kPreFilterKey, std::move(s));
  return {};
}

PluginStatus InterPodAffinity::filter(const CycleState& state, const PodInfo& pod,
                                      const NodeInfo& node_info) const {
  const auto* s = state.get<PreFilterState>(kPreFilterKey);
  if (s == nullptr) return PluginStatus::error("InterPodAffinity: PreFilter state missing");
  const Labels& labels = node_info.node()->labels;

  // The pod's required affinity.
  if (!pod.required_affinity.empty()) {
    bool pods_exist = true;
    for (const AffinityTerm& term : pod.required_affinity) {
      const HString* value = labels.find(term.topology_key);
      // Every topology key must exist on the node.
      if (value == nullptr) {
        return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kAffinityReasons);
      }
      if (s->affinity.count(term.topology_key, *value) <= 0) pods_exist = false;
    }
    // With no matching pod anywhere, a pod that matches its own terms may go first (the first
    // pod of a group with affinity to itself).
    if (!pods_exist && !(s->affinity.nonzero_pairs() == 0 && s->self_match)) {
      return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kAffinityReasons);
    }
  }

  // The pod's required anti-affinity.
  if (s->anti_affinity && s->anti_affinity.nonzero_pairs() > 0) {
    for (const AffinityTerm& term : pod.required_anti_affinity) {
      const HString* value = labels.find(term.topology_key);
      if (value != nullptr && s->anti_affinity.count(term.topology_key, *value) > 0) {
        return PluginStatus::fixed(Code::kUnschedulable, kAntiAffinityReasons);
      }
    }
  }

  // Existing pods' anti-affinity.
  for (const LabelKey& key : s->existing_anti_affinity_keys) {
    if (const HString* value = labels.find(key)) {
      if (s->existing_anti_affinity.count(key, *value) > 0) {
        return PluginStatus::fixed(Code::kUnschedulable, kExistingAntiAffinityReasons);
      }
    }
  }
  return {};
}

// Upstream's updateWithPod: the counts PreFilter took, with `other` on `node` (sign +1) or
// taken off it (sign -1).
PluginStatus InterPodAffinity::update_with_pod(CycleState& state, const PodInfo& pod,
                                               const PodInfo& other, const NodeInfo& node,
                                               int64_t sign) const {
  const auto* current = state.get<PreFilterState>(kPreFilterKey);
  if (current == nullptr) return PluginStatus::error("PreFilter state missing");
  if (node.node() == nullptr) return {};
  auto s = std::make_shared<PreFilterState>(*current);
  const Labels& labels = node.node()->labels;
  const NamespaceLabels* ns = s->namespaces;
  for (const AffinityTerm& term : other.required_anti_affinity) {
    const HString* value = labels.find(term.topology_key);
    if (value == nullptr || !term.matches(pod, ns)) continue;
    s->existing_anti_affinity.change(term.topology_key, *value, sign);
    if (std::find(s->existing_anti_affinity_keys.begin(), s->existing_anti_affinity_keys.end(),
                  term.topology_key) == s->existing_anti_affinity_keys.end()) {
      s->existing_anti_affinity_keys.push_back(term.topology_key);
    }
  }
  if (s->affinity && matches_all_terms(pod.required_affinity, other, ns)) {
    for (const AffinityTerm& term : pod.required_affinity) {
      if (const HString* value = labels.find(term.topology_key)) {
        s->affinity.change(term.topology_key, *value, sign);
      }
    }
  }
  if (s->anti_affinity) {
    for (const AffinityTerm& term : pod.required_anti_affinity) {
      const HString* value = labels.find(term.topology_key);
      if (value != nullptr && term.matches(other, ns)) {
        s->anti_affinity.change(term.topology_key, *value, sign);
      }
    }
  }
  state.write(kPreFilterKey, std::move(s));
  return {};
}

PluginStatus InterPodAffinity::add_pod(CycleState& state, const PodInfo& pod, const PodInfo& added,
                                       const NodeInfo& node) const {
  return update_with_pod(state, pod, added, node, +1);
}

PluginStatus InterPodAffinity::remove_pod(CycleState& state, const PodInfo& pod,
                                          const PodInfo& removed, const NodeInfo& node) const {
  return update_with_pod(state, pod, removed, node, -1);
}

PluginStatus InterPodAffinity::pre_score(CycleState& state, const PodInfo& pod,
                                         std::span<const NodeInfo* const> feasible,
                                         const NodeLister& nodes) const {
  if (feasible.empty()) return PluginStatus::skip();
  const bool has_constraints =
      !pod.preferred_affinity.empty() || !pod.preferred_anti_affinity.empty();
  if (ignore_preferred_terms_of_existing_pods_ && !has_constraints) return PluginStatus::skip();
  if (has_pod_parse_errors(pod)) {
    return PluginStatus::error("parsing pod: " + pod.parse_errors.front());
  }
  auto s = std::make_unique<PreScoreState>();
  std::string key = "S" + std::to_string(hard_pod_affinity_weight_) + '\x01' +
                    weighted_terms_key(pod.preferred_affinity) + '\x01' +
                    weighted_terms_key(pod.preferred_anti_affinity) + '\x01' + identity_key(pod);
  s->scores = memos_.get(key);
  const int64_t hard_weight = hard_pod_affinity_weight_;
  // Without preferred terms of its own, only pods with affinity can score.
  s->scores->sync(
      nodes,
      [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
        const Labels& labels = info.node()->labels;
        if (labels.empty()) return;
        const std::vector<PodRef>& pods = has_constraints ? info.pods() : info.pods_with_affinity();
        for (const PodRef& existing : pods) {
          // The incoming pod's preferred terms against the existing pod.
          for (const WeightedAffinityTerm& t : pod.preferred_affinity) {
            emit_term(emit, t.term, t.weight, *existing, &nodes, labels);
          }
          for (const WeightedAffinityTerm& t : pod.preferred_anti_affinity) {
            emit_term(emit, t.term, -int64_t{t.weight}, *existing, &nodes, labels);
          }
          // The existing pod's terms against the incoming pod.
          if (hard_weight > 0) {
            for (const AffinityTerm& t : existing->required_affinity) {
              emit_term(emit, t, hard_weight, pod, &nodes, labels);
            }
          }
          for (const WeightedAffinityTerm& t : existing->preferred_affinity) {
            emit_term(emit, t.term, t.weight, pod, &nodes, labels);
          }
          for (const WeightedAffinityTerm& t : existing->preferred_anti_affinity) {
            emit_term(emit, t.term, -int64_t{t.weight}, pod, &nodes, labels);
          }
        }
      },
      has_constraints ? nullptr : &nodes.have_pods_with_affinity());
  if (s->scores->nonzero_pairs() == 0) return PluginStatus::skip();
  s->keys = s->scores->nonzero_keys();
  state.write(kPreScoreKey, std::move(s));
  return {};
}

PluginStatus InterPodAffinity::score(const CycleState& state, const PodInfo&, const NodeInfo& node,
                                     int64_t& score) const {
  const auto* s = state.get<PreScoreState>(kPreScoreKey);
  if (s == nullptr) return PluginStatus::error("InterPodAffinity: PreScore state missing");
  const Labels& labels = node.node()->labels;
  int64_t sum = 0;
  for (const LabelKey& key : s->keys) {
    const HString* value = labels.find(key);
    if (value != nullptr) sum += s->scores->count(key, *value);
  }
  score = sum;
  return {};
}

PluginStatus InterPodAffinity::normalize(const CycleState& state, const PodInfo&,
                                         std::span<NodeScore> scores) const {
  const auto* s = state.get<PreScoreState>(kPreScoreKey);
  if (s == nullptr || s->scores->nonzero_pairs() == 0) return {};
  int64_t min_count = std::numeric_limits<int64_t>::max();
  int64_t max_count = std::numeric_limits<int64_t>::min();
  for (const NodeScore& ns : scores) {
    min_count = std::min(min_count, ns.score);
    max_count = std::max(max_count, ns.score);
  }
  const int64_t diff = max_count - min_count;
  for (NodeScore& ns : scores) {
    double f = 0;
    if (diff > 0) {
      f = static_cast<double>(kMaxNodeScore) *
          (static_cast<double>(ns.score - min_count) / static_cast<double>(diff));
    }
    ns.score = static_cast<int64_t>(f);
  }
  return {};
}

std::vector<ClusterEventWithHint> InterPodAffinity::events_to_register() const {
  // A pod appearing (or relabelled) helps a pod waiting for an affinity match; a pod leaving
  // helps a pod blocked by anti-affinity in either direction.
  auto pod_hint = [](const PodInfo& pending, const ClusterEvent& e) {
    if (e.pod == nullptr) return true;
    const PodInfo& other = *e.pod;
    if (e.actions & action::kDelete) {
      for (const AffinityTerm& t : pending.required_anti_affinity) {
        if (may_match(t, other)) return true;
      }
      for (const AffinityTerm& t : other.required_anti_affinity) {
        if (may_match(t, pending)) return true;
      }
      return false;
    }
    for (const AffinityTerm& t : pending.required_affinity) {
      if (may_match(t, other)) return true;
    }
    return false;
  };
  return {on_event(EventResource::kAssignedPod,
                   action::kAdd | action::kUpdatePodLabel | action::kDelete, pod_hint),
          on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeLabel, nullptr)};
}

}  // namespace skiff::scheduler::plugins
