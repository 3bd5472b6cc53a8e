#include "api/openapi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "api/schema.h"

namespace skiff::api {
namespace {

using Json = nlohmann::json;

Json parse(const std::string* text) {
  EXPECT_NE(text, nullptr);
  if (text == nullptr) return Json();
  return Json::parse(*text);
}

// Every "$ref" in `node` names an entry of `defs` (refs are "<prefix><name>").
void expect_refs_resolve(const Json& node, const Json& defs, const std::string& prefix,
                         int* count) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it.key() == "$ref" && it->is_string()) {
        const std::string& ref = it->get_ref<const std::string&>();
        ASSERT_TRUE(ref.starts_with(prefix)) << ref;
        EXPECT_TRUE(defs.contains(ref.substr(prefix.size()))) << "dangling " << ref;
        ++*count;
      } else {
        expect_refs_resolve(*it, defs, prefix, count);
      }
    }
  } else if (node.is_array()) {
    for (const Json& e : node) expect_refs_resolve(e, defs, prefix, count);
  }
}

TEST(OpenApiTest, RootListsEveryGroupVersionWithHash) {
  OpenApi openapi(Schema::builtin());
  Json root = Json::parse(openapi.root_v3());
  ASSERT_TRUE(root["paths"].contains("api/v1"));
  ASSERT_TRUE(root["paths"].contains("apis/apps/v1"));
  std::string url = root["paths"]["apis/apps/v1"]["serverRelativeURL"];
  const std::string* hash = openapi.group_version_v3_hash("apis/apps/v1");
  ASSERT_NE(hash, nullptr);
  EXPECT_EQ(url, "/openapi/v3/apis/apps/v1?hash=" + *hash);
  EXPECT_EQ(hash->size(), 128u);
  for (char c : *hash) EXPECT_TRUE(isdigit(c) || (c >= 'A' && c <= 'F')) << *hash;

  Json prefixed = Json::parse(openapi.root_v3("/k8s"));
  EXPECT_EQ(prefixed["paths"]["api/v1"]["serverRelativeURL"].get<std::string>().rfind(
                "/k8s/openapi/v3/api/v1?hash=", 0),
            0u);
  // Stable: a second instance hashes to the same value.
  OpenApi again(Schema::builtin());
  EXPECT_EQ(*again.group_version_v3_hash("apis/apps/v1"), *hash);
  EXPECT_EQ(openapi.group_version_v3("apis/nope/v1"), nullptr);
  EXPECT_EQ(openapi.group_version_v3("apis/apps"), nullptr);
}

TEST(OpenApiTest, DeploymentPatchOperation) {
  OpenApi openapi(Schema::builtin());
  Json doc = parse(openapi.group_version_v3("apis/apps/v1"));
  EXPECT_EQ(doc["openapi"], "3.0.0");
  const Json& item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
  ASSERT_TRUE(item.contains("patch"));
  const Json& patch = item["patch"];
  EXPECT_EQ(patch["x-kubernetes-group-version-kind"],
            (Json{{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}}));
  EXPECT_EQ(patch["x-kubernetes-action"], "patch");
  bool field_validation = false;
  for (const Json& p : patch["parameters"]) {
    if (p["name"] == "fieldValidation" && p["in"] == "query") field_validation = true;
  }
  EXPECT_TRUE(field_validation);
  EXPECT_TRUE(patch["requestBody"]["content"].contains("application/strategic-merge-patch+json"));
  EXPECT_TRUE(patch["requestBody"]["content"].contains("application/apply-patch+yaml"));

  // The other operations are there too.
  EXPECT_TRUE(item.contains("get"));
  EXPECT_TRUE(item.contains("put"));
  EXPECT_TRUE(item.contains("delete"));
  const Json& coll = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
  EXPECT_EQ(coll["post"]["x-kubernetes-action"], "post");
  EXPECT_EQ(coll["get"]["x-kubernetes-action"], "list");
  EXPECT_TRUE(doc["paths"].contains("/apis/apps/v1/deployments"));
  EXPECT_TRUE(
      doc["paths"].contains("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"));

  const Json& deployment = doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
  EXPECT_EQ(deployment["x-kubernetes-group-version-kind"],
            Json::array({Json{{"group", "apps"}, {"version", "v1"}, {"kind", "Deployment"}}}));
  EXPECT_FALSE(deployment["description"].get<std::string>().empty());
  EXPECT_EQ(deployment["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec");
  EXPECT_TRUE(deployment["properties"]["spec"].contains("description"));
  const Json& spec = doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"];
  EXPECT_EQ(spec["properties"]["replicas"]["type"], "integer");
  EXPECT_EQ(spec["properties"]["replicas"]["format"], "int32");
  EXPECT_NE(std::find(spec["required"].begin(), spec["required"].end(), "selector"),
            spec["required"].end());
  // Scale is reachable through the scale subresource.
  EXPECT_TRUE(doc["components"]["schemas"].contains("io.k8s.api.autoscaling.v1.Scale"));
}

TEST(OpenApiTest, PodSchemas) {
  OpenApi openapi(Schema::builtin());
  Json doc = parse(openapi.group_version_v3("api/v1"));
  const Json& schemas = doc["components"]["schemas"];
  const Json& pod = schemas["io.k8s.api.core.v1.Pod"];
  EXPECT_EQ(pod["x-kubernetes-group-version-kind"],
            Json::array({Json{{"group", ""}, {"version", "v1"}, {"kind", "Pod"}}}));
  const Json& containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
  EXPECT_EQ(containers["type"], "array");
  EXPECT_EQ(containers["x-kubernetes-patch-merge-key"], "name");
  EXPECT_EQ(containers["x-kubernetes-patch-strategy"], "merge");
  EXPECT_EQ(containers["items"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container");

  const Json& container = schemas["io.k8s.api.core.v1.Container"]["properties"];
  EXPECT_EQ(container["ports"]["x-kubernetes-list-type"], "map");
  EXPECT_TRUE(container["ports"]["x-kubernetes-list-map-keys"].is_array());
  EXPECT_EQ(container["name"]["type"], "string");
  EXPECT_EQ(container["stdin"]["type"], "boolean");

  EXPECT_EQ(
      schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"],
      (Json{
          {"type", "string"}, {"format", "int-or-string"}, {"x-kubernetes-int-or-string", true}}));
  EXPECT_EQ(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Time"],
            (Json{{"type", "string"}, {"format", "date-time"}}));
  EXPECT_EQ(schemas["io.k8s.apimachinery.pkg.runtime.RawExtension"], (Json{{"type", "object"}}));
  const Json& limits = schemas["io.k8s.api.core.v1.ResourceRequirements"]["properties"]["limits"];
  EXPECT_EQ(limits["type"], "object");
  EXPECT_EQ(limits["additionalProperties"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.api.resource.Quantity");
  EXPECT_EQ(
      schemas["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"]["additionalProperties"]["type"],
      "string");
  EXPECT_EQ(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
            "atomic");
  // The core group's ConfigMap create operation.
  const Json& cm = doc["paths"]["/api/v1/namespaces/{namespace}/configmaps"]["post"];
  EXPECT_EQ(cm["x-kubernetes-group-version-kind"],
            (Json{{"group", ""}, {"version", "v1"}, {"kind", "ConfigMap"}}));
}

TEST(OpenApiTest, EveryRefResolvesInEveryDocument) {
  OpenApi openapi(Schema::builtin());
  ASSERT_FALSE(openapi.group_version_paths().empty());
  for (const std::string& path : openapi.group_version_paths()) {
    SCOPED_TRACE(path);
    Json doc = parse(openapi.group_version_v3(path));
    int count = 0;
    expect_refs_resolve(doc, doc["components"]["schemas"], "#/components/schemas/", &count);
    EXPECT_GT(count, 0);
    // Every served kind has a patch operation naming it (what kubectl's validation looks for).
    bool any_patch = false;
    for (const auto& [p, item] : doc["paths"].items()) {
      if (item.contains("patch")) any_patch = true;
    }
    EXPECT_TRUE(any_patch);
  }
  Json v2 = Json::parse(openapi.v2());
  EXPECT_EQ(v2["swagger"], "2.0");
  int count = 0;
  expect_refs_resolve(v2, v2["definitions"], "#/definitions/", &count);
  EXPECT_GT(count, 0);
  EXPECT_TRUE(v2["paths"].contains("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"));
  EXPECT_EQ(
      v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["items"]["$ref"],
      "#/definitions/io.k8s.api.core.v1.Container");
  EXPECT_EQ(openapi.v2_hash().size(), 128u);
}

TEST(OpenApiTest, Serve) {
  OpenApi openapi(Schema::builtin());
  EXPECT_FALSE(openapi.serve("GET", "/api/v1", "", "", "").has_value());
  EXPECT_FALSE(openapi.serve("GET", "/openapi/v4", "", "", "").has_value());

  auto root = openapi.serve("GET", "/openapi/v3", "", "application/json, */*", "");
  ASSERT_TRUE(root.has_value());
  EXPECT_EQ(root->status, 200);
  EXPECT_EQ(root->body, openapi.root_v3());

  const std::string& hash = *openapi.group_version_v3_hash("apis/apps/v1");
  auto gv = openapi.serve("GET", "/openapi/v3/apis/apps/v1", hash, "application/json", "");
  ASSERT_TRUE(gv.has_value());
  EXPECT_EQ(gv->status, 200);
  EXPECT_EQ(gv->body, *openapi.group_version_v3("apis/apps/v1"));
  auto header = [](const OpenApiReply& r, const std::string& name) {
    for (const auto& [n, v] : r.headers) {
      if (n == name) return v;
    }
    return std::string();
  };
  EXPECT_EQ(header(*gv, "Cache-Control"), "public, immutable");
  EXPECT_EQ(header(*gv, "ETag"), "\"" + hash + "\"");
  auto stale = openapi.serve("GET", "/openapi/v3/apis/apps/v1", "0123", "", "");
  EXPECT_EQ(header(*stale, "Cache-Control"), "no-cache, private");
  auto cached = openapi.serve("GET", "/openapi/v3/apis/apps/v1", hash, "", "\"" + hash + "\"");
  EXPECT_EQ(cached->status, 304);
  EXPECT_TRUE(cached->body.empty());

  auto missing = openapi.serve("GET", "/openapi/v3/apis/nope/v1", "", "", "");
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Json::parse(missing->body)["reason"], "NotFound");

  auto proto_only = openapi.serve("GET", "/openapi/v2", "",
                                  "application/com.github.proto-openapi.spec.v2@v1.0+protobuf", "");
  ASSERT_EQ(proto_only->status, 200);
  EXPECT_EQ(proto_only->content_type, "application/octet-stream");
  EXPECT_TRUE(proto_only->body == openapi.v2_protobuf());
  // openapi.v2.Document: field 1 (swagger) is the string "2.0", then field 2 (info).
  EXPECT_EQ(proto_only->body.substr(0, 5), std::string("\x0a\x03"
                                                       "2.0\x12",
                                                       6)
                                               .substr(0, 5));
  // Strings kubectl looks for are carried through.
  EXPECT_NE(proto_only->body.find("x-kubernetes-group-version-kind"), std::string::npos);
  EXPECT_NE(proto_only->body.find("fieldValidation"), std::string::npos);
  EXPECT_EQ(openapi.serve("GET", "/openapi/v3", "", "application/x-protobuf", "")->status, 406);
  auto v2 = openapi.serve(
      "GET", "/openapi/v2", "",
      "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf", "");
  EXPECT_EQ(v2->status, 200);
  EXPECT_TRUE(v2->body == openapi.v2());  // not EXPECT_EQ: a failure would print megabytes
  EXPECT_EQ(v2->content_type, "application/json");
  EXPECT_EQ(openapi.serve("POST", "/openapi/v3", "", "", "")->status, 405);
}

TEST(OpenApiTest, BuildCost) {
  const Schema& schema = Schema::builtin();
  auto start = std::chrono::steady_clock::now();
  OpenApi openapi(schema);
  auto constructed = std::chrono::steady_clock::now();
  openapi.root_v3();
  auto v3 = std::chrono::steady_clock::now();
  openapi.v2();
  auto v2 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  // Printed, not asserted: timings are not hermetic.
  std::printf("construct %.2f ms, all v3 docs %.2f ms, v2 %.2f ms, v3 apps/v1 %zu bytes\n",
              ms(start, constructed), ms(constructed, v3), ms(v3, v2),
              openapi.group_version_v3("apis/apps/v1")->size());
}

}  // namespace
}  // namespace skiff::api
