// The pod garbage collector against an in-memory API and a fake clock.

#include <gtest/gtest.h>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/podgc/podgc_controller.h"

namespace skiff::controllers {
namespace {

using testing::ControllerTest;
using testing::eventually;
using testing::stays;
using namespace client::resources;
using namespace std::chrono_literals;

const auto kT0 = std::chrono::system_clock::time_point(std::chrono::seconds(1772323200));

class PodGcTest : public ControllerTest<> {
 protected:
  PodGcTest() : ControllerTest(options(), 0ms, kT0) {}
  ~PodGcTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.pod_gc_period = 20s;
    o.terminated_pod_gc_threshold = 3;
    o.pod_gc_orphan_quarantine = 40s;
    return o;
  }

  void start() {
    controller_ = new_podgc_controller(ctx_);
    informers_.start();
    controller_->start();
  }

  void node(const std::string& name) { api_.seed(kNodes, {{"metadata", {{"name", name}}}}); }

  void pod(const std::string& name, const std::string& node_name, const std::string& phase,
           int created_second) {
    Json p = {{"metadata",
               {{"name", name},
                {"namespace", "default"},
                {"creationTimestamp", rfc3339(1772323200 - 1000 + created_second)}}},
              {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}},
              {"status", {{"phase", phase}}}};
    if (!node_name.empty()) p["spec"]["nodeName"] = node_name;
    api_.seed(kPods, p);
  }

  bool exists(const std::string& name) { return api_.get(kPods, "default", name).is_ok(); }

  // Lets the controller's next pass run (its period is on the fake clock).
  void next_pass() { clock_.advance(21s); }

  std::unique_ptr<Controller> controller_;
};

TEST_F(PodGcTest, DeletesTheOldestTerminatedPodsBeyondTheThreshold) {
  node("n1");
  pod("done-a", "n1", "Succeeded", 1);
  pod("done-b", "n1", "Failed", 2);
  pod("done-c", "n1", "Succeeded", 3);
  pod("done-d", "n1", "Succeeded", 4);
  pod("done-e", "n1", "Failed", 5);
  pod("running", "n1", "Running", 0);
  start();
  ASSERT_TRUE(eventually([&] { return !exists("done-a") && !exists("done-b"); }));
  EXPECT_TRUE(exists("done-c"));
  EXPECT_TRUE(exists("done-d"));
  EXPECT_TRUE(exists("done-e"));
  EXPECT_TRUE(exists("running"));  // running pods never count
  // Forced, with the uid as precondition.
  auto deletes = api_.actions("delete", "pods");
  ASSERT_EQ(deletes.size(), 2u);
}

TEST_F(PodGcTest, PodsOfADeletedNodeGoAfterTheQuarantine) {
  node("alive");
  pod("on-alive", "alive", "Running", 1);
  pod("orphan", "gone", "Running", 2);
  pod("orphan-done", "gone", "Succeeded", 3);
  start();
  // First seen missing: quarantined, nothing happens yet, even after a pass.
  next_pass();
  EXPECT_TRUE(stays([&] { return exists("orphan") && exists("orphan-done"); }, 300ms));
  // Past the quarantine, a fresh read confirms the node is gone.
  clock_.advance(41s);
  ASSERT_TRUE(eventually([&] { return !exists("orphan") && !exists("orphan-done"); }));
  EXPECT_TRUE(exists("on-alive"));
  // The running one was marked Failed first, as upstream does.
  bool marked = false;
  for (const auto& a : api_.actions("patch", "pods")) {
    if (a.name == "orphan" && a.subresource == "status") {
      marked = a.object["status"]["phase"] == "Failed" &&
               a.object["status"]["conditions"][0]["reason"] == "DeletionByPodGC";
    }
  }
  EXPECT_TRUE(marked);
}

TEST_F(PodGcTest, ANodeThatComesBackKeepsItsPods) {
  pod("on-late", "late", "Running", 1);
  start();
  next_pass();
  EXPECT_TRUE(stays([&] { return exists("on-late"); }, 300ms));
  node("late");  // registered before the quarantine ran out
  clock_.advance(41s);
  EXPECT_TRUE(stays([&] { return exists("on-late"); }, 500ms));
  EXPECT_TRUE(api_.actions("delete", "pods").empty());
}

TEST_F(PodGcTest, UnscheduledTerminatingPodsAreDeleted) {
  node("n1");
  // Terminating pods (held by a finalizer, say): only the unscheduled one has no kubelet to
  // finish it.
  for (auto [name, node_name] : {std::pair{"pending", ""}, std::pair{"bound", "n1"}}) {
    Json p = {{"metadata",
               {{"name", name},
                {"namespace", "default"},
                {"creationTimestamp", rfc3339(1772323200 - 10)},
                {"deletionTimestamp", rfc3339(1772323200 - 5)},
                {"deletionGracePeriodSeconds", 30}}},
              {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}},
              {"status", {{"phase", "Running"}}}};
    if (*node_name) p["spec"]["nodeName"] = node_name;
    api_.seed(kPods, p);
  }
  start();
  ASSERT_TRUE(eventually([&] { return !exists("pending"); }));
  EXPECT_TRUE(stays([&] { return exists("bound"); }, 300ms));
  auto deletes = api_.actions("delete", "pods");
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(deletes[0].name, "pending");
}

}  // namespace
}  // namespace skiff::controllers
