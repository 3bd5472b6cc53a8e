#include "hollow/pod_sim.h"

#include <openssl/evp.h>

#include <algorithm>

#include "base/time.h"

namespace skiff::hollow {
namespace {

using std::chrono::milliseconds;

// A process ended by SIGTERM exits with 128 + 15.
constexpr int kKilledExitCode = 143;
// Exits and restarts one advance() may walk through per container; only a container that exits
// at once with no back-off could need more, and it then goes on at the next advance().
constexpr int kMaxTransitions = 64;

const Json& empty_object() {
  static const Json kEmpty = Json::object();
  return kEmpty;
}

const Json& field(const Json& obj, const char* name) {
  if (!obj.is_object()) return empty_object();
  auto it = obj.find(name);
  return it == obj.end() ? empty_object() : *it;
}

std::string string_field(const Json& obj, const char* name) {
  const Json& v = field(obj, name);
  return v.is_string() ? v.get<std::string>() : std::string();
}

const Json& list_field(const Json& obj, const char* name) {
  static const Json kEmptyList = Json::array();
  const Json& v = field(obj, name);
  return v.is_array() ? v : kEmptyList;
}

std::string timestamp(WallTime t) {
  return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

WallTime from_timestamp(const std::string& text, WallTime fallback) {
  int64_t s = parse_rfc3339(text);
  if (s < 0) return fallback;
  return WallTime(std::chrono::seconds(s));
}

milliseconds readiness_delay(const Json& container) {
  const Json& probe = field(container, "readinessProbe");
  const Json& delay = field(probe, "initialDelaySeconds");
  if (!delay.is_number_integer()) return milliseconds(0);
  return std::chrono::seconds(std::max<int64_t>(0, delay.get<int64_t>()));
}

std::string container_id(const std::string& uid, const std::string& name, int run) {
  return "hollow://" + sha256_hex(uid + "/" + name + "/" + std::to_string(run));
}

std::string image_id(const std::string& image) {
  return "hollow://sha256:" + sha256_hex(image);
}

Json terminated_state(const Termination& t, const std::string& uid, const std::string& name) {
  return {{"exitCode", t.exit_code},
          {"reason", t.exit_code == 0 ? "Completed" : "Error"},
          {"startedAt", timestamp(t.started)},
          {"finishedAt", timestamp(t.finished)},
          {"containerID", container_id(uid, name, t.run)}};
}

bool container_ready(const ContainerRun& c, Instant now) {
  return c.state == ContainerRun::State::kRunning && now.mono >= c.started.mono + c.ready_delay;
}

ContainerRun new_container(const Json& pod, const Json& spec_container, size_t index, Instant now) {
  ContainerRun c;
  c.name = string_field(spec_container, "name");
  c.image = string_field(spec_container, "image");
  c.plan = exit_plan_for_container(pod, index);
  c.ready_delay = readiness_delay(spec_container);
  c.started = now;
  return c;
}

// Ends the current run of `c` at `at`, then restarts it or not as the policy says.
void end_run(ContainerRun& c, const std::string& policy, Instant at, const RestartBackoff& b) {
  Termination t{c.plan.exit_code, c.restart_count, c.started.wall, at.wall};
  bool restart = policy == "Always" || (policy == "OnFailure" && t.exit_code != 0);
  if (!restart) {
    c.ended = t;
    c.state = ContainerRun::State::kTerminated;
    return;
  }
  // As the kubelet's back-off: the first restart is immediate, later ones wait initial, 2 ×
  // initial, ... up to max; a run that outlasted 2 × max starts the sequence over.
  if (c.next_backoff > milliseconds(0) && at.mono - c.backoff_updated > 2 * b.max) {
    c.next_backoff = milliseconds(0);
  }
  milliseconds delay = c.next_backoff;
  c.next_backoff = delay == milliseconds(0) ? b.initial : std::min(delay * 2, b.max);
  c.backoff_updated = at.mono;
  c.last = t;
  c.restart_at = at.plus(delay);
  c.state = ContainerRun::State::kBackOff;
}

std::optional<MonoTime> earliest(std::optional<MonoTime> a, std::optional<MonoTime> b) {
  if (!a) return b;
  if (!b) return a;
  return std::min(*a, *b);
}

// Sets condition `type` in `conditions`, keeping its lastTransitionTime when its status is
// unchanged.
Json condition(const Json& old_conditions, const std::string& type, bool status,
               const std::string& reason, const std::string& message, Instant now) {
  std::string value = status ? "True" : "False";
  Json c = {{"type", type}, {"status", value}};
  std::string transition = timestamp(now.wall);
  for (const Json& old : old_conditions) {
    if (string_field(old, "type") == type && string_field(old, "status") == value &&
        !string_field(old, "lastTransitionTime").empty()) {
      transition = string_field(old, "lastTransitionTime");
    }
  }
  c["lastTransitionTime"] = transition;
  if (!reason.empty()) c["reason"] = reason;
  if (!message.empty()) c["message"] = message;
  return c;
}

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

PodRun start_pod(const Json& pod, Instant now) {
  PodRun run;
  run.uid = string_field(field(pod, "metadata"), "uid");
  const Json& spec = field(pod, "spec");
  std::string policy = string_field(spec, "restartPolicy");
  if (!policy.empty()) run.restart_policy = policy;
  run.start = now;
  const Json& containers = list_field(spec, "containers");
  run.containers.reserve(containers.size());
  for (size_t i = 0; i < containers.size(); ++i) {
    run.containers.push_back(new_container(pod, containers[i], i, now));
  }
  return run;
}

PodRun adopt_pod(const Json& pod, Instant now) {
  PodRun run = start_pod(pod, now);
  const Json& status = field(pod, "status");
  auto to_instant = [&](WallTime wall) {
    auto ago = std::chrono::duration_cast<milliseconds>(now.wall - wall);
    if (ago < milliseconds(0)) ago = milliseconds(0);
    return Instant{now.mono - ago, now.wall - ago};
  };
  std::string start_time = string_field(status, "startTime");
  if (!start_time.empty()) run.start = to_instant(from_timestamp(start_time, now.wall));
  for (const Json& cs : list_field(status, "containerStatuses")) {
    std::string name = string_field(cs, "name");
    auto it = std::find_if(run.containers.begin(), run.containers.end(),
                           [&](const ContainerRun& c) { return c.name == name; });
    if (it == run.containers.end()) continue;
    ContainerRun& c = *it;
    const Json& restarts = field(cs, "restartCount");
    if (restarts.is_number_integer()) c.restart_count = restarts.get<int>();
    const Json& state = field(cs, "state");
    auto read_termination = [&](const Json& t) {
      Termination out;
      const Json& code = field(t, "exitCode");
      out.exit_code = code.is_number_integer() ? code.get<int>() : 0;
      out.started = from_timestamp(string_field(t, "startedAt"), now.wall);
      out.finished = from_timestamp(string_field(t, "finishedAt"), now.wall);
      return out;
    };
    if (state.contains("running")) {
      c.started = to_instant(from_timestamp(string_field(state["running"], "startedAt"), now.wall));
    } else if (state.contains("terminated") && run.restart_policy != "Always") {
      Termination t = read_termination(state["terminated"]);
      t.run = c.restart_count;
      bool restart = run.restart_policy == "OnFailure" && t.exit_code != 0;
      if (!restart) {
        c.ended = t;
        c.state = ContainerRun::State::kTerminated;
      }
    }
    const Json& last = field(field(cs, "lastState"), "terminated");
    if (!last.empty()) {
      c.last = read_termination(last);
      c.last->run = std::max(0, c.restart_count - 1);
    }
  }
  return run;
}

std::optional<MonoTime> advance(PodRun& run, Instant now, const RestartBackoff& backoff) {
  std::optional<MonoTime> next;
  for (ContainerRun& c : run.containers) {
    for (int step = 0; step < kMaxTransitions; ++step) {
      if (c.state == ContainerRun::State::kRunning && c.plan.after &&
          now.mono >= c.started.mono + *c.plan.after) {
        end_run(c, run.restart_policy, c.started.plus(*c.plan.after), backoff);
      } else if (c.state == ContainerRun::State::kBackOff && now.mono >= c.restart_at.mono) {
        ++c.restart_count;
        c.started = c.restart_at;
        c.state = ContainerRun::State::kRunning;
      } else {
        break;
      }
    }
    switch (c.state) {
      case ContainerRun::State::kRunning:
        if (c.plan.after) next = earliest(next, c.started.mono + *c.plan.after);
        if (!container_ready(c, now)) next = earliest(next, c.started.mono + c.ready_delay);
        // A container stuck at the transition cap goes on at once.
        if (c.plan.after && now.mono >= c.started.mono + *c.plan.after) next = now.mono;
        break;
      case ContainerRun::State::kBackOff:
        next = earliest(next, c.restart_at.mono);
        break;
      case ContainerRun::State::kTerminated:
        break;
    }
  }
  return next;
}

void kill_pod(PodRun& run, Instant now) {
  run.killed = true;
  for (ContainerRun& c : run.containers) {
    switch (c.state) {
      case ContainerRun::State::kRunning:
        c.ended = Termination{kKilledExitCode, c.restart_count, c.started.wall, now.wall};
        break;
      case ContainerRun::State::kBackOff:
        // Waiting to restart: what it shows is how its last run ended.
        c.ended = c.last;
        c.last.reset();
        break;
      case ContainerRun::State::kTerminated:
        continue;
    }
    c.state = ContainerRun::State::kTerminated;
  }
}

bool is_terminal(const PodRun& run) {
  return std::all_of(run.containers.begin(), run.containers.end(), [](const ContainerRun& c) {
    return c.state == ContainerRun::State::kTerminated;
  });
}

std::string pod_phase(const PodRun& run) {
  if (!is_terminal(run)) return "Running";
  for (const ContainerRun& c : run.containers) {
    if (c.ended && c.ended->exit_code != 0) return "Failed";
  }
  return "Succeeded";
}

Json build_pod_status(const Json& pod, const PodRun& run, const std::string& host_ip,
                      const std::string& pod_ip, Instant now) {
  const Json& spec = field(pod, "spec");
  const Json& old_status = field(pod, "status");
  Json status = old_status.is_object() ? old_status : Json::object();
  const Json& old_conditions = list_field(old_status, "conditions");
  bool terminal = is_terminal(run);

  status["phase"] = pod_phase(run);
  status["hostIP"] = host_ip;
  status["hostIPs"] = Json::array({{{"ip", host_ip}}});
  status["podIP"] = pod_ip;
  status["podIPs"] = Json::array({{{"ip", pod_ip}}});
  if (string_field(old_status, "startTime").empty())
    status["startTime"] = timestamp(run.start.wall);

  // Containers, sorted by name as the kubelet reports them.
  std::vector<const ContainerRun*> sorted;
  for (const ContainerRun& c : run.containers) sorted.push_back(&c);
  std::sort(sorted.begin(), sorted.end(),
            [](const ContainerRun* a, const ContainerRun* b) { return a->name < b->name; });
  Json statuses = Json::array();
  std::vector<std::string> unready;
  WallTime finished = run.start.wall;
  for (const ContainerRun* c : sorted) {
    bool ready = !terminal && container_ready(*c, now);
    if (!ready) unready.push_back(c->name);
    Json cs = {{"name", c->name},
               {"image", c->image},
               {"imageID", image_id(c->image)},
               {"ready", ready},
               {"restartCount", c->restart_count},
               {"started", c->state == ContainerRun::State::kRunning},
               {"lastState", Json::object()}};
    switch (c->state) {
      case ContainerRun::State::kRunning:
        cs["containerID"] = container_id(run.uid, c->name, c->restart_count);
        cs["state"] = {{"running", {{"startedAt", timestamp(c->started.wall)}}}};
        break;
      case ContainerRun::State::kBackOff: {
        WallTime since = c->last ? c->last->finished : c->restart_at.wall;
        auto delay = std::chrono::duration_cast<std::chrono::seconds>(c->restart_at.wall - since);
        std::string ns = string_field(field(pod, "metadata"), "namespace");
        std::string name = string_field(field(pod, "metadata"), "name");
        cs["state"] = {{"waiting",
                        {{"reason", "CrashLoopBackOff"},
                         {"message", "back-off " + std::to_string(delay.count()) +
                                         "s restarting failed container=" + c->name +
                                         " pod=" + name + "_" + ns + "(" + run.uid + ")"}}}};
        break;
      }
      case ContainerRun::State::kTerminated:
        if (c->ended) {
          cs["containerID"] = container_id(run.uid, c->name, c->ended->run);
          cs["state"] = {{"terminated", terminated_state(*c->ended, run.uid, c->name)}};
          finished = std::max(finished, c->ended->finished);
        } else {
          cs["state"] = {{"terminated", {{"exitCode", 0}, {"reason", "Completed"}}}};
        }
        break;
    }
    const std::optional<Termination>& last = c->last;
    if (last) cs["lastState"] = {{"terminated", terminated_state(*last, run.uid, c->name)}};
    statuses.push_back(std::move(cs));
  }
  status["containerStatuses"] = std::move(statuses);

  // Init containers completed when the pod started; sidecars run with the pod.
  const Json& init = list_field(spec, "initContainers");
  if (!init.empty()) {
    Json init_statuses = Json::array();
    for (const Json& ic : init) {
      std::string name = string_field(ic, "name");
      std::string image = string_field(ic, "image");
      bool sidecar = string_field(ic, "restartPolicy") == "Always";
      Json s = {{"name", name},
                {"image", image},
                {"imageID", image_id(image)},
                {"containerID", container_id(run.uid, name, 0)},
                {"restartCount", 0},
                {"lastState", Json::object()}};
      Termination done{0, 0, run.start.wall, run.start.wall};
      if (sidecar && !terminal) {
        s["ready"] = true;
        s["started"] = true;
        s["state"] = {{"running", {{"startedAt", timestamp(run.start.wall)}}}};
      } else {
        if (sidecar) done.finished = finished;
        s["ready"] = false;
        s["started"] = false;
        s["state"] = {{"terminated", terminated_state(done, run.uid, name)}};
      }
      init_statuses.push_back(std::move(s));
    }
    status["initContainerStatuses"] = std::move(init_statuses);
  }

  // Conditions: the kubelet's own, in upstream's order, then the scheduler's, then the rest.
  bool containers_ready = unready.empty() && !terminal;
  std::string unready_message;
  if (!unready.empty() && !terminal) {
    unready_message = "containers with unready status: [";
    for (size_t i = 0; i < unready.size(); ++i) {
      unready_message += (i ? " " : "") + unready[i];
    }
    unready_message += "]";
  }
  std::string ready_reason = terminal           ? "PodCompleted"
                             : containers_ready ? ""
                                                : "ContainersNotReady";
  bool pod_ready = containers_ready;
  std::string gate_message;
  for (const Json& gate : list_field(spec, "readinessGates")) {
    std::string type = string_field(gate, "conditionType");
    bool is_true = false;
    for (const Json& c : old_conditions) {
      if (string_field(c, "type") == type) is_true = string_field(c, "status") == "True";
    }
    if (!is_true && gate_message.empty()) {
      gate_message = "the status of pod readiness gate \"" + type + "\" is not \"True\"";
    }
  }
  std::string pod_ready_reason = ready_reason;
  std::string pod_ready_message = unready_message;
  if (pod_ready && !gate_message.empty()) {
    pod_ready = false;
    pod_ready_reason = "ReadinessGatesNotReady";
    pod_ready_message = gate_message;
  }
  Json conditions = Json::array();
  conditions.push_back(
      condition(old_conditions, "PodReadyToStartContainers", !terminal, "", "", now));
  conditions.push_back(condition(old_conditions, "Initialized", true, "", "", now));
  conditions.push_back(
      condition(old_conditions, "Ready", pod_ready, pod_ready_reason, pod_ready_message, now));
  conditions.push_back(condition(old_conditions, "ContainersReady", containers_ready, ready_reason,
                                 unready_message, now));
  bool scheduled = false;
  for (const Json& c : old_conditions) {
    if (string_field(c, "type") == "PodScheduled") {
      conditions.push_back(c);
      scheduled = true;
    }
  }
  if (!scheduled)
    conditions.push_back(condition(old_conditions, "PodScheduled", true, "", "", now));
  for (const Json& c : old_conditions) {
    std::string type = string_field(c, "type");
    if (type != "PodReadyToStartContainers" && type != "Initialized" && type != "Ready" &&
        type != "ContainersReady" && type != "PodScheduled") {
      conditions.push_back(c);
    }
  }
  status["conditions"] = std::move(conditions);
  return status;
}

Json merge_patch_diff(const Json& from, const Json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  Json patch = Json::object();
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (!to.contains(it.key())) patch[it.key()] = nullptr;
  }
  for (auto it = to.begin(); it != to.end(); ++it) {
    auto old = from.find(it.key());
    if (old == from.end()) {
      patch[it.key()] = it.value();
    } else if (*old != it.value()) {
      if (old->is_object() && it.value().is_object()) {
        patch[it.key()] = merge_patch_diff(*old, it.value());
      } else {
        patch[it.key()] = it.value();
      }
    }
  }
  return patch;
}

}  // namespace skiff::hollow
