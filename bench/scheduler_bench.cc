// Scheduler core benchmark: schedule_one (snapshot refresh, filter, score, select) plus assume and
// a no-op bind, one pod after another, on a cluster of 5,000 nodes with 1,000 pods already placed
// and 10,000 pending pods with requests. Scenarios: plain pods, pods of a controller (default
// topology spreading), pods with topology spread constraints, pods with required pod
// anti-affinity. Also the cost of parsing a pod's JSON into a PodInfo (done once, by the
// informer, not in the cycle). Prints figures; asserts nothing.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "scheduler/cache.h"
#include "scheduler/framework.h"
#include "scheduler/plugins/registry.h"
#include "scheduler/scheduler.h"
#include "scheduler/types.h"

namespace {

using nlohmann::json;
using skiff::scheduler::BindPlugin;
using skiff::scheduler::Cache;
using skiff::scheduler::CycleOutcome;
using skiff::scheduler::CycleState;
using skiff::scheduler::Framework;
using skiff::scheduler::Node;
using skiff::scheduler::Plugin;
using skiff::scheduler::PluginStatus;
using skiff::scheduler::PodInfo;
using skiff::scheduler::PodRef;
using skiff::scheduler::Profile;
using skiff::scheduler::Registry;
using skiff::scheduler::Scheduler;
using Clock = std::chrono::steady_clock;

class NoopBinder final : public BindPlugin {
 public:
  std::string_view name() const override { return "NoopBinder"; }
  PluginStatus bind(CycleState&, const PodInfo&, const std::string&) override { return {}; }
};

struct Config {
  int nodes = 5000;
  int zones = 10;
  int placed = 1000;
  int pending = 10000;
  int groups = 10;  // deployments the pending pods belong to
};

json node_json(int i, const Config& cfg) {
  std::string name = "node-" + std::to_string(i);
  return {{"metadata",
           {{"name", name},
            {"uid", "node-uid-" + std::to_string(i)},
            {"labels",
             {{"kubernetes.io/hostname", name},
              {"kubernetes.io/os", "linux"},
              {"kubernetes.io/arch", "amd64"},
              {"node.kubernetes.io/instance-type", "m5.8xlarge"},
              {"topology.kubernetes.io/region", "region-1"},
              {"topology.kubernetes.io/zone", "zone-" + std::to_string(i % cfg.zones)}}}}},
          {"spec", json::object()},
          {"status",
           {{"allocatable", {{"cpu", "32"}, {"memory", "128Gi"}, {"pods", "110"}}},
            {"conditions", json::array({{{"type", "Ready"}, {"status", "True"}}})}}}};
}

enum class Kind { kPlain, kOwned, kSpread, kAntiAffinity };

json pod_json(const std::string& name, int group, Kind kind, const std::string& node) {
  std::string app = "app-" + std::to_string(group);
  json pod = {
      {"metadata",
       {{"name", name},
        {"namespace", "default"},
        {"uid", "uid-" + name},
        {"labels", {{"app", app}, {"tier", "backend"}}}}},
      {"spec",
       {{"containers",
         json::array({{{"name", "main"},
                       {"image", "busybox"},
                       {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "256Mi"}}}}}}})}}}};
  if (!node.empty()) pod["spec"]["nodeName"] = node;
  if (kind != Kind::kPlain) {
    pod["metadata"]["ownerReferences"] = json::array({{{"apiVersion", "apps/v1"},
                                                       {"kind", "ReplicaSet"},
                                                       {"name", app},
                                                       {"uid", "rs-uid-" + std::to_string(group)},
                                                       {"controller", true}}});
  }
  json selector = {{"matchLabels", {{"app", app}}}};
  if (kind == Kind::kSpread) {
    pod["spec"]["topologySpreadConstraints"] =
        json::array({{{"maxSkew", 1},
                      {"topologyKey", "topology.kubernetes.io/zone"},
                      {"whenUnsatisfiable", "DoNotSchedule"},
                      {"labelSelector", selector}},
                     {{"maxSkew", 1},
                      {"topologyKey", "kubernetes.io/hostname"},
                      {"whenUnsatisfiable", "ScheduleAnyway"},
                      {"labelSelector", selector}}});
  }
  if (kind == Kind::kAntiAffinity) {
    pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
        json::array({{{"labelSelector", selector}, {"topologyKey", "kubernetes.io/hostname"}}});
  }
  return pod;
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Figures {
  double pods_per_second = 0;
  double pods_per_cpu_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  int scheduled = 0;
  int failed = 0;
  double evaluated_avg = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

Figures run(const Config& cfg, Kind kind) {
  Cache cache;
  for (int i = 0; i < cfg.nodes; ++i) cache.add_node(Node::from_json(node_json(i, cfg)));
  std::mt19937 rng(7);
  // The placed pods belong to other groups than the pending ones, with the same kind of spec.
  for (int i = 0; i < cfg.placed; ++i) {
    std::string node = "node-" + std::to_string(rng() % static_cast<unsigned>(cfg.nodes));
    PodRef pod =
        PodInfo::from_json(pod_json("placed-" + std::to_string(i), 1000 + i % 50, kind, node));
    (void)cache.add_pod(pod);
  }
  std::vector<PodRef> pending;
  pending.reserve(static_cast<size_t>(cfg.pending));
  for (int i = 0; i < cfg.pending; ++i) {
    pending.push_back(
        PodInfo::from_json(pod_json("pending-" + std::to_string(i), i % cfg.groups, kind, "")));
  }

  Registry registry = skiff::scheduler::plugins::default_registry();
  (void)registry.add(
      "NoopBinder",
      [](const json&, skiff::scheduler::Handle&) -> skiff::Result<std::unique_ptr<Plugin>> {
        return std::unique_ptr<Plugin>(std::make_unique<NoopBinder>());
      });
  Profile profile = skiff::scheduler::plugins::default_profile();
  profile.plugins.push_back({"NoopBinder", 0, nullptr});
  auto fw = Framework::create(registry, profile);
  if (!fw.is_ok()) {
    std::fprintf(stderr, "framework: %s\n", fw.status().to_string().c_str());
    std::exit(1);
  }
  skiff::scheduler::SchedulerOptions options;
  options.seed = 1;
  Scheduler scheduler(cache, std::move(fw).value(), options);

  Figures f;
  std::vector<double> latencies;
  latencies.reserve(pending.size());
  int64_t evaluated = 0;
  auto start = Clock::now();
  const double cpu_start = thread_cpu_seconds();
  for (const PodRef& pod : pending) {
    auto t0 = Clock::now();
    CycleOutcome r = scheduler.schedule_one(pod);
    if (r.outcome.ok()) {
      (void)scheduler.bind(pod, r.outcome.result().node, *r.state);
      evaluated += r.outcome.result().evaluated_nodes;
      ++f.scheduled;
    } else {
      ++f.failed;
    }
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  f.pods_per_second = static_cast<double>(pending.size()) / seconds;
  f.pods_per_cpu_second = static_cast<double>(pending.size()) / (thread_cpu_seconds() - cpu_start);
  f.p50_us = percentile(latencies, 0.5);
  f.p99_us = percentile(latencies, 0.99);
  f.evaluated_avg = f.scheduled ? static_cast<double>(evaluated) / f.scheduled : 0;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::string scenarios = "plain,owned,spread,anti-affinity";
  CLI::App app{"scheduler core benchmark"};
  app.add_option("--nodes", cfg.nodes, "nodes in the cluster");
  app.add_option("--zones", cfg.zones, "zones the nodes are spread over");
  app.add_option("--placed", cfg.placed, "pods already placed before the run");
  app.add_option("--pending", cfg.pending, "pods to schedule");
  app.add_option("--groups", cfg.groups, "deployments the pending pods belong to");
  app.add_option("--scenarios", scenarios, "comma-separated: plain,owned,spread,anti-affinity");
  CLI11_PARSE(app, argc, argv);

  // Parsing cost (per pod, once, outside the cycle).
  {
    json j = pod_json("parse", 0, Kind::kSpread, "");
    const int n = 20000;
    auto t0 = Clock::now();
    size_t sink = 0;
    for (int i = 0; i < n; ++i) sink += PodInfo::from_json(j)->labels.size();
    double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / n;
    std::printf("PodInfo::from_json: %.2f us per pod (%zu)\n\n", us, sink % 2);
  }

  std::printf("%d nodes in %d zones, %d pods placed, %d pending pods (100m, 256Mi) in %d groups\n",
              cfg.nodes, cfg.zones, cfg.placed, cfg.pending, cfg.groups);
  std::printf(
      "| scenario | pods/s | pods/CPU-s | p50 us | p99 us | scheduled | unschedulable | nodes "
      "evaluated/pod |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  struct Named {
    const char* name;
    Kind kind;
  } all[] = {{"plain", Kind::kPlain},
             {"owned", Kind::kOwned},
             {"spread", Kind::kSpread},
             {"anti-affinity", Kind::kAntiAffinity}};
  for (const Named& s : all) {
    if (("," + scenarios + ",").find("," + std::string(s.name) + ",") == std::string::npos)
      continue;
    Figures f = run(cfg, s.kind);
    std::printf("| %s | %.0f | %.0f | %.0f | %.0f | %d | %d | %.0f |\n", s.name, f.pods_per_second,
                f.pods_per_cpu_second, f.p50_us, f.p99_us, f.scheduled, f.failed, f.evaluated_avg);
    std::fflush(stdout);
  }
  return 0;
}
