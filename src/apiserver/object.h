#pragma once

// Helpers for API objects as JSON: stored bytes, resource versions, timestamps, identifiers.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "base/time.h"

namespace skiff::apiserver {

// Objects are stored without metadata.resourceVersion: it is the key's mod revision, spliced in
// on the way out so reads and watch events reuse the stored bytes without parsing them.
// `stored` must be a JSON object serialized with "metadata" as an object.
std::string with_resource_version(std::string_view stored, int64_t resource_version);
// The same, appended to `out` (lists build one body without per-item copies).
void append_with_resource_version(std::string& out, std::string_view stored,
                                  int64_t resource_version);

// A random version 4 UUID.
std::string new_uid();
// Five characters from upstream's generateName alphabet.
std::string random_name_suffix();

// Value at a dotted field path ("metadata.name", "spec.nodeName") as a string, as field
// selectors compare: strings as is, booleans "true"/"false", numbers in decimal, absent "".
std::string field_value(const nlohmann::json& obj, std::string_view path);

}  // namespace skiff::apiserver
