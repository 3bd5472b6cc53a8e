#include "controllers/nodelifecycle/taints.h"

#include <algorithm>

#include "controllers/json_fields.h"

namespace skiff::controllers::nodelifecycle {
bool taint_matches(const Json& taint, const TaintRef& ref) {
  return string_field(taint, "key") == ref.key && string_field(taint, "effect") == ref.effect;
}

bool taint_exists(const Json& taints, const TaintRef& ref) {
  if (!taints.is_array()) return false;
  return std::any_of(taints.begin(), taints.end(),
                     [&](const Json& t) { return taint_matches(t, ref); });
}

bool tolerates(const Json& toleration, const Json& taint) {
  std::string effect = string_field(toleration, "effect");
  if (!effect.empty() && effect != string_field(taint, "effect")) return false;
  std::string key = string_field(toleration, "key");
  std::string op = string_field(toleration, "operator");
  if (!key.empty() && key != string_field(taint, "key")) return false;
  if (op == "Exists") return true;
  if (op.empty() || op == "Equal")
    return string_field(toleration, "value") == string_field(taint, "value");
  return false;
}

MatchedTolerations matching_tolerations(const std::vector<Json>& taints, const Json& tolerations) {
  MatchedTolerations out;
  if (taints.empty()) return out;
  if (!tolerations.is_array() || tolerations.empty()) {
    out.all_tolerated = false;
    return out;
  }
  for (const auto& taint : taints) {
    bool tolerated = false;
    for (const auto& t : tolerations) {
      if (tolerates(t, taint)) {
        tolerated = true;
        out.used.push_back(t);
        break;  // the first toleration that matches is the one used
      }
    }
    if (!tolerated) {
      out.all_tolerated = false;
      out.used.clear();
      return out;
    }
  }
  return out;
}

std::optional<int64_t> min_toleration_seconds(const std::vector<Json>& tolerations) {
  std::optional<int64_t> min;
  for (const auto& t : tolerations) {
    if (!t.is_object()) continue;
    auto it = t.find("tolerationSeconds");
    if (it == t.end() || !it->is_number()) continue;
    int64_t s = std::max<int64_t>(0, it->get<int64_t>());
    if (!min || s < *min) min = s;
  }
  return min;
}

std::vector<Json> no_execute_taints(const Json& node) {
  std::vector<Json> out;
  if (!node.is_object() || !node.contains("spec")) return out;
  const Json& spec = node["spec"];
  if (!spec.is_object() || !spec.contains("taints") || !spec["taints"].is_array()) return out;
  for (const auto& t : spec["taints"]) {
    if (string_field(t, "effect") == "NoExecute") out.push_back(t);
  }
  return out;
}

}  // namespace skiff::controllers::nodelifecycle
