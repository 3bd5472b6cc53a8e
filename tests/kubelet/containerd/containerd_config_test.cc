#include "kubelet/containerd/containerd_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace skiff::kubelet::containerd {
namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The body of a [table] in the rendered TOML: the lines after its header up to the next header.
std::string table(const std::string& toml, const std::string& header) {
  size_t start = toml.find("\n" + header + "\n");
  if (start == std::string::npos) return "";
  start += header.size() + 2;
  size_t end = toml.find("\n[", start);
  return toml.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

TEST(ContainerdPathsTest, LayoutUnderTheDataDir) {
  ContainerdOptions options;
  options.data_dir = "/var/lib/skiff/agent/";
  auto paths = containerd_paths(options);
  ASSERT_TRUE(paths.is_ok());
  EXPECT_EQ(paths->base, "/var/lib/skiff/agent/containerd");
  EXPECT_EQ(paths->root, "/var/lib/skiff/agent/containerd/root");
  EXPECT_EQ(paths->state, "/var/lib/skiff/agent/containerd/state");
  EXPECT_EQ(paths->socket, "/var/lib/skiff/agent/containerd/containerd.sock");
  EXPECT_EQ(paths->config, "/var/lib/skiff/agent/containerd/config.toml");
  EXPECT_EQ(paths->log, "/var/lib/skiff/agent/containerd/containerd.log");
  EXPECT_EQ(paths->cni_conf_dir, "/var/lib/skiff/agent/cni/net.d");
  EXPECT_EQ(paths->socket_fallback_dir, "");

  options.cni_conf_dir = "/etc/cni/net.d";
  options.log_file = "/var/log/containerd.log";
  paths = containerd_paths(options);
  EXPECT_EQ(paths->cni_conf_dir, "/etc/cni/net.d");
  EXPECT_EQ(paths->log, "/var/log/containerd.log");

  options.data_dir = "";
  EXPECT_EQ(containerd_paths(options).status().code(), StatusCode::kInvalidArgument);
}

TEST(ContainerdPathsTest, LongDataDirMovesTheSocketUnderRun) {
  ContainerdOptions options;
  // Exactly at the limit: socket plus ".ttrpc" fits sun_path.
  std::string suffix = "/containerd/containerd.sock";
  std::string fits = "/" + std::string(kMaxSocketPathLength - suffix.size() - 1, 'a');
  options.data_dir = fits;
  auto paths = containerd_paths(options);
  ASSERT_TRUE(paths.is_ok());
  EXPECT_EQ(paths->socket, fits + suffix);
  EXPECT_EQ(paths->socket.size(), kMaxSocketPathLength);
  EXPECT_EQ(paths->socket_fallback_dir, "");

  options.data_dir = fits + "b";
  paths = containerd_paths(options);
  ASSERT_TRUE(paths.is_ok());
  EXPECT_EQ(paths->socket_fallback_dir.rfind("/run/skiff-", 0), 0U) << paths->socket;
  EXPECT_EQ(paths->socket, paths->socket_fallback_dir + "/containerd.sock");
  EXPECT_LE(paths->socket.size() + 6, 107U);
  // Everything else stays under the data dir.
  EXPECT_EQ(paths->root, fits + "b/containerd/root");

  // Stable for one data dir, different for another.
  auto again = containerd_paths(options);
  EXPECT_EQ(again->socket, paths->socket);
  options.data_dir = fits + "c";
  EXPECT_NE(containerd_paths(options)->socket, paths->socket);
}

TEST(ContainerdConfigTest, RendersWhatTheNodeNeeds) {
  ContainerdOptions options;
  options.data_dir = "/d";
  options.sandbox_image = "registry.k8s.io/pause:3.9";
  options.cni_bin_dir = "/usr/lib/cni";
  auto paths = containerd_paths(options);
  ASSERT_TRUE(paths.is_ok());
  std::string toml = render_containerd_config(options, *paths);

  EXPECT_TRUE(contains(toml, "\nversion = 2\n")) << toml;
  EXPECT_TRUE(contains(toml, "\nroot = \"/d/containerd/root\"\n"));
  EXPECT_TRUE(contains(toml, "\nstate = \"/d/containerd/state\"\n"));
  EXPECT_TRUE(contains(toml, "\"io.containerd.internal.v1.opt\""));
  EXPECT_TRUE(contains(toml, "\"io.containerd.snapshotter.v1.devmapper\""));
  EXPECT_EQ(table(toml, "[grpc]"), "  address = \"/d/containerd/containerd.sock\"\n");

  std::string cri = table(toml, "[plugins.\"io.containerd.grpc.v1.cri\"]");
  EXPECT_TRUE(contains(cri, "sandbox_image = \"registry.k8s.io/pause:3.9\"")) << cri;
  EXPECT_TRUE(contains(cri, "restrict_oom_score_adj = true")) << cri;
  EXPECT_TRUE(contains(cri, "enable_selinux = false")) << cri;
  EXPECT_TRUE(contains(cri, "stream_server_address = \"127.0.0.1\"")) << cri;
  std::string runtime = table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".containerd]");
  EXPECT_TRUE(contains(runtime, "snapshotter = \"overlayfs\"")) << runtime;
  EXPECT_TRUE(contains(runtime, "default_runtime_name = \"runc\"")) << runtime;
  EXPECT_TRUE(
      contains(table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"),
               "runtime_type = \"io.containerd.runc.v2\""));
  EXPECT_EQ(table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]"),
            "  SystemdCgroup = false\n");
  std::string cni = table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".cni]");
  EXPECT_TRUE(contains(cni, "bin_dir = \"/usr/lib/cni\"")) << cni;
  EXPECT_TRUE(contains(cni, "conf_dir = \"/d/cni/net.d\"")) << cni;
  // No registry table unless a hosts directory is configured.
  EXPECT_FALSE(contains(toml, ".registry]"));
  EXPECT_FALSE(contains(toml, "config_path"));

  options.registry_config_path = "/d/registries";
  toml = render_containerd_config(options, *paths);
  EXPECT_EQ(table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".registry]"),
            "  config_path = \"/d/registries\"\n");

  options.runtime_binary = "/opt/skiff/skiff-crun";
  toml = render_containerd_config(options, *paths);
  EXPECT_EQ(table(toml, "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]"),
            "  SystemdCgroup = false\n  BinaryName = \"/opt/skiff/skiff-crun\"\n");
}

// A directory with the named executables in it.
class OciRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/skiff-oci-runtime-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    std::filesystem::create_directories(dir_ + "/helper");
    std::filesystem::create_directories(dir_ + "/bin");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void make_executable(const std::string& path) {
    std::ofstream(path) << "#!/bin/sh\n";
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }
  std::string dir_;
};

TEST_F(OciRuntimeTest, CrunWhenTheHelperAndCrunAreThere) {
  std::string helper_dir = dir_ + "/helper", path = dir_ + "/bin";
  // Neither: auto falls back to runc; crun asked for is an error naming what is missing.
  EXPECT_EQ(oci_runtime_binary("auto", helper_dir, path).value(), "");
  auto crun = oci_runtime_binary("crun", helper_dir, path);
  ASSERT_FALSE(crun.is_ok());
  EXPECT_EQ(crun.status().code(), StatusCode::kNotFound);
  EXPECT_NE(crun.status().message().find("skiff-crun"), std::string::npos);

  make_executable(helper_dir + "/skiff-crun");
  crun = oci_runtime_binary("crun", helper_dir, path);
  ASSERT_FALSE(crun.is_ok());
  EXPECT_NE(crun.status().message().find("crun is not installed"), std::string::npos);
  EXPECT_EQ(oci_runtime_binary("auto", helper_dir, path).value(), "");

  make_executable(path + "/crun");
  EXPECT_EQ(oci_runtime_binary("crun", helper_dir, path).value(), helper_dir + "/skiff-crun");
  EXPECT_EQ(oci_runtime_binary("auto", helper_dir, path).value(), helper_dir + "/skiff-crun");
  EXPECT_EQ(oci_runtime_binary("runc", helper_dir, path).value(), "");
  EXPECT_EQ(oci_runtime_binary("youki", helper_dir, path).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(ContainerdConfigTest, QuotesPathsAndListsDisabledPlugins) {
  ContainerdOptions options;
  options.data_dir = "/tmp/we\"ird\\dir";
  options.disabled_plugins = {"a", "b"};
  auto paths = containerd_paths(options);
  ASSERT_TRUE(paths.is_ok());
  std::string toml = render_containerd_config(options, *paths);
  EXPECT_TRUE(contains(toml, "root = \"/tmp/we\\\"ird\\\\dir/containerd/root\"")) << toml;
  EXPECT_TRUE(contains(toml, "disabled_plugins = [\"a\", \"b\"]")) << toml;
}

}  // namespace
}  // namespace skiff::kubelet::containerd
