#pragma once

// /metrics/resource: the kubelet's resource metrics in the Prometheus text format (0.0.4), as
// upstream's kubelet renders them from its CPU and memory stats — node_cpu_usage_seconds_total,
// node_memory_working_set_bytes, container_cpu_usage_seconds_total,
// container_memory_working_set_bytes, container_start_time_seconds, pod_cpu_usage_seconds_total,
// pod_memory_working_set_bytes (labels container, namespace, pod), and the scrape error gauges
// resource_scrape_error and scrape_error (its deprecated older name). Samples carry the time of
// their stat as a millisecond timestamp; families are sorted by name and samples by labels, and
// a family without samples is left out, as the Prometheus Go client writes them.
//
// Thread-safety: pure functions (resource_metrics calls the provider, see its contract).

#include <string>

#include "base/status.h"
#include "kubelet/stats/stats_provider.h"
#include "kubelet/stats/summary.h"

namespace skiff::kubelet::stats {

// The Content-Type of the text format.
inline constexpr char kPrometheusTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// The metrics of `summary`; an error gives only the scrape error gauges, set to 1.
std::string render_resource_metrics(const Result<Summary>& summary);

// render_resource_metrics(provider.summary(only_cpu_and_memory = true)).
std::string resource_metrics(StatsProvider& provider);

// A sample value as the Prometheus Go client writes it (Go's strconv 'g' with the shortest
// precision: "0.5", "21", "1.234567e+06", "NaN", "+Inf").
std::string format_prometheus_value(double value);

}  // namespace skiff::kubelet::stats
