#include "controllers/podgc/podgc_controller.h"

#include <algorithm>
#include <map>
#include <optional>

#include "base/log.h"
#include "base/time.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using client::resources::kNodes;
using client::resources::kPods;
using namespace std::chrono_literals;
using TimePoint = std::chrono::system_clock::time_point;

constexpr auto kPollInterval = 100ms;  // how often due work is looked for

bool is_terminated(const Json& pod) {
  std::string phase = string_field(member(pod, "status"), "phase");
  return phase == "Succeeded" || phase == "Failed";
}

bool is_deleting(const Json& pod) {
  return member(member(pod, "metadata"), "deletionTimestamp").is_string();
}

class PodGcController final : public Controller {
 public:
  explicit PodGcController(ControllerContext& ctx)
      : ctx_(ctx),
        pods_(ctx.informers.informer(kPods)),
        nodes_(ctx.informers.informer(kNodes)),
        poll_(kPollInterval, [this] { poll(); }) {}

  ~PodGcController() override { stop(); }

  std::string_view name() const override { return "pod-garbage-collector"; }

  void start() override { poll_.start(); }

  void stop() override { poll_.stop(); }

 private:
  void poll() {
    if (!pods_.has_synced() || !nodes_.has_synced()) return;
    TimePoint now = ctx_.clock.now();
    if (!last_ || now - *last_ >= ctx_.options.pod_gc_period || now < *last_) {
      last_ = now;
      gc(now);
    }
  }

  void gc(TimePoint now) {
    std::vector<ObjectPtr> pods = pods_.list();
    gc_terminated(pods);
    gc_orphaned(pods, now);
    gc_unscheduled_terminating(pods);
  }

  void gc_terminated(const std::vector<ObjectPtr>& pods) {
    const int64_t threshold = ctx_.options.terminated_pod_gc_threshold;
    if (threshold <= 0) return;
    std::vector<ObjectPtr> terminated;
    for (const auto& p : pods) {
      if (is_terminated(*p) && !is_deleting(*p)) terminated.push_back(p);
    }
    if (static_cast<int64_t>(terminated.size()) <= threshold) return;
    const size_t excess = terminated.size() - static_cast<size_t>(threshold);
    // Oldest first; the name breaks ties so the choice is stable.
    std::sort(terminated.begin(), terminated.end(), [](const ObjectPtr& a, const ObjectPtr& b) {
      std::string ta = string_field(member(*a, "metadata"), "creationTimestamp");
      std::string tb = string_field(member(*b, "metadata"), "creationTimestamp");
      if (ta != tb) return ta < tb;
      return client::key_of(*a) < client::key_of(*b);
    });
    SKIFF_LOG_INFO("podgc: {} terminated pods over the threshold of {}; deleting the oldest",
                   excess, threshold);
    for (size_t i = 0; i < excess; ++i) force_delete(*terminated[i]);
  }

  void gc_orphaned(const std::vector<ObjectPtr>& pods, TimePoint now) {
    std::map<std::string, std::vector<ObjectPtr>> by_missing_node;
    for (const auto& p : pods) {
      std::string node = string_field(member(*p, "spec"), "nodeName");
      if (node.empty() || nodes_.get("", node)) continue;
      by_missing_node[node].push_back(p);
    }
    // Forget quarantines of nodes that came back or lost their pods.
    for (auto it = absent_since_.begin(); it != absent_since_.end();) {
      it = by_missing_node.count(it->first) ? std::next(it) : absent_since_.erase(it);
    }
    for (const auto& [node, orphans] : by_missing_node) {
      auto [since, inserted] = absent_since_.emplace(node, now);
      // A node just created may not have reached the cache yet: wait, then ask the API.
      if (inserted || now - since->second < ctx_.options.pod_gc_orphan_quarantine) continue;
      auto fresh = ctx_.api.get(kNodes, "", node);
      if (fresh.is_ok()) continue;
      if (fresh.status().code() != StatusCode::kNotFound) {
        SKIFF_LOG_WARN("podgc: checking node {}: {}", node, fresh.status().message());
        continue;
      }
      for (const auto& pod : orphans) {
        SKIFF_LOG_INFO("podgc: deleting pod {} of deleted node {}", client::key_of(*pod), node);
        if (!is_terminated(*pod) && !mark_failed(*pod)) continue;
        force_delete(*pod);
      }
    }
  }

  void gc_unscheduled_terminating(const std::vector<ObjectPtr>& pods) {
    for (const auto& p : pods) {
      if (is_deleting(*p) && string_field(member(*p, "spec"), "nodeName").empty()) {
        SKIFF_LOG_INFO("podgc: deleting unscheduled terminating pod {}", client::key_of(*p));
        force_delete(*p);
      }
    }
  }

  // Upstream's status for a pod its controller loses: phase Failed, and a DisruptionTarget
  // condition saying who did it. False when the pod could not be updated.
  bool mark_failed(const Json& pod) {
    Json patch = {{"status",
                   {{"phase", "Failed"},
                    {"conditions",
                     {{{"type", "DisruptionTarget"},
                       {"status", "True"},
                       {"reason", "DeletionByPodGC"},
                       {"message", "PodGC: node no longer exists"},
                       {"lastTransitionTime", rfc3339(ctx_.clock.now_seconds())}}}}}}};
    auto r = ctx_.api.patch(kPods, client::namespace_of(pod), client::name_of(pod),
                            client::PatchType::kStrategicMerge, patch.dump(), {}, "status");
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) {
      SKIFF_LOG_WARN("podgc: marking {} failed: {}", client::key_of(pod), r.status().message());
      return false;
    }
    return true;
  }

  void force_delete(const Json& pod) {
    client::DeleteOptions o;
    o.grace_period_seconds = 0;
    o.precondition_uid = client::uid_of(pod);
    auto r = ctx_.api.remove(kPods, client::namespace_of(pod), client::name_of(pod), o);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound &&
        r.status().code() != StatusCode::kFailedPrecondition &&
        r.status().code() != StatusCode::kAborted) {
      SKIFF_LOG_WARN("podgc: deleting {}: {}", client::key_of(pod), r.status().message());
    }
  }

  ControllerContext& ctx_;
  client::Informer& pods_;
  client::Informer& nodes_;

  // The poll thread's own state.
  std::optional<TimePoint> last_;
  std::map<std::string, TimePoint> absent_since_;  // node name → first seen missing

  Ticker poll_;  // last: stopped before the state it uses is destroyed
};

}  // namespace

std::unique_ptr<Controller> new_podgc_controller(ControllerContext& ctx) {
  return std::make_unique<PodGcController>(ctx);
}

}  // namespace skiff::controllers
