#include "apiserver/service_allocator.h"

#include <gtest/gtest.h>

#include <set>

#include "storage/memory/memory_store.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;

json service(const std::string& name, const std::string& type, json ports, std::string ip = "") {
  json svc{{"metadata", {{"name", name}, {"namespace", "default"}}},
           {"spec", {{"type", type}, {"ports", std::move(ports)}}}};
  if (!ip.empty()) svc["spec"]["clusterIP"] = ip;
  return svc;
}

class ServiceAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = storage::new_memory_store({});
    auto a = ServiceAllocator::create(*store_, "10.43.0.0/24", 30000, 30009);
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    alloc_ = std::move(a).value();
  }
  int64_t reservations() {
    return store_->range(storage::KeyRange::prefix("/registry/ranges/"))->count;
  }
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<ServiceAllocator> alloc_;
};

TEST_F(ServiceAllocatorTest, AllocatesDistinctIpsInRangeAndSkipsDnsAddress) {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    json svc = service("s" + std::to_string(i), "ClusterIP", json::array({{{"port", 80}}}));
    ASSERT_FALSE(alloc_->reserve(svc, nullptr).has_value());
    std::string ip = svc["spec"]["clusterIP"];
    EXPECT_TRUE(alloc_->ip_in_range(ip)) << ip;
    EXPECT_NE(ip, "10.43.0.10");
    EXPECT_TRUE(seen.insert(ip).second) << "duplicate " << ip;
    EXPECT_EQ(svc["spec"]["clusterIPs"], json::array({ip}));
  }
  EXPECT_EQ(reservations(), 200);
}

TEST_F(ServiceAllocatorTest, RequestedIpConflictsAndOutOfRangeAreInvalid) {
  json a = service("a", "ClusterIP", json::array({{{"port", 80}}}), "10.43.0.5");
  ASSERT_FALSE(alloc_->reserve(a, nullptr).has_value());
  json b = service("b", "ClusterIP", json::array({{{"port", 80}}}), "10.43.0.5");
  auto e = alloc_->reserve(b, nullptr);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->code, 422);
  EXPECT_NE(e->message.find("provided IP is already allocated"), std::string::npos) << e->message;
  json c = service("c", "ClusterIP", json::array({{{"port", 80}}}), "10.99.0.5");
  e = alloc_->reserve(c, nullptr);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("not in the valid range"), std::string::npos) << e->message;
  EXPECT_EQ(reservations(), 1);
}

TEST_F(ServiceAllocatorTest, NodePortsAllocatedReleasedAndNeverLeakedOnError) {
  json a =
      service("a", "NodePort", json::array({{{"port", 80}}, {{"port", 443}, {"nodePort", 30001}}}));
  ASSERT_FALSE(alloc_->reserve(a, nullptr).has_value());
  int first = a["spec"]["ports"][0]["nodePort"];
  EXPECT_GE(first, 30000);
  EXPECT_LE(first, 30009);
  EXPECT_NE(first, 30001);
  EXPECT_EQ(reservations(), 3);  // ip + two ports

  // A second service asking for a taken port fails and keeps nothing it reserved on the way.
  json b =
      service("b", "NodePort", json::array({{{"port", 80}}, {{"port", 81}, {"nodePort", 30001}}}));
  auto e = alloc_->reserve(b, nullptr);
  ASSERT_TRUE(e.has_value());
  EXPECT_NE(e->message.find("provided port is already allocated"), std::string::npos);
  EXPECT_EQ(reservations(), 3);

  // Deleting the first service releases everything it held.
  alloc_->settle(nullptr, &a, true);
  EXPECT_EQ(reservations(), 0);
}

TEST_F(ServiceAllocatorTest, UpdateKeepsHeldValuesAndReleasesDropped) {
  json old = service("a", "NodePort", json::array({{{"port", 80}}}));
  ASSERT_FALSE(alloc_->reserve(old, nullptr).has_value());
  json next = old;
  next["spec"]["type"] = "ClusterIP";
  next["spec"]["ports"][0].erase("nodePort");
  ASSERT_FALSE(alloc_->reserve(next, &old).has_value());
  EXPECT_EQ(next["spec"]["clusterIP"], old["spec"]["clusterIP"]);
  EXPECT_EQ(reservations(), 2);
  alloc_->settle(&next, &old, true);  // the node port is no longer held
  EXPECT_EQ(reservations(), 1);
}

TEST_F(ServiceAllocatorTest, FailedWriteReleasesOnlyNewReservations) {
  json svc = service("a", "ClusterIP", json::array({{{"port", 80}}}));
  ASSERT_FALSE(alloc_->reserve(svc, nullptr).has_value());
  alloc_->settle(&svc, nullptr, false);
  EXPECT_EQ(reservations(), 0);
}

TEST_F(ServiceAllocatorTest, HeadlessAndExternalNameHoldNothing) {
  json headless = service("h", "ClusterIP", json::array({{{"port", 80}}}), "None");
  ASSERT_FALSE(alloc_->reserve(headless, nullptr).has_value());
  EXPECT_EQ(headless["spec"]["clusterIP"], "None");
  json ext = service("e", "ExternalName", json::array());
  ASSERT_FALSE(alloc_->reserve(ext, nullptr).has_value());
  EXPECT_FALSE(ext["spec"].contains("clusterIP"));
  EXPECT_EQ(reservations(), 0);
}

TEST(ServiceAllocatorCreateTest, RejectsBadCidr) {
  auto store = storage::new_memory_store({});
  EXPECT_FALSE(ServiceAllocator::create(*store, "10.43.0.0", 30000, 32767).is_ok());
  EXPECT_FALSE(ServiceAllocator::create(*store, "nope/16", 30000, 32767).is_ok());
  EXPECT_FALSE(ServiceAllocator::create(*store, "10.0.0.0/31", 30000, 32767).is_ok());
}

}  // namespace
}  // namespace skiff::apiserver
