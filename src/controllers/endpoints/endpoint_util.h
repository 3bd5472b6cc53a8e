#pragma once

// What the Endpoints and EndpointSlice controllers share (upstream's k8s.io/endpointslice/util):
// which pods back a Service, the port a Service port resolves to in a pod, the pod address of
// the Service's IP family, hostnames for headless Services, which Services a pod event concerns,
// and the tracker that computes the endpoints.kubernetes.io/last-change-trigger-time annotation.
//
// Thread-safety: the free functions are pure, but for the handlers, which read the Services
// informer and add to the queue (both thread-safe). TriggerTimeTracker is safe from any thread.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/selector.h"
#include "client/informer.h"
#include "client/workqueue.h"

namespace skiff::controllers::endpoint_util {

using client::Json;
using client::ObjectPtr;

inline constexpr const char* kLastChangeTriggerTime =
    "endpoints.kubernetes.io/last-change-trigger-time";
inline constexpr const char* kHeadlessLabel = "service.kubernetes.io/headless";

// The Service's pod selector; nullopt when the Service has none (its endpoints are managed by
// the user). An empty map selects every pod in the namespace, as upstream.
std::optional<api::LabelSelector> service_selector(const Json& service);

// spec.clusterIP is set and is not "None".
bool is_service_ip_set(const Json& service);

// "IPv4" or "IPv6": the Service's primary family (spec.ipFamilies[0], else the family of
// spec.clusterIP, else IPv4).
std::string service_ip_family(const Json& service);
std::string ip_family_of(std::string_view ip);

// The pod's address of `family` (status.podIPs, falling back to status.podIP); "" when it has
// none.
std::string pod_ip_for_family(const Json& pod, std::string_view family);

// A pod is in a Service's endpoints when it has an IP, is not terminal (Succeeded/Failed), and
// (unless include_terminating) is not being deleted.
bool should_pod_be_in_endpoints(const Json& pod, bool include_terminating);

// spec.hostname is set and spec.subdomain names the Service in the pod's namespace.
bool should_set_hostname(const Json& pod, const Json& service);

// The container port a Service port targets in `pod`: a numeric targetPort as is (an absent one
// means spec.ports[].port), a named one looked up among the ports of the pod's containers (and
// restartable init containers) with the same name and protocol. nullopt when the pod has no such
// port.
std::optional<int64_t> find_port(const Json& pod, const Json& service_port);

// The protocol of a port object, "TCP" when absent.
std::string port_protocol(const Json& port);

// Keys of the Services in the pod's namespace whose selector matches the pod's labels.
std::vector<std::string> services_for_pod(const client::Informer& services, const Json& pod);

// True when a pod update can change the endpoints built from it (labels, addresses, readiness,
// phase, deletion, node, hostname, container ports).
bool pod_endpoints_changed(const Json& old_pod, const Json& new_pod);

// The informer handlers both controllers install: every Service event queues the Service's key;
// a pod added or deleted queues the keys of the Services selecting it, and a pod update that can
// change endpoints (pod_endpoints_changed) those of the Services selecting it now and, when its
// labels changed, before (upstream's GetServicesToUpdateOnPodChange). `services` and `queue`
// must outlive the handlers.
client::EventHandlers service_handlers(client::WorkQueue& queue);
client::EventHandlers pod_handlers(const client::Informer& services, client::WorkQueue& queue);

// The resourceVersion as a number; -1 when it is not numeric.
int64_t parse_resource_version(std::string_view rv);
int64_t resource_version_number(const Json& obj);

// Computes the value of endpoints.kubernetes.io/last-change-trigger-time as upstream's
// TriggerTimeTracker: the earliest trigger time (a pod's Ready condition lastTransitionTime, the
// Service's creationTimestamp) among what changed since the previous computation for the
// Service. Returns -1 (no annotation) when nothing observed changed.
class TriggerTimeTracker {
 public:
  int64_t compute(const std::string& service_key, const Json& service,
                  const std::vector<ObjectPtr>& pods);
  void forget(const std::string& service_key);

 private:
  struct State {
    int64_t service_trigger = -1;
    std::unordered_map<std::string, int64_t> pod_triggers;  // pod name → trigger time
  };
  std::mutex mu_;
  std::unordered_map<std::string, State> states_;  // guarded by mu_
};

}  // namespace skiff::controllers::endpoint_util
