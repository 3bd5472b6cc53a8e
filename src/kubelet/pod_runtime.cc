#include "kubelet/pod_runtime.h"

#include <algorithm>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "base/log.h"
#include "base/time.h"
#include "kubelet/json_fields.h"
#include "kubelet/prober.h"

namespace skiff::kubelet {
namespace {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

std::string label(const google::protobuf::Map<std::string, std::string>& m, const char* key) {
  auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

std::string ns_time(int64_t ns) {
  return rfc3339(ns / 1000000000);
}

bool should_restart(const std::string& policy, int exit_code) {
  if (policy == "Never") return false;
  if (policy == "OnFailure") return exit_code != 0;
  return true;
}

// Runs a lifecycle handler (exec, httpGet, tcpSocket or sleep) within `timeout_seconds`.
ProbeOutcome run_handler(cri::RuntimeService& runtime, const Json& handler, const Json& container,
                         const std::string& container_id, const std::string& pod_ip,
                         int64_t timeout_seconds) {
  if (handler.contains("sleep")) {
    int64_t seconds = member(handler["sleep"], "seconds").is_number_integer()
                          ? handler["sleep"]["seconds"].get<int64_t>()
                          : 0;
    std::this_thread::sleep_for(std::chrono::seconds(std::min(seconds, timeout_seconds)));
    return {true, ""};
  }
  Json probe = handler;
  probe["timeoutSeconds"] = std::max<int64_t>(1, timeout_seconds);
  return run_probe(runtime, probe, container, container_id, pod_ip);
}

const Json* container_spec(const Json& pod, const std::string& name) {
  for (const char* list : {"containers", "initContainers"}) {
    for (const Json& c : member(member(pod, "spec"), list)) {
      if (member(c, "name") == name) return &c;
    }
  }
  return nullptr;
}

std::string pod_key(const Json& pod) {
  const Json& meta = member(pod, "metadata");
  return str(meta, "name") + "_" + str(meta, "namespace") + "(" + str(meta, "uid") + ")";
}

}  // namespace

const RuntimeSandbox* RuntimePod::ready_sandbox() const {
  for (const RuntimeSandbox& s : sandboxes) {
    if (s.state == v1::SANDBOX_READY) return &s;
  }
  return nullptr;
}

const RuntimeContainer* RuntimePod::latest(const std::string& name) const {
  for (const RuntimeContainer& c : containers) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

const RuntimeContainer* RuntimePod::previous(const std::string& name) const {
  bool seen = false;
  for (const RuntimeContainer& c : containers) {
    if (c.name != name) continue;
    if (seen) return &c;
    seen = true;
  }
  return nullptr;
}

bool RuntimePod::any_running() const {
  for (const RuntimeContainer& c : containers) {
    if (c.state == v1::CONTAINER_RUNNING || c.state == v1::CONTAINER_CREATED) return true;
  }
  for (const RuntimeSandbox& s : sandboxes) {
    if (s.state == v1::SANDBOX_READY) return true;
  }
  return false;
}

PodRuntime::PodRuntime(cri::RuntimeService& runtime, cri::ImageService& images, NodeSettings node,
                       VolumeManager& volumes, ObjectSource objects, BackoffPolicy backoff)
    : runtime_(runtime),
      images_(images),
      node_(std::move(node)),
      volumes_(volumes),
      objects_(std::move(objects)),
      backoff_(backoff) {}

Result<RuntimePod> PodRuntime::inspect(const std::string& uid) {
  RuntimePod pod;
  pod.uid = uid;
  v1::PodSandboxFilter sf;
  (*sf.mutable_label_selector())[kPodUidLabel] = uid;
  SKIFF_ASSIGN_OR_RETURN(auto sandboxes, runtime_.list_pod_sandbox(sf));
  for (const v1::PodSandbox& s : sandboxes) {
    RuntimeSandbox rs;
    rs.id = s.id();
    rs.attempt = s.metadata().attempt();
    rs.state = s.state();
    rs.created_at = s.created_at();
    if (rs.state == v1::SANDBOX_READY) {
      auto status = runtime_.pod_sandbox_status(s.id());
      if (status.is_ok()) {
        rs.ip = status->network().ip();
        if (!rs.ip.empty()) rs.ips.push_back(rs.ip);
        for (const auto& extra : status->network().additional_ips()) rs.ips.push_back(extra.ip());
      } else if (status.status().code() != StatusCode::kNotFound) {
        return status.status();
      }
    }
    pod.sandboxes.push_back(std::move(rs));
  }
  std::sort(
      pod.sandboxes.begin(), pod.sandboxes.end(),
      [](const RuntimeSandbox& a, const RuntimeSandbox& b) { return a.created_at > b.created_at; });

  v1::ContainerFilter cf;
  (*cf.mutable_label_selector())[kPodUidLabel] = uid;
  SKIFF_ASSIGN_OR_RETURN(auto containers, runtime_.list_containers(cf));
  for (const v1::Container& c : containers) {
    RuntimeContainer rc;
    rc.id = c.id();
    rc.name = label(c.labels(), kContainerNameLabel);
    rc.init = label(c.labels(), kInitContainerLabel) == "true";
    rc.restart_count =
        std::strtoul(label(c.annotations(), kRestartCountAnnotation).c_str(), nullptr, 10);
    rc.hash = std::strtoull(label(c.annotations(), kContainerHashAnnotation).c_str(), nullptr, 10);
    std::string grace = label(c.annotations(), kGracePeriodAnnotation);
    if (!grace.empty()) rc.grace_seconds = std::strtoll(grace.c_str(), nullptr, 10);
    rc.state = c.state();
    rc.created_at = c.created_at();
    rc.image = c.image().image();
    rc.image_ref = c.image_ref();
    if (rc.state == v1::CONTAINER_EXITED || rc.state == v1::CONTAINER_RUNNING) {
      auto status = runtime_.container_status(c.id());
      if (status.is_ok()) {
        rc.state = status->state();
        rc.started_at = status->started_at();
        rc.finished_at = status->finished_at();
        rc.exit_code = status->exit_code();
        rc.reason = status->reason();
        rc.message = status->message();
        if (!status->image_ref().empty()) rc.image_ref = status->image_ref();
        if (!status->image().image().empty()) rc.image = status->image().image();
      } else if (status.status().code() == StatusCode::kNotFound) {
        continue;  // removed meanwhile
      } else {
        return status.status();
      }
    }
    pod.containers.push_back(std::move(rc));
  }
  std::sort(pod.containers.begin(), pod.containers.end(),
            [](const RuntimeContainer& a, const RuntimeContainer& b) {
              return a.created_at > b.created_at;
            });
  return pod;
}

Result<std::vector<std::string>> PodRuntime::runtime_pod_uids() {
  std::set<std::string> uids;
  SKIFF_ASSIGN_OR_RETURN(auto sandboxes, runtime_.list_pod_sandbox({}));
  for (const auto& s : sandboxes) {
    std::string uid = label(s.labels(), kPodUidLabel);
    if (uid.empty()) uid = s.metadata().uid();
    if (!uid.empty()) uids.insert(uid);
  }
  SKIFF_ASSIGN_OR_RETURN(auto containers, runtime_.list_containers({}));
  for (const auto& c : containers) {
    std::string uid = label(c.labels(), kPodUidLabel);
    if (!uid.empty()) uids.insert(uid);
  }
  return std::vector<std::string>(uids.begin(), uids.end());
}

bool PodRuntime::in_backoff(const std::string& uid, const std::string& name, milliseconds* left) {
  std::lock_guard lock(mu_);
  auto it = backoff_state_.find(uid + "/" + name);
  if (it == backoff_state_.end()) return false;
  auto now = SteadyClock::now();
  if (now >= it->second.until) return false;
  *left = std::chrono::duration_cast<milliseconds>(it->second.until - now) + milliseconds(1);
  return true;
}

milliseconds PodRuntime::bump_backoff(const std::string& uid, const std::string& name) {
  std::lock_guard lock(mu_);
  Backoff& b = backoff_state_[uid + "/" + name];
  auto now = SteadyClock::now();
  // A back-off unused for twice the maximum starts over.
  if (b.next.count() == 0 || now - b.until > 2 * backoff_.max) {
    b.next = backoff_.initial;
  } else {
    b.next = std::min(backoff_.max, b.next * 2);
  }
  b.until = now + b.next;
  return b.next;
}

void PodRuntime::forget(const std::string& uid) {
  std::lock_guard lock(mu_);
  std::string prefix = uid + "/";
  for (auto it = backoff_state_.lower_bound(prefix);
       it != backoff_state_.end() && it->first.rfind(prefix, 0) == 0;) {
    it = backoff_state_.erase(it);
  }
}

Status PodRuntime::ensure_image(const Json& pod, const Json& container, std::string* image_ref,
                                Waiting* waiting) {
  std::string image = str(container, "image");
  std::string policy = str(container, "imagePullPolicy", "IfNotPresent");
  std::string uid = str(member(pod, "metadata"), "uid");
  v1::ImageSpec spec;
  spec.set_image(image);
  auto event = [&](const char* type, const char* reason, const std::string& message) {
    if (events_) events_(pod, type, reason, message);
  };
  SKIFF_ASSIGN_OR_RETURN(auto present, images_.image_status(spec));
  if (present && policy != "Always") {
    *image_ref = present->id();
    event("Normal", "Pulled", "Container image \"" + image + "\" already present on machine");
    return Status::ok();
  }
  if (!present && policy == "Never") {
    *waiting = {"ErrImageNeverPull",
                "Container image \"" + image + "\" is not present with pull policy of Never"};
    event("Warning", "ErrImageNeverPull", waiting->message);
    event("Warning", "Failed", "Error: ErrImageNeverPull");
    return error(StatusCode::kFailedPrecondition, waiting->message);
  }
  // One back-off per pod and image (upstream's key), so containers sharing an image share it.
  milliseconds left{};
  std::string key = "#pull " + image;
  if (in_backoff(uid, key, &left)) {
    *waiting = {"ImagePullBackOff", "Back-off pulling image \"" + image + "\"", left};
    event("Normal", "BackOff", waiting->message);
    event("Warning", "Failed", "Error: ImagePullBackOff");
    return error(StatusCode::kUnavailable, waiting->message);
  }
  v1::AuthConfig auth;
  if (auto creds = pull_credentials(pod, image, objects_)) {
    // No server_address, as upstream: the registry is already matched here, and containerd
    // parses a given address as a URL and drops (or, for host:port, fails on) a secret's
    // scheme-less key such as "r.example" or "127.0.0.1:5000".
    auth.set_username(creds->username);
    auth.set_password(creds->password);
    auth.set_auth(creds->auth);
  }
  event("Normal", "Pulling", "Pulling image \"" + image + "\"");
  auto pull_started = SteadyClock::now();
  auto pulled = images_.pull_image(spec, auth, v1::PodSandboxConfig());
  if (!pulled.is_ok()) {
    // As upstream: the status message is the runtime's error itself, the event names the image;
    // the next pull comes when the back-off started here ends.
    milliseconds backoff = bump_backoff(uid, key);
    *waiting = {"ErrImagePull", pulled.status().message(), backoff};
    event("Warning", "Failed",
          "Failed to pull image \"" + image + "\": " + pulled.status().message());
    event("Warning", "Failed", "Error: ErrImagePull");
    return error(pulled.status().code(),
                 "pulling image \"" + image + "\": " + pulled.status().message());
  }
  auto took = std::chrono::duration_cast<milliseconds>(SteadyClock::now() - pull_started);
  event("Normal", "Pulled",
        "Successfully pulled image \"" + image + "\" in " + std::to_string(took.count()) + "ms");
  *image_ref = *pulled;
  return Status::ok();
}

Status PodRuntime::start_container(const Json& pod, const Json& container, bool init,
                                   const RuntimeSandbox& sandbox,
                                   const v1::PodSandboxConfig& sandbox_config,
                                   uint32_t restart_count, Waiting* waiting) {
  std::string name = str(container, "name");
  std::string image_ref;
  SKIFF_RETURN_IF_ERROR(ensure_image(pod, container, &image_ref, waiting));
  auto env = container_env(pod, container, sandbox.ip, objects_);
  if (!env.is_ok()) {
    *waiting = {"CreateContainerConfigError", env.status().message()};
    if (events_) events_(pod, "Warning", "Failed", "Error: " + env.status().message());
    return env.status();
  }
  auto mounts = volumes_.mounts_for(pod, container, sandbox.ip, sandbox_config.hostname());
  if (!mounts.is_ok()) {
    *waiting = {"CreateContainerConfigError", mounts.status().message()};
    return mounts.status();
  }
  v1::ContainerConfig config =
      container_config(node_, pod, container, init, restart_count, *env, *mounts);
  std::error_code ec;
  std::filesystem::create_directories(sandbox_config.log_directory() + "/" + name, ec);
  auto event = [&](const char* type, const char* reason, const std::string& message) {
    if (events_) events_(pod, type, reason, message);
  };
  auto id = runtime_.create_container(sandbox.id, config, sandbox_config);
  if (!id.is_ok()) {
    *waiting = {"CreateContainerError", id.status().message()};
    event("Warning", "Failed", "Error: " + id.status().message());
    return id.status();
  }
  event("Normal", "Created", "Created container " + name);
  Status started = runtime_.start_container(*id);
  if (!started.is_ok()) {
    *waiting = {"RunContainerError", started.message()};
    event("Warning", "Failed", "Error: " + started.message());
    return started;
  }
  event("Normal", "Started", "Started container " + name);
  const Json& post_start = member(member(container, "lifecycle"), "postStart");
  if (post_start.is_object()) {
    // Upstream: a failed postStart hook kills the container (it then restarts per policy).
    ProbeOutcome hook =
        run_handler(runtime_, post_start, container, *id, sandbox.ip, grace_period_seconds(pod));
    if (!hook.success) {
      (void)runtime_.stop_container(*id, 0);
      *waiting = {"PostStartHookError", hook.message};
      return error(StatusCode::kInternal, "PostStartHook failed: " + hook.message);
    }
  }
  return Status::ok();
}

SyncResult PodRuntime::sync(const Json& pod, const RuntimePod& known) {
  SyncResult result;
  const Json& spec = member(pod, "spec");
  std::string uid = str(member(pod, "metadata"), "uid");
  std::string policy = str(spec, "restartPolicy", "Always");
  auto note = [&](const Status& s) {
    if (!s.is_ok() && result.status.is_ok()) result.status = s;
  };
  auto retry = [&](milliseconds d) {
    if (!result.retry_after || d < *result.retry_after) result.retry_after = d;
  };

  // Refresh volume contents (ConfigMap and Secret updates reach running containers this way).
  Status volumes = volumes_.set_up(pod);

  RuntimeSandbox sandbox;
  const RuntimeSandbox* ready = known.ready_sandbox();
  bool fresh_sandbox = false;
  if (ready != nullptr) {
    sandbox = *ready;
  } else {
    // A pod whose containers all finished for good gets no new sandbox.
    bool ran_before = !known.containers.empty();
    bool would_restart = !ran_before;
    for (const Json& c : member(spec, "containers")) {
      const RuntimeContainer* rc = known.latest(str(c, "name"));
      if (rc == nullptr || should_restart(policy, rc->exit_code)) would_restart = true;
    }
    if (!would_restart) return result;
    if (!volumes.is_ok()) {
      result.sandbox_error = volumes.message();
      note(volumes);
      retry(milliseconds(2000));
      return result;
    }
    if (known.any_running()) note(kill(known, 0));
    uint32_t attempt = known.sandboxes.empty() ? 0 : known.sandboxes.front().attempt + 1;
    v1::PodSandboxConfig config = sandbox_config(node_, pod, attempt);
    std::error_code ec;
    std::filesystem::create_directories(config.log_directory(), ec);
    auto id = runtime_.run_pod_sandbox(config, "");
    if (!id.is_ok()) {
      result.sandbox_error = "Failed to create pod sandbox: " + id.status().message();
      note(id.status());
      retry(milliseconds(2000));
      return result;
    }
    sandbox.id = *id;
    sandbox.attempt = attempt;
    sandbox.state = v1::SANDBOX_READY;
    auto status = runtime_.pod_sandbox_status(*id);
    if (status.is_ok()) {
      sandbox.created_at = status->created_at();
      sandbox.ip = status->network().ip();
    }
    fresh_sandbox = true;
  }
  if (!volumes.is_ok()) {
    note(volumes);
    for (const Json& c : member(spec, "containers")) {
      const RuntimeContainer* rc = known.latest(str(c, "name"));
      if (rc == nullptr) result.waiting[str(c, "name")] = {"ContainerCreating", volumes.message()};
    }
    retry(milliseconds(2000));
    return result;
  }
  v1::PodSandboxConfig config = sandbox_config(node_, pod, sandbox.attempt);

  // Containers of the current sandbox only: a new sandbox starts everything over.
  auto current = [&](const std::string& name) -> const RuntimeContainer* {
    if (fresh_sandbox) return nullptr;
    const RuntimeContainer* c = known.latest(name);
    return c != nullptr && c->created_at >= sandbox.created_at ? c : nullptr;
  };
  auto next_restart = [&](const std::string& name) -> uint32_t {
    const RuntimeContainer* c = known.latest(name);
    return c == nullptr ? 0 : c->restart_count + 1;
  };
  auto restart_or_wait = [&](const Json& c, bool init) {
    std::string name = str(c, "name");
    milliseconds left{};
    if (in_backoff(uid, name, &left)) {
      if (events_) {
        events_(pod, "Warning", "BackOff",
                "Back-off restarting failed container " + name + " in pod " + pod_key(pod));
      }
      result.waiting[name] = {"CrashLoopBackOff",
                              "back-off " + std::to_string((left.count() + 999) / 1000) +
                                  "s restarting failed container=" + name + " pod=" + pod_key(pod)};
      retry(left);
      return;
    }
    bump_backoff(uid, name);
    Waiting w;
    Status s = start_container(pod, c, init, sandbox, config, next_restart(name), &w);
    if (!s.is_ok()) {
      result.waiting[name] = w;
      note(s);
      retry(w.retry_after.value_or(milliseconds(2000)));
    }
  };

  // Init containers, one at a time, in order.
  for (const Json& c : member(spec, "initContainers")) {
    std::string name = str(c, "name");
    const RuntimeContainer* rc = current(name);
    if (rc != nullptr && rc->state == v1::CONTAINER_EXITED && rc->exit_code == 0) continue;
    if (rc != nullptr && (rc->state == v1::CONTAINER_RUNNING || rc->state == v1::CONTAINER_CREATED))
      return result;  // still running: wait for it
    if (rc != nullptr && rc->state == v1::CONTAINER_EXITED) {
      if (policy == "Never") return result;  // the pod has failed
      restart_or_wait(c, true);
      return result;
    }
    Waiting w;
    Status s = start_container(pod, c, true, sandbox, config, next_restart(name), &w);
    if (!s.is_ok()) {
      result.waiting[name] = w;
      note(s);
      retry(w.retry_after.value_or(milliseconds(2000)));
    }
    return result;
  }

  std::set<std::string> wanted;
  for (const Json& c : member(spec, "containers")) {
    std::string name = str(c, "name");
    wanted.insert(name);
    const RuntimeContainer* rc = current(name);
    if (rc != nullptr && (rc->state == v1::CONTAINER_RUNNING)) {
      if (rc->hash == container_hash(c)) continue;
      // The spec changed (e.g. a new image): replace the container.
      note(runtime_.stop_container(rc->id, grace_period_seconds(pod)));
      Waiting w;
      Status s = start_container(pod, c, false, sandbox, config, rc->restart_count + 1, &w);
      if (!s.is_ok()) {
        result.waiting[name] = w;
        note(s);
        retry(w.retry_after.value_or(milliseconds(2000)));
      }
      continue;
    }
    if (rc != nullptr && rc->state == v1::CONTAINER_EXITED) {
      if (!should_restart(policy, rc->exit_code)) continue;
      // A long run starts the back-off over.
      if (rc->finished_at - rc->started_at > int64_t(2) * backoff_.max.count() * 1000000) {
        std::lock_guard lock(mu_);
        backoff_state_.erase(uid + "/" + name);
      }
      restart_or_wait(c, false);
      continue;
    }
    if (rc != nullptr && rc->state == v1::CONTAINER_CREATED) {
      note(runtime_.remove_container(rc->id));
    }
    Waiting w;
    Status s = start_container(pod, c, false, sandbox, config, next_restart(name), &w);
    if (!s.is_ok()) {
      result.waiting[name] = w;
      note(s);
      retry(w.retry_after.value_or(milliseconds(2000)));
    }
  }
  // Running containers the spec no longer names.
  for (const RuntimeContainer& rc : known.containers) {
    if (rc.init || wanted.count(rc.name) || rc.state != v1::CONTAINER_RUNNING) continue;
    note(runtime_.stop_container(rc.id, grace_period_seconds(pod)));
  }
  return result;
}

Status PodRuntime::kill(const RuntimePod& pod, int64_t grace_seconds, const Json* spec) {
  std::vector<std::future<Status>> stops;
  std::string pod_ip;
  if (const RuntimeSandbox* s = pod.ready_sandbox()) pod_ip = s->ip;
  for (const RuntimeContainer& c : pod.containers) {
    if (c.state != v1::CONTAINER_RUNNING && c.state != v1::CONTAINER_CREATED) continue;
    std::string id = c.id;
    Json container;
    if (spec != nullptr) {
      if (const Json* found = container_spec(*spec, c.name)) container = *found;
    }
    if (events_ && spec != nullptr && c.state == v1::CONTAINER_RUNNING) {
      events_(*spec, "Normal", "Killing", "Stopping container " + c.name);
    }
    stops.push_back(std::async(std::launch::async, [this, id, grace_seconds, container, pod_ip,
                                                    running = c.state == v1::CONTAINER_RUNNING] {
      // preStop runs first, within the grace period; the stop gets what is left of it.
      auto start = std::chrono::steady_clock::now();
      const Json& pre_stop = member(member(container, "lifecycle"), "preStop");
      if (running && grace_seconds > 0 && pre_stop.is_object()) {
        ProbeOutcome hook = run_handler(runtime_, pre_stop, container, id, pod_ip, grace_seconds);
        if (!hook.success) SKIFF_LOG_INFO("kubelet: preStop hook of {}: {}", id, hook.message);
      }
      int64_t used =
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start)
              .count();
      int64_t left = grace_seconds > 0 ? std::max<int64_t>(2, grace_seconds - used) : 0;
      Status s = runtime_.stop_container(id, left);
      return s.code() == StatusCode::kNotFound ? Status::ok() : s;
    }));
  }
  Status first;
  for (auto& f : stops) {
    Status s = f.get();
    if (!s.is_ok() && first.is_ok()) first = s;
  }
  for (const RuntimeSandbox& s : pod.sandboxes) {
    if (s.state != v1::SANDBOX_READY) continue;
    Status st = runtime_.stop_pod_sandbox(s.id);
    if (!st.is_ok() && st.code() != StatusCode::kNotFound && first.is_ok()) first = st;
  }
  return first;
}

Status PodRuntime::remove(const RuntimePod& pod) {
  Status first;
  for (const RuntimeContainer& c : pod.containers) {
    Status s = runtime_.remove_container(c.id);
    if (!s.is_ok() && s.code() != StatusCode::kNotFound && first.is_ok()) first = s;
  }
  for (const RuntimeSandbox& sb : pod.sandboxes) {
    Status s = runtime_.stop_pod_sandbox(sb.id);
    if (s.is_ok() || s.code() == StatusCode::kNotFound) s = runtime_.remove_pod_sandbox(sb.id);
    if (!s.is_ok() && s.code() != StatusCode::kNotFound && first.is_ok()) first = s;
  }
  return first;
}

void PodRuntime::prune_dead(const RuntimePod& pod) {
  std::map<std::string, int> kept;
  for (const RuntimeContainer& c : pod.containers) {
    if (++kept[c.name] <= 2 || c.state != v1::CONTAINER_EXITED) continue;
    Status s = runtime_.remove_container(c.id);
    if (!s.is_ok() && s.code() != StatusCode::kNotFound) {
      SKIFF_LOG_WARN("kubelet: removing dead container {}: {}", c.id, s.to_string());
    }
  }
  // Sandboxes other than the newest that no container uses any more.
  for (size_t i = 1; i < pod.sandboxes.size(); ++i) {
    const RuntimeSandbox& sb = pod.sandboxes[i];
    if (sb.state == v1::SANDBOX_READY) continue;
    bool used = false;
    for (const RuntimeContainer& c : pod.containers) {
      if (c.created_at >= sb.created_at &&
          (i == 0 || c.created_at < pod.sandboxes[i - 1].created_at))
        used = true;
    }
    if (!used) (void)runtime_.remove_pod_sandbox(sb.id);
  }
}

namespace {

Json terminated_state(const RuntimeContainer& c, const std::string& message) {
  Json t = {{"exitCode", c.exit_code},
            {"startedAt", ns_time(c.started_at)},
            {"finishedAt", ns_time(c.finished_at)},
            {"containerID", "containerd://" + c.id}};
  std::string reason = c.reason;
  if (reason.empty() || reason == "Completed" || reason == "Error") {
    reason = c.exit_code == 0 ? "Completed" : "Error";
  }
  t["reason"] = reason;
  std::string msg = !message.empty() ? message : c.message;
  if (!msg.empty()) t["message"] = msg;
  return t;
}

}  // namespace

std::string pod_phase(const Json& pod, const Json& init_statuses, const Json& statuses) {
  std::string policy = str(member(pod, "spec"), "restartPolicy", "Always");
  // Init containers: any still to succeed keeps the pod Pending (or fails it under Never).
  for (const Json& s : init_statuses) {
    const Json& state = member(s, "state");
    if (state.contains("terminated") && state["terminated"].value("exitCode", 1) == 0) continue;
    if (state.contains("terminated") && policy == "Never") return "Failed";
    if (member(state, "waiting").is_object() && member(s, "lastState").contains("terminated") &&
        policy == "Never")
      return "Failed";
    return "Pending";
  }
  int running = 0, waiting = 0, stopped = 0, succeeded = 0;
  for (const Json& s : statuses) {
    const Json& state = member(s, "state");
    if (state.contains("running")) {
      ++running;
    } else if (state.contains("terminated")) {
      ++stopped;
      if (state["terminated"].value("exitCode", 1) == 0) ++succeeded;
    } else if (state.contains("waiting")) {
      if (member(s, "lastState").contains("terminated")) {
        ++stopped;
      } else {
        ++waiting;
      }
    }
  }
  if (waiting > 0) return "Pending";
  if (running > 0) return "Running";
  if (stopped > 0) {
    if (policy == "Always") return "Running";
    if (stopped == succeeded) return "Succeeded";
    if (policy == "Never") return "Failed";
    return "Running";
  }
  return "Pending";
}

Json PodRuntime::pod_status(const Json& pod, const RuntimePod& runtime, const SyncResult& last_sync,
                            const std::map<std::string, bool>& readiness) const {
  const Json& spec = member(pod, "spec");
  const Json& old = member(pod, "status");
  std::string uid = str(member(pod, "metadata"), "uid");
  std::string policy = str(spec, "restartPolicy", "Always");
  Json status = Json::object();
  const RuntimeSandbox* sandbox = runtime.ready_sandbox();
  auto build = [&](const Json& c, bool init) {
    std::string name = str(c, "name");
    Json s = {{"name", name},   {"image", str(c, "image")}, {"imageID", ""},
              {"ready", false}, {"restartCount", 0},        {"started", false}};
    const RuntimeContainer* rc = runtime.latest(name);
    const RuntimeContainer* prev = runtime.previous(name);
    auto waiting_it = last_sync.waiting.find(name);
    if (rc != nullptr) {
      s["restartCount"] = rc->restart_count;
      s["imageID"] = rc->image_ref;
      s["containerID"] = "containerd://" + rc->id;
    }
    if (rc != nullptr && rc->state == v1::CONTAINER_RUNNING) {
      s["state"] = {{"running", {{"startedAt", ns_time(rc->started_at)}}}};
      s["started"] = true;
      auto r = readiness.find(name);
      s["ready"] = r == readiness.end() ? !c.contains("readinessProbe") : r->second;
      if (prev != nullptr && prev->state == v1::CONTAINER_EXITED) {
        s["lastState"] = {{"terminated", terminated_state(*prev, "")}};
      }
    } else if (rc != nullptr && rc->state == v1::CONTAINER_EXITED) {
      Json term = terminated_state(*rc, volumes_.termination_message(uid, name));
      bool restarts = should_restart(policy, rc->exit_code) && !(init && rc->exit_code == 0) &&
                      waiting_it != last_sync.waiting.end();
      if (restarts) {
        s["state"] = {
            {"waiting",
             {{"reason", waiting_it->second.reason}, {"message", waiting_it->second.message}}}};
        s["lastState"] = {{"terminated", term}};
      } else {
        s["state"] = {{"terminated", term}};
        if (prev != nullptr && prev->state == v1::CONTAINER_EXITED) {
          s["lastState"] = {{"terminated", terminated_state(*prev, "")}};
        }
      }
    } else {
      Json w = {{"reason", "ContainerCreating"}};
      if (init) w["reason"] = "PodInitializing";
      if (waiting_it != last_sync.waiting.end()) {
        w["reason"] = waiting_it->second.reason;
        if (!waiting_it->second.message.empty()) w["message"] = waiting_it->second.message;
      }
      s["state"] = {{"waiting", w}};
      if (prev != nullptr && prev->state == v1::CONTAINER_EXITED) {
        s["lastState"] = {{"terminated", terminated_state(*prev, "")}};
      }
    }
    if (!s.contains("lastState")) s["lastState"] = Json::object();
    return s;
  };

  Json init_statuses = Json::array();
  for (const Json& c : member(spec, "initContainers")) init_statuses.push_back(build(c, true));
  Json statuses = Json::array();
  for (const Json& c : member(spec, "containers")) statuses.push_back(build(c, false));
  // Containers not yet reached because init containers are still running wait PodInitializing.
  bool initialized = true;
  for (const Json& s : init_statuses) {
    const Json& t = member(member(s, "state"), "terminated");
    if (!t.is_object() || t.value("exitCode", 1) != 0) initialized = false;
  }
  if (!initialized) {
    for (Json& s : statuses) {
      if (s["state"].contains("waiting") &&
          s["state"]["waiting"].value("reason", "") == "ContainerCreating")
        s["state"]["waiting"]["reason"] = "PodInitializing";
    }
  }

  std::string phase = pod_phase(pod, init_statuses, statuses);
  std::string old_phase = str(old, "phase");
  if (old_phase == "Succeeded" || old_phase == "Failed") phase = old_phase;  // terminal stays
  status["phase"] = phase;
  status["hostIP"] = node_.node_ip;
  status["hostIPs"] = Json::array({{{"ip", node_.node_ip}}});
  bool host_net = member(spec, "hostNetwork") == true;
  std::string ip = host_net ? node_.node_ip : (sandbox != nullptr ? sandbox->ip : "");
  if (ip.empty() && phase != "Pending") ip = str(old, "podIP");  // keep it once the pod stopped
  if (!ip.empty()) {
    status["podIP"] = ip;
    status["podIPs"] = Json::array({{{"ip", ip}}});
  }
  status["startTime"] = str(old, "startTime", rfc3339_now());
  if (!init_statuses.empty()) status["initContainerStatuses"] = init_statuses;
  status["containerStatuses"] = statuses;
  status["qosClass"] = old.value("qosClass", "BestEffort");

  bool all_ready = !statuses.empty();
  for (const Json& s : statuses) {
    if (s.value("ready", false) != true) all_ready = false;
  }
  if (phase == "Succeeded" || phase == "Failed") all_ready = false;
  std::string not_ready_names;
  for (const Json& s : statuses) {
    if (s.value("ready", false) != true) {
      if (!not_ready_names.empty()) not_ready_names += " ";
      not_ready_names += s.value("name", "");
    }
  }

  std::map<std::string, Json> old_conditions;
  for (const Json& c : member(old, "conditions")) old_conditions[str(c, "type")] = c;
  Json conditions = Json::array();
  auto condition = [&](const std::string& type, bool value, const std::string& reason,
                       const std::string& message) {
    Json c = {{"type", type}, {"status", value ? "True" : "False"}};
    auto it = old_conditions.find(type);
    c["lastProbeTime"] = nullptr;
    c["lastTransitionTime"] = it != old_conditions.end() && str(it->second, "status") == c["status"]
                                  ? it->second.value("lastTransitionTime", rfc3339_now())
                                  : rfc3339_now();
    if (!value && !reason.empty()) c["reason"] = reason;
    if (!value && !message.empty()) c["message"] = message;
    conditions.push_back(c);
  };
  condition("PodReadyToStartContainers", sandbox != nullptr, "", "");
  condition(
      "Initialized", initialized,
      "ContainersNotInitialized", "containers with incomplete status: [" + [&] {
        std::string names;
        for (const Json& s : init_statuses) {
          const Json& t = member(member(s, "state"), "terminated");
          if (t.is_object() && t.value("exitCode", 1) == 0) continue;
          names += (names.empty() ? "" : " ") + s.value("name", "");
        }
        return names;
      }() + "]");
  std::string reason =
      phase == "Succeeded" || phase == "Failed" ? "PodCompleted" : "ContainersNotReady";
  std::string message =
      reason == "PodCompleted" ? "" : "containers with unready status: [" + not_ready_names + "]";
  condition("Ready", all_ready, reason, message);
  condition("ContainersReady", all_ready, reason, message);
  if (old_conditions.count("PodScheduled")) conditions.push_back(old_conditions["PodScheduled"]);
  status["conditions"] = conditions;
  return status;
}

}  // namespace skiff::kubelet
