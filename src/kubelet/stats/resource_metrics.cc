#include "kubelet/stats/resource_metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "base/log.h"

namespace skiff::kubelet::stats {
namespace {

struct Sample {
  std::vector<std::pair<std::string, std::string>> labels;  // by label name
  double value = 0;
  std::optional<int64_t> timestamp_ms;
};

struct Family {
  const char* help = "";
  const char* type = "";
  std::vector<Sample> samples;
};

constexpr char kNodeCpu[] = "node_cpu_usage_seconds_total";
constexpr char kNodeMemory[] = "node_memory_working_set_bytes";
constexpr char kContainerCpu[] = "container_cpu_usage_seconds_total";
constexpr char kContainerMemory[] = "container_memory_working_set_bytes";
constexpr char kContainerStart[] = "container_start_time_seconds";
constexpr char kPodCpu[] = "pod_cpu_usage_seconds_total";
constexpr char kPodMemory[] = "pod_memory_working_set_bytes";
constexpr char kResourceScrapeError[] = "resource_scrape_error";
constexpr char kScrapeError[] = "scrape_error";

// Every family's help (with its stability level, as upstream's metrics framework prefixes it)
// and type.
std::map<std::string, Family> families() {
  std::map<std::string, Family> f;
  auto add = [&f](const char* name, const char* help, const char* type) {
    f[name] = Family{help, type, {}};
  };
  add(kNodeCpu, "[STABLE] Cumulative cpu time consumed by the node in core-seconds", "counter");
  add(kNodeMemory, "[STABLE] Current working set of the node in bytes", "gauge");
  add(kContainerCpu, "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
      "counter");
  add(kContainerMemory, "[STABLE] Current working set of the container in bytes", "gauge");
  add(kContainerStart, "[STABLE] Start time of the container since unix epoch in seconds", "gauge");
  add(kPodCpu, "[STABLE] Cumulative cpu time consumed by the pod in core-seconds", "counter");
  add(kPodMemory, "[STABLE] Current working set of the pod in bytes", "gauge");
  add(kResourceScrapeError,
      "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise", "gauge");
  add(kScrapeError,
      "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container "
      "metrics, 0 otherwise",
      "gauge");
  return f;
}

int64_t millis(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void add_cpu(Family& f, const std::optional<CpuStats>& cpu,
             std::vector<std::pair<std::string, std::string>> labels) {
  if (!cpu || !cpu->usage_core_nano_seconds) return;
  f.samples.push_back({std::move(labels), static_cast<double>(*cpu->usage_core_nano_seconds) / 1e9,
                       millis(cpu->time)});
}

void add_memory(Family& f, const std::optional<MemoryStats>& memory,
                std::vector<std::pair<std::string, std::string>> labels) {
  if (!memory || !memory->working_set_bytes) return;
  f.samples.push_back(
      {std::move(labels), static_cast<double>(*memory->working_set_bytes), millis(memory->time)});
}

}  // namespace

std::string format_prometheus_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == 0) return "0";
  // The shortest digits that read back as `value`, then Go's 'g' layout: exponent form when the
  // decimal exponent is below -4 or at least 6 (Go's rule for the shortest precision).
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(end - buf));
  bool negative = !sci.empty() && sci.front() == '-';
  if (negative) sci.remove_prefix(1);
  size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits += c;
  }
  int exp = 0;
  std::string_view exp_text = sci.substr(e + 1);
  if (!exp_text.empty() && exp_text.front() == '+') exp_text.remove_prefix(1);
  std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exp);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();

  std::string out = negative ? "-" : "";
  int nd = static_cast<int>(digits.size());
  if (exp < -4 || exp >= 6) {
    out += digits[0];
    if (nd > 1) out += "." + digits.substr(1);
    out += exp < 0 ? "e-" : "e+";
    int magnitude = exp < 0 ? -exp : exp;
    if (magnitude < 10) out += '0';
    out += std::to_string(magnitude);
    return out;
  }
  int dp = exp + 1;  // digits before the decimal point
  if (dp <= 0) {
    out += "0." + std::string(static_cast<size_t>(-dp), '0') + digits;
  } else if (dp >= nd) {
    out += digits + std::string(static_cast<size_t>(dp - nd), '0');
  } else {
    out += digits.substr(0, static_cast<size_t>(dp)) + "." + digits.substr(static_cast<size_t>(dp));
  }
  return out;
}

std::string render_resource_metrics(const Result<Summary>& summary) {
  std::map<std::string, Family> f = families();
  bool failed = !summary.is_ok();
  if (!failed) {
    const NodeStats& node = summary->node;
    add_cpu(f[kNodeCpu], node.cpu, {});
    add_memory(f[kNodeMemory], node.memory, {});
    for (const PodStats& pod : summary->pods) {
      const std::string& ns = pod.pod_ref.namespace_name;
      const std::string& name = pod.pod_ref.name;
      for (const ContainerStats& c : pod.containers) {
        std::vector<std::pair<std::string, std::string>> labels = {
            {"container", c.name}, {"namespace", ns}, {"pod", name}};
        if (c.start_time.time_since_epoch().count() > 0) {
          double start = std::chrono::duration<double>(c.start_time.time_since_epoch()).count();
          f[kContainerStart].samples.push_back({labels, start, std::nullopt});
        }
        add_cpu(f[kContainerCpu], c.cpu, labels);
        add_memory(f[kContainerMemory], c.memory, labels);
      }
      add_cpu(f[kPodCpu], pod.cpu, {{"namespace", ns}, {"pod", name}});
      add_memory(f[kPodMemory], pod.memory, {{"namespace", ns}, {"pod", name}});
    }
  }
  f[kResourceScrapeError].samples.push_back({{}, failed ? 1.0 : 0.0, std::nullopt});
  f[kScrapeError].samples.push_back({{}, failed ? 1.0 : 0.0, std::nullopt});

  std::string out;
  for (auto& [name, family] : f) {  // std::map: sorted by name
    if (family.samples.empty()) continue;
    std::stable_sort(family.samples.begin(), family.samples.end(),
                     [](const Sample& a, const Sample& b) { return a.labels < b.labels; });
    out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + " " + family.type + "\n";
    for (const Sample& s : family.samples) {
      out += name;
      if (!s.labels.empty()) {
        out += '{';
        for (size_t i = 0; i < s.labels.size(); ++i) {
          if (i > 0) out += ',';
          out += s.labels[i].first + "=\"" + escape_label_value(s.labels[i].second) + "\"";
        }
        out += '}';
      }
      out += " " + format_prometheus_value(s.value);
      if (s.timestamp_ms) out += " " + std::to_string(*s.timestamp_ms);
      out += '\n';
    }
  }
  return out;
}

std::string resource_metrics(StatsProvider& provider) {
  Result<Summary> summary = provider.summary(/*only_cpu_and_memory=*/true);
  if (!summary.is_ok()) {
    SKIFF_LOG_ERROR("kubelet: resource metrics: {}", summary.status().to_string());
  }
  return render_resource_metrics(summary);
}

}  // namespace skiff::kubelet::stats
