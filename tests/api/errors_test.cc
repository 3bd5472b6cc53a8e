#include "api/errors.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace skiff::api {
namespace {

using nlohmann::json;

TEST(ApiErrorTest, NotFoundStatusJson) {
  ApiError e = ApiError::not_found("pods", "nope");
  EXPECT_EQ(e.code, 404);
  EXPECT_EQ(e.message, "pods \"nope\" not found");
  // Field order as upstream's encoder writes it.
  EXPECT_EQ(e.to_json(), R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
                         R"("message":"pods \"nope\" not found","reason":"NotFound",)"
                         R"("details":{"name":"nope","kind":"pods"},"code":404})");
  json s = e.to_status();
  EXPECT_EQ(s["details"]["kind"], "pods");
  EXPECT_FALSE(s["details"].contains("group"));
}

TEST(ApiErrorTest, QualifiedResources) {
  ApiError e = ApiError::already_exists("deployments.apps", "x");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.reason, "AlreadyExists");
  EXPECT_EQ(e.message, "deployments.apps \"x\" already exists");
  EXPECT_EQ(e.group, "apps");
  EXPECT_EQ(e.kind, "deployments");
  json s = e.to_status();
  EXPECT_EQ(s["details"], (json{{"name", "x"}, {"group", "apps"}, {"kind", "deployments"}}));

  ApiError n = ApiError::not_found("ingresses.networking.k8s.io", "web");
  EXPECT_EQ(n.group, "networking.k8s.io");
  EXPECT_EQ(n.kind, "ingresses");
}

TEST(ApiErrorTest, Conflict) {
  ApiError e =
      ApiError::conflict("pods", "x",
                         "the object has been modified; please apply your changes to the latest "
                         "version and try again");
  EXPECT_EQ(e.code, 409);
  EXPECT_EQ(e.reason, "Conflict");
  EXPECT_EQ(e.message,
            "Operation cannot be fulfilled on pods \"x\": the object has been modified; please "
            "apply your changes to the latest version and try again");
}

TEST(ApiErrorTest, InvalidWithOneCause) {
  FieldErrors errs;
  errs.required("spec.containers[0].name");
  ApiError e = ApiError::invalid("Pod", "", "x", errs.take());
  EXPECT_EQ(e.code, 422);
  EXPECT_EQ(e.reason, "Invalid");
  EXPECT_EQ(e.message, "Pod \"x\" is invalid: spec.containers[0].name: Required value");
  EXPECT_EQ(e.to_json(),
            R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
            R"("message":"Pod \"x\" is invalid: spec.containers[0].name: Required value",)"
            R"("reason":"Invalid","details":{"name":"x","kind":"Pod","causes":[{)"
            R"("reason":"FieldValueRequired","message":"Required value",)"
            R"("field":"spec.containers[0].name"}]},"code":422})");
}

TEST(ApiErrorTest, InvalidWithManyCauses) {
  FieldErrors errs;
  errs.required("a");
  errs.invalid("b", "x", "must be y");
  errs.required("a");  // duplicates are printed once
  ApiError e = ApiError::invalid("Deployment", "apps", "web", errs.take());
  EXPECT_EQ(e.message,
            "Deployment.apps \"web\" is invalid: [a: Required value, b: Invalid value: \"x\": "
            "must be y]");
  EXPECT_EQ(e.causes.size(), 3u);
  EXPECT_EQ(e.group, "apps");
  EXPECT_EQ(e.kind, "Deployment");

  ApiError none = ApiError::invalid("Pod", "", "x", {});
  EXPECT_EQ(none.message, "Pod \"x\" is invalid");
}

TEST(ApiErrorTest, FieldErrorMessages) {
  FieldErrors errs;
  errs.required("f");
  errs.required("f", "must be set");
  errs.invalid("f", "x", "detail");
  errs.invalid("f", "", "");
  errs.not_supported("f", "x", {"a", "b"});
  errs.not_supported("f", "x", {});
  errs.duplicate("f", "x");
  errs.forbidden("f", "detail");
  errs.forbidden("f", "");
  errs.too_long("f", 10);
  errs.too_long("f", 1);
  errs.invalid_value("f", json(5), "too big");
  errs.invalid_value("f", json(1.5), "");
  errs.invalid_value("f", json{"a", "b"}, "d");
  errs.invalid("f", "quo\"te\n", "");
  std::vector<std::string> got;
  for (const StatusCause& c : errs.causes()) got.push_back(c.reason + "|" + c.message);
  EXPECT_EQ(got, (std::vector<std::string>{
                     "FieldValueRequired|Required value",
                     "FieldValueRequired|Required value: must be set",
                     "FieldValueInvalid|Invalid value: \"x\": detail",
                     "FieldValueInvalid|Invalid value: \"\"",
                     "FieldValueNotSupported|Unsupported value: \"x\": supported values: \"a\", "
                     "\"b\"",
                     "FieldValueNotSupported|Unsupported value: \"x\"",
                     "FieldValueDuplicate|Duplicate value: \"x\"",
                     "FieldValueForbidden|Forbidden: detail",
                     "FieldValueForbidden|Forbidden",
                     "FieldValueTooLong|Too long: may not be more than 10 bytes",
                     "FieldValueTooLong|Too long: may not be more than 1 byte",
                     "FieldValueInvalid|Invalid value: 5: too big",
                     "FieldValueInvalid|Invalid value: 1.5",
                     "FieldValueInvalid|Invalid value: [\"a\",\"b\"]: d",
                     "FieldValueInvalid|Invalid value: \"quo\\\"te\\n\"",
                 }));
  EXPECT_FALSE(errs.empty());
  EXPECT_EQ(errs.take().size(), 15u);
}

TEST(ApiErrorTest, SimpleFactories) {
  struct Case {
    ApiError e;
    int code;
    const char* reason;
    const char* message;
  } cases[] = {
      {ApiError::bad_request("bad"), 400, "BadRequest", "bad"},
      {ApiError::unauthorized(), 401, "Unauthorized", "Unauthorized"},
      {ApiError::forbidden("pods is forbidden: nope"), 403, "Forbidden", "pods is forbidden: nope"},
      {ApiError::method_not_allowed("no"), 405, "MethodNotAllowed", "no"},
      {ApiError::not_acceptable("no"), 406, "NotAcceptable", "no"},
      {ApiError::gone("too old resource version: 5 (10)"), 410, "Expired",
       "too old resource version: 5 (10)"},
      {ApiError::request_entity_too_large("limit is 3145728"), 413, "RequestEntityTooLarge",
       "Request entity too large: limit is 3145728"},
      {ApiError::internal("boom"), 500, "InternalError", "Internal error occurred: boom"},
      {ApiError::service_unavailable("later"), 503, "ServiceUnavailable", "later"},
      {ApiError::timeout("slow"), 504, "Timeout", "Timeout: slow"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.e.code, c.code) << c.message;
    EXPECT_EQ(c.e.reason, c.reason);
    EXPECT_EQ(c.e.message, c.message);
    json s = c.e.to_status();
    EXPECT_EQ(s["code"], c.code);
    EXPECT_EQ(s["status"], "Failure");
  }
  EXPECT_FALSE(ApiError::bad_request("x").to_status().contains("details"));
  ApiError internal = ApiError::internal("boom");
  ASSERT_EQ(internal.causes.size(), 1u);
  EXPECT_EQ(internal.to_status()["details"]["causes"][0], (json{{"message", "boom"}}));

  ApiError media = ApiError::unsupported_media_type("text/plain");
  EXPECT_EQ(media.code, 415);
  EXPECT_EQ(media.reason, "UnsupportedMediaType");

  ApiError busy = ApiError::too_many_requests("slow down", 3);
  EXPECT_EQ(busy.code, 429);
  EXPECT_EQ(busy.to_status()["details"]["retryAfterSeconds"], 3);
}

TEST(ApiErrorTest, FromStorage) {
  ApiError compacted = ApiError::from_storage(
      Status(StatusCode::kCompacted, "revision 5 has been compacted (compacted up to 10)"));
  EXPECT_EQ(compacted.code, 410);
  EXPECT_EQ(compacted.reason, "Expired");
  EXPECT_EQ(compacted.message, "too old resource version: 5 (10)");

  ApiError future = ApiError::from_storage(
      Status(StatusCode::kFutureRevision, "revision 12 is newer than the current revision 7"));
  EXPECT_EQ(future.code, 504);
  EXPECT_EQ(future.reason, "Timeout");
  EXPECT_EQ(future.message, "Timeout: Too large resource version: 12, current: 7");
  ASSERT_EQ(future.causes.size(), 1u);
  EXPECT_EQ(future.causes[0].reason, "ResourceVersionTooLarge");
  EXPECT_EQ(future.causes[0].message, "Too large resource version");
  EXPECT_EQ(future.retry_after_seconds, 1);

  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kTooLarge, "value too big")).code, 413);
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kTooLarge, "value too big")).reason,
            "RequestEntityTooLarge");
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kUnavailable, "no leader")).code, 503);
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kNotFound, "gone")).code, 404);
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kAlreadyExists, "dup")).code, 409);
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kInvalidArgument, "bad")).code, 400);
  ApiError other = ApiError::from_storage(Status(StatusCode::kDataLoss, "disk"));
  EXPECT_EQ(other.code, 500);
  EXPECT_EQ(other.message, "Internal error occurred: disk");
  // Messages the store phrases differently still map to the right codes.
  EXPECT_EQ(ApiError::from_storage(Status(StatusCode::kCompacted, "etcd: compacted")).message,
            "etcd: compacted");
}

TEST(ApiErrorTest, GoQuote) {
  EXPECT_EQ(go_quote("abc"), "\"abc\"");
  EXPECT_EQ(go_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(go_quote("\t\x01"), "\"\\t\\x01\"");
  EXPECT_EQ(go_quote("é"), "\"é\"");
  EXPECT_EQ(go_quote("\xff"), "\"\\xff\"");
}

}  // namespace
}  // namespace skiff::api
