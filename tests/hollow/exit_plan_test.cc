#include "hollow/exit_plan.h"

#include <gtest/gtest.h>

namespace skiff::hollow {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

ExitPlan plan(Json command, Json args = nullptr) {
  Json c = {{"name", "main"}, {"image", "busybox"}};
  if (!command.is_null()) c["command"] = command;
  if (!args.is_null()) c["args"] = args;
  return exit_plan_for_command(c);
}

ExitPlan exits(std::chrono::milliseconds after, int code) {
  return ExitPlan{after, code};
}

TEST(ExitPlan, RecognisesCommands) {
  EXPECT_EQ(plan({"exit", "3"}), exits(0ms, 3));
  EXPECT_EQ(plan({"sh", "-c", "exit 3"}), exits(0ms, 3));
  EXPECT_EQ(plan({"/bin/sh", "-c"}, {"exit 7"}), exits(0ms, 7));
  EXPECT_EQ(plan({"sleep", "5"}), exits(5s, 0));
  EXPECT_EQ(plan({"/bin/sleep", "0.5"}), exits(500ms, 0));
  EXPECT_EQ(plan(nullptr, {"sleep", "2m"}), exits(120s, 0));
  EXPECT_EQ(plan({"sleep", "1", "1.5"}), exits(2500ms, 0));
  EXPECT_EQ(plan({"sh", "-c", "sleep 2; exit 1"}), exits(2s, 1));
  EXPECT_EQ(plan({"bash", "-c", "echo hi && sleep 1 && sleep 1h; exit 4"}), exits(3601s, 4));
  EXPECT_EQ(plan({"sh", "-c", "sleep 3\n"}), exits(3s, 0));
  EXPECT_EQ(plan({"sh", "-ec", "exec sleep 1"}), exits(1s, 0));
  EXPECT_EQ(plan({"sh", "-c", "exit '2'"}), exits(0ms, 2));
  EXPECT_EQ(plan({"sh", "-c", "exit 256"}), exits(0ms, 0));
  EXPECT_EQ(plan({"true"}), exits(0ms, 0));
  EXPECT_EQ(plan({"false"}), exits(0ms, 1));
}

TEST(ExitPlan, AnythingElseRunsUntilKilled) {
  EXPECT_EQ(plan(nullptr), ExitPlan{});
  EXPECT_EQ(plan({"nginx", "-g", "daemon off;"}), ExitPlan{});
  EXPECT_EQ(plan({"sleep", "infinity"}), ExitPlan{});
  EXPECT_EQ(plan({"sh", "-c", "sleep infinity; exit 1"}), ExitPlan{});
  EXPECT_EQ(plan({"sh", "-c", "while true; do sleep 1; done"}), ExitPlan{});
  EXPECT_EQ(plan({"sh", "-c", "exit x"}), ExitPlan{});
  EXPECT_EQ(plan({"sleep", "-1"}), ExitPlan{});
  EXPECT_EQ(plan({"sleep"}), ExitPlan{});
  EXPECT_EQ(plan({"perl", "-e", "print 1"}), ExitPlan{});
  EXPECT_EQ(plan({"sh", "script.sh"}), ExitPlan{});
}

TEST(ExitPlan, AnnotationsOverrideTheFirstContainersCommand) {
  Json pod = {{"metadata",
               {{"annotations",
                 {{"skiff.dev/hollow-exit-after", "1m30s"}, {"skiff.dev/hollow-exit-code", "9"}}}}},
              {"spec",
               {{"containers",
                 {{{"name", "a"}, {"command", {"sleep", "5"}}},
                  {{"name", "b"}, {"command", {"sleep", "7"}}}}}}}};
  EXPECT_EQ(exit_plan_for_container(pod, 0), exits(90s, 9));
  EXPECT_EQ(exit_plan_for_container(pod, 1), exits(7s, 0));

  pod["metadata"]["annotations"] = {{"skiff.dev/hollow-exit-after", "500ms"}};
  EXPECT_EQ(exit_plan_for_container(pod, 0), exits(500ms, 0));
  pod["metadata"]["annotations"] = {{"skiff.dev/hollow-exit-code", "2"}};
  EXPECT_EQ(exit_plan_for_container(pod, 0), exits(0ms, 2));
  // A malformed duration leaves the command in force.
  pod["metadata"]["annotations"] = {{"skiff.dev/hollow-exit-after", "soon"},
                                    {"skiff.dev/hollow-exit-code", "2"}};
  EXPECT_EQ(exit_plan_for_container(pod, 0), exits(5s, 0));
}

TEST(Durations, SleepSyntax) {
  EXPECT_EQ(parse_sleep_argument("5"), 5s);
  EXPECT_EQ(parse_sleep_argument("0.25"), 250ms);
  EXPECT_EQ(parse_sleep_argument("3s"), 3s);
  EXPECT_EQ(parse_sleep_argument("2m"), 120s);
  EXPECT_EQ(parse_sleep_argument("1h"), 3600s);
  EXPECT_EQ(parse_sleep_argument("1d"), 86400s);
  for (const char* bad : {"", "s", "abc", "-1", "1x", "1.2.3"}) {
    EXPECT_FALSE(parse_sleep_argument(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace skiff::hollow
