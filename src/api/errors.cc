#include "api/errors.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

namespace skiff::api {
namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid.
size_t utf8_sequence_length(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  }
  return n;
}

template <typename Json>
Json build_status(const ApiError& e) {
  Json j;
  j["kind"] = "Status";
  j["apiVersion"] = "v1";
  j["metadata"] = Json::object();
  j["status"] = e.code >= 200 && e.code < 300 ? "Success" : "Failure";
  if (!e.message.empty()) j["message"] = e.message;
  if (!e.reason.empty()) j["reason"] = e.reason;
  if (!e.name.empty() || !e.group.empty() || !e.kind.empty() || !e.causes.empty() ||
      e.retry_after_seconds > 0) {
    Json d = Json::object();
    if (!e.name.empty()) d["name"] = e.name;
    if (!e.group.empty()) d["group"] = e.group;
    if (!e.kind.empty()) d["kind"] = e.kind;
    if (!e.causes.empty()) {
      Json causes = Json::array();
      for (const StatusCause& c : e.causes) {
        Json cj = Json::object();
        if (!c.reason.empty()) cj["reason"] = c.reason;
        if (!c.message.empty()) cj["message"] = c.message;
        if (!c.field.empty()) cj["field"] = c.field;
        causes.push_back(std::move(cj));
      }
      d["causes"] = std::move(causes);
    }
    if (e.retry_after_seconds > 0) d["retryAfterSeconds"] = e.retry_after_seconds;
    j["details"] = std::move(d);
  }
  j["code"] = e.code;
  return j;
}

ApiError make(int code, std::string reason, std::string message) {
  ApiError e;
  e.code = code;
  e.reason = std::move(reason);
  e.message = std::move(message);
  return e;
}

// "deployments.apps" → {"deployments", "apps"}.
std::pair<std::string, std::string> split_qualified(const std::string& qualified) {
  size_t dot = qualified.find('.');
  if (dot == std::string::npos) return {qualified, ""};
  return {qualified.substr(0, dot), qualified.substr(dot + 1)};
}

ApiError with_resource(ApiError e, const std::string& qualified_resource, const std::string& name) {
  auto [resource, group] = split_qualified(qualified_resource);
  e.kind = resource;
  e.group = group;
  e.name = name;
  return e;
}

// Parses the decimal integers found in `text`, in order.
std::vector<int64_t> integers_in(std::string_view text) {
  std::vector<int64_t> out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] >= '0' && text[i] <= '9') {
      size_t j = i;
      while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
      int64_t v = 0;
      auto [p, ec] = std::from_chars(text.data() + i, text.data() + j, v);
      if (ec == std::errc()) out.push_back(v);
      i = j;
    } else {
      ++i;
    }
  }
  return out;
}

bool contains(std::string_view text, std::string_view what) {
  return text.find(what) != std::string_view::npos;
}

}  // namespace

std::string go_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      size_t n = utf8_sequence_length(s, i);
      if (n == 0) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "\\x%02x", c);
        out += buf;
        ++i;
      } else {
        out.append(s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\a':
        out += "\\a";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\v':
        out += "\\v";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
  return out;
}

std::string format_bad_value(const nlohmann::json& value) {
  if (value.is_string()) return go_quote(value.get_ref<const std::string&>());
  if (value.is_number_float()) {
    // Go prints float64 with %v: shortest representation, no trailing ".0".
    double d = value.get<double>();
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", d);
    // Prefer the shortest round-tripping form.
    for (int prec = 1; prec <= 17; ++prec) {
      char tmp[64];
      std::snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
      if (std::strtod(tmp, nullptr) == d) {
        return tmp;
      }
    }
    return buf;
  }
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string aggregate_causes(const std::vector<StatusCause>& causes) {
  std::set<std::string> seen;
  std::string result;
  for (const StatusCause& c : causes) {
    std::string msg = c.field + ": " + c.message;
    if (!seen.insert(msg).second) continue;
    if (seen.size() > 1) result += ", ";
    result += msg;
  }
  if (seen.size() <= 1) return result;
  return "[" + result + "]";
}

nlohmann::json ApiError::to_status() const {
  return build_status<nlohmann::json>(*this);
}

std::string ApiError::to_json() const {
  return build_status<nlohmann::ordered_json>(*this).dump(-1, ' ', false,
                                                          nlohmann::json::error_handler_t::replace);
}

ApiError ApiError::not_found(const std::string& qualified_resource, const std::string& name) {
  return with_resource(
      make(404, "NotFound", qualified_resource + " " + go_quote(name) + " not found"),
      qualified_resource, name);
}

ApiError ApiError::already_exists(const std::string& qualified_resource, const std::string& name) {
  return with_resource(
      make(409, "AlreadyExists", qualified_resource + " " + go_quote(name) + " already exists"),
      qualified_resource, name);
}

ApiError ApiError::conflict(const std::string& qualified_resource, const std::string& name,
                            const std::string& why) {
  return with_resource(make(409, "Conflict",
                            "Operation cannot be fulfilled on " + qualified_resource + " " +
                                go_quote(name) + ": " + why),
                       qualified_resource, name);
}

ApiError ApiError::not_found_path() {
  return make(404, "NotFound", "the server could not find the requested resource");
}

ApiError ApiError::bad_request(std::string message) {
  return make(400, "BadRequest", std::move(message));
}

ApiError ApiError::method_not_allowed(std::string message) {
  return make(405, "MethodNotAllowed", std::move(message));
}

ApiError ApiError::unsupported_media_type(const std::string& content_type) {
  // Upstream names the accepted types rather than the rejected one.
  (void)content_type;
  return make(415, "UnsupportedMediaType",
              "the body of the request was in an unknown format - accepted media types include: "
              "application/json, application/yaml, application/vnd.kubernetes.protobuf");
}

ApiError ApiError::not_acceptable(std::string message) {
  return make(406, "NotAcceptable", std::move(message));
}

ApiError ApiError::request_entity_too_large(std::string message) {
  return make(413, "RequestEntityTooLarge", "Request entity too large: " + message);
}

ApiError ApiError::unauthorized() {
  return make(401, "Unauthorized", "Unauthorized");
}

ApiError ApiError::forbidden(std::string message) {
  return make(403, "Forbidden", std::move(message));
}

ApiError ApiError::gone(std::string message) {
  // Clients treat 410 Expired as "re-list": the reason upstream uses for compacted versions.
  return make(410, "Expired", std::move(message));
}

ApiError ApiError::internal(std::string message) {
  ApiError e = make(500, "InternalError", "Internal error occurred: " + message);
  e.causes.push_back(StatusCause{"", std::move(message), ""});
  return e;
}

ApiError ApiError::timeout(std::string message) {
  ApiError e = make(504, "Timeout", "Timeout: " + message);
  return e;
}

ApiError ApiError::too_many_requests(std::string message, int retry_after_seconds) {
  ApiError e = make(429, "TooManyRequests", std::move(message));
  e.retry_after_seconds = retry_after_seconds;
  return e;
}

ApiError ApiError::service_unavailable(std::string message) {
  return make(503, "ServiceUnavailable", std::move(message));
}

ApiError ApiError::invalid(const std::string& kind, const std::string& group,
                           const std::string& name, std::vector<StatusCause> causes) {
  std::string qualified_kind = group.empty() ? kind : kind + "." + group;
  std::string message = qualified_kind + " " + go_quote(name) + " is invalid";
  if (!causes.empty()) message += ": " + aggregate_causes(causes);
  ApiError e = make(422, "Invalid", std::move(message));
  e.kind = kind;
  e.group = group;
  e.name = name;
  e.causes = std::move(causes);
  return e;
}

ApiError ApiError::from_storage(const Status& status) {
  const std::string& msg = status.message();
  switch (status.code()) {
    case StatusCode::kNotFound:
      return make(404, "NotFound", msg);
    case StatusCode::kAlreadyExists:
      return make(409, "AlreadyExists", msg);
    case StatusCode::kInvalidArgument:
      return bad_request(msg);
    case StatusCode::kCompacted: {
      // The store says "revision N has been compacted (compacted up to M)"; clients expect
      // upstream's "too old resource version: N (M)".
      std::vector<int64_t> n = integers_in(msg);
      if (contains(msg, "compacted") && n.size() >= 2) {
        return gone("too old resource version: " + std::to_string(n[0]) + " (" +
                    std::to_string(n[1]) + ")");
      }
      return gone(msg.empty() ? "too old resource version" : msg);
    }
    case StatusCode::kFutureRevision: {
      std::vector<int64_t> n = integers_in(msg);
      std::string detail = "Too large resource version";
      if (contains(msg, "newer than") && n.size() >= 2) {
        detail += ": " + std::to_string(n[0]) + ", current: " + std::to_string(n[1]);
      } else if (!msg.empty()) {
        detail += ": " + msg;
      }
      ApiError e = timeout(detail);
      e.causes.push_back(StatusCause{"ResourceVersionTooLarge", "Too large resource version", ""});
      e.retry_after_seconds = 1;
      return e;
    }
    case StatusCode::kTooLarge:
      return request_entity_too_large(msg);
    case StatusCode::kUnavailable:
      return service_unavailable(msg);
    default:
      return internal(msg);
  }
}

void FieldErrors::required(std::string field, std::string detail) {
  std::string msg = "Required value";
  if (!detail.empty()) msg += ": " + detail;
  causes_.push_back(StatusCause{"FieldValueRequired", std::move(msg), std::move(field)});
}

void FieldErrors::invalid(std::string field, const std::string& value, std::string detail) {
  std::string msg = "Invalid value: " + go_quote(value);
  if (!detail.empty()) msg += ": " + detail;
  causes_.push_back(StatusCause{"FieldValueInvalid", std::move(msg), std::move(field)});
}

void FieldErrors::invalid_value(std::string field, const nlohmann::json& value,
                                std::string detail) {
  std::string msg = "Invalid value: " + format_bad_value(value);
  if (!detail.empty()) msg += ": " + detail;
  causes_.push_back(StatusCause{"FieldValueInvalid", std::move(msg), std::move(field)});
}

void FieldErrors::not_supported(std::string field, const std::string& value,
                                const std::vector<std::string>& supported) {
  std::string msg = "Unsupported value: " + go_quote(value);
  if (!supported.empty()) {
    msg += ": supported values: ";
    for (size_t i = 0; i < supported.size(); ++i) {
      if (i > 0) msg += ", ";
      msg += go_quote(supported[i]);
    }
  }
  causes_.push_back(StatusCause{"FieldValueNotSupported", std::move(msg), std::move(field)});
}

void FieldErrors::duplicate(std::string field, const std::string& value) {
  causes_.push_back(
      StatusCause{"FieldValueDuplicate", "Duplicate value: " + go_quote(value), std::move(field)});
}

void FieldErrors::forbidden(std::string field, std::string detail) {
  std::string msg = "Forbidden";
  if (!detail.empty()) msg += ": " + detail;
  causes_.push_back(StatusCause{"FieldValueForbidden", std::move(msg), std::move(field)});
}

void FieldErrors::too_long(std::string field, size_t max) {
  std::string msg =
      "Too long: may not be more than " + std::to_string(max) + (max == 1 ? " byte" : " bytes");
  causes_.push_back(StatusCause{"FieldValueTooLong", std::move(msg), std::move(field)});
}

}  // namespace skiff::api
