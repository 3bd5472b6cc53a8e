#include "scheduler/framework.h"

#include <algorithm>

#include "api/protobuf.h"

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

void CycleState::write(const StateKey& key, std::shared_ptr<const StateData> data) {
  for (auto& slot : slots_) {
    if (slot.first == &key) {
      slot.second = std::move(data);
      return;
    }
  }
  slots_.emplace_back(&key, std::move(data));
}

const StateData* CycleState::read(const StateKey& key) const {
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

namespace {

// Runs `call` on each plugin until one fails: its rejection, or anything else as an error naming
// the extension point; either way with the plugin's name.
template <typename P, typename Call>
PluginStatus first_failure(const std::vector<P*>& plugins, std::string_view point, Call&& call) {
  for (P* pl : plugins) {
    PluginStatus s = call(pl);
    if (s.is_success()) continue;
    if (!s.is_rejected()) {
      s = PluginStatus::error("running " + std::string(point) + " plugin \"" +
                              std::string(pl->name()) + "\": " + s.message());
    }
    s.set_plugin(pl->name());
    return s;
  }
  return {};
}

}  // namespace

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
    Result<std::unique_ptr<Plugin>> built = (*factory)(spec.args, *fw);
    if (!built.is_ok()) {
      return Status(StatusCode::kInvalidArgument,
                    "initializing plugin \"" + spec.name + "\": " + built.status().message());
    }
    Plugin* p = built.value().get();
    if (auto* x = dynamic_cast<QueueSortPlugin*>(p)) {
      if (fw->queue_sort_ != nullptr) {
        return Status(StatusCode::kInvalidArgument,
                      "only one QueueSort plugin can be enabled in profile \"" +
                          profile.scheduler_name + "\"");
      }
      fw->queue_sort_ = x;
    }
    if (auto* x = dynamic_cast<PreEnqueuePlugin*>(p)) fw->pre_enqueue_.push_back(x);
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

Framework::~Framework() {
  close_waiting();
}

bool Framework::queue_less(const QueuedPodInfo& a, const QueuedPodInfo& b) const {
  return queue_sort_ != nullptr ? queue_sort_->less(a, b) : priority_sort_less(a, b);
}

PluginStatus Framework::run_pre_enqueue(const PodInfo& pod) const {
  return first_failure(pre_enqueue_, "PreEnqueue",
                       [&](PreEnqueuePlugin* pl) { return pl->pre_enqueue(pod); });
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

namespace {
template <typename Run>
PluginStatus run_extensions(const std::vector<PreFilterPlugin*>& plugins,
                            const std::vector<int>& to_filter, const CycleState& state,
                            const char* what, Run&& run) {
  for (size_t i = 0; i < plugins.size(); ++i) {
    const PreFilterExtensions* ext = plugins[i]->pre_filter_extensions();
    if (ext == nullptr) continue;
    if (to_filter[i] >= 0 && state.skip_filter(static_cast<size_t>(to_filter[i]))) continue;
    PluginStatus s = run(*ext);
    if (!s.is_success()) {
      PluginStatus err =
          PluginStatus::error("running " + std::string(what) + " on PreFilter plugin \"" +
                              std::string(plugins[i]->name()) + "\": " + s.message());
      err.set_plugin(plugins[i]->name());
      return err;
    }
  }
  return {};
}
}  // namespace

PluginStatus Framework::run_pre_filter_extension_add_pod(CycleState& state, const PodInfo& pod,
                                                         const PodInfo& other,
                                                         const NodeInfo& node) const {
  return run_extensions(
      pre_filter_, pre_filter_to_filter_, state, "AddPod",
      [&](const PreFilterExtensions& ext) { return ext.add_pod(state, pod, other, node); });
}

PluginStatus Framework::run_pre_filter_extension_remove_pod(CycleState& state, const PodInfo& pod,
                                                            const PodInfo& other,
                                                            const NodeInfo& node) const {
  return run_extensions(
      pre_filter_, pre_filter_to_filter_, state, "RemovePod",
      [&](const PreFilterExtensions& ext) { return ext.remove_pod(state, pod, other, node); });
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
  const PostFilterContext ctx{nodes, filter, *this};
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
  return first_failure(reserve_, "Reserve",
                       [&](ReservePlugin* pl) { return pl->reserve(state, pod, node); });
}

void Framework::run_unreserve(CycleState& state, const PodInfo& pod,
                              const std::string& node) const {
  for (auto it = reserve_.rbegin(); it != reserve_.rend(); ++it) (*it)->unreserve(state, pod, node);
}

PluginStatus Framework::run_permit(CycleState& state, const PodRef& pod, const std::string& node) {
  std::map<std::string, WaitingPod::Pending, std::less<>> waits;
  const auto now = WaitingPod::Clock::now();
  for (PermitPlugin* pl : permit_) {
    std::chrono::milliseconds timeout{0};
    PluginStatus s = pl->permit(state, *pod, node, timeout);
    if (s.is_success()) continue;
    if (s.code() == Code::kWait) {
      timeout = std::clamp(timeout, std::chrono::milliseconds(0), kMaxPermitTimeout);
      waits[std::string(pl->name())] = {now + timeout, timeout};
      continue;
    }
    if (!s.is_rejected()) {
      s = PluginStatus::error("running Permit plugin \"" + std::string(pl->name()) +
                              "\": " + s.message());
    }
    s.set_plugin(pl->name());
    return s;
  }
  if (waits.empty()) return {};
  auto wp = std::make_shared<WaitingPod>(pod, node, this);
  wp->pending_ = std::move(waits);
  {
    std::lock_guard lock(waiting_mu_);
    if (waiting_closed_) return PluginStatus::error("the scheduler is stopping");
    waiting_[pod->uid] = std::move(wp);
    ++waiting_added_;
    if (!timeout_thread_.joinable()) {
      timeout_thread_ = std::jthread([this](std::stop_token stop) { timeout_loop(stop); });
    }
  }
  waiting_cv_.notify_all();
  return PluginStatus(Code::kWait, "one or more plugins asked to wait and no plugin rejected pod");
}

void Framework::wait_on_permit(const std::string& uid, std::function<void(PluginStatus)> done) {
  std::unique_lock lock(waiting_mu_);
  auto it = waiting_.find(uid);
  if (it == waiting_.end()) {
    lock.unlock();
    done({});
    return;
  }
  std::shared_ptr<WaitingPod> wp = it->second;
  std::unique_lock pod_lock(wp->mu_);
  if (!wp->outcome_) {
    wp->done_ = std::move(done);
    return;
  }
  PluginStatus outcome = *wp->outcome_;
  waiting_.erase(it);
  pod_lock.unlock();
  lock.unlock();
  done(std::move(outcome));
}

void Framework::forget_waiting(const std::string& uid) {
  std::lock_guard lock(waiting_mu_);
  waiting_.erase(uid);
}

void Framework::close_waiting() {
  {
    std::lock_guard lock(waiting_mu_);
    waiting_closed_ = true;
    for (auto& [uid, wp] : waiting_) {
      std::lock_guard pod_lock(wp->mu_);
      wp->done_ = nullptr;
      if (!wp->outcome_) wp->outcome_ = PluginStatus::error("the scheduler is stopping");
    }
    waiting_.clear();
  }
  if (timeout_thread_.joinable()) {
    timeout_thread_.request_stop();
    timeout_thread_.join();
  }
}

std::shared_ptr<WaitingPod> Framework::get_waiting_pod(std::string_view uid) const {
  std::lock_guard lock(waiting_mu_);
  auto it = waiting_.find(std::string(uid));
  return it == waiting_.end() ? nullptr : it->second;
}

void Framework::iterate_over_waiting_pods(const std::function<void(WaitingPod&)>& fn) const {
  std::vector<std::shared_ptr<WaitingPod>> pods;
  {
    std::lock_guard lock(waiting_mu_);
    pods.reserve(waiting_.size());
    for (const auto& [uid, wp] : waiting_) pods.push_back(wp);
  }
  for (const auto& wp : pods) fn(*wp);
}

bool Framework::reject_waiting_pod(std::string_view uid, std::string_view plugin,
                                   std::string message) {
  std::shared_ptr<WaitingPod> wp = get_waiting_pod(uid);
  if (!wp) return false;
  wp->reject(plugin, std::move(message));
  return true;
}

void Framework::timeout_loop(std::stop_token stop) {
  using Clock = WaitingPod::Clock;
  std::unique_lock lock(waiting_mu_);
  while (!stop.stop_requested()) {
    const auto now = Clock::now();
    auto next = Clock::time_point::max();
    std::vector<std::pair<std::shared_ptr<WaitingPod>, std::string>> expired;
    for (const auto& [uid, wp] : waiting_) {
      std::lock_guard pod_lock(wp->mu_);
      if (wp->outcome_) continue;
      for (const auto& [plugin, pending] : wp->pending_) {
        if (pending.deadline <= now) {
          expired.emplace_back(wp, plugin);
          break;
        }
        next = std::min(next, pending.deadline);
      }
    }
    if (!expired.empty()) {
      lock.unlock();
      for (auto& [wp, plugin] : expired) {
        std::chrono::milliseconds waited{0};
        {
          std::lock_guard pod_lock(wp->mu_);
          auto it = wp->pending_.find(plugin);
          if (it == wp->pending_.end()) continue;
          waited = it->second.timeout;
        }
        wp->reject(plugin, "rejected due to timeout after waiting " +
                               api::format_go_duration(std::chrono::nanoseconds(waited).count()) +
                               " at plugin " + plugin);
      }
      lock.lock();
      continue;
    }
    const uint64_t seen = waiting_added_;
    auto added = [&] { return waiting_added_ != seen; };
    if (next == Clock::time_point::max()) {
      waiting_cv_.wait(lock, stop, added);
    } else {
      waiting_cv_.wait_until(lock, stop, next, added);
    }
  }
}

// ---- WaitingPod ----

std::vector<std::string> WaitingPod::pending_plugins() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [plugin, pending] : pending_) out.push_back(plugin);
  return out;
}

void WaitingPod::allow(std::string_view plugin) {
  std::unique_lock lock(mu_);
  if (outcome_) return;
  auto it = pending_.find(plugin);
  if (it != pending_.end()) pending_.erase(it);
  if (pending_.empty()) settle(lock, {});
}

void WaitingPod::reject(std::string_view plugin, std::string message) {
  std::unique_lock lock(mu_);
  if (outcome_) return;
  PluginStatus s(Code::kUnschedulable, std::move(message));
  // The status keeps a view of the name: take the plugin's own.
  if (const Plugin* p = framework_->plugin(plugin)) s.set_plugin(p->name());
  settle(lock, std::move(s));
}

void WaitingPod::settle(std::unique_lock<std::mutex>& lock, PluginStatus status) {
  outcome_ = status;
  if (!done_) return;  // wait_on_permit collects it
  Done done = std::move(done_);
  done_ = nullptr;
  lock.unlock();
  framework_->forget_waiting(pod_->uid);
  done(std::move(status));
}

PluginStatus Framework::run_pre_bind(CycleState& state, const PodInfo& pod,
                                     const std::string& node) const {
  return first_failure(pre_bind_, "PreBind",
                       [&](PreBindPlugin* pl) { return pl->pre_bind(state, pod, node); });
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
