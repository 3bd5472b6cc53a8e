#include "kubelet/cni/cni_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/pki.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::cni {
namespace {

using nlohmann::json;

CniConfigOptions v4_options() {
  CniConfigOptions options;
  options.pod_cidrs = {"10.42.3.0/24"};
  return options;
}

TEST(CniConfigTest, BridgeHostLocalAndPortmap) {
  auto text = render_cni_conflist(v4_options());
  ASSERT_TRUE(text.is_ok()) << text.status().to_string();
  EXPECT_EQ(text->back(), '\n');
  json conf = json::parse(*text);
  EXPECT_EQ(conf["cniVersion"], "1.0.0");
  EXPECT_EQ(conf["name"], "skiff");
  ASSERT_EQ(conf["plugins"].size(), 2U);
  const json& bridge = conf["plugins"][0];
  EXPECT_EQ(bridge["type"], "bridge");
  EXPECT_EQ(bridge["bridge"], "cni0");
  EXPECT_EQ(bridge["isGateway"], true);
  EXPECT_EQ(bridge["ipMasq"], false);  // masquerade.h does it for the node
  EXPECT_EQ(bridge["hairpinMode"], true);
  EXPECT_FALSE(bridge.contains("mtu"));
  const json& ipam = bridge["ipam"];
  EXPECT_EQ(ipam["type"], "host-local");
  EXPECT_EQ(ipam["ranges"], json::parse(R"([[{"subnet":"10.42.3.0/24"}]])"));
  EXPECT_EQ(ipam["routes"], json::parse(R"([{"dst":"0.0.0.0/0"}])"));
  EXPECT_FALSE(ipam.contains("dataDir"));
  const json& portmap = conf["plugins"][1];
  EXPECT_EQ(portmap["type"], "portmap");
  EXPECT_EQ(portmap["capabilities"]["portMappings"], true);
  EXPECT_EQ(portmap["snat"], true);
  // No loopback: containerd sets that up itself.
  for (const json& plugin : conf["plugins"]) EXPECT_NE(plugin["type"], "loopback");
}

TEST(CniConfigTest, DualStackMtuBridgeNameAndDataDir) {
  CniConfigOptions options;
  options.pod_cidrs = {"10.42.0.0/16", "fd00:42::/64"};
  options.bridge_name = "skiff0";
  options.network_name = "pods";
  options.mtu = 1450;
  options.ipam_data_dir = "/tmp/ipam";
  auto text = render_cni_conflist(options);
  ASSERT_TRUE(text.is_ok()) << text.status().to_string();
  json conf = json::parse(*text);
  EXPECT_EQ(conf["name"], "pods");
  const json& bridge = conf["plugins"][0];
  EXPECT_EQ(bridge["bridge"], "skiff0");
  EXPECT_EQ(bridge["mtu"], 1450);
  EXPECT_EQ(bridge["ipam"]["ranges"],
            json::parse(R"([[{"subnet":"10.42.0.0/16"}],[{"subnet":"fd00:42::/64"}]])"));
  EXPECT_EQ(bridge["ipam"]["routes"], json::parse(R"([{"dst":"0.0.0.0/0"},{"dst":"::/0"}])"));
  EXPECT_EQ(bridge["ipam"]["dataDir"], "/tmp/ipam");
}

TEST(CniConfigTest, BadInputsAreRejected) {
  auto code = [](std::vector<std::string> cidrs, std::string bridge = "cni0") {
    CniConfigOptions options;
    options.pod_cidrs = std::move(cidrs);
    options.bridge_name = std::move(bridge);
    return render_cni_conflist(options).status().code();
  };
  EXPECT_EQ(code({}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.42.0.0"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.42.0.0/33"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.42.0.0/-1"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.42.0.300/24"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.42.0.5/24"}), StatusCode::kInvalidArgument);  // host bits
  EXPECT_EQ(code({"fd00::1/64"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.1.0.0/16", "10.2.0.0/16"}), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.1.0.0/16"}, ""), StatusCode::kInvalidArgument);
  EXPECT_EQ(code({"10.1.0.0/16"}, "a-very-long-bridge-name"), StatusCode::kInvalidArgument);
  EXPECT_EQ(*cidr_family("0.0.0.0/0"), 4);
  EXPECT_EQ(*cidr_family("fd00:42::/64"), 6);
}

TEST(CniConfigTest, WritesAtomicallyAndOnlyOnChange) {
  testing::TempDir dir("skiff-cni");
  std::string conf_dir = dir.sub("etc/cni/net.d");
  auto first = write_cni_conflist(conf_dir, v4_options());
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_TRUE(*first);
  std::string path = conf_dir + "/10-skiff.conflist";
  EXPECT_EQ(*pki::read_file(path), *render_cni_conflist(v4_options()));
  struct stat before;
  ASSERT_EQ(stat(path.c_str(), &before), 0);
  EXPECT_EQ(before.st_mode & 0777, 0644U);

  auto again = write_cni_conflist(conf_dir, v4_options());
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(*again);
  struct stat same;
  ASSERT_EQ(stat(path.c_str(), &same), 0);
  EXPECT_EQ(same.st_ino, before.st_ino);  // not replaced

  CniConfigOptions changed = v4_options();
  changed.pod_cidrs = {"10.42.4.0/24"};
  auto third = write_cni_conflist(conf_dir, changed);
  ASSERT_TRUE(third.is_ok());
  EXPECT_TRUE(*third);
  EXPECT_NE(pki::read_file(path)->find("10.42.4.0/24"), std::string::npos);
  // Only the conflist is left: no temp files.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(conf_dir)) {
    (void)entry;
    ++files;
  }
  EXPECT_EQ(files, 1);

  CniConfigOptions bad;
  EXPECT_FALSE(write_cni_conflist(conf_dir, bad).is_ok());
  EXPECT_NE(pki::read_file(path)->find("10.42.4.0/24"), std::string::npos);
}

}  // namespace
}  // namespace skiff::kubelet::cni
