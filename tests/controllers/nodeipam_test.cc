#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/nodeipam/nodeipam_controller.h"

namespace skiff::controllers {
namespace {

using namespace std::chrono_literals;
using client::resources::kNodes;

TEST(CidrSet, AllocatesOccupiesAndReleasesBlocks) {
  auto set = CidrSet::create("10.42.0.0/16", 24).value();
  EXPECT_EQ(set.allocate().value(), "10.42.0.0/24");
  ASSERT_TRUE(set.occupy("10.42.1.0/24").is_ok());
  EXPECT_EQ(set.allocate().value(), "10.42.2.0/24");
  set.release("10.42.0.0/24");
  EXPECT_EQ(set.used(), 2u);
  EXPECT_FALSE(set.occupy("10.43.0.0/24").is_ok());
  EXPECT_FALSE(set.occupy("10.42.0.0/25").is_ok());
  EXPECT_FALSE(CidrSet::create("10.42.0.0/16", 8).is_ok());
  EXPECT_FALSE(CidrSet::create("nonsense", 24).is_ok());
}

TEST(CidrSet, RunsOut) {
  auto set = CidrSet::create("10.0.0.0/30", 31).value();
  EXPECT_TRUE(set.allocate().is_ok());
  EXPECT_TRUE(set.allocate().is_ok());
  auto third = set.allocate();
  ASSERT_FALSE(third.is_ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
}

using NodeIpamControllerTest = testing::ControllerTest<>;

TEST_F(NodeIpamControllerTest, GivesEachNodeItsOwnBlockAvoidingTakenOnes) {
  api_.seed(kNodes, {{"metadata", {{"name", "old"}}}, {"spec", {{"podCIDR", "10.42.0.0/24"}}}});
  api_.seed(kNodes, {{"metadata", {{"name", "a"}}}, {"spec", Json::object()}});
  auto c = new_nodeipam_controller(ctx_);
  c->start();
  informers_.start();
  ASSERT_TRUE(api_.create(kNodes, "", {{"metadata", {{"name", "b"}}}}).is_ok());
  std::set<std::string> cidrs;
  testing::eventually(
      [&] {
        cidrs.clear();
        for (const char* n : {"old", "a", "b"}) {
          auto node = api_.get(kNodes, "", n).value();
          cidrs.insert(node.value("spec", Json::object()).value("podCIDR", ""));
        }
        return !cidrs.count("");
      },
      5s);
  EXPECT_EQ(cidrs, (std::set<std::string>{"10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"}));
  auto a = api_.get(kNodes, "", "a").value();
  EXPECT_EQ(a["spec"]["podCIDRs"][0], a["spec"]["podCIDR"]);
  c->stop();
  informers_.stop();
}

}  // namespace
}  // namespace skiff::controllers
