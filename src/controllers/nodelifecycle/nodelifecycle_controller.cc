#include "controllers/nodelifecycle/nodelifecycle_controller.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"
#include "controllers/nodelifecycle/taint_eviction.h"
#include "controllers/nodelifecycle/taints.h"

namespace skiff::controllers {
namespace nodelifecycle {
namespace {

using client::resources::kLeases;
using client::resources::kNodes;
using client::resources::kPods;
using TimePoint = std::chrono::system_clock::time_point;
using namespace std::chrono_literals;

// Upstream's defaults.
constexpr auto kPollInterval = 100ms;  // how often due work is looked for (nodeEvictionPeriod)
constexpr auto kNodeStartupGracePeriod = 60s;
constexpr double kEvictionLimiterQps = 0.1;
constexpr double kSecondaryEvictionLimiterQps = 0.01;
constexpr size_t kLargeClusterThreshold = 50;
constexpr double kUnhealthyZoneThreshold = 0.55;
constexpr int kNodeUpdateRetries = 5;
constexpr const char* kNodeLeaseNamespace = "kube-node-lease";
constexpr const char* kExcludeDisruptionLabel = "node.kubernetes.io/exclude-disruption";
constexpr const char* kPodsByNodeIndex = "nodelifecycle/pods-by-node";
constexpr const char* kConditionTypes[] = {"Ready", "MemoryPressure", "DiskPressure",
                                           "PIDPressure"};

const TaintRef kUnreachableNoExecute{kTaintUnreachable, "NoExecute"};
const TaintRef kNotReadyNoExecute{kTaintNotReady, "NoExecute"};

// Which NoSchedule taint a node condition in a given status calls for.
const char* condition_taint(const std::string& type, const std::string& status) {
  if (type == "Ready") {
    if (status == "False") return kTaintNotReady;
    if (status == "Unknown") return kTaintUnreachable;
    return nullptr;
  }
  if (status != "True") return nullptr;
  if (type == "MemoryPressure") return kTaintMemoryPressure;
  if (type == "DiskPressure") return kTaintDiskPressure;
  if (type == "PIDPressure") return kTaintPidPressure;
  if (type == "NetworkUnavailable") return kTaintNetworkUnavailable;
  return nullptr;
}

bool is_condition_taint_key(const std::string& key) {
  return key == kTaintNotReady || key == kTaintUnreachable || key == kTaintMemoryPressure ||
         key == kTaintDiskPressure || key == kTaintPidPressure || key == kTaintNetworkUnavailable;
}

const Json* ready_condition(const Json& node) {
  return find_condition(member(node, "status"), "Ready");
}

std::string status_of(const Json& condition) {
  return string_field(condition, "status");
}

const Json& labels_of(const Json& obj) {
  return member(member(obj, "metadata"), "labels");
}

// Upstream's zone key: region and zone labels (topology.kubernetes.io/..., else the beta
// failure-domain labels).
std::string zone_key(const Json& node) {
  const Json& labels = labels_of(node);
  auto label = [&](const char* ga, const char* beta) {
    std::string v = string_field(labels, ga);
    return v.empty() ? string_field(labels, beta) : v;
  };
  std::string region =
      label("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region");
  std::string zone = label("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone");
  if (region.empty() && zone.empty()) return "";
  return region + ":\x00:" + zone;
}

// Microseconds since the epoch of an RFC 3339 time (metav1.MicroTime); nullopt when malformed.
std::optional<int64_t> parse_micro(const std::string& text) {
  int64_t seconds = parse_rfc3339(text);
  if (seconds < 0) return std::nullopt;
  int64_t micros = 0;
  size_t dot = text.find('.');
  if (dot != std::string::npos) {
    int digits = 0;
    for (size_t i = dot + 1; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]));
         ++i) {
      if (digits < 6) {
        micros = micros * 10 + (text[i] - '0');
        ++digits;
      }
    }
    while (digits++ < 6) micros *= 10;
  }
  return seconds * 1000000 + micros;
}

TimePoint time_of(const std::string& rfc3339_text, TimePoint fallback) {
  int64_t s = parse_rfc3339(rfc3339_text);
  return s < 0 ? fallback : TimePoint(std::chrono::seconds(s));
}

// A resourceVersion as a number; -1 when it is not one.
int64_t parse_rv(const std::string& rv) {
  int64_t n = -1;
  auto [ptr, ec] = std::from_chars(rv.data(), rv.data() + rv.size(), n);
  return ec == std::errc() && ptr == rv.data() + rv.size() ? n : -1;
}

std::string timestamp(TimePoint t) {
  return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

// A token bucket on the controller's clock with a burst of one (upstream's eviction limiter).
class TokenBucket {
 public:
  TokenBucket(double qps, TimePoint now) : qps_(qps), tokens_(qps > 0 ? 1 : 0), last_(now) {}

  bool try_accept(TimePoint now) {
    if (qps_ <= 0) return false;
    refill(now);
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

  // A new rate starts with a full bucket, drained when the old one had no token left (as
  // upstream's SwapLimiter); a rate of 0 accepts nothing.
  void swap(double qps, TimePoint now) {
    if (qps == qps_) return;
    bool had_token = try_accept(now);
    qps_ = qps;
    last_ = now;
    tokens_ = qps > 0 && had_token ? 1 : 0;
  }

 private:
  void refill(TimePoint now) {
    if (now > last_) {
      double elapsed = std::chrono::duration<double>(now - last_).count();
      tokens_ = std::min(1.0, tokens_ + elapsed * qps_);
    }
    last_ = now;
  }

  double qps_;
  double tokens_;
  TimePoint last_;
};

enum class ZoneState { kInitial, kNormal, kFullDisruption, kPartialDisruption };

ZoneState compute_zone_state(const std::vector<std::string>& ready_statuses) {
  size_t ready = 0, not_ready = 0;
  for (const auto& s : ready_statuses) (s == "True" ? ready : not_ready)++;
  if (ready == 0 && not_ready > 0) return ZoneState::kFullDisruption;
  if (not_ready > 2 && static_cast<double>(not_ready) / static_cast<double>(not_ready + ready) >=
                           kUnhealthyZoneThreshold) {
    return ZoneState::kPartialDisruption;
  }
  return ZoneState::kNormal;
}

class NodeLifecycle {
 public:
  explicit NodeLifecycle(ControllerContext& ctx)
      : ctx_(ctx),
        nodes_(ctx.informers.informer(kNodes)),
        leases_(ctx.informers.informer(kLeases)),
        pods_(ctx.informers.informer(kPods)),
        recorder_(ctx.recorder("node-controller")),
        workers_(
            "node-lifecycle-controller", queue_,
            [this](const std::string& key) { return sync(key); }, [this] { return synced(); }),
        poll_(kPollInterval, [this] { poll(); }) {
    nodes_.add_handlers({
        .on_add = [this](const ObjectPtr& n) { queue_.add("node:" + client::name_of(*n)); },
        .on_update = [this](const ObjectPtr&,
                            const ObjectPtr& n) { queue_.add("node:" + client::name_of(*n)); },
        .on_delete = nullptr,
    });
    auto node_of = [](const Json& pod) { return string_field(member(pod, "spec"), "nodeName"); };
    pods_.add_handlers({
        .on_add =
            [this, node_of](const ObjectPtr& p) {
              if (!node_of(*p).empty()) queue_.add("pod:" + client::key_of(*p));
            },
        .on_update =
            [this, node_of](const ObjectPtr& old_pod, const ObjectPtr& p) {
              if (!node_of(*p).empty() && node_of(*p) != node_of(*old_pod)) {
                queue_.add("pod:" + client::key_of(*p));
              }
            },
        .on_delete = nullptr,
    });
  }

  ~NodeLifecycle() { stop(); }

  void start() {
    workers_.start(ctx_.options.workers);
    poll_.start();
  }

  void stop() {
    poll_.stop();
    workers_.stop();
  }

 private:
  // What the controller knows of a node's health (upstream's nodeHealthData).
  struct Health {
    Json ready;  // the Ready condition last seen (null: none)
    TimePoint probe;
    TimePoint ready_transition;
    std::optional<int64_t> lease_renew;  // µs; the Lease renewTime last seen
  };
  struct Tainter {
    explicit Tainter(TimePoint now) : bucket(kEvictionLimiterQps, now) {}
    TokenBucket bucket;
    std::deque<std::string> queue;
    std::set<std::string> queued;
  };

  bool synced() const { return nodes_.has_synced() && leases_.has_synced() && pods_.has_synced(); }

  void poll();
  void monitor_pass();
  void tainting_pass();
  Status try_update_node_health(Json& node, Json& observed, Json& current);
  void process_taint_based_eviction(const Json& node, const std::string& observed_status);
  void mark_node_for_tainting(const Json& node);
  void mark_node_reachable(const Json& node);
  void handle_disruption(const std::map<std::string, std::vector<std::string>>& zone_statuses,
                         const std::vector<ObjectPtr>& nodes);
  void set_limiter(const std::string& zone, size_t size, ZoneState state);
  Status mark_pods_not_ready(const std::vector<ObjectPtr>& pods, const std::string& node_name);
  Status swap_taints(const Json& node, const std::vector<TaintRef>& add,
                     const std::vector<TaintRef>& remove);

  Status sync(const std::string& key);
  Status sync_no_schedule_taints(const std::string& node_name);
  Status sync_pod(const std::string& pod_key);

  ControllerContext ctx_;
  client::Informer& nodes_;
  client::Informer& leases_;
  client::Informer& pods_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;

  std::mutex health_mu_;
  std::map<std::string, Health> health_;  // guarded by health_mu_; written by the monitor only

  // The monitor thread's own state.
  std::optional<TimePoint> last_monitor_;
  std::map<std::string, std::string> known_;  // node name → uid
  std::set<std::string> retry_not_ready_;     // nodes whose pods still need marking
  std::map<std::string, ZoneState> zone_states_;
  std::map<std::string, Tainter> tainters_;
  // Node name → (resourceVersion, node) of the last status this controller wrote.
  std::map<std::string, std::pair<int64_t, Json>> written_;

  QueueWorkers workers_;
  Ticker poll_;  // runs the monitor and tainting passes
};

void NodeLifecycle::poll() {
  if (!synced()) return;
  TimePoint now = ctx_.clock.now();
  if (!last_monitor_ || now - *last_monitor_ >= ctx_.options.node_monitor_period ||
      now < *last_monitor_) {
    last_monitor_ = now;
    monitor_pass();
  }
  tainting_pass();
}

void NodeLifecycle::monitor_pass() {
  const TimePoint now = ctx_.clock.now();
  std::vector<ObjectPtr> nodes = nodes_.list();
  std::set<std::string> names;
  for (const auto& n : nodes) {
    names.insert(client::name_of(*n));
    std::string zone = zone_key(*n);
    if (!tainters_.count(zone)) {
      tainters_.emplace(zone, Tainter(now));
      zone_states_[zone] = ZoneState::kInitial;
    }
  }
  for (const auto& n : nodes) {
    std::string name = client::name_of(*n);
    if (known_.count(name)) continue;
    recorder_->event(*n, "Normal", "RegisteredNode",
                     "Node " + name + " event: Registered Node " + name + " in Controller", "Node",
                     "v1");
    known_[name] = client::uid_of(*n);
    mark_node_reachable(*n);
  }
  for (auto it = known_.begin(); it != known_.end();) {
    if (names.count(it->first)) {
      ++it;
      continue;
    }
    Json ref = {{"kind", "Node"},
                {"apiVersion", "v1"},
                {"metadata", {{"name", it->first}, {"uid", it->second}}}};
    recorder_->event(
        ref, "Normal", "RemovingNode",
        "Node " + it->first + " event: Removing Node " + it->first + " from Controller");
    {
      std::lock_guard lock(health_mu_);
      health_.erase(it->first);
    }
    retry_not_ready_.erase(it->first);
    written_.erase(it->first);
    it = known_.erase(it);
  }

  std::map<std::string, std::vector<std::string>> zone_statuses;
  for (const auto& cached : nodes) {
    const std::string name = client::name_of(*cached);
    Json node = *cached;
    // Read our own writes: a cache that has not caught up with the status this controller wrote
    // would look like the kubelet undoing it.
    if (auto w = written_.find(name); w != written_.end()) {
      int64_t cached_rv = parse_rv(client::resource_version_of(*cached));
      if (cached_rv >= 0 && cached_rv < w->second.first) {
        node = w->second.second;
      } else {
        written_.erase(w);
      }
    }
    Json observed, current;
    bool updated = false;
    for (int attempt = 0; attempt < kNodeUpdateRetries; ++attempt) {
      Status s = try_update_node_health(node, observed, current);
      if (s.is_ok()) {
        updated = true;
        break;
      }
      auto fresh = ctx_.api.get(kNodes, "", name);
      if (!fresh.is_ok()) break;  // probably deleted
      node = std::move(fresh.value());
    }
    if (!updated) {
      SKIFF_LOG_WARN(
          "node-lifecycle-controller: cannot update the health of node {}; no pods "
          "will be evicted",
          name);
      continue;
    }
    if (member(labels_of(node), kExcludeDisruptionLabel).is_null()) {
      zone_statuses[zone_key(node)].push_back(current.is_null() ? "" : status_of(current));
    }
    if (current.is_null()) continue;
    std::vector<ObjectPtr> pods = pods_.by_index(kPodsByNodeIndex, name);
    process_taint_based_eviction(node, status_of(observed));
    const bool left_ready = status_of(current) != "True" && status_of(observed) == "True";
    const bool retry = retry_not_ready_.count(name) && status_of(observed) != "True";
    if (left_ready) {
      recorder_->event(node, "Normal", "NodeNotReady",
                       "Node " + name + " status is now: NodeNotReady", "Node", "v1");
    }
    if (left_ready || retry) {
      Status s = mark_pods_not_ready(pods, name);
      if (!s.is_ok()) {
        SKIFF_LOG_WARN("node-lifecycle-controller: marking the pods of node {} not ready: {}", name,
                       s.to_string());
        retry_not_ready_.insert(name);
        continue;
      }
    }
    retry_not_ready_.erase(name);
  }
  handle_disruption(zone_statuses, nodes);
}

Status NodeLifecycle::try_update_node_health(Json& node, Json& observed, Json& current) {
  const TimePoint now = ctx_.clock.now();
  const std::string name = client::name_of(node);
  std::optional<Health> health;
  {
    std::lock_guard lock(health_mu_);
    if (auto it = health_.find(name); it != health_.end()) health = it->second;
  }
  const std::string created_text = string_field(member(node, "metadata"), "creationTimestamp");
  const TimePoint created = time_of(created_text, now);
  const Json* ready = ready_condition(node);
  std::chrono::milliseconds grace = ctx_.options.node_monitor_grace_period;
  if (!ready) {
    // Never posted: judged against a synthetic condition from the node's creation.
    observed = {{"type", "Ready"},
                {"status", "Unknown"},
                {"lastHeartbeatTime", created_text},
                {"lastTransitionTime", created_text}};
    grace = std::max<std::chrono::milliseconds>(kNodeStartupGracePeriod, grace);
    if (health) {
      health->ready = Json();
    } else {
      health = Health{Json(), created, created, std::nullopt};
    }
  } else {
    observed = *ready;
  }
  const Json saved = health ? health->ready : Json();
  if (!health) {
    health = Health{ready ? *ready : Json(), now, now, std::nullopt};
  } else if (saved.is_null() && ready) {
    health = Health{*ready, now, now, std::nullopt};
  } else if (!saved.is_null() && !ready) {
    health = Health{Json(), now, now, std::nullopt};
  } else if (!saved.is_null() && ready &&
             member(saved, "lastHeartbeatTime") != member(*ready, "lastHeartbeatTime")) {
    TimePoint transition =
        member(saved, "lastTransitionTime") != member(*ready, "lastTransitionTime")
            ? now
            : health->ready_transition;
    health = Health{*ready, now, transition, std::nullopt};
  }
  // A renewed Lease is a heartbeat too.
  if (ObjectPtr lease = leases_.get(kNodeLeaseNamespace, name)) {
    auto renew = parse_micro(string_field(member(*lease, "spec"), "renewTime"));
    if (renew && (!health->lease_renew || *health->lease_renew < *renew)) {
      health->lease_renew = renew;
      health->probe = now;
    }
  }

  Status result;
  if (now > health->probe + grace) {
    const std::string now_text = timestamp(now);
    Json& status = node["status"];
    if (!status.is_object()) status = Json::object();
    Json& conditions = status["conditions"];
    if (!conditions.is_array()) conditions = Json::array();
    for (const char* type : kConditionTypes) {
      auto it = std::find_if(conditions.begin(), conditions.end(),
                             [&](const Json& c) { return string_field(c, "type") == type; });
      if (it == conditions.end()) {
        conditions.push_back({{"type", type},
                              {"status", "Unknown"},
                              {"reason", "NodeStatusNeverUpdated"},
                              {"message", "Kubelet never posted node status."},
                              {"lastHeartbeatTime", created_text},
                              {"lastTransitionTime", now_text}});
      } else if (status_of(*it) != "Unknown") {
        (*it)["status"] = "Unknown";
        (*it)["reason"] = "NodeStatusUnknown";
        (*it)["message"] = "Kubelet stopped posting node status.";
        (*it)["lastTransitionTime"] = now_text;
      }
    }
    const Json* now_ready = ready_condition(node);
    if (now_ready && *now_ready != observed) {
      auto r = ctx_.api.update(kNodes, "", node, {}, "status");
      if (r.is_ok()) {
        node = std::move(r.value());
        written_[name] = {parse_rv(client::resource_version_of(node)), node};
        const Json* written = ready_condition(node);
        health = Health{written ? *written : Json(), health->probe, now, health->lease_renew};
      } else {
        result = r.status();
      }
    }
  }
  const Json* cur = ready_condition(node);
  current = cur ? *cur : Json();
  {
    std::lock_guard lock(health_mu_);
    health_[name] = *health;
  }
  return result;
}

void NodeLifecycle::process_taint_based_eviction(const Json& node,
                                                 const std::string& observed_status) {
  const Json& taints = member(member(node, "spec"), "taints");
  Status s;
  if (observed_status == "False") {
    if (taint_exists(taints, kUnreachableNoExecute)) {
      s = swap_taints(node, {kNotReadyNoExecute}, {kUnreachableNoExecute});
    } else {
      mark_node_for_tainting(node);
    }
  } else if (observed_status == "Unknown") {
    if (taint_exists(taints, kNotReadyNoExecute)) {
      s = swap_taints(node, {kUnreachableNoExecute}, {kNotReadyNoExecute});
    } else {
      mark_node_for_tainting(node);
    }
  } else if (observed_status == "True") {
    mark_node_reachable(node);
  }
  if (!s.is_ok()) {
    SKIFF_LOG_WARN("node-lifecycle-controller: swapping the NoExecute taint of node {}: {}",
                   client::name_of(node), s.to_string());
  }
}

void NodeLifecycle::mark_node_for_tainting(const Json& node) {
  auto it = tainters_.find(zone_key(node));
  if (it == tainters_.end()) return;
  std::string name = client::name_of(node);
  if (it->second.queued.insert(name).second) it->second.queue.push_back(name);
}

void NodeLifecycle::mark_node_reachable(const Json& node) {
  Status s = swap_taints(node, {}, {kUnreachableNoExecute, kNotReadyNoExecute});
  if (!s.is_ok()) {
    SKIFF_LOG_WARN("node-lifecycle-controller: removing the NoExecute taints of node {}: {}",
                   client::name_of(node), s.to_string());
  }
  auto it = tainters_.find(zone_key(node));
  if (it == tainters_.end()) return;
  std::string name = client::name_of(node);
  if (it->second.queued.erase(name)) {
    auto& q = it->second.queue;
    q.erase(std::remove(q.begin(), q.end(), name), q.end());
  }
}

void NodeLifecycle::tainting_pass() {
  const TimePoint now = ctx_.clock.now();
  for (auto& [zone, tainter] : tainters_) {
    for (size_t n = tainter.queue.size(); n > 0 && !tainter.queue.empty(); --n) {
      if (!tainter.bucket.try_accept(now)) break;
      std::string name = tainter.queue.front();
      tainter.queue.pop_front();
      tainter.queued.erase(name);
      ObjectPtr node = nodes_.get(name);
      if (!node) continue;
      const Json* ready = ready_condition(*node);
      Status s;
      if (!ready) {
        s = error(StatusCode::kUnavailable, "no Ready condition yet");
      } else if (status_of(*ready) == "False") {
        s = swap_taints(*node, {kNotReadyNoExecute}, {kUnreachableNoExecute});
      } else if (status_of(*ready) == "Unknown") {
        s = swap_taints(*node, {kUnreachableNoExecute}, {kNotReadyNoExecute});
      }
      if (!s.is_ok()) {
        // Try again later.
        tainter.queued.insert(name);
        tainter.queue.push_back(name);
      }
    }
  }
}

void NodeLifecycle::set_limiter(const std::string& zone, size_t size, ZoneState state) {
  auto it = tainters_.find(zone);
  if (it == tainters_.end()) return;
  const TimePoint now = ctx_.clock.now();
  switch (state) {
    case ZoneState::kNormal:
    case ZoneState::kFullDisruption:
      it->second.bucket.swap(kEvictionLimiterQps, now);
      break;
    case ZoneState::kPartialDisruption:
      it->second.bucket.swap(size > kLargeClusterThreshold ? kSecondaryEvictionLimiterQps : 0, now);
      break;
    case ZoneState::kInitial:
      break;
  }
}

void NodeLifecycle::handle_disruption(
    const std::map<std::string, std::vector<std::string>>& zone_statuses,
    const std::vector<ObjectPtr>& nodes) {
  std::map<std::string, ZoneState> next;
  bool all_fully_disrupted = true;
  for (const auto& [zone, statuses] : zone_statuses) {
    ZoneState state = compute_zone_state(statuses);
    if (state != ZoneState::kFullDisruption) all_fully_disrupted = false;
    next[zone] = state;
    zone_states_.try_emplace(zone, ZoneState::kInitial);
  }
  bool all_were_fully_disrupted = true;
  for (auto it = zone_states_.begin(); it != zone_states_.end();) {
    if (!zone_statuses.count(it->first)) {
      it = zone_states_.erase(it);
      continue;
    }
    if (it->second != ZoneState::kFullDisruption) all_were_fully_disrupted = false;
    ++it;
  }
  if (all_fully_disrupted && all_were_fully_disrupted) return;
  if (all_fully_disrupted) {
    // Every node is down: more likely the control plane lost them than they all died. Stop
    // evicting until some come back.
    SKIFF_LOG_INFO("node-lifecycle-controller: all nodes are not ready; pausing evictions");
    for (const auto& n : nodes) mark_node_reachable(*n);
    for (auto& [zone, state] : zone_states_) {
      if (auto t = tainters_.find(zone); t != tainters_.end()) {
        t->second.bucket.swap(0, ctx_.clock.now());
      }
      state = ZoneState::kFullDisruption;
    }
    return;
  }
  if (all_were_fully_disrupted) {
    SKIFF_LOG_INFO("node-lifecycle-controller: some nodes are ready again; resuming evictions");
    // Every node gets a fresh grace period.
    const TimePoint now = ctx_.clock.now();
    {
      std::lock_guard lock(health_mu_);
      for (const auto& n : nodes) {
        auto it = health_.find(client::name_of(*n));
        if (it == health_.end()) continue;
        it->second.probe = now;
        it->second.ready_transition = now;
      }
    }
    for (auto& [zone, state] : zone_states_) {
      set_limiter(zone, zone_statuses.at(zone).size(), next[zone]);
      state = next[zone];
    }
    return;
  }
  for (auto& [zone, state] : zone_states_) {
    ZoneState n = next[zone];
    if (state == n) continue;
    set_limiter(zone, zone_statuses.at(zone).size(), n);
    state = n;
  }
}

Status NodeLifecycle::mark_pods_not_ready(const std::vector<ObjectPtr>& pods,
                                          const std::string& node_name) {
  Status first;
  const std::string now = timestamp(ctx_.clock.now());
  for (const auto& pod : pods) {
    if (string_field(member(*pod, "spec"), "nodeName") != node_name) continue;
    const Json* ready = find_condition(member(*pod, "status"), "Ready");
    if (!ready || status_of(*ready) == "False") continue;
    Json copy = *pod;
    for (auto& c : copy["status"]["conditions"]) {
      if (string_field(c, "type") != "Ready") continue;
      c["status"] = "False";
      c["lastTransitionTime"] = now;
    }
    auto r = ctx_.api.update(kPods, client::namespace_of(*pod), copy, {}, "status");
    if (!r.is_ok()) {
      if (r.status().code() != StatusCode::kNotFound && first.is_ok()) first = r.status();
      continue;
    }
    recorder_->event(*pod, "Warning", "NodeNotReady", "Node is not ready", "Pod", "v1");
  }
  return first;
}

Status NodeLifecycle::swap_taints(const Json& node, const std::vector<TaintRef>& add,
                                  const std::vector<TaintRef>& remove) {
  Json current = node;
  const std::string name = client::name_of(node);
  for (int attempt = 0; attempt < kNodeUpdateRetries; ++attempt) {
    if (attempt > 0) {
      auto fresh = ctx_.api.get(kNodes, "", name);
      if (!fresh.is_ok()) {
        return fresh.status().code() == StatusCode::kNotFound ? Status::ok() : fresh.status();
      }
      current = std::move(fresh.value());
    }
    const Json& taints = member(member(current, "spec"), "taints");
    Json next = Json::array();
    if (taints.is_array()) {
      for (const auto& t : taints) {
        bool drop = std::any_of(remove.begin(), remove.end(),
                                [&](const TaintRef& r) { return taint_matches(t, r); });
        if (!drop) next.push_back(t);
      }
    }
    for (const auto& a : add) {
      if (!taint_exists(next, a)) {
        next.push_back(
            {{"key", a.key}, {"effect", a.effect}, {"timeAdded", timestamp(ctx_.clock.now())}});
      }
    }
    if (next == (taints.is_array() ? taints : Json::array())) return Status::ok();
    if (next.empty()) {
      current["spec"].erase("taints");
    } else {
      current["spec"]["taints"] = std::move(next);
    }
    auto r = ctx_.api.update(kNodes, "", current);
    if (r.is_ok()) return Status::ok();
    if (r.status().code() == StatusCode::kNotFound) return Status::ok();
    if (r.status().code() != StatusCode::kAborted) return r.status();
  }
  return error(StatusCode::kAborted, "node " + name + " kept changing while updating its taints");
}

Status NodeLifecycle::sync(const std::string& key) {
  if (key.starts_with("node:")) return sync_no_schedule_taints(key.substr(5));
  if (key.starts_with("pod:")) return sync_pod(key.substr(4));
  return Status::ok();
}

Status NodeLifecycle::sync_no_schedule_taints(const std::string& node_name) {
  ObjectPtr node = nodes_.get(node_name);
  if (!node) return Status::ok();
  std::set<std::string> want;
  const Json& conditions = member(member(*node, "status"), "conditions");
  if (conditions.is_array()) {
    for (const auto& c : conditions) {
      if (const char* key = condition_taint(string_field(c, "type"), status_of(c))) {
        want.insert(key);
      }
    }
  }
  if (member(member(*node, "spec"), "unschedulable") == Json(true))
    want.insert(kTaintUnschedulable);
  std::set<std::string> have;
  const Json& taints = member(member(*node, "spec"), "taints");
  if (taints.is_array()) {
    for (const auto& t : taints) {
      std::string key = string_field(t, "key");
      if (string_field(t, "effect") != "NoSchedule") continue;
      if (key == kTaintUnschedulable || is_condition_taint_key(key)) have.insert(key);
    }
  }
  std::vector<TaintRef> add, remove;
  for (const auto& k : want) {
    if (!have.count(k)) add.push_back({k, "NoSchedule"});
  }
  for (const auto& k : have) {
    if (!want.count(k)) remove.push_back({k, "NoSchedule"});
  }
  if (add.empty() && remove.empty()) return Status::ok();
  return swap_taints(*node, add, remove);
}

Status NodeLifecycle::sync_pod(const std::string& pod_key) {
  ObjectPtr pod = pods_.get(pod_key);
  if (!pod) return Status::ok();
  std::string node_name = string_field(member(*pod, "spec"), "nodeName");
  Json ready;
  {
    std::lock_guard lock(health_mu_);
    auto it = health_.find(node_name);
    if (it == health_.end()) return Status::ok();  // not judged yet
    ready = it->second.ready;
  }
  if (ready.is_null()) return Status::ok();
  if (!nodes_.get(node_name)) {
    return error(StatusCode::kUnavailable, "node " + node_name + " not in the cache");
  }
  if (status_of(ready) == "True") return Status::ok();
  // A pod bound to a node that is not ready is not ready either.
  return mark_pods_not_ready({pod}, node_name);
}

class NodeLifecycleController final : public Controller {
 public:
  explicit NodeLifecycleController(ControllerContext& ctx)
      : index_added_(add_pods_by_node_index(ctx)),
        lifecycle_(ctx),
        eviction_(ctx, kPodsByNodeIndex) {}

  std::string_view name() const override { return "node-lifecycle-controller"; }
  void start() override {
    lifecycle_.start();
    eviction_.start();
  }
  void stop() override {
    eviction_.stop();
    lifecycle_.stop();
  }

 private:
  // Both halves look pods up by node; the index is registered before either is built.
  static bool add_pods_by_node_index(ControllerContext& ctx) {
    ctx.informers.informer(kPods).add_index(kPodsByNodeIndex, [](const Json& pod) {
      std::string node = string_field(member(pod, "spec"), "nodeName");
      return node.empty() ? std::vector<std::string>{} : std::vector<std::string>{node};
    });
    return true;
  }

  const bool index_added_;
  NodeLifecycle lifecycle_;
  TaintEviction eviction_;
};

}  // namespace
}  // namespace nodelifecycle

std::unique_ptr<Controller> new_nodelifecycle_controller(ControllerContext& ctx) {
  return std::make_unique<nodelifecycle::NodeLifecycleController>(ctx);
}

}  // namespace skiff::controllers
