// The LimitRanger admission plugin (upstream's plugin/pkg/admission/limitranger), over the
// LimitRanges of the object's namespace (which get upstream's defaults when they are written):
// - mutating, new pods: containers and init containers get the Container items' default
//   limits and defaultRequest requests they do not state, and the pod says what was set in
//   the kubernetes.io/limit-ranger annotation;
// - validating, new pods: each container against the Container items' min, max and
//   maxLimitRequestRatio, the pod's total against the Pod items'; new and updated claims:
//   spec.resources.requests against the PersistentVolumeClaim items' min and max.
// Violations are refused with 403 and upstream's messages.

#include <cinttypes>
#include <cstdio>
#include <map>
#include <set>

#include "api/quota.h"
#include "apiserver/admission.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;
namespace quota = api::quota;

constexpr char kAnnotation[] = "kubernetes.io/limit-ranger";
// resource.MaxMilliValue: larger values are compared in units, as upstream.
constexpr int64_t kMaxMilliValue = INT64_MAX / 1000;

const json& field(const json& obj, const char* name) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(name);
  return it == obj.end() ? kNull : *it;
}

bool is_resource(const AdmissionRequest& r, const char* resource) {
  return r.resource && r.resource->group.empty() && r.resource->resource == resource;
}

// upstream's requestLimitEnforcedValues: the three at a common precision.
struct Observed {
  int64_t request;
  int64_t limit;
  int64_t enforced;
};
Observed observe(const api::Quantity& request, const api::Quantity& limit,
                 const api::Quantity& enforced) {
  Observed o{request.value(), limit.value(), enforced.value()};
  if (o.request <= kMaxMilliValue && o.limit <= kMaxMilliValue && o.enforced <= kMaxMilliValue) {
    o = {request.milli_value(), limit.milli_value(), enforced.milli_value()};
  }
  return o;
}

const api::Quantity* find(const quota::ResourceList& list, const std::string& name) {
  auto it = list.find(name);
  return it == list.end() ? nullptr : &it->second;
}

std::string min_violation(const std::string& type, const std::string& resource,
                          const api::Quantity& enforced, const quota::ResourceList& requests,
                          const quota::ResourceList& limits) {
  const api::Quantity* req = find(requests, resource);
  const api::Quantity* lim = find(limits, resource);
  Observed o = observe(req ? *req : api::Quantity(), lim ? *lim : api::Quantity(), enforced);
  std::string head = "minimum " + resource + " usage per " + type + " is " + enforced.to_string();
  if (!req) return head + ".  No request is specified";
  if (o.request < o.enforced) return head + ", but request is " + req->to_string();
  if (lim && o.limit < o.enforced) return head + ", but limit is " + lim->to_string();
  return "";
}

std::string max_violation(const std::string& type, const std::string& resource,
                          const api::Quantity& enforced, const quota::ResourceList& requests,
                          const quota::ResourceList& limits) {
  const api::Quantity* req = find(requests, resource);
  const api::Quantity* lim = find(limits, resource);
  Observed o = observe(req ? *req : api::Quantity(), lim ? *lim : api::Quantity(), enforced);
  std::string head = "maximum " + resource + " usage per " + type + " is " + enforced.to_string();
  if (!lim) return head + ".  No limit is specified";
  if (o.limit > o.enforced) return head + ", but limit is " + lim->to_string();
  if (req && o.request > o.enforced) return head + ", but request is " + req->to_string();
  return "";
}

// Claims: what is requested is all there is.
std::string max_request_violation(const std::string& type, const std::string& resource,
                                  const api::Quantity& enforced,
                                  const quota::ResourceList& requests) {
  const api::Quantity* req = find(requests, resource);
  Observed o = observe(req ? *req : api::Quantity(), api::Quantity(), enforced);
  std::string head = "maximum " + resource + " usage per " + type + " is " + enforced.to_string();
  if (!req) return head + ".  No request is specified";
  if (o.request > o.enforced) return head + ", but request is " + req->to_string();
  return "";
}

std::string ratio_violation(const std::string& type, const std::string& resource,
                            const api::Quantity& enforced, const quota::ResourceList& requests,
                            const quota::ResourceList& limits) {
  const api::Quantity* req = find(requests, resource);
  const api::Quantity* lim = find(limits, resource);
  Observed o = observe(req ? *req : api::Quantity(), lim ? *lim : api::Quantity(), enforced);
  std::string head =
      resource + " max limit to request ratio per " + type + " is " + enforced.to_string();
  if (!req || o.request == 0) return head + ", but no request is specified or request is 0";
  if (!lim || o.limit == 0) return head + ", but no limit is specified or limit is 0";
  double ratio = static_cast<double>(o.limit) / static_cast<double>(o.request);
  double observed = ratio;
  double allowed = static_cast<double>(enforced.value());
  if (enforced.value() <= kMaxMilliValue) {
    observed = ratio * 1000;
    allowed = static_cast<double>(enforced.milli_value());
  }
  if (observed > allowed) {
    char text[64];
    std::snprintf(text, sizeof(text), "%f", ratio);
    return head + ", but provided ratio is " + text;
  }
  return "";
}

// upstream's aggregate error: one message alone, several de-duplicated in brackets.
std::string aggregate(const std::vector<std::string>& errors) {
  std::vector<std::string> distinct;
  std::set<std::string> seen;
  for (const auto& e : errors) {
    if (seen.insert(e).second) distinct.push_back(e);
  }
  if (distinct.size() == 1) return distinct[0];
  std::string out = "[";
  for (size_t i = 0; i < distinct.size(); ++i) {
    if (i) out += ", ";
    out += distinct[i];
  }
  return out + "]";
}

struct Bounds {
  quota::ResourceList min, max, ratio;
};

Bounds bounds_of(const json& item) {
  return {quota::parse_list(field(item, "min")), quota::parse_list(field(item, "max")),
          quota::parse_list(field(item, "maxLimitRequestRatio"))};
}

void check(const std::string& type, const Bounds& b, const quota::ResourceList& requests,
           const quota::ResourceList& limits, std::vector<std::string>& errors) {
  auto keep = [&](std::string e) {
    if (!e.empty()) errors.push_back(std::move(e));
  };
  for (const auto& [name, q] : b.min) keep(min_violation(type, name, q, requests, limits));
  for (const auto& [name, q] : b.max) keep(max_violation(type, name, q, requests, limits));
  for (const auto& [name, q] : b.ratio) keep(ratio_violation(type, name, q, requests, limits));
}

const json& items_of(const json& limit_range) {
  return field(field(limit_range, "spec"), "limits");
}

// A pod's decode-time defaulting, which upstream applies before admission: a container's
// requests default to its limits.
void default_requests_to_limits(json& pod) {
  for (const char* list : {"containers", "initContainers"}) {
    auto spec = pod.find("spec");
    if (spec == pod.end() || !spec->is_object()) return;
    auto containers = spec->find(list);
    if (containers == spec->end() || !containers->is_array()) continue;
    for (json& c : *containers) {
      if (!c.is_object()) continue;
      const json& limits = field(field(c, "resources"), "limits");
      if (!limits.is_object() || limits.empty()) continue;
      json& requests = c["resources"]["requests"];
      if (!requests.is_object()) requests = json::object();
      for (const auto& [name, value] : limits.items()) {
        if (!requests.contains(name)) requests[name] = value;
      }
    }
  }
}

// upstream's mergeContainerResources: fills what `c` lacks, noting it in `notes`.
void merge_container(json& c, const json& default_limits, const json& default_requests,
                     const char* what, std::vector<std::string>& notes) {
  auto fill = [&](const char* kind, const json& defaults) {
    std::set<std::string> set;  // sorted, as upstream sorts them
    if (!defaults.is_object() || defaults.empty()) return set;
    json& resources = c["resources"];
    if (!resources.is_object()) resources = json::object();
    json& target = resources[kind];
    if (!target.is_object()) target = json::object();
    for (const auto& [name, value] : defaults.items()) {
      if (!target.contains(name)) {
        target[name] = value;
        set.insert(name);
      }
    }
    return set;
  };
  std::set<std::string> limits = fill("limits", default_limits);
  std::set<std::string> requests = fill("requests", default_requests);
  std::string name = field(c, "name").is_string() ? c["name"].get<std::string>() : "";
  auto note = [&](const std::set<std::string>& set, const char* kind) {
    if (set.empty()) return;
    std::string n;
    for (const auto& r : set) n += (n.empty() ? "" : ", ") + r;
    notes.push_back(n + " " + kind + " for " + what + " " + name);
  };
  note(requests, "request");
  note(limits, "limit");
}

class LimitRanger final : public AdmissionPlugin {
 public:
  explicit LimitRanger(CachedLister list) : list_(std::move(list)) {}

  std::string_view name() const override { return "LimitRanger"; }

  std::optional<api::ApiError> admit(const AdmissionRequest& request, json& obj) override {
    // LimitRanges themselves get upstream's defaults, which the pod defaults below rely on.
    if (request.subresource.empty() && is_resource(request, "limitranges")) {
      default_limit_range(obj);
      return std::nullopt;
    }
    // Pods are defaulted when they are created; their containers' resources do not change.
    if (!request.subresource.empty() || request.operation != AdmissionOperation::kCreate ||
        !is_resource(request, "pods")) {
      return std::nullopt;
    }
    auto ranges = limit_ranges(request.ns);
    if (!ranges.is_ok()) return api::ApiError::from_storage(ranges.status());
    if (ranges->empty()) return std::nullopt;
    default_requests_to_limits(obj);
    for (const json& range : *ranges) {
      json default_limits = json::object();
      json default_requests = json::object();
      const json& items = items_of(range);
      if (items.is_array()) {
        for (const json& item : items) {
          if (field(item, "type") != "Container") continue;
          for (const char* f : {"default", "defaultRequest"}) {
            const json& values = field(item, f);
            if (!values.is_object()) continue;
            json& into = std::string(f) == "default" ? default_limits : default_requests;
            for (const auto& [name, value] : values.items()) into[name] = value;
          }
        }
      }
      std::vector<std::string> notes;
      json& spec = obj["spec"];
      if (!spec.is_object()) spec = json::object();
      for (auto [list, what] :
           {std::pair{"containers", "container"}, std::pair{"initContainers", "init container"}}) {
        auto containers = spec.find(list);
        if (containers == spec.end() || !containers->is_array()) continue;
        for (json& c : *containers) {
          if (c.is_object()) merge_container(c, default_limits, default_requests, what, notes);
        }
      }
      if (notes.empty()) continue;
      std::string text = "LimitRanger plugin set: ";
      for (size_t i = 0; i < notes.size(); ++i) text += (i ? "; " : "") + notes[i];
      json& annotations = obj["metadata"]["annotations"];
      if (!annotations.is_object()) annotations = json::object();
      annotations[kAnnotation] = text;
    }
    return std::nullopt;
  }

  std::optional<api::ApiError> validate(const AdmissionRequest& request, const json& obj,
                                        AdmissionWrites&) override {
    if (!request.subresource.empty()) return std::nullopt;
    bool pod = is_resource(request, "pods") && request.operation == AdmissionOperation::kCreate;
    bool claim = is_resource(request, "persistentvolumeclaims");
    if (!pod && !claim) return std::nullopt;
    // Objects on their way out are not held to limits.
    if (request.old && field(field(*request.old, "metadata"), "deletionTimestamp").is_string()) {
      return std::nullopt;
    }
    auto ranges = limit_ranges(request.ns);
    if (!ranges.is_ok()) return api::ApiError::from_storage(ranges.status());
    for (const json& range : *ranges) {
      std::vector<std::string> errors = pod ? check_pod(range, obj) : check_claim(range, obj);
      if (!errors.empty()) {
        return admission_forbidden(*request.resource, obj, aggregate(errors));
      }
    }
    return std::nullopt;
  }

 private:
  static std::vector<std::string> check_pod(const json& range, const json& pod) {
    std::vector<std::string> errors;
    const json& items = items_of(range);
    if (!items.is_array()) return errors;
    const json& spec = field(pod, "spec");
    for (const json& item : items) {
      const json& type = field(item, "type");
      if (type == "Container") {
        Bounds b = bounds_of(item);
        for (const char* list : {"containers", "initContainers"}) {
          const json& containers = field(spec, list);
          if (!containers.is_array()) continue;
          for (const json& c : containers) {
            const json& resources = field(c, "resources");
            check("Container", b, quota::parse_list(field(resources, "requests")),
                  quota::parse_list(field(resources, "limits")), errors);
          }
        }
      } else if (type == "Pod") {
        check("Pod", bounds_of(item), quota::pod_requests(pod, false),
              quota::pod_limits(pod, false), errors);
      }
    }
    return errors;
  }

  static std::vector<std::string> check_claim(const json& range, const json& claim) {
    std::vector<std::string> errors;
    const json& items = items_of(range);
    if (!items.is_array()) return errors;
    quota::ResourceList requests =
        quota::parse_list(field(field(field(claim, "spec"), "resources"), "requests"));
    for (const json& item : items) {
      if (field(item, "type") != "PersistentVolumeClaim") continue;
      Bounds b = bounds_of(item);
      for (const auto& [name, q] : b.min) {
        std::string e = min_violation("PersistentVolumeClaim", name, q, requests, {});
        if (!e.empty()) errors.push_back(std::move(e));
      }
      for (const auto& [name, q] : b.max) {
        std::string e = max_request_violation("PersistentVolumeClaim", name, q, requests);
        if (!e.empty()) errors.push_back(std::move(e));
      }
    }
    return errors;
  }

  // The namespace's LimitRanges, defaulted, by name.
  Result<std::vector<json>> limit_ranges(const std::string& ns) {
    auto listed = list_("/registry/limitranges/" + ns + "/");
    if (!listed.is_ok()) return listed.status();
    std::vector<json> out;
    for (const auto& kv : *listed) {
      json range = json::parse(kv->value, nullptr, false);
      if (!range.is_object()) continue;
      default_limit_range(range);
      out.push_back(std::move(range));
    }
    return out;
  }

  const CachedLister list_;
};

}  // namespace

void default_limit_range(json& limit_range) {
  auto spec = limit_range.find("spec");
  if (spec == limit_range.end() || !spec->is_object()) return;
  auto items = spec->find("limits");
  if (items == spec->end() || !items->is_array()) return;
  for (json& item : *items) {
    if (!item.is_object() || field(item, "type") != "Container") continue;
    json defaults =
        item.contains("default") && item["default"].is_object() ? item["default"] : json::object();
    json requests = item.contains("defaultRequest") && item["defaultRequest"].is_object()
                        ? item["defaultRequest"]
                        : json::object();
    auto fill = [](json& into, const json& from) {
      if (!from.is_object()) return;
      for (const auto& [name, value] : from.items()) {
        if (!into.contains(name)) into[name] = value;
      }
    };
    fill(defaults, field(item, "max"));
    fill(requests, defaults);
    fill(requests, field(item, "min"));
    if (!defaults.empty()) item["default"] = std::move(defaults);
    if (!requests.empty()) item["defaultRequest"] = std::move(requests);
  }
}

std::unique_ptr<AdmissionPlugin> new_limit_ranger(CachedLister list) {
  return std::make_unique<LimitRanger>(std::move(list));
}

}  // namespace skiff::apiserver
