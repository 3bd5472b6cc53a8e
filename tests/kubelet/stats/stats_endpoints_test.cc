// The kubelet server's /stats/summary and /metrics/resource, over a real provider on a fake
// cgroup tree.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <vector>

#include "httpserver/proxy_client.h"
#include "kubelet/server/kubelet_server.h"
#include "kubelet/stats/fake_tree.h"
#include "kubelet/stats/resource_metrics.h"
#include "kubelet/stats/stats_provider.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::stats {
namespace {

struct Reply {
  int status = 0;
  std::string content_type;
  std::string body;
  std::string error;
};

Reply fetch(const http::ProxyClient& client, int port, const std::string& target) {
  Reply out;
  auto response = client.get("127.0.0.1", port, target);
  if (!response.is_ok()) {
    out.error = response.status().to_string();
    return out;
  }
  out.status = (*response)->head().status;
  out.content_type = (*response)->head().content_type;
  auto body = (*response)->read_all(1 << 20);
  if (!body.is_ok()) {
    out.error = body.status().to_string();
    return out;
  }
  out.body = *body;
  return out;
}

class StatsEndpointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string proc = dir_.sub("proc");
    testing::write_file(proc + "/meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\n");
    testing::write_file(proc + "/stat", "cpu  1 1 1 1 1 1 1 1 0 0\nbtime 1700000000\n");
    cgroup_.set_cpu("/", 7'000'000'000);
    cgroup_.set_memory("/", 500'000, 100'000, 1, 2, 3, testing::kV1NoLimit);
    cgroup_.set_cpu("/skiff/podu1", 1'500'000'000);
    cgroup_.set_memory("/skiff/podu1", 2048, 0, 1, 2, 3, testing::kV1NoLimit);

    StatsProviderOptions o;
    o.node_name = "node-1";
    o.cgroup_mount = cgroup_.root();
    o.proc_root = proc;
    o.node_fs_path = dir_.path();
    o.pods = [] {
      PodInfo p;
      p.uid = "u1";
      p.namespace_name = "default";
      p.name = "web";
      return std::vector<PodInfo>{p};
    };
    provider_ = std::make_unique<CgroupStatsProvider>(o);

    options_.node_name = "node-1";
    options_.address = "127.0.0.1";
    options_.port = 0;
    options_.read_only_port = 0;
    options_.healthz_port = 0;
    options_.cert_dir = dir_.sub("kubelet-pki");
    options_.anonymous_auth = true;
  }

  void TearDown() override {
    if (server_) server_->stop();
  }

  // The callbacks as the kubelet's agent sets them up.
  server::PodLookup lookup() {
    server::PodLookup l;
    l.pod_list = [] { return std::string(R"({"kind":"PodList","items":[]})"); };
    l.container_log = [](const std::string&, const std::string& pod,
                         const std::string&) -> Result<server::ContainerLogTarget> {
      return Status(StatusCode::kNotFound, server::pod_not_found_message(pod));
    };
    l.stats_summary = [this](bool only_cpu_and_memory) -> Result<std::string> {
      {
        std::lock_guard lock(mu_);
        requested_.push_back(only_cpu_and_memory);
      }
      if (fail_) return Status(StatusCode::kUnavailable, "no cgroups here");
      return summary_json(*provider_, only_cpu_and_memory);
    };
    l.resource_metrics = [this] { return resource_metrics(*provider_); };
    return l;
  }

  void start(server::PodLookup l) {
    auto s = server::KubeletServer::create(options_, std::move(l));
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    server_ = std::move(s).value();
  }

  std::unique_ptr<http::ProxyClient> client(bool tls) {
    http::ProxyClientOptions o;
    o.use_tls = tls;
    auto c = http::ProxyClient::create(o);
    EXPECT_TRUE(c.is_ok());
    return std::move(c).value();
  }

  std::vector<bool> requested() {
    std::lock_guard lock(mu_);
    return requested_;
  }

  skiff::testing::TempDir dir_;
  testing::FakeCgroupV1 cgroup_{dir_.sub("cgroup")};
  std::unique_ptr<CgroupStatsProvider> provider_;
  server::KubeletServerOptions options_;
  std::unique_ptr<server::KubeletServer> server_;
  std::atomic<bool> fail_{false};
  std::mutex mu_;
  std::vector<bool> requested_;
};

TEST_F(StatsEndpointsTest, ServesTheSummary) {
  start(lookup());
  auto c = client(true);
  Reply r = fetch(*c, server_->port(), "/stats/summary");
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  auto j = nlohmann::json::parse(r.body);
  EXPECT_EQ(j["node"]["nodeName"], "node-1");
  EXPECT_EQ(j["node"]["cpu"]["usageCoreNanoSeconds"], 7'000'000'000u);
  EXPECT_EQ(j["node"]["memory"]["workingSetBytes"], 400'000u);
  EXPECT_TRUE(j["node"].contains("fs"));
  ASSERT_EQ(j["pods"].size(), 1u);
  EXPECT_EQ(j["pods"][0]["podRef"]["name"], "web");
  EXPECT_EQ(j["pods"][0]["cpu"]["usageCoreNanoSeconds"], 1'500'000'000u);
  EXPECT_EQ(j["pods"][0]["memory"]["workingSetBytes"], 2048u);

  j = nlohmann::json::parse(
      fetch(*c, server_->port(), "/stats/summary?only_cpu_and_memory=true").body);
  EXPECT_FALSE(j["node"].contains("fs"));
  EXPECT_TRUE(j["node"].contains("memory"));
  // Upstream's reading of the parameter: one parseable value, else off.
  fetch(*c, server_->port(), "/stats/summary?only_cpu_and_memory=1");
  fetch(*c, server_->port(), "/stats/summary?only_cpu_and_memory=maybe");
  fetch(*c, server_->port(), "/stats/summary?only_cpu_and_memory=true&only_cpu_and_memory=true");
  EXPECT_EQ(requested(), (std::vector<bool>{false, true, true, false, false}));

  // The read-only port serves it too.
  Reply ro = fetch(*client(false), server_->read_only_port(), "/stats/summary");
  EXPECT_EQ(ro.status, 200);
  EXPECT_EQ(nlohmann::json::parse(ro.body)["node"]["nodeName"], "node-1");
  // The healthz port does not.
  EXPECT_EQ(fetch(*client(false), server_->healthz_port(), "/stats/summary").status, 404);
}

TEST_F(StatsEndpointsTest, ServesResourceMetrics) {
  start(lookup());
  Reply r = fetch(*client(true), server_->port(), "/metrics/resource");
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, kPrometheusTextContentType);
  EXPECT_NE(r.body.find("\nnode_cpu_usage_seconds_total 7 "), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\nnode_memory_working_set_bytes 400000 "), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\npod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 1.5 "),
            std::string::npos)
      << r.body;
  EXPECT_NE(r.body.find("\nresource_scrape_error 0\n"), std::string::npos) << r.body;
  EXPECT_EQ(fetch(*client(false), server_->read_only_port(), "/metrics/resource").status, 200);
}

TEST_F(StatsEndpointsTest, ErrorsAndMissingCallbacks) {
  fail_ = true;
  start(lookup());
  Reply r = fetch(*client(true), server_->port(), "/stats/summary");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, "Internal Error: no cgroups here");
  server_->stop();
  server_.reset();

  server::PodLookup without = lookup();
  without.stats_summary = nullptr;
  without.resource_metrics = nullptr;
  start(without);
  EXPECT_EQ(fetch(*client(true), server_->port(), "/stats/summary").status, 404);
  EXPECT_EQ(fetch(*client(true), server_->port(), "/metrics/resource").status, 404);
  // /pods is unchanged.
  EXPECT_EQ(fetch(*client(true), server_->port(), "/pods").status, 200);
}

TEST_F(StatsEndpointsTest, TheSecurePortStillNeedsCredentials) {
  options_.anonymous_auth = false;
  start(lookup());
  EXPECT_EQ(fetch(*client(true), server_->port(), "/stats/summary").status, 401);
  EXPECT_EQ(fetch(*client(true), server_->port(), "/metrics/resource").status, 401);
  EXPECT_TRUE(requested().empty());
}

}  // namespace
}  // namespace skiff::kubelet::stats
