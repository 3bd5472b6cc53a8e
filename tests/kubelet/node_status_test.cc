#include "kubelet/node_status.h"

#include <gtest/gtest.h>

#include <atomic>

#include "client/fake_api_client.h"
#include "kubelet/cri/fake_runtime.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

using namespace std::chrono_literals;
using client::resources::kNodes;
using Json = nlohmann::json;

class NodeStatusTest : public ::testing::Test {
 protected:
  NodeStatusOptions options() {
    NodeStatusOptions o;
    o.node_name = "node-1";
    o.node_ip = "10.0.0.5";
    o.hostname = "node-1";
    o.data_dir = dir_.path();
    o.lease_renew_interval = 1h;
    o.status_update_interval = 1h;  // reports come from poke()
    o.memory_pressure = [this] { return memory_.load(); };
    o.disk_pressure = [this] { return disk_.load(); };
    o.pid_pressure = [this] { return pid_.load(); };
    return o;
  }

  // The Node's condition of `type`, or null.
  Json condition(const std::string& type) {
    auto node = api_.get(kNodes, "", "node-1");
    if (!node.is_ok()) return nullptr;
    for (const Json& c : (*node)["status"].value("conditions", Json::array())) {
      if (c.value("type", "") == type) return c;
    }
    return nullptr;
  }

  bool condition_is(const std::string& type, const std::string& status) {
    Json c = condition(type);
    return c.is_object() && c.value("status", "") == status;
  }

  skiff::testing::TempDir dir_;
  client::FakeApiClient api_;
  cri::FakeRuntime runtime_;
  std::atomic<bool> memory_{false};
  std::atomic<bool> disk_{false};
  std::atomic<bool> pid_{false};
};

TEST_F(NodeStatusTest, PidPressureFollowsTheEvictionManager) {
  NodeStatusManager manager(api_, runtime_, options(), nullptr);
  manager.start();
  ASSERT_TRUE(skiff::testing::eventually([&] { return condition_is("PIDPressure", "False"); }));
  Json c = condition("PIDPressure");
  EXPECT_EQ(c["reason"], "KubeletHasSufficientPID");
  EXPECT_EQ(c["message"], "kubelet has sufficient PID available");
  EXPECT_TRUE(condition_is("Ready", "True"));

  pid_ = true;
  manager.poke();
  ASSERT_TRUE(skiff::testing::eventually([&] { return condition_is("PIDPressure", "True"); }));
  c = condition("PIDPressure");
  EXPECT_EQ(c["reason"], "KubeletHasInsufficientPID");
  EXPECT_EQ(c["message"], "kubelet has insufficient PID available");
  // The other pressure conditions are their own.
  EXPECT_TRUE(condition_is("MemoryPressure", "False"));
  EXPECT_TRUE(condition_is("DiskPressure", "False"));
  EXPECT_TRUE(condition_is("Ready", "True"));

  pid_ = false;
  disk_ = true;
  manager.poke();
  ASSERT_TRUE(skiff::testing::eventually([&] { return condition_is("PIDPressure", "False"); }));
  EXPECT_TRUE(condition_is("DiskPressure", "True"));
  EXPECT_EQ(condition("DiskPressure")["reason"], "KubeletHasDiskPressure");
  manager.stop();
}

TEST_F(NodeStatusTest, WithoutPressureCallbacksTheNodeHasNoPressure) {
  NodeStatusOptions o = options();
  o.memory_pressure = nullptr;
  o.disk_pressure = nullptr;
  o.pid_pressure = nullptr;
  NodeStatusManager manager(api_, runtime_, o, nullptr);
  manager.start();
  ASSERT_TRUE(skiff::testing::eventually([&] { return condition_is("PIDPressure", "False"); }));
  EXPECT_TRUE(condition_is("MemoryPressure", "False"));
  EXPECT_TRUE(condition_is("DiskPressure", "False"));
  manager.stop();
}

}  // namespace
}  // namespace skiff::kubelet
