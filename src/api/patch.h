#pragma once

// Patches as the API server applies them: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
// and strategic merge patch (Kubernetes' merge keys and directives, driven by the schema).
// Errors come back as kInvalidArgument with a message suitable for a 422/400 response.

#include <nlohmann/json.hpp>

#include "api/schema.h"
#include "base/status.h"

namespace skiff::api {

// RFC 6902: add, remove, replace, move, copy, test. A failed test or a missing path is an error.
Result<nlohmann::json> apply_json_patch(const nlohmann::json& doc, const nlohmann::json& patch);

// RFC 7386: objects merge recursively, null deletes, anything else replaces.
nlohmann::json apply_merge_patch(const nlohmann::json& doc, const nlohmann::json& patch);

// Strategic merge patch against an object of type `type`: lists with a merge key merge by key
// (patchStrategy merge), primitive lists with patchStrategy merge are unioned, other lists are
// replaced; directives $patch (replace, merge, delete), $setElementOrder/<list>,
// $deleteFromPrimitiveList/<list>, $retainKeys are honoured as kubectl sends them.
Result<nlohmann::json> apply_strategic_merge_patch(const nlohmann::json& doc,
                                                   const nlohmann::json& patch,
                                                   const TypeInfo& type, const Schema& schema);

}  // namespace skiff::api
