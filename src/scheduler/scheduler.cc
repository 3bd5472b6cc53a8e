#include "scheduler/scheduler.h"

#include <algorithm>
#include <map>

namespace skiff::scheduler {
namespace {

ScheduleFailure error_failure(std::string message) {
  ScheduleFailure f;
  f.code = Code::kError;
  f.message = std::move(message);
  return f;
}

ScheduleFailure fit_failure(FitError fit) {
  ScheduleFailure f;
  f.code = Code::kUnschedulable;
  f.message = fit.message();
  f.unschedulable_plugins = fit.diagnosis.unschedulable_plugins;
  f.fit_error = std::move(fit);
  return f;
}

}  // namespace

int num_feasible_nodes_to_find(int percentage, int num_all_nodes) {
  if (num_all_nodes < kMinFeasibleNodesToFind || percentage >= 100) return num_all_nodes;
  int adaptive = percentage;
  if (adaptive <= 0) {
    adaptive = 50 - num_all_nodes / 125;
    if (adaptive < kMinFeasibleNodesPercentageToFind) adaptive = kMinFeasibleNodesPercentageToFind;
  }
  int num = static_cast<int>(static_cast<int64_t>(num_all_nodes) * adaptive / 100);
  if (num < kMinFeasibleNodesToFind) return kMinFeasibleNodesToFind;
  return num;
}

std::string FitError::message() const {
  std::string msg = "0/" + std::to_string(num_all_nodes) + " nodes are available:";
  if (!diagnosis.pre_filter_msg.empty()) {
    msg += " " + diagnosis.pre_filter_msg + ".";
  } else {
    std::map<std::string, int> reasons;
    for (const auto& [node, status] : diagnosis.node_statuses) {
      for (const std::string& r : status.reasons()) reasons[r]++;
    }
    const int listed = static_cast<int>(diagnosis.node_statuses.size());
    if (listed < num_all_nodes && diagnosis.absent_nodes_status) {
      for (const std::string& r : diagnosis.absent_nodes_status->reasons()) {
        reasons[r] += num_all_nodes - listed;
      }
    }
    std::vector<std::string> histogram;
    for (const auto& [reason, count] : reasons) {
      histogram.push_back(std::to_string(count) + " " + reason);
    }
    std::sort(histogram.begin(), histogram.end());
    if (!histogram.empty()) {
      msg += " ";
      for (size_t i = 0; i < histogram.size(); ++i) {
        if (i > 0) msg += ", ";
        msg += histogram[i];
      }
      msg += ".";
    }
  }
  if (!diagnosis.post_filter_msg.empty()) msg += " " + diagnosis.post_filter_msg;
  return msg;
}

Scheduler::Scheduler(Cache& cache, std::unique_ptr<Framework> framework, SchedulerOptions options)
    : cache_(cache),
      framework_(std::move(framework)),
      options_(options),
      filter_fn_([this](const CycleState& state, const PodInfo& pod, const NodeInfo& node) {
        return filter(state, pod, node);
      }),
      rng_(options.seed != 0 ? options.seed : std::random_device{}()) {}

PluginStatus Scheduler::filter(const CycleState& state, const PodInfo& pod,
                               const NodeInfo& node) const {
  if (!nominator_.empty()) {
    std::vector<PodRef> nominated = nominator_.on_node(node.name(), pod.uid);
    std::erase_if(nominated, [&](const PodRef& p) { return p->priority < pod.priority; });
    if (!nominated.empty()) {
      // Upstream's addNominatedPods: the pods go on a copy of the node and into a clone of the
      // cycle's state.
      NodeInfo with = node;
      CycleState with_state = state.clone();
      for (const PodRef& p : nominated) {
        with.add_pod(p);
        PluginStatus s = framework_->run_pre_filter_extension_add_pod(with_state, pod, *p, with);
        if (!s.is_success()) return s;
      }
      PluginStatus s = framework_->run_filter(with_state, pod, with);
      if (!s.is_success()) return s;
    }
  }
  return framework_->run_filter(state, pod, node);
}

ScheduleOutcome Scheduler::schedule_pod(CycleState& state, const PodInfo& pod) {
  cache_.update_snapshot(snapshot_);
  const std::vector<const NodeInfo*>& all = snapshot_.list();
  const int num_all = static_cast<int>(all.size());
  if (num_all == 0) {
    ScheduleFailure f;
    f.code = Code::kUnschedulableAndUnresolvable;
    f.message = "no nodes available to schedule pods";
    return f;
  }
  const Framework& fw = *framework_;

  // PreFilter.
  FitError fit;
  fit.num_all_nodes = num_all;
  Diagnosis& diagnosis = fit.diagnosis;
  PreFilterResult pre;
  PluginStatus s = fw.run_pre_filter(state, pod, snapshot_, pre, diagnosis.unschedulable_plugins);
  if (!s.is_success()) {
    if (!s.is_rejected()) return error_failure(s.message());
    diagnosis.pre_filter_msg = s.message();
    if (!s.plugin().empty()) diagnosis.unschedulable_plugins.insert(std::string(s.plugin()));
    diagnosis.absent_nodes_status = std::move(s);
    return fit_failure(std::move(fit));
  }

  std::span<const NodeInfo* const> nodes = all;
  if (!pre.all_nodes) {
    candidates_.clear();
    for (const std::string& name : pre.node_names) {
      if (const NodeInfo* n = snapshot_.get(name)) candidates_.push_back(n);
    }
    nodes = candidates_;
    std::string msg = "node(s) didn't satisfy plugin(s) [";
    bool first = true;
    for (const std::string& p : diagnosis.unschedulable_plugins) {
      if (!first) msg += " ";
      msg += p;
      first = false;
    }
    msg += "]";
    diagnosis.absent_nodes_status = PluginStatus(Code::kUnschedulableAndUnresolvable, msg);
  }

  // A nominated node (from an earlier preemption) is tried first.
  feasible_.clear();
  if (!pod.nominated_node_name.empty()) {
    const NodeInfo* nominated = snapshot_.get(pod.nominated_node_name);
    if (nominated != nullptr && std::find(nodes.begin(), nodes.end(), nominated) != nodes.end() &&
        filter(state, pod, *nominated).is_success()) {
      feasible_.push_back(nominated);
    }
  }

  // Filter from a rotating offset until enough feasible nodes are found.
  const int n = static_cast<int>(nodes.size());
  failed_.clear();
  if (feasible_.empty() && n > 0) {
    const int to_find = num_feasible_nodes_to_find(options_.percentage_of_nodes_to_score, n);
    const size_t start = next_start_node_index_ % static_cast<size_t>(n);
    int processed = 0;
    if (!fw.has_filter_plugins()) {
      for (int i = 0; i < to_find; ++i) feasible_.push_back(nodes[(start + i) % n]);
      processed = to_find;
    } else {
      for (int i = 0; i < n; ++i) {
        const NodeInfo* node = nodes[(start + i) % n];
        PluginStatus fs = filter(state, pod, *node);
        ++processed;
        if (fs.is_success()) {
          feasible_.push_back(node);
          if (static_cast<int>(feasible_.size()) >= to_find) break;
          continue;
        }
        if (!fs.is_rejected()) return error_failure(fs.message());
        failed_.emplace_back(node, std::move(fs));
      }
    }
    next_start_node_index_ = (start + processed) % static_cast<size_t>(n);
  }

  if (feasible_.empty()) {
    std::string_view last_plugin;
    diagnosis.node_statuses.reserve(failed_.size());
    for (auto& [node, status] : failed_) {
      if (!status.plugin().empty() && status.plugin() != last_plugin) {
        last_plugin = status.plugin();
        diagnosis.unschedulable_plugins.insert(std::string(last_plugin));
      }
      diagnosis.node_statuses.emplace_back(node->name(), std::move(status));
    }
    failed_.clear();
    return fit_failure(std::move(fit));
  }

  ScheduleResult result;
  result.feasible_nodes = static_cast<int>(feasible_.size());
  result.evaluated_nodes = result.feasible_nodes + static_cast<int>(failed_.size());
  failed_.clear();
  if (feasible_.size() == 1) {
    result.node = feasible_.front()->name();
    return result;
  }

  // Score.
  s = fw.run_pre_score(state, pod, feasible_, snapshot_);
  if (!s.is_success()) return error_failure(s.message());
  if (fw.has_score_plugins()) {
    s = fw.run_score(state, pod, feasible_, scores_);
    if (!s.is_success()) return error_failure(s.message());
  } else {
    scores_.assign(feasible_.size(), 1);
  }
  result.node = select_host(feasible_, scores_);
  return result;
}

std::string Scheduler::select_host(std::span<const NodeInfo* const> nodes,
                                   const std::vector<int64_t>& scores) {
  size_t selected = 0;
  int64_t max_score = scores[0];
  uint64_t ties = 1;
  for (size_t i = 1; i < nodes.size(); ++i) {
    if (scores[i] > max_score) {
      max_score = scores[i];
      selected = i;
      ties = 1;
    } else if (scores[i] == max_score) {
      ++ties;
      // Reservoir sampling: each tied node is kept with probability 1/ties.
      if (rng_() % ties == 0) selected = i;
    }
  }
  return nodes[selected]->name();
}

CycleOutcome Scheduler::schedule_one(const PodRef& pod) {
  auto state = std::make_shared<CycleState>();
  ScheduleOutcome outcome = schedule_pod(*state, *pod);
  if (!outcome.ok()) {
    ScheduleFailure failure = outcome.failure();
    // The pod stays nominated where it was unless a PostFilter plugin says otherwise.
    failure.nominated_node = pod->nominated_node_name;
    if (failure.fit_error) {
      PluginStatus pf =
          framework_->run_post_filter(*state, *pod, failure.fit_error->diagnosis.node_statuses,
                                      snapshot_, filter_fn_, failure.nominated_node);
      if (!pf.is_success() && !pf.reasons().empty()) {
        failure.fit_error->diagnosis.post_filter_msg = pf.message();
      }
      failure.message = failure.fit_error->message();
    }
    return {std::move(failure), nullptr};
  }
  const std::string node = outcome.result().node;
  Status assumed = cache_.assume_pod(pod, node);
  if (!assumed.is_ok()) return {error_failure(assumed.message()), nullptr};

  auto undo = [&](const PluginStatus& s) -> CycleOutcome {
    framework_->run_unreserve(*state, *pod, node);
    (void)cache_.forget_pod(pod->uid);
    ScheduleFailure f;
    f.nominated_node = pod->nominated_node_name;
    f.code = s.is_rejected() ? s.code() : Code::kError;
    f.message = s.message();
    if (s.is_rejected() && !s.plugin().empty())
      f.unschedulable_plugins.insert(std::string(s.plugin()));
    return {std::move(f), nullptr};
  };
  PluginStatus s = framework_->run_reserve(*state, *pod, node);
  if (!s.is_success()) return undo(s);
  s = framework_->run_permit(*state, pod, node);
  if (!s.is_success() && s.code() != Code::kWait) return undo(s);
  return {std::move(outcome), std::move(state), s.code() == Code::kWait};
}

void Scheduler::abandon(const PodRef& pod, const std::string& node, CycleState& state) {
  framework_->run_unreserve(state, *pod, node);
  (void)cache_.forget_pod(pod->uid);
}

PluginStatus Scheduler::bind(const PodRef& pod, const std::string& node, CycleState& state) {
  PluginStatus s = framework_->run_pre_bind(state, *pod, node);
  if (s.is_success()) s = framework_->run_bind(state, *pod, node);
  if (!s.is_success()) {
    abandon(pod, node, state);
    return s;
  }
  (void)cache_.finish_binding(pod->uid);
  framework_->run_post_bind(state, *pod, node);
  return s;
}

}  // namespace skiff::scheduler
