#include "scheduler/framework.h"

#include <algorithm>

namespace skiff::scheduler {

std::string_view code_name(Code code) {
  switch (code) {
    case Code::kSuccess:
      return "Success";
    case Code::kError:
      return "Error";
    case Code::kUnschedulable:
      return "Unschedulable";
    case Code::kUnschedulableAndUnresolvable:
      return "UnschedulableAndUnresolvable";
    case Code::kWait:
      return "Wait";
    case Code::kSkip:
      return "Skip";
  }
  return "Unknown";
}

std::string PluginStatus::message() const {
  const std::vector<std::string>& r = reasons();
  std::string out;
  for (size_t i = 0; i < r.size(); ++i) {
    if (i > 0) out += ", ";
    out += r[i];
  }
  return out;
}

// ---- CycleState ----

void CycleState::write(const StateKey& key, std::unique_ptr<StateData> data) {
  for (auto& slot : slots_) {
    if (slot.first == &key) {
      slot.second = std::move(data);
      return;
    }
  }
  slots_.emplace_back(&key, std::move(data));
}

StateData* CycleState::read(const StateKey& key) const {
  for (const auto& slot : slots_) {
    if (slot.first == &key) return slot.second.get();
  }
  return nullptr;
}

// ---- PreFilterResult ----

void PreFilterResult::merge(const PreFilterResult& other) {
  if (other.all_nodes) return;
  if (all_nodes) {
    *this = other;
    return;
  }
  std::vector<std::string> both;
  std::set_intersection(node_names.begin(), node_names.end(), other.node_names.begin(),
                        other.node_names.end(), std::back_inserter(both));
  node_names = std::move(both);
}

// ---- Registry ----

Status Registry::add(std::string name, PluginFactory factory) {
  if (factories_.count(name) != 0) {
    return Status(StatusCode::kAlreadyExists, "plugin \"" + name + "\" is already registered");
  }
  factories_.emplace(std::move(name), std::move(factory));
  return Status::ok();
}

const PluginFactory* Registry::find(std::string_view name) const {
  auto it = factories_.find(name);
  return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, f] : factories_) out.push_back(name);
  return out;
}

// ---- Framework ----

Result<std::unique_ptr<Framework>> Framework::create(const Registry& registry,
                                                     const Profile& profile) {
  std::unique_ptr<Framework> fw(new Framework());
  fw->scheduler_name_ = profile.scheduler_name;
  std::set<std::string, std::less<>> seen;
  for (const PluginSpec& spec : profile.plugins) {
    if (!seen.insert(spec.name).second) {
      return Status(StatusCode::kInvalidArgument, "plugin \"" + spec.name +
                                                      "\" is enabled twice in profile \"" +
                                                      profile.scheduler_name + "\"");
    }
    const PluginFactory* factory = registry.find(spec.name);
    if (factory == nullptr) {
      return Status(StatusCode::kInvalidArgument, "plugin \"" + spec.name + "\" does not exist");
    }
    Result<std::unique_ptr<Plugin>> built = (*factory)(spec.args);
    if (!built.is_ok()) {
      return Status(StatusCode::kInvalidArgument,
                    "initializing plugin \"" + spec.name + "\": " + built.status().message());
    }
    Plugin* p = built.value().get();
    if (auto* x = dynamic_cast<PreFilterPlugin*>(p)) fw->pre_filter_.push_back(x);
    if (auto* x = dynamic_cast<FilterPlugin*>(p)) fw->filter_.push_back(x);
    if (auto* x = dynamic_cast<PostFilterPlugin*>(p)) fw->post_filter_.push_back(x);
    if (auto* x = dynamic_cast<PreScorePlugin*>(p)) fw->pre_score_.push_back(x);
    if (auto* x = dynamic_cast<ScorePlugin*>(p)) {
      fw->score_.push_back(x);
      fw->score_weights_.push_back(spec.weight > 0 ? spec.weight : 1);
    }
    if (auto* x = dynamic_cast<ReservePlugin*>(p)) fw->reserve_.push_back(x);
    if (auto* x = dynamic_cast<PermitPlugin*>(p)) fw->permit_.push_back(x);
    if (auto* x = dynamic_cast<PreBindPlugin*>(p)) fw->pre_bind_.push_back(x);
    if (auto* x = dynamic_cast<BindPlugin*>(p)) fw->bind_.push_back(x);
    if (auto* x = dynamic_cast<PostBindPlugin*>(p)) fw->post_bind_.push_back(x);
    if (auto* x = dynamic_cast<EnqueueExtensions*>(p)) fw->enqueue_.push_back(x);
    fw->plugins_.push_back(std::move(built).value());
  }
  if (fw->filter_.size() > 64 || fw->score_.size() > 64) {
    return Status(StatusCode::kInvalidArgument, "more than 64 Filter or Score plugins");
  }
  for (PreFilterPlugin* pf : fw->pre_filter_) {
    int index = -1;
    for (size_t i = 0; i < fw->filter_.size(); ++i) {
      if (static_cast<Plugin*>(fw->filter_[i]) == static_cast<Plugin*>(pf))
        index = static_cast<int>(i);
    }
    fw->pre_filter_to_filter_.push_back(index);
  }
  for (PreScorePlugin* ps : fw->pre_score_) {
    int index = -1;
    for (size_t i = 0; i < fw->score_.size(); ++i) {
      if (static_cast<Plugin*>(fw->score_[i]) == static_cast<Plugin*>(ps))
        index = static_cast<int>(i);
    }
    fw->pre_score_to_score_.push_back(index);
  }
  return fw;
}

const Plugin* Framework::plugin(std::string_view name) const {
  for (const auto& p : plugins_) {
    if (p->name() == name) return p.get();
  }
  return nullptr;
}

PluginStatus Framework::run_pre_filter(CycleState& state, const PodInfo& pod,
                                       const NodeLister& nodes, PreFilterResult& result,
                                       std::set<std::string>& narrowing) const {
  result = PreFilterResult();
  state.skip_filter_ = 0;
  for (size_t i = 0; i < pre_filter_.size(); ++i) {
    PreFilterPlugin* pl = pre_filter_[i];
    PreFilterResult r;
    PluginStatus s = pl->pre_filter(state, pod, nodes, r);
    if (s.is_skip()) {
      if (pre_filter_to_filter_[i] >= 0)
        state.skip_filter_ |= uint64_t{1} << pre_filter_to_filter_[i];
      continue;
    }
    if (!s.is_success()) {
      if (s.is_rejected()) {
        s.set_plugin(pl->name());
        return s;
      }
      PluginStatus err = PluginStatus::error("running PreFilter plugin \"" +
                                             std::string(pl->name()) + "\": " + s.message());
      err.set_plugin(pl->name());
      return err;
    }
    if (!r.all_nodes) narrowing.insert(std::string(pl->name()));
    result.merge(r);
    if (!result.all_nodes && result.node_names.empty()) {
      std::string msg;
      if (narrowing.size() == 1) {
        msg = "node(s) didn't satisfy plugin " + *narrowing.begin();
      } else {
        msg = "node(s) didn't satisfy plugin(s) [";
        bool first = true;
        for (const std::string& n : narrowing) {
          if (!first) msg += " ";
          msg += n;
          first = false;
        }
        msg += "] simultaneously";
      }
      return PluginStatus(Code::kUnschedulableAndUnresolvable, std::move(msg));
    }
  }
  return {};
}

PluginStatus Framework::run_filter(const CycleState& state, const PodInfo& pod,
                                   const NodeInfo& node) const {
  for (size_t i = 0; i < filter_.size(); ++i) {
    if (state.skip_filter(i)) continue;
    PluginStatus s = filter_[i]->filter(state, pod, node);
    if (s.is_success()) continue;
    if (!s.is_rejected()) {
      s = PluginStatus::error("running \"" + std::string(filter_[i]->name()) +
                              "\" filter plugin: " + s.message());
    }
    s.set_plugin(filter_[i]->name());
    return s;
  }
  return {};
}

PluginStatus Framework::run_post_filter(CycleState& state, const PodInfo& pod,
                                        const NodeToStatus& failed_nodes, const NodeLister& nodes,
                                        const FilterFn& filter, std::string& nominated) const {
  PluginStatus last(Code::kUnschedulable, std::vector<std::string>{});
  const PostFilterContext ctx{nodes, filter};
  for (PostFilterPlugin* pl : post_filter_) {
    PluginStatus s = pl->post_filter(state, pod, failed_nodes, ctx, nominated);
    if (s.is_success()) return s;
    if (!s.is_rejected()) {
      s.set_plugin(pl->name());
      return s;
    }
    last = std::move(s);
    last.set_plugin(pl->name());
  }
  return last;
}

PluginStatus Framework::run_pre_score(CycleState& state, const PodInfo& pod,
                                      std::span<const NodeInfo* const> feasible,
                                      const NodeLister& nodes) const {
  state.skip_score_ = 0;
  for (size_t i = 0; i < pre_score_.size(); ++i) {
    PluginStatus s = pre_score_[i]->pre_score(state, pod, feasible, nodes);
    if (s.is_skip()) {
      if (pre_score_to_score_[i] >= 0) state.skip_score_ |= uint64_t{1} << pre_score_to_score_[i];
      continue;
    }
    if (!s.is_success()) {
      PluginStatus err = PluginStatus::error(
          "running PreScore plugin \"" + std::string(pre_score_[i]->name()) + "\": " + s.message());
      err.set_plugin(pre_score_[i]->name());
      return err;
    }
  }
  return {};
}

PluginStatus Framework::run_score(const CycleState& state, const PodInfo& pod,
                                  std::span<const NodeInfo* const> nodes,
                                  std::vector<int64_t>& totals) const {
  totals.assign(nodes.size(), 0);
  std::vector<NodeScore> scores(nodes.size());
  for (size_t p = 0; p < score_.size(); ++p) {
    if (state.skip_score(p)) continue;
    const ScorePlugin* pl = score_[p];
    for (size_t i = 0; i < nodes.size(); ++i) {
      scores[i].node = nodes[i];
      scores[i].score = 0;
      PluginStatus s = pl->score(state, pod, *nodes[i], scores[i].score);
      if (!s.is_success()) {
        PluginStatus err = PluginStatus::error("running Score plugin \"" + std::string(pl->name()) +
                                               "\": " + s.message());
        err.set_plugin(pl->name());
        return err;
      }
    }
    if (pl->has_normalize()) {
      PluginStatus s = pl->normalize(state, pod, scores);
      if (!s.is_success()) {
        PluginStatus err = PluginStatus::error("running Normalize on Score plugin \"" +
                                               std::string(pl->name()) + "\": " + s.message());
        err.set_plugin(pl->name());
        return err;
      }
    }
    const int64_t weight = score_weights_[p];
    for (size_t i = 0; i < nodes.size(); ++i) {
      int64_t s = scores[i].score;
      if (s < kMinNodeScore || s > kMaxNodeScore) {
        PluginStatus err = PluginStatus::error(
            "plugin \"" + std::string(pl->name()) + "\" returns an invalid score " +
            std::to_string(s) + ", it should in the range of [0, 100] after normalizing");
        err.set_plugin(pl->name());
        return err;
      }
      totals[i] += s * weight;
    }
  }
  return {};
}

PluginStatus Framework::run_reserve(CycleState& state, const PodInfo& pod,
                                    const std::string& node) const {
  for (ReservePlugin* pl : reserve_) {
    PluginStatus s = pl->reserve(state, pod, node);
    if (!s.is_success()) {
      if (!s.is_rejected()) {
        s = PluginStatus::error("running Reserve plugin \"" + std::string(pl->name()) +
                                "\": " + s.message());
      }
      s.set_plugin(pl->name());
      return s;
    }
  }
  return {};
}

void Framework::run_unreserve(CycleState& state, const PodInfo& pod,
                              const std::string& node) const {
  for (auto it = reserve_.rbegin(); it != reserve_.rend(); ++it) (*it)->unreserve(state, pod, node);
}

PluginStatus Framework::run_permit(CycleState& state, const PodInfo& pod,
                                   const std::string& node) const {
  for (PermitPlugin* pl : permit_) {
    PluginStatus s = pl->permit(state, pod, node);
    if (s.is_success()) continue;
    if (!s.is_rejected()) {
      s = PluginStatus::error(s.code() == Code::kWait
                                  ? "Permit plugin \"" + std::string(pl->name()) +
                                        "\" asked to wait, which is not supported"
                                  : "running Permit plugin \"" + std::string(pl->name()) +
                                        "\": " + s.message());
    }
    s.set_plugin(pl->name());
    return s;
  }
  return {};
}

PluginStatus Framework::run_pre_bind(CycleState& state, const PodInfo& pod,
                                     const std::string& node) const {
  for (PreBindPlugin* pl : pre_bind_) {
    PluginStatus s = pl->pre_bind(state, pod, node);
    if (s.is_success()) continue;
    if (!s.is_rejected()) {
      s = PluginStatus::error("running PreBind plugin \"" + std::string(pl->name()) +
                              "\": " + s.message());
    }
    s.set_plugin(pl->name());
    return s;
  }
  return {};
}

PluginStatus Framework::run_bind(CycleState& state, const PodInfo& pod,
                                 const std::string& node) const {
  for (BindPlugin* pl : bind_) {
    PluginStatus s = pl->bind(state, pod, node);
    if (s.is_skip()) continue;
    if (!s.is_success()) {
      if (!s.is_rejected()) {
        s = PluginStatus::error("running Bind plugin \"" + std::string(pl->name()) +
                                "\": " + s.message());
      }
      s.set_plugin(pl->name());
    }
    return s;
  }
  return PluginStatus::error("no bind plugin bound the pod");
}

void Framework::run_post_bind(CycleState& state, const PodInfo& pod,
                              const std::string& node) const {
  for (PostBindPlugin* pl : post_bind_) pl->post_bind(state, pod, node);
}

std::map<std::string, std::vector<ClusterEventWithHint>> Framework::events_to_register() const {
  std::map<std::string, std::vector<ClusterEventWithHint>> out;
  for (EnqueueExtensions* pl : enqueue_) out[std::string(pl->name())] = pl->events_to_register();
  return out;
}

void default_normalize_score(int64_t max_priority, bool reverse, std::span<NodeScore> scores) {
  int64_t max_count = 0;
  for (const NodeScore& s : scores) max_count = std::max(max_count, s.score);
  if (max_count == 0) {
    if (reverse) {
      for (NodeScore& s : scores) s.score = max_priority;
    }
    return;
  }
  for (NodeScore& s : scores) {
    int64_t score = max_priority * s.score / max_count;
    s.score = reverse ? max_priority - score : score;
  }
}

}  // namespace skiff::scheduler
