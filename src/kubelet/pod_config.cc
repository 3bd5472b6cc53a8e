#include "kubelet/pod_config.h"

#include <algorithm>
#include <string_view>

#include "api/quantity.h"
#include "kubelet/json_fields.h"

namespace skiff::kubelet {
namespace {

const Json& metadata(const Json& pod) {
  return member(pod, "metadata");
}
const Json& spec(const Json& pod) {
  return member(pod, "spec");
}

void add_pod_labels(const Json& pod, google::protobuf::Map<std::string, std::string>* labels) {
  const Json& meta = metadata(pod);
  (*labels)[kPodNameLabel] = str(meta, "name");
  (*labels)[kPodNamespaceLabel] = str(meta, "namespace");
  (*labels)[kPodUidLabel] = str(meta, "uid");
}

bool host_network(const Json& pod) {
  return member(spec(pod), "hostNetwork") == true;
}

v1::NamespaceOption namespace_options(const Json& pod) {
  v1::NamespaceOption ns;
  ns.set_network(host_network(pod) ? v1::NODE : v1::POD);
  ns.set_pid(member(spec(pod), "hostPID") == true                 ? v1::NODE
             : member(spec(pod), "shareProcessNamespace") == true ? v1::POD
                                                                  : v1::CONTAINER);
  ns.set_ipc(member(spec(pod), "hostIPC") == true ? v1::NODE : v1::POD);
  return ns;
}

// Upstream's mapping of requests and limits to cgroup settings.
constexpr int64_t kCpuPeriod = 100000;
constexpr int64_t kMinShares = 2;

int64_t milli_of(const Json& list, const char* name) {
  const Json& q = member(list, name);
  if (!q.is_string() && !q.is_number()) return -1;
  auto parsed = api::Quantity::parse(q.is_string() ? q.get<std::string>() : q.dump());
  return parsed.is_ok() ? parsed->milli_value() : -1;
}

int64_t value_of(const Json& list, const char* name) {
  const Json& q = member(list, name);
  if (!q.is_string() && !q.is_number()) return -1;
  auto parsed = api::Quantity::parse(q.is_string() ? q.get<std::string>() : q.dump());
  return parsed.is_ok() ? parsed->value() : -1;
}

std::string hostname_of(const Json& pod) {
  std::string h = str(spec(pod), "hostname", str(metadata(pod), "name"));
  if (h.size() > 63) h.resize(63);
  while (!h.empty() && (h.back() == '-' || h.back() == '.')) h.pop_back();
  return h;
}

// Reads a fieldRef path of the pod (the downward API's supported set).
Result<std::string> field_value(const Json& pod, const std::string& path,
                                const std::string& pod_ip) {
  const Json& meta = metadata(pod);
  if (path == "metadata.name") return str(meta, "name");
  if (path == "metadata.namespace") return str(meta, "namespace");
  if (path == "metadata.uid") return str(meta, "uid");
  if (path == "spec.nodeName") return str(spec(pod), "nodeName");
  if (path == "spec.serviceAccountName") return str(spec(pod), "serviceAccountName");
  if (path == "status.hostIP") return str(member(pod, "status"), "hostIP");
  if (path == "status.podIP") return pod_ip;
  if (path == "status.podIPs") return pod_ip;
  for (const char* prefix : {"metadata.labels", "metadata.annotations"}) {
    std::string_view p(prefix);
    if (path.rfind(p, 0) != 0) continue;
    const Json& map = member(meta, p == "metadata.labels" ? "labels" : "annotations");
    std::string rest = path.substr(p.size());
    if (rest.size() > 4 && rest.front() == '[' && rest.back() == ']') {
      std::string key = rest.substr(2, rest.size() - 4);  // ['key']
      return str(map, key.c_str());
    }
  }
  return error(StatusCode::kInvalidArgument, "unsupported fieldRef " + path);
}

Result<std::string> resource_value(const Json& pod, const Json& container, const Json& ref) {
  std::string res = str(ref, "resource");
  std::string name = str(ref, "containerName");
  const Json* c = &container;
  if (!name.empty()) {
    c = nullptr;
    for (const Json& each : member(spec(pod), "containers")) {
      if (str(each, "name") == name) c = &each;
    }
    if (c == nullptr) return error(StatusCode::kInvalidArgument, "no container " + name);
  }
  size_t dot = res.find('.');
  if (dot == std::string::npos) return error(StatusCode::kInvalidArgument, "bad resource " + res);
  std::string kind = res.substr(0, dot);
  std::string what = res.substr(dot + 1);
  const Json& list = member(member(*c, "resources"), kind.c_str());
  int64_t divisor_milli = 1000;
  if (ref.contains("divisor")) {
    const Json& d = ref["divisor"];
    auto q = api::Quantity::parse(d.is_string() ? d.get<std::string>() : d.dump());
    if (q.is_ok() && q->milli_value() > 0) divisor_milli = q->milli_value();
  }
  int64_t milli = milli_of(list, what.c_str());
  if (milli < 0) {
    // Unset limits report the node's allocatable upstream; requests report 0.
    if (kind == "requests") return std::string("0");
    milli = 0;
  }
  // Upstream rounds up.
  return std::to_string((milli + divisor_milli - 1) / divisor_milli);
}

}  // namespace

std::string pod_log_dir(const NodeSettings& node, const Json& pod) {
  const Json& meta = metadata(pod);
  return node.log_root + "/" + str(meta, "namespace") + "_" + str(meta, "name") + "_" +
         str(meta, "uid");
}

std::string pod_cgroup_parent(const NodeSettings& node, const std::string& uid) {
  if (node.cgroup_root.empty()) return "";
  return node.cgroup_root + "/pod" + uid;
}

v1::PodSandboxConfig sandbox_config(const NodeSettings& node, const Json& pod, uint32_t attempt) {
  const Json& meta = metadata(pod);
  v1::PodSandboxConfig config;
  auto* md = config.mutable_metadata();
  md->set_name(str(meta, "name"));
  md->set_namespace_(str(meta, "namespace"));
  md->set_uid(str(meta, "uid"));
  md->set_attempt(attempt);
  if (!host_network(pod)) config.set_hostname(hostname_of(pod));
  config.set_log_directory(pod_log_dir(node, pod));

  std::string dns_policy = str(spec(pod), "dnsPolicy", "ClusterFirst");
  if (host_network(pod) && dns_policy == "ClusterFirst") dns_policy = "Default";
  if (dns_policy == "ClusterFirstWithHostNet") dns_policy = "ClusterFirst";
  auto* dns = config.mutable_dns_config();
  if (dns_policy == "ClusterFirst" && !node.cluster_dns.empty()) {
    for (const std::string& s : node.cluster_dns) dns->add_servers(s);
    std::string ns = str(meta, "namespace");
    dns->add_searches(ns + ".svc." + node.cluster_domain);
    dns->add_searches("svc." + node.cluster_domain);
    dns->add_searches(node.cluster_domain);
    dns->add_options("ndots:5");
  }
  if (dns_policy == "None" || member(spec(pod), "dnsConfig").is_object()) {
    const Json& extra = member(spec(pod), "dnsConfig");
    for (const Json& s : member(extra, "nameservers"))
      if (s.is_string()) dns->add_servers(s.get<std::string>());
    for (const Json& s : member(extra, "searches"))
      if (s.is_string()) dns->add_searches(s.get<std::string>());
    for (const Json& o : member(extra, "options")) {
      std::string name = str(o, "name");
      if (name.empty()) continue;
      std::string value = str(o, "value");
      dns->add_options(value.empty() ? name : name + ":" + value);
    }
  }

  for (const Json& c : member(spec(pod), "containers")) {
    for (const Json& p : member(c, "ports")) {
      if (!p.contains("hostPort") || !p["hostPort"].is_number()) continue;
      auto* pm = config.add_port_mappings();
      std::string proto = str(p, "protocol", "TCP");
      pm->set_protocol(proto == "UDP" ? v1::UDP : proto == "SCTP" ? v1::SCTP : v1::TCP);
      pm->set_container_port(p.value("containerPort", 0));
      pm->set_host_port(p["hostPort"].get<int>());
      pm->set_host_ip(str(p, "hostIP"));
    }
  }

  const Json& labels = member(meta, "labels");
  if (labels.is_object()) {
    for (auto& [k, v] : labels.items()) {
      if (v.is_string()) (*config.mutable_labels())[k] = v.get<std::string>();
    }
  }
  add_pod_labels(pod, config.mutable_labels());
  const Json& annotations = member(meta, "annotations");
  if (annotations.is_object()) {
    for (auto& [k, v] : annotations.items()) {
      if (v.is_string()) (*config.mutable_annotations())[k] = v.get<std::string>();
    }
  }

  auto* linux = config.mutable_linux();
  linux->set_cgroup_parent(pod_cgroup_parent(node, str(meta, "uid")));
  *linux->mutable_security_context()->mutable_namespace_options() = namespace_options(pod);
  const Json& psc = member(spec(pod), "securityContext");
  if (psc.contains("runAsUser") && psc["runAsUser"].is_number_integer())
    linux->mutable_security_context()->mutable_run_as_user()->set_value(psc["runAsUser"]);
  if (psc.contains("runAsGroup") && psc["runAsGroup"].is_number_integer())
    linux->mutable_security_context()->mutable_run_as_group()->set_value(psc["runAsGroup"]);
  for (const Json& s : member(psc, "sysctls")) {
    (*linux->mutable_sysctls())[str(s, "name")] = str(s, "value");
  }
  return config;
}

std::string expand_vars(const std::string& s,
                        const std::vector<std::pair<std::string, std::string>>& env) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '$' || i + 1 >= s.size()) {
      out += s[i];
      continue;
    }
    if (s[i + 1] == '$') {  // "$$" is a literal "$"
      out += '$';
      ++i;
      continue;
    }
    if (s[i + 1] == '(') {
      size_t close = s.find(')', i + 2);
      if (close != std::string::npos) {
        std::string name = s.substr(i + 2, close - i - 2);
        auto it = std::find_if(env.rbegin(), env.rend(),
                               [&](const auto& kv) { return kv.first == name; });
        if (it != env.rend()) {
          out += it->second;
          i = close;
          continue;
        }
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> service_env(const Json& pod,
                                                             const ObjectSource& source) {
  std::vector<std::pair<std::string, std::string>> env;
  if (!source.services) return env;
  std::string ns = str(metadata(pod), "namespace");
  bool links = member(spec(pod), "enableServiceLinks") != false;
  std::vector<Json> services;
  if (links) services = source.services(ns);
  if (ns != "default" || !links) {
    for (Json& svc : source.services("default")) {
      if (str(metadata(svc), "name") == "kubernetes") services.push_back(std::move(svc));
    }
  }
  std::sort(services.begin(), services.end(), [](const Json& a, const Json& b) {
    return str(metadata(a), "name") < str(metadata(b), "name");
  });
  for (const Json& svc : services) {
    std::string ip = str(spec(svc), "clusterIP");
    if (ip.empty() || ip == "None") continue;
    std::string prefix = str(metadata(svc), "name");
    for (char& c : prefix) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
    const Json& ports = member(spec(svc), "ports");
    if (!ports.is_array() || ports.empty()) continue;
    env.emplace_back(prefix + "_SERVICE_HOST", ip);
    env.emplace_back(prefix + "_SERVICE_PORT", std::to_string(ports[0].value("port", 0)));
    for (const Json& p : ports) {
      std::string name = str(p, "name");
      if (name.empty()) continue;
      for (char& c : name) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
      env.emplace_back(prefix + "_SERVICE_PORT_" + name, std::to_string(p.value("port", 0)));
    }
    std::string proto0 = str(ports[0], "protocol", "TCP");
    for (char& c : proto0) c = static_cast<char>(std::tolower(c));
    env.emplace_back(prefix + "_PORT",
                     proto0 + "://" + ip + ":" + std::to_string(ports[0].value("port", 0)));
    for (const Json& p : ports) {
      std::string proto = str(p, "protocol", "TCP");
      std::string lower = proto;
      for (char& c : lower) c = static_cast<char>(std::tolower(c));
      std::string port = std::to_string(p.value("port", 0));
      std::string base = prefix + "_PORT_" + port + "_" + proto;
      env.emplace_back(base, lower + "://" + ip + ":" + port);
      env.emplace_back(base + "_PROTO", lower);
      env.emplace_back(base + "_PORT", port);
      env.emplace_back(base + "_ADDR", ip);
    }
  }
  return env;
}

Result<std::vector<std::pair<std::string, std::string>>> container_env(const Json& pod,
                                                                       const Json& container,
                                                                       const std::string& pod_ip,
                                                                       const ObjectSource& source) {
  std::vector<std::pair<std::string, std::string>> env = service_env(pod, source);
  std::string ns = str(metadata(pod), "namespace");
  auto set = [&](const std::string& name, std::string value) {
    for (auto& kv : env) {
      if (kv.first == name) {
        kv.second = std::move(value);
        return;
      }
    }
    env.emplace_back(name, std::move(value));
  };

  for (const Json& from : member(container, "envFrom")) {
    std::string prefix = str(from, "prefix");
    bool is_cm = from.contains("configMapRef");
    const Json& ref = is_cm ? from["configMapRef"] : member(from, "secretRef");
    if (!ref.is_object()) continue;
    std::string name = str(ref, "name");
    bool optional = member(ref, "optional") == true;
    auto data = is_cm ? source.config_map(ns, name) : source.secret(ns, name);
    if (!data.is_ok()) {
      if (optional && data.status().code() == StatusCode::kNotFound) continue;
      return error(data.status().code(),
                   (is_cm ? "configmap \"" : "secret \"") + name + "\" not found");
    }
    for (const auto& [k, v] : *data) set(prefix + k, v);
  }

  for (const Json& e : member(container, "env")) {
    std::string name = str(e, "name");
    if (e.contains("value") && e["value"].is_string()) {
      set(name, expand_vars(e["value"].get<std::string>(), env));
      continue;
    }
    const Json& from = member(e, "valueFrom");
    if (!from.is_object()) {
      set(name, "");
      continue;
    }
    if (from.contains("fieldRef")) {
      SKIFF_ASSIGN_OR_RETURN(std::string v,
                             field_value(pod, str(from["fieldRef"], "fieldPath"), pod_ip));
      set(name, std::move(v));
    } else if (from.contains("resourceFieldRef")) {
      SKIFF_ASSIGN_OR_RETURN(std::string v,
                             resource_value(pod, container, from["resourceFieldRef"]));
      set(name, std::move(v));
    } else if (from.contains("configMapKeyRef") || from.contains("secretKeyRef")) {
      bool is_cm = from.contains("configMapKeyRef");
      const Json& ref = is_cm ? from["configMapKeyRef"] : from["secretKeyRef"];
      std::string obj = str(ref, "name");
      std::string key = str(ref, "key");
      bool optional = member(ref, "optional") == true;
      auto data = is_cm ? source.config_map(ns, obj) : source.secret(ns, obj);
      const char* what = is_cm ? "configmap" : "secret";
      if (!data.is_ok()) {
        if (optional && data.status().code() == StatusCode::kNotFound) continue;
        return error(data.status().code(), std::string(what) + " \"" + obj + "\" not found");
      }
      auto it = data->find(key);
      if (it == data->end()) {
        if (optional) continue;
        return error(StatusCode::kNotFound,
                     "couldn't find key " + key + " in " + what + " " + ns + "/" + obj);
      }
      set(name, it->second);
    }
  }
  return env;
}

uint64_t container_hash(const Json& container) {
  // FNV-1a over the canonical JSON (nlohmann sorts object keys).
  std::string text = container.dump();
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

v1::ContainerConfig container_config(const NodeSettings& node, const Json& pod,
                                     const Json& container, bool init, uint32_t restart_count,
                                     const std::vector<std::pair<std::string, std::string>>& env,
                                     const std::vector<ContainerMount>& mounts) {
  v1::ContainerConfig config;
  std::string name = str(container, "name");
  config.mutable_metadata()->set_name(name);
  config.mutable_metadata()->set_attempt(restart_count);
  config.mutable_image()->set_image(str(container, "image"));
  for (const Json& c : member(container, "command"))
    if (c.is_string()) config.add_command(expand_vars(c.get<std::string>(), env));
  for (const Json& a : member(container, "args"))
    if (a.is_string()) config.add_args(expand_vars(a.get<std::string>(), env));
  config.set_working_dir(str(container, "workingDir"));
  for (const auto& [k, v] : env) {
    auto* kv = config.add_envs();
    kv->set_key(k);
    kv->set_value(v);
  }
  for (const ContainerMount& m : mounts) {
    auto* mount = config.add_mounts();
    mount->set_host_path(m.host_path);
    mount->set_container_path(m.container_path);
    mount->set_readonly(m.read_only);
  }
  add_pod_labels(pod, config.mutable_labels());
  (*config.mutable_labels())[kContainerNameLabel] = name;
  if (init) (*config.mutable_labels())[kInitContainerLabel] = "true";
  auto& ann = *config.mutable_annotations();
  ann[kContainerHashAnnotation] = std::to_string(container_hash(container));
  ann[kRestartCountAnnotation] = std::to_string(restart_count);
  ann[kTerminationMessagePathAnnotation] =
      str(container, "terminationMessagePath", "/dev/termination-log");
  ann[kTerminationMessagePolicyAnnotation] = str(container, "terminationMessagePolicy", "File");
  ann[kGracePeriodAnnotation] =
      std::to_string(member(spec(pod), "terminationGracePeriodSeconds").is_number_integer()
                         ? spec(pod)["terminationGracePeriodSeconds"].get<int64_t>()
                         : 30);
  config.set_log_path(name + "/" + std::to_string(restart_count) + ".log");
  config.set_stdin(member(container, "stdin") == true);
  config.set_stdin_once(member(container, "stdinOnce") == true);
  config.set_tty(member(container, "tty") == true);

  auto* linux = config.mutable_linux();
  auto* res = linux->mutable_resources();
  const Json& resources = member(container, "resources");
  int64_t cpu_request = milli_of(member(resources, "requests"), "cpu");
  int64_t cpu_limit = milli_of(member(resources, "limits"), "cpu");
  if (cpu_request < 0 && cpu_limit >= 0) cpu_request = cpu_limit;  // requests default to limits
  res->set_cpu_shares(cpu_request <= 0 ? kMinShares
                                       : std::max(kMinShares, cpu_request * 1024 / 1000));
  if (cpu_limit > 0) {
    res->set_cpu_period(kCpuPeriod);
    res->set_cpu_quota(std::max<int64_t>(1000, cpu_limit * kCpuPeriod / 1000));
  }
  int64_t memory_limit = value_of(member(resources, "limits"), "memory");
  if (memory_limit > 0) res->set_memory_limit_in_bytes(memory_limit);

  auto* sc = linux->mutable_security_context();
  *sc->mutable_namespace_options() = namespace_options(pod);
  const Json& psc = member(spec(pod), "securityContext");
  const Json& csc = member(container, "securityContext");
  auto pick = [&](const char* key) -> const Json& {
    const Json& c = member(csc, key);
    return c.is_null() ? member(psc, key) : c;
  };
  if (pick("runAsUser").is_number_integer())
    sc->mutable_run_as_user()->set_value(pick("runAsUser").get<int64_t>());
  if (pick("runAsGroup").is_number_integer())
    sc->mutable_run_as_group()->set_value(pick("runAsGroup").get<int64_t>());
  for (const Json& g : member(psc, "supplementalGroups"))
    if (g.is_number_integer()) sc->add_supplemental_groups(g.get<int64_t>());
  if (member(psc, "fsGroup").is_number_integer())
    sc->add_supplemental_groups(psc["fsGroup"].get<int64_t>());
  sc->set_privileged(member(csc, "privileged") == true);
  sc->set_readonly_rootfs(member(csc, "readOnlyRootFilesystem") == true);
  if (member(csc, "allowPrivilegeEscalation") == false) sc->set_no_new_privs(true);
  const Json& caps = member(csc, "capabilities");
  for (const Json& c : member(caps, "add"))
    if (c.is_string()) sc->mutable_capabilities()->add_add_capabilities(c.get<std::string>());
  for (const Json& c : member(caps, "drop"))
    if (c.is_string()) sc->mutable_capabilities()->add_drop_capabilities(c.get<std::string>());
  return config;
}

std::string image_registry(const std::string& image) {
  size_t slash = image.find('/');
  if (slash == std::string::npos) return "docker.io";
  std::string first = image.substr(0, slash);
  if (first.find('.') == std::string::npos && first.find(':') == std::string::npos &&
      first != "localhost") {
    return "docker.io";
  }
  return first;
}

namespace {

// "https://index.docker.io/v1/" → "docker.io"; "r.example:5000/path" → "r.example:5000".
std::string registry_of_key(std::string key) {
  size_t scheme = key.find("://");
  if (scheme != std::string::npos) key = key.substr(scheme + 3);
  size_t slash = key.find('/');
  if (slash != std::string::npos) key = key.substr(0, slash);
  if (key == "index.docker.io" || key == "registry-1.docker.io") key = "docker.io";
  return key;
}

}  // namespace

std::optional<RegistryAuth> pull_credentials(const Json& pod, const std::string& image,
                                             const ObjectSource& source) {
  if (!source.secret) return std::nullopt;
  std::string registry = image_registry(image);
  std::string ns = str(metadata(pod), "namespace");
  for (const Json& ref : member(spec(pod), "imagePullSecrets")) {
    auto data = source.secret(ns, str(ref, "name"));
    if (!data.is_ok()) continue;
    Json auths;
    if (auto it = data->find(".dockerconfigjson"); it != data->end()) {
      auths = Json::parse(it->second, nullptr, false);
      auths = auths.is_object() ? member(auths, "auths") : Json();
    } else if (auto old = data->find(".dockercfg"); old != data->end()) {
      auths = Json::parse(old->second, nullptr, false);
    }
    if (!auths.is_object()) continue;
    for (auto& [key, entry] : auths.items()) {
      if (registry_of_key(key) != registry || !entry.is_object()) continue;
      RegistryAuth auth;
      auth.server = key;
      auth.username = str(entry, "username");
      auth.password = str(entry, "password");
      auth.auth = str(entry, "auth");
      return auth;
    }
  }
  return std::nullopt;
}

int64_t grace_period_seconds(const Json& pod) {
  const Json& meta = metadata(pod);
  if (member(meta, "deletionGracePeriodSeconds").is_number_integer())
    return meta["deletionGracePeriodSeconds"].get<int64_t>();
  if (member(spec(pod), "terminationGracePeriodSeconds").is_number_integer())
    return spec(pod)["terminationGracePeriodSeconds"].get<int64_t>();
  return 30;
}

}  // namespace skiff::kubelet
