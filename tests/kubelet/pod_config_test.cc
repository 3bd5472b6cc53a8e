#include "kubelet/pod_config.h"

#include <gtest/gtest.h>

namespace skiff::kubelet {
namespace {

Json test_pod() {
  return Json::parse(R"json({
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                 "labels": {"app": "web", "tier": "front"},
                 "annotations": {"note": "x"}},
    "spec": {
      "nodeName": "n1",
      "serviceAccountName": "default",
      "terminationGracePeriodSeconds": 12,
      "securityContext": {"runAsUser": 1000, "supplementalGroups": [5]},
      "containers": [{
        "name": "main", "image": "busybox",
        "command": ["sh", "-c", "echo $(GREETING) $$(HOME)"],
        "args": ["$(MISSING)"],
        "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"},
                  {"containerPort": 53, "protocol": "UDP"}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                      "requests": {"cpu": "250m"}},
        "securityContext": {"readOnlyRootFilesystem": true,
                            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}},
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
          {"name": "GREETING", "value": "hello"},
          {"name": "BOTH", "value": "$(GREETING)-$(CFG_mode)"},
          {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
          {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
          {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
          {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                             "divisor": "1Mi"}}},
          {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
          {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
        ]
      }]
    },
    "status": {"hostIP": "192.0.2.1"}
  })json");
}

ObjectSource test_source() {
  ObjectSource s;
  s.config_map = [](const std::string& ns,
                    const std::string& name) -> Result<std::map<std::string, std::string>> {
    if (ns == "shop" && name == "settings") {
      return std::map<std::string, std::string>{{"mode", "fast"}, {"level", "3"}};
    }
    return error(StatusCode::kNotFound, "configmaps \"" + name + "\" not found");
  };
  s.secret = [](const std::string& ns,
                const std::string& name) -> Result<std::map<std::string, std::string>> {
    if (ns == "shop" && name == "creds") {
      return std::map<std::string, std::string>{{"password", "s3cret"}};
    }
    return error(StatusCode::kNotFound, "secrets \"" + name + "\" not found");
  };
  return s;
}

std::string env_value(const std::vector<std::pair<std::string, std::string>>& env,
                      const std::string& name) {
  for (const auto& [k, v] : env) {
    if (k == name) return v;
  }
  return "<unset>";
}

TEST(PodConfigTest, SandboxConfigCarriesIdentityDnsPortsAndCgroup) {
  NodeSettings node;
  node.log_root = "/logs";
  node.cgroup_root = "/skiff";
  auto config = sandbox_config(node, test_pod(), 2);
  EXPECT_EQ(config.metadata().name(), "web");
  EXPECT_EQ(config.metadata().namespace_(), "shop");
  EXPECT_EQ(config.metadata().uid(), "u-1");
  EXPECT_EQ(config.metadata().attempt(), 2u);
  EXPECT_EQ(config.hostname(), "web");
  EXPECT_EQ(config.log_directory(), "/logs/shop_web_u-1");
  EXPECT_EQ(config.labels().at("io.kubernetes.pod.uid"), "u-1");
  EXPECT_EQ(config.labels().at("app"), "web");
  EXPECT_EQ(config.annotations().at("note"), "x");
  ASSERT_EQ(config.dns_config().servers_size(), 1);
  EXPECT_EQ(config.dns_config().servers(0), "10.43.0.10");
  ASSERT_EQ(config.dns_config().searches_size(), 3);
  EXPECT_EQ(config.dns_config().searches(0), "shop.svc.cluster.local");
  EXPECT_EQ(config.dns_config().searches(2), "cluster.local");
  EXPECT_EQ(config.dns_config().options(0), "ndots:5");
  ASSERT_EQ(config.port_mappings_size(), 1);  // only ports with a hostPort
  EXPECT_EQ(config.port_mappings(0).host_port(), 8080);
  EXPECT_EQ(config.port_mappings(0).container_port(), 80);
  EXPECT_EQ(config.linux().cgroup_parent(), "/skiff/podu-1");
  EXPECT_EQ(config.linux().security_context().namespace_options().network(), v1::POD);
}

TEST(PodConfigTest, HostNetworkPodsUseTheNodesNetworkAndResolver) {
  Json pod = test_pod();
  pod["spec"]["hostNetwork"] = true;
  auto config = sandbox_config(NodeSettings{}, pod, 0);
  EXPECT_EQ(config.linux().security_context().namespace_options().network(), v1::NODE);
  EXPECT_EQ(config.dns_config().servers_size(), 0);  // ClusterFirst falls back to Default
  pod["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet";
  EXPECT_EQ(sandbox_config(NodeSettings{}, pod, 0).dns_config().servers(0), "10.43.0.10");
}

TEST(PodConfigTest, DnsPolicyNoneTakesOnlyThePodsDnsConfig) {
  Json pod = test_pod();
  pod["spec"]["dnsPolicy"] = "None";
  pod["spec"]["dnsConfig"] = Json::parse(
      R"({"nameservers": ["192.0.2.53"], "searches": ["a.example"],
          "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})");
  auto dns = sandbox_config(NodeSettings{}, pod, 0).dns_config();
  ASSERT_EQ(dns.servers_size(), 1);
  EXPECT_EQ(dns.servers(0), "192.0.2.53");
  EXPECT_EQ(dns.searches(0), "a.example");
  EXPECT_EQ(dns.options(0), "ndots:2");
  EXPECT_EQ(dns.options(1), "edns0");
}

TEST(PodConfigTest, EnvironmentFollowsUpstreamOrderAndSources) {
  Json pod = test_pod();
  auto env = container_env(pod, pod["spec"]["containers"][0], "10.42.0.7", test_source());
  ASSERT_TRUE(env.is_ok()) << env.status().to_string();
  EXPECT_EQ(env_value(*env, "CFG_mode"), "fast");
  EXPECT_EQ(env_value(*env, "CFG_level"), "3");
  EXPECT_EQ(env_value(*env, "GREETING"), "hello");
  EXPECT_EQ(env_value(*env, "BOTH"), "hello-fast");
  EXPECT_EQ(env_value(*env, "POD"), "web");
  EXPECT_EQ(env_value(*env, "IP"), "10.42.0.7");
  EXPECT_EQ(env_value(*env, "TIER"), "front");
  EXPECT_EQ(env_value(*env, "MEM"), "64");
  EXPECT_EQ(env_value(*env, "CPU"), "1");  // 500m rounds up to whole cores
  EXPECT_EQ(env_value(*env, "PASS"), "s3cret");
  // envFrom entries come first.
  EXPECT_EQ(env->front().first.rfind("CFG_", 0), 0u);
}

TEST(PodConfigTest, MissingReferencesAreErrorsUnlessOptional) {
  Json pod = test_pod();
  Json c = pod["spec"]["containers"][0];
  c["env"].push_back(Json::parse(
      R"({"name": "X", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "nope"}}})"));
  auto env = container_env(pod, c, "", test_source());
  ASSERT_FALSE(env.is_ok());
  EXPECT_NE(env.status().message().find("couldn't find key nope"), std::string::npos);

  c["env"].back()["valueFrom"]["configMapKeyRef"]["optional"] = true;
  env = container_env(pod, c, "", test_source());
  ASSERT_TRUE(env.is_ok());
  EXPECT_EQ(env_value(*env, "X"), "<unset>");

  c["envFrom"] = Json::parse(R"([{"secretRef": {"name": "absent"}}])");
  env = container_env(pod, c, "", test_source());
  ASSERT_FALSE(env.is_ok());
  EXPECT_EQ(env.status().message(), "secret \"absent\" not found");
  c["envFrom"][0]["secretRef"]["optional"] = true;
  EXPECT_TRUE(container_env(pod, c, "", test_source()).is_ok());
}

TEST(PodConfigTest, ExpandVarsHandlesEscapesAndUnknownNames) {
  std::vector<std::pair<std::string, std::string>> env = {{"A", "1"}, {"B", "2"}};
  EXPECT_EQ(expand_vars("$(A)-$(B)", env), "1-2");
  EXPECT_EQ(expand_vars("$$(A)", env), "$(A)");
  EXPECT_EQ(expand_vars("$(C) $A $", env), "$(C) $A $");
  EXPECT_EQ(expand_vars("$(A", env), "$(A");
}

TEST(PodConfigTest, ContainerConfigMapsSpecToCri) {
  Json pod = test_pod();
  const Json& c = pod["spec"]["containers"][0];
  NodeSettings node;
  auto env = container_env(pod, c, "10.42.0.7", test_source());
  ASSERT_TRUE(env.is_ok());
  auto config = container_config(node, pod, c, false, 3, *env, {{"/host/data", "/data", true}});
  EXPECT_EQ(config.metadata().name(), "main");
  EXPECT_EQ(config.metadata().attempt(), 3u);
  EXPECT_EQ(config.image().image(), "busybox");
  ASSERT_EQ(config.command_size(), 3);
  EXPECT_EQ(config.command(2), "echo hello $(HOME)");
  EXPECT_EQ(config.args(0), "$(MISSING)");
  EXPECT_EQ(config.log_path(), "main/3.log");
  EXPECT_EQ(config.labels().at("io.kubernetes.container.name"), "main");
  EXPECT_EQ(config.annotations().at("io.kubernetes.container.restartCount"), "3");
  EXPECT_EQ(config.annotations().at("io.kubernetes.pod.terminationGracePeriod"), "12");
  EXPECT_EQ(config.annotations().at("io.kubernetes.container.hash"),
            std::to_string(container_hash(c)));
  ASSERT_EQ(config.mounts_size(), 1);
  EXPECT_TRUE(config.mounts(0).readonly());
  const auto& res = config.linux().resources();
  EXPECT_EQ(res.cpu_shares(), 256);
  EXPECT_EQ(res.cpu_period(), 100000);
  EXPECT_EQ(res.cpu_quota(), 50000);
  EXPECT_EQ(res.memory_limit_in_bytes(), 64 * 1024 * 1024);
  const auto& sc = config.linux().security_context();
  EXPECT_EQ(sc.run_as_user().value(), 1000);  // from the pod's securityContext
  EXPECT_TRUE(sc.readonly_rootfs());
  EXPECT_FALSE(sc.privileged());
  ASSERT_EQ(sc.capabilities().add_capabilities_size(), 1);
  EXPECT_EQ(sc.capabilities().drop_capabilities(0), "ALL");
  ASSERT_EQ(sc.supplemental_groups_size(), 1);
  EXPECT_EQ(sc.supplemental_groups(0), 5);
}

TEST(PodConfigTest, BestEffortContainersGetMinimumShares) {
  Json pod = test_pod();
  Json c = {{"name", "c"}, {"image", "busybox"}};
  auto config = container_config(NodeSettings{}, pod, c, false, 0, {}, {});
  EXPECT_EQ(config.linux().resources().cpu_shares(), 2);
  EXPECT_EQ(config.linux().resources().cpu_quota(), 0);
  EXPECT_EQ(config.linux().resources().memory_limit_in_bytes(), 0);
}

TEST(PodConfigTest, HashChangesWithTheSpec) {
  Json c = {{"name", "c"}, {"image", "busybox:1"}};
  uint64_t before = container_hash(c);
  EXPECT_EQ(before, container_hash(c));
  c["image"] = "busybox:2";
  EXPECT_NE(before, container_hash(c));
}

TEST(PodConfigTest, GracePeriodPrefersTheDeletions) {
  Json pod = test_pod();
  EXPECT_EQ(grace_period_seconds(pod), 12);
  pod["metadata"]["deletionGracePeriodSeconds"] = 3;
  EXPECT_EQ(grace_period_seconds(pod), 3);
}

TEST(PodConfigTest, ServiceLinksFollowUpstreamNaming) {
  ObjectSource source = test_source();
  source.services = [](const std::string& ns) {
    std::vector<Json> out;
    if (ns == "shop") {
      out.push_back(Json::parse(R"({"metadata": {"name": "web-api", "namespace": "shop"},
          "spec": {"clusterIP": "10.43.0.20", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}})"));
      out.push_back(Json::parse(R"({"metadata": {"name": "headless", "namespace": "shop"},
          "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})"));
    }
    if (ns == "default") {
      out.push_back(Json::parse(R"({"metadata": {"name": "kubernetes", "namespace": "default"},
          "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}})"));
      out.push_back(Json::parse(R"({"metadata": {"name": "other", "namespace": "default"},
          "spec": {"clusterIP": "10.43.0.30", "ports": [{"port": 1}]}})"));
    }
    return out;
  };
  Json pod = test_pod();
  auto env = service_env(pod, source);
  std::map<std::string, std::string> m(env.begin(), env.end());
  EXPECT_EQ(m["WEB_API_SERVICE_HOST"], "10.43.0.20");
  EXPECT_EQ(m["WEB_API_SERVICE_PORT"], "80");
  EXPECT_EQ(m["WEB_API_SERVICE_PORT_HTTP"], "80");
  EXPECT_EQ(m["WEB_API_SERVICE_PORT_DNS_UDP"], "53");
  EXPECT_EQ(m["WEB_API_PORT"], "tcp://10.43.0.20:80");
  EXPECT_EQ(m["WEB_API_PORT_53_UDP"], "udp://10.43.0.20:53");
  EXPECT_EQ(m["WEB_API_PORT_53_UDP_PROTO"], "udp");
  EXPECT_EQ(m["WEB_API_PORT_80_TCP_ADDR"], "10.43.0.20");
  EXPECT_EQ(m["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
  EXPECT_EQ(m["KUBERNETES_SERVICE_PORT"], "443");
  EXPECT_EQ(m.count("HEADLESS_SERVICE_HOST"), 0u);  // no cluster IP
  EXPECT_EQ(m.count("OTHER_SERVICE_HOST"), 0u);     // another namespace
  // enableServiceLinks false: only the API server's service.
  pod["spec"]["enableServiceLinks"] = false;
  env = service_env(pod, source);
  m = std::map<std::string, std::string>(env.begin(), env.end());
  EXPECT_EQ(m.count("WEB_API_SERVICE_HOST"), 0u);
  EXPECT_EQ(m["KUBERNETES_SERVICE_HOST"], "10.43.0.1");
  // The container's own env comes after, and wins.
  pod["spec"]["containers"][0]["env"] =
      Json::parse(R"([{"name": "KUBERNETES_SERVICE_HOST", "value": "mine"}])");
  auto all = container_env(pod, pod["spec"]["containers"][0], "", source);
  ASSERT_TRUE(all.is_ok());
  EXPECT_EQ(env_value(*all, "KUBERNETES_SERVICE_HOST"), "mine");
  EXPECT_EQ(all->front().first.rfind("KUBERNETES_", 0), 0u);
}

TEST(PodConfigTest, PullCredentialsComeFromImagePullSecrets) {
  EXPECT_EQ(image_registry("busybox"), "docker.io");
  EXPECT_EQ(image_registry("library/busybox:1"), "docker.io");
  EXPECT_EQ(image_registry("registry.example:5000/team/app:1"), "registry.example:5000");
  EXPECT_EQ(image_registry("localhost/app"), "localhost");
  ObjectSource source;
  source.secret = [](const std::string& ns,
                     const std::string& name) -> Result<std::map<std::string, std::string>> {
    if (name == "regcred") {
      return std::map<std::string, std::string>{
          {".dockerconfigjson",
           R"({"auths": {"https://index.docker.io/v1/": {"username": "hub", "password": "p1"},
                         "127.0.0.1:5000": {"auth": "dXNlcjpwdw=="}}})"}};
    }
    if (name == "old") {
      return std::map<std::string, std::string>{
          {".dockercfg", R"({"quay.example": {"username": "q", "password": "p2"}})"}};
    }
    return error(StatusCode::kNotFound, "not found");
  };
  Json pod = test_pod();
  EXPECT_FALSE(pull_credentials(pod, "busybox", source).has_value());  // no secrets named
  pod["spec"]["imagePullSecrets"] =
      Json::parse(R"([{"name": "missing"}, {"name": "regcred"}, {"name": "old"}])");
  auto hub = pull_credentials(pod, "busybox", source);
  ASSERT_TRUE(hub.has_value());
  EXPECT_EQ(hub->username, "hub");
  EXPECT_EQ(hub->password, "p1");
  auto local = pull_credentials(pod, "127.0.0.1:5000/app:1", source);
  ASSERT_TRUE(local.has_value());
  EXPECT_EQ(local->auth, "dXNlcjpwdw==");
  auto quay = pull_credentials(pod, "quay.example/x/y", source);
  ASSERT_TRUE(quay.has_value());
  EXPECT_EQ(quay->username, "q");
  EXPECT_FALSE(pull_credentials(pod, "other.example/z", source).has_value());
}

}  // namespace
}  // namespace skiff::kubelet
