#include "controllers/endpointslice/endpointslice_controller.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/endpoints/endpoint_util.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using namespace endpoint_util;
using client::resources::kEndpointSlices;
using client::resources::kNodes;
using client::resources::kPods;
using client::resources::kServices;

constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";
constexpr const char* kManagedByLabel = "endpointslice.kubernetes.io/managed-by";
constexpr const char* kZoneLabel = "topology.kubernetes.io/zone";
constexpr const char* kServiceIndex = "endpointslice/service";

const Json& labels_of(const Json& obj) {
  return member(member(obj, "metadata"), "labels");
}

bool managed_by_us(const Json& slice) {
  return string_field(labels_of(slice), kManagedByLabel) == kEndpointSliceControllerName;
}

// The key of the Service a slice we manage belongs to; "" for others' slices.
std::string service_key_of_slice(const Json& slice) {
  if (!managed_by_us(slice)) return "";
  std::string svc = string_field(labels_of(slice), kServiceNameLabel);
  return svc.empty() ? "" : client::key_of(client::namespace_of(slice), svc);
}

bool owned_by(const Json& slice, const Json& service) {
  const Json& refs = member(member(slice, "metadata"), "ownerReferences");
  if (!refs.is_array()) return false;
  for (const auto& r : refs) {
    if (string_field(r, "kind") == "Service" && string_field(r, "apiVersion") == "v1" &&
        string_field(r, "uid") == client::uid_of(service)) {
      return true;
    }
  }
  return false;
}

// A port as we write it, so existing and desired ports compare equal.
Json canonical_port(const Json& p) {
  Json out = {{"name", string_field(p, "name")}, {"protocol", port_protocol(p)}};
  out["port"] = member(p, "port");
  if (std::string a = string_field(p, "appProtocol"); !a.empty()) out["appProtocol"] = a;
  return out;
}

// Sorts `ports` canonically and returns the key of the set (upstream's PortMapKey).
std::string sort_ports(Json& ports) {
  std::vector<std::pair<std::string, Json>> keyed;
  for (const auto& p : ports) {
    Json c = canonical_port(p);
    keyed.emplace_back(c.dump(), c);
  }
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  ports = Json::array();
  std::string key;
  for (auto& [k, c] : keyed) {
    key += k;
    key += '\n';
    ports.push_back(std::move(c));
  }
  return key;
}

std::string port_key_of_slice(const Json& slice) {
  Json ports = member(slice, "ports");
  if (!ports.is_array()) ports = Json::array();
  return sort_ports(ports);
}

// Upstream's endpoint hash: addresses, hostname and the target's namespace/name identify an
// endpoint; everything else is its state.
std::string endpoint_key(const Json& ep) {
  std::vector<std::string> addrs;
  const Json& a = member(ep, "addresses");
  if (a.is_array()) {
    for (const auto& x : a) {
      if (x.is_string()) addrs.push_back(x.get<std::string>());
    }
  }
  std::sort(addrs.begin(), addrs.end());
  std::string key;
  for (const auto& x : addrs) key += x + ",";
  const Json& ref = member(ep, "targetRef");
  key += "|" + string_field(ep, "hostname") + "|" + string_field(ref, "namespace") + "/" +
         string_field(ref, "name");
  return key;
}

bool endpoints_equal_beyond_key(const Json& a, const Json& b) {
  for (const char* f : {"nodeName", "zone", "hints"}) {
    if (member(a, f) != member(b, f)) return false;
  }
  const Json& ac = member(a, "conditions");
  const Json& bc = member(b, "conditions");
  for (const char* f : {"ready", "serving", "terminating"}) {
    if (member(ac, f) != member(bc, f)) return false;
  }
  Json ar = member(a, "targetRef"), br = member(b, "targetRef");
  if (ar.is_object()) ar.erase("resourceVersion");
  if (br.is_object()) br.erase("resourceVersion");
  return ar == br;
}

size_t endpoint_count(const Json& slice) {
  const Json& e = member(slice, "endpoints");
  return e.is_array() ? e.size() : 0;
}

// Labels a slice of `service` carries (upstream's setEndpointSliceLabels): the Service's labels
// but the reserved ones, the headless label when the Service has no cluster IP, and ours.
Json slice_labels(const Json& service) {
  Json labels = Json::object();
  const Json& svc_labels = labels_of(service);
  if (svc_labels.is_object()) {
    for (const auto& [k, v] : svc_labels.items()) {
      if (k == kServiceNameLabel || k == kManagedByLabel || k == kHeadlessLabel) continue;
      labels[k] = v;
    }
  }
  if (!is_service_ip_set(service)) labels[kHeadlessLabel] = "";
  labels[kServiceNameLabel] = client::name_of(service);
  labels[kManagedByLabel] = kEndpointSliceControllerName;
  return labels;
}

Json new_slice(const Json& service, const Json& ports, const std::string& address_type) {
  std::string prefix = client::name_of(service) + "-";
  // generateName leaves room for a 5-character suffix in a 253-character name.
  if (prefix.size() > 248) prefix.resize(248);
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"generateName", prefix},
            {"namespace", client::namespace_of(service)},
            {"labels", slice_labels(service)},
            {"ownerReferences", Json::array({controller_ref(service, "Service", "v1")})}}},
          {"addressType", address_type},
          {"ports", ports},
          {"endpoints", Json::array()}};
}

void set_trigger_time(Json& slice, int64_t trigger_time) {
  Json& meta = slice["metadata"];
  if (trigger_time >= 0) {
    meta["annotations"][kLastChangeTriggerTime] = rfc3339(trigger_time);
  } else if (meta.contains("annotations") && meta["annotations"].is_object()) {
    meta["annotations"].erase(kLastChangeTriggerTime);
    if (meta["annotations"].empty()) meta.erase("annotations");
  }
}

// Which slices the controller wrote and what it expects the cache to show for them (upstream's
// EndpointSliceTracker, by resourceVersion): a cache that does not show them yet is stale.
class SliceTracker {
 public:
  void written(const std::string& service_key, const Json& slice) {
    std::lock_guard lock(mu_);
    by_service_[service_key][client::uid_of(slice)] = resource_version_number(slice);
  }
  void deletion_expected(const std::string& service_key, const Json& slice) {
    std::lock_guard lock(mu_);
    by_service_[service_key][client::uid_of(slice)] = kDeletionExpected;
  }
  void deleted(const Json& slice) {
    std::lock_guard lock(mu_);
    auto it = by_service_.find(service_key_of_slice(slice));
    if (it == by_service_.end()) return;
    it->second.erase(client::uid_of(slice));
    if (it->second.empty()) by_service_.erase(it);
  }
  void forget(const std::string& service_key) {
    std::lock_guard lock(mu_);
    by_service_.erase(service_key);
  }
  // `informer_rv` is the newest resourceVersion the cache applied (-1 when unknown): a slice
  // written before it and absent from the cache was deleted since, not yet to come.
  bool stale(const std::string& service_key, const std::vector<ObjectPtr>& cached,
             int64_t informer_rv) {
    std::lock_guard lock(mu_);
    auto it = by_service_.find(service_key);
    if (it == by_service_.end()) return false;
    std::set<std::string> seen;
    bool stale = false;
    for (const auto& s : cached) {
      std::string uid = client::uid_of(*s);
      seen.insert(uid);
      auto t = it->second.find(uid);
      if (t == it->second.end()) continue;
      if (t->second == kDeletionExpected) {
        stale = true;
        continue;
      }
      int64_t rv = resource_version_number(*s);
      if (t->second >= 0 && rv >= 0 && rv < t->second) stale = true;
    }
    for (auto t = it->second.begin(); t != it->second.end();) {
      if (seen.count(t->first)) {
        ++t;
      } else if (t->second == kDeletionExpected ||
                 (informer_rv >= 0 && t->second >= 0 && informer_rv >= t->second)) {
        t = it->second.erase(t);  // gone, as expected or by someone else's hand
      } else {
        stale = true;
        ++t;
      }
    }
    if (it->second.empty()) by_service_.erase(it);
    return stale;
  }

 private:
  static constexpr int64_t kDeletionExpected = -2;
  std::mutex mu_;
  // service key → slice uid → resourceVersion written (or kDeletionExpected).
  std::unordered_map<std::string, std::unordered_map<std::string, int64_t>>
      by_service_;  // guarded by mu_
};

struct Plan {
  std::vector<Json> create, update, remove;
};

class EndpointSliceController final : public Controller {
 public:
  explicit EndpointSliceController(ControllerContext& ctx)
      : ctx_(ctx),
        services_(ctx.informers.informer(kServices)),
        pods_(ctx.informers.informer(kPods)),
        nodes_(ctx.informers.informer(kNodes)),
        slices_(ctx.informers.informer(kEndpointSlices)),
        recorder_(ctx.recorder("endpoint-slice-controller")),
        workers_(
            "endpointslice-controller", queue_,
            [this](const std::string& key) { return sync(key); },
            [this] {
              return services_.has_synced() && pods_.has_synced() && nodes_.has_synced() &&
                     slices_.has_synced();
            }) {
    slices_.add_index(kServiceIndex, [](const Json& slice) {
      std::string key = service_key_of_slice(slice);
      return key.empty() ? std::vector<std::string>{} : std::vector<std::string>{key};
    });
    services_.add_handlers(service_handlers(queue_));
    pods_.add_handlers(pod_handlers(services_, queue_));
    auto enqueue_slice = [this](const Json& slice) {
      std::string key = service_key_of_slice(slice);
      if (!key.empty()) queue_.add(key);
    };
    slices_.add_handlers({
        .on_add = [enqueue_slice](const ObjectPtr& s) { enqueue_slice(*s); },
        .on_update =
            [enqueue_slice](const ObjectPtr& old_slice, const ObjectPtr& s) {
              enqueue_slice(*s);
              // A slice relabelled away from us: its former Service needs a new one.
              if (service_key_of_slice(*old_slice) != service_key_of_slice(*s)) {
                enqueue_slice(*old_slice);
              }
            },
        .on_delete =
            [this, enqueue_slice](const ObjectPtr& s) {
              tracker_.deleted(*s);
              enqueue_slice(*s);
            },
    });
  }

  ~EndpointSliceController() override { stop(); }

  std::string_view name() const override { return "endpointslice-controller"; }
  void start() override { workers_.start(ctx_.options.workers); }
  void stop() override { workers_.stop(); }

 private:
  Status sync(const std::string& key);
  void reconcile_port_mapping(const Json& service, const std::vector<ObjectPtr>& existing,
                              std::map<std::string, Json>& desired, const Json& ports,
                              const std::string& address_type, Plan& plan);
  Status finalize(const Json& service, Plan& plan, int64_t trigger_time);

  ControllerContext ctx_;
  client::Informer& services_;
  client::Informer& pods_;
  client::Informer& nodes_;
  client::Informer& slices_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  TriggerTimeTracker trigger_times_;
  SliceTracker tracker_;
  QueueWorkers workers_;
};

Status EndpointSliceController::sync(const std::string& key) {
  auto [ns, name] = client::split_key(key);
  ObjectPtr service = services_.get(key);
  if (!service) {
    // The slices are owned by the Service: the garbage collector removes them.
    trigger_times_.forget(key);
    tracker_.forget(key);
    return Status::ok();
  }
  const Json& spec = member(*service, "spec");
  if (string_field(spec, "type") == "ExternalName") return Status::ok();
  auto selector = service_selector(*service);
  if (!selector) return Status::ok();  // slices of selector-less Services are the user's

  std::vector<ObjectPtr> pods;
  for (const auto& pod : pods_.list(ns)) {
    if (selector->matches(labels_of(*pod))) pods.push_back(pod);
  }
  int64_t trigger_time = trigger_times_.compute(key, *service, pods);

  std::vector<ObjectPtr> existing = slices_.by_index(kServiceIndex, key);
  int64_t informer_rv = parse_resource_version(slices_.resource_version());
  if (tracker_.stale(key, existing, informer_rv)) {
    return error(StatusCode::kAborted, "EndpointSlice informer cache is out of date for " + key);
  }

  const std::string address_type = service_ip_family(*service);
  const bool publish_not_ready = member(spec, "publishNotReadyAddresses") == Json(true);
  const Json& service_ports = member(spec, "ports");
  Plan plan;

  // Existing slices of this address type owned by this Service, by their ports; the rest go.
  std::map<std::string, std::vector<ObjectPtr>> existing_by_ports;
  size_t existing_of_type = 0;
  for (const auto& s : existing) {
    if (string_field(*s, "addressType") != address_type) {
      plan.remove.push_back(*s);
      continue;
    }
    ++existing_of_type;
    if (owned_by(*s, *service)) {
      existing_by_ports[port_key_of_slice(*s)].push_back(s);
    } else {
      plan.remove.push_back(*s);
    }
  }
  const size_t removed_other_types = existing.size() - existing_of_type;

  // Desired endpoints, by the ports their pods offer.
  struct Group {
    Json ports;
    std::map<std::string, Json> endpoints;
  };
  std::map<std::string, Group> desired;
  std::string missing_node;
  for (const auto& pod : pods) {
    if (!should_pod_be_in_endpoints(*pod, true)) continue;
    Json ports = Json::array();
    if (service_ports.is_array() &&
        !(service_ports.empty() && string_field(spec, "clusterIP") == "None")) {
      for (const auto& sp : service_ports) {
        auto port = find_port(*pod, sp);
        if (!port) continue;
        Json p = {
            {"name", string_field(sp, "name")}, {"port", *port}, {"protocol", port_protocol(sp)}};
        if (std::string a = string_field(sp, "appProtocol"); !a.empty()) p["appProtocol"] = a;
        ports.push_back(std::move(p));
      }
    }
    std::string pk = sort_ports(ports);
    Group& group = desired[pk];
    group.ports = ports;

    const Json& pod_spec = member(*pod, "spec");
    std::string node_name = string_field(pod_spec, "nodeName");
    ObjectPtr node = node_name.empty() ? nullptr : nodes_.get(node_name);
    if (!node && !publish_not_ready) {
      // Retried later; meanwhile the slices are written without this pod.
      missing_node = node_name;
      continue;
    }
    std::string ip = pod_ip_for_family(*pod, address_type);
    if (ip.empty()) continue;
    const bool serving = is_pod_ready(*pod);
    const bool terminating = is_pod_terminating(*pod);
    // For compatibility, a terminating pod is never ready unless not-ready addresses are
    // published.
    const bool ready = publish_not_ready || (serving && !terminating);
    Json ep = {
        {"addresses", Json::array({ip})},
        {"conditions", {{"ready", ready}, {"serving", serving}, {"terminating", terminating}}},
        {"targetRef",
         {{"kind", "Pod"},
          {"namespace", client::namespace_of(*pod)},
          {"name", client::name_of(*pod)},
          {"uid", client::uid_of(*pod)}}}};
    if (!node_name.empty()) ep["nodeName"] = node_name;
    if (node) {
      std::string zone = string_field(labels_of(*node), kZoneLabel);
      if (!zone.empty()) ep["zone"] = zone;
    }
    if (should_set_hostname(*pod, *service)) ep["hostname"] = pod_spec["hostname"];
    // The key first: Json's operator= takes its argument by value, so `ep` is moved from before
    // the left side would be evaluated.
    std::string ep_key = endpoint_key(ep);
    group.endpoints[ep_key] = std::move(ep);
  }

  for (auto& [pk, group] : desired) {
    static const std::vector<ObjectPtr> kNone;
    auto it = existing_by_ports.find(pk);
    reconcile_port_mapping(*service, it == existing_by_ports.end() ? kNone : it->second,
                           group.endpoints, group.ports, address_type, plan);
  }
  // Port sets no pod offers any more.
  for (const auto& [pk, slices] : existing_by_ports) {
    if (desired.count(pk)) continue;
    for (const auto& s : slices) plan.remove.push_back(*s);
  }

  // A Service with no endpoints keeps one empty placeholder slice.
  if (existing_of_type == plan.remove.size() - removed_other_types && plan.create.empty()) {
    Json placeholder = new_slice(*service, Json::array(), address_type);
    auto is_placeholder = [&](const Json& s) {
      return string_field(s, "addressType") == address_type && port_key_of_slice(s).empty() &&
             endpoint_count(s) == 0 && labels_of(s) == labels_of(placeholder) &&
             owned_by(s, *service);
    };
    std::vector<Json> same_type;
    for (const auto& s : plan.remove) {
      if (string_field(s, "addressType") == address_type) same_type.push_back(s);
    }
    if (same_type.size() == 1 && is_placeholder(same_type[0])) {
      // Keep it rather than delete and create the same thing.
      std::erase_if(plan.remove, [&](const Json& s) {
        return client::uid_of(s) == client::uid_of(same_type[0]);
      });
    } else {
      plan.create.push_back(std::move(placeholder));
    }
  }

  SKIFF_RETURN_IF_ERROR(finalize(*service, plan, trigger_time));
  if (!missing_node.empty()) {
    return error(StatusCode::kUnavailable,
                 "skipping pods of Service " + key + ": node " + missing_node + " not found");
  }
  return Status::ok();
}

void EndpointSliceController::reconcile_port_mapping(const Json& service,
                                                     const std::vector<ObjectPtr>& existing,
                                                     std::map<std::string, Json>& desired,
                                                     const Json& ports,
                                                     const std::string& address_type, Plan& plan) {
  std::map<std::string, Json> to_update;  // by name
  std::map<std::string, ObjectPtr> unchanged;
  const Json labels = slice_labels(service);

  // 1. Keep the endpoints still desired (updated where they changed), drop the others.
  for (const auto& slice : existing) {
    Json kept = Json::array();
    bool changed = false;
    const Json& eps = member(*slice, "endpoints");
    if (eps.is_array()) {
      for (const auto& ep : eps) {
        auto it = desired.find(endpoint_key(ep));
        if (it == desired.end()) continue;
        if (!endpoints_equal_beyond_key(it->second, ep)) changed = true;
        kept.push_back(std::move(it->second));
        desired.erase(it);
      }
    }
    const bool labels_changed = labels_of(*slice) != labels;
    const std::string slice_name = client::name_of(*slice);
    if (changed || kept.size() != endpoint_count(*slice)) {
      if (kept.empty()) {
        plan.remove.push_back(*slice);
      } else {
        Json copy = *slice;
        copy["endpoints"] = std::move(kept);
        copy["metadata"]["labels"] = labels;
        to_update[slice_name] = std::move(copy);
      }
    } else if (labels_changed) {
      Json copy = *slice;
      copy["metadata"]["labels"] = labels;
      to_update[slice_name] = std::move(copy);
    } else {
      unchanged[slice_name] = slice;
    }
  }

  // 2. Fill the slices being written anyway, fullest first.
  if (!desired.empty() && !to_update.empty()) {
    std::vector<Json*> order;
    for (auto& [n, s] : to_update) order.push_back(&s);
    std::stable_sort(order.begin(), order.end(), [](const Json* a, const Json* b) {
      return endpoint_count(*a) > endpoint_count(*b);
    });
    for (Json* s : order) {
      while (!desired.empty() && endpoint_count(*s) < kMaxEndpointsPerSlice) {
        (*s)["endpoints"].push_back(std::move(desired.begin()->second));
        desired.erase(desired.begin());
      }
    }
  }

  // 3. What is left goes into the one untouched slice it fits best, else into new slices.
  while (!desired.empty()) {
    Json fill;
    if (desired.size() < kMaxEndpointsPerSlice && !unchanged.empty()) {
      size_t closest = kMaxEndpointsPerSlice;
      const ObjectPtr* best = nullptr;
      for (const auto& [n, s] : unchanged) {
        size_t total = desired.size() + endpoint_count(*s);
        if (total > kMaxEndpointsPerSlice) continue;
        size_t diff = kMaxEndpointsPerSlice - total;
        if (diff < closest) {
          closest = diff;
          best = &s;
          if (diff == 0) break;
        }
      }
      if (best) fill = **best;
    }
    const bool is_new = fill.is_null();
    if (is_new) fill = new_slice(service, ports, address_type);
    if (!fill["endpoints"].is_array()) fill["endpoints"] = Json::array();
    while (!desired.empty() && endpoint_count(fill) < kMaxEndpointsPerSlice) {
      fill["endpoints"].push_back(std::move(desired.begin()->second));
      desired.erase(desired.begin());
    }
    if (is_new) {
      plan.create.push_back(std::move(fill));
    } else {
      std::string n = client::name_of(fill);
      unchanged.erase(n);
      to_update[n] = std::move(fill);
    }
  }
  for (auto& [n, s] : to_update) plan.update.push_back(std::move(s));
}

Status EndpointSliceController::finalize(const Json& service, Plan& plan, int64_t trigger_time) {
  const std::string key = client::key_of(service);
  const std::string ns = client::namespace_of(service);
  // Rather than delete one slice and create another, rewrite the one to delete.
  for (size_t i = 0; i < plan.remove.size() && !plan.create.empty();) {
    const Json& doomed = plan.remove[i];
    Json& fresh = plan.create.back();
    if (string_field(doomed, "addressType") == string_field(fresh, "addressType") &&
        owned_by(doomed, service)) {
      Json reused = doomed;
      reused["metadata"]["labels"] = fresh["metadata"]["labels"];
      reused["metadata"]["ownerReferences"] = fresh["metadata"]["ownerReferences"];
      reused["ports"] = fresh["ports"];
      reused["endpoints"] = fresh["endpoints"];
      plan.update.push_back(std::move(reused));
      plan.create.pop_back();
      plan.remove.erase(plan.remove.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }

  // No new slices for a Service being deleted: they would race the garbage collector.
  if (member(member(service, "metadata"), "deletionTimestamp").is_null()) {
    for (auto& slice : plan.create) {
      set_trigger_time(slice, trigger_time);
      auto r = ctx_.api.create(kEndpointSlices, ns, slice);
      if (!r.is_ok()) {
        if (r.status().message().find("being terminated") != std::string::npos) {
          return Status::ok();
        }
        return error(r.status().code(), "failed to create EndpointSlice for Service " + key + ": " +
                                            r.status().message());
      }
      tracker_.written(key, r.value());
    }
  }
  for (auto& slice : plan.update) {
    set_trigger_time(slice, trigger_time);
    auto r = ctx_.api.update(kEndpointSlices, ns, slice);
    if (!r.is_ok()) {
      return error(r.status().code(), "failed to update " + client::name_of(slice) +
                                          " EndpointSlice for Service " + key + ": " +
                                          r.status().message());
    }
    tracker_.written(key, r.value());
  }
  for (const auto& slice : plan.remove) {
    client::DeleteOptions options;
    options.precondition_uid = client::uid_of(slice);
    // Expected before asking: the watch event may arrive before the answer.
    tracker_.deletion_expected(key, slice);
    auto r = ctx_.api.remove(kEndpointSlices, ns, client::name_of(slice), options);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) {
      tracker_.deleted(slice);
      return error(r.status().code(), "failed to delete " + client::name_of(slice) +
                                          " EndpointSlice for Service " + key + ": " +
                                          r.status().message());
    }
  }
  return Status::ok();
}

}  // namespace

std::unique_ptr<Controller> new_endpointslice_controller(ControllerContext& ctx) {
  return std::make_unique<EndpointSliceController>(ctx);
}

}  // namespace skiff::controllers
