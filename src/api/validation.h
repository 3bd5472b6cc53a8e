#pragma once

// Upstream's generic validators: name formats, label and annotation syntax and sizes, and
// object metadata. Each appends to FieldErrors with upstream's messages.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/errors.h"

namespace skiff::api {

// Returns "" when valid, else upstream's message for the failed rule.
std::string check_dns1123_subdomain(std::string_view value);  // max 253
std::string check_dns1123_label(std::string_view value);      // max 63
std::string check_dns1035_label(std::string_view value);      // max 63, starts with a letter
std::string check_qualified_name(std::string_view value);     // label keys: [prefix/]name
std::string check_label_value(std::string_view value);
std::string check_c_identifier(std::string_view value);  // [A-Za-z_][A-Za-z0-9_]*
// Container env var names: upstream's relaxed rule (RelaxedEnvironmentVariableValidation, on by
// default): printable ASCII other than '='.
std::string check_env_var_name(std::string_view value);

// The individual messages behind check_qualified_name / check_label_value (upstream reports
// each as its own field error, and joins them with "; " inside selectors).
std::vector<std::string> qualified_name_errors(std::string_view value);
std::vector<std::string> label_value_errors(std::string_view value);

void validate_labels(const nlohmann::json& labels, const std::string& field, FieldErrors& errors);
// Keys are qualified names; total size at most 256 KiB.
void validate_annotations(const nlohmann::json& annotations, const std::string& field,
                          FieldErrors& errors);

// metadata: name (or generateName) with the given name rule, namespace presence by scope,
// labels, annotations, finalizers, ownerReferences shape.
enum class NameRule : uint8_t { kDns1123Subdomain, kDns1123Label, kDns1035Label, kPathSegment };
// Checks an object name (prefix: a generateName) with `rule`; "" when valid.
std::string check_object_name(std::string_view name, NameRule rule, bool prefix);
void validate_object_meta(const nlohmann::json& meta, bool namespaced, NameRule rule,
                          FieldErrors& errors);

}  // namespace skiff::api
