#pragma once

// Content negotiation and request decoding shared by the API handlers.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/errors.h"
#include "api/schema.h"

namespace skiff::apiserver {

// The Table media type to answer with when `accept` asks for one (meta.k8s.io v1 preferred over
// v1beta1), else "".
std::string table_content_type(std::string_view accept);

// Parses a JSON body; duplicate keys are reported as field paths ("spec.replicas").
std::optional<nlohmann::json> parse_json(std::string_view body,
                                         std::vector<std::string>* duplicates, std::string* error);

// Drops fields the schema does not know (recording their paths) and reports values of the wrong
// JSON type, as strict decoding does.
void prune_unknown_fields(nlohmann::json& value, const api::TypeInfo& type,
                          const api::Schema& schema, const std::string& path,
                          std::vector<std::string>* unknown, std::vector<std::string>* mistyped);

}  // namespace skiff::apiserver
