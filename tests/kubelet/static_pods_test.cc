#include "kubelet/static_pods.h"

#include <gtest/gtest.h>

#include <fstream>

#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

constexpr char kManifest[] = R"(apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "sleep 3600"]
    ports:
    - containerPort: 80
    env:
    - name: QUOTED
      value: "8080"
    - name: FLAG
      value: "true"
)";

TEST(StaticPodsTest, YamlBecomesADefaultedBoundPod) {
  auto pods = static_pods_from(kManifest, "/etc/m/web.yaml", "n1");
  ASSERT_TRUE(pods.is_ok()) << pods.status().to_string();
  ASSERT_EQ(pods->size(), 1u);
  const Json& pod = (*pods)[0];
  EXPECT_EQ(pod["metadata"]["name"], "web-n1");
  EXPECT_EQ(pod["metadata"]["namespace"], "default");
  EXPECT_EQ(pod["metadata"]["uid"].get<std::string>().size(), 32u);
  EXPECT_EQ(pod["metadata"]["annotations"]["kubernetes.io/config.source"], "file");
  EXPECT_EQ(pod["metadata"]["annotations"]["kubernetes.io/config.hash"], pod["metadata"]["uid"]);
  EXPECT_EQ(pod["spec"]["nodeName"], "n1");
  EXPECT_EQ(pod["spec"]["restartPolicy"], "Always");
  const Json& c = pod["spec"]["containers"][0];
  EXPECT_EQ(c["imagePullPolicy"], "IfNotPresent");
  EXPECT_EQ(c["ports"][0]["containerPort"], 80);  // a number stays a number
  EXPECT_EQ(c["ports"][0]["protocol"], "TCP");
  EXPECT_EQ(c["env"][0]["value"], "8080");  // quoted scalars stay strings
  EXPECT_EQ(c["env"][1]["value"], "true");
  EXPECT_FALSE(is_mirror_pod(pod));

  // The UID follows the content, the node and the file.
  auto again = static_pods_from(kManifest, "/etc/m/web.yaml", "n1");
  EXPECT_EQ((*again)[0]["metadata"]["uid"], pod["metadata"]["uid"]);
  auto other_node = static_pods_from(kManifest, "/etc/m/web.yaml", "n2");
  EXPECT_NE((*other_node)[0]["metadata"]["uid"], pod["metadata"]["uid"]);
  std::string edited = kManifest;
  edited.replace(edited.find("1.36"), 4, "1.37");
  auto changed = static_pods_from(edited, "/etc/m/web.yaml", "n1");
  EXPECT_NE((*changed)[0]["metadata"]["uid"], pod["metadata"]["uid"]);

  Json mirror = mirror_pod_for(pod);
  EXPECT_TRUE(is_mirror_pod(mirror));
  EXPECT_FALSE(mirror["metadata"].contains("uid"));
  EXPECT_EQ(mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"],
            pod["metadata"]["uid"]);
  EXPECT_FALSE(mirror.contains("status"));
}

TEST(StaticPodsTest, JsonListsAndSeveralDocuments) {
  std::string two =
      std::string(kManifest) + "---\n" +
      R"({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "kube-system"},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})";
  auto pods = static_pods_from(two, "f", "n1");
  ASSERT_TRUE(pods.is_ok()) << pods.status().to_string();
  ASSERT_EQ(pods->size(), 2u);
  EXPECT_EQ((*pods)[1]["metadata"]["name"], "b-n1");
  EXPECT_EQ((*pods)[1]["metadata"]["namespace"], "kube-system");
  EXPECT_EQ((*pods)[1]["spec"]["containers"][0]["imagePullPolicy"], "Always");  // :latest
}

TEST(StaticPodsTest, BadManifestsAreRejectedWithTheReason) {
  auto not_pod = static_pods_from("kind: Service\nmetadata: {name: x}\n", "f", "n1");
  ASSERT_FALSE(not_pod.is_ok());
  EXPECT_EQ(not_pod.status().message(), "f: not a Pod");
  auto no_name =
      static_pods_from("kind: Pod\nspec: {containers: [{name: c, image: i}]}\n", "f", "n1");
  EXPECT_EQ(no_name.status().message(), "f: metadata.name is required");
  auto no_containers = static_pods_from("kind: Pod\nmetadata: {name: x}\nspec: {}\n", "f", "n1");
  EXPECT_EQ(no_containers.status().message(), "f: spec.containers is required");
  auto broken = static_pods_from("kind: Pod\nmetadata: [unclosed\n", "f", "n1");
  ASSERT_FALSE(broken.is_ok());
  EXPECT_NE(broken.status().message().find("invalid YAML"), std::string::npos);
}

TEST(StaticPodsTest, DirectorySkipsHiddenAndBrokenFiles) {
  testing::TempDir tmp;
  std::ofstream(tmp.sub("a.yaml")) << kManifest;
  std::ofstream(tmp.sub(".hidden.yaml")) << kManifest;
  std::ofstream(tmp.sub("broken.yaml")) << "kind: Deployment\n";
  std::vector<ManifestFile> skipped;
  auto pods = read_manifest_dir(tmp.path(), "n1", &skipped);
  ASSERT_EQ(pods.size(), 1u);
  EXPECT_EQ(pods[0]["metadata"]["name"], "web-n1");
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0].path, tmp.sub("broken.yaml"));
  EXPECT_TRUE(read_manifest_dir(tmp.sub("missing"), "n1").empty());
}

}  // namespace
}  // namespace skiff::kubelet
