#include "apiserver/tables.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

namespace skiff::apiserver {
namespace {

using nlohmann::json;
using TimePoint = std::chrono::system_clock::time_point;

// ---------------------------------------------------------------------------------------------
// Shape-tolerant accessors: a missing key or a value of the wrong type reads as empty.

const json& empty_json() {
  static const json kNull;
  return kNull;
}

const json& empty_array() {
  static const json kArray = json::array();
  return kArray;
}

// The value at a path of object keys; null when any step is missing or not an object.
const json& at(const json& obj, std::initializer_list<std::string_view> path) {
  const json* cur = &obj;
  for (std::string_view key : path) {
    if (!cur->is_object()) return empty_json();
    auto it = cur->find(key);
    if (it == cur->end()) return empty_json();
    cur = &*it;
  }
  return *cur;
}

std::string str(const json& v) {
  return v.is_string() ? v.get<std::string>() : std::string();
}

std::string str(const json& obj, std::initializer_list<std::string_view> path) {
  return str(at(obj, path));
}

int64_t num(const json& v, int64_t fallback = 0) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (d >= -9.2e18 && d <= 9.2e18) return static_cast<int64_t>(d);  // false for NaN
  }
  return fallback;
}

// Compact JSON text that never throws (invalid UTF-8 is replaced).
std::string dump(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

int64_t num(const json& obj, std::initializer_list<std::string_view> path, int64_t fallback = 0) {
  return num(at(obj, path), fallback);
}

bool boolean(const json& obj, std::initializer_list<std::string_view> path) {
  const json& v = at(obj, path);
  return v.is_boolean() && v.get<bool>();
}

const json& arr(const json& obj, std::initializer_list<std::string_view> path) {
  const json& v = at(obj, path);
  return v.is_array() ? v : empty_array();
}

bool has_object(const json& obj, std::initializer_list<std::string_view> path) {
  return at(obj, path).is_object();
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim_space(const std::string& s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string ratio(int64_t a, int64_t b) {
  return std::to_string(a) + "/" + std::to_string(b);
}

// ---------------------------------------------------------------------------------------------
// Time

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool read_digits(std::string_view s, size_t& pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return false;
    out = out * 10 + (c - '0');
  }
  pos += n;
  return true;
}

bool expect(std::string_view s, size_t& pos, char c) {
  if (pos >= s.size() || s[pos] != c) return false;
  ++pos;
  return true;
}

// RFC 3339 as Kubernetes writes Time and MicroTime: "2024-05-01T10:00:00Z",
// "2024-05-01T10:00:00.123456Z", or with a "+02:00" offset.
std::optional<TimePoint> parse_time(const json& v) {
  if (!v.is_string()) return std::nullopt;
  const std::string& s = v.get_ref<const std::string&>();
  size_t pos = 0;
  int year, month, day, hour, minute, second;
  if (!read_digits(s, pos, 4, year) || !expect(s, pos, '-') || !read_digits(s, pos, 2, month) ||
      !expect(s, pos, '-') || !read_digits(s, pos, 2, day)) {
    return std::nullopt;
  }
  if (pos >= s.size() || (s[pos] != 'T' && s[pos] != 't' && s[pos] != ' ')) return std::nullopt;
  ++pos;
  if (!read_digits(s, pos, 2, hour) || !expect(s, pos, ':') || !read_digits(s, pos, 2, minute) ||
      !expect(s, pos, ':') || !read_digits(s, pos, 2, second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    return std::nullopt;
  }
  int64_t nanos = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int64_t scale = 100000000;
    size_t start = pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      nanos += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return std::nullopt;
  }
  int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int oh, om;
    if (!read_digits(s, pos, 2, oh) || !expect(s, pos, ':') || !read_digits(s, pos, 2, om)) {
      return std::nullopt;
    }
    offset = sign * (oh * 3600 + om * 60);
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  int64_t secs =
      days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
      hour * 3600 + minute * 60 + second - offset;
  auto since_epoch = std::chrono::seconds(secs) + std::chrono::nanoseconds(nanos);
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(since_epoch));
}

// translateTimestampSince: "<unknown>" for a missing (zero) timestamp.
std::string since(const json& ts, TimePoint now) {
  auto t = parse_time(ts);
  if (!t) return "<unknown>";
  return human_duration(now - *t);
}

// ---------------------------------------------------------------------------------------------
// Common column builders

TableColumn name_column(int priority = 0) {
  return {"Name", "string", "name", priority, [](const json& o) -> json {
            return str(o, {"metadata", "name"});
          }};
}

TableColumn age_column(const TableClock& clock) {
  return {"Age", "string", "", 0, [clock](const json& o) -> json {
            return since(at(o, {"metadata", "creationTimestamp"}), clock());
          }};
}

TableColumn string_column(std::string name, int priority,
                          std::function<std::string(const json&)> fn) {
  return {std::move(name), "string", "", priority,
          [fn = std::move(fn)](const json& o) -> json { return fn(o); }};
}

TableColumn integer_column(std::string name, std::function<int64_t(const json&)> fn) {
  return {std::move(name), "integer", "", 0,
          [fn = std::move(fn)](const json& o) -> json { return fn(o); }};
}

// A column whose declared type is `type` but whose cell can be any JSON value (upstream declares
// some integer or boolean cells as "string" columns).
TableColumn raw_column(std::string name, std::string type, int priority,
                       std::function<json(const json&)> fn) {
  return {std::move(name), std::move(type), "", priority, std::move(fn)};
}

// layoutContainerCells: names and images, comma separated.
std::string container_names(const json& pod_spec) {
  std::vector<std::string> out;
  for (const json& c : arr(pod_spec, {"containers"})) out.push_back(str(c, {"name"}));
  return join(out, ",");
}

std::string container_images(const json& pod_spec) {
  std::vector<std::string> out;
  for (const json& c : arr(pod_spec, {"containers"})) out.push_back(str(c, {"image"}));
  return join(out, ",");
}

void add_container_columns(std::vector<TableColumn>& cols,
                           std::initializer_list<std::string_view> pod_spec_path) {
  std::vector<std::string> path(pod_spec_path.begin(), pod_spec_path.end());
  auto spec_of = [path](const json& o) -> const json& {
    const json* cur = &o;
    for (const std::string& k : path) {
      if (!cur->is_object()) return empty_json();
      auto it = cur->find(k);
      if (it == cur->end()) return empty_json();
      cur = &*it;
    }
    return *cur;
  };
  cols.push_back(string_column("Containers", 1,
                               [spec_of](const json& o) { return container_names(spec_of(o)); }));
  cols.push_back(string_column("Images", 1,
                               [spec_of](const json& o) { return container_images(spec_of(o)); }));
}

// labels.FormatLabels: sorted "k=v" pairs, "<none>" when empty.
std::string format_labels(const json& m) {
  if (!m.is_object() || m.empty()) return "<none>";
  std::vector<std::string> parts;
  for (auto it = m.begin(); it != m.end(); ++it) {  // nlohmann objects iterate sorted by key
    parts.push_back(it.key() + "=" + (it->is_string() ? it->get<std::string>() : dump(*it)));
  }
  return join(parts, ",");
}

// metav1.LabelSelectorAsSelector(...).String(); nullopt when the selector is invalid.
std::optional<std::string> selector_string(const json& sel) {
  if (sel.is_null()) return std::string();
  if (!sel.is_object()) return std::nullopt;
  struct Req {
    std::string key;
    std::string text;
  };
  std::vector<Req> reqs;
  const json& ml = at(sel, {"matchLabels"});
  if (ml.is_object()) {
    for (auto it = ml.begin(); it != ml.end(); ++it) {
      if (!it->is_string()) return std::nullopt;
      reqs.push_back({it.key(), it.key() + "=" + it->get<std::string>()});
    }
  } else if (!ml.is_null()) {
    return std::nullopt;
  }
  const json& me = at(sel, {"matchExpressions"});
  if (me.is_array()) {
    for (const json& e : me) {
      std::string key = str(e, {"key"});
      std::string op = str(e, {"operator"});
      std::vector<std::string> values;
      for (const json& v : arr(e, {"values"})) values.push_back(str(v));
      std::sort(values.begin(), values.end());
      if (op == "In" || op == "NotIn") {
        if (values.empty()) return std::nullopt;
        reqs.push_back({key, key + (op == "In" ? " in (" : " notin (") + join(values, ",") + ")"});
      } else if (op == "Exists" || op == "DoesNotExist") {
        if (!values.empty()) return std::nullopt;
        reqs.push_back({key, (op == "Exists" ? "" : "!") + key});
      } else {
        return std::nullopt;
      }
    }
  } else if (!me.is_null()) {
    return std::nullopt;
  }
  std::stable_sort(reqs.begin(), reqs.end(),
                   [](const Req& a, const Req& b) { return a.key < b.key; });
  std::vector<std::string> parts;
  for (const Req& r : reqs) parts.push_back(r.text);
  return join(parts, ",");
}

// metav1.FormatLabelSelector: "<none>" when empty, "<error>" when invalid.
std::string format_label_selector(const json& sel) {
  auto s = selector_string(sel);
  if (!s) return "<error>";
  return s->empty() ? "<none>" : *s;
}

std::string join_host_port(const std::string& host, int64_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string list_with_more(const std::vector<std::string>& list, bool more, int count, int max) {
  std::string ret = join(list, ",");
  if (more) return ret + " + " + std::to_string(count - max) + " more...";
  if (ret.empty()) return "<unset>";
  return ret;
}

bool has_condition(const json& obj, std::string_view type, std::string_view status = "True") {
  for (const json& c : arr(obj, {"status", "conditions"})) {
    if (str(c, {"type"}) == type) return str(c, {"status"}) == status;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Pods

struct PodSummary {
  std::string ready;
  std::string status;
  std::string restarts;
};

void note_restart(const json& status, std::optional<TimePoint>& latest) {
  auto t = parse_time(at(status, {"lastState", "terminated", "finishedAt"}));
  if (t && (!latest || *latest < *t)) latest = t;
}

// The READY / STATUS / RESTARTS cells of upstream's pod printer.
PodSummary summarize_pod(const json& pod, TimePoint now) {
  const std::string phase = str(pod, {"status", "phase"});
  std::string reason = phase;
  if (!str(pod, {"status", "reason"}).empty()) reason = str(pod, {"status", "reason"});
  for (const json& c : arr(pod, {"status", "conditions"})) {
    if (str(c, {"type"}) == "PodScheduled" && str(c, {"reason"}) == "SchedulingGated") {
      reason = "SchedulingGated";
    }
  }

  int64_t total = static_cast<int64_t>(arr(pod, {"spec", "containers"}).size());
  int64_t ready = 0;
  const json& init_specs = arr(pod, {"spec", "initContainers"});
  std::set<std::string> sidecars;  // restartable init containers
  for (const json& c : init_specs) {
    if (str(c, {"restartPolicy"}) == "Always") {
      sidecars.insert(str(c, {"name"}));
      ++total;
    }
  }

  int64_t restarts = 0;
  int64_t sidecar_restarts = 0;
  std::optional<TimePoint> last_restart;
  std::optional<TimePoint> last_sidecar_restart;
  bool initializing = false;
  const json& init_statuses = arr(pod, {"status", "initContainerStatuses"});
  for (size_t i = 0; i < init_statuses.size(); ++i) {
    const json& cs = init_statuses[i];
    const bool sidecar = sidecars.count(str(cs, {"name"})) > 0;
    restarts += num(cs, {"restartCount"});
    note_restart(cs, last_restart);
    if (sidecar) {
      sidecar_restarts += num(cs, {"restartCount"});
      note_restart(cs, last_sidecar_restart);
    }
    const bool terminated = has_object(cs, {"state", "terminated"});
    const bool waiting = has_object(cs, {"state", "waiting"});
    if (terminated && num(cs, {"state", "terminated", "exitCode"}) == 0) continue;
    if (sidecar && boolean(cs, {"started"})) {
      if (boolean(cs, {"ready"})) ++ready;
      continue;
    }
    if (terminated) {
      std::string r = str(cs, {"state", "terminated", "reason"});
      if (!r.empty()) {
        reason = "Init:" + r;
      } else if (int64_t sig = num(cs, {"state", "terminated", "signal"}); sig != 0) {
        reason = "Init:Signal:" + std::to_string(sig);
      } else {
        reason = "Init:ExitCode:" + std::to_string(num(cs, {"state", "terminated", "exitCode"}));
      }
    } else if (waiting && !str(cs, {"state", "waiting", "reason"}).empty() &&
               str(cs, {"state", "waiting", "reason"}) != "PodInitializing") {
      reason = "Init:" + str(cs, {"state", "waiting", "reason"});
    } else {
      reason = "Init:" + std::to_string(i) + "/" + std::to_string(init_specs.size());
    }
    initializing = true;
    break;
  }

  if (!initializing || has_condition(pod, "Initialized")) {
    restarts = sidecar_restarts;
    last_restart = last_sidecar_restart;
    bool has_running = false;
    const json& statuses = arr(pod, {"status", "containerStatuses"});
    for (size_t i = statuses.size(); i-- > 0;) {
      const json& cs = statuses[i];
      restarts += num(cs, {"restartCount"});
      note_restart(cs, last_restart);
      const std::string waiting_reason = str(cs, {"state", "waiting", "reason"});
      const bool terminated = has_object(cs, {"state", "terminated"});
      const std::string terminated_reason = str(cs, {"state", "terminated", "reason"});
      if (has_object(cs, {"state", "waiting"}) && !waiting_reason.empty()) {
        reason = waiting_reason;
      } else if (terminated && !terminated_reason.empty()) {
        reason = terminated_reason;
      } else if (terminated) {
        if (int64_t sig = num(cs, {"state", "terminated", "signal"}); sig != 0) {
          reason = "Signal:" + std::to_string(sig);
        } else {
          reason = "ExitCode:" + std::to_string(num(cs, {"state", "terminated", "exitCode"}));
        }
      } else if (boolean(cs, {"ready"}) && has_object(cs, {"state", "running"})) {
        has_running = true;
        ++ready;
      }
    }
    // A container that completed while another still runs does not make the pod "Completed".
    if (reason == "Completed" && has_running) {
      reason = has_condition(pod, "Ready") ? "Running" : "NotReady";
    }
  }

  const bool deleting = !at(pod, {"metadata", "deletionTimestamp"}).is_null();
  if (deleting && str(pod, {"status", "reason"}) == "NodeLost") {
    reason = "Unknown";
  } else if (deleting && phase != "Succeeded" && phase != "Failed") {
    reason = "Terminating";
  }

  std::string restarts_cell = std::to_string(restarts);
  if (restarts != 0 && last_restart) {
    restarts_cell += " (" + human_duration(now - *last_restart) + " ago)";
  }
  return {ratio(ready, total), reason, restarts_cell};
}

std::string or_none(std::string s) {
  return s.empty() ? "<none>" : s;
}

std::vector<TableColumn> pod_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Ready", 0,
                               [clock](const json& o) { return summarize_pod(o, clock()).ready; }));
  cols.push_back(string_column(
      "Status", 0, [clock](const json& o) { return summarize_pod(o, clock()).status; }));
  cols.push_back(string_column(
      "Restarts", 0, [clock](const json& o) { return summarize_pod(o, clock()).restarts; }));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("IP", 1, [](const json& o) {
    // Like upstream's v1 conversion, a lone status.podIP stands in for status.podIPs.
    const json& ips = arr(o, {"status", "podIPs"});
    return or_none(ips.empty() ? str(o, {"status", "podIP"}) : str(ips[0], {"ip"}));
  }));
  cols.push_back(string_column("Node", 1, [](const json& o) {
    return or_none(str(o, {"spec", "nodeName"}));
  }));
  cols.push_back(string_column("Nominated Node", 1, [](const json& o) {
    return or_none(str(o, {"status", "nominatedNodeName"}));
  }));
  cols.push_back(string_column("Readiness Gates", 1, [](const json& o) -> std::string {
    const json& gates = arr(o, {"spec", "readinessGates"});
    if (gates.empty()) return "<none>";
    int64_t true_count = 0;
    for (const json& g : gates) {
      const std::string type = str(g, {"conditionType"});
      for (const json& c : arr(o, {"status", "conditions"})) {
        if (str(c, {"type"}) == type) {
          if (str(c, {"status"}) == "True") ++true_count;
          break;
        }
      }
    }
    return ratio(true_count, static_cast<int64_t>(gates.size()));
  }));
  return cols;
}

// ---------------------------------------------------------------------------------------------
// Workloads

std::vector<TableColumn> pod_template_columns() {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Containers", 0, [](const json& o) {
    return container_names(at(o, {"template", "spec"}));
  }));
  cols.push_back(string_column("Images", 0, [](const json& o) {
    return container_images(at(o, {"template", "spec"}));
  }));
  cols.push_back(string_column("Pod Labels", 0, [](const json& o) {
    return format_labels(at(o, {"template", "metadata", "labels"}));
  }));
  return cols;
}

// ReplicaSets and ReplicationControllers share a layout; only the selector's shape differs.
std::vector<TableColumn> replica_columns(const TableClock& clock, bool map_selector) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(integer_column("Desired", [](const json& o) {
    return num(o, {"spec", "replicas"}, 1);
  }));
  cols.push_back(integer_column("Current", [](const json& o) {
    return num(o, {"status", "replicas"});
  }));
  cols.push_back(integer_column("Ready", [](const json& o) {
    return num(o, {"status", "readyReplicas"});
  }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "template", "spec"});
  cols.push_back(string_column("Selector", 1, [map_selector](const json& o) {
    const json& sel = at(o, {"spec", "selector"});
    return map_selector ? format_labels(sel) : format_label_selector(sel);
  }));
  return cols;
}

std::vector<TableColumn> deployment_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Ready", 0, [](const json& o) {
    return ratio(num(o, {"status", "readyReplicas"}), num(o, {"spec", "replicas"}, 1));
  }));
  cols.push_back(raw_column("Up-to-date", "string", 0, [](const json& o) -> json {
    return num(o, {"status", "updatedReplicas"});
  }));
  cols.push_back(raw_column("Available", "string", 0, [](const json& o) -> json {
    return num(o, {"status", "availableReplicas"});
  }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "template", "spec"});
  cols.push_back(string_column("Selector", 1, [](const json& o) {
    auto s = selector_string(at(o, {"spec", "selector"}));
    return s ? *s : std::string("<invalid>");
  }));
  return cols;
}

std::vector<TableColumn> stateful_set_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Ready", 0, [](const json& o) {
    return ratio(num(o, {"status", "readyReplicas"}), num(o, {"spec", "replicas"}, 1));
  }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "template", "spec"});
  return cols;
}

std::vector<TableColumn> daemon_set_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  const std::pair<const char*, const char*> counts[] = {{"Desired", "desiredNumberScheduled"},
                                                        {"Current", "currentNumberScheduled"},
                                                        {"Ready", "numberReady"},
                                                        {"Up-to-date", "updatedNumberScheduled"},
                                                        {"Available", "numberAvailable"}};
  for (const auto& [column, field] : counts) {
    std::string f = field;
    cols.push_back(integer_column(column, [f](const json& o) { return num(o, {"status", f}); }));
  }
  cols.push_back(string_column("Node Selector", 0, [](const json& o) {
    return format_labels(at(o, {"spec", "template", "spec", "nodeSelector"}));
  }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "template", "spec"});
  cols.push_back(string_column("Selector", 1, [](const json& o) {
    return format_label_selector(at(o, {"spec", "selector"}));
  }));
  return cols;
}

std::string job_status(const json& job) {
  if (has_condition(job, "Complete")) return "Complete";
  if (has_condition(job, "Failed")) return "Failed";
  if (!at(job, {"metadata", "deletionTimestamp"}).is_null()) return "Terminating";
  if (has_condition(job, "Suspended")) return "Suspended";
  if (has_condition(job, "FailureTarget")) return "FailureTarget";
  return "Running";
}

std::string job_completions(const json& job) {
  const int64_t succeeded = num(job, {"status", "succeeded"});
  const json& completions = at(job, {"spec", "completions"});
  if (completions.is_number()) return ratio(succeeded, num(completions));
  const int64_t parallelism = num(job, {"spec", "parallelism"});
  if (parallelism > 1) return ratio(succeeded, 1) + " of " + std::to_string(parallelism);
  return ratio(succeeded, 1);
}

std::string job_duration(const json& job, TimePoint now) {
  auto start = parse_time(at(job, {"status", "startTime"}));
  if (!start) return "";
  auto end = parse_time(at(job, {"status", "completionTime"}));
  return human_duration((end ? *end : now) - *start);
}

std::vector<TableColumn> job_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Status", 0, job_status));
  cols.push_back(string_column("Completions", 0, job_completions));
  cols.push_back(
      string_column("Duration", 0, [clock](const json& o) { return job_duration(o, clock()); }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "template", "spec"});
  cols.push_back(string_column("Selector", 1, [](const json& o) {
    return format_label_selector(at(o, {"spec", "selector"}));
  }));
  return cols;
}

std::vector<TableColumn> cron_job_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Schedule", 0, [](const json& o) {
    return str(o, {"spec", "schedule"});
  }));
  cols.push_back(string_column("Timezone", 0, [](const json& o) {
    return or_none(str(o, {"spec", "timeZone"}));
  }));
  // Upstream declares a boolean column but sends "True"/"False"/"<unset>".
  cols.push_back(raw_column("Suspend", "boolean", 0, [](const json& o) -> json {
    const json& v = at(o, {"spec", "suspend"});
    if (!v.is_boolean()) return "<unset>";
    return v.get<bool>() ? "True" : "False";
  }));
  cols.push_back(integer_column("Active", [](const json& o) {
    return static_cast<int64_t>(arr(o, {"status", "active"}).size());
  }));
  cols.push_back(string_column("Last Schedule", 0, [clock](const json& o) -> std::string {
    const json& t = at(o, {"status", "lastScheduleTime"});
    if (t.is_null()) return "<none>";
    return since(t, clock());
  }));
  cols.push_back(age_column(clock));
  add_container_columns(cols, {"spec", "jobTemplate", "spec", "template", "spec"});
  cols.push_back(string_column("Selector", 1, [](const json& o) {
    return format_label_selector(at(o, {"spec", "jobTemplate", "spec", "selector"}));
  }));
  return cols;
}

std::vector<TableColumn> controller_revision_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Controller", 0, [](const json& o) -> std::string {
    for (const json& ref : arr(o, {"metadata", "ownerReferences"})) {
      if (!boolean(ref, {"controller"})) continue;
      std::string api_version = str(ref, {"apiVersion"});
      size_t slash = api_version.find('/');
      std::string group = slash == std::string::npos ? "" : api_version.substr(0, slash);
      std::string kind = str(ref, {"kind"});
      std::string name = str(ref, {"name"});
      if (kind.empty() && group.empty()) return name;
      return lower(group.empty() ? kind : kind + "." + group) + "/" + name;
    }
    return "<none>";
  }));
  cols.push_back(raw_column("Revision", "string", 0,
                            [](const json& o) -> json { return num(o, {"revision"}); }));
  cols.push_back(age_column(clock));
  return cols;
}

// ---------------------------------------------------------------------------------------------
// Services and endpoints

std::string service_external_ip(const json& svc) {
  const std::string type = str(svc, {"spec", "type"});
  std::vector<std::string> external;
  for (const json& ip : arr(svc, {"spec", "externalIPs"})) external.push_back(str(ip));
  if (type == "ClusterIP" || type == "NodePort") {
    return external.empty() ? "<none>" : join(external, ",");
  }
  if (type == "LoadBalancer") {
    std::set<std::string> lb;  // sorted and de-duplicated, as upstream's string set
    for (const json& ing : arr(svc, {"status", "loadBalancer", "ingress"})) {
      if (!str(ing, {"ip"}).empty()) {
        lb.insert(str(ing, {"ip"}));
      } else if (!str(ing, {"hostname"}).empty()) {
        lb.insert(str(ing, {"hostname"}));
      }
    }
    std::vector<std::string> results(lb.begin(), lb.end());
    if (!external.empty()) {
      results.insert(results.end(), external.begin(), external.end());
      return join(results, ",");
    }
    return results.empty() ? "<pending>" : join(results, ",");
  }
  if (type == "ExternalName") return str(svc, {"spec", "externalName"});
  return "<unknown>";
}

std::string service_ports(const json& svc) {
  std::vector<std::string> pieces;
  for (const json& p : arr(svc, {"spec", "ports"})) {
    std::string piece = std::to_string(num(p, {"port"}));
    if (int64_t node_port = num(p, {"nodePort"}); node_port > 0) {
      piece += ":" + std::to_string(node_port);
    }
    pieces.push_back(piece + "/" + str(p, {"protocol"}));
  }
  return pieces.empty() ? "<none>" : join(pieces, ",");
}

std::vector<TableColumn> service_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Type", 0, [](const json& o) { return str(o, {"spec", "type"}); }));
  cols.push_back(string_column("Cluster-IP", 0, [](const json& o) {
    // Like upstream's v1 conversion, a lone spec.clusterIP stands in for spec.clusterIPs.
    const json& ips = arr(o, {"spec", "clusterIPs"});
    return or_none(ips.empty() ? str(o, {"spec", "clusterIP"}) : str(ips[0]));
  }));
  cols.push_back(string_column("External-IP", 0, service_external_ip));
  cols.push_back(string_column("Port(s)", 0, service_ports));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("Selector", 1, [](const json& o) {
    return format_labels(at(o, {"spec", "selector"}));
  }));
  return cols;
}

// formatEndpoints: up to three "ip:port" entries, then "+ N more...".
std::string format_endpoints(const json& ep) {
  const json& subsets = arr(ep, {"subsets"});
  if (subsets.empty()) return "<none>";
  constexpr int kMax = 3;
  std::vector<std::string> list;
  bool more = false;
  int count = 0;
  for (const json& ss : subsets) {
    const json& addresses = arr(ss, {"addresses"});
    const json& ports = arr(ss, {"ports"});
    if (ports.empty()) {  // headless services may have no ports
      count += static_cast<int>(addresses.size());
      for (const json& a : addresses) {
        if (static_cast<int>(list.size()) == kMax) {
          more = true;
          break;
        }
        list.push_back(str(a, {"ip"}));
      }
      continue;
    }
    for (const json& p : ports) {
      count += static_cast<int>(addresses.size());
      for (const json& a : addresses) {
        if (static_cast<int>(list.size()) == kMax) {
          more = true;
          break;
        }
        list.push_back(join_host_port(str(a, {"ip"}), num(p, {"port"})));
      }
    }
  }
  std::string ret = join(list, ",");
  if (more) return ret + " + " + std::to_string(count - kMax) + " more...";
  return ret;
}

std::vector<TableColumn> endpoints_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Endpoints", 0, format_endpoints));
  cols.push_back(age_column(clock));
  return cols;
}

std::vector<TableColumn> endpoint_slice_columns(const TableClock& clock) {
  constexpr int kMax = 3;
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(
      string_column("AddressType", 0, [](const json& o) { return str(o, {"addressType"}); }));
  cols.push_back(string_column("Ports", 0, [](const json& o) {
    std::vector<std::string> list;
    bool more = false;
    int count = 0;
    for (const json& p : arr(o, {"ports"})) {
      if (static_cast<int>(list.size()) < kMax) {
        const json& port = at(p, {"port"});
        const json& name = at(p, {"name"});
        if (port.is_number()) {
          list.push_back(std::to_string(num(port)));
        } else if (name.is_string()) {
          list.push_back(str(name));
        } else {
          list.push_back("*");
        }
      } else if (static_cast<int>(list.size()) == kMax) {
        more = true;
      }
      ++count;
    }
    return list_with_more(list, more, count, kMax);
  }));
  cols.push_back(string_column("Endpoints", 0, [](const json& o) {
    std::vector<std::string> list;
    bool more = false;
    int count = 0;
    for (const json& e : arr(o, {"endpoints"})) {
      for (const json& a : arr(e, {"addresses"})) {
        if (static_cast<int>(list.size()) < kMax) {
          list.push_back(str(a));
        } else if (static_cast<int>(list.size()) == kMax) {
          more = true;
        }
        ++count;
      }
    }
    return list_with_more(list, more, count, kMax);
  }));
  cols.push_back(age_column(clock));
  return cols;
}

// ---------------------------------------------------------------------------------------------
// Cluster objects

std::string node_status(const json& node) {
  std::vector<std::string> status;
  const json* ready = nullptr;  // the last Ready condition wins, as in upstream's map
  for (const json& c : arr(node, {"status", "conditions"})) {
    if (str(c, {"type"}) == "Ready") ready = &c;
  }
  if (ready) {
    status.push_back(str(*ready, {"status"}) == "True" ? "Ready" : "NotReady");
  } else {
    status.push_back("Unknown");
  }
  if (boolean(node, {"spec", "unschedulable"})) status.push_back("SchedulingDisabled");
  return join(status, ",");
}

std::string node_roles(const json& node) {
  static constexpr std::string_view kRolePrefix = "node-role.kubernetes.io/";
  std::set<std::string> roles;
  const json& labels = at(node, {"metadata", "labels"});
  if (labels.is_object()) {
    for (auto it = labels.begin(); it != labels.end(); ++it) {
      const std::string& key = it.key();
      if (key.rfind(kRolePrefix, 0) == 0) {
        if (key.size() > kRolePrefix.size()) roles.insert(key.substr(kRolePrefix.size()));
      } else if (key == "kubernetes.io/role" && !str(*it).empty()) {
        roles.insert(str(*it));
      }
    }
  }
  if (roles.empty()) return "<none>";
  return join(std::vector<std::string>(roles.begin(), roles.end()), ",");
}

std::string node_address(const json& node, std::string_view type) {
  for (const json& a : arr(node, {"status", "addresses"})) {
    if (str(a, {"type"}) == type) return str(a, {"address"});
  }
  return "<none>";
}

std::vector<TableColumn> node_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Status", 0, node_status));
  cols.push_back(string_column("Roles", 0, node_roles));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("Version", 0, [](const json& o) {
    return str(o, {"status", "nodeInfo", "kubeletVersion"});
  }));
  cols.push_back(
      string_column("Internal-IP", 1, [](const json& o) { return node_address(o, "InternalIP"); }));
  cols.push_back(
      string_column("External-IP", 1, [](const json& o) { return node_address(o, "ExternalIP"); }));
  const std::pair<const char*, const char*> infos[] = {
      {"OS-Image", "osImage"},
      {"Kernel-Version", "kernelVersion"},
      {"Container-Runtime", "containerRuntimeVersion"}};
  for (const auto& [column, field] : infos) {
    std::string f = field;
    cols.push_back(string_column(column, 1, [f](const json& o) {
      std::string v = str(o, {"status", "nodeInfo", f});
      return v.empty() ? std::string("<unknown>") : v;
    }));
  }
  return cols;
}

std::vector<TableColumn> namespace_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Status", 0, [](const json& o) {
    return str(o, {"status", "phase"});
  }));
  cols.push_back(age_column(clock));
  return cols;
}

int64_t object_size(const json& v) {
  return v.is_object() ? static_cast<int64_t>(v.size()) : 0;
}

std::vector<TableColumn> config_map_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(raw_column("Data", "string", 0, [](const json& o) -> json {
    return object_size(at(o, {"data"})) + object_size(at(o, {"binaryData"}));
  }));
  cols.push_back(age_column(clock));
  return cols;
}

std::vector<TableColumn> secret_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Type", 0, [](const json& o) { return str(o, {"type"}); }));
  cols.push_back(raw_column("Data", "string", 0,
                            [](const json& o) -> json { return object_size(at(o, {"data"})); }));
  cols.push_back(age_column(clock));
  return cols;
}

std::vector<TableColumn> service_account_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(raw_column("Secrets", "string", 0, [](const json& o) -> json {
    return static_cast<int64_t>(arr(o, {"secrets"}).size());
  }));
  cols.push_back(age_column(clock));
  return cols;
}

// Core v1 and events.k8s.io/v1 Events carry the same facts under different names.
struct EventFields {
  const char* involved;
  const char* message;
  const char* count;
  const char* first;
  const char* last;
  const char* source;
  const char* reporting_controller;
};

constexpr EventFields kCoreEvent{"involvedObject",    "message",       "count",
                                 "firstTimestamp",    "lastTimestamp", "source",
                                 "reportingComponent"};
constexpr EventFields kEventsEvent{"regarding",
                                   "note",
                                   "deprecatedCount",
                                   "deprecatedFirstTimestamp",
                                   "deprecatedLastTimestamp",
                                   "deprecatedSource",
                                   "reportingController"};

std::string event_first_seen(const json& ev, const EventFields& f, TimePoint now) {
  if (parse_time(at(ev, {f.first}))) return since(at(ev, {f.first}), now);
  return since(at(ev, {"eventTime"}), now);
}

std::string event_last_seen(const json& ev, const EventFields& f, TimePoint now) {
  if (has_object(ev, {"series"})) return since(at(ev, {"series", "lastObservedTime"}), now);
  if (parse_time(at(ev, {f.last}))) return since(at(ev, {f.last}), now);
  return event_first_seen(ev, f, now);
}

std::vector<TableColumn> event_columns(const TableClock& clock, const EventFields& f) {
  std::vector<TableColumn> cols;
  cols.push_back(string_column(
      "Last Seen", 0, [clock, f](const json& o) { return event_last_seen(o, f, clock()); }));
  cols.push_back(string_column("Type", 0, [](const json& o) { return str(o, {"type"}); }));
  cols.push_back(string_column("Reason", 0, [](const json& o) { return str(o, {"reason"}); }));
  cols.push_back(string_column("Object", 0, [f](const json& o) {
    std::string kind = lower(str(o, {f.involved, "kind"}));
    std::string name = str(o, {f.involved, "name"});
    return name.empty() ? kind : kind + "/" + name;
  }));
  cols.push_back(string_column("Subobject", 1, [f](const json& o) {
    return str(o, {f.involved, "fieldPath"});
  }));
  cols.push_back(string_column("Source", 1, [f](const json& o) {
    std::string component = str(o, {f.source, "component"});
    if (component.empty()) component = str(o, {f.reporting_controller});
    std::string instance = str(o, {f.source, "host"});
    if (instance.empty()) instance = str(o, {"reportingInstance"});
    return instance.empty() ? component : component + ", " + instance;
  }));
  cols.push_back(
      string_column("Message", 0, [f](const json& o) { return trim_space(str(o, {f.message})); }));
  cols.push_back(string_column(
      "First Seen", 1, [clock, f](const json& o) { return event_first_seen(o, f, clock()); }));
  cols.push_back(raw_column("Count", "string", 1, [f](const json& o) -> json {
    if (has_object(o, {"series"})) return num(o, {"series", "count"});
    int64_t count = num(o, {f.count});
    return count == 0 ? 1 : count;  // singleton events carry no count
  }));
  cols.push_back(name_column(1));
  return cols;
}

std::vector<TableColumn> resource_quota_columns(const TableClock& clock) {
  // "resource: used/hard" for each hard limit, sorted; "limits.*" go to the Limit column.
  auto usage = [](const json& o, bool limits) {
    std::vector<std::string> parts;
    const json& hard = at(o, {"status", "hard"});
    if (!hard.is_object()) return std::string();
    for (auto it = hard.begin(); it != hard.end(); ++it) {  // sorted by resource name
      const std::string& res = it.key();
      size_t dot = res.find('.');
      bool is_limit = dot != std::string::npos && res.substr(0, dot) == "limits";
      if (is_limit != limits) continue;
      const json& used = at(o, {"status", "used", res});
      std::string used_s = used.is_string() ? str(used) : used.is_number() ? dump(used) : "0";
      std::string hard_s = it->is_string() ? str(*it) : dump(*it);
      parts.push_back(res + ": " + used_s + "/" + hard_s);
    }
    return join(parts, ", ");
  };
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Request", 0, [usage](const json& o) { return usage(o, false); }));
  cols.push_back(string_column("Limit", 0, [usage](const json& o) { return usage(o, true); }));
  cols.push_back(age_column(clock));
  return cols;
}

std::vector<TableColumn> lease_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Holder", 0, [](const json& o) {
    return str(o, {"spec", "holderIdentity"});
  }));
  cols.push_back(age_column(clock));
  return cols;
}

std::vector<TableColumn> priority_class_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(integer_column("Value", [](const json& o) { return num(o, {"value"}); }));
  cols.push_back(raw_column("Global-Default", "boolean", 0,
                            [](const json& o) -> json { return boolean(o, {"globalDefault"}); }));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("PreemptionPolicy", 0,
                               [](const json& o) { return str(o, {"preemptionPolicy"}); }));
  return cols;
}

std::vector<TableColumn> role_binding_columns(const TableClock& clock) {
  // SubjectsStrings: users, groups and "namespace/name" service accounts.
  auto subjects = [](const json& o, std::string_view kind) {
    std::vector<std::string> out;
    for (const json& s : arr(o, {"subjects"})) {
      if (str(s, {"kind"}) != kind) continue;
      if (kind == "ServiceAccount") {
        out.push_back(str(s, {"namespace"}) + "/" + str(s, {"name"}));
      } else {
        out.push_back(str(s, {"name"}));
      }
    }
    return join(out, ", ");
  };
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Role", 0, [](const json& o) {
    return str(o, {"roleRef", "kind"}) + "/" + str(o, {"roleRef", "name"});
  }));
  cols.push_back(age_column(clock));
  cols.push_back(
      string_column("Users", 1, [subjects](const json& o) { return subjects(o, "User"); }));
  cols.push_back(
      string_column("Groups", 1, [subjects](const json& o) { return subjects(o, "Group"); }));
  cols.push_back(string_column(
      "ServiceAccounts", 1, [subjects](const json& o) { return subjects(o, "ServiceAccount"); }));
  return cols;
}

// Resources upstream prints with its default table convertor: NAME and CREATED AT.
std::vector<TableColumn> created_at_columns() {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(raw_column("Created At", "date", 0, [](const json& o) -> json {
    const json& t = at(o, {"metadata", "creationTimestamp"});
    return t.is_string() ? t : json();
  }));
  return cols;
}

// ---------------------------------------------------------------------------------------------
// Storage

// GetAccessModesAsString: RWO, ROX, RWX, RWOP in that order, each once.
std::string access_modes(const json& modes) {
  if (!modes.is_array()) return "";
  const std::pair<const char*, const char*> order[] = {{"ReadWriteOnce", "RWO"},
                                                       {"ReadOnlyMany", "ROX"},
                                                       {"ReadWriteMany", "RWX"},
                                                       {"ReadWriteOncePod", "RWOP"}};
  std::vector<std::string> out;
  for (const auto& [mode, abbrev] : order) {
    for (const json& m : modes) {
      if (str(m) == mode) {
        out.push_back(abbrev);
        break;
      }
    }
  }
  return join(out, ",");
}

// The storage class: spec.storageClassName, else the beta annotation.
std::string storage_class(const json& o) {
  const json& beta = at(o, {"metadata", "annotations", "volume.beta.kubernetes.io/storage-class"});
  if (beta.is_string()) return str(beta);
  return str(o, {"spec", "storageClassName"});
}

std::string quantity(const json& v) {
  if (v.is_string()) return str(v);
  if (v.is_number()) return dump(v);
  return "0";
}

std::string unset_if_empty(const json& v) {
  return v.is_string() ? str(v) : std::string("<unset>");
}

std::vector<TableColumn> persistent_volume_columns(const TableClock& clock) {
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Capacity", 0, [](const json& o) {
    return quantity(at(o, {"spec", "capacity", "storage"}));
  }));
  cols.push_back(string_column("Access Modes", 0, [](const json& o) {
    return access_modes(at(o, {"spec", "accessModes"}));
  }));
  cols.push_back(string_column("Reclaim Policy", 0, [](const json& o) {
    return str(o, {"spec", "persistentVolumeReclaimPolicy"});
  }));
  cols.push_back(string_column("Status", 0, [](const json& o) {
    if (!at(o, {"metadata", "deletionTimestamp"}).is_null()) return std::string("Terminating");
    return str(o, {"status", "phase"});
  }));
  cols.push_back(string_column("Claim", 0, [](const json& o) -> std::string {
    if (!has_object(o, {"spec", "claimRef"})) return "";
    return str(o, {"spec", "claimRef", "namespace"}) + "/" + str(o, {"spec", "claimRef", "name"});
  }));
  cols.push_back(string_column("StorageClass", 0, storage_class));
  cols.push_back(string_column("VolumeAttributesClass", 0, [](const json& o) {
    return unset_if_empty(at(o, {"spec", "volumeAttributesClassName"}));
  }));
  cols.push_back(string_column("Reason", 0, [](const json& o) {
    return str(o, {"status", "reason"});
  }));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("VolumeMode", 1, [](const json& o) {
    return unset_if_empty(at(o, {"spec", "volumeMode"}));
  }));
  return cols;
}

std::vector<TableColumn> persistent_volume_claim_columns(const TableClock& clock) {
  auto bound = [](const json& o) { return !str(o, {"spec", "volumeName"}).empty(); };
  std::vector<TableColumn> cols;
  cols.push_back(name_column());
  cols.push_back(string_column("Status", 0, [](const json& o) {
    if (!at(o, {"metadata", "deletionTimestamp"}).is_null()) return std::string("Terminating");
    return str(o, {"status", "phase"});
  }));
  cols.push_back(string_column("Volume", 0, [](const json& o) {
    return str(o, {"spec", "volumeName"});
  }));
  cols.push_back(string_column("Capacity", 0, [bound](const json& o) {
    return bound(o) ? quantity(at(o, {"status", "capacity", "storage"})) : std::string();
  }));
  cols.push_back(string_column("Access Modes", 0, [bound](const json& o) {
    return bound(o) ? access_modes(at(o, {"status", "accessModes"})) : std::string();
  }));
  cols.push_back(string_column("StorageClass", 0, storage_class));
  cols.push_back(string_column("VolumeAttributesClass", 0, [](const json& o) {
    return unset_if_empty(at(o, {"spec", "volumeAttributesClassName"}));
  }));
  cols.push_back(age_column(clock));
  cols.push_back(string_column("VolumeMode", 1, [](const json& o) {
    return unset_if_empty(at(o, {"spec", "volumeMode"}));
  }));
  return cols;
}

}  // namespace

std::string human_duration(std::chrono::system_clock::duration d) {
  using std::chrono::duration_cast;
  const int64_t seconds = duration_cast<std::chrono::seconds>(d).count();  // truncates toward 0
  // Up to a second in the future is clock skew and reads as now.
  if (seconds < -1) return "<invalid>";
  if (seconds < 0) return "0s";
  if (seconds < 60 * 2) return std::to_string(seconds) + "s";
  const int64_t minutes = seconds / 60;
  if (minutes < 10) {
    const int64_t s = seconds % 60;
    if (s == 0) return std::to_string(minutes) + "m";
    return std::to_string(minutes) + "m" + std::to_string(s) + "s";
  }
  if (minutes < 60 * 3) return std::to_string(minutes) + "m";
  const int64_t hours = seconds / 3600;
  if (hours < 8) {
    const int64_t m = minutes % 60;
    if (m == 0) return std::to_string(hours) + "h";
    return std::to_string(hours) + "h" + std::to_string(m) + "m";
  }
  if (hours < 48) return std::to_string(hours) + "h";
  if (hours < 24 * 8) {
    const int64_t h = hours % 24;
    if (h == 0) return std::to_string(hours / 24) + "d";
    return std::to_string(hours / 24) + "d" + std::to_string(h) + "h";
  }
  if (hours < 24 * 365 * 2) return std::to_string(hours / 24) + "d";
  if (hours < 24 * 365 * 8) {
    const int64_t dy = (hours / 24) % 365;
    if (dy == 0) return std::to_string(hours / 24 / 365) + "y";
    return std::to_string(hours / 24 / 365) + "y" + std::to_string(dy) + "d";
  }
  return std::to_string(hours / 24 / 365) + "y";
}

std::unordered_map<std::string, std::vector<TableColumn>> printer_columns(TableClock clock) {
  if (!clock) clock = [] { return std::chrono::system_clock::now(); };
  std::unordered_map<std::string, std::vector<TableColumn>> t;
  t["/pods"] = pod_columns(clock);
  t["/podtemplates"] = pod_template_columns();
  t["/replicationcontrollers"] = replica_columns(clock, /*map_selector=*/true);
  t["/services"] = service_columns(clock);
  t["/endpoints"] = endpoints_columns(clock);
  t["/nodes"] = node_columns(clock);
  t["/namespaces"] = namespace_columns(clock);
  t["/configmaps"] = config_map_columns(clock);
  t["/secrets"] = secret_columns(clock);
  t["/serviceaccounts"] = service_account_columns(clock);
  t["/events"] = event_columns(clock, kCoreEvent);
  t["/resourcequotas"] = resource_quota_columns(clock);
  t["/limitranges"] = created_at_columns();
  t["/persistentvolumes"] = persistent_volume_columns(clock);
  t["/persistentvolumeclaims"] = persistent_volume_claim_columns(clock);
  t["apps/deployments"] = deployment_columns(clock);
  t["apps/replicasets"] = replica_columns(clock, /*map_selector=*/false);
  t["apps/statefulsets"] = stateful_set_columns(clock);
  t["apps/daemonsets"] = daemon_set_columns(clock);
  t["apps/controllerrevisions"] = controller_revision_columns(clock);
  t["batch/jobs"] = job_columns(clock);
  t["batch/cronjobs"] = cron_job_columns(clock);
  t["coordination.k8s.io/leases"] = lease_columns(clock);
  t["discovery.k8s.io/endpointslices"] = endpoint_slice_columns(clock);
  t["events.k8s.io/events"] = event_columns(clock, kEventsEvent);
  t["rbac.authorization.k8s.io/roles"] = created_at_columns();
  t["rbac.authorization.k8s.io/clusterroles"] = created_at_columns();
  t["rbac.authorization.k8s.io/rolebindings"] = role_binding_columns(clock);
  t["rbac.authorization.k8s.io/clusterrolebindings"] = role_binding_columns(clock);
  t["scheduling.k8s.io/priorityclasses"] = priority_class_columns(clock);
  return t;
}

void install_tables(Registry& registry) {
  for (auto& [key, columns] : printer_columns(nullptr)) {
    size_t slash = key.find('/');
    registry.set_table(key.substr(0, slash), key.substr(slash + 1), std::move(columns));
  }
}

}  // namespace skiff::apiserver
