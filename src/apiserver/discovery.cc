#include "apiserver/discovery.h"

#include <nlohmann/json.hpp>
#include <set>
#include <vector>

namespace skiff::apiserver {
namespace {

using nlohmann::json;

constexpr const char* kAggregatedVersions[2] = {"v2", "v2beta1"};

json legacy_resource(const api::ResourceInfo& r) {
  json j{{"name", r.resource},
         {"singularName", r.singular},
         {"namespaced", r.namespaced},
         {"kind", r.kind},
         {"verbs", r.verbs}};
  if (!r.short_names.empty()) j["shortNames"] = r.short_names;
  if (!r.categories.empty()) j["categories"] = r.categories;
  return j;
}

json aggregated_resource(const api::ResourceInfo& r) {
  json j{{"resource", r.resource},
         {"responseKind", {{"group", r.group}, {"version", r.version}, {"kind", r.kind}}},
         {"scope", r.namespaced ? "Namespaced" : "Cluster"},
         {"singularResource", r.singular},
         {"verbs", r.verbs}};
  if (!r.short_names.empty()) j["shortNames"] = r.short_names;
  if (!r.categories.empty()) j["categories"] = r.categories;
  json subs = json::array();
  for (const api::SubresourceInfo& s : r.subresources) {
    subs.push_back({{"subresource", s.name},
                    {"responseKind",
                     {{"group", s.response.group},
                      {"version", s.response.version},
                      {"kind", s.response.kind}}},
                    {"verbs", s.verbs}});
  }
  if (!subs.empty()) j["subresources"] = std::move(subs);
  return j;
}

bool accepts(std::string_view accept, const char* version) {
  std::string want = std::string("g=apidiscovery.k8s.io;v=") + version;
  size_t pos = 0;
  while ((pos = accept.find(want, pos)) != std::string_view::npos) {
    size_t end = pos + want.size();
    if (end == accept.size() || accept[end] == ';' || accept[end] == ',') {
      // Accept items list their parameters in any order; as=APIGroupDiscoveryList must be in
      // the same item.
      size_t item_start = accept.rfind(',', pos);
      item_start = item_start == std::string_view::npos ? 0 : item_start + 1;
      size_t item_end = accept.find(',', pos);
      std::string_view item = accept.substr(item_start, item_end - item_start);
      if (item.find("as=APIGroupDiscoveryList") != std::string_view::npos) return true;
    }
    pos = end;
  }
  return false;
}

}  // namespace

Discovery::Discovery(const api::Schema& schema) {
  // Group → versions → resources, in schema order.
  std::vector<std::string> group_order;
  std::map<std::string, std::vector<std::string>> versions;
  std::map<std::string, std::vector<const api::ResourceInfo*>> by_gv;
  for (const api::ResourceInfo& r : schema.resources()) {
    if (!versions.count(r.group)) group_order.push_back(r.group);
    auto& vs = versions[r.group];
    if (std::find(vs.begin(), vs.end(), r.version) == vs.end()) vs.push_back(r.version);
    by_gv[r.group_version()].push_back(&r);
  }
  api_versions_ = json{{"kind", "APIVersions"},
                       {"versions", versions[""]},
                       {"serverAddressByClientCIDRs",
                        json::array({{{"clientCIDR", "0.0.0.0/0"}, {"serverAddress", ""}}})}}
                      .dump();
  json groups = json::array();
  for (const std::string& g : group_order) {
    if (g.empty()) continue;
    json vs = json::array();
    for (const std::string& v : versions[g])
      vs.push_back({{"groupVersion", g + "/" + v}, {"version", v}});
    json group{{"name", g}, {"versions", vs}, {"preferredVersion", vs[0]}};
    groups_[g] = json{
        {"kind", "APIGroup"},
        {"apiVersion", "v1"},
        {"name", g},
        {"versions", vs},
        {"preferredVersion",
         vs[0]}}.dump();
    groups.push_back(std::move(group));
  }
  group_list_ = json{{"kind", "APIGroupList"}, {"apiVersion", "v1"}, {"groups", groups}}.dump();

  for (const auto& [gv, resources] : by_gv) {
    json list = json::array();
    for (const api::ResourceInfo* r : resources) {
      list.push_back(legacy_resource(*r));
      for (const api::SubresourceInfo& s : r->subresources) {
        json sub{{"name", r->resource + "/" + s.name},
                 {"singularName", ""},
                 {"namespaced", r->namespaced},
                 {"kind", s.response.kind},
                 {"verbs", s.verbs}};
        if (!s.response.group.empty() && s.response.group != r->group) {
          sub["group"] = s.response.group;
          sub["version"] = s.response.version;
        }
        list.push_back(std::move(sub));
      }
    }
    resource_lists_[gv] = json{
        {"kind", "APIResourceList"},
        {"apiVersion", "v1"},
        {"groupVersion", gv},
        {"resources", list}}.dump();
  }

  for (int i = 0; i < 2; ++i) {
    std::string api_version = std::string("apidiscovery.k8s.io/") + kAggregatedVersions[i];
    auto group_item = [&](const std::string& g) {
      json vs = json::array();
      for (const std::string& v : versions[g]) {
        json resources = json::array();
        for (const api::ResourceInfo* r : by_gv[g.empty() ? v : g + "/" + v]) {
          resources.push_back(aggregated_resource(*r));
        }
        vs.push_back({{"version", v}, {"resources", resources}, {"freshness", "Current"}});
      }
      return json{{"metadata", {{"name", g}, {"creationTimestamp", nullptr}}}, {"versions", vs}};
    };
    json core_items = json::array({group_item("")});
    aggregated_core_[i] = json{
        {"kind", "APIGroupDiscoveryList"},
        {"apiVersion", api_version},
        {"metadata", json::object()},
        {"items", core_items}}.dump();
    json items = json::array();
    for (const std::string& g : group_order) {
      if (!g.empty()) items.push_back(group_item(g));
    }
    aggregated_groups_[i] = json{
        {"kind", "APIGroupDiscoveryList"},
        {"apiVersion", api_version},
        {"metadata", json::object()},
        {"items", items}}.dump();
  }
}

std::optional<Response> Discovery::serve(std::string_view path, std::string_view accept) const {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  Response r;
  if (path == "/api" || path == "/apis") {
    for (int i = 0; i < 2; ++i) {
      if (accepts(accept, kAggregatedVersions[i])) {
        r.content_type = std::string("application/json;g=apidiscovery.k8s.io;v=") +
                         kAggregatedVersions[i] + ";as=APIGroupDiscoveryList";
        r.body = path == "/api" ? aggregated_core_[i] : aggregated_groups_[i];
        r.headers.push_back({"Vary", "Accept"});
        return r;
      }
    }
    r.body = path == "/api" ? api_versions_ : group_list_;
    r.headers.push_back({"Vary", "Accept"});
    return r;
  }
  if (path.starts_with("/api/")) {
    auto it = resource_lists_.find(std::string(path.substr(5)));
    if (it == resource_lists_.end() || it->first.find('/') != std::string::npos)
      return std::nullopt;
    r.body = it->second;
    return r;
  }
  if (path.starts_with("/apis/")) {
    std::string rest(path.substr(6));
    if (rest.find('/') == std::string::npos) {
      auto it = groups_.find(rest);
      if (it == groups_.end()) return std::nullopt;
      r.body = it->second;
      return r;
    }
    auto it = resource_lists_.find(rest);
    if (it == resource_lists_.end()) return std::nullopt;
    r.body = it->second;
    return r;
  }
  return std::nullopt;
}

}  // namespace skiff::apiserver
