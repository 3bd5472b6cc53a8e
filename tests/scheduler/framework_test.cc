#include "scheduler/framework.h"

#include <gtest/gtest.h>

#include <future>

#include "test_util.h"

namespace skiff::scheduler {
namespace {

using testing::Cluster;
using testing::NodeBuilder;
using testing::PodBuilder;

// A plugin at every point, scripted by its args.
class Scripted final : public PreFilterPlugin,
                       public FilterPlugin,
                       public PreScorePlugin,
                       public ScorePlugin,
                       public ReservePlugin,
                       public BindPlugin {
 public:
  Scripted(std::string name, nlohmann::json args, std::vector<std::string>* log)
      : name_(std::move(name)), args_(std::move(args)), log_(log) {}
  std::string_view name() const override { return name_; }

  PluginStatus pre_filter(CycleState&, const PodInfo&, const NodeLister&,
                          PreFilterResult& r) const override {
    std::string mode = args_.value("pre_filter", "");
    if (mode == "skip") return PluginStatus::skip();
    if (mode == "reject") return {Code::kUnschedulableAndUnresolvable, "prefilter says no"};
    if (mode == "error") return PluginStatus::error("boom");
    if (args_.contains("nodes")) {
      r.all_nodes = false;
      r.node_names = args_["nodes"].get<std::vector<std::string>>();
    }
    return {};
  }
  PluginStatus filter(const CycleState&, const PodInfo&, const NodeInfo& node) const override {
    log_->push_back(name_ + ":filter:" + node.name());
    if (args_.contains("reject") && args_["reject"] == node.name()) {
      return {Code::kUnschedulable, "rejected by " + name_};
    }
    return {};
  }
  PluginStatus pre_score(CycleState&, const PodInfo&, std::span<const NodeInfo* const>,
                         const NodeLister&) const override {
    return args_.value("pre_score", "") == "skip" ? PluginStatus::skip() : PluginStatus();
  }
  PluginStatus score(const CycleState&, const PodInfo&, const NodeInfo& node,
                     int64_t& score) const override {
    score = args_.value("scores", nlohmann::json::object()).value(node.name(), 0);
    return {};
  }
  PluginStatus reserve(CycleState&, const PodInfo&, const std::string& node) override {
    log_->push_back(name_ + ":reserve:" + node);
    if (args_.value("reserve", "") == "reject") return {Code::kUnschedulable, "no room"};
    return {};
  }
  void unreserve(CycleState&, const PodInfo&, const std::string& node) override {
    log_->push_back(name_ + ":unreserve:" + node);
  }
  PluginStatus bind(CycleState&, const PodInfo&, const std::string& node) override {
    log_->push_back(name_ + ":bind:" + node);
    std::string mode = args_.value("bind", "");
    if (mode == "skip") return PluginStatus::skip();
    if (mode == "error") return PluginStatus::error("api down");
    return {};
  }

 private:
  std::string name_;
  nlohmann::json args_;
  std::vector<std::string>* log_;
};

Registry scripted_registry(std::vector<std::string>* log) {
  Registry r;
  for (const char* name : {"A", "B", "C"}) {
    EXPECT_TRUE(
        r.add(name,
              [name, log](const nlohmann::json& args, Handle&) -> Result<std::unique_ptr<Plugin>> {
                if (args.is_object() && args.value("fail_init", false)) {
                  return Status(StatusCode::kInvalidArgument, "bad args");
                }
                return std::unique_ptr<Plugin>(std::make_unique<Scripted>(
                    name, args.is_null() ? nlohmann::json::object() : args, log));
              })
            .is_ok());
  }
  return r;
}

std::unique_ptr<Framework> make(const Registry& r, std::vector<PluginSpec> plugins) {
  Profile p;
  p.plugins = std::move(plugins);
  auto fw = Framework::create(r, p);
  EXPECT_TRUE(fw.is_ok()) << fw.status().to_string();
  return std::move(fw).value();
}

TEST(FrameworkTest, RegistryAndProfileErrors) {
  std::vector<std::string> log;
  Registry r = scripted_registry(&log);
  EXPECT_EQ(r.add("A", nullptr).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"A", "B", "C"}));
  Profile p;
  p.plugins = {{"Nope", 0, nullptr}};
  auto fw = Framework::create(r, p);
  ASSERT_FALSE(fw.is_ok());
  EXPECT_EQ(fw.status().message(), "plugin \"Nope\" does not exist");
  p.plugins = {{"A", 0, nullptr}, {"A", 0, nullptr}};
  EXPECT_FALSE(Framework::create(r, p).is_ok());
  p.plugins = {{"A", 0, {{"fail_init", true}}}};
  fw = Framework::create(r, p);
  ASSERT_FALSE(fw.is_ok());
  EXPECT_EQ(fw.status().message(), "initializing plugin \"A\": bad args");
}

TEST(FrameworkTest, PreFilterSkipSkipsTheFilterAndFirstRejectionWins) {
  std::vector<std::string> log;
  Registry r = scripted_registry(&log);
  auto fw = make(
      r, {{"A", 0, {{"pre_filter", "skip"}}}, {"B", 0, {{"reject", "n1"}}}, {"C", 0, nullptr}});
  Cluster c;
  c.add(NodeBuilder("n1"));
  CycleState state;
  PreFilterResult res;
  std::set<std::string> narrowing;
  PodRef pod = PodBuilder("p").build();
  ASSERT_TRUE(fw->run_pre_filter(state, *pod, c.refresh(), res, narrowing).is_success());
  PluginStatus s = fw->run_filter(state, *pod, c.node("n1"));
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.plugin(), "B");
  EXPECT_EQ(log, std::vector<std::string>{"B:filter:n1"});  // A skipped, C never reached
}

TEST(FrameworkTest, PreFilterResultsIntersect) {
  std::vector<std::string> log;
  Registry r = scripted_registry(&log);
  Cluster c;
  c.add(NodeBuilder("n1"));
  PodRef pod = PodBuilder("p").build();
  {
    auto fw = make(r, {{"A", 0, {{"nodes", {"n1", "n2"}}}}, {"B", 0, {{"nodes", {"n2", "n3"}}}}});
    CycleState state;
    PreFilterResult res;
    std::set<std::string> narrowing;
    ASSERT_TRUE(fw->run_pre_filter(state, *pod, c.refresh(), res, narrowing).is_success());
    EXPECT_FALSE(res.all_nodes);
    EXPECT_EQ(res.node_names, std::vector<std::string>{"n2"});
    EXPECT_EQ(narrowing, (std::set<std::string>{"A", "B"}));
  }
  {
    auto fw = make(r, {{"A", 0, {{"nodes", {"n1"}}}}, {"B", 0, {{"nodes", {"n2"}}}}});
    CycleState state;
    PreFilterResult res;
    std::set<std::string> narrowing;
    PluginStatus s = fw->run_pre_filter(state, *pod, c.refresh(), res, narrowing);
    EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
    EXPECT_EQ(s.message(), "node(s) didn't satisfy plugin(s) [A B] simultaneously");
  }
  {
    auto fw = make(r, {{"A", 0, {{"pre_filter", "error"}}}});
    CycleState state;
    PreFilterResult res;
    std::set<std::string> narrowing;
    PluginStatus s = fw->run_pre_filter(state, *pod, c.refresh(), res, narrowing);
    EXPECT_EQ(s.code(), Code::kError);
    EXPECT_EQ(s.message(), "running PreFilter plugin \"A\": boom");
  }
}

TEST(FrameworkTest, ScoresAreWeightedAndChecked) {
  std::vector<std::string> log;
  Registry r = scripted_registry(&log);
  Cluster c;
  c.add(NodeBuilder("n1")).add(NodeBuilder("n2"));
  const Snapshot& snap = c.refresh();
  PodRef pod = PodBuilder("p").build();
  auto fw = make(r, {{"A", 3, {{"scores", {{"n1", 10}, {"n2", 20}}}}},
                     {"B", 0, {{"scores", {{"n1", 5}}}}},
                     {"C", 2, {{"pre_score", "skip"}, {"scores", {{"n1", 100}}}}}});
  CycleState state;
  std::vector<const NodeInfo*> nodes = {snap.get("n1"), snap.get("n2")};
  ASSERT_TRUE(fw->run_pre_score(state, *pod, nodes, snap).is_success());
  std::vector<int64_t> totals;
  ASSERT_TRUE(fw->run_score(state, *pod, nodes, totals).is_success());
  EXPECT_EQ(totals, (std::vector<int64_t>{3 * 10 + 5, 3 * 20}));

  auto bad = make(r, {{"A", 1, {{"scores", {{"n1", 101}}}}}});
  CycleState state2;
  PluginStatus s = bad->run_score(state2, *pod, nodes, totals);
  EXPECT_EQ(s.code(), Code::kError);
  EXPECT_EQ(s.message(),
            "plugin \"A\" returns an invalid score 101, it should in the range of [0, 100] after "
            "normalizing");
}

TEST(FrameworkTest, ReserveUnreserveAndBind) {
  std::vector<std::string> log;
  Registry r = scripted_registry(&log);
  PodRef pod = PodBuilder("p").build();
  auto fw =
      make(r, {{"A", 0, {{"bind", "skip"}}}, {"B", 0, {{"reserve", "reject"}}}, {"C", 0, nullptr}});
  CycleState state;
  PluginStatus s = fw->run_reserve(state, *pod, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.plugin(), "B");
  fw->run_unreserve(state, *pod, "n1");
  ASSERT_TRUE(fw->run_bind(state, *pod, "n1").is_success());
  EXPECT_EQ(log, (std::vector<std::string>{"A:reserve:n1", "B:reserve:n1", "C:unreserve:n1",
                                           "B:unreserve:n1", "A:unreserve:n1", "A:bind:n1",
                                           "B:bind:n1"}));
  auto none = make(r, {{"A", 0, {{"bind", "skip"}}}});
  EXPECT_EQ(none->run_bind(state, *pod, "n1").message(), "no bind plugin bound the pod");
}

// A Permit plugin scripted by its args: "permit" is "wait" (for "timeout_ms"), "reject" or
// absent (success). It keeps its Handle to show that factories get one.
class Waiter final : public PermitPlugin {
 public:
  Waiter(std::string name, nlohmann::json args, Handle& handle)
      : name_(std::move(name)), args_(std::move(args)), handle_(handle) {}
  std::string_view name() const override { return name_; }
  PluginStatus permit(CycleState&, const PodInfo&, const std::string&,
                      std::chrono::milliseconds& timeout) override {
    std::string mode = args_.value("permit", "");
    if (mode == "reject") return {Code::kUnschedulable, name_ + " says no"};
    if (mode != "wait") return {};
    timeout = std::chrono::milliseconds(args_.value("timeout_ms", 60000));
    return {Code::kWait, ""};
  }
  Handle& handle() { return handle_; }

 private:
  std::string name_;
  nlohmann::json args_;
  Handle& handle_;
};

Registry waiter_registry() {
  Registry r;
  for (const char* name : {"A", "B", "C"}) {
    EXPECT_TRUE(r.add(name,
                      [name](const nlohmann::json& args,
                             Handle& handle) -> Result<std::unique_ptr<Plugin>> {
                        return std::unique_ptr<Plugin>(std::make_unique<Waiter>(
                            name, args.is_null() ? nlohmann::json::object() : args, handle));
                      })
                    .is_ok());
  }
  return r;
}

// Collects the outcome wait_on_permit reports.
struct Outcome {
  std::promise<PluginStatus> promise;
  std::future<PluginStatus> future = promise.get_future();
  std::function<void(PluginStatus)> callback() {
    return [this](PluginStatus s) { promise.set_value(std::move(s)); };
  }
  bool ready() { return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }
};

TEST(FrameworkTest, PermitWaitHoldsThePodUntilEveryWaitingPluginAllowsIt) {
  auto fw = make(waiter_registry(),
                 {{"A", 0, {{"permit", "wait"}}}, {"B", 0, {{"permit", "wait"}}}, {"C", 0, {}}});
  PodRef pod = PodBuilder("p").build();
  CycleState state;
  PluginStatus s = fw->run_permit(state, pod, "n1");
  EXPECT_EQ(s.code(), Code::kWait);
  auto waiting = fw->get_waiting_pod(pod->uid);
  ASSERT_NE(waiting, nullptr);
  EXPECT_EQ(waiting->node(), "n1");
  EXPECT_EQ(waiting->pending_plugins(), (std::vector<std::string>{"A", "B"}));
  // Plugins see the same waiting pods through the Handle their factory got.
  auto* a = dynamic_cast<Waiter*>(const_cast<Plugin*>(fw->plugin("A")));
  ASSERT_NE(a, nullptr);
  int seen = 0;
  a->handle().iterate_over_waiting_pods([&](WaitingPod& wp) {
    EXPECT_EQ(wp.pod()->uid, pod->uid);
    ++seen;
  });
  EXPECT_EQ(seen, 1);

  Outcome outcome;
  fw->wait_on_permit(pod->uid, outcome.callback());
  EXPECT_FALSE(outcome.ready());
  waiting->allow("A");
  waiting->allow("C");  // not waiting on C: no effect
  EXPECT_FALSE(outcome.ready());
  waiting->allow("B");
  ASSERT_TRUE(outcome.ready());
  EXPECT_TRUE(outcome.future.get().is_success());
  EXPECT_EQ(fw->get_waiting_pod(pod->uid), nullptr);
  // A later rejection of the settled pod changes nothing.
  EXPECT_FALSE(fw->reject_waiting_pod(pod->uid, "A", "late"));

  // A pod no plugin holds goes on at once.
  Outcome direct;
  fw->wait_on_permit("uid-nobody", direct.callback());
  ASSERT_TRUE(direct.ready());
  EXPECT_TRUE(direct.future.get().is_success());
}

TEST(FrameworkTest, ARejectedWaitingPodIsUnschedulableByThatPlugin) {
  auto fw = make(waiter_registry(), {{"A", 0, {{"permit", "wait"}}}});
  PodRef pod = PodBuilder("p").build();
  CycleState state;
  ASSERT_EQ(fw->run_permit(state, pod, "n1").code(), Code::kWait);
  Outcome outcome;
  fw->wait_on_permit(pod->uid, outcome.callback());
  std::string who = "A";  // the status must not keep a view of the caller's string
  EXPECT_TRUE(fw->reject_waiting_pod(pod->uid, who, "the gang broke up"));
  who = "overwritten";
  ASSERT_TRUE(outcome.ready());
  PluginStatus s = outcome.future.get();
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "the gang broke up");
  EXPECT_EQ(s.plugin(), "A");
  EXPECT_EQ(fw->get_waiting_pod(pod->uid), nullptr);

  // Settled before anyone waits: wait_on_permit reports it at once.
  PodRef other = PodBuilder("q").build();
  ASSERT_EQ(fw->run_permit(state, other, "n1").code(), Code::kWait);
  EXPECT_TRUE(fw->reject_waiting_pod(other->uid, "", "removed"));
  Outcome late;
  fw->wait_on_permit(other->uid, late.callback());
  ASSERT_TRUE(late.ready());
  PluginStatus r = late.future.get();
  EXPECT_EQ(r.message(), "removed");
  EXPECT_EQ(r.plugin(), "");
}

TEST(FrameworkTest, APermitRejectionWinsOverAWait) {
  auto fw =
      make(waiter_registry(), {{"A", 0, {{"permit", "wait"}}}, {"B", 0, {{"permit", "reject"}}}});
  PodRef pod = PodBuilder("p").build();
  CycleState state;
  PluginStatus s = fw->run_permit(state, pod, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.plugin(), "B");
  EXPECT_EQ(s.message(), "B says no");
  EXPECT_EQ(fw->get_waiting_pod(pod->uid), nullptr);
}

TEST(FrameworkTest, AWaitThatTimesOutIsARejection) {
  auto fw = make(waiter_registry(), {{"A", 0, {{"permit", "wait"}}},
                                     {"B", 0, {{"permit", "wait"}, {"timeout_ms", 50}}}});
  PodRef pod = PodBuilder("p").build();
  CycleState state;
  ASSERT_EQ(fw->run_permit(state, pod, "n1").code(), Code::kWait);
  Outcome outcome;
  fw->wait_on_permit(pod->uid, outcome.callback());
  ASSERT_EQ(outcome.future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  PluginStatus s = outcome.future.get();
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "rejected due to timeout after waiting 50ms at plugin B");
  EXPECT_EQ(s.plugin(), "B");
  EXPECT_EQ(fw->get_waiting_pod(pod->uid), nullptr);
}

TEST(FrameworkTest, ClosingDropsWaitingPodsWithoutCallingBack) {
  auto fw = make(waiter_registry(), {{"A", 0, {{"permit", "wait"}}}});
  PodRef pod = PodBuilder("p").build();
  CycleState state;
  ASSERT_EQ(fw->run_permit(state, pod, "n1").code(), Code::kWait);
  bool called = false;
  fw->wait_on_permit(pod->uid, [&](PluginStatus) { called = true; });
  auto waiting = fw->get_waiting_pod(pod->uid);
  fw->close_waiting();
  waiting->allow("A");
  EXPECT_FALSE(called);
  EXPECT_EQ(fw->get_waiting_pod(pod->uid), nullptr);
  EXPECT_EQ(fw->run_permit(state, PodBuilder("q").build(), "n1").code(), Code::kError);
}

// Orders pods by name, last first.
class ByNameDescending final : public QueueSortPlugin {
 public:
  std::string_view name() const override { return "ByNameDescending"; }
  bool less(const QueuedPodInfo& a, const QueuedPodInfo& b) const override {
    return a.pod->name > b.pod->name;
  }
};

TEST(FrameworkTest, QueueSortIsThePluginsOrderAndThereIsAtMostOne) {
  Registry r;
  ASSERT_TRUE(r.add("ByNameDescending", [](const nlohmann::json&, Handle&) {
                 return Result<std::unique_ptr<Plugin>>(std::make_unique<ByNameDescending>());
               }).is_ok());
  ASSERT_TRUE(r.add("Other", [](const nlohmann::json&, Handle&) {
                 return Result<std::unique_ptr<Plugin>>(std::make_unique<ByNameDescending>());
               }).is_ok());
  QueuedPodInfo a;
  a.pod = PodBuilder("a").priority(100).build();
  QueuedPodInfo b;
  b.pod = PodBuilder("b").priority(1).build();
  auto fw = make(r, {{"ByNameDescending", 0, nullptr}});
  EXPECT_TRUE(fw->queue_less(b, a));
  EXPECT_FALSE(fw->queue_less(a, b));
  // Without one: PrioritySort's order.
  auto plain = make(r, {});
  EXPECT_TRUE(plain->queue_less(a, b));
  Profile two;
  two.plugins = {{"ByNameDescending", 0, nullptr}, {"Other", 0, nullptr}};
  auto bad = Framework::create(r, two);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().message(),
            "only one QueueSort plugin can be enabled in profile \"default-scheduler\"");
}

TEST(FrameworkTest, DefaultNormalizeScore) {
  std::vector<NodeScore> scores = {{nullptr, 1}, {nullptr, 2}, {nullptr, 4}};
  default_normalize_score(100, false, scores);
  EXPECT_EQ(scores[0].score, 25);
  EXPECT_EQ(scores[1].score, 50);
  EXPECT_EQ(scores[2].score, 100);
  scores = {{nullptr, 1}, {nullptr, 2}, {nullptr, 4}};
  default_normalize_score(100, true, scores);
  EXPECT_EQ(scores[0].score, 75);
  EXPECT_EQ(scores[2].score, 0);
  scores = {{nullptr, 0}, {nullptr, 0}};
  default_normalize_score(100, true, scores);
  EXPECT_EQ(scores[0].score, 100);
  scores = {{nullptr, 0}, {nullptr, 0}};
  default_normalize_score(100, false, scores);
  EXPECT_EQ(scores[1].score, 0);
}

}  // namespace
}  // namespace skiff::scheduler
