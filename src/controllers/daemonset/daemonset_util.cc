#include "controllers/daemonset/daemonset_util.h"

#include <algorithm>
#include <cmath>

#include "base/time.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::daemonset {
namespace {

std::optional<int64_t> parse_int(const std::string& s) {
  if (s.empty()) return std::nullopt;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size() || s.size() - i > 18) return std::nullopt;
  for (size_t j = i; j < s.size(); ++j) {
    if (s[j] < '0' || s[j] > '9') return std::nullopt;
  }
  return std::stoll(s);
}

// One NodeSelectorRequirement against a value that may be absent.
bool requirement_matches(const Json& req, const std::optional<std::string>& value) {
  const std::string op = string_field(req, "operator");
  const Json& values = field(req, "values");
  auto contains = [&](const std::string& v) {
    if (!values.is_array()) return false;
    for (const auto& x : values) {
      if (x.is_string() && x.get<std::string>() == v) return true;
    }
    return false;
  };
  if (op == "In") return value && contains(*value);
  if (op == "NotIn") return !value || !contains(*value);
  if (op == "Exists") return value.has_value();
  if (op == "DoesNotExist") return !value.has_value();
  if (op == "Gt" || op == "Lt") {
    if (!value || !values.is_array() || values.size() != 1 || !values[0].is_string()) {
      return false;
    }
    auto have = parse_int(*value);
    auto want = parse_int(values[0].get<std::string>());
    if (!have || !want) return false;
    return op == "Gt" ? *have > *want : *have < *want;
  }
  return false;
}

bool term_matches(const Json& term, const Json& node) {
  const Json& expressions = field(term, "matchExpressions");
  const Json& fields = field(term, "matchFields");
  const bool has_expressions = expressions.is_array() && !expressions.empty();
  const bool has_fields = fields.is_array() && !fields.empty();
  // An empty term selects nothing.
  if (!has_expressions && !has_fields) return false;
  const Json& labels = field(field(node, "metadata"), "labels");
  if (has_expressions) {
    for (const auto& req : expressions) {
      std::optional<std::string> value;
      auto it = labels.find(string_field(req, "key"));
      if (it != labels.end() && it->is_string()) value = it->get<std::string>();
      if (!requirement_matches(req, value)) return false;
    }
  }
  if (has_fields) {
    for (const auto& req : fields) {
      // metadata.name is the only node field a selector may name.
      if (string_field(req, "key") != "metadata.name") return false;
      if (!requirement_matches(req, client::name_of(node))) return false;
    }
  }
  return true;
}

}  // namespace

void apply_daemonset_defaults(Json& ds) {
  if (!ds["spec"].is_object()) ds["spec"] = Json::object();
  Json& spec = ds["spec"];
  set_default(spec, "revisionHistoryLimit", 10);
  set_default(spec, "minReadySeconds", 0);
  if (!spec["updateStrategy"].is_object()) spec["updateStrategy"] = Json::object();
  Json& strategy = spec["updateStrategy"];
  set_default(strategy, "type", "RollingUpdate");
  if (strategy["type"] == "RollingUpdate") {
    if (!strategy["rollingUpdate"].is_object()) strategy["rollingUpdate"] = Json::object();
    set_default(strategy["rollingUpdate"], "maxUnavailable", 1);
    set_default(strategy["rollingUpdate"], "maxSurge", 0);
  }
}

void add_daemon_tolerations(Json& pod_spec) {
  struct Wanted {
    const char* key;
    const char* effect;
  };
  std::vector<Wanted> wanted = {
      {"node.kubernetes.io/not-ready", "NoExecute"},
      {"node.kubernetes.io/unreachable", "NoExecute"},
      {"node.kubernetes.io/disk-pressure", "NoSchedule"},
      {"node.kubernetes.io/memory-pressure", "NoSchedule"},
      {"node.kubernetes.io/pid-pressure", "NoSchedule"},
      {"node.kubernetes.io/unschedulable", "NoSchedule"},
  };
  if (field(pod_spec, "hostNetwork").is_boolean() && pod_spec["hostNetwork"].get<bool>()) {
    wanted.push_back({"node.kubernetes.io/network-unavailable", "NoSchedule"});
  }
  if (!pod_spec["tolerations"].is_array()) pod_spec["tolerations"] = Json::array();
  Json& tolerations = pod_spec["tolerations"];
  for (const auto& w : wanted) {
    Json toleration = {{"key", w.key}, {"operator", "Exists"}, {"effect", w.effect}};
    // One with the same key, operator, value and effect is replaced (dropping, for instance, a
    // tolerationSeconds); otherwise the toleration is added.
    bool found = false;
    for (auto& t : tolerations) {
      if (!t.is_object() || string_field(t, "key") != w.key ||
          string_field(t, "operator") != "Exists" || string_field(t, "value") != "" ||
          string_field(t, "effect") != w.effect) {
        continue;
      }
      t = toleration;
      found = true;
    }
    if (!found) tolerations.push_back(std::move(toleration));
  }
}

bool tolerates(const Json& toleration, const Json& taint) {
  const std::string effect = string_field(toleration, "effect");
  if (!effect.empty() && effect != string_field(taint, "effect")) return false;
  const std::string key = string_field(toleration, "key");
  if (!key.empty() && key != string_field(taint, "key")) return false;
  const std::string op = string_field(toleration, "operator");
  if (op.empty() || op == "Equal") {
    return string_field(toleration, "value") == string_field(taint, "value");
  }
  return op == "Exists";
}

bool has_untolerated_taint(const Json& taints, const Json& tolerations,
                           const std::function<bool(const std::string& effect)>& effect_filter) {
  if (!taints.is_array()) return false;
  for (const auto& taint : taints) {
    if (!effect_filter(string_field(taint, "effect"))) continue;
    bool tolerated = false;
    if (tolerations.is_array()) {
      for (const auto& t : tolerations) {
        if (tolerates(t, taint)) {
          tolerated = true;
          break;
        }
      }
    }
    if (!tolerated) return true;
  }
  return false;
}

bool node_selector_matches(const Json& node_selector, const Json& node) {
  const Json& terms = field(node_selector, "nodeSelectorTerms");
  if (!terms.is_array()) return false;
  for (const auto& term : terms) {
    if (term_matches(term, node)) return true;
  }
  return false;
}

bool pod_matches_node_affinity(const Json& pod_spec, const Json& node) {
  const Json& selector = field(pod_spec, "nodeSelector");
  if (selector.is_object() && !selector.empty()) {
    const Json& labels = field(field(node, "metadata"), "labels");
    for (auto it = selector.begin(); it != selector.end(); ++it) {
      auto l = labels.find(it.key());
      if (l == labels.end() || *l != it.value()) return false;
    }
  }
  const Json& affinity = field(field(pod_spec, "affinity"), "nodeAffinity");
  if (affinity.contains("requiredDuringSchedulingIgnoredDuringExecution") &&
      affinity["requiredDuringSchedulingIgnoredDuringExecution"].is_object()) {
    return node_selector_matches(affinity["requiredDuringSchedulingIgnoredDuringExecution"], node);
  }
  return true;
}

NodeFit node_should_run_daemon_pod(const Json& node, const Json& ds) {
  NodeFit fit;
  Json spec = field(field(field(ds, "spec"), "template"), "spec");
  if (!spec.is_object()) spec = Json::object();
  // A template pinned to another node never runs here.
  const std::string pinned = string_field(spec, "nodeName");
  if (!pinned.empty() && pinned != client::name_of(node)) return fit;
  add_daemon_tolerations(spec);
  if (!pod_matches_node_affinity(spec, node)) return fit;
  const Json& taints = field(field(node, "spec"), "taints");
  const Json& tolerations = spec["tolerations"];
  bool fits_taints = !has_untolerated_taint(taints, tolerations, [](const std::string& effect) {
    return effect == "NoSchedule" || effect == "NoExecute";
  });
  if (!fits_taints) {
    // A pod already there stays unless a NoExecute taint it does not tolerate would evict it.
    fit.should_continue_running = !has_untolerated_taint(
        taints, tolerations, [](const std::string& effect) { return effect == "NoExecute"; });
    return fit;
  }
  fit.should_run = true;
  fit.should_continue_running = true;
  return fit;
}

Json replace_node_name_affinity(Json affinity, const std::string& node_name) {
  Json term = {
      {"matchFields", {{{"key", "metadata.name"}, {"operator", "In"}, {"values", {node_name}}}}}};
  if (!affinity.is_object()) affinity = Json::object();
  Json& node_affinity = affinity["nodeAffinity"];
  if (!node_affinity.is_object()) node_affinity = Json::object();
  Json& required = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"];
  if (!required.is_object()) required = Json::object();
  // The node already matched every term; pinning to it replaces them.
  required["nodeSelectorTerms"] = Json::array({std::move(term)});
  return affinity;
}

std::string target_node_name(const Json& pod) {
  const Json& spec = field(pod, "spec");
  std::string node = string_field(spec, "nodeName");
  if (!node.empty()) return node;
  const Json& terms = field(field(field(field(spec, "affinity"), "nodeAffinity"),
                                  "requiredDuringSchedulingIgnoredDuringExecution"),
                            "nodeSelectorTerms");
  if (!terms.is_array()) return "";
  for (const auto& term : terms) {
    const Json& fields = field(term, "matchFields");
    if (!fields.is_array()) continue;
    for (const auto& req : fields) {
      if (string_field(req, "key") != "metadata.name" || string_field(req, "operator") != "In") {
        continue;
      }
      const Json& values = field(req, "values");
      if (!values.is_array() || values.size() != 1 || !values[0].is_string()) return "";
      return values[0].get<std::string>();
    }
  }
  return "";
}

Result<int> scaled_value(const Json& int_or_percent, int total) {
  if (int_or_percent.is_number_integer()) return int_or_percent.get<int>();
  if (!int_or_percent.is_string()) {
    return error(StatusCode::kInvalidArgument,
                 "invalid value for IntOrString: " + int_or_percent.dump());
  }
  std::string s = int_or_percent.get<std::string>();
  if (s.empty() || s.back() != '%') {
    return error(StatusCode::kInvalidArgument,
                 "invalid value for IntOrString: invalid type: string is not a percentage");
  }
  auto percent = parse_int(s.substr(0, s.size() - 1));
  if (!percent) {
    return error(StatusCode::kInvalidArgument, "invalid value \"" + s + "\": not a percentage");
  }
  return static_cast<int>(std::ceil(static_cast<double>(*percent) * total / 100.0));
}

namespace {

Result<int> rolling_value(const Json& ds, const char* name, int desired) {
  const Json& strategy = field(field(ds, "spec"), "updateStrategy");
  if (string_field(strategy, "type") != "RollingUpdate") return 0;
  const Json& rolling = field(strategy, "rollingUpdate");
  if (!rolling.contains(name) || rolling[name].is_null()) return 0;
  return scaled_value(rolling[name], desired);
}

}  // namespace

Result<int> surge_count(const Json& ds, int desired) {
  return rolling_value(ds, "maxSurge", desired);
}

Result<int> unavailable_count(const Json& ds, int desired) {
  return rolling_value(ds, "maxUnavailable", desired);
}

bool allows_surge(const Json& ds) {
  auto surge = surge_count(ds, 1);
  return surge.is_ok() && surge.value() > 0;
}

std::optional<int64_t> template_generation(const Json& ds) {
  const Json& annotations = field(field(ds, "metadata"), "annotations");
  auto it = annotations.find(kTemplateGenerationAnnotation);
  if (it == annotations.end() || !it->is_string()) return std::nullopt;
  return parse_int(it->get<std::string>());
}

bool is_pod_updated(const Json& pod, const std::string& hash, std::optional<int64_t> generation) {
  const Json& labels = field(field(pod, "metadata"), "labels");
  bool template_matches =
      generation && string_field(labels, kTemplateGenerationLabel) == std::to_string(*generation);
  bool hash_matches = !hash.empty() && string_field(labels, kRevisionHashLabel) == hash;
  return hash_matches || template_matches;
}

void sort_by_creation(std::vector<ObjectPtr>& pods) {
  std::stable_sort(pods.begin(), pods.end(), [](const ObjectPtr& a, const ObjectPtr& b) {
    bool sa = !string_field(field(*a, "spec"), "nodeName").empty();
    bool sb = !string_field(field(*b, "spec"), "nodeName").empty();
    if (sa != sb) return sa;
    int64_t ca = created_at(*a), cb = created_at(*b);
    if (ca != cb) return ca < cb;
    return client::name_of(*a) < client::name_of(*b);
  });
}

}  // namespace skiff::controllers::daemonset
