#pragma once

// Small string helpers over std::isspace (the C locale's whitespace).
//
// Thread-safety: pure functions.

#include <string_view>
#include <vector>

namespace skiff {

// `s` without leading and trailing whitespace.
std::string_view trim_space(std::string_view s);
// The words of `s`, separated by runs of whitespace; none for an empty or all-blank `s`.
std::vector<std::string_view> split_space(std::string_view s);

}  // namespace skiff
