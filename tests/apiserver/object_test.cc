#include "apiserver/object.h"

#include <gtest/gtest.h>

namespace skiff::apiserver {
namespace {

TEST(WithResourceVersion, SplicesIntoTopLevelMetadata) {
  EXPECT_EQ(with_resource_version(R"({"kind":"Pod","metadata":{"name":"p"}})", 7),
            R"({"kind":"Pod","metadata":{"resourceVersion":"7","name":"p"}})");
  EXPECT_EQ(with_resource_version(R"({"metadata":{}})", 8),
            R"({"metadata":{"resourceVersion":"8"}})");
  EXPECT_EQ(with_resource_version(R"({"kind":"X"})", 9),
            R"({"metadata":{"resourceVersion":"9"},"kind":"X"})");
}

TEST(WithResourceVersion, IgnoresNestedMetadata) {
  // A ControllerRevision serializes "data" (holding a pod template's metadata) before its own.
  std::string stored =
      R"({"data":{"spec":{"template":{"metadata":{"labels":{"a":"b"}}}}},"kind":"ControllerRevision","metadata":{"name":"r"}})";
  auto out = nlohmann::json::parse(with_resource_version(stored, 5));
  EXPECT_EQ(out["metadata"]["resourceVersion"], "5");
  EXPECT_FALSE(out["data"]["spec"]["template"]["metadata"].contains("resourceVersion"));
  // Strings that look like keys do not count.
  stored = R"({"a":"\"metadata\":{","metadata":{"name":"x"}})";
  out = nlohmann::json::parse(with_resource_version(stored, 6));
  EXPECT_EQ(out["a"], "\"metadata\":{");
  EXPECT_EQ(out["metadata"]["resourceVersion"], "6");
}

}  // namespace
}  // namespace skiff::apiserver
