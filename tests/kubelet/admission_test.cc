#include "kubelet/admission.h"

#include <gtest/gtest.h>

namespace skiff::kubelet {
namespace {

using Json = nlohmann::json;

Json pod(const std::string& cpu, const std::string& memory) {
  Json c = {{"name", "c"}, {"image", "busybox"}};
  if (!cpu.empty()) c["resources"]["requests"]["cpu"] = cpu;
  if (!memory.empty()) c["resources"]["requests"]["memory"] = memory;
  return {{"metadata", {{"name", "p"}}}, {"spec", {{"containers", Json::array({c})}}}};
}

const Allocatable kNode{2000, 1 << 30, 10LL << 30, 3};

TEST(ResourceAdmissionTest, FitsBesideTheActivePods) {
  EXPECT_TRUE(resource_admission(pod("500m", "256Mi"), {}, kNode).admitted());
  EXPECT_TRUE(resource_admission(pod("1", "512Mi"), {pod("1", "512Mi")}, kNode).admitted());
  // A pod without requests needs only a pod slot.
  EXPECT_TRUE(resource_admission(pod("", ""), {pod("2", "1Gi"), pod("", "")}, kNode).admitted());
}

TEST(ResourceAdmissionTest, TheFirstShortfallInUpstreamsOrderRejects) {
  Admission cpu = resource_admission(pod("600m", "2Gi"), {pod("1500m", "")}, kNode);
  EXPECT_EQ(cpu.reason, "OutOfcpu");
  EXPECT_EQ(cpu.message,
            "Node didn't have enough resource: cpu, requested: 600, used: 1500, "
            "capacity: 2000");
  Admission memory = resource_admission(pod("100m", "600Mi"), {pod("", "512Mi")}, kNode);
  EXPECT_EQ(memory.reason, "OutOfmemory");
  EXPECT_EQ(memory.message,
            "Node didn't have enough resource: memory, requested: 629145600, "
            "used: 536870912, capacity: 1073741824");
  Admission pods = resource_admission(pod("", ""), {pod("", ""), pod("", ""), pod("", "")}, kNode);
  EXPECT_EQ(pods.reason, "OutOfpods");
  EXPECT_EQ(pods.message,
            "Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3");
  Json disk = pod("", "");
  disk["spec"]["containers"][0]["resources"]["requests"]["ephemeral-storage"] = "11Gi";
  EXPECT_EQ(resource_admission(disk, {}, kNode).reason, "OutOfephemeral-storage");
}

TEST(ResourceAdmissionTest, InitContainersCountByTheirMaximum) {
  Json p = pod("500m", "");
  p["spec"]["initContainers"] =
      Json::array({{{"name", "i"}, {"resources", {{"requests", {{"cpu", "1500m"}}}}}}});
  EXPECT_TRUE(resource_admission(p, {pod("500m", "")}, kNode).admitted());
  p["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = "1600m";
  Admission a = resource_admission(p, {pod("500m", "")}, kNode);
  EXPECT_EQ(a.reason, "OutOfcpu");
  EXPECT_NE(a.message.find("requested: 1600,"), std::string::npos) << a.message;
}

}  // namespace
}  // namespace skiff::kubelet
