#include <gtest/gtest.h>

#include "api/patch.h"
#include "api/schema.h"

namespace skiff::api {
namespace {

using nlohmann::json;

// A small schema: upstream's strategic-merge test type (mergeItem) and a Pod-like type.
constexpr std::string_view kTypes = R"({"types":{
"test.MergeItem":{"fields":[
  {"n":"name","t":"string"},{"n":"value","t":"string"},{"n":"other","t":"string"},
  {"n":"mergingList","t":"[]test.MergeItem","patchStrategy":"merge","patchMergeKey":"name"},
  {"n":"nonMergingList","t":"[]test.MergeItem"},
  {"n":"mergingIntList","t":"[]int64","patchStrategy":"merge"},
  {"n":"nonMergingIntList","t":"[]int64"},
  {"n":"mergeItemPtr","t":"[]test.MergeItem","patchStrategy":"merge","patchMergeKey":"name"},
  {"n":"simpleMap","t":"map[string]string"},
  {"n":"replacingItem","t":"test.MergeItem","patchStrategy":"replace"},
  {"n":"retainKeysMap","t":"test.RetainKeysItem","patchStrategy":"retainKeys"},
  {"n":"retainKeysMergingList","t":"[]test.MergeItem","patchStrategy":"merge,retainKeys",
   "patchMergeKey":"name"},
  {"n":"badStrategy","t":"[]test.MergeItem","patchStrategy":"a,b,c"},
  {"n":"quantities","t":"map[string]test.Quantity"}]},
"test.RetainKeysItem":{"fields":[
  {"n":"name","t":"string"},{"n":"value","t":"string"},{"n":"other","t":"string"},
  {"n":"simpleMap","t":"map[string]string"},
  {"n":"mergingIntList","t":"[]int64","patchStrategy":"merge"},
  {"n":"mergingList","t":"[]test.MergeItem","patchStrategy":"merge","patchMergeKey":"name"},
  {"n":"nonMergingList","t":"[]test.MergeItem"}]},
"test.Quantity":{"fields":[],"scalar":"quantity"},
"test.Pod":{"fields":[
  {"n":"apiVersion","t":"string"},{"n":"kind","t":"string"},
  {"n":"metadata","t":"test.ObjectMeta"},{"n":"spec","t":"test.PodSpec"}]},
"test.ObjectMeta":{"fields":[
  {"n":"name","t":"string"},{"n":"labels","t":"map[string]string"},
  {"n":"annotations","t":"map[string]string"},
  {"n":"finalizers","t":"[]string","patchStrategy":"merge"}]},
"test.PodSpec":{"fields":[
  {"n":"containers","t":"[]test.Container","patchStrategy":"merge","patchMergeKey":"name"},
  {"n":"volumes","t":"[]test.Volume","patchStrategy":"merge,retainKeys","patchMergeKey":"name"},
  {"n":"nodeSelector","t":"map[string]string"},
  {"n":"tolerations","t":"[]test.Toleration"}]},
"test.Container":{"fields":[
  {"n":"name","t":"string"},{"n":"image","t":"string"},{"n":"args","t":"[]string"},
  {"n":"ports","t":"[]test.ContainerPort","patchStrategy":"merge","patchMergeKey":"containerPort"},
  {"n":"env","t":"[]test.EnvVar","patchStrategy":"merge","patchMergeKey":"name"},
  {"n":"resources","t":"test.Resources"}]},
"test.ContainerPort":{"fields":[
  {"n":"containerPort","t":"int32"},{"n":"protocol","t":"string"},{"n":"name","t":"string"}]},
"test.EnvVar":{"fields":[{"n":"name","t":"string"},{"n":"value","t":"string"}]},
"test.Resources":{"fields":[{"n":"limits","t":"map[string]test.Quantity"},
                            {"n":"requests","t":"map[string]test.Quantity"}]},
"test.Volume":{"fields":[
  {"n":"name","t":"string"},{"n":"emptyDir","t":"test.EmptyDir"},
  {"n":"hostPath","t":"test.HostPath"}]},
"test.EmptyDir":{"fields":[{"n":"medium","t":"string"}]},
"test.HostPath":{"fields":[{"n":"path","t":"string"}]},
"test.Toleration":{"fields":[{"n":"key","t":"string"},{"n":"value","t":"string"}]}
}})";

class StrategicMergeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Result<std::unique_ptr<Schema>> s = Schema::load(kTypes, R"({"resources":[]})");
    ASSERT_TRUE(s.is_ok()) << s.status().to_string();
    schema_ = std::move(s).value().release();
  }
  static void TearDownTestSuite() {
    delete schema_;
    schema_ = nullptr;
  }

  static const TypeInfo& type(const char* name) {
    const TypeInfo* t = schema_->type(name);
    EXPECT_NE(t, nullptr) << name;
    return *t;
  }

  json apply(const char* doc, const char* patch, const char* type_name = "test.MergeItem") {
    Result<json> r = apply_strategic_merge_patch(json::parse(doc), json::parse(patch),
                                                 type(type_name), *schema_);
    EXPECT_TRUE(r.is_ok()) << patch << ": " << r.status().to_string();
    return r.is_ok() ? r.value() : json();
  }

  std::string apply_error(const char* doc, const char* patch,
                          const char* type_name = "test.MergeItem") {
    Result<json> r = apply_strategic_merge_patch(json::parse(doc), json::parse(patch),
                                                 type(type_name), *schema_);
    EXPECT_FALSE(r.is_ok()) << patch << " gave " << (r.is_ok() ? r->dump() : "");
    if (r.is_ok()) return "";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    return r.status().message();
  }

  static const Schema* schema_;
};

const Schema* StrategicMergeTest::schema_ = nullptr;

#define EXPECT_PATCH(doc, patch, want) EXPECT_EQ(apply(doc, patch), json::parse(want))

TEST_F(StrategicMergeTest, MapsMergeAndNullDeletes) {
  EXPECT_PATCH(R"({"name":"a","value":"1"})", R"({"value":"2","other":"x"})",
               R"({"name":"a","value":"2","other":"x"})");
  EXPECT_PATCH(R"({"name":"a","value":"1"})", R"({"value":null})", R"({"name":"a"})");
  EXPECT_PATCH(R"({"name":"a"})", R"({"missing":null})", R"({"name":"a"})");
  EXPECT_PATCH(R"({"simpleMap":{"k1":"1","k2":"2"}})", R"({"simpleMap":{"k2":null,"k3":"3"}})",
               R"({"simpleMap":{"k1":"1","k3":"3"}})");
  // New values have their nulls dropped and keep no directive.
  EXPECT_PATCH(R"({})", R"({"replacingItem":{"name":"a","value":null}})",
               R"({"replacingItem":{"name":"a"}})");
  // A value of another type replaces the old one.
  EXPECT_PATCH(R"({"value":"x"})", R"({"value":{"a":1}})", R"({"value":{"a":1}})");
  EXPECT_PATCH(R"({})", R"({})", R"({})");
}

TEST_F(StrategicMergeTest, MapDirectives) {
  // From upstream's test table.
  EXPECT_PATCH(R"({"simpleMap":{"key1":"1","key2":"1"}})", R"({"simpleMap":{"$patch":"delete"}})",
               R"({"simpleMap":{}})");
  EXPECT_PATCH(R"({"name":"1","value":"1"})", R"({"$patch":"replace"})", R"({})");
  EXPECT_PATCH(R"({"name":"1","value":"1"})", R"({"other":"a","$patch":"replace"})",
               R"({"other":"a"})");
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"a","value":"b"}})",
               R"({"retainKeysMap":{"$patch":"replace","other":"c"}})",
               R"({"retainKeysMap":{"other":"c"}})");
  // A directive map for an absent field is dropped.
  EXPECT_PATCH(R"({})", R"({"retainKeysMap":{"$patch":"replace","other":"c"}})", R"({})");
  // patchStrategy replace on the field: the patch value as is.
  EXPECT_PATCH(R"({"replacingItem":{"name":"a","value":"b"}})",
               R"({"replacingItem":{"other":"c"}})", R"({"replacingItem":{"other":"c"}})");
  EXPECT_EQ(apply_error(R"({"simpleMap":{"a":"b"}})", R"({"simpleMap":{"$patch":"merge"}})"),
            "unknown patch type: merge in map: map[$patch:merge]");
  EXPECT_EQ(
      apply_error(R"({"simpleMap":{"a":"b"}})", R"({"simpleMap":{"$patch":"bogus","x":"y"}})"),
      "unknown patch type: bogus in map: map[$patch:bogus x:y]");
}

TEST_F(StrategicMergeTest, MergingListsByKey) {
  // Upstream's "preserve the order from the patch in a merging list".
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2,"value":"b"},{"name":3}]})",
               R"({"mergingList":[{"name":3,"value":"c"},{"name":1,"value":"a"},
                                  {"name":2,"other":"x"}]})",
               R"({"mergingList":[{"name":3,"value":"c"},{"name":1,"value":"a"},
                                  {"name":2,"value":"b","other":"x"}]})");
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2,"value":"b"},{"name":3}]})",
               R"({"mergingList":[{"name":3,"value":"c"},{"name":1,"value":"a"}]})",
               R"({"mergingList":[{"name":2,"value":"b"},{"name":3,"value":"c"},
                                  {"name":1,"value":"a"}]})");
  // New items are appended; nulls inside a merged item delete fields.
  EXPECT_PATCH(R"({"mergingList":[{"name":"a","value":"1","other":"o"}]})",
               R"({"mergingList":[{"name":"a","other":null},{"name":"b","value":"2"}]})",
               R"({"mergingList":[{"name":"a","value":"1"},{"name":"b","value":"2"}]})");
  // Nested merging lists merge too.
  EXPECT_PATCH(R"({"mergingList":[{"name":"a","mergingList":[{"name":"x","value":"1"}]}]})",
               R"({"mergingList":[{"name":"a","mergingList":[{"name":"x","other":"2"}]}]})",
               R"({"mergingList":[{"name":"a","mergingList":[{"name":"x","value":"1",
                                                               "other":"2"}]}]})");
  // A non-merging list nested in a merging list is replaced.
  EXPECT_PATCH(R"({"mergingList":[{"name":"a","nonMergingList":[{"name":"x"},{"name":"y"}]}]})",
               R"({"mergingList":[{"name":"a","nonMergingList":[{"name":"z"}]}]})",
               R"({"mergingList":[{"name":"a","nonMergingList":[{"name":"z"}]}]})");
  EXPECT_PATCH(R"({"mergingList":[]})", R"({"mergingList":[]})", R"({"mergingList":[]})");
}

TEST_F(StrategicMergeTest, ListDirectives) {
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2}]})",
               R"({"mergingList":[{"$patch":"replace"}]})", R"({"mergingList":[]})");
  EXPECT_PATCH(R"({"mergingList":[{"name":1,"value":"a"},{"name":2}]})",
               R"({"mergingList":[{"name":3},{"$patch":"replace"}]})",
               R"({"mergingList":[{"name":3}]})");
  // Upstream's "delete all duplicate entries in a merging list".
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":1},{"name":2,"value":"a"},{"name":3},
                                  {"name":3}]})",
               R"({"mergingList":[{"name":1,"$patch":"delete"},{"name":3,"$patch":"delete"}]})",
               R"({"mergingList":[{"name":2,"value":"a"}]})");
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2}]})",
               R"({"mergingList":[{"name":5,"$patch":"delete"}]})",
               R"({"mergingList":[{"name":1},{"name":2}]})");
  // Without $setElementOrder, items new to the live list come first (upstream's ordering).
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2}]})",
               R"({"mergingList":[{"name":1,"$patch":"delete"},{"name":4,"value":"x"}]})",
               R"({"mergingList":[{"name":4,"value":"x"},{"name":2}]})");
  // Upstream's "add map and delete map from merging list" (three-way).
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":2,"other":"b"},{"name":4,"other":"c"}]})",
               R"({"$setElementOrder/mergingList":[{"name":2},{"name":3}],
                   "mergingList":[{"name":3},{"name":1,"$patch":"delete"}]})",
               R"({"mergingList":[{"name":2,"other":"b"},{"name":4,"other":"c"},{"name":3}]})");
  EXPECT_EQ(apply_error(R"({"mergingList":[{"name":1}]})",
                        R"({"mergingList":[{"name":1,"$patch":"merge"}]})"),
            "merging lists cannot yet be specified in the patch");
  EXPECT_EQ(apply_error(R"({"mergingList":[{"name":1}]})",
                        R"({"mergingList":[{"name":1,"$patch":"nope"}]})"),
            "unknown patch type: nope in map: map[$patch:nope name:1]");
  EXPECT_EQ(
      apply_error(R"({"mergingList":[{"name":1}]})", R"({"mergingList":[{"$patch":"delete"}]})"),
      "map: map[$patch:delete] does not contain declared merge key: name");
}

TEST_F(StrategicMergeTest, PrimitiveLists) {
  // Upstream's "unique scalars when merging lists" and the int-list order cases.
  EXPECT_PATCH(R"({"mergingIntList":[1,2]})", R"({"mergingIntList":[2,3]})",
               R"({"mergingIntList":[1,2,3]})");
  EXPECT_PATCH(R"({"mergingIntList":[1,2,3]})", R"({"mergingIntList":[3,1,2]})",
               R"({"mergingIntList":[3,1,2]})");
  EXPECT_PATCH(R"({"mergingIntList":[1,2,3]})", R"({"mergingIntList":[3,1]})",
               R"({"mergingIntList":[2,3,1]})");
  // Lists without a merge strategy are replaced.
  EXPECT_PATCH(R"({"nonMergingIntList":[1,2,3]})", R"({"nonMergingIntList":[4]})",
               R"({"nonMergingIntList":[4]})");
  EXPECT_PATCH(R"({"nonMergingList":[{"name":1},{"name":2}]})",
               R"({"nonMergingList":[{"name":3}]})", R"({"nonMergingList":[{"name":3}]})");
  // $deleteFromPrimitiveList, from upstream's custom cases.
  EXPECT_PATCH(R"({"mergingIntList":[1,2]})", R"({"$deleteFromPrimitiveList/mergingIntList":[3]})",
               R"({"mergingIntList":[1,2]})");
  EXPECT_PATCH(R"({"mergingIntList":null})", R"({"$deleteFromPrimitiveList/mergingIntList":[3]})",
               R"({"mergingIntList":null})");
  EXPECT_PATCH(R"({"nonMergingIntList":[1]})", R"({"$deleteFromPrimitiveList/mergingIntList":[3]})",
               R"({"nonMergingIntList":[1]})");
  EXPECT_PATCH(R"({"mergingIntList":[1,2,3]})",
               R"({"$deleteFromPrimitiveList/mergingIntList":[2]})", R"({"mergingIntList":[1,3]})");
  EXPECT_PATCH(R"({"nonMergingIntList":[1,2,3]})",
               R"({"$deleteFromPrimitiveList/nonMergingIntList":[2]})",
               R"({"nonMergingIntList":[1,3]})");
  // Additions and deletions in one patch (upstream's "add and delete items in lists of
  // scalars", two-way and three-way).
  EXPECT_PATCH(R"({"mergingIntList":[1,2,3]})",
               R"({"$setElementOrder/mergingIntList":[1,2,4],
                   "$deleteFromPrimitiveList/mergingIntList":[3],"mergingIntList":[4]})",
               R"({"mergingIntList":[1,2,4]})");
  EXPECT_PATCH(R"({"mergingIntList":[1,2,3,4]})",
               R"({"$setElementOrder/mergingIntList":[1,2,4],
                   "$deleteFromPrimitiveList/mergingIntList":[3]})",
               R"({"mergingIntList":[1,2,4]})");
  // "add an item in a list of primitives and preserve order" (three-way).
  EXPECT_PATCH(R"({"mergingIntList":[1,4,2]})",
               R"({"$setElementOrder/mergingIntList":[3,1,2],"mergingIntList":[3]})",
               R"({"mergingIntList":[3,1,4,2]})");
  EXPECT_EQ(apply_error(R"({"mergingIntList":[1]})",
                        R"({"$deleteFromPrimitiveListX/mergingIntList":[1]})"),
            "invalid patch format of primitive list");
  EXPECT_EQ(apply_error(R"({"mergingIntList":[[1]]})", R"({"mergingIntList":[[2]]})"),
            "lists of lists are not supported");
  EXPECT_EQ(apply_error(R"({"mergingIntList":[1]})", R"({"mergingIntList":[[1]]})"),
            "list element types are not identical: [[1] [[1]]]");
  // Upstream's "merge lists of scalars" (three-way).
  EXPECT_PATCH(R"({"mergingIntList":[1,2,4]})",
               R"({"$setElementOrder/mergingIntList":[1,2,3],"mergingIntList":[3]})",
               R"({"mergingIntList":[1,2,3,4]})");
  EXPECT_EQ(apply_error(R"({"mergingIntList":[1]})", R"({"mergingIntList":["a"]})"),
            "list element types are not identical: [[1] [a]]");
}

TEST_F(StrategicMergeTest, SetElementOrder) {
  // Upstream's custom cases.
  EXPECT_PATCH(R"({"mergingList":[{"name":1},{"name":3}]})",
               R"({"$setElementOrder/mergingList":[{"name":3},{"name":2},{"name":1}],
                   "mergingList":[{"name":3,"value":"3"},{"name":1,"value":"1"}]})",
               R"({"mergingList":[{"name":3,"value":"3"},{"name":1,"value":"1"}]})");
  EXPECT_PATCH(R"({"mergingIntList":[1,3]})", R"({"$setElementOrder/mergingIntList":[3,2,1]})",
               R"({"mergingIntList":[3,1]})");
  // "add multiple items in a list and preserve order" (three-way result).
  EXPECT_PATCH(R"({"mergingList":[{"name":1,"other":"a"},{"name":2,"value":"2","other":"b"}]})",
               R"({"$setElementOrder/mergingList":[{"name":1},{"name":4},{"name":2},{"name":3}],
                   "mergingList":[{"name":4,"value":"4"},{"name":3,"value":"3"}]})",
               R"({"mergingList":[{"name":1,"other":"a"},{"name":4,"value":"4"},
                                  {"name":2,"value":"2","other":"b"},{"name":3,"value":"3"}]})");
  // A list only in the patch.
  EXPECT_PATCH(R"({})",
               R"({"$setElementOrder/mergingList":[{"name":2},{"name":1}],
                   "mergingList":[{"name":2,"value":"b"}]})",
               R"({"mergingList":[{"name":2,"value":"b"}]})");
  EXPECT_NE(apply_error(R"({"mergingList":[{"name":1},{"name":3},{"name":2}]})",
                        R"({"$setElementOrder/mergingList":[{"name":1},{"name":2},{"name":3}],
                            "mergingList":[{"name":3,"value":"3"},{"name":1,"value":"1"}]})")
                .find("doesn't match $setElementOrder list"),
            std::string::npos);
  EXPECT_NE(apply_error(R"({"mergingIntList":[1,3,2]})",
                        R"({"$setElementOrder/mergingIntList":[1,2,3],"mergingIntList":[3,1]})")
                .find("doesn't match"),
            std::string::npos);
  EXPECT_EQ(apply_error(R"({"mergingList":[]})", R"({"$setElementOrder/mergingList":{}})"),
            "expected a []interface {}, but received a map[string]interface {}");
  EXPECT_EQ(apply_error(R"({"mergingList":[]})", R"({"$setElementOrderX/mergingList":[]})"),
            "invalid patch format of setElementOrder list");
  EXPECT_EQ(
      apply_error(R"({"mergingList":[{"name":1}]})",
                  R"({"$setElementOrder/mergingList":[{"value":1}],"mergingList":[{"name":1}]})"),
      "map: map[value:1] does not contain declared merge key: name");
  EXPECT_EQ(apply_error(R"({})", R"({"$setElementOrder/nope":[1]})"),
            "unable to find api field in struct MergeItem for the json field \"nope\"");
}

TEST_F(StrategicMergeTest, RetainKeys) {
  // From upstream's retainKeys cases.
  EXPECT_PATCH(R"({"retainKeysMap":{"value":"foo"}})",
               R"({"retainKeysMap":{"$retainKeys":["other"],"other":"bar"}})",
               R"({"retainKeysMap":{"other":"bar"}})");
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"type1","value":"foo"}})",
               R"({"retainKeysMap":{"$retainKeys":["name","other"],"name":"type2","other":"bar"}})",
               R"({"retainKeysMap":{"name":"type2","other":"bar"}})");
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"foo","other":"a"}})",
               R"({"retainKeysMap":{"$retainKeys":["name","value"],"value":"bar"}})",
               R"({"retainKeysMap":{"name":"foo","value":"bar"}})");
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"foo"}})", R"({"retainKeysMap":{"value":"bar"}})",
               R"({"retainKeysMap":{"name":"foo","value":"bar"}})");
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"foo","value":"a"}})", R"({"retainKeysMap":{}})",
               R"({"retainKeysMap":{"name":"foo","value":"a"}})");
  // Null members need not be listed.
  EXPECT_PATCH(R"({"retainKeysMap":{"name":"foo","value":"a"}})",
               R"({"retainKeysMap":{"$retainKeys":["name"],"value":null}})",
               R"({"retainKeysMap":{"name":"foo"}})");
  // Lists with merge,retainKeys.
  EXPECT_PATCH(R"({"retainKeysMergingList":[{"name":"bar"},{"name":"foo","value":"a"}]})",
               R"({"retainKeysMergingList":[{"name":"foo","value":"b"}]})",
               R"({"retainKeysMergingList":[{"name":"bar"},{"name":"foo","value":"b"}]})");
  EXPECT_EQ(apply_error(R"({"retainKeysMap":{"name":"foo"}})",
                        R"({"retainKeysMap":{"$retainKeys":["name"],"value":"bar"}})"),
            "invalid patch format of retainKeys");
  EXPECT_EQ(apply_error(R"({"retainKeysMap":{"name":"foo"}})",
                        R"({"retainKeysMap":{"$retainKeys":"name"}})"),
            "invalid patch format of retainKeys");
}

TEST_F(StrategicMergeTest, KubectlApplyPatch) {
  const char* live = R"({
    "apiVersion":"v1","kind":"Pod",
    "metadata":{"name":"web","annotations":{"a":"1"},"labels":{"app":"web"},
                "finalizers":["x/one"]},
    "spec":{"nodeSelector":{"disk":"ssd"},
            "containers":[
              {"name":"nginx","image":"nginx:1.25","ports":[{"containerPort":80,"protocol":"TCP"}],
               "env":[{"name":"A","value":"1"},{"name":"B","value":"2"}],
               "resources":{"limits":{"cpu":"1","memory":"1Gi"}}},
              {"name":"sidecar","image":"busybox","args":["sleep","1"]}]}})";
  const char* patch = R"({
    "metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}"},
                "finalizers":["x/two"]},
    "spec":{"$setElementOrder/containers":[{"name":"nginx"},{"name":"sidecar"}],
            "containers":[{"image":"nginx:1.26","name":"nginx",
                           "$setElementOrder/env":[{"name":"B"},{"name":"A"}],
                           "env":[{"name":"A","value":"3"}],
                           "resources":{"limits":{"memory":null}}},
                          {"name":"sidecar","args":["sleep","2"]}]}})";
  EXPECT_EQ(apply(live, patch, "test.Pod"), json::parse(R"({
    "apiVersion":"v1","kind":"Pod",
    "metadata":{"name":"web",
                "annotations":{"a":"1","kubectl.kubernetes.io/last-applied-configuration":"{}"},
                "labels":{"app":"web"},"finalizers":["x/two","x/one"]},
    "spec":{"nodeSelector":{"disk":"ssd"},
            "containers":[
              {"name":"nginx","image":"nginx:1.26","ports":[{"containerPort":80,"protocol":"TCP"}],
               "env":[{"name":"B","value":"2"},{"name":"A","value":"3"}],
               "resources":{"limits":{"cpu":"1"}}},
              {"name":"sidecar","image":"busybox","args":["sleep","2"]}]}})"));

  // kubectl's own example shape: one container updated by image.
  EXPECT_EQ(apply(R"({"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}})",
                  R"({"spec":{"$setElementOrder/containers":[{"name":"nginx"}],
                              "containers":[{"image":"nginx:1.26","name":"nginx"}]}})",
                  "test.Pod"),
            json::parse(R"({"spec":{"containers":[{"name":"nginx","image":"nginx:1.26"}]}})"));

  // Container ports merge by (numeric) containerPort; a container is removed by key.
  EXPECT_EQ(
      apply(R"({"spec":{"containers":[{"name":"a","ports":[{"containerPort":80}]},
                                            {"name":"b"}]}})",
            R"({"spec":{"containers":[{"name":"a","ports":[{"containerPort":80.0,"name":"http"},
                                                                {"containerPort":443}]},
                                            {"name":"b","$patch":"delete"}]}})",
            "test.Pod"),
      json::parse(R"({"spec":{"containers":[{"name":"a","ports":[
                {"containerPort":80,"name":"http"},{"containerPort":443}]}]}})"));

  // Volumes are merge,retainKeys: switching a volume's source clears the old one.
  EXPECT_EQ(apply(R"({"spec":{"volumes":[{"name":"v","emptyDir":{}}]}})",
                  R"({"spec":{"volumes":[{"name":"v","$retainKeys":["hostPath","name"],
                                          "hostPath":{"path":"/data"}}]}})",
                  "test.Pod"),
            json::parse(R"({"spec":{"volumes":[{"name":"v","hostPath":{"path":"/data"}}]}})"));

  // Tolerations have no merge strategy: replaced.
  EXPECT_EQ(apply(R"({"spec":{"tolerations":[{"key":"a"},{"key":"b"}]}})",
                  R"({"spec":{"tolerations":[{"key":"c"}]}})", "test.Pod"),
            json::parse(R"({"spec":{"tolerations":[{"key":"c"}]}})"));
  // Labels: a null removes one.
  EXPECT_EQ(apply(R"({"metadata":{"labels":{"a":"1","b":"2"}}})",
                  R"({"metadata":{"labels":{"a":null}}})", "test.Pod"),
            json::parse(R"({"metadata":{"labels":{"b":"2"}}})"));
}

TEST_F(StrategicMergeTest, Errors) {
  EXPECT_EQ(apply_error(R"({"mergingList":[{"name":1,"value":"a"}]})",
                        R"({"mergingList":[{"value":"b"}]})"),
            "map: map[value:b] does not contain declared merge key: name");
  EXPECT_EQ(apply_error(R"({"nope":{"a":1}})", R"({"nope":{"b":2}})"),
            "unable to find api field in struct MergeItem for the json field \"nope\"");
  EXPECT_EQ(apply_error(R"({"badStrategy":[{"name":1}]})", R"({"badStrategy":[{"name":2}]})"),
            "unexpected patch strategy: [a b c]");
  EXPECT_EQ(apply_error(R"({})", R"([])"), "invalid JSON document");
  EXPECT_EQ(apply_error(R"([])", R"({})"), "invalid JSON document");
  // A merging list of maps whose live items lack the merge key.
  EXPECT_EQ(apply_error(R"({"mergingList":[{"value":"a"}]})", R"({"mergingList":[{"name":1}]})"),
            "map: map[value:a] does not contain declared merge key: name");
  // Scalar items in a list merged by key.
  EXPECT_EQ(apply_error(R"({"spec":{"containers":["a"]}})", R"({"spec":{"containers":["b"]}})",
                        "test.Pod"),
            "expected a map[string]interface {}, but received a string");
}

TEST_F(StrategicMergeTest, FieldNamesMatchCaseInsensitively) {
  // Go's JSON field lookup falls back to a case-insensitive match.
  EXPECT_PATCH(R"({"MergingList":[{"name":1,"value":"a"}]})",
               R"({"MergingList":[{"name":1,"other":"b"}]})",
               R"({"MergingList":[{"name":1,"value":"a","other":"b"}]})");
}

TEST_F(StrategicMergeTest, InputsAreNotModified) {
  json doc = json::parse(R"({"mergingList":[{"name":1,"value":"a"}]})");
  json patch = json::parse(R"({"mergingList":[{"name":1,"value":"b"}]})");
  json doc_copy = doc, patch_copy = patch;
  Result<json> r = apply_strategic_merge_patch(doc, patch, type("test.MergeItem"), *schema_);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(doc, doc_copy);
  EXPECT_EQ(patch, patch_copy);
}

}  // namespace
}  // namespace skiff::api
