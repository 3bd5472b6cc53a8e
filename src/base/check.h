#pragma once

// SKIFF_CHECK stays on in release builds: a broken invariant crashes loudly with its location
// instead of corrupting state.

#include <string_view>

namespace skiff::detail {
[[noreturn]] void check_failed(const char* expr, const char* file, int line, std::string_view msg);
}  // namespace skiff::detail

#define SKIFF_CHECK(cond, msg)                                         \
  do {                                                                 \
    if (!(cond)) [[unlikely]]                                          \
      ::skiff::detail::check_failed(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)
