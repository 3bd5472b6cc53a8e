#include "scheduler/plugins/pod_topology_spread.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_set>

#include "scheduler/plugins/topology.h"

namespace skiff::scheduler::plugins {

// One constraint as a cycle applies it.
struct PodTopologySpread::Constraint {
  const TopologySpreadConstraint* spec = nullptr;
  const Selector* selector = nullptr;  // nullptr: pods of the same controller owner
  bool is_hostname = false;

  // Whether `existing` counts towards this constraint for `pod`.
  bool counts(const PodInfo& existing, const PodInfo& pod) const {
    if (existing.terminating || existing.namespace_name != pod.namespace_name) return false;
    if (selector == nullptr) {
      return existing.controller_uid_hash == pod.controller_uid_hash &&
             existing.controller_uid == pod.controller_uid;
    }
    return selector->matches(existing.labels);
  }
  bool self_match(const PodInfo& pod) const {
    return selector == nullptr || selector->matches(pod.labels);
  }
};

namespace {

using Constraint = PodTopologySpread::Constraint;

const std::vector<std::string> kSkewReasons{
    std::string(PodTopologySpread::kReasonConstraintsNotMatch)};
const std::vector<std::string> kLabelReasons{
    std::string(PodTopologySpread::kReasonNodeLabelNotMatch)};

const StateKey kPreFilterKey{"PreFilterPodTopologySpread"};
const StateKey kPreScoreKey{"PreScorePodTopologySpread"};
const LabelKey& hostname_key() {
  static const LabelKey key(kLabelHostname);
  return key;
}
const HString kEmptyValue;

struct PreFilterState : StateData {
  PreFilterState() = default;
  // A copy's constraints must point at its own default selector.
  PreFilterState(const PreFilterState& o)
      : StateData(o),
        constraints(o.constraints),
        default_selector(o.default_selector),
        counts(o.counts),
        min_match(o.min_match),
        domains(o.domains),
        self_match(o.self_match) {
    for (Constraint& c : constraints) {
      if (o.default_selector && c.selector == &*o.default_selector) c.selector = &*default_selector;
    }
  }
  PreFilterState& operator=(const PreFilterState&) = delete;

  std::vector<Constraint> constraints;
  std::optional<Selector> default_selector;
  std::vector<CountsOverlay> counts;  // per constraint
  std::vector<int64_t> min_match;     // per constraint: the global minimum
  std::vector<size_t> domains;        // per constraint
  std::vector<int64_t> self_match;    // per constraint: 1 if the pod counts towards it
};

struct PreScoreState : StateData {
  std::vector<Constraint> constraints;
  std::optional<Selector> default_selector;
  std::unordered_set<const NodeInfo*> ignored;
  std::vector<std::shared_ptr<TopologyCountsMemo>> counts;  // per non-hostname constraint
  std::vector<double> weights;
};

bool has_all_keys(const Labels& labels, const std::vector<Constraint>& constraints) {
  for (const Constraint& c : constraints) {
    if (!labels.contains(c.spec->topology_key)) return false;
  }
  return true;
}

bool blocks_scheduling(const Taint& t) {
  return t.effect == TaintEffect::kNoSchedule || t.effect == TaintEffect::kNoExecute;
}

// nodeAffinityPolicy / nodeTaintsPolicy.
bool node_included(const Constraint& c, const PodInfo& pod, const Node& node, bool affinity_ok) {
  if (c.spec->honor_node_affinity && !affinity_ok) return false;
  if (c.spec->honor_node_taints &&
      find_untolerated_taint(node.taints, pod.tolerations, blocks_scheduling) != nullptr) {
    return false;
  }
  return true;
}

int64_t count_matching(const NodeInfo& node, const Constraint& c, const PodInfo& pod) {
  int64_t n = 0;
  for (const PodRef& p : node.pods()) {
    if (c.counts(*p, pod)) ++n;
  }
  return n;
}

// What a memo of domain counts depends on besides the cluster: the namespace, which pods count,
// the topology key, the node eligibility rules and the keys every node must carry.
std::string memo_key(char mode, const PodInfo& pod, const Constraint& c,
                     const std::vector<Constraint>& all, bool require_all_keys) {
  std::string key(1, mode);
  key += pod.namespace_name.str();
  key += '\x01';
  key += c.selector ? c.selector->fingerprint() : "owner:" + pod.controller_uid;
  key += '\x01';
  key += c.spec->topology_key.str();
  key += '\x01';
  if (c.spec->honor_node_affinity) key += pod.node_constraints_fingerprint;
  key += '\x01';
  if (c.spec->honor_node_taints) key += pod.tolerations_fingerprint;
  key += '\x01';
  if (require_all_keys) {
    for (const Constraint& other : all) {
      key += other.spec->topology_key.str();
      key += ',';
    }
  }
  return key;
}

bool has_spread_parse_errors(const PodInfo& pod) {
  for (const std::string& e : pod.parse_errors) {
    if (e.rfind("topologySpreadConstraints", 0) == 0) return true;
  }
  return false;
}

Result<std::vector<TopologySpreadConstraint>> parse_default_constraints(
    const nlohmann::json& list) {
  std::vector<TopologySpreadConstraint> out;
  if (!list.is_array())
    return Status(StatusCode::kInvalidArgument, "defaultConstraints must be a list");
  for (const nlohmann::json& c : list) {
    if (!c.is_object())
      return Status(StatusCode::kInvalidArgument, "defaultConstraints[] must be objects");
    if (c.contains("labelSelector")) {
      return Status(StatusCode::kInvalidArgument,
                    "defaultConstraints[].labelSelector: Forbidden: constraint must not define a "
                    "selector, as they deduced for each pod");
    }
    TopologySpreadConstraint t;
    t.max_skew = c.value("maxSkew", 0);
    if (t.max_skew <= 0) {
      return Status(StatusCode::kInvalidArgument,
                    "defaultConstraints[].maxSkew: Invalid value: must be greater than zero");
    }
    std::string key = c.value("topologyKey", std::string());
    if (key.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "defaultConstraints[].topologyKey: Required value: can not be empty");
    }
    t.topology_key = LabelKey(key);
    std::string when = c.value("whenUnsatisfiable", std::string());
    if (when == "DoNotSchedule") {
      t.when_unsatisfiable = UnsatisfiableAction::kDoNotSchedule;
    } else if (when == "ScheduleAnyway") {
      t.when_unsatisfiable = UnsatisfiableAction::kScheduleAnyway;
    } else {
      return Status(StatusCode::kInvalidArgument,
                    "defaultConstraints[].whenUnsatisfiable: Unsupported value: \"" + when + "\"");
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<Plugin>> PodTopologySpread::create(const nlohmann::json& args,
                                                          DefaultSelectorFn default_selector) {
  auto p = std::make_unique<PodTopologySpread>();
  p->default_selector_ = std::move(default_selector);
  std::string defaulting = "System";
  nlohmann::json constraints;
  if (args.is_object()) {
    defaulting = args.value("defaultingType", std::string("System"));
    if (args.contains("defaultConstraints")) constraints = args["defaultConstraints"];
  }
  if (defaulting == "System") {
    if (constraints.is_array() && !constraints.empty()) {
      return Status(StatusCode::kInvalidArgument,
                    "defaultConstraints: Invalid value: when .defaultingType is \"System\", "
                    ".defaultConstraints must be empty");
    }
    TopologySpreadConstraint host;
    host.max_skew = 3;
    host.topology_key = hostname_key();
    host.when_unsatisfiable = UnsatisfiableAction::kScheduleAnyway;
    TopologySpreadConstraint zone;
    zone.max_skew = 5;
    zone.topology_key = LabelKey(kLabelZone);
    zone.when_unsatisfiable = UnsatisfiableAction::kScheduleAnyway;
    p->default_constraints_ = {host, zone};
    p->system_defaulted_ = true;
  } else if (defaulting == "List") {
    if (!constraints.is_null()) {
      SKIFF_ASSIGN_OR_RETURN(p->default_constraints_, parse_default_constraints(constraints));
    }
    p->system_defaulted_ = false;
  } else {
    return Status(StatusCode::kInvalidArgument,
                  "defaultingType: Unsupported value: \"" + defaulting + "\"");
  }
  return std::unique_ptr<Plugin>(std::move(p));
}

void PodTopologySpread::constraints_for(const PodInfo& pod, UnsatisfiableAction action,
                                        std::vector<Constraint>& out,
                                        std::optional<Selector>& storage) const {
  out.clear();
  if (!pod.spread_constraints.empty()) {
    for (const TopologySpreadConstraint& c : pod.spread_constraints) {
      if (c.when_unsatisfiable != action) continue;
      out.push_back({&c, &c.selector, c.topology_key == hostname_key()});
    }
    return;
  }
  bool any = false;
  for (const TopologySpreadConstraint& c : default_constraints_) {
    any |= c.when_unsatisfiable == action;
  }
  if (!any) return;
  const Selector* selector = nullptr;
  if (default_selector_) {
    storage = default_selector_(pod);
    if (!storage || storage->empty()) return;
    selector = &*storage;
  } else if (pod.controller_uid.empty()) {
    return;
  }
  for (const TopologySpreadConstraint& c : default_constraints_) {
    if (c.when_unsatisfiable != action) continue;
    out.push_back({&c, selector, c.topology_key == hostname_key()});
  }
}

PluginStatus PodTopologySpread::pre_filter(CycleState& state, const PodInfo& pod,
                                           const NodeLister& nodes, PreFilterResult&) const {
  if (has_spread_parse_errors(pod)) {
    return PluginStatus::error("get constraints from pod: " + pod.parse_errors.front());
  }
  auto s = std::make_unique<PreFilterState>();
  constraints_for(pod, UnsatisfiableAction::kDoNotSchedule, s->constraints, s->default_selector);
  if (s->constraints.empty()) return PluginStatus::skip();
  const std::vector<Constraint>& constraints = s->constraints;
  for (const Constraint& c : constraints) {
    std::shared_ptr<TopologyCountsMemo> memo = memos_.get(memo_key('F', pod, c, constraints, true));
    // A node's share: its matching pods, in its domain, if it is eligible.
    memo->sync(nodes, [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
      const Node& node = *info.node();
      if (!has_all_keys(node.labels, constraints)) return;
      const bool affinity_ok = !c.spec->honor_node_affinity ||
                               pod.matches_node_selector_and_affinity(node.labels, node.name);
      if (!node_included(c, pod, node, affinity_ok)) return;
      emit(c.spec->topology_key, *node.labels.find(c.spec->topology_key),
           count_matching(info, c, pod));
    });
    s->min_match.push_back(memo->min_count(c.spec->topology_key));
    s->domains.push_back(memo->domains(c.spec->topology_key));
    s->self_match.push_back(c.self_match(pod) ? 1 : 0);
    s->counts.emplace_back(std::move(memo));
  }
  state.write(kPreFilterKey, std::move(s));
  return {};
}

// Upstream's updateWithPod: the counts PreFilter took, with `other` on `node` (sign +1) or taken
// off it (sign -1).
PluginStatus PodTopologySpread::update_with_pod(CycleState& state, const PodInfo& pod,
                                                const PodInfo& other, const NodeInfo& info,
                                                int64_t sign) const {
  const auto* current = state.get<PreFilterState>(kPreFilterKey);
  if (current == nullptr) return PluginStatus::error("PreFilter state missing");
  if (info.node() == nullptr) return {};
  const Node& node = *info.node();
  if (!has_all_keys(node.labels, current->constraints)) return {};
  auto s = std::make_shared<PreFilterState>(*current);
  bool changed = false;
  for (size_t i = 0; i < s->constraints.size(); ++i) {
    const Constraint& c = s->constraints[i];
    if (!c.counts(other, pod)) continue;
    const bool affinity_ok = !c.spec->honor_node_affinity ||
                             pod.matches_node_selector_and_affinity(node.labels, node.name);
    if (!node_included(c, pod, node, affinity_ok)) continue;
    s->counts[i].change(c.spec->topology_key, *node.labels.find(c.spec->topology_key), sign);
    s->min_match[i] = s->counts[i].min_count(c.spec->topology_key);
    changed = true;
  }
  if (changed) state.write(kPreFilterKey, std::move(s));
  return {};
}

PluginStatus PodTopologySpread::add_pod(CycleState& state, const PodInfo& pod, const PodInfo& added,
                                        const NodeInfo& node) const {
  return update_with_pod(state, pod, added, node, +1);
}

PluginStatus PodTopologySpread::remove_pod(CycleState& state, const PodInfo& pod,
                                           const PodInfo& removed, const NodeInfo& node) const {
  return update_with_pod(state, pod, removed, node, -1);
}

PluginStatus PodTopologySpread::filter(const CycleState& state, const PodInfo&,
                                       const NodeInfo& info) const {
  const auto* s = state.get<PreFilterState>(kPreFilterKey);
  if (s == nullptr) return PluginStatus::error("PodTopologySpread: PreFilter state missing");
  const Labels& labels = info.node()->labels;
  for (size_t i = 0; i < s->constraints.size(); ++i) {
    const Constraint& c = s->constraints[i];
    const HString* value = labels.find(c.spec->topology_key);
    if (value == nullptr) {
      return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kLabelReasons);
    }
    int64_t min_match = s->min_match[i];
    if (static_cast<int64_t>(s->domains[i]) < c.spec->min_domains) min_match = 0;
    const int64_t skew =
        s->counts[i].count(c.spec->topology_key, *value) + s->self_match[i] - min_match;
    if (skew > c.spec->max_skew) {
      return PluginStatus::fixed(Code::kUnschedulable, kSkewReasons);
    }
  }
  return {};
}

PluginStatus PodTopologySpread::pre_score(CycleState& state, const PodInfo& pod,
                                          std::span<const NodeInfo* const> feasible,
                                          const NodeLister& nodes) const {
  if (nodes.list().empty()) return PluginStatus::skip();
  if (has_spread_parse_errors(pod)) {
    return PluginStatus::error("get constraints from pod: " + pod.parse_errors.front());
  }
  auto s = std::make_unique<PreScoreState>();
  constraints_for(pod, UnsatisfiableAction::kScheduleAnyway, s->constraints, s->default_selector);
  if (s->constraints.empty()) return PluginStatus::skip();
  const std::vector<Constraint>& constraints = s->constraints;
  // Only non-default constraints require nodes to carry every key (so nodes without a zone label
  // still get hostname spreading by default).
  const bool require_all = !pod.spread_constraints.empty() || !system_defaulted_;
  const size_t n = constraints.size();
  for (const NodeInfo* info : feasible) {
    if (require_all && !has_all_keys(info->node()->labels, constraints)) s->ignored.insert(info);
  }
  s->weights.resize(n);
  s->counts.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Constraint& c = constraints[i];
    size_t size = 0;
    if (c.is_hostname) {
      size = feasible.size() - s->ignored.size();
    } else {
      // Domains among the candidates weigh the constraint. Usually a handful (zones): a short
      // list beats a hash set until it grows.
      std::vector<const HString*> few;
      std::unordered_set<ValueRef, ValueRefHash> many;
      for (const NodeInfo* info : feasible) {
        if (s->ignored.count(info) != 0) continue;
        const HString* value = info->node()->labels.find(c.spec->topology_key);
        if (value == nullptr) value = &kEmptyValue;
        if (!many.empty()) {
          many.insert(ValueRef{value});
          continue;
        }
        if (std::find_if(few.begin(), few.end(),
                         [value](const HString* v) { return *v == *value; }) != few.end()) {
          continue;
        }
        few.push_back(value);
        if (few.size() > 32) {
          for (const HString* v : few) many.insert(ValueRef{v});
        }
      }
      size = many.empty() ? few.size() : many.size();
      std::shared_ptr<TopologyCountsMemo> memo =
          memos_.get(memo_key('S', pod, c, constraints, require_all));
      memo->sync(nodes, [&](const NodeInfo& info, TopologyCountsMemo::Emitter& emit) {
        const Node& node = *info.node();
        if (require_all && !has_all_keys(node.labels, constraints)) return;
        const bool affinity_ok = !c.spec->honor_node_affinity ||
                                 pod.matches_node_selector_and_affinity(node.labels, node.name);
        if (!node_included(c, pod, node, affinity_ok)) return;
        const HString* value = node.labels.find(c.spec->topology_key);
        emit(c.spec->topology_key, value ? *value : kEmptyValue, count_matching(info, c, pod));
      });
      s->counts[i] = std::move(memo);
    }
    s->weights[i] = std::log(static_cast<double>(size + 2));
  }
  state.write(kPreScoreKey, std::move(s));
  return {};
}

PluginStatus PodTopologySpread::score(const CycleState& state, const PodInfo& pod,
                                      const NodeInfo& info, int64_t& score) const {
  const auto* s = state.get<PreScoreState>(kPreScoreKey);
  if (s == nullptr) return PluginStatus::error("PodTopologySpread: PreScore state missing");
  score = 0;
  if (s->ignored.count(&info) != 0) return {};
  const Labels& labels = info.node()->labels;
  double total = 0;
  for (size_t i = 0; i < s->constraints.size(); ++i) {
    const Constraint& c = s->constraints[i];
    const HString* value = labels.find(c.spec->topology_key);
    if (value == nullptr) continue;
    int64_t cnt = c.is_hostname ? count_matching(info, c, pod)
                                : s->counts[i]->count(c.spec->topology_key, *value);
    total += static_cast<double>(cnt) * s->weights[i] + static_cast<double>(c.spec->max_skew - 1);
  }
  score = std::llround(total);
  return {};
}

PluginStatus PodTopologySpread::normalize(const CycleState& state, const PodInfo&,
                                          std::span<NodeScore> scores) const {
  const auto* s = state.get<PreScoreState>(kPreScoreKey);
  if (s == nullptr) return {};
  int64_t min_score = std::numeric_limits<int64_t>::max();
  int64_t max_score = 0;
  for (const NodeScore& ns : scores) {
    if (s->ignored.count(ns.node) != 0) continue;
    min_score = std::min(min_score, ns.score);
    max_score = std::max(max_score, ns.score);
  }
  for (NodeScore& ns : scores) {
    if (s->ignored.count(ns.node) != 0) {
      ns.score = 0;
      continue;
    }
    if (max_score == 0) {
      ns.score = kMaxNodeScore;
      continue;
    }
    ns.score = kMaxNodeScore * (max_score + min_score - ns.score) / max_score;
  }
  return {};
}

std::vector<ClusterEventWithHint> PodTopologySpread::events_to_register() const {
  const PodTopologySpread* self = this;
  auto pod_hint = [self](const PodInfo& pending, const ClusterEvent& e) {
    if (e.pod == nullptr) return true;
    std::vector<Constraint> constraints;
    std::optional<Selector> storage;
    self->constraints_for(pending, UnsatisfiableAction::kDoNotSchedule, constraints, storage);
    for (const Constraint& c : constraints) {
      if (c.counts(*e.pod, pending)) return true;
    }
    return false;
  };
  return {
      on_event(EventResource::kAssignedPod,
               action::kAdd | action::kDelete | action::kUpdatePodLabel, pod_hint),
      on_event(EventResource::kNode,
               action::kAdd | action::kDelete | action::kUpdateNodeLabel | action::kUpdateNodeTaint,
               nullptr)};
}

}  // namespace skiff::scheduler::plugins
