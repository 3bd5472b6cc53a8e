#pragma once

// When a hollow container "exits": hollow nodes run no processes, so a container ends only when
// its command is one of a few recognisable patterns or its pod carries an annotation saying so.
//
// Recognised commands (command + args of the container, as one argv):
//   exit N                      → exits with N at once
//   true / false                → exits with 0 / 1 at once
//   sleep S...                  → exits with 0 after S (GNU sleep syntax: 5, 0.5, 2m, 1h, 1d;
//                                 several arguments add up; "infinity" never ends)
//   sh -c "SCRIPT" (also bash, ash, dash; -c or -ec) where SCRIPT is a sequence, separated by
//   ";", "&&" or newlines, of: sleep S, exit N, true, :, echo ...  (an optional leading "exec"
//   is dropped) → exits after the sleeps add up, with the first exit's code (0 without one)
// Anything else runs until the pod is deleted.
//
// Annotations (applied to the pod's first container, overriding its command):
//   skiff.dev/hollow-exit-after: a duration ("5s", "500ms", "1m30s"; base/time.h parse_duration)
//   skiff.dev/hollow-exit-code:  the exit code (default 0); alone, the container exits at once
//
// Thread-safety: pure functions.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

namespace skiff::hollow {

inline constexpr std::string_view kExitAfterAnnotation = "skiff.dev/hollow-exit-after";
inline constexpr std::string_view kExitCodeAnnotation = "skiff.dev/hollow-exit-code";

struct ExitPlan {
  // How long after starting the container exits; nullopt = it runs until killed.
  std::optional<std::chrono::milliseconds> after;
  int exit_code = 0;
  bool operator==(const ExitPlan&) const = default;
};

// The plan for one container (a core/v1 Container as JSON) from its command and args.
ExitPlan exit_plan_for_command(const nlohmann::json& container);
// The plan for container `index` of `pod`: the annotations for index 0, else the command.
ExitPlan exit_plan_for_container(const nlohmann::json& pod, size_t index);

// One argument of sleep(1): a number with an optional suffix s, m, h or d; nullopt when
// malformed. "infinity" is handled by the caller.
std::optional<std::chrono::milliseconds> parse_sleep_argument(std::string_view text);

}  // namespace skiff::hollow
