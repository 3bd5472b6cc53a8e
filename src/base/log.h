#pragma once

// Process-wide logging through spdlog. Thread-safe. Levels: trace, debug, info, warn, error.

#include <spdlog/spdlog.h>

#include <string_view>

namespace skiff {

// Sets the global level from a name ("info", "debug", ...); unknown names leave it unchanged and
// return false.
bool set_log_level(std::string_view level);

}  // namespace skiff

#define SKIFF_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define SKIFF_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define SKIFF_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define SKIFF_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
