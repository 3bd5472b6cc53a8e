#include "apiserver/admission.h"

#include "apiserver/registry.h"

namespace skiff::apiserver {

api::ApiError admission_forbidden(const api::ResourceInfo& resource, const nlohmann::json& obj,
                                  const std::string& why) {
  std::string name = "Unknown";
  auto meta = obj.find("metadata");
  if (meta != obj.end() && meta->is_object()) {
    std::string given = meta->value("name", "");
    std::string generate = meta->value("generateName", "");
    if (!given.empty()) {
      name = given;
    } else if (!generate.empty()) {
      name = generate;  // names are generated after admission starts
    }
  }
  api::ApiError e = api::ApiError::forbidden(resource.qualified_resource() + " " +
                                             api::go_quote(name) + " is forbidden: " + why);
  e.name = name;
  e.group = resource.group;
  e.kind = resource.resource;
  return e;
}

void install_admission(Registry& registry) {
  // Upstream's order: LimitRanger's defaults are in place before quota measures the pod.
  auto list = [&registry](const std::string& key_prefix) {
    return registry.cached_list(key_prefix);
  };
  registry.add_admission(new_limit_ranger(list));
  registry.add_admission(new_priority_admission(registry.store(), list));
  registry.add_admission(new_resource_quota_admission(registry.store(), list));
}

}  // namespace skiff::apiserver
