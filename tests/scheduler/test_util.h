#pragma once

// Builders for pod and node JSON and a small cluster (cache + snapshot) for the scheduler tests.

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/cache.h"
#include "scheduler/framework.h"
#include "scheduler/types.h"

namespace skiff::scheduler::testing {

using nlohmann::json;

class PodBuilder {
 public:
  explicit PodBuilder(const std::string& name, const std::string& ns = "default") {
    j_ = {{"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-" + ns + "-" + name}}},
          {"spec", {{"containers", json::array({{{"name", "c"}}})}}}};
  }
  PodBuilder& req(const std::string& cpu, const std::string& memory) {
    json& r = j_["spec"]["containers"][0]["resources"]["requests"];
    if (!cpu.empty()) r["cpu"] = cpu;
    if (!memory.empty()) r["memory"] = memory;
    return *this;
  }
  PodBuilder& request(const std::string& resource, const std::string& q) {
    j_["spec"]["containers"][0]["resources"]["requests"][resource] = q;
    return *this;
  }
  PodBuilder& container(json c) {
    j_["spec"]["containers"].push_back(std::move(c));
    return *this;
  }
  PodBuilder& init_container(json c) {
    j_["spec"]["initContainers"].push_back(std::move(c));
    return *this;
  }
  PodBuilder& label(const std::string& k, const std::string& v) {
    j_["metadata"]["labels"][k] = v;
    return *this;
  }
  PodBuilder& node(const std::string& n) {
    j_["spec"]["nodeName"] = n;
    return *this;
  }
  PodBuilder& priority(int p) {
    j_["spec"]["priority"] = p;
    return *this;
  }
  PodBuilder& node_selector(const std::string& k, const std::string& v) {
    j_["spec"]["nodeSelector"][k] = v;
    return *this;
  }
  PodBuilder& toleration(json t) {
    j_["spec"]["tolerations"].push_back(std::move(t));
    return *this;
  }
  PodBuilder& host_port(int port, const std::string& protocol = "", const std::string& ip = "") {
    json p = {{"containerPort", port}, {"hostPort", port}};
    if (!protocol.empty()) p["protocol"] = protocol;
    if (!ip.empty()) p["hostIP"] = ip;
    j_["spec"]["containers"][0]["ports"].push_back(p);
    return *this;
  }
  PodBuilder& owner(const std::string& uid, const std::string& kind = "ReplicaSet") {
    j_["metadata"]["ownerReferences"] = json::array({{{"apiVersion", "apps/v1"},
                                                      {"kind", kind},
                                                      {"name", "rs"},
                                                      {"uid", uid},
                                                      {"controller", true}}});
    return *this;
  }
  PodBuilder& spec(const std::string& key, json value) {
    j_["spec"][key] = std::move(value);
    return *this;
  }
  PodBuilder& uid(const std::string& u) {
    j_["metadata"]["uid"] = u;
    return *this;
  }
  PodBuilder& terminating() {
    j_["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z";
    return *this;
  }
  // Pod anti-affinity / affinity helpers: a required term on `key` matching label k=v.
  PodBuilder& required_anti_affinity(const std::string& k, const std::string& v,
                                     const std::string& topology_key) {
    j_["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .push_back(term(k, v, topology_key));
    return *this;
  }
  PodBuilder& required_affinity(const std::string& k, const std::string& v,
                                const std::string& topology_key) {
    j_["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        .push_back(term(k, v, topology_key));
    return *this;
  }
  PodBuilder& preferred_affinity(int weight, const std::string& k, const std::string& v,
                                 const std::string& topology_key) {
    j_["spec"]["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .push_back({{"weight", weight}, {"podAffinityTerm", term(k, v, topology_key)}});
    return *this;
  }
  PodBuilder& preferred_anti_affinity(int weight, const std::string& k, const std::string& v,
                                      const std::string& topology_key) {
    j_["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        .push_back({{"weight", weight}, {"podAffinityTerm", term(k, v, topology_key)}});
    return *this;
  }
  PodBuilder& spread(int max_skew, const std::string& key, const std::string& when,
                     const std::string& k, const std::string& v) {
    j_["spec"]["topologySpreadConstraints"].push_back(
        {{"maxSkew", max_skew},
         {"topologyKey", key},
         {"whenUnsatisfiable", when},
         {"labelSelector", {{"matchLabels", {{k, v}}}}}});
    return *this;
  }

  static json term(const std::string& k, const std::string& v, const std::string& topology_key) {
    return {{"labelSelector", {{"matchLabels", {{k, v}}}}}, {"topologyKey", topology_key}};
  }

  json& json_ref() { return j_; }
  PodRef build() const { return PodInfo::from_json(std::make_shared<const json>(j_)); }

 private:
  json j_;
};

class NodeBuilder {
 public:
  explicit NodeBuilder(const std::string& name) {
    j_ = {{"metadata", {{"name", name}, {"labels", {{"kubernetes.io/hostname", name}}}}},
          {"spec", json::object()},
          {"status",
           {{"allocatable", {{"cpu", "4"}, {"memory", "8Gi"}, {"pods", "110"}}},
            {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}}}};
  }
  NodeBuilder& capacity(const std::string& cpu, const std::string& memory, int pods = 110) {
    json& a = j_["status"]["allocatable"];
    a["cpu"] = cpu;
    a["memory"] = memory;
    a["pods"] = std::to_string(pods);
    return *this;
  }
  NodeBuilder& allocatable(const std::string& resource, const std::string& q) {
    j_["status"]["allocatable"][resource] = q;
    return *this;
  }
  NodeBuilder& label(const std::string& k, const std::string& v) {
    j_["metadata"]["labels"][k] = v;
    return *this;
  }
  NodeBuilder& zone(const std::string& z) { return label("topology.kubernetes.io/zone", z); }
  NodeBuilder& taint(const std::string& k, const std::string& v, const std::string& effect) {
    j_["spec"]["taints"].push_back({{"key", k}, {"value", v}, {"effect", effect}});
    return *this;
  }
  NodeBuilder& unschedulable() {
    j_["spec"]["unschedulable"] = true;
    return *this;
  }
  NodeBuilder& ready(const std::string& status) {
    j_["status"]["conditions"][0]["status"] = status;
    return *this;
  }
  json& json_ref() { return j_; }
  NodeRef build() const { return Node::from_json(std::make_shared<const json>(j_)); }

 private:
  json j_;
};

// A cache and a snapshot kept in step.
class Cluster {
 public:
  Cluster& add(const NodeBuilder& n) {
    cache.add_node(n.build());
    return *this;
  }
  PodRef add(const PodBuilder& p) {
    PodRef pod = p.build();
    Status s = cache.add_pod(pod);
    if (!s.is_ok()) throw std::runtime_error(s.to_string());
    return pod;
  }
  const Snapshot& refresh() {
    cache.update_snapshot(snapshot);
    return snapshot;
  }
  const NodeInfo& node(const std::string& name) {
    refresh();
    const NodeInfo* n = snapshot.get(name);
    if (n == nullptr) throw std::runtime_error("no node " + name);
    return *n;
  }

  Cache cache;
  Snapshot snapshot;
};

// Runs PreFilter then Filter of one plugin on one node (Skip from PreFilter means success).
inline PluginStatus run_filter(const Plugin& plugin, Cluster& cluster, const PodInfo& pod,
                               const std::string& node) {
  CycleState state;
  const Snapshot& snap = cluster.refresh();
  if (auto* pf = dynamic_cast<const PreFilterPlugin*>(&plugin)) {
    PreFilterResult r;
    PluginStatus s = pf->pre_filter(state, pod, snap, r);
    if (s.is_skip()) return {};
    if (!s.is_success()) return s;
    if (!r.all_nodes &&
        std::find(r.node_names.begin(), r.node_names.end(), node) == r.node_names.end()) {
      return {Code::kUnschedulableAndUnresolvable, "excluded by PreFilter"};
    }
  }
  auto* f = dynamic_cast<const FilterPlugin*>(&plugin);
  if (f == nullptr) return PluginStatus::error("not a filter plugin");
  return f->filter(state, pod, *snap.get(node));
}

// Runs PreScore, Score and NormalizeScore of one plugin over `nodes` (all nodes when empty).
// Returns name → score; a PreScore Skip yields an empty map.
inline std::map<std::string, int64_t> run_score(const Plugin& plugin, Cluster& cluster,
                                                const PodInfo& pod,
                                                std::vector<std::string> nodes = {}) {
  CycleState state;
  const Snapshot& snap = cluster.refresh();
  std::vector<const NodeInfo*> feasible;
  if (nodes.empty()) {
    feasible = snap.list();
  } else {
    for (const std::string& n : nodes) feasible.push_back(snap.get(n));
  }
  if (auto* ps = dynamic_cast<const PreScorePlugin*>(&plugin)) {
    PluginStatus s = ps->pre_score(state, pod, feasible, snap);
    if (s.is_skip()) return {};
    if (!s.is_success()) throw std::runtime_error("PreScore: " + s.message());
  }
  auto* sp = dynamic_cast<const ScorePlugin*>(&plugin);
  std::vector<NodeScore> scores;
  for (const NodeInfo* n : feasible) {
    NodeScore ns{n, 0};
    PluginStatus s = sp->score(state, pod, *n, ns.score);
    if (!s.is_success()) throw std::runtime_error("Score: " + s.message());
    scores.push_back(ns);
  }
  if (sp->has_normalize()) {
    PluginStatus s = sp->normalize(state, pod, scores);
    if (!s.is_success()) throw std::runtime_error("Normalize: " + s.message());
  }
  std::map<std::string, int64_t> out;
  for (const NodeScore& ns : scores) out[ns.node->name()] = ns.score;
  return out;
}

}  // namespace skiff::scheduler::testing
