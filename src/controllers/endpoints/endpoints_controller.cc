#include "controllers/endpoints/endpoints_controller.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/endpoints/endpoint_util.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace endpoints {
namespace {

using namespace endpoint_util;

std::string address_key(const Json& address) {
  return string_field(address, "ip") + '\0' + string_field(member(address, "targetRef"), "uid");
}

std::string port_key(const Json& port) {
  if (port.is_null()) return std::string(1, '\x01');  // "no port": a sentinel of its own
  return string_field(port, "name") + '\0' + member(port, "port").dump() + '\0' +
         string_field(port, "protocol") + '\0' + string_field(port, "appProtocol");
}

bool address_less(const Json& a, const Json& b) {
  std::string ai = string_field(a, "ip"), bi = string_field(b, "ip");
  if (ai != bi) return ai < bi;
  const Json& bt = member(b, "targetRef");
  if (bt.is_null()) return false;
  const Json& at = member(a, "targetRef");
  if (at.is_null()) return true;
  return string_field(at, "uid") < string_field(bt, "uid");
}

}  // namespace

Json repack_subsets(const std::vector<SubsetEntry>& entries) {
  // address key → the first copy of that address seen.
  std::map<std::string, Json> addresses;
  // port key → (the port, address key → ready).
  std::map<std::string, std::pair<Json, std::map<std::string, bool>>> by_port;
  for (const auto& e : entries) {
    std::string ak = address_key(e.address);
    addresses.try_emplace(ak, e.address);
    auto& slot = by_port[port_key(e.port)];
    slot.first = e.port;
    auto [it, inserted] = slot.second.try_emplace(ak, e.ready);
    if (!inserted && !it->second) it->second = e.ready;
  }
  // The same set of (address, readiness) offering several ports forms one subset.
  std::map<std::string, std::pair<const std::map<std::string, bool>*, std::vector<Json>>> groups;
  for (const auto& [pk, slot] : by_port) {
    std::string group_key;
    for (const auto& [ak, ready] : slot.second) {
      group_key += ak;
      group_key += ready ? "\x02R" : "\x02N";
      group_key += '\x03';
    }
    auto& g = groups[group_key];
    g.first = &slot.second;
    if (!slot.first.is_null()) g.second.push_back(slot.first);
  }
  Json subsets = Json::array();
  for (auto& [gk, g] : groups) {
    std::vector<Json> ready, not_ready;
    for (const auto& [ak, is_ready] : *g.first) {
      (is_ready ? ready : not_ready).push_back(addresses[ak]);
    }
    std::sort(ready.begin(), ready.end(), address_less);
    std::sort(not_ready.begin(), not_ready.end(), address_less);
    std::sort(g.second.begin(), g.second.end(),
              [](const Json& a, const Json& b) { return port_key(a) < port_key(b); });
    Json subset = Json::object();
    if (!ready.empty()) subset["addresses"] = ready;
    if (!not_ready.empty()) subset["notReadyAddresses"] = not_ready;
    if (!g.second.empty()) subset["ports"] = g.second;
    subsets.push_back(std::move(subset));
  }
  return subsets;
}

bool truncate_subsets(Json& subsets) {
  size_t total_ready = 0, total_not_ready = 0;
  auto count = [](const Json& subset, const char* f) {
    const Json& v = member(subset, f);
    return v.is_array() ? v.size() : size_t{0};
  };
  for (const auto& s : subsets) {
    total_ready += count(s, "addresses");
    total_not_ready += count(s, "notReadyAddresses");
  }
  if (total_ready + total_not_ready <= kMaxCapacity) return false;
  bool truncate_ready = total_ready > kMaxCapacity;
  size_t max = truncate_ready ? kMaxCapacity : kMaxCapacity - total_ready;
  size_t num_total = truncate_ready ? total_ready : total_not_ready;
  size_t can_be_added = max;
  auto keep = [](Json& subset, const char* f, size_t n) {
    if (!subset.contains(f)) return;
    Json& list = subset[f];
    if (list.size() > n) list.erase(list.begin() + static_cast<std::ptrdiff_t>(n), list.end());
    if (list.empty()) subset.erase(f);
  };
  for (auto& s : subsets) {
    size_t in_subset = count(s, truncate_ready ? "addresses" : "notReadyAddresses");
    auto to_add =
        static_cast<size_t>(std::ceil(static_cast<double>(in_subset) /
                                      static_cast<double>(num_total) * static_cast<double>(max)));
    to_add = std::min(to_add, can_be_added);
    if (truncate_ready) {
      keep(s, "addresses", to_add);
      s.erase("notReadyAddresses");
      can_be_added -= count(s, "addresses");
    } else {
      keep(s, "notReadyAddresses", to_add);
      can_be_added -= count(s, "notReadyAddresses");
    }
  }
  // Subsets left with no address at all say nothing.
  Json kept = Json::array();
  for (auto& s : subsets) {
    if (s.contains("addresses") || s.contains("notReadyAddresses")) kept.push_back(std::move(s));
  }
  subsets = std::move(kept);
  return true;
}

}  // namespace endpoints

namespace {

using namespace endpoint_util;
using client::resources::kEndpoints;
using client::resources::kPods;
using client::resources::kServices;

constexpr const char* kOverCapacity = "endpoints.kubernetes.io/over-capacity";
constexpr const char* kLeaderAnnotation = "control-plane.alpha.kubernetes.io/leader";

class EndpointsController final : public Controller {
 public:
  explicit EndpointsController(ControllerContext& ctx)
      : ctx_(ctx),
        services_(ctx.informers.informer(kServices)),
        pods_(ctx.informers.informer(kPods)),
        endpoints_(ctx.informers.informer(kEndpoints)),
        recorder_(ctx.recorder("endpoint-controller")),
        workers_(
            "endpoint-controller", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return synced(); }) {
    services_.add_handlers(service_handlers(queue_));
    pods_.add_handlers(pod_handlers(services_, queue_));
    endpoints_.add_handlers({
        .on_add = nullptr,
        .on_update = nullptr,
        .on_delete =
            [this](const ObjectPtr& e) {
              {
                std::lock_guard lock(mu_);
                stale_rv_.erase(client::key_of(*e));
              }
              queue_.add(client::key_of(*e));
            },
    });
  }

  ~EndpointsController() override { stop(); }

  std::string_view name() const override { return "endpoint-controller"; }
  void start() override { workers_.start(ctx_.options.workers); }
  void stop() override { workers_.stop(); }

 private:
  bool synced() {
    if (!services_.has_synced() || !pods_.has_synced() || !endpoints_.has_synced()) return false;
    // Once, at start: Endpoints whose Service is gone (deleted while no controller ran) are
    // queued so they are removed. Leader-election records are not Services' endpoints.
    std::call_once(leftovers_once_, [this] {
      for (const auto& e : endpoints_.list()) {
        if (member(member(member(*e, "metadata"), "annotations"), kLeaderAnnotation).is_null()) {
          queue_.add(client::key_of(*e));
        }
      }
    });
    return true;
  }

  Status sync(const std::string& key);
  Status write(const Json& service, const ObjectPtr& current, Json desired);

  ControllerContext ctx_;
  client::Informer& services_;
  client::Informer& pods_;
  client::Informer& endpoints_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  TriggerTimeTracker trigger_times_;
  std::once_flag leftovers_once_;
  std::mutex mu_;
  // Endpoints key → the resourceVersion an update replaced: a cache still showing it is stale.
  std::unordered_map<std::string, std::string> stale_rv_;  // guarded by mu_
  QueueWorkers workers_;
};

Status EndpointsController::sync(const std::string& key) {
  auto [ns, name] = client::split_key(key);
  ObjectPtr service = services_.get(key);
  if (!service) {
    trigger_times_.forget(key);
    // The Endpoints of a deleted Service go with it (asked even when the cache has none: it
    // may not have seen them yet).
    auto r = ctx_.api.remove(kEndpoints, ns, name);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    return Status::ok();
  }
  const Json& spec = member(*service, "spec");
  if (string_field(spec, "type") == "ExternalName") return Status::ok();
  auto selector = service_selector(*service);
  if (!selector) return Status::ok();  // the user manages these Endpoints

  std::vector<ObjectPtr> pods;
  for (const auto& pod : pods_.list(ns)) {
    if (selector->matches(member(member(*pod, "metadata"), "labels"))) pods.push_back(pod);
  }
  // Computed on every sync so the tracker follows the pods even when nothing is written.
  int64_t trigger_time = trigger_times_.compute(key, *service, pods);

  const bool publish_not_ready = member(spec, "publishNotReadyAddresses") == Json(true);
  const std::string family = service_ip_family(*service);
  const Json& service_ports = member(spec, "ports");
  const bool headless = !is_service_ip_set(*service);
  std::vector<endpoints::SubsetEntry> entries;
  for (const auto& pod : pods) {
    if (!should_pod_be_in_endpoints(*pod, publish_not_ready)) continue;
    std::string ip = pod_ip_for_family(*pod, family);
    if (ip.empty()) continue;
    Json address = {{"ip", ip}};
    if (should_set_hostname(*pod, *service))
      address["hostname"] = member(member(*pod, "spec"), "hostname");
    std::string node = string_field(member(*pod, "spec"), "nodeName");
    if (!node.empty()) address["nodeName"] = node;
    address["targetRef"] = {{"kind", "Pod"},
                            {"namespace", client::namespace_of(*pod)},
                            {"name", client::name_of(*pod)},
                            {"uid", client::uid_of(*pod)}};
    bool ready = publish_not_ready || is_pod_ready(*pod);
    if (!service_ports.is_array() || service_ports.empty()) {
      // Headless Services may have no ports; others with no ports get no endpoints.
      if (string_field(spec, "clusterIP") == "None") entries.push_back({address, ready, Json()});
      continue;
    }
    for (const auto& sp : service_ports) {
      auto port = find_port(*pod, sp);
      if (!port) continue;  // this pod does not offer that port
      Json ep = {{"port", *port}, {"protocol", port_protocol(sp)}};
      // Empty optional fields are left out, as the API server stores them.
      if (std::string n = string_field(sp, "name"); !n.empty()) ep["name"] = n;
      if (std::string a = string_field(sp, "appProtocol"); !a.empty()) ep["appProtocol"] = a;
      entries.push_back({address, ready, std::move(ep)});
    }
  }
  Json subsets = endpoints::repack_subsets(entries);
  bool truncated = endpoints::truncate_subsets(subsets);

  Json labels = member(member(*service, "metadata"), "labels");
  if (!labels.is_object()) labels = Json::object();
  if (headless) {
    labels[kHeadlessLabel] = "";
  } else {
    labels.erase(kHeadlessLabel);
  }

  ObjectPtr current = endpoints_.get(key);
  if (current) {
    std::lock_guard lock(mu_);
    auto it = stale_rv_.find(key);
    if (it != stale_rv_.end()) {
      if (it->second == client::resource_version_of(*current)) {
        return error(StatusCode::kAborted, "endpoints informer cache is out of date for " + key);
      }
      stale_rv_.erase(it);
    }
  }
  if (current) {
    const Json& meta = member(*current, "metadata");
    const Json& cur_subsets = member(*current, "subsets");
    bool subsets_equal =
        cur_subsets.is_null() || cur_subsets.empty() ? subsets.empty() : cur_subsets == subsets;
    Json cur_labels = member(meta, "labels");
    if (!cur_labels.is_object()) cur_labels = Json::object();
    bool cur_truncated = !member(member(meta, "annotations"), kOverCapacity).is_null();
    if (subsets_equal && cur_labels == labels && cur_truncated == truncated) return Status::ok();
  }

  Json desired = current ? *current : Json{{"apiVersion", "v1"}, {"kind", "Endpoints"}};
  Json& meta = desired["metadata"];
  if (!current) {
    meta = {{"name", name}, {"namespace", ns}};
  }
  meta["labels"] = labels;
  Json annotations = member(meta, "annotations");
  if (!annotations.is_object()) annotations = Json::object();
  if (trigger_time >= 0) {
    annotations[kLastChangeTriggerTime] = rfc3339(trigger_time);
  } else {
    annotations.erase(kLastChangeTriggerTime);
  }
  if (truncated) {
    annotations[kOverCapacity] = "truncated";
  } else {
    annotations.erase(kOverCapacity);
  }
  if (annotations.empty()) {
    meta.erase("annotations");
  } else {
    meta["annotations"] = annotations;
  }
  if (subsets.empty()) {
    desired.erase("subsets");
  } else {
    desired["subsets"] = std::move(subsets);
  }
  return write(*service, current, std::move(desired));
}

Status EndpointsController::write(const Json& service, const ObjectPtr& current, Json desired) {
  const std::string ns = client::namespace_of(service);
  const std::string name = client::name_of(service);
  if (!current) {
    auto r = ctx_.api.create(kEndpoints, ns, desired);
    if (r.is_ok()) return Status::ok();
    // A namespace being deleted refuses new objects; nothing to do then.
    if (r.status().code() == StatusCode::kPermissionDenied &&
        r.status().message().find("being terminated") != std::string::npos) {
      return Status::ok();
    }
    if (r.status().code() != StatusCode::kAlreadyExists) {
      recorder_->event(
          desired, "Warning", "FailedToCreateEndpoint",
          "Failed to create endpoint for service " + ns + "/" + name + ": " + r.status().message());
    }
    return r.status();
  }
  auto r = ctx_.api.update(kEndpoints, ns, desired);
  if (!r.is_ok()) {
    if (r.status().code() != StatusCode::kAborted && r.status().code() != StatusCode::kNotFound) {
      recorder_->event(
          desired, "Warning", "FailedToUpdateEndpoint",
          "Failed to update endpoint " + ns + "/" + name + ": " + r.status().message());
    }
    return r.status();
  }
  if (client::resource_version_of(r.value()) != client::resource_version_of(*current)) {
    std::lock_guard lock(mu_);
    stale_rv_[client::key_of(*current)] = client::resource_version_of(*current);
  }
  return Status::ok();
}

}  // namespace

std::unique_ptr<Controller> new_endpoints_controller(ControllerContext& ctx) {
  return std::make_unique<EndpointsController>(ctx);
}

}  // namespace skiff::controllers
