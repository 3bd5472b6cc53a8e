#include "controllers/daemonset/daemonset_controller.h"

#include <algorithm>
#include <set>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/daemonset/daemonset_util.h"
#include "controllers/json_fields.h"
#include "controllers/statefulset/controller_history.h"

namespace skiff::controllers {
namespace {

using client::resources::kControllerRevisions;
using client::resources::kDaemonSets;
using client::resources::kNodes;
using client::resources::kPods;
using namespace daemonset;
using namespace std::chrono_literals;

constexpr char kKind[] = "DaemonSet";
constexpr char kApiVersion[] = "apps/v1";
constexpr int kStatusUpdateRetries = 1;
// Deleting failed daemon pods backs off from 1 s doubling to 15 min per node (the kubelet may
// keep rejecting the pod).
constexpr std::chrono::milliseconds kFailedPodBackoffInitial = 1s;
constexpr std::chrono::milliseconds kFailedPodBackoffMax = 15min;

bool is_terminal(const Json& pod) {
  std::string phase = pod_phase(pod);
  return phase == "Failed" || phase == "Succeeded";
}

// A selector that names no requirement at all: upstream refuses to let a DaemonSet select
// every pod.
bool selects_everything(const Json& ds) {
  const Json& sel = field(field(ds, "spec"), "selector");
  if (!sel.is_object()) return false;
  return field(sel, "matchLabels").empty() && field(sel, "matchExpressions").empty();
}

// At most one updated and one old pod that is not being deleted; ok false when there are more.
struct UpdatedPods {
  ObjectPtr new_pod;
  ObjectPtr old_pod;
  bool ok = true;
};
UpdatedPods find_updated_pods_on_node(const Json& ds, const std::vector<ObjectPtr>& pods,
                                      const std::string& hash) {
  UpdatedPods out;
  const auto generation = template_generation(ds);
  for (const auto& pod : pods) {
    if (is_being_deleted(*pod)) continue;
    ObjectPtr& slot = is_pod_updated(*pod, hash, generation) ? out.new_pod : out.old_pod;
    if (slot) return {nullptr, nullptr, false};
    slot = pod;
  }
  return out;
}

}  // namespace

DaemonSetController::DaemonSetController(ControllerContext& ctx)
    : ctx_(ctx),
      daemonsets_(ctx.informers.informer(kDaemonSets)),
      pods_(ctx.informers.informer(kPods)),
      nodes_(ctx.informers.informer(kNodes)),
      revisions_(ctx.informers.informer(kControllerRevisions)),
      expectations_(ctx.clock),
      recorder_(ctx.recorder ? ctx.recorder("daemonset-controller") : nullptr),
      workers_(
          "daemonset", queue_, [this](const std::string& key) { return reconcile(key); },
          [this] {
            return daemonsets_.has_synced() && pods_.has_synced() && nodes_.has_synced() &&
                   revisions_.has_synced();
          }),
      pod_events_(daemonsets_, queue_,
                  owned_pod_events_options(kKind, kDaemonSets.group, expectations_)) {
  daemonsets_.add_handlers(pod_events_.owner_handlers());
  pods_.add_handlers(pod_events_.pod_handlers());

  client::EventHandlers node_handlers;
  node_handlers.on_add = [this](const ObjectPtr& node) { on_node_add(node); };
  node_handlers.on_update = [this](const ObjectPtr& old_node, const ObjectPtr& cur_node) {
    on_node_update(old_node, cur_node);
  };
  // The desired count of every DaemonSet that ran there drops, and unscheduled pods meant for
  // the node must go.
  node_handlers.on_delete = [this](const ObjectPtr&) {
    for (const auto& ds : daemonsets_.list()) enqueue(*ds);
  };
  nodes_.add_handlers(std::move(node_handlers));

  revisions_.add_handlers(pod_events_.revision_handlers());
}

DaemonSetController::~DaemonSetController() {
  stop();
}

void DaemonSetController::start() {
  workers_.start(ctx_.options.workers);
}

void DaemonSetController::stop() {
  workers_.stop();
}

void DaemonSetController::enqueue(const Json& ds) {
  queue_.add(client::key_of(ds));
}

void DaemonSetController::on_node_add(const ObjectPtr& node) {
  for (const auto& ds : daemonsets_.list()) {
    if (node_should_run_daemon_pod(*node, *ds).should_run) enqueue(*ds);
  }
}

void DaemonSetController::on_node_update(const ObjectPtr& old_node, const ObjectPtr& cur_node) {
  // Heartbeats change only the status: eligibility depends on name, labels and taints.
  if (labels_of(*old_node) == labels_of(*cur_node) &&
      field(field(*old_node, "spec"), "taints") == field(field(*cur_node, "spec"), "taints")) {
    return;
  }
  for (const auto& ds : daemonsets_.list()) {
    NodeFit before = node_should_run_daemon_pod(*old_node, *ds);
    NodeFit after = node_should_run_daemon_pod(*cur_node, *ds);
    if (before.should_run != after.should_run ||
        before.should_continue_running != after.should_continue_running) {
      enqueue(*ds);
    }
  }
}

void DaemonSetController::record(const Json& ds, std::string_view type, std::string_view reason,
                                 std::string message) {
  if (recorder_) recorder_->event(ds, type, reason, std::move(message), kKind, kApiVersion);
}

bool DaemonSetController::in_backoff(const std::string& key,
                                     std::chrono::system_clock::time_point now,
                                     std::chrono::milliseconds* remaining) {
  std::lock_guard lock(backoff_mu_);
  auto it = backoff_.find(key);
  if (it == backoff_.end()) return false;
  auto elapsed = now - it->second.last_update;
  if (elapsed >= it->second.backoff) return false;
  *remaining = std::chrono::duration_cast<std::chrono::milliseconds>(it->second.backoff - elapsed);
  return true;
}

void DaemonSetController::backoff_next(const std::string& key,
                                       std::chrono::system_clock::time_point now) {
  std::lock_guard lock(backoff_mu_);
  // Entries untouched for twice the longest back-off start over (and are dropped here).
  for (auto it = backoff_.begin(); it != backoff_.end();) {
    if (now - it->second.last_update > 2 * kFailedPodBackoffMax) {
      it = backoff_.erase(it);
    } else {
      ++it;
    }
  }
  auto [it, inserted] = backoff_.try_emplace(key);
  BackoffEntry& e = it->second;
  e.backoff = inserted ? kFailedPodBackoffInitial : std::min(2 * e.backoff, kFailedPodBackoffMax);
  e.last_update = now;
}

Status DaemonSetController::reconcile(const std::string& key) {
  ObjectPtr cached = daemonsets_.get(key);
  if (!cached) {
    expectations_.forget(key);
    return Status::ok();
  }
  Json ds = *cached;
  apply_daemonset_defaults(ds);
  if (selects_everything(ds)) {
    record(ds, "Warning", "SelectingAll",
           "This daemon set is selecting all pods. A non-empty selector is required.");
    return Status::ok();
  }
  api::LabelSelector selector = selector_of(ds);
  if (selector.matches_nothing()) {
    SKIFF_LOG_WARN("daemonset: {} has an invalid selector", key);
    return Status::ok();
  }
  // Whether its revisions and pods still exist is the garbage collector's business now.
  if (is_being_deleted(ds)) return Status::ok();

  const std::vector<ObjectPtr> nodes = nodes_.list();
  SKIFF_ASSIGN_OR_RETURN(History history, construct_history(ds, selector));
  if (!expectations_.satisfied(key)) {
    // Only the status: the generation was not acted on.
    return update_status(*cached, ds, nodes, history, false, selector);
  }
  Status err = manage(ds, nodes, history.hash, key, selector);
  if (err.is_ok() && expectations_.satisfied(key) &&
      field(field(ds, "spec"), "updateStrategy").value("type", "") == "RollingUpdate") {
    err = rolling_update(ds, nodes, history.hash, key, selector);
  }
  if (err.is_ok()) err = cleanup_history(ds, history.old, selector);
  Status status_err = update_status(*cached, ds, nodes, history, true, selector);
  return err.is_ok() ? status_err : err;
}

Result<DaemonSetController::History> DaemonSetController::construct_history(
    const Json& ds, const api::LabelSelector& selector) {
  const std::string ns = client::namespace_of(ds);
  SKIFF_ASSIGN_OR_RETURN(
      std::vector<ObjectPtr> owned,
      claim_objects(
          ctx_.api, kControllerRevisions, ds, kKind, kApiVersion,
          [&](const Json& rev) { return labels_match(selector, rev); }, revisions_.list(ns)));
  History out;
  out.collision_count = int_field(field(ds, "status"), "collisionCount");
  const Json data = history::template_patch(ds);
  std::vector<ObjectPtr> current;
  auto split = [&](std::vector<ObjectPtr> revisions) -> Status {
    current.clear();
    out.old.clear();
    for (auto& rev : revisions) {
      // Older revisions may lack the hash label: their name stands in for it.
      if (history::revision_hash_label(*rev).empty()) {
        Json labelled = *rev;
        labelled["metadata"]["labels"][history::kControllerRevisionHashLabel] =
            client::name_of(*rev);
        auto updated = ctx_.api.update(kControllerRevisions, ns, labelled);
        if (!updated.is_ok()) return updated.status();
        rev = std::make_shared<const Json>(std::move(updated.value()));
      }
      if (history::equal_data(field(*rev, "data"), data)) {
        current.push_back(rev);
      } else {
        out.old.push_back(rev);
      }
    }
    return Status::ok();
  };
  SKIFF_RETURN_IF_ERROR(split(std::move(owned)));
  if (current.size() != 1 ||
      history::revision_number(*current.front()) <= history::max_revision(out.old)) {
    // The history changes: revision numbers are decided on the server's list, not on a cache
    // that may not show the latest revision yet.
    SKIFF_ASSIGN_OR_RETURN(std::vector<ObjectPtr> fresh,
                           history::list_owned(ctx_.api, ds, selector));
    SKIFF_RETURN_IF_ERROR(split(std::move(fresh)));
  }
  const int64_t next = history::max_revision(out.old) + 1;
  if (current.empty()) {
    Json candidate = history::new_revision(
        ds, kKind, kApiVersion,
        field(field(field(ds, "spec"), "template"), "metadata").value("labels", Json::object()),
        data, next, out.collision_count);
    SKIFF_ASSIGN_OR_RETURN(out.current, history::create_revision(ctx_.api, ds, std::move(candidate),
                                                                 out.collision_count));
  } else {
    SKIFF_ASSIGN_OR_RETURN(out.current, dedup_current(ds, current));
    if (history::revision_number(out.current) < next) {
      SKIFF_ASSIGN_OR_RETURN(out.current,
                             history::update_revision_number(ctx_.api, out.current, next));
    }
  }
  out.hash = history::revision_hash_label(out.current);
  if (out.hash.empty()) out.hash = client::name_of(out.current);
  return out;
}

Result<Json> DaemonSetController::dedup_current(const Json& ds, std::vector<ObjectPtr> current) {
  history::sort_revisions(current);
  Json keep = *current.back();
  if (current.size() == 1) return keep;
  const std::string keep_hash = history::revision_hash_label(keep);
  const std::string ns = client::namespace_of(ds);
  const std::string uid = client::uid_of(ds);
  for (size_t i = 0; i + 1 < current.size(); ++i) {
    const Json& dup = *current[i];
    const std::string dup_hash = history::revision_hash_label(dup);
    // Pods of the duplicate move to the kept revision's hash before it goes.
    for (const auto& pod : pods_.list(ns)) {
      if (!is_controlled_by(*pod, uid)) continue;
      if (field(labels_of(*pod), history::kControllerRevisionHashLabel) != dup_hash) continue;
      Json patch = {
          {"metadata", {{"labels", {{history::kControllerRevisionHashLabel, keep_hash}}}}}};
      auto r =
          ctx_.api.patch(kPods, ns, client::name_of(*pod), client::PatchType::kMerge, patch.dump());
      if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    }
    auto r = ctx_.api.remove(kControllerRevisions, ns, client::name_of(dup));
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
  }
  return keep;
}

Result<DaemonSetController::NodePods> DaemonSetController::nodes_to_daemon_pods(
    const Json& ds, const api::LabelSelector& selector) {
  SKIFF_ASSIGN_OR_RETURN(
      std::vector<ObjectPtr> pods,
      claim_pods(ctx_.api, ds, kKind, kApiVersion, selector, pods_.list(client::namespace_of(ds))));
  NodePods out;
  for (auto& pod : pods) {
    // Finished pods on their way out no longer count.
    if (is_terminal(*pod) && is_being_deleted(*pod)) continue;
    std::string node = target_node_name(*pod);
    if (node.empty()) continue;
    out[node].push_back(std::move(pod));
  }
  return out;
}

void DaemonSetController::pods_should_be_on_node(const Json& node, const NodePods& node_pods,
                                                 const Json& ds, const std::string& hash,
                                                 std::vector<std::string>& create_on,
                                                 std::vector<std::string>& to_delete) {
  const std::string node_name = client::name_of(node);
  const NodeFit fit = node_should_run_daemon_pod(node, ds);
  auto found = node_pods.find(node_name);
  const bool exists = found != node_pods.end() && !found->second.empty();
  if (fit.should_run && !exists) {
    create_on.push_back(node_name);
    return;
  }
  if (!fit.should_continue_running) {
    if (!exists) return;
    // The node does not take this daemon: its pods go.
    for (const auto& pod : found->second) {
      if (!is_being_deleted(*pod)) to_delete.push_back(client::name_of(*pod));
    }
    return;
  }
  if (!exists) return;
  std::vector<ObjectPtr> running;
  const auto now = ctx_.clock.now();
  for (const auto& pod : found->second) {
    if (is_being_deleted(*pod)) continue;
    const std::string phase = pod_phase(*pod);
    if (phase == "Failed") {
      // The kubelet may keep rejecting the pod: replace it, but back off per node.
      std::string backoff_key = client::uid_of(ds) + "/" + node_name;
      std::chrono::milliseconds remaining{0};
      if (in_backoff(backoff_key, now, &remaining)) {
        queue_.add_after(client::key_of(ds), remaining);
        continue;
      }
      backoff_next(backoff_key, now);
      record(ds, "Warning", "FailedDaemonPod",
             "Found failed daemon pod " + client::namespace_of(*pod) + "/" + client::name_of(*pod) +
                 " on node " + node_name + ", will try to kill it");
      to_delete.push_back(client::name_of(*pod));
    } else if (phase == "Succeeded") {
      to_delete.push_back(client::name_of(*pod));
    } else {
      running.push_back(pod);
    }
  }
  if (!allows_surge(ds)) {
    // One pod per node: the oldest stays.
    if (running.size() <= 1) return;
    sort_by_creation(running);
    for (size_t i = 1; i < running.size(); ++i) to_delete.push_back(client::name_of(*running[i]));
    return;
  }
  if (running.size() <= 1) {
    // Surging keeps at least one pod that is not being deleted.
    if (running.empty() && fit.should_run) create_on.push_back(node_name);
    return;
  }
  // Surging allows two pods: the oldest new one and the oldest old one, the old one only while
  // it is ready and the new one is not yet available.
  sort_by_creation(running);
  ObjectPtr oldest_new, oldest_old;
  for (const auto& pod : running) {
    bool updated = field(labels_of(*pod), kRevisionHashLabel) == hash;
    ObjectPtr& slot = updated ? oldest_new : oldest_old;
    if (!slot) {
      slot = pod;
      continue;
    }
    to_delete.push_back(client::name_of(*pod));
  }
  if (oldest_new && oldest_old) {
    int64_t min_ready = int_field(field(ds, "spec"), "minReadySeconds");
    if (!is_pod_ready(*oldest_old) ||
        is_pod_available(*oldest_new, min_ready, ctx_.clock.now_seconds())) {
      to_delete.push_back(client::name_of(*oldest_old));
    }
  }
}

Status DaemonSetController::manage(const Json& ds, const std::vector<ObjectPtr>& nodes,
                                   const std::string& hash, const std::string& key,
                                   const api::LabelSelector& selector) {
  SKIFF_ASSIGN_OR_RETURN(NodePods node_pods, nodes_to_daemon_pods(ds, selector));
  std::vector<std::string> create_on, to_delete;
  std::set<std::string> node_names;
  for (const auto& node : nodes) {
    node_names.insert(client::name_of(*node));
    pods_should_be_on_node(*node, node_pods, ds, hash, create_on, to_delete);
  }
  // Unscheduled pods meant for nodes that are gone would never be scheduled, and pod garbage
  // collection only removes pods bound to missing nodes.
  for (const auto& [node, pods] : node_pods) {
    if (node_names.count(node)) continue;
    for (const auto& pod : pods) {
      if (field(*pod, "spec").value("nodeName", "").empty() && !is_being_deleted(*pod)) {
        to_delete.push_back(client::name_of(*pod));
      }
    }
  }
  return sync_nodes(ds, to_delete, create_on, hash, key);
}

Status DaemonSetController::sync_nodes(const Json& ds, const std::vector<std::string>& to_delete,
                                       const std::vector<std::string>& create_on,
                                       const std::string& hash, const std::string& key) {
  const std::string ns = client::namespace_of(ds);
  const int create_count = std::min<int>(create_on.size(), kDaemonSetBurstReplicas);
  const int delete_count = std::min<int>(to_delete.size(), kDaemonSetBurstReplicas);
  std::vector<std::string> delete_keys;
  for (int i = 0; i < delete_count; ++i) delete_keys.push_back(client::key_of(ns, to_delete[i]));
  if (create_count == 0 && delete_count == 0) return Status::ok();
  // Expect before writing: the informer may see the results before the calls return.
  expectations_.expect(key, create_count, delete_keys);

  Json tmpl = field(field(ds, "spec"), "template");
  if (!tmpl.is_object()) tmpl = Json::object();
  if (!tmpl["spec"].is_object()) tmpl["spec"] = Json::object();
  add_daemon_tolerations(tmpl["spec"]);
  if (!tmpl["metadata"].is_object()) tmpl["metadata"] = Json::object();
  if (!tmpl["metadata"]["labels"].is_object()) tmpl["metadata"]["labels"] = Json::object();
  if (auto generation = template_generation(ds)) {
    tmpl["metadata"]["labels"][kTemplateGenerationLabel] = std::to_string(*generation);
  }
  if (!hash.empty()) tmpl["metadata"]["labels"][kRevisionHashLabel] = hash;

  Status first_error;
  // Slow start: batches of 1, 2, 4, ... so that a create that keeps failing (a quota, say)
  // is not sent for every node.
  int pos = 0;
  for (int batch = std::min(create_count, 1); batch > 0;
       batch = std::min(2 * batch, create_count - pos)) {
    bool batch_failed = false;
    for (int i = pos; i < pos + batch; ++i) {
      Json pod_template = tmpl;
      pod_template["spec"]["affinity"] =
          replace_node_name_affinity(field(pod_template["spec"], "affinity"), create_on[i]);
      Json pod = pod_from_template(pod_template, ds, kKind, kApiVersion, client::name_of(ds));
      auto created = ctx_.api.create(kPods, ns, pod);
      if (created.is_ok()) {
        record(ds, "Normal", "SuccessfulCreate",
               "Created pod: " + client::name_of(created.value()));
        continue;
      }
      expectations_.creation_observed(key);
      record(ds, "Warning", "FailedCreate", "Error creating: " + created.status().message());
      if (first_error.is_ok()) first_error = created.status();
      batch_failed = true;
    }
    pos += batch;
    if (batch_failed) {
      // The pods never tried will not be seen either; the next sync tries again.
      if (int skipped = create_count - pos; skipped > 0) {
        expectations_.creation_observed(key, skipped);
      }
      break;
    }
  }

  for (int i = 0; i < delete_count; ++i) {
    auto r = ctx_.api.remove(kPods, ns, to_delete[i]);
    if (r.is_ok()) {
      record(ds, "Normal", "SuccessfulDelete", "Deleted pod: " + to_delete[i]);
      continue;
    }
    expectations_.deletion_observed(key, delete_keys[i]);
    if (r.status().code() == StatusCode::kNotFound) continue;
    record(ds, "Warning", "FailedDelete", "Error deleting: " + r.status().message());
    if (first_error.is_ok()) first_error = r.status();
  }
  return first_error;
}

Status DaemonSetController::rolling_update(const Json& ds, const std::vector<ObjectPtr>& nodes,
                                           const std::string& hash, const std::string& key,
                                           const api::LabelSelector& selector) {
  SKIFF_ASSIGN_OR_RETURN(NodePods node_pods, nodes_to_daemon_pods(ds, selector));
  int desired = 0;
  for (const auto& node : nodes) {
    if (!node_should_run_daemon_pod(*node, ds).should_run) continue;
    ++desired;
    node_pods.try_emplace(client::name_of(*node));
  }
  SKIFF_ASSIGN_OR_RETURN(int max_unavailable, unavailable_count(ds, desired));
  SKIFF_ASSIGN_OR_RETURN(int max_surge, surge_count(ds, desired));
  // Neither surge nor unavailability configured: accept one unavailable pod.
  if (desired > 0 && max_unavailable == 0 && max_surge == 0) max_unavailable = 1;
  const int64_t now = ctx_.clock.now_seconds();
  const int64_t min_ready = int_field(field(ds, "spec"), "minReadySeconds");
  auto available = [&](const ObjectPtr& pod) { return is_pod_available(*pod, min_ready, now); };

  if (max_surge == 0) {
    // Delete just enough old pods to stay within maxUnavailable; manage() creates their
    // replacements. Unavailable old pods may always go.
    int unavailable = 0;
    std::vector<std::string> replace_now, candidates;
    for (const auto& [node, pods] : node_pods) {
      UpdatedPods up = find_updated_pods_on_node(ds, pods, hash);
      if (!up.ok) {
        ++unavailable;  // manage() prunes the extras first
        continue;
      }
      if ((!up.old_pod && !up.new_pod) || (up.old_pod && up.new_pod)) {
        ++unavailable;
      } else if (up.new_pod) {
        if (!available(up.new_pod)) ++unavailable;
      } else if (!available(up.old_pod)) {
        replace_now.push_back(client::name_of(*up.old_pod));
        ++unavailable;
      } else if (unavailable < max_unavailable) {
        candidates.push_back(client::name_of(*up.old_pod));
      }
    }
    int remaining =
        std::clamp(max_unavailable - unavailable, 0, static_cast<int>(candidates.size()));
    std::vector<std::string> to_delete = replace_now;
    to_delete.insert(to_delete.end(), candidates.begin(), candidates.begin() + remaining);
    return sync_nodes(ds, to_delete, {}, hash, key);
  }

  // Surge: start a new pod next to an old one (at most maxSurge at once, always where the old
  // one is unavailable), and delete the old pod once the new one is available.
  std::vector<std::string> to_delete, should_not_run, candidates, allowed;
  int surging = 0, num_available = 0;
  for (const auto& [node_name, pods] : node_pods) {
    UpdatedPods up = find_updated_pods_on_node(ds, pods, hash);
    if (!up.ok) {
      ++surging;
      continue;
    }
    if (up.old_pod) {
      if (available(up.old_pod)) ++num_available;
    } else if (up.new_pod) {
      if (available(up.new_pod)) ++num_available;
    }
    if (!up.old_pod) continue;  // manage() takes care of this node
    if (!up.new_pod) {
      ObjectPtr node = nodes_.get(node_name);
      bool should_run = node && node_should_run_daemon_pod(*node, ds).should_run;
      if (!available(up.old_pod)) {
        if (!should_run) {
          to_delete.push_back(client::name_of(*up.old_pod));
        } else {
          allowed.push_back(node_name);
        }
        continue;
      }
      if (!should_run) {
        should_not_run.push_back(client::name_of(*up.old_pod));
        continue;
      }
      if (surging >= max_surge) continue;
      candidates.push_back(node_name);
      continue;
    }
    // Both pods: wait for the new one, then retire the old.
    if (!available(up.new_pod)) {
      ++surging;
      continue;
    }
    to_delete.push_back(client::name_of(*up.old_pod));
  }
  // Old pods on nodes that no longer take the daemon go only while enough others are
  // available, so a change of node selection never leaves the daemon unavailable.
  if (int deletable = num_available - desired; deletable > 0) {
    deletable = std::min(deletable, static_cast<int>(should_not_run.size()));
    to_delete.insert(to_delete.end(), should_not_run.begin(), should_not_run.begin() + deletable);
  }
  int remaining = std::clamp(max_surge - surging, 0, static_cast<int>(candidates.size()));
  std::vector<std::string> create_on = allowed;
  create_on.insert(create_on.end(), candidates.begin(), candidates.begin() + remaining);
  return sync_nodes(ds, to_delete, create_on, hash, key);
}

Status DaemonSetController::cleanup_history(const Json& ds, const std::vector<ObjectPtr>& old,
                                            const api::LabelSelector& selector) {
  const int64_t limit = int_field(field(ds, "spec"), "revisionHistoryLimit", 10);
  int64_t to_kill = static_cast<int64_t>(old.size()) - limit;
  if (to_kill <= 0) return Status::ok();
  SKIFF_ASSIGN_OR_RETURN(NodePods node_pods, nodes_to_daemon_pods(ds, selector));
  std::set<std::string> live_hashes;
  for (const auto& [node, pods] : node_pods) {
    for (const auto& pod : pods) {
      const Json& hash = field(labels_of(*pod), kRevisionHashLabel);
      if (hash.is_string() && !hash.get<std::string>().empty()) {
        live_hashes.insert(hash.get<std::string>());
      }
    }
  }
  std::vector<ObjectPtr> sorted = old;
  history::sort_revisions(sorted);
  for (const auto& rev : sorted) {
    if (to_kill <= 0) break;
    if (live_hashes.count(history::revision_hash_label(*rev))) continue;
    auto r =
        ctx_.api.remove(kControllerRevisions, client::namespace_of(*rev), client::name_of(*rev));
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    --to_kill;
  }
  return Status::ok();
}

Status DaemonSetController::update_status(const Json& cached, const Json& ds,
                                          const std::vector<ObjectPtr>& nodes,
                                          const History& history, bool update_observed_generation,
                                          const api::LabelSelector& selector) {
  SKIFF_ASSIGN_OR_RETURN(NodePods node_pods, nodes_to_daemon_pods(ds, selector));
  int64_t desired = 0, current = 0, misscheduled = 0, ready = 0, updated = 0, available = 0;
  const int64_t now = ctx_.clock.now_seconds();
  const int64_t min_ready = int_field(field(ds, "spec"), "minReadySeconds");
  const auto generation = template_generation(ds);
  for (const auto& node : nodes) {
    const NodeFit fit = node_should_run_daemon_pod(*node, ds);
    auto it = node_pods.find(client::name_of(*node));
    const bool scheduled = it != node_pods.end() && !it->second.empty();
    if (!fit.should_run) {
      if (scheduled) ++misscheduled;
      continue;
    }
    ++desired;
    if (!scheduled) continue;
    ++current;
    std::vector<ObjectPtr> pods = it->second;
    sort_by_creation(pods);
    const Json& pod = *pods.front();
    if (is_pod_ready(pod)) {
      ++ready;
      if (is_pod_available(pod, min_ready, now)) ++available;
    }
    if (is_pod_updated(pod, history.hash, generation)) ++updated;
  }

  const Json& old = field(cached, "status");
  Json status = old.is_object() ? old : Json::object();
  status["desiredNumberScheduled"] = desired;
  status["currentNumberScheduled"] = current;
  status["numberMisscheduled"] = misscheduled;
  status["numberReady"] = ready;
  // Zero values of the omitempty fields are left out, as upstream writes them.
  auto set_count = [&](const char* name, int64_t v) {
    if (v == 0) {
      status.erase(name);
    } else {
      status[name] = v;
    }
  };
  set_count("updatedNumberScheduled", updated);
  set_count("numberAvailable", available);
  set_count("numberUnavailable", desired - available);
  if (update_observed_generation) {
    set_count("observedGeneration", int_field(field(cached, "metadata"), "generation"));
  }
  if (history.collision_count > 0 || status.contains("collisionCount")) {
    status["collisionCount"] = history.collision_count;
  }
  if (min_ready > 0 && ready != available) {
    queue_.add_after(client::key_of(cached), std::chrono::seconds(min_ready));
  }
  if (old == status) return Status::ok();

  Json obj = cached;
  obj["status"] = status;
  const std::string ns = client::namespace_of(cached);
  for (int attempt = 0;; ++attempt) {
    auto r = ctx_.api.update(kDaemonSets, ns, obj, {}, "status");
    if (r.is_ok() || attempt >= kStatusUpdateRetries) return r.status();
    auto fresh = ctx_.api.get(kDaemonSets, ns, client::name_of(cached));
    if (!fresh.is_ok()) return fresh.status();
    obj = std::move(fresh.value());
    obj["status"] = status;
  }
}

std::unique_ptr<Controller> new_daemonset_controller(ControllerContext& ctx) {
  return std::make_unique<DaemonSetController>(ctx);
}

}  // namespace skiff::controllers
