#include "controllers/manager/controller_manager.h"

#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include "base/log.h"
#include "base/pki.h"
#include "client/http_client.h"
#include "client/leader_election.h"
#include "controllers/cronjob/cronjob_controller.h"
#include "controllers/daemonset/daemonset_controller.h"
#include "controllers/deployment/deployment_controller.h"
#include "controllers/endpoints/endpoints_controller.h"
#include "controllers/endpointslice/endpointslice_controller.h"
#include "controllers/garbagecollector/garbagecollector_controller.h"
#include "controllers/job/job_controller.h"
#include "controllers/job/ttlafterfinished_controller.h"
#include "controllers/namespace/namespace_controller.h"
#include "controllers/nodelifecycle/nodelifecycle_controller.h"
#include "controllers/podgc/podgc_controller.h"
#include "controllers/replicaset/replicaset_controller.h"
#include "controllers/resourcequota/resourcequota_controller.h"
#include "controllers/serviceaccount/rootcacertpublisher.h"
#include "controllers/serviceaccount/serviceaccount_controller.h"
#include "controllers/servicelb/servicelb_controller.h"
#include "controllers/statefulset/statefulset_controller.h"

namespace skiff::controllers {
namespace {

struct Entry {
  std::string name;
  bool on_by_default;
  std::function<std::unique_ptr<Controller>(ControllerContext&, const ControllerManagerOptions&,
                                            const std::string& ca_pem)>
      make;
};

const std::vector<Entry>& registry() {
  auto simple = [](std::unique_ptr<Controller> (*factory)(ControllerContext&)) {
    return [factory](ControllerContext& ctx, const ControllerManagerOptions&, const std::string&) {
      return factory(ctx);
    };
  };
  static const std::vector<Entry> kEntries = {
      {"replicaset", true, simple(new_replicaset_controller)},
      {"replicationcontroller", true, simple(new_replicationcontroller_controller)},
      {"deployment", true, simple(new_deployment_controller)},
      {"job", true, simple(new_job_controller)},
      {"cronjob", true, simple(new_cronjob_controller)},
      {"ttl-after-finished", true, simple(new_ttlafterfinished_controller)},
      {"podgc", true, simple(new_podgc_controller)},
      {"namespace", true, simple(new_namespace_controller)},
      {"garbagecollector", true,
       [](ControllerContext& ctx, const ControllerManagerOptions&, const std::string&) {
         return new_garbagecollector_controller(ctx);
       }},
      {"serviceaccount", true, simple(new_serviceaccount_controller)},
      {"root-ca-cert-publisher", true,
       [](ControllerContext& ctx, const ControllerManagerOptions&, const std::string& ca_pem) {
         return ca_pem.empty() ? nullptr : new_rootcacertpublisher_controller(ctx, ca_pem);
       }},
      {"resourcequota", true, simple(new_resourcequota_controller)},
      {"daemonset", true, simple(new_daemonset_controller)},
      {"statefulset", true, simple(new_statefulset_controller)},
      {"endpoints", true, simple(new_endpoints_controller)},
      {"endpointslice", true, simple(new_endpointslice_controller)},
      {"service-lb", true, simple(new_servicelb_controller)},
      {"nodelifecycle", true, simple(new_nodelifecycle_controller)},
      {"nodeipam", true,
       [](ControllerContext& ctx, const ControllerManagerOptions& o, const std::string&) {
         return o.allocate_node_cidrs ? new_nodeipam_controller(ctx, o.node_ipam) : nullptr;
       }},
  };
  return kEntries;
}

// The controllers of one leadership term: their informers, context and workers.
class Term {
 public:
  Term(client::ApiClient& api, const ControllerManagerOptions& options,
       const std::vector<std::string>& names, const std::string& ca_pem)
      : informers_(api),
        ctx_{api, informers_, SystemClock::instance(), options.controller,
             [&api](const std::string& component) {
               return std::make_unique<client::EventRecorder>(api, component);
             }} {
    for (const auto& name : names) {
      for (const auto& e : registry()) {
        if (e.name != name) continue;
        auto c = e.make(ctx_, options, ca_pem);
        if (c) controllers_.push_back(std::move(c));
      }
    }
    // Handlers are registered (constructors) before informers start, so no event is missed.
    for (auto& c : controllers_) c->start();
    informers_.start();
    SKIFF_LOG_INFO("controller manager: started {} controllers", controllers_.size());
  }

  ~Term() {
    for (auto& c : controllers_) c->stop();
    informers_.stop();
  }

 private:
  client::InformerFactory informers_;
  ControllerContext ctx_;
  std::vector<std::unique_ptr<Controller>> controllers_;
};

}  // namespace

std::vector<std::string> known_controllers() {
  std::vector<std::string> names;
  for (const auto& e : registry()) names.push_back(e.name);
  return names;
}

Result<std::vector<std::string>> enabled_controllers(const ControllerManagerOptions& options) {
  std::set<std::string> known;
  for (const auto& e : registry()) known.insert(e.name);
  bool star = false;
  std::set<std::string> on, off;
  for (const auto& item : options.controllers) {
    if (item == "*") {
      star = true;
      continue;
    }
    bool disable = !item.empty() && item[0] == '-';
    std::string name = disable ? item.substr(1) : item;
    if (!known.count(name)) {
      return error(StatusCode::kInvalidArgument, "unknown controller \"" + name + "\"");
    }
    (disable ? off : on).insert(name);
  }
  std::vector<std::string> out;
  for (const auto& e : registry()) {
    bool enabled = on.count(e.name) || (star && e.on_by_default && !off.count(e.name));
    if (enabled) out.push_back(e.name);
  }
  return out;
}

Status run_controller_manager(const ControllerManagerOptions& options, std::stop_token stop) {
  SKIFF_ASSIGN_OR_RETURN(auto names, enabled_controllers(options));
  if (options.allocate_node_cidrs) {
    SKIFF_RETURN_IF_ERROR(
        CidrSet::create(options.node_ipam.cluster_cidr, options.node_ipam.node_mask_size).status());
  }
  std::string ca_pem;
  if (!options.root_ca_file.empty()) {
    SKIFF_ASSIGN_OR_RETURN(ca_pem, pki::read_file(options.root_ca_file));
  }
  client::HttpClientOptions http;
  http.user_agent = "skiff-controller-manager";
  http.field_manager = "skiff-controller-manager";
  SKIFF_ASSIGN_OR_RETURN(auto api,
                         client::HttpApiClient::from_kubeconfig_file(options.kubeconfig, http));

  // One term of controllers: built when leading starts, torn down when it ends.
  auto lead = [&](std::stop_token term_stop) {
    Term term(*api, options, names, ca_pem);
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    cv.wait(lock, term_stop, [] { return false; });
  };
  if (!options.leader_elect) {
    lead(stop);
    SKIFF_LOG_INFO("controller manager: controllers stopped");
    return Status::ok();
  }
  client::LeaderElectionConfig le;
  le.lease_namespace = options.leader_elect_namespace;
  le.lease_name = options.leader_elect_name;
  le.identity = client::unique_identity();
  le.lease_duration = options.lease_duration;
  le.renew_deadline = options.renew_deadline;
  le.retry_period = options.retry_period;
  client::run_leader_elected(*api, le, lead, stop);
  SKIFF_LOG_INFO("controller manager: controllers stopped");
  return Status::ok();
}

}  // namespace skiff::controllers
