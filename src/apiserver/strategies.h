#pragma once

// Per-resource behaviour: upstream's defaulting, validation and update rules for each kind,
// installed into the generic registry.

#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "apiserver/registry.h"

namespace skiff::apiserver {

void install_strategies(Registry& registry);

// Upstream's defaults for a PodSpec (also used inside pod templates).
void default_pod_spec(nlohmann::json& spec);
// Validates a PodSpec at `path` ("spec" or "spec.template.spec").
void validate_pod_spec(const nlohmann::json& spec, const std::string& path,
                       api::FieldErrors& errors);

}  // namespace skiff::apiserver
