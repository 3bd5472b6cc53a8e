#include "controllers/serviceaccount/serviceaccount_controller.h"

#include <algorithm>

#include "controllers/serviceaccount/namespace_state.h"

namespace skiff::controllers {
namespace {

using client::resources::kNamespaces;
using client::resources::kServiceAccounts;

class ServiceAccountController : public Controller {
 public:
  explicit ServiceAccountController(ControllerContext& ctx)
      : ctx_(ctx),
        namespaces_(ctx.informers.informer(kNamespaces)),
        service_accounts_(ctx.informers.informer(kServiceAccounts)),
        workers_(
            "serviceaccount", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return namespaces_.has_synced() && service_accounts_.has_synced(); }) {
    namespaces_.add_handlers(active_namespace_handlers(queue_));
    service_accounts_.add_handlers({nullptr, nullptr, [this](const ObjectPtr& sa) {
                                      if (client::name_of(*sa) == kDefaultServiceAccountName) {
                                        queue_.add(client::namespace_of(*sa));
                                      }
                                    }});
  }

  ~ServiceAccountController() override { stop(); }

  std::string_view name() const override { return "serviceaccount"; }
  void start() override { workers_.start(std::max(1, ctx_.options.workers)); }
  void stop() override { workers_.stop(); }

 private:
  Status sync(const std::string& ns_name) {
    ObjectPtr ns = namespaces_.get(ns_name);
    if (!ns || !namespace_is_active(*ns)) return Status::ok();
    if (service_accounts_.get(ns_name, kDefaultServiceAccountName)) return Status::ok();
    Json sa = {
        {"apiVersion", "v1"},
        {"kind", "ServiceAccount"},
        {"metadata", {{"name", std::string(kDefaultServiceAccountName)}, {"namespace", ns_name}}}};
    auto created = ctx_.api.create(kServiceAccounts, ns_name, sa);
    if (created.is_ok() || create_error_is_final(created.status())) return Status::ok();
    return created.status();
  }

  ControllerContext& ctx_;
  client::Informer& namespaces_;
  client::Informer& service_accounts_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_serviceaccount_controller(ControllerContext& ctx) {
  return std::make_unique<ServiceAccountController>(ctx);
}

}  // namespace skiff::controllers
