#include "controllers/serviceaccount/rootcacertpublisher.h"

#include <algorithm>

#include "controllers/serviceaccount/namespace_state.h"

namespace skiff::controllers {
namespace {

using client::resources::kConfigMaps;
using client::resources::kNamespaces;

constexpr const char* kDescriptionAnnotation = "kubernetes.io/description";
constexpr const char* kDescription =
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters.";

class RootCaCertPublisher : public Controller {
 public:
  RootCaCertPublisher(ControllerContext& ctx, std::string ca_pem)
      : ctx_(ctx),
        data_({{"ca.crt", std::move(ca_pem)}}),
        namespaces_(ctx.informers.informer(kNamespaces)),
        config_maps_(ctx.informers.informer(kConfigMaps)),
        workers_(
            "root-ca-cert-publisher", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return namespaces_.has_synced() && config_maps_.has_synced(); }) {
    namespaces_.add_handlers(active_namespace_handlers(queue_));
    auto config_map_changed = [this](const ObjectPtr& cm) {
      if (client::name_of(*cm) == kRootCaConfigMapName && !up_to_date(*cm)) {
        queue_.add(client::namespace_of(*cm));
      }
    };
    config_maps_.add_handlers(
        {config_map_changed,
         [config_map_changed](const ObjectPtr&, const ObjectPtr& cm) { config_map_changed(cm); },
         [this](const ObjectPtr& cm) {
           if (client::name_of(*cm) == kRootCaConfigMapName) {
             queue_.add(client::namespace_of(*cm));
           }
         }});
  }

  ~RootCaCertPublisher() override { stop(); }

  std::string_view name() const override { return "root-ca-cert-publisher"; }
  void start() override { workers_.start(std::max(1, ctx_.options.workers)); }
  void stop() override { workers_.stop(); }

 private:
  bool up_to_date(const Json& cm) const {
    auto data = cm.find("data");
    if (data == cm.end() || *data != data_) return false;
    auto meta = cm.find("metadata");
    if (meta == cm.end() || !meta->contains("annotations")) return false;
    const Json& annotations = (*meta)["annotations"];
    return annotations.is_object() && !annotations.value(kDescriptionAnnotation, "").empty();
  }

  Status sync(const std::string& ns_name) {
    ObjectPtr ns = namespaces_.get(ns_name);
    if (!ns || !namespace_is_active(*ns)) return Status::ok();
    ObjectPtr cached = config_maps_.get(ns_name, kRootCaConfigMapName);
    if (!cached) {
      Json cm = {{"apiVersion", "v1"},
                 {"kind", "ConfigMap"},
                 {"metadata",
                  {{"name", std::string(kRootCaConfigMapName)},
                   {"namespace", ns_name},
                   {"annotations", {{kDescriptionAnnotation, kDescription}}}}},
                 {"data", data_}};
      auto created = ctx_.api.create(kConfigMaps, ns_name, cm);
      if (created.is_ok() || create_error_is_final(created.status())) return Status::ok();
      return created.status();
    }
    if (up_to_date(*cached)) return Status::ok();
    // Copy the cached object: the cache is shared and immutable.
    Json cm = *cached;
    cm["data"] = data_;
    if (!cm["metadata"].contains("annotations") || !cm["metadata"]["annotations"].is_object()) {
      cm["metadata"]["annotations"] = Json::object();
    }
    cm["metadata"]["annotations"][kDescriptionAnnotation] = kDescription;
    auto updated = ctx_.api.update(kConfigMaps, ns_name, cm);
    if (updated.is_ok() || updated.status().code() == StatusCode::kNotFound) return Status::ok();
    return updated.status();
  }

  ControllerContext& ctx_;
  const Json data_;
  client::Informer& namespaces_;
  client::Informer& config_maps_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_rootcacertpublisher_controller(ControllerContext& ctx,
                                                               std::string ca_pem) {
  return std::make_unique<RootCaCertPublisher>(ctx, std::move(ca_pem));
}

}  // namespace skiff::controllers
