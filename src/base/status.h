#pragma once

// Errors as values: Status carries a code and a message; Result<T> is a value or a Status.
// Both are plain values and safe to move between threads; neither is shared.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "base/check.h"

namespace skiff {

enum class StatusCode : uint8_t {
  kOk = 0,
  kCancelled,
  kInvalidArgument,
  kNotFound,
  kAlreadyExists,
  kFailedPrecondition,
  kAborted,
  kOutOfRange,
  kResourceExhausted,
  kUnavailable,
  kDeadlineExceeded,
  kUnauthenticated,
  kPermissionDenied,
  kUnimplemented,
  kDataLoss,
  kInternal,
  // Storage: the requested revision has been compacted away.
  kCompacted,
  // Storage: the requested revision is newer than the store's current revision.
  kFutureRevision,
  // A request or value exceeds a configured size or count limit.
  kTooLarge,
};

std::string_view status_code_name(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return Status(); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message", for logs.
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status error(StatusCode code, std::string message) {
  return Status(code, std::move(message));
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    SKIFF_CHECK(!status_.is_ok(), "Result constructed from an OK status without a value");
  }

  bool is_ok() const { return value_.has_value(); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const { return status_; }

  T& value() & {
    SKIFF_CHECK(value_.has_value(), "Result::value() on error: " + status_.to_string());
    return *value_;
  }
  const T& value() const& {
    SKIFF_CHECK(value_.has_value(), "Result::value() on error: " + status_.to_string());
    return *value_;
  }
  T&& value() && {
    SKIFF_CHECK(value_.has_value(), "Result::value() on error: " + status_.to_string());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace skiff

// Returns the status from the enclosing function when it is not OK.
#define SKIFF_RETURN_IF_ERROR(expr)                   \
  do {                                                \
    ::skiff::Status skiff_status_ = (expr);           \
    if (!skiff_status_.is_ok()) return skiff_status_; \
  } while (0)

#define SKIFF_CONCAT_INNER_(a, b) a##b
#define SKIFF_CONCAT_(a, b) SKIFF_CONCAT_INNER_(a, b)

// Declares `lhs` from a Result, returning its status from the enclosing function on error.
#define SKIFF_ASSIGN_OR_RETURN(lhs, expr) \
  SKIFF_ASSIGN_OR_RETURN_IMPL_(SKIFF_CONCAT_(skiff_result_, __LINE__), lhs, expr)
#define SKIFF_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.is_ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
