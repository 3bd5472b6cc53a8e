#include "kubelet/volumes.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Objects {
  std::map<std::string, std::map<std::string, std::string>> config_maps;
  std::map<std::string, std::map<std::string, std::string>> secrets;

  ObjectSource source() {
    ObjectSource s;
    s.config_map = [this](const std::string& ns,
                          const std::string& name) -> Result<std::map<std::string, std::string>> {
      auto it = config_maps.find(ns + "/" + name);
      if (it == config_maps.end()) return error(StatusCode::kNotFound, "not found");
      return it->second;
    };
    s.secret = [this](const std::string& ns,
                      const std::string& name) -> Result<std::map<std::string, std::string>> {
      auto it = secrets.find(ns + "/" + name);
      if (it == secrets.end()) return error(StatusCode::kNotFound, "not found");
      return it->second;
    };
    return s;
  }
};

Json pod_with(Json volumes, Json mounts) {
  Json pod = {{"metadata",
               {{"name", "p"}, {"namespace", "ns"}, {"uid", "uid-1"}, {"labels", {{"app", "x"}}}}},
              {"spec",
               {{"volumes", volumes},
                {"containers",
                 Json::array({{{"name", "c"}, {"image", "busybox"}, {"volumeMounts", mounts}}})}}}};
  return pod;
}

TEST(AtomicWriterTest, WritesThroughDataLinkAndSwapsWhole) {
  testing::TempDir tmp;
  std::string dir = tmp.sub("vol");
  ASSERT_TRUE(write_atomic_dir(dir, {{"a", "1", 0644}, {"sub/b", "2", 0600}}).is_ok());
  EXPECT_EQ(read(dir + "/a"), "1");
  EXPECT_EQ(read(dir + "/sub/b"), "2");
  EXPECT_TRUE(fs::is_symlink(dir + "/..data"));
  EXPECT_TRUE(fs::is_symlink(dir + "/a"));
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/sub/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string first = fs::read_symlink(dir + "/..data").string();

  // Unchanged content keeps the same generation.
  ASSERT_TRUE(write_atomic_dir(dir, {{"a", "1", 0644}, {"sub/b", "2", 0600}}).is_ok());
  EXPECT_EQ(fs::read_symlink(dir + "/..data").string(), first);

  // A change replaces the set: a removed key disappears, the old generation is gone.
  ASSERT_TRUE(write_atomic_dir(dir, {{"a", "10", 0644}}).is_ok());
  EXPECT_EQ(read(dir + "/a"), "10");
  EXPECT_FALSE(fs::exists(dir + "/sub"));
  EXPECT_NE(fs::read_symlink(dir + "/..data").string(), first);
  EXPECT_FALSE(fs::exists(dir + "/" + first));
}

TEST(AtomicWriterTest, RejectsPathsThatEscape) {
  testing::TempDir tmp;
  EXPECT_FALSE(write_atomic_dir(tmp.sub("v"), {{"../x", "1", 0644}}).is_ok());
  EXPECT_FALSE(write_atomic_dir(tmp.sub("v"), {{"/etc/x", "1", 0644}}).is_ok());
}

TEST(VolumeManagerTest, ConfigMapSecretDownwardAndEmptyDir) {
  testing::TempDir tmp;
  Objects objects;
  objects.config_maps["ns/cfg"] = {{"app.conf", "x=1"}, {"other", "y"}};
  objects.secrets["ns/sec"] = {{"token", "abc"}};
  VolumeManager volumes(tmp.sub("pods"), objects.source());
  Json pod = pod_with(Json::parse(R"([
        {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "app.conf", "path": "conf/app.conf"}]}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 256}},
        {"name": "info", "downwardAPI": {"items": [
           {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
           {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "scratch", "emptyDir": {}}
      ])"),
                      Json::parse(R"([
        {"name": "cfg", "mountPath": "/etc/app"},
        {"name": "sec", "mountPath": "/secret"},
        {"name": "info", "mountPath": "/info"},
        {"name": "scratch", "mountPath": "/scratch", "subPath": "part"}
      ])"));
  ASSERT_TRUE(volumes.set_up(pod).is_ok());
  std::string base = tmp.sub("pods") + "/uid-1/volumes/kubernetes.io~";
  EXPECT_EQ(read(base + "configmap/cfg/conf/app.conf"), "x=1");
  EXPECT_FALSE(fs::exists(base + "configmap/cfg/other"));  // items narrow the keys
  EXPECT_EQ(read(base + "secret/sec/token"), "abc");
  struct stat st {};
  ASSERT_EQ(::stat((base + "secret/sec/token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0400u);
  EXPECT_EQ(read(base + "downward-api/info/labels"), "app=\"x\"\n");
  EXPECT_EQ(read(base + "downward-api/info/name"), "p");
  EXPECT_TRUE(fs::is_directory(base + "empty-dir/scratch"));

  auto mounts = volumes.mounts_for(pod, pod["spec"]["containers"][0], "10.42.0.9", "p");
  ASSERT_TRUE(mounts.is_ok()) << mounts.status().to_string();
  std::map<std::string, ContainerMount> by_path;
  for (const auto& m : *mounts) by_path[m.container_path] = m;
  EXPECT_TRUE(by_path["/etc/app"].read_only);
  EXPECT_EQ(by_path["/scratch"].host_path, base + "empty-dir/scratch/part");
  EXPECT_TRUE(fs::is_directory(base + "empty-dir/scratch/part"));
  ASSERT_TRUE(by_path.count("/etc/hosts"));
  EXPECT_NE(read(by_path["/etc/hosts"].host_path).find("10.42.0.9\tp\n"), std::string::npos);
  ASSERT_TRUE(by_path.count("/dev/termination-log"));

  // A container's termination message comes back.
  std::ofstream(by_path["/dev/termination-log"].host_path) << "bye";
  EXPECT_EQ(volumes.termination_message("uid-1", "c"), "bye");

  // Updates reach the volume on the next set_up.
  objects.config_maps["ns/cfg"]["app.conf"] = "x=2";
  ASSERT_TRUE(volumes.set_up(pod).is_ok());
  EXPECT_EQ(read(base + "configmap/cfg/conf/app.conf"), "x=2");

  EXPECT_EQ(volumes.pods_on_disk(), std::vector<std::string>{"uid-1"});
  ASSERT_TRUE(volumes.tear_down("uid-1").is_ok());
  EXPECT_FALSE(fs::exists(tmp.sub("pods") + "/uid-1"));
}

TEST(VolumeManagerTest, MissingSourcesAndBadHostPathsAreErrors) {
  testing::TempDir tmp;
  Objects objects;
  VolumeManager volumes(tmp.sub("pods"), objects.source());
  Json pod =
      pod_with(Json::parse(R"([{"name": "cfg", "configMap": {"name": "absent"}}])"), Json::array());
  Status s = volumes.set_up(pod);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.message(), "volume \"cfg\": configmap \"absent\" not found");

  pod["spec"]["volumes"][0]["configMap"]["optional"] = true;
  EXPECT_TRUE(volumes.set_up(pod).is_ok());

  pod = pod_with(Json::parse(R"([{"name": "h", "hostPath": {"path": ")" + tmp.path() +
                             R"(", "type": "File"}}])"),
                 Json::array());
  s = volumes.set_up(pod);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("is not a File"), std::string::npos);

  pod = pod_with(Json::parse(R"([{"name": "h", "hostPath": {"path": ")" + tmp.sub("made/here") +
                             R"(", "type": "DirectoryOrCreate"}}])"),
                 Json::array());
  ASSERT_TRUE(volumes.set_up(pod).is_ok());
  EXPECT_TRUE(fs::is_directory(tmp.sub("made/here")));

  pod = pod_with(Json::parse(R"([{"name": "x", "nfs": {"server": "a", "path": "/"}}])"),
                 Json::array());
  s = volumes.set_up(pod);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("nfs"), std::string::npos);

  // A mount of a volume the pod does not have.
  pod = pod_with(Json::array(), Json::parse(R"([{"name": "nope", "mountPath": "/x"}])"));
  auto mounts = volumes.mounts_for(pod, pod["spec"]["containers"][0], "", "p");
  EXPECT_FALSE(mounts.is_ok());
  ASSERT_TRUE(volumes.tear_down("uid-1").is_ok());
}

TEST(VolumeManagerTest, MemoryEmptyDirIsATmpfsUnmountedOnTearDown) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting tmpfs needs root";
  testing::TempDir tmp;
  Objects objects;
  VolumeManager volumes(tmp.sub("pods"), objects.source());
  Json pod =
      pod_with(Json::parse(R"([{"name": "m", "emptyDir": {"medium": "Memory"}}])"), Json::array());
  ASSERT_TRUE(volumes.set_up(pod).is_ok());
  std::string dir = tmp.sub("pods") + "/uid-1/volumes/kubernetes.io~empty-dir/m";
  EXPECT_NE(read("/proc/self/mountinfo").find(dir), std::string::npos);
  ASSERT_TRUE(volumes.set_up(pod).is_ok());  // idempotent: not mounted twice
  ASSERT_TRUE(volumes.tear_down("uid-1").is_ok());
  EXPECT_EQ(read("/proc/self/mountinfo").find(dir), std::string::npos);
}

}  // namespace
}  // namespace skiff::kubelet
