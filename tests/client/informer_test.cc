#include "client/informer.h"

#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "support/eventually.h"

namespace skiff::client {
namespace {

using namespace std::chrono_literals;
using resources::kPods;
using skiff::testing::eventually;

Json pod(const std::string& ns, const std::string& name, const std::string& node = "") {
  Json p = {{"metadata", {{"namespace", ns}, {"name", name}, {"labels", {{"app", "web"}}}}},
            {"spec", {{"containers", Json::array()}}}};
  if (!node.empty()) p["spec"]["nodeName"] = node;
  return p;
}

struct Recorder {
  std::mutex mu;
  std::vector<std::string> events;
  EventHandlers handlers() {
    return {[this](const ObjectPtr& o) { add("add " + key_of(*o)); },
            [this](const ObjectPtr& old, const ObjectPtr& o) {
              add("update " + key_of(*o) + " " + resource_version_of(*old) + "->" +
                  resource_version_of(*o));
            },
            [this](const ObjectPtr& o) { add("delete " + key_of(*o)); }};
  }
  void add(std::string e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
  }
  std::vector<std::string> get() {
    std::lock_guard lock(mu);
    return events;
  }
};

TEST(Informer, ListsThenFollowsWatch) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a"));
  api.seed(kPods, pod("other", "b"));
  Informer informer(api, kPods);
  Recorder rec;
  informer.add_handlers(rec.handlers());
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  EXPECT_EQ(informer.size(), 2u);
  ASSERT_TRUE(informer.get("default/a"));
  EXPECT_EQ((*informer.get("default", "a"))["kind"], "Pod");

  ASSERT_TRUE(api.create(kPods, "default", pod("default", "c")).is_ok());
  auto a = api.get(kPods, "default", "a").value();
  a["metadata"]["labels"]["v"] = "2";
  ASSERT_TRUE(api.update(kPods, "default", a).is_ok());
  ASSERT_TRUE(api.remove(kPods, "other", "b").is_ok());
  ASSERT_TRUE(eventually([&] { return informer.size() == 2 && informer.get("default/c"); }));
  ASSERT_TRUE(eventually([&] { return rec.get().size() == 5; }));
  auto events = rec.get();
  EXPECT_EQ(events[2], "add default/c");
  EXPECT_EQ(events[3].rfind("update default/a", 0), 0u);
  EXPECT_EQ(events[4], "delete other/b");
  EXPECT_EQ((*informer.get("default/a"))["metadata"]["labels"]["v"], "2");
  EXPECT_EQ(informer.list("default").size(), 2u);
  EXPECT_EQ(informer.list("other").size(), 0u);
}

TEST(Informer, IndexesFollowChanges) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a", "n1"));
  api.seed(kPods, pod("default", "b", "n1"));
  api.seed(kPods, pod("default", "c"));
  Informer informer(api, kPods);
  informer.add_index("node", [](const Json& p) -> std::vector<std::string> {
    std::string node = p["spec"].value("nodeName", "");
    if (node.empty()) return {};
    return {node};
  });
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  EXPECT_EQ(informer.by_index("node", "n1").size(), 2u);
  Json binding = {{"target", {{"kind", "Node"}, {"name", "n2"}}}};
  ASSERT_TRUE(api.create(kPods, "default", binding, {}, "c", "binding").is_ok());
  ASSERT_TRUE(api.remove(kPods, "default", "a").is_ok());
  ASSERT_TRUE(eventually([&] { return informer.by_index("node", "n2").size() == 1; }));
  ASSERT_TRUE(eventually([&] { return informer.by_index("node", "n1").size() == 1; }));
  EXPECT_EQ(name_of(*informer.by_index("node", "n1")[0]), "b");
}

TEST(Informer, RelistsAfterExpiredWatchAndReportsTheDifference) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a"));
  api.seed(kPods, pod("default", "b"));
  InformerOptions opts;
  opts.retry_initial = 10ms;
  Informer informer(api, kPods, opts);
  Recorder rec;
  informer.add_handlers(rec.handlers());
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  // Watches fail while changes happen: the informer must notice them by listing again.
  api.fail("watch", "pods", error(StatusCode::kUnavailable, "down"), 3);
  api.expire_watches();
  api.seed(kPods, pod("default", "c"));
  // Delete b behind the informer's back: its watch is gone, so only a relist can tell.
  ASSERT_TRUE(api.remove(kPods, "default", "b").is_ok());
  ASSERT_TRUE(eventually([&] {
    auto e = rec.get();
    return std::find(e.begin(), e.end(), "delete default/b") != e.end() &&
           std::find(e.begin(), e.end(), "add default/c") != e.end();
  }));
  EXPECT_EQ(informer.size(), 2u);
  // And it watches again afterwards.
  ASSERT_TRUE(api.create(kPods, "default", pod("default", "d")).is_ok());
  ASSERT_TRUE(eventually([&] { return informer.get("default/d") != nullptr; }));
}

TEST(Informer, RetriesAFailingList) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a"));
  api.fail("list", "pods", error(StatusCode::kUnavailable, "down"), 2);
  InformerOptions opts;
  opts.retry_initial = 5ms;
  Informer informer(api, kPods, opts);
  informer.start();
  EXPECT_TRUE(informer.wait_for_sync(5s));
  EXPECT_EQ(informer.size(), 1u);
}

TEST(Informer, SelectorsLimitTheCache) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a", "n1"));
  api.seed(kPods, pod("default", "b", "n2"));
  InformerOptions opts;
  opts.field_selector = "spec.nodeName=n1";
  Informer informer(api, kPods, opts);
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  EXPECT_EQ(informer.size(), 1u);
  ASSERT_TRUE(api.create(kPods, "default", pod("default", "c", "n1")).is_ok());
  ASSERT_TRUE(api.create(kPods, "default", pod("default", "d", "n2")).is_ok());
  ASSERT_TRUE(eventually([&] { return informer.size() == 2; }));
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(informer.size(), 2u);
  EXPECT_FALSE(informer.get("default/d"));
}

TEST(Informer, ResyncRedeliversCachedObjects) {
  FakeApiClient api;
  api.seed(kPods, pod("default", "a"));
  InformerOptions opts;
  opts.resync_period = 20ms;
  Informer informer(api, kPods, opts);
  std::atomic<int> resyncs{0};
  informer.add_handlers({nullptr,
                         [&](const ObjectPtr& old, const ObjectPtr& o) {
                           if (old == o) resyncs++;
                         },
                         nullptr});
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  EXPECT_TRUE(eventually([&] { return resyncs.load() >= 2; }));
}

TEST(Informer, StopsPromptlyWhileWatching) {
  FakeApiClient api;
  Informer informer(api, kPods);
  informer.start();
  ASSERT_TRUE(informer.wait_for_sync(5s));
  auto t0 = std::chrono::steady_clock::now();
  informer.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

TEST(InformerFactory, SharesOneInformerPerResourceAndStripsManagedFields) {
  FakeApiClient api;
  Json p = pod("default", "a");
  p["metadata"]["managedFields"] = Json::array({{{"manager", "kubectl"}}});
  api.seed(kPods, p);
  InformerFactory factory(api);
  Informer& a = factory.informer(kPods);
  Informer& b = factory.informer(kPods);
  EXPECT_EQ(&a, &b);
  factory.start();
  ASSERT_TRUE(factory.wait_for_sync(5s));
  EXPECT_FALSE(a.get("default/a")->at("metadata").contains("managedFields"));
  // Created after start: started at once.
  Informer& nodes = factory.informer(resources::kNodes);
  EXPECT_TRUE(nodes.wait_for_sync(5s));
}

}  // namespace
}  // namespace skiff::client
