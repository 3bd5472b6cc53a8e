#include "controllers/servicelb/servicelb_controller.h"

#include <algorithm>
#include <set>

#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace servicelb {
namespace {

constexpr const char* kEnableLbLabel = "svccontroller.k3s.cattle.io/enablelb";

bool node_ready(const Json& node) {
  const Json* c = find_condition(member(node, "status"), "Ready");
  return c && string_field(*c, "status") == "True";
}

std::string family_of(const std::string& ip) {
  return ip.find(':') != std::string::npos ? "IPv6" : "IPv4";
}

}  // namespace

std::vector<std::string> ingress_addresses(const Json& service,
                                           const std::vector<ObjectPtr>& nodes) {
  std::set<std::string> families;
  const Json& spec = member(service, "spec");
  const Json& fams = member(spec, "ipFamilies");
  if (fams.is_array()) {
    for (const auto& f : fams) {
      if (f.is_string()) families.insert(f.get<std::string>());
    }
  }
  if (families.empty()) families.insert("IPv4");

  bool any_enabled = false;
  for (const auto& n : nodes) {
    if (string_field(member(member(*n, "metadata"), "labels"), kEnableLbLabel) == "true") {
      any_enabled = true;
    }
  }
  std::vector<const Json*> serving;
  for (const auto& n : nodes) {
    if (!member(member(*n, "metadata"), "deletionTimestamp").is_null()) continue;
    if (!node_ready(*n)) continue;
    if (any_enabled &&
        string_field(member(member(*n, "metadata"), "labels"), kEnableLbLabel) != "true") {
      continue;
    }
    serving.push_back(n.get());
  }
  auto addresses_of_type = [&](const std::string& type) {
    std::set<std::string> out;
    for (const Json* n : serving) {
      const Json& addrs = member(member(*n, "status"), "addresses");
      if (!addrs.is_array()) continue;
      for (const auto& a : addrs) {
        std::string ip = string_field(a, "address");
        if (string_field(a, "type") == type && !ip.empty() && families.count(family_of(ip))) {
          out.insert(ip);
        }
      }
    }
    return out;
  };
  std::set<std::string> ips = addresses_of_type("ExternalIP");
  if (ips.empty()) ips = addresses_of_type("InternalIP");
  return {ips.begin(), ips.end()};
}

}  // namespace servicelb

namespace {

using client::resources::kNodes;
using client::resources::kServices;
using servicelb::ingress_addresses;

std::vector<std::string> current_ingress(const Json& service) {
  std::vector<std::string> out;
  const Json& ingress = member(member(member(service, "status"), "loadBalancer"), "ingress");
  if (!ingress.is_array()) return out;
  for (const auto& i : ingress) {
    const Json& ip = member(i, "ip");
    if (ip.is_string()) out.push_back(ip.get<std::string>());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has_ingress(const Json& service) {
  const Json& ingress = member(member(member(service, "status"), "loadBalancer"), "ingress");
  return ingress.is_array() && !ingress.empty();
}

bool is_ours(const Json& service) {
  const Json& spec = member(service, "spec");
  const Json& type = member(spec, "type");
  const Json& cls = member(spec, "loadBalancerClass");
  return type == Json("LoadBalancer") && (cls.is_null() || cls == Json(""));
}

// What about a node decides whether it serves load balancers.
Json node_fingerprint(const Json& node) {
  const Json& meta = member(node, "metadata");
  const Json* ready = find_condition(member(node, "status"), "Ready");
  return Json::array({member(member(meta, "labels"), "svccontroller.k3s.cattle.io/enablelb"),
                      member(meta, "deletionTimestamp").is_null(),
                      ready ? member(*ready, "status") : Json(),
                      member(member(node, "status"), "addresses")});
}

class ServiceLbController final : public Controller {
 public:
  explicit ServiceLbController(ControllerContext& ctx)
      : ctx_(ctx),
        services_(ctx.informers.informer(kServices)),
        nodes_(ctx.informers.informer(kNodes)),
        recorder_(ctx.recorder("service-lb-controller")),
        workers_(
            "service-lb-controller", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return services_.has_synced() && nodes_.has_synced(); }) {
    services_.add_handlers({
        .on_add = [this](const ObjectPtr& s) { enqueue_service(*s); },
        .on_update = [this](const ObjectPtr&, const ObjectPtr& s) { enqueue_service(*s); },
        .on_delete = nullptr,
    });
    nodes_.add_handlers({
        .on_add = [this](const ObjectPtr&) { enqueue_all(); },
        .on_update =
            [this](const ObjectPtr& old_node, const ObjectPtr& new_node) {
              if (node_fingerprint(*old_node) != node_fingerprint(*new_node)) enqueue_all();
            },
        .on_delete = [this](const ObjectPtr&) { enqueue_all(); },
    });
  }

  ~ServiceLbController() override { stop(); }

  std::string_view name() const override { return "service-lb-controller"; }
  void start() override { workers_.start(ctx_.options.workers); }
  void stop() override { workers_.stop(); }

 private:
  void enqueue_service(const Json& s) {
    if (is_ours(s) || has_ingress(s)) queue_.add(client::key_of(s));
  }
  void enqueue_all() {
    for (const auto& s : services_.list()) {
      if (is_ours(*s)) queue_.add(client::key_of(*s));
    }
  }

  Status sync(const std::string& key) {
    ObjectPtr service = services_.get(key);
    if (!service) return Status::ok();
    std::vector<std::string> want;
    const bool ours = is_ours(*service);
    if (ours) {
      want = ingress_addresses(*service, nodes_.list());
    } else if (member(member(*service, "spec"), "type") == Json("LoadBalancer")) {
      return Status::ok();  // another load balancer implementation's (loadBalancerClass)
    }
    std::vector<std::string> have = current_ingress(*service);
    if (want == have && (ours || !has_ingress(*service))) return Status::ok();

    Json updated = *service;
    Json ingress = Json::array();
    for (const auto& ip : want) ingress.push_back({{"ip", ip}});
    Json& lb = updated["status"]["loadBalancer"];
    if (!lb.is_object()) lb = Json::object();
    if (ingress.empty()) {
      lb.erase("ingress");
    } else {
      lb["ingress"] = std::move(ingress);
    }
    auto r = ctx_.api.update(kServices, client::namespace_of(*service), updated, {}, "status");
    if (!r.is_ok()) return r.status();
    if (!ours) {
      recorder_->event(*service, "Normal", "DeletedLoadBalancer", "Deleted load balancer");
    } else if (have.empty()) {
      recorder_->event(*service, "Normal", "EnsuredLoadBalancer", "Ensured load balancer");
    } else {
      recorder_->event(*service, "Normal", "UpdatedLoadBalancer",
                       "Updated load balancer with new hosts");
    }
    return Status::ok();
  }

  ControllerContext ctx_;
  client::Informer& services_;
  client::Informer& nodes_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_servicelb_controller(ControllerContext& ctx) {
  return std::make_unique<ServiceLbController>(ctx);
}

}  // namespace skiff::controllers
