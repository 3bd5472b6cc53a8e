#include "api/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <string>

extern const char kSchemaTypesJson[];
extern const size_t kSchemaTypesJsonSize;
extern const char kSchemaResourcesJson[];
extern const size_t kSchemaResourcesJsonSize;

namespace skiff::api {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr std::string_view kMeta = "io.k8s.apimachinery.pkg.apis.meta.v1.";

const Schema& schema() {
  return Schema::builtin();
}

const FieldInfo& field(std::string_view type, std::string_view name) {
  const TypeInfo* t = schema().type(type);
  SKIFF_CHECK(t != nullptr, std::string("no type ") + std::string(type));
  const FieldInfo* f = t->field(name);
  SKIFF_CHECK(f != nullptr, std::string("no field ") + std::string(name));
  return *f;
}

TEST(SchemaTest, LoadTimeIsSmall) {
  std::string_view types(kSchemaTypesJson, kSchemaTypesJsonSize);
  std::string_view resources(kSchemaResourcesJson, kSchemaResourcesJsonSize);
  constexpr int kRuns = 20;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRuns; ++i) {
    auto loaded = Schema::load(types, resources);
    ASSERT_TRUE(loaded.is_ok()) << loaded.status().to_string();
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  double ms = std::chrono::duration<double, std::milli>(elapsed).count() / kRuns;
  std::printf("schema load: %.2f ms (%zu types, %zu resources, %zu + %zu bytes of JSON)\n", ms,
              schema().types().size(), schema().resources().size(), kSchemaTypesJsonSize,
              kSchemaResourcesJsonSize);
}

TEST(SchemaTest, PodSpecIsFieldTwo) {
  const FieldInfo& spec = field("io.k8s.api.core.v1.Pod", "spec");
  EXPECT_EQ(spec.kind, FieldKind::kObject);
  EXPECT_EQ(spec.type_name, "io.k8s.api.core.v1.PodSpec");
  EXPECT_EQ(spec.proto_number, 2);
  EXPECT_FALSE(spec.is_list);
  EXPECT_EQ(schema().type("io.k8s.api.core.v1.Pod")->field_by_proto(2), &spec);
}

TEST(SchemaTest, ContainersMergeOnName) {
  const FieldInfo& containers = field("io.k8s.api.core.v1.PodSpec", "containers");
  EXPECT_TRUE(containers.is_list);
  EXPECT_EQ(containers.kind, FieldKind::kObject);
  EXPECT_EQ(containers.type_name, "io.k8s.api.core.v1.Container");
  EXPECT_EQ(containers.patch_strategy, "merge");
  EXPECT_EQ(containers.patch_merge_key, "name");
  EXPECT_EQ(containers.proto_number, 2);
  EXPECT_TRUE(containers.required);
  EXPECT_FALSE(containers.omit_empty);
  EXPECT_EQ(field("io.k8s.api.core.v1.PodSpec", "volumes").patch_strategy, "merge,retainKeys");
}

TEST(SchemaTest, ContainerPortsAreAListMap) {
  const FieldInfo& ports = field("io.k8s.api.core.v1.Container", "ports");
  EXPECT_EQ(ports.patch_merge_key, "containerPort");
  EXPECT_EQ(ports.list_type, "map");
  EXPECT_THAT(ports.list_map_keys, ElementsAre("containerPort", "protocol"));
  EXPECT_THAT(field("io.k8s.api.core.v1.ContainerPort", "protocol").enum_values,
              ElementsAre("SCTP", "TCP", "UDP"));
}

TEST(SchemaTest, ObjectMeta) {
  std::string meta = std::string(kMeta) + "ObjectMeta";
  const FieldInfo& labels = field(meta, "labels");
  EXPECT_TRUE(labels.is_map);
  EXPECT_FALSE(labels.is_list);
  EXPECT_EQ(labels.kind, FieldKind::kString);
  EXPECT_EQ(labels.proto_number, 11);
  const FieldInfo& created = field(meta, "creationTimestamp");
  EXPECT_EQ(created.kind, FieldKind::kTime);
  EXPECT_EQ(created.type_name, std::string(kMeta) + "Time");
  EXPECT_EQ(field(meta, "finalizers").list_type, "set");
  const FieldInfo& owners = field(meta, "ownerReferences");
  EXPECT_EQ(owners.patch_merge_key, "uid");
  EXPECT_EQ(schema().type(std::string(kMeta) + "OwnerReference")->struct_type, "atomic");
}

TEST(SchemaTest, SpecialScalars) {
  const FieldInfo& target = field("io.k8s.api.core.v1.ServicePort", "targetPort");
  EXPECT_EQ(target.kind, FieldKind::kIntOrString);
  EXPECT_EQ(target.proto_number, 4);
  const FieldInfo& limits = field("io.k8s.api.core.v1.ResourceRequirements", "limits");
  EXPECT_TRUE(limits.is_map);
  EXPECT_EQ(limits.kind, FieldKind::kQuantity);
  EXPECT_EQ(field("io.k8s.api.coordination.v1.LeaseSpec", "renewTime").kind, FieldKind::kMicroTime);
  EXPECT_EQ(field("io.k8s.api.apps.v1.ControllerRevision", "data").kind, FieldKind::kRaw);
  EXPECT_EQ(field("io.k8s.api.core.v1.Secret", "data").kind, FieldKind::kBytes);
  EXPECT_TRUE(field("io.k8s.api.core.v1.Secret", "data").is_map);
  EXPECT_EQ(field("io.k8s.api.core.v1.PodSpec", "terminationGracePeriodSeconds").kind,
            FieldKind::kInt64);
  EXPECT_EQ(field("io.k8s.api.core.v1.PodSpec", "hostNetwork").kind, FieldKind::kBool);
  EXPECT_EQ(field("io.k8s.api.core.v1.PodSpec", "restartPolicy").kind, FieldKind::kString);
  EXPECT_THAT(field("io.k8s.api.core.v1.PodSpec", "restartPolicy").enum_values,
              ElementsAre("Always", "Never", "OnFailure"));
  EXPECT_EQ(schema().type(std::string(kMeta) + "Time")->scalar, FieldKind::kTime);
}

TEST(SchemaTest, InlineStructsAreFlattened) {
  // TypeMeta: in JSON, not in protobuf.
  const FieldInfo& kind = field("io.k8s.api.core.v1.Pod", "kind");
  EXPECT_EQ(kind.kind, FieldKind::kString);
  EXPECT_EQ(kind.proto_number, 0);
  EXPECT_NE(schema().type("io.k8s.api.core.v1.Pod")->field("apiVersion"), nullptr);
  // VolumeSource: flattened in JSON, a nested message (field 2) in protobuf.
  const TypeInfo* volume = schema().type("io.k8s.api.core.v1.Volume");
  const FieldInfo& host_path = field("io.k8s.api.core.v1.Volume", "hostPath");
  EXPECT_EQ(host_path.embedded_in, 2);
  EXPECT_EQ(host_path.proto_number, 1);
  EXPECT_EQ(volume->field_by_proto(1)->json_name, "name");
  ASSERT_NE(volume->embedded_by_proto(2), nullptr);
  EXPECT_EQ(volume->embedded_by_proto(2)->type_name, "io.k8s.api.core.v1.VolumeSource");
  EXPECT_EQ(volume->embedded_by_proto(2)->type, schema().type("io.k8s.api.core.v1.VolumeSource"));
  EXPECT_EQ(field("io.k8s.api.core.v1.EphemeralContainer", "image").embedded_in, 1);
  EXPECT_EQ(field("io.k8s.api.core.v1.EphemeralContainer", "targetContainerName").proto_number, 2);
}

TEST(SchemaTest, DeploymentResource) {
  const ResourceInfo* r = schema().resource("apps", "v1", "deployments");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->kind, "Deployment");
  EXPECT_EQ(r->list_kind, "DeploymentList");
  EXPECT_EQ(r->singular, "deployment");
  EXPECT_TRUE(r->namespaced);
  EXPECT_THAT(r->short_names, ElementsAre("deploy"));
  EXPECT_THAT(r->categories, ElementsAre("all"));
  EXPECT_EQ(r->qualified_resource(), "deployments.apps");
  EXPECT_EQ(r->type, schema().type("io.k8s.api.apps.v1.Deployment"));
  EXPECT_EQ(r->list_type, schema().type("io.k8s.api.apps.v1.DeploymentList"));
  const SubresourceInfo* scale = r->subresource("scale");
  ASSERT_NE(scale, nullptr);
  EXPECT_EQ(scale->response, (GroupVersionKind{"autoscaling", "v1", "Scale"}));
  EXPECT_EQ(scale->type, schema().type("io.k8s.api.autoscaling.v1.Scale"));
  EXPECT_THAT(scale->verbs, UnorderedElementsAre("get", "patch", "update"));
  ASSERT_NE(r->subresource("status"), nullptr);
  EXPECT_EQ(r->subresource("status")->response.kind, "Deployment");
  EXPECT_EQ(r->subresource("exec"), nullptr);
  EXPECT_EQ(schema().resource_for_kind("apps", "v1", "Deployment"), r);
}

TEST(SchemaTest, ShortNamesScopeAndCategories) {
  EXPECT_THAT(schema().resource("", "v1", "services")->short_names, ElementsAre("svc"));
  EXPECT_THAT(schema().resource("", "v1", "pods")->short_names, ElementsAre("po"));
  EXPECT_FALSE(schema().resource("", "v1", "nodes")->namespaced);
  EXPECT_FALSE(schema().resource("", "v1", "namespaces")->namespaced);
  EXPECT_FALSE(schema().resource("rbac.authorization.k8s.io", "v1", "clusterroles")->namespaced);
  EXPECT_TRUE(schema().resource("", "v1", "pods")->namespaced);
  EXPECT_THAT(schema().resource("scheduling.k8s.io", "v1", "priorityclasses")->short_names,
              ElementsAre("pc"));
  EXPECT_THAT(schema().resource("batch", "v1", "cronjobs")->short_names, ElementsAre("cj"));
  EXPECT_THAT(schema().resource("", "v1", "secrets")->short_names, IsEmpty());
  EXPECT_EQ(schema().resource("", "v1", "deployments"), nullptr);
  EXPECT_EQ(schema().resource("apps", "v2", "deployments"), nullptr);

  std::set<std::string> all;
  for (const ResourceInfo& r : schema().resources()) {
    for (const std::string& c : r.categories) {
      if (c == "all") all.insert(r.qualified_resource());
    }
  }
  EXPECT_THAT(all, UnorderedElementsAre("pods", "services", "replicationcontrollers",
                                        "deployments.apps", "replicasets.apps", "statefulsets.apps",
                                        "daemonsets.apps", "jobs.batch", "cronjobs.batch"));

  const ResourceInfo* pods = schema().resource("", "v1", "pods");
  const SubresourceInfo* eviction = pods->subresource("eviction");
  ASSERT_NE(eviction, nullptr);
  EXPECT_EQ(eviction->response, (GroupVersionKind{"policy", "v1", "Eviction"}));
  EXPECT_THAT(eviction->verbs, ElementsAre("create"));
  EXPECT_EQ(schema().resource("", "v1", "namespaces")->subresource("finalize")->verbs,
            std::vector<std::string>{"update"});
  EXPECT_THAT(schema().resource("", "v1", "namespaces")->verbs,
              testing::Not(testing::Contains("deletecollection")));
}

TEST(SchemaTest, EveryReferenceResolves) {
  for (const ResourceInfo& r : schema().resources()) {
    ASSERT_NE(r.type, nullptr) << r.resource;
    EXPECT_EQ(r.type, schema().type(r.type_name)) << r.resource;
    EXPECT_EQ(r.list_type, schema().type(r.list_type_name)) << r.resource;
    EXPECT_EQ(r.type_name.substr(r.type_name.rfind('.') + 1), r.kind);
    EXPECT_NE(r.type->field("metadata"), nullptr) << r.resource;
    EXPECT_FALSE(r.verbs.empty()) << r.resource;
    EXPECT_EQ(schema().resource(r.group, r.version, r.resource), &r);
    for (const SubresourceInfo& s : r.subresources) {
      EXPECT_EQ(s.type, schema().type(s.type_name)) << r.resource << "/" << s.name;
      EXPECT_NE(s.type, nullptr) << r.resource << "/" << s.name;
    }
  }
  size_t fields = 0;
  for (const auto& [name, type] : schema().types()) {
    EXPECT_EQ(type.name, name);
    for (const FieldInfo& f : type.fields) {
      ++fields;
      EXPECT_FALSE(f.json_name.empty()) << name;
      EXPECT_FALSE(f.is_list && f.is_map) << name << "." << f.json_name;
      if (f.kind == FieldKind::kObject) {
        const TypeInfo* t = schema().type(f.type_name);
        ASSERT_NE(t, nullptr) << name << "." << f.json_name << " -> " << f.type_name;
        EXPECT_EQ(t->scalar, FieldKind::kObject);
      }
      if (!f.type_name.empty()) {
        EXPECT_EQ(schema().type(f.type_name)->scalar, f.kind);
      }
      EXPECT_EQ(type.field(f.json_name), &f);
      if (f.proto_number != 0 && f.embedded_in == 0) {
        EXPECT_EQ(type.field_by_proto(f.proto_number), &f) << name << "." << f.json_name;
      }
    }
  }
  EXPECT_GT(schema().types().size(), 300u);
  EXPECT_GT(fields, 1500u);
}

TEST(SchemaTest, LoadRejectsBrokenDocuments) {
  const std::string resources = R"({"resources":[]})";
  auto bad_json = Schema::load("{", resources);
  ASSERT_FALSE(bad_json.is_ok());
  EXPECT_EQ(bad_json.status().code(), StatusCode::kInvalidArgument);

  auto dangling = Schema::load(
      R"({"types":{"a.A":{"fields":[{"n":"b","t":"[]a.Missing","p":1}]}}})", resources);
  ASSERT_FALSE(dangling.is_ok());
  EXPECT_EQ(dangling.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(dangling.status().message(), HasSubstr("a.Missing"));
  EXPECT_THAT(dangling.status().message(), HasSubstr("a.A.b"));

  auto wrong_kind = Schema::load(R"({"types":{"a.A":{"fields":[{"n":"b","t":7}]}}})", resources);
  ASSERT_FALSE(wrong_kind.is_ok());
  EXPECT_THAT(wrong_kind.status().message(), HasSubstr("a.A.b: unexpected number"));

  auto unknown_key =
      Schema::load(R"({"types":{"a.A":{"fields":[{"n":"b","t":"string","x":1}]}}})", resources);
  ASSERT_FALSE(unknown_key.is_ok());
  EXPECT_THAT(unknown_key.status().message(), HasSubstr("unknown key \"x\""));

  auto inline_loop = Schema::load(R"({"types":{"a.A":{"fields":[{"inline":"a.A"}]}}})", resources);
  ASSERT_FALSE(inline_loop.is_ok());
  EXPECT_THAT(inline_loop.status().message(), HasSubstr("inlines itself"));

  auto no_types = Schema::load(R"({"source":{"x":[1,{"y":null}]}})", resources);
  ASSERT_FALSE(no_types.is_ok());
  EXPECT_THAT(no_types.status().message(), HasSubstr("no \"types\""));

  const std::string types = R"({"types":{"a.A":{"fields":[{"n":"x","t":"string"}]}}})";
  auto missing_type = Schema::load(
      types,
      R"({"resources":[{"group":"g","version":"v1","resource":"as","singular":"a","kind":"A",
          "listKind":"AList","type":"a.A","listType":"a.AList"}]})");
  ASSERT_FALSE(missing_type.is_ok());
  EXPECT_THAT(missing_type.status().message(), HasSubstr("a.AList"));

  auto ok = Schema::load(types, resources);
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  EXPECT_EQ((*ok)->type("a.A")->field("x")->kind, FieldKind::kString);
}

}  // namespace
}  // namespace skiff::api
