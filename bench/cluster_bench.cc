// Control-plane benchmarks with simulated nodes: scheduling throughput end to end (pods created
// through the API server, scheduled, bindings persisted) on 5,000 hollow nodes, plain and with
// topology spread constraints and with pod anti-affinity; and a Deployment of 10,000 replicas on
// 1,000 hollow nodes until its rollout completes. Starts the real `skiff server` and
// `skiff hollow-node` as child processes. Prints figures; asserts nothing.

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "base/kubeconfig.h"
#include "base/log.h"
#include "client/http_client.h"
#include "support/child_process.h"
#include "support/ports.h"
#include "support/temp_dir.h"

namespace {

using skiff::client::HttpApiClient;
using skiff::client::Json;
namespace res = skiff::client::resources;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

struct Cluster {
  skiff::testing::ChildProcess server;
  skiff::testing::ChildProcess hollow;
  std::unique_ptr<HttpApiClient> api;
};

bool start_cluster(const std::string& skiff, const std::string& dir, int nodes,
                   const std::vector<std::string>& server_flags, Cluster* c) {
  int port = skiff::testing::free_tcp_port();
  std::vector<std::string> argv{skiff,          "--log-level",        "warn",
                                "server",       "--data-dir",         dir + "/data",
                                "--https-port", std::to_string(port), "--bind-address",
                                "127.0.0.1"};
  // Hollow nodes only: no real node agent or DNS server on the host.
  for (const char* flag : {"--disable-agent", "--disable-dns"}) argv.push_back(flag);
  argv.insert(argv.end(), server_flags.begin(), server_flags.end());
  if (!c->server.start(argv, dir + "/server.log").is_ok()) return false;
  std::string kubeconfig = dir + "/data/admin.kubeconfig";
  auto t0 = Clock::now();
  while (seconds_since(t0) < 30) {
    auto api = HttpApiClient::from_kubeconfig_file(
        kubeconfig, {.user_agent = "cluster-bench", .max_idle_connections = 64});
    if (api.is_ok() && api.value()->raw("GET", "/readyz").is_ok()) {
      c->api = std::move(api.value());
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!c->api) return false;
  if (!c->hollow
           .start({skiff, "--log-level", "warn", "hollow-node", "--kubeconfig", kubeconfig,
                   "--count", std::to_string(nodes), "--name-prefix", "hollow-"},
                  dir + "/hollow.log")
           .is_ok()) {
    return false;
  }
  t0 = Clock::now();
  while (seconds_since(t0) < 300) {
    auto list = c->api->list(res::kNodes, "");
    if (list.is_ok()) {
      int ready = 0;
      for (const auto& n : list.value()["items"]) {
        for (const auto& cond :
             n.value("status", Json::object()).value("conditions", Json::array())) {
          if (cond.value("type", "") == "Ready" && cond.value("status", "") == "True") ++ready;
        }
      }
      if (ready >= nodes) {
        std::printf("# %d nodes Ready after %.1f s\n", nodes, seconds_since(t0));
        return true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  return false;
}

Json bench_pod(const std::string& name, const std::string& scenario, int index) {
  Json pod = {{"apiVersion", "v1"},
              {"kind", "Pod"},
              {"metadata", {{"name", name}, {"labels", {{"app", "bench"}}}}},
              {"spec",
               {{"containers",
                 {{{"name", "c"},
                   {"image", "busybox:1.36"},
                   {"resources", {{"requests", {{"cpu", "100m"}, {"memory", "64Mi"}}}}}}}}}}};
  if (scenario == "spread") {
    pod["spec"]["topologySpreadConstraints"] = {
        {{"maxSkew", 1},
         {"topologyKey", "kubernetes.io/hostname"},
         {"whenUnsatisfiable", "DoNotSchedule"},
         {"labelSelector", {{"matchLabels", {{"app", "bench"}}}}}}};
  } else if (scenario == "antiaffinity") {
    // Ten colours; no two pods of one colour share a node.
    std::string color = "c" + std::to_string(index % 10);
    pod["metadata"]["labels"]["color"] = color;
    pod["spec"]["affinity"] = {{"podAntiAffinity",
                                {{"requiredDuringSchedulingIgnoredDuringExecution",
                                  {{{"labelSelector", {{"matchLabels", {{"color", color}}}}},
                                    {"topologyKey", "kubernetes.io/hostname"}}}}}}};
  }
  return pod;
}

// Creates `count` pods with 32 clients; returns seconds taken.
double create_pods(HttpApiClient& api, const std::string& ns, const std::string& prefix,
                   const std::string& scenario, int count, int offset) {
  std::atomic<int> next{0};
  std::atomic<int> errors{0};
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < count; i = next++) {
        auto r =
            api.create(res::kPods, ns, bench_pod(prefix + std::to_string(i), scenario, offset + i));
        if (!r.is_ok()) ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  if (errors) std::printf("# %d create errors\n", errors.load());
  return seconds_since(t0);
}

// Counts pods of `ns` that have a node, from a watch; wait_for() blocks until `n` are bound.
class BindingCounter {
 public:
  BindingCounter(HttpApiClient& api, const std::string& ns) : api_(api), ns_(ns) {
    thread_ = std::thread([this] { run(); });
  }
  ~BindingCounter() {
    stop_ = true;
    {
      std::lock_guard lock(mu_);
      if (watch_) watch_->cancel();
    }
    thread_.join();
  }
  // Seconds from `start` to the n-th binding seen, or -1 on timeout.
  double wait_for(size_t n, Clock::time_point start, double timeout_s) {
    auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (Clock::now() < deadline) {
      {
        std::lock_guard lock(mu_);
        if (bound_.size() >= n) return std::chrono::duration<double>(last_ - start).count();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::lock_guard lock(mu_);
    std::printf("# timeout: %zu of %zu bound\n", bound_.size(), n);
    return -1;
  }

 private:
  void run() {
    skiff::client::ListOptions opts;
    opts.resource_version = "0";
    auto w = api_.watch(res::kPods, ns_, opts);
    if (!w.is_ok()) return;
    {
      std::lock_guard lock(mu_);
      watch_ = std::move(w.value());
    }
    while (!stop_) {
      auto ev = watch_->next();
      if (!ev.is_ok()) return;
      const Json& pod = ev.value().object;
      if (!pod.contains("spec") || pod["spec"].value("nodeName", "").empty()) continue;
      std::lock_guard lock(mu_);
      if (bound_.insert(pod["metadata"].value("name", "")).second) last_ = Clock::now();
    }
  }

  HttpApiClient& api_;
  std::string ns_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::unique_ptr<skiff::client::WatchStream> watch_;
  std::unordered_set<std::string> bound_;
  Clock::time_point last_;
  std::thread thread_;
};

void scheduling(const std::string& skiff, int nodes, int placed, int pending,
                const std::string& scenario) {
  skiff::testing::TempDir dir("skiff-cluster-bench");
  Cluster c;
  if (!start_cluster(skiff, dir.path(), nodes, {"--disable-controller-manager"}, &c)) {
    std::printf("# cluster did not start; see %s\n", dir.path().c_str());
    return;
  }
  std::string ns = "bench";
  (void)c.api->create(res::kNamespaces, "", {{"metadata", {{"name", ns}}}});
  BindingCounter counter(*c.api, ns);
  auto t0 = Clock::now();
  create_pods(*c.api, ns, "placed-", scenario, placed, 0);
  if (counter.wait_for(placed, t0, 300) < 0) return;
  auto t1 = Clock::now();
  double create_s = create_pods(*c.api, ns, "pending-", scenario, pending, placed);
  double bound_s = counter.wait_for(placed + pending, t1, 600);
  if (bound_s < 0) return;
  std::printf("| %s | %d | %d | %d | %.0f | %.2f | %.0f | %.0f | %.0f |\n", scenario.c_str(), nodes,
              placed, pending, pending / create_s, bound_s, pending / bound_s,
              rss_kb(c.server.pid()) / 1024.0, rss_kb(c.hollow.pid()) / 1024.0);
  std::fflush(stdout);
  c.hollow.stop();
  c.server.stop();
}

void deployment(const std::string& skiff, int nodes, int replicas) {
  skiff::testing::TempDir dir("skiff-cluster-bench");
  Cluster c;
  if (!start_cluster(skiff, dir.path(), nodes, {}, &c)) {
    std::printf("# cluster did not start; see %s\n", dir.path().c_str());
    return;
  }
  Json dep = {
      {"apiVersion", "apps/v1"},
      {"kind", "Deployment"},
      {"metadata", {{"name", "big"}}},
      {"spec",
       {{"replicas", replicas},
        {"selector", {{"matchLabels", {{"app", "big"}}}}},
        {"template",
         {{"metadata", {{"labels", {{"app", "big"}}}}},
          {"spec",
           {{"containers",
             {{{"name", "c"},
               {"image", "busybox:1.36"},
               {"resources", {{"requests", {{"cpu", "10m"}, {"memory", "16Mi"}}}}}}}}}}}}}}};
  auto t0 = Clock::now();
  if (!c.api->create(res::kDeployments, "default", dep).is_ok()) return;
  double done = -1;
  while (seconds_since(t0) < 900) {
    auto d = c.api->get(res::kDeployments, "default", "big");
    if (d.is_ok()) {
      const Json s = d.value().value("status", Json::object());
      // What `kubectl rollout status` waits for.
      if (s.value("observedGeneration", 0) >= d.value()["metadata"].value("generation", 1) &&
          s.value("updatedReplicas", 0) == replicas && s.value("replicas", 0) == replicas &&
          s.value("availableReplicas", 0) == replicas) {
        done = seconds_since(t0);
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf("| %d | %d | %.1f | %.0f | %.0f |\n", replicas, nodes, done,
              rss_kb(c.server.pid()) / 1024.0, rss_kb(c.hollow.pid()) / 1024.0);
  std::fflush(stdout);
  c.hollow.stop();
  c.server.stop();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff control-plane benchmarks with hollow nodes"};
  std::string skiff = "build/skiff";
  std::string mode = "all";
  int nodes = 5000, placed = 1000, pending = 10000;
  int deploy_nodes = 1000, replicas = 10000;
  app.add_option("--skiff", skiff, "The skiff binary")->capture_default_str();
  app.add_option("--mode", mode, "scheduling, spread, antiaffinity, deployment or all")
      ->capture_default_str();
  app.add_option("--nodes", nodes)->capture_default_str();
  app.add_option("--placed", placed)->capture_default_str();
  app.add_option("--pending", pending)->capture_default_str();
  app.add_option("--deploy-nodes", deploy_nodes)->capture_default_str();
  app.add_option("--replicas", replicas)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  skiff::set_log_level("warn");

  std::printf("## Scheduling throughput (pods created through the API, bindings persisted)\n\n");
  std::printf(
      "| scenario | nodes | placed | pending | creates/s | all bound (s) | scheduled pods/s "
      "| server RSS (MiB) | hollow RSS (MiB) |\n|---|---|---|---|---|---|---|---|---|\n");
  for (std::string s : {"scheduling", "spread", "antiaffinity"}) {
    if (mode != "all" && mode != s) continue;
    scheduling(skiff, nodes, placed, pending, s == "scheduling" ? "basic" : s);
  }
  if (mode == "all" || mode == "deployment") {
    std::printf(
        "\n## Deployment rollout\n\n| replicas | nodes | rollout complete (s) "
        "| server RSS (MiB) | hollow RSS (MiB) |\n|---|---|---|---|---|\n");
    deployment(skiff, deploy_nodes, replicas);
  }
  return 0;
}
