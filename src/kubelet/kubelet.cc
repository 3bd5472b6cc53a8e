#include "kubelet/kubelet.h"

#include <unistd.h>

#include <filesystem>

#include "base/kubeconfig.h"
#include "base/log.h"
#include "kubelet/eviction.h"
#include "kubelet/json_fields.h"
#include "kubelet/static_pods.h"

namespace skiff::kubelet {
namespace {

using client::resources::kConfigMaps;
using client::resources::kPods;
using client::resources::kSecrets;
using std::chrono::milliseconds;

bool is_terminal(const Json& pod) {
  std::string phase = member(pod, "status").value("phase", "");
  return phase == "Succeeded" || phase == "Failed";
}

// Whether an update of a pod is one its worker must act on. The kubelet's own status writes come
// back as updates that change only the status (and the bookkeeping metadata every write changes);
// syncing for those would sync the pod again at once, turning the ErrImagePull just written into
// ImagePullBackOff within milliseconds, and upstream's kubelet does not sync for them either. A
// new phase still counts: a pod that reached Succeeded or Failed is then stopped.
bool needs_sync(const Json& old_pod, const Json& new_pod) {
  if (str(member(old_pod, "status"), "phase") != str(member(new_pod, "status"), "phase")) {
    return true;
  }
  auto without_status = [](Json pod) {
    pod.erase("status");
    if (pod.contains("metadata") && pod["metadata"].is_object()) {
      pod["metadata"].erase("resourceVersion");
      pod["metadata"].erase("managedFields");
    }
    return pod;
  };
  return without_status(old_pod) != without_status(new_pod);
}

}  // namespace

ObjectSource api_object_source(client::ApiClient& api, client::Informer* services) {
  ObjectSource source;
  if (services != nullptr) {
    source.services = [services](const std::string& ns) {
      std::vector<Json> out;
      for (const auto& svc : services->list(ns)) out.push_back(*svc);
      return out;
    };
  }
  source.config_map = [&api](
                          const std::string& ns,
                          const std::string& name) -> Result<std::map<std::string, std::string>> {
    SKIFF_ASSIGN_OR_RETURN(Json cm, api.get(kConfigMaps, ns, name));
    std::map<std::string, std::string> data;
    for (const char* field : {"data", "binaryData"}) {
      const Json& d = member(cm, field);
      if (!d.is_object()) continue;
      for (auto& [k, v] : d.items()) {
        if (!v.is_string()) continue;
        if (std::string(field) == "data") {
          data[k] = v.get<std::string>();
        } else if (auto decoded = base64_decode(v.get<std::string>()); decoded.is_ok()) {
          data[k] = *decoded;
        }
      }
    }
    return data;
  };
  source.secret = [&api](const std::string& ns,
                         const std::string& name) -> Result<std::map<std::string, std::string>> {
    SKIFF_ASSIGN_OR_RETURN(Json secret, api.get(kSecrets, ns, name));
    std::map<std::string, std::string> data;
    const Json& d = member(secret, "data");
    if (d.is_object()) {
      for (auto& [k, v] : d.items()) {
        if (!v.is_string()) continue;
        auto decoded = base64_decode(v.get<std::string>());
        if (decoded.is_ok()) data[k] = *decoded;
      }
    }
    return data;
  };
  return source;
}

PodManager::PodManager(client::ApiClient& api, cri::RuntimeService& runtime,
                       cri::ImageService& images, PodManagerOptions options)
    : api_(api),
      cri_(runtime),
      options_(std::move(options)),
      services_(api, client::resources::kServices),
      volumes_(options_.pods_dir, api_object_source(api)),
      runtime_(runtime, images, options_.node, volumes_, api_object_source(api, &services_),
               options_.backoff),
      pods_(api, kPods,
            client::InformerOptions{.field_selector = "spec.nodeName=" + options_.node.node_name}),
      queue_(milliseconds(200), milliseconds(10000)),
      recorder_(api, "kubelet", options_.node.node_name),
      prober_(runtime, Prober::Callbacks{
                           .on_change = [this](const std::string& uid) { queue_.add(uid); },
                           .on_failure =
                               [this](const Json& pod, const std::string& container, ProbeType type,
                                      const std::string& message, bool restarting) {
                                 recorder_.event(pod, "Warning", "Unhealthy",
                                                 std::string(probe_type_name(type)) +
                                                     " probe failed: " + message);
                                 if (restarting) {
                                   recorder_.event(
                                       pod, "Normal", "Killing",
                                       "Container " + container + " failed " +
                                           (type == ProbeType::kLiveness ? "liveness" : "startup") +
                                           " probe, will be restarted");
                                 }
                               },
                       }) {
  runtime_.set_event_sink([this](const Json& pod, const std::string& type,
                                 const std::string& reason, const std::string& message) {
    // A static pod's events are about its mirror pod (same name), as upstream.
    recorder_.event(pod, type, reason, message);
  });
  pods_.add_handlers({
      .on_add = [this](const client::ObjectPtr& pod) { set_pod(pod); },
      .on_update =
          [this](const client::ObjectPtr& old_pod, const client::ObjectPtr& pod) {
            set_pod(pod, old_pod == nullptr || needs_sync(*old_pod, *pod));
          },
      .on_delete =
          [this](const client::ObjectPtr& pod) {
            if (is_mirror_pod(*pod)) return;  // the static loop recreates it
            std::string uid = client::uid_of(*pod);
            {
              std::lock_guard lock(mu_);
              auto it = entries_.find(uid);
              if (it != entries_.end()) it->second.pod = nullptr;
            }
            queue_.add(uid);
          },
  });
}

PodManager::~PodManager() {
  stop();
}

void PodManager::set_pod(const client::ObjectPtr& pod, bool wake) {
  if (is_mirror_pod(*pod)) return;  // its static pod is what runs
  std::string uid = client::uid_of(*pod);
  {
    std::lock_guard lock(mu_);
    entries_[uid].pod = pod;
  }
  if (wake) queue_.add(uid);
}

void PodManager::start() {
  std::error_code ec;
  std::filesystem::create_directories(options_.pods_dir, ec);
  services_.start();
  pods_.start();
  for (int i = 0; i < options_.workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  threads_.emplace_back([this] { pleg_loop(); });
  // The static loop always runs: POST /pods may add static pods at any time.
  threads_.emplace_back([this] { static_loop(); });
  if (!options_.manifest_url.empty()) threads_.emplace_back([this] { url_loop(); });
}

void PodManager::stop() {
  if (stopping_.exchange(true)) return;
  pleg_cv_.notify_all();
  pods_.stop();
  services_.stop();
  queue_.shut_down();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

bool PodManager::wait_for_sync(milliseconds timeout) const {
  return pods_.wait_for_sync(timeout);
}

size_t PodManager::pods_tracked() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

Json PodManager::pod_list() const {
  Json items = Json::array();
  for (const auto& pod : pods_.list()) items.push_back(*pod);
  return {{"kind", "PodList"},
          {"apiVersion", "v1"},
          {"metadata", Json::object()},
          {"items", std::move(items)}};
}

Result<client::ObjectPtr> PodManager::find_pod(const std::string& ns, const std::string& name) {
  auto pod = pods_.get(ns, name);
  if (pod != nullptr && is_mirror_pod(*pod)) {
    // A static pod's mirror: its containers are the static pod's.
    std::string uid = (*pod)["metadata"]["annotations"].value(kConfigMirrorAnnotation, "");
    std::lock_guard lock(mu_);
    auto it = entries_.find(uid);
    pod = it != entries_.end() ? it->second.pod : nullptr;
  }
  if (pod == nullptr) return error(StatusCode::kNotFound, "pod \"" + name + "\" does not exist");
  return pod;
}

Result<std::string> PodManager::running_container(const std::string& ns, const std::string& name,
                                                  const std::string& container) {
  SKIFF_ASSIGN_OR_RETURN(LogLocation loc, container_log(ns, name, container));
  if (!loc.running) {
    return error(StatusCode::kFailedPrecondition,
                 "container \"" + container + "\" in pod \"" + name + "\" is not running");
  }
  return loc.container_id;
}

Result<std::string> PodManager::run_in_container(const std::string& ns, const std::string& name,
                                                 const std::string& uid,
                                                 const std::string& container,
                                                 const std::vector<std::string>& cmd) {
  if (!uid.empty()) {
    SKIFF_ASSIGN_OR_RETURN(client::ObjectPtr pod, find_pod(ns, name));
    if (client::uid_of(*pod) != uid) {
      return error(StatusCode::kNotFound,
                   "pod \"" + name + "\" with UID " + uid + " does not exist");
    }
  }
  SKIFF_ASSIGN_OR_RETURN(std::string id, running_container(ns, name, container));
  SKIFF_ASSIGN_OR_RETURN(v1::ExecSyncResponse done, cri_.exec_sync(id, cmd, 0));
  if (done.exit_code() != 0) {
    std::string joined;
    for (const std::string& arg : cmd) joined += (joined.empty() ? "" : " ") + arg;
    return error(StatusCode::kInternal, "command '" + joined + "' exited with " +
                                            std::to_string(done.exit_code()) + ": " +
                                            done.stderr());
  }
  return done.stdout() + done.stderr();
}

Result<std::string> PodManager::ready_sandbox(const std::string& ns, const std::string& name) {
  SKIFF_ASSIGN_OR_RETURN(client::ObjectPtr pod, find_pod(ns, name));
  SKIFF_ASSIGN_OR_RETURN(RuntimePod runtime, runtime_.inspect(client::uid_of(*pod)));
  const RuntimeSandbox* sandbox = runtime.ready_sandbox();
  if (sandbox == nullptr) {
    return error(StatusCode::kNotFound, "pod \"" + name + "\" has no running sandbox");
  }
  return sandbox->id;
}

Result<PodManager::LogLocation> PodManager::container_log(const std::string& ns,
                                                          const std::string& name,
                                                          const std::string& container) {
  SKIFF_ASSIGN_OR_RETURN(client::ObjectPtr pod, find_pod(ns, name));
  bool known = false;
  for (const char* list : {"containers", "initContainers"}) {
    for (const Json& c : member(member(*pod, "spec"), list)) {
      if (member(c, "name") == container) known = true;
    }
  }
  if (!known) {
    return error(StatusCode::kNotFound,
                 "container \"" + container + "\" not found in pod \"" + name + "\"");
  }
  SKIFF_ASSIGN_OR_RETURN(RuntimePod runtime, runtime_.inspect(client::uid_of(*pod)));
  const RuntimeContainer* latest = runtime.latest(container);
  if (latest == nullptr) {
    return error(StatusCode::kFailedPrecondition,
                 "container \"" + container + "\" in pod \"" + name +
                     "\" is waiting to start: " + "ContainerCreating");
  }
  LogLocation loc;
  loc.dir = pod_log_dir(options_.node, *pod) + "/" + container;
  loc.restart_count = static_cast<int>(latest->restart_count);
  loc.running = latest->state == v1::CONTAINER_RUNNING;
  loc.container_id = latest->id;
  return loc;
}

std::vector<Json> PodManager::active_pods() const {
  std::vector<Json> out;
  std::lock_guard lock(mu_);
  for (const auto& [uid, e] : entries_) {
    if (e.pod == nullptr || !e.evicted.empty() || is_terminal(*e.pod) ||
        (*e.pod)["metadata"].contains("deletionTimestamp") || e.is_static) {
      continue;  // upstream never evicts static (critical) pods
    }
    out.push_back(*e.pod);
  }
  return out;
}

void PodManager::evict(const std::string& uid, const std::string& message,
                       int64_t grace_period_seconds) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(uid);
    if (it == entries_.end()) return;
    it->second.evicted = message;
    it->second.eviction_grace = std::max<int64_t>(grace_period_seconds, 0);
  }
  queue_.add(uid);
}

bool PodManager::container_running(const std::string& container_id) {
  auto status = cri_.container_status(container_id);
  return status.is_ok() && status->state() == v1::CONTAINER_RUNNING;
}

void PodManager::worker_loop() {
  // Containers started before the Services are known would miss their service variables.
  services_.wait_for_sync(milliseconds(10000));
  while (auto uid = queue_.get()) {
    Status s = sync(*uid);
    if (!s.is_ok()) {
      SKIFF_LOG_WARN("kubelet: syncing pod {}: {}", *uid, s.to_string());
      queue_.add_rate_limited(*uid);
    } else {
      queue_.forget(*uid);
    }
    queue_.done(*uid);
  }
}

Status PodManager::sync(const std::string& uid) {
  Entry entry;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(uid);
    if (it != entries_.end()) entry = it->second;
  }
  SKIFF_ASSIGN_OR_RETURN(RuntimePod runtime, runtime_.inspect(uid));
  if (entry.pod == nullptr) return clean_up(uid, runtime);
  const Json& pod = *entry.pod;
  const Json& meta = pod["metadata"];

  if (!entry.evicted.empty() && !is_terminal(pod) && !meta.contains("deletionTimestamp")) {
    // Evicted: stop everything (at once for a hard eviction, with the grace the eviction
    // manager gave a soft one) and end the pod Failed, reason Evicted.
    prober_.forget_pod(uid);
    recorder_.event(pod, "Warning", "Evicted", entry.evicted);
    if (runtime.any_running()) {
      SKIFF_RETURN_IF_ERROR(runtime_.kill(runtime, entry.eviction_grace, &pod));
      SKIFF_ASSIGN_OR_RETURN(runtime, runtime_.inspect(uid));
    }
    Json status = runtime_.pod_status(pod, runtime, {}, {});
    status["phase"] = "Failed";
    status["reason"] = "Evicted";
    status["message"] = entry.evicted;
    return write_status(pod, status, &entry);
  }
  if (meta.contains("deletionTimestamp") || is_terminal(pod)) {
    // Terminating: stop everything, report the final status.
    prober_.forget_pod(uid);
    if (runtime.any_running()) {
      int64_t grace = grace_period_seconds(pod);
      if (!meta.contains("deletionTimestamp")) grace = 0;
      SKIFF_RETURN_IF_ERROR(runtime_.kill(runtime, grace, &pod));
      SKIFF_ASSIGN_OR_RETURN(runtime, runtime_.inspect(uid));
    }
    Json status = runtime_.pod_status(pod, runtime, {}, {});
    if (meta.contains("deletionTimestamp") && !is_terminal(pod)) {
      // Upstream: a deleted pod whose containers were stopped ends Failed unless all succeeded.
      bool all_succeeded = true;
      for (const Json& s : status["containerStatuses"]) {
        const Json& t = member(member(s, "state"), "terminated");
        if (!t.is_object() || t.value("exitCode", 1) != 0) all_succeeded = false;
      }
      status["phase"] = all_succeeded ? "Succeeded" : "Failed";
    }
    SKIFF_RETURN_IF_ERROR(write_status(pod, status, &entry));
    if (meta.contains("deletionTimestamp")) {
      client::DeleteOptions options;
      options.grace_period_seconds = 0;
      options.precondition_uid = uid;
      auto removed =
          api_.remove(kPods, meta.value("namespace", ""), meta.value("name", ""), options);
      if (!removed.is_ok() && removed.status().code() != StatusCode::kNotFound &&
          removed.status().code() != StatusCode::kAborted) {
        return removed.status();
      }
    }
    return Status::ok();
  }

  if (!entry.admitted && runtime.empty()) {
    SKIFF_ASSIGN_OR_RETURN(bool admitted, admit(uid, pod, &entry));
    if (!admitted) return Status::ok();
  } else if (!entry.admitted) {
    // Something in the runtime: admitted before, by a kubelet that restarted.
    std::lock_guard lock(mu_);
    auto it = entries_.find(uid);
    if (it != entries_.end()) it->second.admitted = true;
  }
  SyncResult result = runtime_.sync(pod, runtime);
  if (!result.status.is_ok()) {
    SKIFF_LOG_INFO("kubelet: pod {}/{}: {}", meta.value("namespace", ""), meta.value("name", ""),
                   result.status.to_string());
  }
  SKIFF_ASSIGN_OR_RETURN(RuntimePod after, runtime_.inspect(uid));
  // Probes follow the running containers.
  const RuntimeSandbox* sandbox = after.ready_sandbox();
  std::string pod_ip = sandbox != nullptr ? sandbox->ip : "";
  std::vector<std::string> running;
  for (const Json& c : pod["spec"].value("containers", Json::array())) {
    std::string name = c.value("name", "");
    const RuntimeContainer* rc = after.latest(name);
    if (rc == nullptr || rc->state != v1::CONTAINER_RUNNING) continue;
    running.push_back(name);
    prober_.ensure(pod, c, rc->id, pod_ip);
  }
  prober_.retain(uid, running);
  Json status = runtime_.pod_status(pod, after, result, prober_.readiness(uid));
  if (!result.sandbox_error.empty()) {
    for (Json& c : status["conditions"]) {
      if (c["type"] == "PodReadyToStartContainers") c["message"] = result.sandbox_error;
    }
  }
  SKIFF_RETURN_IF_ERROR(write_status(pod, status, &entry));
  runtime_.prune_dead(after);
  milliseconds next = options_.resync_period;
  if (result.retry_after && *result.retry_after < next) next = *result.retry_after;
  queue_.add_after(uid, next);
  return Status::ok();
}

Result<bool> PodManager::admit(const std::string& uid, const Json& pod, Entry* entry) {
  std::string reason, message;
  if (options_.node_pressure) {
    message = pressure_admission(pod, entry->is_static, options_.node_pressure());
    if (!message.empty()) reason = "Evicted";
  }
  // One admission at a time, so two new pods never both take the last room. Critical pods are
  // admitted as they are: upstream would evict others to make room for them.
  std::lock_guard admitting(admit_mu_);
  if (reason.empty() && options_.allocatable && !is_critical_pod(pod, entry->is_static)) {
    std::vector<Json> active;
    {
      std::lock_guard lock(mu_);
      for (const auto& [other_uid, e] : entries_) {
        if (other_uid == uid || !e.admitted || e.pod == nullptr || is_terminal(*e.pod)) continue;
        active.push_back(*e.pod);
      }
    }
    Admission fit = resource_admission(pod, active, options_.allocatable());
    reason = fit.reason;
    message = fit.message;
  }
  if (reason.empty()) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(uid);
    if (it != entries_.end()) it->second.admitted = true;
    return true;
  }
  const Json& meta = pod["metadata"];
  SKIFF_LOG_INFO("kubelet: pod {}/{} rejected: {}", meta.value("namespace", ""),
                 meta.value("name", ""), message);
  recorder_.event(pod, "Warning", reason, message);
  Json status = {
      {"phase", "Failed"}, {"reason", reason}, {"message", "Pod was rejected: " + message}};
  SKIFF_RETURN_IF_ERROR(write_status(pod, status, entry));
  return false;
}

Status PodManager::write_status(const Json& pod, const Json& status, Entry* snapshot) {
  std::string text = status.dump();
  std::string uid = client::uid_of(pod);
  if (text == snapshot->written_status || status == member(pod, "status")) return Status::ok();
  Json patch = {{"status", status}};
  const Json& meta = pod["metadata"];
  auto written = api_.patch(kPods, meta.value("namespace", ""), meta.value("name", ""),
                            client::PatchType::kMerge, patch.dump(), {}, "status");
  if (!written.is_ok()) {
    if (written.status().code() == StatusCode::kNotFound) return Status::ok();  // gone
    return written.status();
  }
  std::lock_guard lock(mu_);
  auto it = entries_.find(uid);
  if (it != entries_.end()) it->second.written_status = std::move(text);
  return Status::ok();
}

Status PodManager::clean_up(const std::string& uid, const RuntimePod& runtime) {
  if (!runtime.empty()) {
    int64_t grace = 0;
    for (const RuntimeContainer& c : runtime.containers) grace = std::max(grace, c.grace_seconds);
    SKIFF_RETURN_IF_ERROR(runtime_.kill(runtime, runtime.any_running() ? grace : 0));
    SKIFF_RETURN_IF_ERROR(runtime_.remove(runtime));
  }
  prober_.forget_pod(uid);
  SKIFF_RETURN_IF_ERROR(volumes_.tear_down(uid));
  remove_cgroups(uid);
  runtime_.forget(uid);
  std::lock_guard lock(mu_);
  auto it = entries_.find(uid);
  if (it != entries_.end() && it->second.pod == nullptr) entries_.erase(it);
  return Status::ok();
}

void PodManager::remove_cgroups(const std::string& uid) {
  std::string parent = pod_cgroup_parent(options_.node, uid);
  if (parent.empty()) return;
  std::error_code ec;
  for (const auto& hierarchy : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    std::string dir = hierarchy.path().string() + parent;
    // runc removes the containers' leaf cgroups; the pod's own directory is ours to remove.
    if (std::filesystem::is_directory(dir, ec)) ::rmdir(dir.c_str());
  }
}

void PodManager::static_loop() {
  auto next_full = std::chrono::steady_clock::now();
  while (!stopping_) {
    auto now = std::chrono::steady_clock::now();
    bool full = now >= next_full;
    if (full) next_full = now + options_.manifest_period;
    if (pods_.has_synced()) sync_static_pods(full);
    std::unique_lock lock(pleg_mu_);
    pleg_cv_.wait_for(lock, options_.manifest_check_period,
                      [&] { return stopping_.load() || sources_changed_.load(); });
  }
}

void PodManager::poke_static_loop() {
  sources_changed_ = true;
  std::lock_guard lock(pleg_mu_);
  pleg_cv_.notify_all();
}

void PodManager::url_loop() {
  const std::string& url = options_.manifest_url;
  while (!stopping_) {
    Result<std::string> body = fetch_manifest_url(url, options_.manifest_url_headers);
    if (!body.is_ok()) {
      SKIFF_LOG_WARN("kubelet: static pods: {} (keeping the last good pods)",
                     body.status().message());
    } else if (auto pods = static_pods_from(*body, url, options_.node.node_name, kHttpSource);
               !pods.is_ok()) {
      SKIFF_LOG_WARN("kubelet: static pods from {}: {} (keeping the last good pods)", url,
                     pods.status().message());
    } else {
      auto uids = [](const std::vector<Json>& list) {
        std::vector<std::string> out;
        for (const Json& p : list) out.push_back(p["metadata"].value("uid", ""));
        return out;
      };
      bool changed = false;
      {
        std::lock_guard lock(sources_mu_);
        if (uids(url_pods_) != uids(*pods) || !url_fetched_) {
          url_pods_ = std::move(pods).value();
          changed = true;
        }
      }
      if (changed) poke_static_loop();
    }
    if (!url_fetched_.exchange(true)) poke_static_loop();
    std::unique_lock lock(pleg_mu_);
    pleg_cv_.wait_for(lock, options_.manifest_url_period, [&] { return stopping_.load(); });
  }
}

namespace {

// RFC 1123 subdomain (names) or label (namespaces), as the API server checks them.
bool valid_dns_name(const std::string& name, size_t max, bool dots) {
  if (name.empty() || name.size() > max) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front()) || !alnum(name.back())) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (alnum(c) || c == '-') continue;
    if (c == '.' && dots && name[i - 1] != '.' && name[i - 1] != '-' && alnum(name[i + 1])) {
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

Result<Json> PodManager::add_api_pod(const std::string& manifest) {
  SKIFF_ASSIGN_OR_RETURN(
      std::vector<Json> pods,
      static_pods_from(manifest, "request body", options_.node.node_name, kApiSource));
  if (pods.size() != 1) {
    return error(StatusCode::kInvalidArgument,
                 "request body: want exactly one Pod, found " + std::to_string(pods.size()));
  }
  Json pod = std::move(pods[0]);
  const Json& meta = pod["metadata"];
  std::string name = meta.value("name", "");
  std::string ns = meta.is_object() && meta["namespace"].is_string()
                       ? meta["namespace"].get<std::string>()
                       : std::string();
  if (!valid_dns_name(name, 253, true)) {
    return error(StatusCode::kInvalidArgument,
                 "request body: metadata.name: Invalid value: \"" + name +
                     "\": must be a lowercase RFC 1123 subdomain (with the node name appended)");
  }
  if (!valid_dns_name(ns, 63, false)) {
    return error(StatusCode::kInvalidArgument,
                 "request body: metadata.namespace: Invalid value: \"" + ns +
                     "\": must be a lowercase RFC 1123 label");
  }
  {
    std::lock_guard lock(sources_mu_);
    if (api_pods_.count(name)) {
      return error(StatusCode::kAlreadyExists,
                   "pod \"" + name + "\" already exists (added through the kubelet's API)");
    }
    auto taken = static_names_.find(ns + "/" + name);
    if (taken != static_names_.end()) {
      return error(StatusCode::kAlreadyExists, "pod \"" + name +
                                                   "\" already exists (a static pod from the " +
                                                   taken->second + " source)");
    }
    api_pods_[name] = pod;
  }
  SKIFF_LOG_INFO("kubelet: static pod {}/{} added through the kubelet's API", ns, name);
  poke_static_loop();
  return pod;
}

Status PodManager::remove_api_pod(const std::string& name) {
  {
    std::lock_guard lock(sources_mu_);
    if (api_pods_.erase(name) == 0) {
      return error(StatusCode::kNotFound, "pod \"" + name + "\" not found");
    }
  }
  SKIFF_LOG_INFO("kubelet: static pod {} removed through the kubelet's API", name);
  poke_static_loop();
  return Status::ok();
}

void PodManager::sync_static_pods(bool reread) {
  bool dir_read = false;
  if (!options_.manifest_dir.empty()) {
    // A cheap signature (names, sizes, modification times) tells whether anything changed.
    std::string signature;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(options_.manifest_dir, ec)) {
      auto time = std::filesystem::last_write_time(entry.path(), ec).time_since_epoch().count();
      signature += entry.path().filename().string() + ":" +
                   std::to_string(entry.is_regular_file(ec) ? entry.file_size(ec) : 0) + ":" +
                   std::to_string(time) + "\n";
    }
    if (reread || signature != manifest_signature_) {
      manifest_signature_ = signature;
      std::vector<ManifestFile> skipped;
      file_pods_ = read_manifest_dir(options_.manifest_dir, options_.node.node_name, &skipped);
      for (const ManifestFile& f : skipped) {
        SKIFF_LOG_WARN("kubelet: static pod manifest {}: {}", f.path, f.error.message());
      }
      dir_read = true;
    }
  }
  bool sources_changed = sources_changed_.exchange(false);
  if (dir_read || sources_changed || !static_read_) {
    // Every source's pods, in order: the directory's, the URL's, the API's.
    std::vector<Json> all = file_pods_;
    {
      std::lock_guard lock(sources_mu_);
      all.insert(all.end(), url_pods_.begin(), url_pods_.end());
      for (const auto& [name, pod] : api_pods_) all.push_back(pod);
    }
    std::map<std::string, std::string> names;  // "ns/name" → source
    std::set<std::string> refused;
    std::map<std::string, client::ObjectPtr> fresh;
    for (Json& pod : all) {
      const Json& meta = pod["metadata"];
      std::string uid = meta.value("uid", "");
      std::string key = meta.value("namespace", "") + "/" + meta.value("name", "");
      std::string source = meta["annotations"].value(kConfigSourceAnnotation, "");
      auto [taken, inserted] = names.emplace(key, source);
      if (!inserted) {
        if (!refused_.count(uid)) {
          SKIFF_LOG_WARN(
              "kubelet: static pod {} from the {} source refused: the {} source has a "
              "pod of that name",
              key, source, taken->second);
        }
        refused.insert(uid);
        continue;
      }
      auto old = static_pods_.find(uid);
      fresh[uid] =
          old != static_pods_.end() ? old->second : std::make_shared<const Json>(std::move(pod));
    }
    refused_ = std::move(refused);
    {
      std::lock_guard lock(sources_mu_);
      static_names_ = std::move(names);
    }
    std::vector<std::string> changed;
    {
      std::lock_guard lock(mu_);
      for (const auto& [uid, pod] : fresh) {
        if (static_pods_.count(uid)) continue;
        Entry& e = entries_[uid];
        e.pod = pod;
        e.is_static = true;
        changed.push_back(uid);
      }
      for (const auto& [uid, pod] : static_pods_) {
        if (fresh.count(uid)) continue;
        auto it = entries_.find(uid);
        if (it != entries_.end()) it->second.pod = nullptr;
        changed.push_back(uid);
        // Its mirror pod goes too.
        const Json& meta = (*pod)["metadata"];
        auto mirror = pods_.get(meta.value("namespace", ""), meta.value("name", ""));
        if (mirror != nullptr && is_mirror_pod(*mirror)) {
          client::DeleteOptions now;
          now.grace_period_seconds = 0;
          now.precondition_uid = client::uid_of(*mirror);
          (void)api_.remove(kPods, meta.value("namespace", ""), meta.value("name", ""), now);
        }
      }
    }
    static_pods_ = std::move(fresh);
    // Until the URL was tried once, its pods are unknown: the runtime's must not be orphans yet.
    if (options_.manifest_url.empty() || url_fetched_) static_read_ = true;
    for (const std::string& uid : changed) queue_.add(uid);
  }
  // Every static pod has its mirror pod in the API (recreated if someone deleted it).
  for (const auto& [uid, pod] : static_pods_) {
    const Json& meta = (*pod)["metadata"];
    std::string ns = meta.value("namespace", "");
    std::string name = meta.value("name", "");
    auto mirror = pods_.get(ns, name);
    if (mirror != nullptr) {
      const Json& annotations = (*mirror)["metadata"].value("annotations", Json::object());
      bool ours = annotations.is_object() && annotations.value(kConfigMirrorAnnotation, "") == uid;
      if (!is_mirror_pod(*mirror)) continue;  // a regular pod of that name: leave it
      if (ours && !(*mirror)["metadata"].contains("deletionTimestamp")) continue;
      // The mirror of an older version, or one being deleted (a static pod runs on: the
      // deletion finishes at once and the mirror comes back).
      client::DeleteOptions now;
      now.grace_period_seconds = 0;
      now.precondition_uid = client::uid_of(*mirror);
      (void)api_.remove(kPods, ns, name, now);
      continue;
    }
    auto created = api_.create(kPods, ns, mirror_pod_for(*pod));
    if (created.is_ok()) {
      queue_.add(uid);  // its status can be written now
    } else if (created.status().code() != StatusCode::kAlreadyExists) {
      SKIFF_LOG_WARN("kubelet: creating mirror pod {}/{}: {}", ns, name,
                     created.status().to_string());
    }
  }
}

void PodManager::pleg_loop() {
  std::map<std::string, std::pair<int, std::string>> last;  // id → (state, pod uid)
  bool first = true;
  while (!stopping_) {
    {
      std::unique_lock lock(pleg_mu_);
      pleg_cv_.wait_for(lock, first ? milliseconds(0) : options_.pleg_period,
                        [&] { return stopping_.load(); });
    }
    if (stopping_) break;
    if (!pods_.has_synced()) continue;
    // Static pods must be known before anything in the runtime is taken for an orphan.
    if (!static_read_) continue;
    auto containers = cri_.list_containers({});
    auto sandboxes = cri_.list_pod_sandbox({});
    if (!containers.is_ok() || !sandboxes.is_ok()) continue;
    std::map<std::string, std::pair<int, std::string>> now;
    for (const auto& c : *containers) {
      auto uid = c.labels().find(kPodUidLabel);
      if (uid == c.labels().end()) continue;
      now[c.id()] = {int(c.state()), uid->second};
    }
    for (const auto& s : *sandboxes) {
      auto uid = s.labels().find(kPodUidLabel);
      if (uid == s.labels().end()) continue;
      now["sandbox/" + s.id()] = {int(s.state()) + 100, uid->second};
    }
    std::set<std::string> changed;
    for (const auto& [id, v] : now) {
      auto it = last.find(id);
      if (it == last.end() || it->second.first != v.first) changed.insert(v.second);
    }
    for (const auto& [id, v] : last) {
      if (!now.count(id)) changed.insert(v.second);
    }
    if (first) {
      // Pods the runtime has that the API no longer knows (deleted while the kubelet was down).
      std::lock_guard lock(mu_);
      for (const auto& [id, v] : now) {
        if (!entries_.count(v.second)) entries_[v.second] = Entry{};
      }
      for (const std::string& uid : volumes_.pods_on_disk()) {
        if (!entries_.count(uid)) {
          entries_[uid] = Entry{};
          changed.insert(uid);
        }
      }
    }
    for (const std::string& uid : changed) queue_.add(uid);
    last = std::move(now);
    first = false;
  }
}

}  // namespace skiff::kubelet
