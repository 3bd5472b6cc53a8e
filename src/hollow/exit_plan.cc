#include "hollow/exit_plan.h"

#include <charconv>
#include <cmath>
#include <string>
#include <vector>

#include "base/strings.h"
#include "base/time.h"

namespace skiff::hollow {
namespace {

using Json = nlohmann::json;
using std::chrono::milliseconds;

// A script statement sequence's outcome so far.
struct ScriptState {
  milliseconds elapsed{0};
  bool forever = false;
};

std::string_view basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// A word without shell quoting around it: "5" and '5' read as 5.
std::string_view unquote(std::string_view w) {
  if (w.size() >= 2 && (w.front() == '"' || w.front() == '\'') && w.back() == w.front()) {
    return w.substr(1, w.size() - 2);
  }
  return w;
}

std::optional<int> parse_exit_code(std::string_view text) {
  text = unquote(text);
  int code = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  // A shell exits with the status modulo 256.
  return ((code % 256) + 256) % 256;
}

// Adds sleep's arguments to `state`; false when one is not understood.
bool add_sleep(const std::vector<std::string_view>& args, ScriptState& state) {
  if (args.empty()) return false;
  for (std::string_view a : args) {
    a = unquote(a);
    if (a == "infinity" || a == "inf") {
      state.forever = true;
      continue;
    }
    auto d = parse_sleep_argument(a);
    if (!d) return false;
    state.elapsed += *d;
  }
  return true;
}

ExitPlan finish(const ScriptState& state, int code) {
  ExitPlan plan;
  if (!state.forever) plan.after = state.elapsed;
  plan.exit_code = code;
  return plan;
}

// The statements of a `sh -c` script, split at ";", "&&" and newlines.
std::vector<std::string_view> split_statements(std::string_view script) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= script.size(); ++i) {
    bool end = i == script.size();
    size_t sep = 0;
    if (!end) {
      if (script[i] == ';' || script[i] == '\n') {
        sep = 1;
      } else if (script.substr(i, 2) == "&&") {
        sep = 2;
      }
    }
    if (end || sep > 0) {
      out.push_back(trim_space(script.substr(start, i - start)));
      if (sep > 0) {
        i += sep - 1;
        start = i + 1;
      }
    }
  }
  return out;
}

std::optional<ExitPlan> plan_for_script(std::string_view script) {
  ScriptState state;
  for (std::string_view stmt : split_statements(script)) {
    auto words = split_space(stmt);
    if (words.empty()) continue;
    if (words[0] == "exec") words.erase(words.begin());
    if (words.empty()) return std::nullopt;
    std::string_view cmd = basename(words[0]);
    std::vector<std::string_view> args(words.begin() + 1, words.end());
    if (cmd == "sleep") {
      if (!add_sleep(args, state)) return std::nullopt;
      if (state.forever) return finish(state, 0);
    } else if (cmd == "exit") {
      if (args.empty()) return finish(state, 0);
      auto code = parse_exit_code(args[0]);
      if (!code || args.size() > 1) return std::nullopt;
      return finish(state, *code);
    } else if (cmd == "true" || cmd == ":" || cmd == "echo") {
      continue;
    } else {
      return std::nullopt;
    }
  }
  return finish(state, 0);
}

std::optional<ExitPlan> plan_for_argv(const std::vector<std::string>& argv) {
  if (argv.empty()) return std::nullopt;
  std::string_view cmd = basename(argv[0]);
  std::vector<std::string_view> args(argv.begin() + 1, argv.end());
  if (cmd == "exit") {
    if (args.empty()) return ExitPlan{milliseconds(0), 0};
    auto code = parse_exit_code(args[0]);
    if (!code) return std::nullopt;
    return ExitPlan{milliseconds(0), *code};
  }
  if (cmd == "true" && args.empty()) return ExitPlan{milliseconds(0), 0};
  if (cmd == "false" && args.empty()) return ExitPlan{milliseconds(0), 1};
  if (cmd == "sleep") {
    ScriptState state;
    if (!add_sleep(args, state)) return std::nullopt;
    return finish(state, 0);
  }
  if (cmd == "sh" || cmd == "bash" || cmd == "ash" || cmd == "dash") {
    if (args.size() >= 2 && (args[0] == "-c" || args[0] == "-ec" || args[0] == "-ce")) {
      // Further arguments become $0, $1, ... of the script; they change nothing here.
      return plan_for_script(args[1]);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<milliseconds> parse_sleep_argument(std::string_view text) {
  if (text.empty()) return std::nullopt;
  double factor = 1000.0;
  switch (text.back()) {
    case 's':
      text.remove_suffix(1);
      break;
    case 'm':
      factor = 60e3;
      text.remove_suffix(1);
      break;
    case 'h':
      factor = 3600e3;
      text.remove_suffix(1);
      break;
    case 'd':
      factor = 86400e3;
      text.remove_suffix(1);
      break;
    default:
      break;
  }
  if (text.empty() || text.front() == '-' || text.front() == '+') return std::nullopt;
  double value = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return milliseconds(static_cast<int64_t>(std::llround(value * factor)));
}

ExitPlan exit_plan_for_command(const Json& container) {
  std::vector<std::string> argv;
  for (const char* field : {"command", "args"}) {
    auto it = container.find(field);
    if (it == container.end() || !it->is_array()) continue;
    for (const Json& a : *it) {
      if (!a.is_string()) return {};
      argv.push_back(a.get<std::string>());
    }
  }
  return plan_for_argv(argv).value_or(ExitPlan{});
}

ExitPlan exit_plan_for_container(const Json& pod, size_t index) {
  const Json* container = nullptr;
  if (auto spec = pod.find("spec"); spec != pod.end() && spec->is_object()) {
    if (auto cs = spec->find("containers");
        cs != spec->end() && cs->is_array() && index < cs->size()) {
      container = &(*cs)[index];
    }
  }
  static const Json kEmpty = Json::object();
  ExitPlan plan = exit_plan_for_command(container ? *container : kEmpty);
  if (index != 0) return plan;
  const Json* annotations = nullptr;
  if (auto meta = pod.find("metadata"); meta != pod.end() && meta->is_object()) {
    if (auto a = meta->find("annotations"); a != meta->end() && a->is_object()) annotations = &*a;
  }
  if (!annotations) return plan;
  auto after_it = annotations->find(std::string(kExitAfterAnnotation));
  auto code_it = annotations->find(std::string(kExitCodeAnnotation));
  std::optional<milliseconds> after;
  if (after_it != annotations->end()) {
    // A malformed duration leaves the command's plan in force rather than exiting at once.
    if (!after_it->is_string()) return plan;
    auto parsed = parse_duration(after_it->get<std::string>());
    if (!parsed.is_ok()) return plan;
    after = parsed.value();
  }
  std::optional<int> code;
  if (code_it != annotations->end() && code_it->is_string()) {
    code = parse_exit_code(code_it->get<std::string>());
  }
  if (!after && !code) return plan;
  return ExitPlan{after.value_or(milliseconds(0)), code.value_or(0)};
}

}  // namespace skiff::hollow
