#pragma once

// Helpers shared by the store conformance suite and the embedded durability test.

#include <gtest/gtest.h>

#include <source_location>
#include <stdexcept>
#include <string>
#include <utility>

#include "base/status.h"

namespace skiff::conformance {

// Thrown by must(); GoogleTest reports it as a failure of the running test, with the message.
class MustFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline std::string where(const std::source_location& loc) {
  return std::string(loc.file_name()) + ":" + std::to_string(loc.line());
}

// The value of a Result that must succeed; fails the test (by throwing) otherwise. Keeps test
// bodies readable where every call is expected to work. Not for use on threads the test spawns.
template <typename T>
T must(Result<T> result, std::source_location loc = std::source_location::current()) {
  if (!result.is_ok()) throw MustFailure(where(loc) + ": " + result.status().to_string());
  return std::move(result).value();
}

inline void must(const Status& status, std::source_location loc = std::source_location::current()) {
  if (!status.is_ok()) throw MustFailure(where(loc) + ": " + status.to_string());
}

inline Status status_of(const Status& status) {
  return status;
}
template <typename T>
Status status_of(const Result<T>& result) {
  return result.status();
}

}  // namespace skiff::conformance

// The status of `expr` (a Status or a Result) has code `want`.
#define EXPECT_CODE(expr, want)                                                              \
  do {                                                                                       \
    const ::skiff::Status skiff_got_ = ::skiff::conformance::status_of(expr);                \
    EXPECT_EQ(skiff_got_.code(), (want))                                                     \
        << "got " << skiff_got_.to_string() << ", want " << ::skiff::status_code_name(want); \
  } while (0)

#define ASSERT_CODE(expr, want)                                                              \
  do {                                                                                       \
    const ::skiff::Status skiff_got_ = ::skiff::conformance::status_of(expr);                \
    ASSERT_EQ(skiff_got_.code(), (want))                                                     \
        << "got " << skiff_got_.to_string() << ", want " << ::skiff::status_code_name(want); \
  } while (0)

#define EXPECT_OK(expr) EXPECT_CODE(expr, ::skiff::StatusCode::kOk)
#define ASSERT_OK(expr) ASSERT_CODE(expr, ::skiff::StatusCode::kOk)
