#include "kubelet/stats/resource_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace skiff::kubelet::stats {
namespace {

using std::chrono::milliseconds;

TEST(PrometheusValueTest, FormatsAsGosShortestG) {
  EXPECT_EQ(format_prometheus_value(0), "0");
  EXPECT_EQ(format_prometheus_value(-0.0), "0");
  EXPECT_EQ(format_prometheus_value(1), "1");
  EXPECT_EQ(format_prometheus_value(-1), "-1");
  EXPECT_EQ(format_prometheus_value(0.5), "0.5");
  EXPECT_EQ(format_prometheus_value(21), "21");
  EXPECT_EQ(format_prometheus_value(100000), "100000");
  EXPECT_EQ(format_prometheus_value(123456.5), "123456.5");
  EXPECT_EQ(format_prometheus_value(1e6), "1e+06");
  EXPECT_EQ(format_prometheus_value(1234567), "1.234567e+06");
  EXPECT_EQ(format_prometheus_value(-2147483648.0), "-2.147483648e+09");
  EXPECT_EQ(format_prometheus_value(0.0001), "0.0001");
  EXPECT_EQ(format_prometheus_value(0.00001), "1e-05");
  EXPECT_EQ(format_prometheus_value(1.5e-7), "1.5e-07");
  EXPECT_EQ(format_prometheus_value(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(format_prometheus_value(1e21), "1e+21");
  EXPECT_EQ(format_prometheus_value(1e100), "1e+100");
  EXPECT_EQ(format_prometheus_value(std::nan("")), "NaN");
  EXPECT_EQ(format_prometheus_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_prometheus_value(-std::numeric_limits<double>::infinity()), "-Inf");
}

TimePoint at_ms(int64_t ms) {
  return TimePoint(milliseconds(ms));
}

CpuStats cpu(uint64_t ns, TimePoint t) {
  CpuStats s;
  s.time = t;
  s.usage_core_nano_seconds = ns;
  return s;
}

MemoryStats memory(uint64_t working_set, TimePoint t) {
  MemoryStats s;
  s.time = t;
  s.working_set_bytes = working_set;
  s.usage_bytes = working_set * 2;
  return s;
}

TEST(ResourceMetricsTest, RendersUpstreamsFamilies) {
  TimePoint t = at_ms(1'700'000'000'123);
  Summary s;
  s.node.node_name = "node-1";
  s.node.cpu = cpu(12'345'678'900'000, t);
  s.node.memory = memory(2'147'483'648, t);

  PodStats web;
  web.pod_ref = {"web", "default", "u1"};
  web.cpu = cpu(500'000'000, t);
  web.memory = memory(1'048'576, t);
  ContainerStats app;
  app.name = "app";
  app.start_time = TimePoint(std::chrono::seconds(1'700'000'200));
  app.cpu = cpu(250'000'000, t);
  app.memory = memory(524'288, t);
  web.containers.push_back(app);

  PodStats api;
  api.pod_ref = {"api", "a-ns", "u2"};
  api.cpu = cpu(1'000'000'000, at_ms(1'700'000'000'456));
  ContainerStats z;
  z.name = "z";
  z.memory = memory(100, t);  // no CPU figure, no start time: those samples are left out
  api.containers.push_back(z);
  s.pods = {web, api};

  EXPECT_EQ(render_resource_metrics(s),
            "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by "
            "the container in core-seconds\n"
            "# TYPE container_cpu_usage_seconds_total counter\n"
            "container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"}"
            " 0.25 1700000000123\n"
            "# HELP container_memory_working_set_bytes [STABLE] Current working set of the "
            "container in bytes\n"
            "# TYPE container_memory_working_set_bytes gauge\n"
            "container_memory_working_set_bytes{container=\"app\",namespace=\"default\",pod="
            "\"web\"} 524288 1700000000123\n"
            "container_memory_working_set_bytes{container=\"z\",namespace=\"a-ns\",pod=\"api\"} "
            "100 1700000000123\n"
            "# HELP container_start_time_seconds [STABLE] Start time of the container since unix "
            "epoch in seconds\n"
            "# TYPE container_start_time_seconds gauge\n"
            "container_start_time_seconds{container=\"app\",namespace=\"default\",pod=\"web\"} "
            "1.7000002e+09\n"
            "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the "
            "node in core-seconds\n"
            "# TYPE node_cpu_usage_seconds_total counter\n"
            "node_cpu_usage_seconds_total 12345.6789 1700000000123\n"
            "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in "
            "bytes\n"
            "# TYPE node_memory_working_set_bytes gauge\n"
            "node_memory_working_set_bytes 2.147483648e+09 1700000000123\n"
            "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod "
            "in core-seconds\n"
            "# TYPE pod_cpu_usage_seconds_total counter\n"
            "pod_cpu_usage_seconds_total{namespace=\"a-ns\",pod=\"api\"} 1 1700000000456\n"
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 0.5 1700000000123\n"
            "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes\n"
            "# TYPE pod_memory_working_set_bytes gauge\n"
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 1.048576e+06 "
            "1700000000123\n"
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting "
            "container metrics, 0 otherwise\n"
            "# TYPE resource_scrape_error gauge\n"
            "resource_scrape_error 0\n"
            "# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while "
            "getting container metrics, 0 otherwise\n"
            "# TYPE scrape_error gauge\n"
            "scrape_error 0\n");
}

TEST(ResourceMetricsTest, AnErrorLeavesOnlyTheScrapeErrors) {
  std::string text = render_resource_metrics(Status(StatusCode::kUnavailable, "no cgroups"));
  EXPECT_EQ(text,
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting "
            "container metrics, 0 otherwise\n"
            "# TYPE resource_scrape_error gauge\n"
            "resource_scrape_error 1\n"
            "# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while "
            "getting container metrics, 0 otherwise\n"
            "# TYPE scrape_error gauge\n"
            "scrape_error 1\n");
}

TEST(ResourceMetricsTest, EscapesLabelValues) {
  Summary s;
  PodStats pod;
  pod.pod_ref = {"we\"b\\x\ny", "default", "u1"};
  pod.cpu = cpu(1'000'000'000, at_ms(5));
  s.pods.push_back(pod);
  std::string text = render_resource_metrics(s);
  EXPECT_NE(text.find("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"we\\\"b\\\\x\\ny\"} "
                      "1 5\n"),
            std::string::npos)
      << text;
  // Without node figures there are no node samples (and no empty families).
  EXPECT_EQ(text.find("node_"), std::string::npos) << text;
  EXPECT_EQ(text.find("container_"), std::string::npos) << text;
}

}  // namespace
}  // namespace skiff::kubelet::stats
