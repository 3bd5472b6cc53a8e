#include "client/event_recorder.h"

#include <gtest/gtest.h>

#include <map>

#include "client/fake_api_client.h"

namespace skiff::client {
namespace {

TEST(EventRecorder, WritesEventsAndAggregatesRepeats) {
  FakeApiClient api;
  Json pod = {{"kind", "Pod"},
              {"apiVersion", "v1"},
              {"metadata", {{"name", "web-1"}, {"namespace", "shop"}, {"uid", "u1"}}}};
  EventRecorder rec(api, "default-scheduler");
  rec.event(pod, "Normal", "Scheduled", "Successfully assigned shop/web-1 to n1");
  rec.flush();
  auto events = api.list(resources::kEvents, "shop").value()["items"];
  ASSERT_EQ(events.size(), 1u);
  const Json& e = events[0];
  EXPECT_EQ(e["reason"], "Scheduled");
  EXPECT_EQ(e["type"], "Normal");
  EXPECT_EQ(e["involvedObject"]["kind"], "Pod");
  EXPECT_EQ(e["involvedObject"]["uid"], "u1");
  EXPECT_EQ(e["involvedObject"]["namespace"], "shop");
  EXPECT_EQ(e["source"]["component"], "default-scheduler");
  EXPECT_EQ(e["count"], 1);
  EXPECT_EQ(e["metadata"]["name"].get<std::string>().rfind("web-1.", 0), 0u);

  rec.event(pod, "Normal", "Scheduled", "Successfully assigned shop/web-1 to n1");
  rec.event(pod, "Warning", "FailedScheduling", "0/1 nodes are available");
  rec.flush();
  events = api.list(resources::kEvents, "shop").value()["items"];
  ASSERT_EQ(events.size(), 2u);
  for (const auto& ev : events) {
    if (ev["reason"] == "Scheduled") {
      EXPECT_EQ(ev["count"], 2);
    } else {
      EXPECT_EQ(ev["type"], "Warning");
    }
  }
}

TEST(EventRecorder, AnEventFromAnotherHostIsItsOwn) {
  FakeApiClient api;
  Json pod = {{"kind", "Pod"},
              {"apiVersion", "v1"},
              {"metadata", {{"name", "web-1"}, {"namespace", "shop"}, {"uid", "u1"}}}};
  EventRecorder rec(api, "kubelet", "node-a");
  rec.event(pod, "Normal", "Killing", "Stopping container main");
  rec.event_from("node-b", pod, "Normal", "Killing", "Stopping container main");
  rec.flush();  // a repeat aggregates once the first is written (workers run in parallel)
  rec.event_from("node-b", pod, "Normal", "Killing", "Stopping container main");
  rec.flush();
  auto events = api.list(resources::kEvents, "shop").value()["items"];
  ASSERT_EQ(events.size(), 2u);
  std::map<std::string, int64_t> counts;
  for (const Json& e : events) {
    EXPECT_EQ(e["source"]["component"], "kubelet");
    EXPECT_EQ(e["reportingInstance"], e["source"]["host"]);
    counts[e["source"].value("host", "")] = e.value("count", 0);
  }
  EXPECT_EQ(counts, (std::map<std::string, int64_t>{{"node-a", 1}, {"node-b", 2}}));
}

TEST(EventRecorder, RecreatesAnEventThatExpired) {
  FakeApiClient api;
  Json node = {{"metadata", {{"name", "n1"}, {"uid", "u2"}}}};
  EventRecorder rec(api, "node-controller");
  rec.event(node, "Normal", "RegisteredNode", "Node n1 event", "Node", "v1");
  rec.flush();
  auto items = api.list(resources::kEvents, "").value()["items"];
  ASSERT_EQ(items.size(), 1u);
  // Cluster-scoped objects' events go to the default namespace, as upstream.
  EXPECT_EQ(items[0]["metadata"]["namespace"], "default");
  ASSERT_TRUE(api.remove(resources::kEvents, "default", name_of(items[0])).is_ok());
  rec.event(node, "Normal", "RegisteredNode", "Node n1 event", "Node", "v1");
  rec.flush();
  items = api.list(resources::kEvents, "").value()["items"];
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0]["count"], 2);
}

}  // namespace
}  // namespace skiff::client
