#include "hollow/hollow_node.h"

#include <algorithm>
#include <array>

#include "api/quantity.h"
#include "base/log.h"
#include "base/version.h"

namespace skiff::hollow {
namespace {

using client::ObjectPtr;
using client::resources::kLeases;
using client::resources::kNodes;
using client::resources::kPods;
using std::chrono::milliseconds;
using namespace std::chrono_literals;

constexpr char kLeaseNamespace[] = "kube-node-lease";
constexpr char kNodeIndex[] = "node";
constexpr int kKubeletPort = 10250;

// The node conditions a kubelet reports, in its order: type, status, reason, message.
struct ConditionSpec {
  const char* type;
  const char* status;
  const char* reason;
  const char* message;
};
constexpr std::array<ConditionSpec, 4> kNodeConditions = {{
    {"MemoryPressure", "False", "KubeletHasSufficientMemory",
     "kubelet has sufficient memory available"},
    {"DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"},
    {"PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"},
    {"Ready", "True", "KubeletReady", "kubelet is posting ready status"},
}};

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

std::string node_name_of(const Json& pod) {
  return string_field(field(pod, "spec"), "nodeName");
}

std::string timestamp(WallTime t) {
  return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

std::string kubelet_version() {
  return std::string("v") + kKubernetesMajor + "." + kKubernetesMinor + ".0-skiff." + kSkiffVersion;
}

// "8-4-4-4-12" from the first 32 hex digits of `hex`.
std::string uuid_from_hex(const std::string& hex) {
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

// What the hollow kubelet reads of a pod; the rest is dropped before caching, since one process
// caches every pod of thousands of nodes. Pods of other nodes keep only their identity.
void trim_pod(Json& pod, bool ours) {
  if (!pod.is_object()) return;
  Json& meta = pod["metadata"];
  if (meta.is_object()) {
    Json kept = Json::object();
    for (const char* f : {"name", "namespace", "uid", "resourceVersion", "deletionTimestamp",
                          "deletionGracePeriodSeconds"}) {
      if (auto it = meta.find(f); it != meta.end()) kept[f] = std::move(*it);
    }
    if (auto a = meta.find("annotations"); ours && a != meta.end() && a->is_object()) {
      Json annotations = Json::object();
      for (auto it = a->begin(); it != a->end(); ++it) {
        if (it.key().rfind("skiff.dev/hollow-", 0) == 0) annotations[it.key()] = it.value();
      }
      if (!annotations.empty()) kept["annotations"] = std::move(annotations);
    }
    meta = std::move(kept);
  }
  Json& spec = pod["spec"];
  if (spec.is_object()) {
    Json kept = Json::object();
    std::vector<const char*> fields = {"nodeName"};
    if (ours) fields.insert(fields.end(), {"restartPolicy", "hostNetwork", "readinessGates"});
    for (const char* f : fields) {
      if (auto it = spec.find(f); it != spec.end()) kept[f] = std::move(*it);
    }
    auto keep_containers = [&](const char* list, std::initializer_list<const char*> names) {
      auto it = spec.find(list);
      if (it == spec.end() || !it->is_array()) return;
      Json out = Json::array();
      for (Json& c : *it) {
        Json k = Json::object();
        for (const char* n : names) {
          if (auto f = c.find(n); f != c.end()) k[n] = std::move(*f);
        }
        if (auto probe = c.find("readinessProbe"); probe != c.end() && probe->is_object()) {
          k["readinessProbe"] = Json::object();
          if (auto d = probe->find("initialDelaySeconds"); d != probe->end()) {
            k["readinessProbe"]["initialDelaySeconds"] = *d;
          }
        }
        out.push_back(std::move(k));
      }
      kept[list] = std::move(out);
    };
    if (ours) {
      keep_containers("containers", {"name", "image", "command", "args"});
      keep_containers("initContainers", {"name", "image", "restartPolicy"});
    }
    spec = std::move(kept);
  }
  if (!ours) pod.erase("status");
}

// One informer for the pods of every node in the cluster that has one: the API server filters out
// pending pods, the handlers those of other nodes.
client::InformerOptions bound_pods() {
  client::InformerOptions options;
  options.field_selector = "spec.nodeName!=";
  return options;
}

bool terminal_phase(const std::string& phase) {
  return phase == "Succeeded" || phase == "Failed";
}

// At most one warning a second for the many nodes or pods that may fail alike (an API server
// that is down fails every renewal); the rest go to debug.
class WarnLimiter {
 public:
  template <typename... Args>
  void warn(fmt::format_string<Args...> format, Args&&... args) {
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto last = last_.load();
    if (now - last >= std::chrono::steady_clock::duration(1s).count() &&
        last_.compare_exchange_strong(last, now)) {
      uint64_t skipped = suppressed_.exchange(0);
      std::string msg = fmt::format(format, std::forward<Args>(args)...);
      if (skipped > 0) {
        SKIFF_LOG_WARN("hollow-node: {} ({} similar messages suppressed)", msg, skipped);
      } else {
        SKIFF_LOG_WARN("hollow-node: {}", msg);
      }
    } else {
      ++suppressed_;
      SKIFF_LOG_DEBUG(format, std::forward<Args>(args)...);
    }
  }

 private:
  std::atomic<int64_t> last_{0};
  std::atomic<uint64_t> suppressed_{0};
};

WarnLimiter& warn_limiter() {
  static WarnLimiter limiter;
  return limiter;
}

}  // namespace

struct HollowNodes::Node {
  std::string name;
  size_t position = 0;  // among this process's nodes: decides its renewal slots
  std::string internal_ip;
  Ipv4Cidr assigned_cidr;  // from pod_cidr; an existing Node's spec.podCIDR wins

  // Touched only by the worker that holds the node's key.
  bool registration_done = false;
  bool missing_logged = false;
  std::string uid;
  std::string lease_resource_version;
  MonoTime next_lease{};
  MonoTime next_status{};
  std::array<std::string, kNodeConditions.size()> transitions;

  // Read by pod workers.
  std::mutex mu;
  bool registered = false;  // guarded by mu
  PodAddressPool pool;      // guarded by mu
};

struct HollowNodes::PodState {
  std::string uid;
  Node* node = nullptr;
  uint32_t address = 0;
  bool holds_address = false;  // `address` is taken from the node's pool
  bool host_network = false;
  bool running = false;  // `run` is set up
  PodRun run;
  bool final_status_written = false;
  bool delete_sent = false;
};

Status validate(const HollowNodeOptions& o) {
  auto invalid = [](std::string msg) {
    return error(StatusCode::kInvalidArgument, std::move(msg));
  };
  if (o.count < 1) return invalid("--count must be at least 1");
  if (o.first_index < 0) return invalid("--first-index must not be negative");
  if (o.name_prefix.empty()) return invalid("--name-prefix must not be empty");
  for (auto [flag, value] :
       {std::pair{"--cpu", &o.cpu}, std::pair{"--memory", &o.memory}, std::pair{"--pods", &o.pods},
        std::pair{"--ephemeral-storage", &o.ephemeral_storage}}) {
    auto q = api::Quantity::parse(*value);
    if (!q.is_ok()) {
      return invalid(std::string(flag) + ": " + q.status().message());
    }
    if (q->milli_value() <= 0) return invalid(std::string(flag) + " must be positive");
  }
  auto cidr = Ipv4Cidr::parse(o.pod_cidr);
  if (!cidr.is_ok()) return invalid("--pod-cidr: " + cidr.status().message());
  if (o.node_cidr_mask_size < cidr->prefix || o.node_cidr_mask_size > 30) {
    return invalid("--node-cidr-mask-size must be between the --pod-cidr prefix (" +
                   std::to_string(cidr->prefix) + ") and 30");
  }
  uint64_t last = static_cast<uint64_t>(o.first_index) + static_cast<uint64_t>(o.count) - 1;
  if (!cidr->block(o.node_cidr_mask_size, last).is_ok()) {
    return invalid("--pod-cidr " + o.pod_cidr + " has too few /" +
                   std::to_string(o.node_cidr_mask_size) + " blocks for " +
                   std::to_string(last + 1) + " nodes");
  }
  auto ips = Ipv4Cidr::parse(o.node_ip_range);
  if (!ips.is_ok()) return invalid("--node-ip-range: " + ips.status().message());
  // .0 is the network; the last address the broadcast.
  if (ips->size() < last + 3) {
    return invalid("--node-ip-range " + o.node_ip_range + " has too few addresses for " +
                   std::to_string(last + 1) + " nodes");
  }
  for (auto [flag, d] : {std::pair{"lease duration", o.lease_duration},
                         std::pair{"lease renew interval", o.lease_renew_interval},
                         std::pair{"status report interval", o.status_report_interval}}) {
    if (d <= 0ms) return invalid(std::string(flag) + " must be positive");
  }
  if (o.lease_duration < 1s) return invalid("the lease duration must be at least 1s");
  if (o.node_workers < 1 || o.pod_workers < 1) return invalid("workers must be at least 1");
  if (o.clock == nullptr) return invalid("no clock");
  return Status::ok();
}

Result<std::unique_ptr<HollowNodes>> HollowNodes::create(client::ApiClient& api,
                                                         HollowNodeOptions options) {
  SKIFF_RETURN_IF_ERROR(validate(options));
  Json capacity = Json::object();
  for (auto [name, value] : {std::pair{"cpu", &options.cpu}, std::pair{"memory", &options.memory},
                             std::pair{"pods", &options.pods},
                             std::pair{"ephemeral-storage", &options.ephemeral_storage}}) {
    capacity[name] = api::Quantity::parse(*value)->to_string();
  }
  capacity["hugepages-1Gi"] = "0";
  capacity["hugepages-2Mi"] = "0";
  Ipv4Cidr pod_cidr = Ipv4Cidr::parse(options.pod_cidr).value();
  Ipv4Cidr ip_range = Ipv4Cidr::parse(options.node_ip_range).value();
  std::vector<std::unique_ptr<Node>> nodes;
  nodes.reserve(static_cast<size_t>(options.count));
  for (int i = 0; i < options.count; ++i) {
    uint64_t index = static_cast<uint64_t>(options.first_index) + static_cast<uint64_t>(i);
    auto node = std::make_unique<Node>();
    node->name = options.name_prefix + std::to_string(index);
    node->position = static_cast<size_t>(i);
    node->internal_ip = format_ipv4(ip_range.base + static_cast<uint32_t>(index + 1));
    node->assigned_cidr = pod_cidr.block(options.node_cidr_mask_size, index).value();
    nodes.push_back(std::move(node));
  }
  return std::unique_ptr<HollowNodes>(
      new HollowNodes(api, std::move(options), std::move(capacity), std::move(nodes)));
}

HollowNodes::HollowNodes(client::ApiClient& api, HollowNodeOptions options, Json capacity,
                         std::vector<std::unique_ptr<Node>> nodes)
    : api_(api),
      options_(std::move(options)),
      capacity_(std::move(capacity)),
      epoch_(std::chrono::steady_clock::now()),
      nodes_(std::move(nodes)),
      pods_(api, kPods, bound_pods()),
      node_queue_(5ms, options_.lease_renew_interval),
      pod_queue_(5ms, 30s),
      recorder_(api, "kubelet", "", 2) {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    names_.push_back(nodes_[i]->name);
    index_.emplace(nodes_[i]->name, i);
  }
  pods_.set_transform([this](Json& pod) { trim_pod(pod, node_by_name(node_name_of(pod))); });
  pods_.add_index(kNodeIndex, [](const Json& pod) {
    std::string node = node_name_of(pod);
    return node.empty() ? std::vector<std::string>{} : std::vector<std::string>{node};
  });
  auto enqueue = [this](const ObjectPtr& pod) {
    if (node_by_name(node_name_of(*pod))) pod_queue_.add(client::key_of(*pod));
  };
  pods_.add_handlers(
      {enqueue, [enqueue](const ObjectPtr&, const ObjectPtr& pod) { enqueue(pod); }, enqueue});
}

HollowNodes::~HollowNodes() {
  stop();
}

void HollowNodes::start() {
  if (started_) return;
  started_ = true;
  pods_.start();
  for (const auto& node : nodes_) node_queue_.add(node->name);
  for (int i = 0; i < options_.node_workers; ++i) {
    workers_.emplace_back([this] { worker_loop(node_queue_, &HollowNodes::sync_node); });
  }
  for (int i = 0; i < options_.pod_workers; ++i) {
    workers_.emplace_back([this] { worker_loop(pod_queue_, &HollowNodes::sync_pod); });
  }
}

void HollowNodes::stop() {
  if (!started_) return;
  started_ = false;
  node_queue_.shut_down();
  pod_queue_.shut_down();
  for (auto& t : workers_) t.join();
  workers_.clear();
  pods_.stop();
  if (options_.delete_nodes_on_exit) delete_nodes();
}

size_t HollowNodes::registered() const {
  std::lock_guard lock(registered_mu_);
  return registered_;
}

bool HollowNodes::wait_registered(milliseconds timeout) const {
  std::unique_lock lock(registered_mu_);
  return registered_cv_.wait_for(lock, timeout, [&] { return registered_ == nodes_.size(); });
}

size_t HollowNodes::pods_tracked() const {
  std::lock_guard lock(pods_mu_);
  return pod_states_.size();
}

void HollowNodes::worker_loop(client::WorkQueue& queue,
                              Status (HollowNodes::*sync)(const std::string&)) {
  // Nothing is judged on a partial pod cache: registration reserves the addresses of the pods
  // its node already runs, and a pod is only started once.
  while (!pods_.wait_for_sync(50ms)) {
    if (queue.shutting_down()) return;
  }
  while (auto key = queue.get()) {
    Status s = (this->*sync)(*key);
    if (s.is_ok()) {
      queue.forget(*key);
    } else {
      if (s.code() != StatusCode::kAborted) warn_limiter().warn("{}: {}", *key, s.to_string());
      queue.add_rate_limited(*key);
    }
    queue.done(*key);
  }
}

HollowNodes::Node* HollowNodes::node_by_name(const std::string& name) {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : nodes_[it->second].get();
}

Instant HollowNodes::now() const {
  return {std::chrono::steady_clock::now(), options_.clock->now()};
}

MonoTime HollowNodes::next_slot(milliseconds period, const Node& node, MonoTime after) const {
  // Node p of n renews at epoch + p/n of the period, then every period: renewals of all nodes
  // spread evenly instead of coming in bursts.
  auto phase = period * static_cast<int64_t>(node.position) / static_cast<int64_t>(nodes_.size());
  MonoTime first = epoch_ + phase;
  if (after < first) return first;
  auto periods = (after - first) / period + 1;
  return first + periods * period;
}

// ---- nodes ----------------------------------------------------------------------------------

Json HollowNodes::node_conditions(const Node& node, WallTime heartbeat) const {
  Json conditions = Json::array();
  std::string beat = timestamp(heartbeat);
  for (size_t i = 0; i < kNodeConditions.size(); ++i) {
    const ConditionSpec& c = kNodeConditions[i];
    conditions.push_back({{"type", c.type},
                          {"status", c.status},
                          {"lastHeartbeatTime", beat},
                          {"lastTransitionTime", node.transitions[i]},
                          {"reason", c.reason},
                          {"message", c.message}});
  }
  return conditions;
}

Json HollowNodes::full_node_status(const Node& node, WallTime heartbeat) const {
  std::string id = sha256_hex("hollow-node/" + node.name);
  return {{"capacity", capacity_},
          {"allocatable", capacity_},
          {"conditions", node_conditions(node, heartbeat)},
          {"addresses", Json::array({{{"type", "InternalIP"}, {"address", node.internal_ip}},
                                     {{"type", "Hostname"}, {"address", node.name}}})},
          {"daemonEndpoints", {{"kubeletEndpoint", {{"Port", kKubeletPort}}}}},
          {"nodeInfo",
           {{"machineID", id.substr(0, 32)},
            {"systemUUID", uuid_from_hex(id.substr(32))},
            {"bootID",
             uuid_from_hex(sha256_hex(id + std::to_string(epoch_.time_since_epoch().count())))},
            {"kernelVersion", "6.1.0-hollow"},
            {"osImage", "skiff hollow node"},
            {"containerRuntimeVersion", "hollow://1.0"},
            {"kubeletVersion", kubelet_version()},
            {"kubeProxyVersion", ""},
            {"operatingSystem", "linux"},
            {"architecture", "amd64"}}}};
}

Status HollowNodes::sync_node(const std::string& name) {
  Node* node = node_by_name(name);
  if (!node) return Status::ok();
  if (!node->registration_done) SKIFF_RETURN_IF_ERROR(register_node(*node));
  MonoTime t = std::chrono::steady_clock::now();
  if (t >= node->next_lease) {
    SKIFF_RETURN_IF_ERROR(renew_lease(*node));
    node->next_lease = next_slot(options_.lease_renew_interval, *node, t);
  }
  if (t >= node->next_status) {
    SKIFF_RETURN_IF_ERROR(report_status(*node, false));
    node->next_status = next_slot(options_.status_report_interval, *node, t);
  }
  MonoTime next = std::min(node->next_lease, node->next_status);
  node_queue_.add_after(name, next - std::chrono::steady_clock::now());
  return Status::ok();
}

Status HollowNodes::register_node(Node& node) {
  Json labels = {{"kubernetes.io/hostname", node.name},
                 {"kubernetes.io/os", "linux"},
                 {"kubernetes.io/arch", "amd64"},
                 {"beta.kubernetes.io/os", "linux"},
                 {"beta.kubernetes.io/arch", "amd64"},
                 {"node.kubernetes.io/instance-type", "hollow"},
                 {"type", "hollow"}};
  for (const auto& [k, v] : options_.labels) labels[k] = v;
  std::string cidr_text = node.assigned_cidr.to_string();
  Json object = {
      {"apiVersion", "v1"},
      {"kind", "Node"},
      {"metadata",
       {{"name", node.name},
        {"labels", labels},
        {"annotations", {{"volumes.kubernetes.io/controller-managed-attach-detach", "true"}}}}},
      {"spec", {{"podCIDR", cidr_text}, {"podCIDRs", Json::array({cidr_text})}}}};
  Ipv4Cidr cidr = node.assigned_cidr;
  Json current;
  auto created = api_.create(kNodes, "", object);
  if (created.is_ok()) {
    current = std::move(created).value();
  } else if (created.status().code() == StatusCode::kAlreadyExists) {
    // A restart: update the Node rather than fail, keeping the pod CIDR it has.
    SKIFF_ASSIGN_OR_RETURN(current, api_.get(kNodes, "", node.name));
    Json patch = {{"metadata", {{"labels", labels}}}};
    std::string existing = string_field(field(current, "spec"), "podCIDR");
    if (existing.empty()) {
      patch["spec"] = object["spec"];
    } else if (auto parsed = Ipv4Cidr::parse(existing); parsed.is_ok() && parsed->prefix <= 30) {
      cidr = *parsed;
    } else {
      warn_limiter().warn(
          "node {} has pod CIDR {} that hollow nodes cannot use; pods get "
          "addresses from {}",
          node.name, existing, cidr_text);
    }
    SKIFF_ASSIGN_OR_RETURN(
        current, api_.patch(kNodes, "", node.name, client::PatchType::kMerge, patch.dump()));
  } else {
    return created.status();
  }
  node.uid = client::uid_of(current);

  // Conditions already as reported keep their transition times.
  Instant t = now();
  const Json& old_conditions = field(field(current, "status"), "conditions");
  for (size_t i = 0; i < kNodeConditions.size(); ++i) {
    node.transitions[i] = timestamp(t.wall);
    if (!old_conditions.is_array()) continue;
    for (const Json& c : old_conditions) {
      if (string_field(c, "type") == kNodeConditions[i].type &&
          string_field(c, "status") == kNodeConditions[i].status &&
          !string_field(c, "lastTransitionTime").empty()) {
        node.transitions[i] = string_field(c, "lastTransitionTime");
      }
    }
  }
  SKIFF_RETURN_IF_ERROR(report_status(node, true));
  SKIFF_RETURN_IF_ERROR(renew_lease(node));
  node.registration_done = true;
  // The first renewal and heartbeat come at the node's slot, at least half a period away.
  MonoTime mono = std::chrono::steady_clock::now();
  node.next_lease =
      next_slot(options_.lease_renew_interval, node, mono + options_.lease_renew_interval / 2);
  node.next_status =
      next_slot(options_.status_report_interval, node, mono + options_.status_report_interval / 2);

  // Pods the node already runs (a restart) keep their addresses: reserve them before any new
  // pod can take one.
  std::vector<ObjectPtr> pods = pods_.by_index(kNodeIndex, node.name);
  {
    std::lock_guard lock(node.mu);
    node.pool = PodAddressPool(cidr);
    node.registered = true;
    for (const ObjectPtr& pod : pods) {
      const Json& status = field(*pod, "status");
      if (terminal_phase(string_field(status, "phase"))) continue;
      if (field(field(*pod, "spec"), "hostNetwork") == Json(true)) continue;
      auto ip = parse_ipv4(string_field(status, "podIP"));
      if (!ip || !node.pool.reserve(*ip)) continue;
      auto state = std::make_unique<PodState>();
      state->uid = client::uid_of(*pod);
      state->node = &node;
      state->address = *ip;
      state->holds_address = true;
      std::lock_guard pods_lock(pods_mu_);
      auto [it, inserted] = pod_states_.try_emplace(client::key_of(*pod), std::move(state));
      if (!inserted) node.pool.release(*ip);
    }
  }
  for (const ObjectPtr& pod : pods) pod_queue_.add(client::key_of(*pod));
  {
    std::lock_guard lock(registered_mu_);
    ++registered_;
  }
  registered_cv_.notify_all();
  return Status::ok();
}

Status HollowNodes::renew_lease(Node& node) {
  Json lease = {
      {"apiVersion", kLeases.api_version()},
      {"kind", "Lease"},
      {"metadata", {{"name", node.name}, {"namespace", kLeaseNamespace}}},
      {"spec",
       {{"holderIdentity", node.name},
        {"leaseDurationSeconds",
         std::chrono::duration_cast<std::chrono::seconds>(options_.lease_duration).count()},
        {"renewTime", rfc3339_micro(options_.clock->now())}}}};
  if (!node.uid.empty()) {
    lease["metadata"]["ownerReferences"] = Json::array(
        {{{"apiVersion", "v1"}, {"kind", "Node"}, {"name", node.name}, {"uid", node.uid}}});
  }
  // Renew from the resourceVersion of the last write, as the kubelet does; read the Lease only
  // when that fails.
  if (!node.lease_resource_version.empty()) {
    Json update = lease;
    update["metadata"]["resourceVersion"] = node.lease_resource_version;
    auto r = api_.update(kLeases, kLeaseNamespace, update);
    if (r.is_ok()) {
      node.lease_resource_version = client::resource_version_of(r.value());
      return Status::ok();
    }
    node.lease_resource_version.clear();
    if (r.status().code() != StatusCode::kAborted && r.status().code() != StatusCode::kNotFound) {
      return r.status();
    }
  }
  auto current = api_.get(kLeases, kLeaseNamespace, node.name);
  if (current.is_ok()) {
    lease["metadata"]["resourceVersion"] = client::resource_version_of(current.value());
    SKIFF_ASSIGN_OR_RETURN(Json updated, api_.update(kLeases, kLeaseNamespace, lease));
    node.lease_resource_version = client::resource_version_of(updated);
    return Status::ok();
  }
  if (current.status().code() != StatusCode::kNotFound) return current.status();
  SKIFF_ASSIGN_OR_RETURN(Json created, api_.create(kLeases, kLeaseNamespace, lease));
  node.lease_resource_version = client::resource_version_of(created);
  return Status::ok();
}

Status HollowNodes::report_status(Node& node, bool full) {
  WallTime beat = options_.clock->now();
  Json status =
      full ? full_node_status(node, beat) : Json{{"conditions", node_conditions(node, beat)}};
  Json patch = {{"status", std::move(status)}};
  auto r = api_.patch(kNodes, "", node.name, client::PatchType::kMerge, patch.dump(), {}, "status");
  if (r.is_ok()) {
    node.missing_logged = false;
    return Status::ok();
  }
  if (r.status().code() == StatusCode::kNotFound && !full) {
    // Deleted behind our back: like a kubelet, keep reporting (and failing) rather than
    // register again, so the deletion sticks.
    if (!node.missing_logged) {
      node.missing_logged = true;
      warn_limiter().warn("node {} was deleted; it is no longer reported", node.name);
    }
    return Status::ok();
  }
  return r.status();
}

void HollowNodes::delete_nodes() {
  for (const auto& node : nodes_) {
    if (!node->registration_done) continue;
    auto lease = api_.remove(kLeases, kLeaseNamespace, node->name);
    auto removed = api_.remove(kNodes, "", node->name);
    for (const Status& s : {lease.status(), removed.status()}) {
      if (!s.is_ok() && s.code() != StatusCode::kNotFound) {
        warn_limiter().warn("deleting node {}: {}", node->name, s.to_string());
      }
    }
  }
}

// ---- pods -----------------------------------------------------------------------------------

HollowNodes::PodState* HollowNodes::find_pod(const std::string& key) {
  std::lock_guard lock(pods_mu_);
  auto it = pod_states_.find(key);
  return it == pod_states_.end() ? nullptr : it->second.get();
}

HollowNodes::PodState& HollowNodes::add_pod(const std::string& key,
                                            std::unique_ptr<PodState> state) {
  std::lock_guard lock(pods_mu_);
  auto& slot = pod_states_[key];
  slot = std::move(state);
  return *slot;
}

void HollowNodes::release_address(PodState& state) {
  if (!state.holds_address) return;
  std::lock_guard lock(state.node->mu);
  state.node->pool.release(state.address);
  state.holds_address = false;
}

void HollowNodes::forget_pod(const std::string& key) {
  std::unique_ptr<PodState> state;
  {
    std::lock_guard lock(pods_mu_);
    auto it = pod_states_.find(key);
    if (it == pod_states_.end()) return;
    state = std::move(it->second);
    pod_states_.erase(it);
  }
  release_address(*state);
}

Status HollowNodes::write_pod_status(const Json& pod, const Json& status) {
  Json diff = merge_patch_diff(field(pod, "status"), status);
  if (diff.empty()) return Status::ok();
  // The resourceVersion makes the patch apply only to the pod as cached: on a conflict the key
  // is retried against a fresher cache.
  Json patch = {{"metadata", {{"resourceVersion", client::resource_version_of(pod)}}},
                {"status", std::move(diff)}};
  auto r = api_.patch(kPods, client::namespace_of(pod), client::name_of(pod),
                      client::PatchType::kMerge, patch.dump(), {}, "status");
  return r.status();
}

Status HollowNodes::sync_pod(const std::string& key) {
  ObjectPtr pod = pods_.get(key);
  Node* node = pod ? node_by_name(node_name_of(*pod)) : nullptr;
  if (!node) {
    forget_pod(key);
    return Status::ok();
  }
  std::string uid = client::uid_of(*pod);
  PodState* state = find_pod(key);
  if (state && state->uid != uid) {
    // Deleted and created again under the same name.
    forget_pod(key);
    state = nullptr;
  }
  {
    std::lock_guard lock(node->mu);
    // Registration queues the node's pods once it is done.
    if (!node->registered) return Status::ok();
  }
  const Json& meta = field(*pod, "metadata");
  const Json& spec = field(*pod, "spec");
  const Json& status = field(*pod, "status");
  std::string phase = string_field(status, "phase");
  if (!state) {
    // A pod that ended before this process knew it needs nothing more, unless it is deleted.
    if (terminal_phase(phase) && !meta.contains("deletionTimestamp")) return Status::ok();
    auto fresh = std::make_unique<PodState>();
    fresh->uid = uid;
    fresh->node = node;
    state = &add_pod(key, std::move(fresh));
  }
  if (meta.contains("deletionTimestamp")) return finish_deletion(*pod, *node, *state);
  if (state->final_status_written) return Status::ok();

  if (!state->running) {
    if (terminal_phase(phase)) {
      // Adopted at registration, but it has ended meanwhile.
      release_address(*state);
      state->final_status_written = true;
      return Status::ok();
    }
    state->host_network = field(spec, "hostNetwork") == Json(true);
    if (state->host_network) {
      release_address(*state);
      state->address = parse_ipv4(node->internal_ip).value_or(0);
    } else if (!state->holds_address) {
      std::lock_guard lock(node->mu);
      auto ip = parse_ipv4(string_field(status, "podIP"));
      if (ip && node->pool.reserve(*ip)) {
        state->address = *ip;
      } else if (auto fresh = node->pool.allocate()) {
        state->address = *fresh;
      } else {
        return error(
            StatusCode::kResourceExhausted,
            "no pod address left in " + node->pool.cidr().to_string() + " of node " + node->name);
      }
      state->holds_address = true;
    }
    Instant t = now();
    bool started_before = field(status, "containerStatuses").is_array() && phase == "Running";
    state->run = started_before ? adopt_pod(*pod, t) : start_pod(*pod, t);
    state->running = true;
  } else if (terminal_phase(phase) && !is_terminal(state->run)) {
    // Someone else ended it (an eviction, a deadline): it stays ended.
    release_address(*state);
    state->final_status_written = true;
    return Status::ok();
  }

  Instant t = now();
  std::optional<MonoTime> next = advance(state->run, t, options_.restart_backoff);
  bool terminal = is_terminal(state->run);
  // An ended pod's sandbox is gone, its address free again; status.podIP keeps showing it.
  if (terminal) release_address(*state);
  Json new_status =
      build_pod_status(*pod, state->run, node->internal_ip, format_ipv4(state->address), t);
  Status s = write_pod_status(*pod, new_status);
  if (s.code() == StatusCode::kNotFound) {
    forget_pod(key);
    return Status::ok();
  }
  SKIFF_RETURN_IF_ERROR(s);
  if (terminal) state->final_status_written = true;
  if (next) pod_queue_.add_after(key, *next - std::chrono::steady_clock::now());
  return Status::ok();
}

Status HollowNodes::finish_deletion(const Json& pod, Node& node, PodState& state) {
  // As the kubelet finishes a graceful deletion: stop the containers, report them stopped, then
  // delete the pod for good (grace 0), only if it is still the same pod.
  if (state.running && !state.final_status_written) {
    Instant t = now();
    advance(state.run, t, options_.restart_backoff);
    for (const ContainerRun& c : state.run.containers) {
      if (c.state == ContainerRun::State::kRunning) {
        recorder_.event_from(node.name, pod, "Normal", "Killing", "Stopping container " + c.name);
      }
    }
    if (!is_terminal(state.run)) kill_pod(state.run, t);
    release_address(state);
    Json new_status =
        build_pod_status(pod, state.run, node.internal_ip, format_ipv4(state.address), t);
    Status s = write_pod_status(pod, new_status);
    if (s.code() == StatusCode::kNotFound) {
      forget_pod(client::key_of(pod));
      return Status::ok();
    }
    SKIFF_RETURN_IF_ERROR(s);
    state.final_status_written = true;
  }
  release_address(state);
  if (state.delete_sent) return Status::ok();
  client::DeleteOptions options;
  options.grace_period_seconds = 0;
  options.precondition_uid = state.uid;
  auto r = api_.remove(kPods, client::namespace_of(pod), client::name_of(pod), options);
  // kAborted: the uid precondition failed, the name is another pod's now.
  if (!r.is_ok() && r.status().code() != StatusCode::kNotFound &&
      r.status().code() != StatusCode::kAborted) {
    return r.status();
  }
  state.delete_sent = true;
  return Status::ok();
}

// ---- run ------------------------------------------------------------------------------------

Status run(client::ApiClient& api, const HollowNodeOptions& options, std::stop_token stop) {
  SKIFF_ASSIGN_OR_RETURN(auto nodes, HollowNodes::create(api, options));
  auto started = std::chrono::steady_clock::now();
  nodes->start();
  SKIFF_LOG_INFO("hollow-node: registering {} nodes ({}{} ...)", options.count, options.name_prefix,
                 options.first_index);
  std::mutex mu;
  std::condition_variable_any cv;
  bool announced = false;
  while (!stop.stop_requested()) {
    if (!announced && nodes->wait_registered(0ms)) {
      announced = true;
      double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      SKIFF_LOG_INFO("hollow-node: {} nodes registered in {:.1f} s", options.count, secs);
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, announced ? 3600s : 100ms, [] { return false; });
  }
  SKIFF_LOG_INFO("hollow-node: stopping ({} pods tracked)", nodes->pods_tracked());
  nodes->stop();
  return Status::ok();
}

}  // namespace skiff::hollow
