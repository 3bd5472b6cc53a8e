#include "api/managed_fields.h"

#include <gtest/gtest.h>

#include "api/schema.h"

namespace skiff::api {
namespace {

using nlohmann::json;

const TypeInfo& type_of(const char* group, const char* resource) {
  const ResourceInfo* r = Schema::builtin().resource(group, "v1", resource);
  EXPECT_NE(r, nullptr);
  return *r->type;
}

const Schema& schema() {
  return Schema::builtin();
}

json deployment(const std::string& image, int replicas) {
  return json::parse(R"({
    "apiVersion":"apps/v1","kind":"Deployment",
    "metadata":{"name":"web","namespace":"default","labels":{"app":"web"}},
    "spec":{"selector":{"matchLabels":{"app":"web"}},
      "template":{"metadata":{"labels":{"app":"web"}},
        "spec":{"containers":[{"name":"nginx","image":"IMAGE","ports":[{"containerPort":80}]}]}}}})")
      .patch(json::parse(
          R"([{"op":"replace","path":"/spec/template/spec/containers/0/image","value":")" + image +
          R"("},{"op":"add","path":"/spec/replicas","value":)" + std::to_string(replicas) + "}]"));
}

WriterInfo writer(const std::string& manager, const std::string& subresource = "") {
  return WriterInfo{manager, subresource, "apps/v1", "2026-11-27T13:00:00Z", true};
}

const json* entry_of(const json& obj, const std::string& manager, const std::string& op) {
  for (const json& e : obj["metadata"]["managedFields"]) {
    if (e["manager"] == manager && e["operation"] == op) return &e;
  }
  return nullptr;
}

json apply(const json& live, const json& config, const std::string& manager, bool force = false) {
  auto r = server_side_apply(live, config, writer(manager), force, type_of("apps", "deployments"),
                             schema());
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  if (!r.is_ok()) return json();
  EXPECT_TRUE(r->conflicts.empty());
  return r->object;
}

TEST(FieldSetTest, EncodesDeploymentLikeUpstream) {
  FieldSet set =
      field_set_of(deployment("nginx:1.25", 2), type_of("apps", "deployments"), schema());
  json want = json::parse(R"({
    "f:apiVersion":{},"f:kind":{},
    "f:metadata":{"f:labels":{"f:app":{}},"f:name":{},"f:namespace":{}},
    "f:spec":{"f:replicas":{},"f:selector":{},
      "f:template":{"f:metadata":{"f:labels":{"f:app":{}}},
        "f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},
          "f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}})");
  EXPECT_EQ(set.to_fields_v1(), want);
  auto back = FieldSet::from_fields_v1(want);
  ASSERT_TRUE(back.is_ok());
  EXPECT_EQ(*back, set);
  EXPECT_TRUE(
      set.has({"f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"nginx\"}"}));
  EXPECT_FALSE(set.has({"f:spec", "f:template"}));
}

TEST(FieldSetTest, PathStrings) {
  EXPECT_EQ(field_path_string({"f:spec", "f:replicas"}), ".spec.replicas");
  EXPECT_EQ(field_path_string({"f:spec", "f:containers", "k:{\"name\":\"nginx\"}", "f:image"}),
            ".spec.containers[name=\"nginx\"].image");
  EXPECT_EQ(field_path_string({"f:ports", "k:{\"containerPort\":80,\"protocol\":\"TCP\"}"}),
            ".ports[containerPort=80,protocol=\"TCP\"]");
  EXPECT_EQ(field_path_string({"f:finalizers", "v:\"a\""}), ".finalizers[=\"a\"]");
}

TEST(FieldSetTest, SetOperations) {
  FieldSet a, b;
  a.insert({"f:a", "f:b"});
  a.insert({"f:a", "f:c"});
  b.insert({"f:a", "f:c"});
  b.insert({"f:d"});
  EXPECT_EQ(a.union_with(b).paths().size(), 3u);
  EXPECT_EQ(a.intersection(b).paths(), std::vector<FieldPath>({{"f:a", "f:c"}}));
  EXPECT_EQ(a.difference(b).paths(), std::vector<FieldPath>({{"f:a", "f:b"}}));
  FieldSet top;
  top.insert({"f:a"});
  EXPECT_TRUE(a.recursive_difference(top).empty());
  EXPECT_FALSE(a.difference(top).empty());
}

TEST(ApplyTest, CreatesWithApplyEntry) {
  json obj = apply(nullptr, deployment("nginx:1.25", 2), "kubectl");
  EXPECT_EQ(obj["spec"]["replicas"], 2);
  ASSERT_EQ(obj["metadata"]["managedFields"].size(), 1u);
  const json& e = obj["metadata"]["managedFields"][0];
  EXPECT_EQ(e["manager"], "kubectl");
  EXPECT_EQ(e["operation"], "Apply");
  EXPECT_EQ(e["apiVersion"], "apps/v1");
  EXPECT_EQ(e["fieldsType"], "FieldsV1");
  EXPECT_EQ(e["time"], "2026-11-27T13:00:00Z");
  // Identity metadata is nobody's.
  EXPECT_FALSE(e["fieldsV1"]["f:metadata"].contains("f:name"));
  EXPECT_FALSE(e["fieldsV1"].contains("f:kind"));
  EXPECT_TRUE(e["fieldsV1"]["f:metadata"]["f:labels"].contains("f:app"));
  EXPECT_TRUE(e["fieldsV1"]["f:spec"].contains("f:replicas"));
}

TEST(ApplyTest, ReapplyWithoutALabelRemovesIt) {
  json config = deployment("nginx:1.25", 2);
  config["metadata"]["labels"]["tier"] = "front";
  json live = apply(nullptr, config, "kubectl");
  EXPECT_EQ(live["metadata"]["labels"]["tier"], "front");
  config["metadata"]["labels"].erase("tier");
  json next = apply(live, config, "kubectl");
  EXPECT_FALSE(next["metadata"]["labels"].contains("tier"));
  EXPECT_EQ(next["metadata"]["labels"]["app"], "web");
}

TEST(ApplyTest, FieldSharedByTwoManagersStays) {
  json config = deployment("nginx:1.25", 2);
  config["metadata"]["labels"]["tier"] = "front";
  json live = apply(nullptr, config, "alice");
  // bob applies the same value: no conflict, shared ownership.
  json bob = json{{"apiVersion", "apps/v1"},
                  {"kind", "Deployment"},
                  {"metadata", {{"name", "web"}, {"labels", {{"tier", "front"}}}}}};
  live = apply(live, bob, "bob");
  EXPECT_TRUE(entry_of(live, "bob", "Apply") != nullptr);
  // alice stops applying the label; bob still owns it, so it stays.
  config["metadata"]["labels"].erase("tier");
  live = apply(live, config, "alice");
  EXPECT_EQ(live["metadata"]["labels"]["tier"], "front");
  // bob stops too: now it goes.
  bob["metadata"]["labels"] = {{"other", "x"}};
  live = apply(live, bob, "bob");
  EXPECT_FALSE(live["metadata"]["labels"].contains("tier"));
}

TEST(ApplyTest, ConflictWithUpdaterAndForce) {
  const TypeInfo& t = type_of("apps", "deployments");
  json created = update_managed_fields(nullptr, deployment("nginx:1.25", 2),
                                       writer("kubectl-client-side-apply"), t, schema());
  const json* e = entry_of(created, "kubectl-client-side-apply", "Update");
  ASSERT_NE(e, nullptr);
  // Update entries mark added maps and list elements with ".".
  EXPECT_TRUE((*e)["fieldsV1"]["f:metadata"]["f:labels"].contains("."));
  EXPECT_FALSE((*e)["fieldsV1"]["f:spec"].contains("."));

  auto r = server_side_apply(created, deployment("nginx:1.25", 3), writer("kubectl"), false, t,
                             schema());
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->conflicts.size(), 1u);
  EXPECT_EQ(r->conflicts[0].path, ".spec.replicas");
  ApiError err = apply_conflict_error(r->conflicts);
  EXPECT_EQ(err.code, 409);
  EXPECT_EQ(err.reason, "Conflict");
  EXPECT_EQ(err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using "
            "apps/v1: .spec.replicas");
  ASSERT_EQ(err.causes.size(), 1u);
  EXPECT_EQ(err.causes[0].reason, "FieldManagerConflict");
  EXPECT_EQ(err.causes[0].field, ".spec.replicas");

  // The same values do not conflict.
  auto same = server_side_apply(created, deployment("nginx:1.25", 2), writer("kubectl"), false, t,
                                schema());
  ASSERT_TRUE(same.is_ok());
  EXPECT_TRUE(same->conflicts.empty());

  // force takes ownership.
  json forced = apply(created, deployment("nginx:1.25", 3), "kubectl", /*force=*/true);
  EXPECT_EQ(forced["spec"]["replicas"], 3);
  const json* old = entry_of(forced, "kubectl-client-side-apply", "Update");
  ASSERT_NE(old, nullptr);
  EXPECT_FALSE((*old)["fieldsV1"]["f:spec"].contains("f:replicas"));
  EXPECT_TRUE((*entry_of(forced, "kubectl", "Apply"))["fieldsV1"]["f:spec"].contains("f:replicas"));
}

TEST(UpdateTest, CreateEntryLooksLikeUpstream) {
  json obj = deployment("nginx:1.25", 1);
  obj["spec"]["template"]["metadata"]["creationTimestamp"] = nullptr;
  obj = update_managed_fields(nullptr, obj, writer("kubectl-create"),
                              type_of("apps", "deployments"), schema());
  const json& f = (*entry_of(obj, "kubectl-create", "Update"))["fieldsV1"];
  const json& tmpl = f["f:spec"]["f:template"];
  // A null is an unset field; containers (no omitempty) and structs carry no ".", while
  // labels and ports (omitempty) do, as upstream records them.
  EXPECT_FALSE(tmpl["f:metadata"].contains("f:creationTimestamp"));
  EXPECT_TRUE(tmpl["f:metadata"]["f:labels"].contains("."));
  const json& containers = tmpl["f:spec"]["f:containers"];
  EXPECT_FALSE(containers.contains("."));
  EXPECT_TRUE(containers["k:{\"name\":\"nginx\"}"]["f:ports"].contains("."));
  EXPECT_FALSE(f["f:spec"].contains("."));
  EXPECT_FALSE(f.contains("f:kind"));
}

TEST(ApplyTest, ScaleSubresourceConflict) {
  const TypeInfo& t = type_of("apps", "deployments");
  json live = apply(nullptr, deployment("nginx:1.25", 2), "kubectl");
  json scaled = live;
  scaled["spec"]["replicas"] = 5;
  scaled = update_managed_fields(live, scaled, writer("kubectl", "scale"), t, schema());
  // The applier lost .spec.replicas to the scaler.
  EXPECT_FALSE(
      (*entry_of(scaled, "kubectl", "Apply"))["fieldsV1"]["f:spec"].contains("f:replicas"));
  auto r =
      server_side_apply(scaled, deployment("nginx:1.25", 2), writer("kubectl"), false, t, schema());
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->conflicts.size(), 1u);
  EXPECT_EQ(apply_conflict_error(r->conflicts).message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" "
            "using apps/v1: .spec.replicas");
}

TEST(ApplyTest, ListMapMergesContainersByName) {
  json live = apply(nullptr, deployment("nginx:1.25", 2), "kubectl");
  // Another manager adds a sidecar.
  json side = json::parse(R"({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
    "spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox"}]}}}})");
  live = apply(live, side, "other");
  ASSERT_EQ(live["spec"]["template"]["spec"]["containers"].size(), 2u);
  // kubectl changes its image: the sidecar stays, nginx is updated in place.
  live = apply(live, deployment("nginx:1.26", 2), "kubectl");
  const json& cs = live["spec"]["template"]["spec"]["containers"];
  ASSERT_EQ(cs.size(), 2u);
  EXPECT_EQ(cs[0]["name"], "nginx");
  EXPECT_EQ(cs[0]["image"], "nginx:1.26");
  EXPECT_EQ(cs[0]["ports"][0]["containerPort"], 80);
  EXPECT_EQ(cs[1]["name"], "sidecar");
  // other drops its sidecar: removed.
  side["spec"]["template"]["spec"]["containers"] = json::array();
  live = apply(live, side, "other");
  EXPECT_EQ(live["spec"]["template"]["spec"]["containers"].size(), 1u);
}

TEST(ApplyTest, ConflictOnContainerImage) {
  json live = apply(nullptr, deployment("nginx:1.25", 2), "a");
  auto r = server_side_apply(live, deployment("nginx:1.26", 2), writer("b"), false,
                             type_of("apps", "deployments"), schema());
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->conflicts.size(), 1u);
  EXPECT_EQ(r->conflicts[0].path, ".spec.template.spec.containers[name=\"nginx\"].image");
  EXPECT_EQ(r->conflicts[0].manager, "\"a\"");
}

TEST(ApplyTest, AtomicListsAreReplacedWhole) {
  json config = deployment("nginx:1.25", 2);
  config["spec"]["template"]["spec"]["containers"][0]["args"] = {"a", "b"};
  json live = apply(nullptr, config, "kubectl");
  config["spec"]["template"]["spec"]["containers"][0]["args"] = {"c"};
  live = apply(live, config, "kubectl");
  EXPECT_EQ(live["spec"]["template"]["spec"]["containers"][0]["args"], json({"c"}));
  const json& fields = (*entry_of(live, "kubectl", "Apply"))["fieldsV1"];
  EXPECT_EQ(
      fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["f:args"],
      json::object());
  // The selector (an atomic struct) is a leaf too.
  EXPECT_EQ(fields["f:spec"]["f:selector"], json::object());
}

TEST(ApplyTest, SetListsMergeByValue) {
  const TypeInfo& cm = type_of("", "configmaps");
  json a = json::parse(
      R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","finalizers":["x/a"]}})");
  auto r1 = server_side_apply(nullptr, a, writer("a"), false, cm, schema());
  ASSERT_TRUE(r1.is_ok());
  json b = json::parse(
      R"({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","finalizers":["x/b"]}})");
  auto r2 = server_side_apply(r1->object, b, writer("b"), false, cm, schema());
  ASSERT_TRUE(r2.is_ok());
  EXPECT_EQ(r2->object["metadata"]["finalizers"], json({"x/a", "x/b"}));
  const json* e = entry_of(r2->object, "b", "Apply");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE((*e)["fieldsV1"]["f:metadata"]["f:finalizers"].contains("v:\"x/b\""));
  // a withdraws its finalizer.
  a["metadata"].erase("finalizers");
  auto r3 = server_side_apply(r2->object, a, writer("a"), false, cm, schema());
  ASSERT_TRUE(r3.is_ok());
  EXPECT_EQ(r3->object["metadata"]["finalizers"], json({"x/b"}));
}

TEST(ApplyTest, MergeKeyListWithoutListTypeIsAMap) {
  // A schema where the list has only a patch merge key (no listType).
  static const char* kTypes = R"({"types":{
    "t.Obj":{"fields":[{"n":"apiVersion","t":"string"},{"n":"kind","t":"string"},
      {"n":"metadata","t":"t.Meta"},{"n":"items","t":"[]t.Item","patchStrategy":"merge","patchMergeKey":"name"},
      {"n":"plain","t":"[]t.Item"}]},
    "t.Meta":{"fields":[{"n":"name","t":"string"}]},
    "t.Item":{"fields":[{"n":"name","t":"string"},{"n":"v","t":"string"}]}}})";
  auto s = Schema::load(kTypes, R"({"resources":[]})");
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  const TypeInfo& t = *(*s)->type("t.Obj");
  json a = json::parse(
      R"({"metadata":{"name":"o"},"items":[{"name":"a","v":"1"}],"plain":[{"name":"a"}]})");
  auto r1 = server_side_apply(nullptr, a, writer("a"), false, t, **s);
  ASSERT_TRUE(r1.is_ok());
  json b = json::parse(R"({"metadata":{"name":"o"},"items":[{"name":"b","v":"2"}]})");
  auto r2 = server_side_apply(r1->object, b, writer("b"), false, t, **s);
  ASSERT_TRUE(r2.is_ok());
  EXPECT_EQ(r2->object["items"].size(), 2u);
  json c = json::parse(R"({"metadata":{"name":"o"},"plain":[{"name":"z"}]})");
  auto r3 = server_side_apply(r2->object, c, writer("c"), true, t, **s);
  ASSERT_TRUE(r3.is_ok());
  EXPECT_EQ(r3->object["plain"], json::parse(R"([{"name":"z"}])"));
}

TEST(UpdateTest, RecordsUpdatesAndTakesFieldsFromOthers) {
  const TypeInfo& t = type_of("apps", "deployments");
  json live = apply(nullptr, deployment("nginx:1.25", 2), "kubectl");
  json next = live;
  next["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.27";
  next = update_managed_fields(live, next, writer("kubectl-set"), t, schema());
  const json* set = entry_of(next, "kubectl-set", "Update");
  ASSERT_NE(set, nullptr);
  EXPECT_EQ(
      (*set)["fieldsV1"],
      json::parse(
          R"({"f:spec":{"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{"f:image":{}}}}}}})"));
  // No change: nothing recorded, nothing touched.
  json same = update_managed_fields(next, next, writer("someone"), t, schema());
  EXPECT_EQ(same["metadata"]["managedFields"], next["metadata"]["managedFields"]);
  // [{}] resets.
  json reset = next;
  reset["metadata"]["managedFields"] = json::parse("[{}]");
  reset = update_managed_fields(next, reset, writer("x"), t, schema());
  EXPECT_FALSE(reset["metadata"].contains("managedFields"));
}

TEST(UpdateTest, StatusWritesOwnOnlyStatus) {
  const TypeInfo& t = type_of("apps", "deployments");
  json live = apply(nullptr, deployment("nginx:1.25", 2), "kubectl");
  json next = live;
  next["status"] = {{"replicas", 2}};
  next = update_managed_fields(live, next, writer("controller", "status"), t, schema());
  const json* e = entry_of(next, "controller", "Update");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ((*e)["subresource"], "status");
  EXPECT_EQ((*e)["fieldsV1"], json::parse(R"({"f:status":{"f:replicas":{}}})"));
}

TEST(DecodeTest, YamlTypedBySchema) {
  const TypeInfo& t = type_of("", "configmaps");
  auto j = decode_apply_body(R"(apiVersion: v1
kind: ConfigMap
metadata:
  name: c
  labels:
    n: 80
    b: true
data:
  port: 80
  quoted: "true"
  empty:
)",
                             t, schema());
  ASSERT_TRUE(j.is_ok()) << j.status().to_string();
  EXPECT_EQ((*j)["data"]["port"], "80");
  EXPECT_EQ((*j)["data"]["quoted"], "true");
  EXPECT_EQ((*j)["metadata"]["labels"]["n"], "80");
  EXPECT_EQ((*j)["metadata"]["labels"]["b"], "true");
  EXPECT_TRUE((*j)["data"]["empty"].is_null());

  const TypeInfo& svc = type_of("", "services");
  auto s = decode_apply_body(R"(apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports:
  - port: 80
    targetPort: 8080
  - port: 81
    targetPort: http
)",
                             svc, schema());
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  EXPECT_EQ((*s)["spec"]["ports"][0]["port"], 80);
  EXPECT_EQ((*s)["spec"]["ports"][0]["targetPort"], 8080);
  EXPECT_EQ((*s)["spec"]["ports"][1]["targetPort"], "http");

  auto js = decode_apply_body(R"({"apiVersion":"v1","kind":"ConfigMap"})", t, schema());
  ASSERT_TRUE(js.is_ok());
  EXPECT_EQ((*js)["kind"], "ConfigMap");
  EXPECT_FALSE(decode_apply_body("a: [", t, schema()).is_ok());
  EXPECT_FALSE(decode_apply_body("- a", t, schema()).is_ok());
}

TEST(DecodeTest, ManagerFromUserAgent) {
  EXPECT_EQ(manager_from_user_agent("kubectl/v1.32.0 (linux/amd64) kubernetes/abc"), "kubectl");
  EXPECT_EQ(manager_from_user_agent("OpenAPI-Generator/31.0.0/python"), "OpenAPI-Generator");
}

}  // namespace
}  // namespace skiff::api
