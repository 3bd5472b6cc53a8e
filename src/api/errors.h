#pragma once

// API errors as Kubernetes reports them: an HTTP code, a reason and a message, rendered as a
// metav1 Status object. Field-level problems are collected as FieldErrors and become one 422
// Invalid with one cause per field.

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::api {

struct StatusCause {
  std::string reason;  // "FieldValueInvalid", "FieldValueRequired", ...
  std::string message;
  std::string field;  // "spec.containers[0].name"
};

struct ApiError {
  int code = 500;
  std::string reason;  // "NotFound", "AlreadyExists", "Conflict", "Invalid", "BadRequest", ...
  std::string message;
  // details
  std::string name;
  std::string group;
  std::string kind;  // the resource, as upstream fills details.kind ("pods", "deployments")
  std::vector<StatusCause> causes;
  int retry_after_seconds = 0;

  nlohmann::json to_status() const;
  std::string to_json() const;

  static ApiError not_found(const std::string& qualified_resource, const std::string& name);
  static ApiError already_exists(const std::string& qualified_resource, const std::string& name);
  static ApiError conflict(const std::string& qualified_resource, const std::string& name,
                           const std::string& why);
  // 404 for a path that names no resource: "the server could not find the requested resource".
  static ApiError not_found_path();
  static ApiError bad_request(std::string message);
  static ApiError method_not_allowed(std::string message);
  static ApiError unsupported_media_type(const std::string& content_type);
  static ApiError not_acceptable(std::string message);
  static ApiError request_entity_too_large(std::string message);
  static ApiError unauthorized();
  static ApiError forbidden(std::string message);
  static ApiError gone(std::string message);
  static ApiError internal(std::string message);
  static ApiError timeout(std::string message);
  static ApiError too_many_requests(std::string message, int retry_after_seconds);
  static ApiError service_unavailable(std::string message);
  // 422: "<Kind> \"name\" is invalid: <causes joined>".
  static ApiError invalid(const std::string& kind, const std::string& group,
                          const std::string& name, std::vector<StatusCause> causes);
  // From a storage Status (compacted → 410 Expired, too large → 413, unavailable → 503...).
  static ApiError from_storage(const Status& status);
};

// Field errors collected while validating one object.
class FieldErrors {
 public:
  void required(std::string field, std::string detail = "");
  void invalid(std::string field, const std::string& value, std::string detail);
  // Like invalid(), for a non-string bad value: numbers and booleans print bare, objects and
  // lists as JSON (as upstream's field.Invalid does).
  void invalid_value(std::string field, const nlohmann::json& value, std::string detail);
  void not_supported(std::string field, const std::string& value,
                     const std::vector<std::string>& supported);
  void duplicate(std::string field, const std::string& value);
  void forbidden(std::string field, std::string detail);
  void too_long(std::string field, size_t max);
  void add(StatusCause cause) { causes_.push_back(std::move(cause)); }

  bool empty() const { return causes_.empty(); }
  const std::vector<StatusCause>& causes() const { return causes_; }
  std::vector<StatusCause> take() { return std::move(causes_); }

 private:
  std::vector<StatusCause> causes_;
};

// Go's strconv.Quote (%q), as upstream messages quote names and values.
std::string go_quote(std::string_view s);
// A field error's bad value as upstream prints it: strings quoted, numbers bare, else JSON.
std::string format_bad_value(const nlohmann::json& value);
// Causes as upstream's aggregate error prints them: "field: message", de-duplicated, joined
// with ", " and bracketed when there is more than one.
std::string aggregate_causes(const std::vector<StatusCause>& causes);

}  // namespace skiff::api
