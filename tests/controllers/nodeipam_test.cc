#include <gtest/gtest.h>

#include <atomic>
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

// An update that queues the node again while its block is being patched, seen by the cache
// only after the patch returned: the second pass must find the block at the API server rather
// than hand the node another one (and leak the first).
TEST_F(NodeIpamControllerTest, ANodeQueuedAgainBeforeTheCacheSeesItsBlockKeepsIt) {
  class SlowCacheApi : public client::FakeApiClient {
   public:
    std::atomic<bool> requeued{false};
    Result<Json> patch(const client::Resource& r, std::string_view ns, std::string_view name,
                       client::PatchType type, std::string_view body,
                       const client::WriteOptions& options = {},
                       std::string_view subresource = {}) override {
      if (r.display_name() == "nodes" && !touched_.exchange(true)) {
        // A status change that does not carry the block (the kubelet's heartbeat, say).
        auto node = get(r, ns, name).value();
        node["status"]["phase"] = "Running";
        seed(r, node);
        testing::eventually([&] { return requeued.load(); }, 5s);
      }
      return client::FakeApiClient::patch(r, ns, name, type, body, options, subresource);
    }

   private:
    std::atomic<bool> touched_{false};
  } api;
  client::InformerFactory informers(api);
  ControllerContext ctx{api, informers, clock_, {}, [&](const std::string& component) {
                          return std::make_unique<client::EventRecorder>(api, component);
                        }};
  api.seed(kNodes, {{"metadata", {{"name", "a"}}}});
  auto c = new_nodeipam_controller(ctx);
  // After the controller's own handler: hold the informer on the heartbeat, so the patch that
  // follows reaches the cache only after the worker has looked at the node again.
  informers.informer(kNodes).add_handlers(
      {nullptr,
       [&](const ObjectPtr&, const ObjectPtr& n) {
         if (n->value("status", Json::object()).value("phase", "") != "Running" ||
             api.requeued.exchange(true)) {
           return;
         }
         std::this_thread::sleep_for(300ms);
       },
       nullptr});
  c->start();
  informers.start();
  testing::eventually([&] { return api.actions("patch", "nodes").size() >= 1; }, 5s);
  std::this_thread::sleep_for(500ms);
  auto patches = api.actions("patch", "nodes");
  ASSERT_EQ(patches.size(), 1u);
  EXPECT_EQ(api.get(kNodes, "", "a").value()["spec"]["podCIDR"], "10.42.0.0/24");
  c->stop();
  informers.stop();
}

}  // namespace
}  // namespace skiff::controllers
